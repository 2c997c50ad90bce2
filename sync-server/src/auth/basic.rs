//! Basic authentication against users configured with Argon2id password hashes
//! (`sync-server hash-password` prints one). Hashes are compared by the `argon2` crate in
//! constant time; an unknown user costs the same verification as a known one, so that timing
//! does not tell which users exist.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{ARGON2ID_IDENT, Argon2};
use serde::{Deserialize, Serialize};

use super::{AuthError, Identity};
use crate::config::ConfigError;

/// One `[[auth.basic]]` user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// The user name, which is also the subject (and so the partition of `scope = "user"`).
    pub user: String,
    /// The Argon2id hash of the password (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// The user's roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The configured users, their hashes parsed and checked once.
pub struct BasicUsers {
    users: Vec<(BasicUser, String)>,
    /// Verified against when the user is unknown.
    decoy: String,
}

impl BasicUsers {
    /// Checks every hash (Argon2id only) and that names are unique.
    pub fn new(users: &[BasicUser]) -> Result<Self, ConfigError> {
        Self::in_section("auth.basic", users)
    }

    /// As [`BasicUsers::new`], for users of another section (errors name it).
    pub fn in_section(section: &str, users: &[BasicUser]) -> Result<Self, ConfigError> {
        let mut checked = Vec::with_capacity(users.len());
        for user in users {
            let parsed = PasswordHash::new(&user.password_hash).map_err(|e| {
                ConfigError::Invalid(format!(
                    "{section} user {:?}: the password hash is not a PHC string: {e}",
                    user.user
                ))
            })?;
            if parsed.algorithm != ARGON2ID_IDENT {
                return Err(ConfigError::Invalid(format!(
                    "{section} user {:?}: the password hash must be Argon2id (sync-server hash-password)",
                    user.user
                )));
            }
            if user.user.is_empty()
                || user.user.contains(':')
                || checked.iter().any(|(u, _): &(BasicUser, String)| u.user == user.user)
            {
                return Err(ConfigError::Invalid(format!(
                    "{section}: user name {:?} is empty, has a ':' or is listed twice",
                    user.user
                )));
            }
            checked.push((user.clone(), user.password_hash.clone()));
        }
        let decoy = hash_password("a password nobody has").map_err(ConfigError::Invalid)?;
        Ok(Self { users: checked, decoy })
    }

    /// Whether no user is configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Verifies the credentials of an `Authorization: Basic` header (base64 of `user:password`).
    pub fn verify(&self, credentials: &str) -> Result<Identity, AuthError> {
        let refused = || AuthError::Refused("the user name or password is wrong".into());
        let (name, password) = decode_basic(credentials).ok_or_else(refused)?;
        let user = self.users.iter().find(|(u, _)| u.user == name);
        let hash = user.map_or(self.decoy.as_str(), |(_, hash)| hash.as_str());
        let verified = PasswordHash::new(hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok());
        match (user, verified) {
            (Some((user, _)), true) => Ok(Identity {
                subject: user.user.clone(),
                roles: user.roles.clone(),
                claims: serde_json::Map::new(),
                from_cookie: false,
            }),
            _ => Err(refused()),
        }
    }
}

/// Verifies Basic credentials on the blocking pool: Argon2 takes tens of milliseconds of CPU by
/// design, which must not stall the request threads.
pub async fn verify_off_thread(users: &std::sync::Arc<BasicUsers>, credentials: &str) -> Result<Identity, AuthError> {
    let (users, credentials) = (std::sync::Arc::clone(users), credentials.to_owned());
    tokio::task::spawn_blocking(move || users.verify(&credentials))
        .await
        .unwrap_or_else(|_| Err(AuthError::Refused("the password check failed".into())))
}

/// The Argon2id hash of `password` with a fresh random salt, as `[[auth.basic]]` takes it.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// `user:password` from the base64 credentials of a Basic header (surrounding white space
/// ignored): `None` unless they are standard base64 of UTF-8 text holding a `:`. The user name is
/// the text before the first `:` (so it never holds one), the password everything after it.
/// Public so that fuzzing can check this reading of outside input on its own, without the
/// deliberately slow password check of [`BasicUsers::verify`].
pub fn decode_basic(credentials: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(credentials.trim()).ok()?;
    let (user, password) = String::from_utf8(bytes).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_nothing_else_does() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let users =
            BasicUsers::new(&[BasicUser { user: "ops".into(), password_hash: hash, roles: vec!["editor".into()] }])
                .unwrap();
        let basic = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let who = users.verify(&basic("ops:s3cret")).unwrap();
        assert_eq!((who.subject.as_str(), who.roles.as_slice()), ("ops", ["editor".to_owned()].as_slice()));
        for wrong in ["ops:S3cret", "nobody:s3cret", "ops", ""] {
            assert!(users.verify(&basic(wrong)).is_err(), "{wrong}");
        }
        assert!(users.verify("not base64!").is_err());
    }

    #[test]
    fn only_argon2id_hashes_are_accepted() {
        let user = |hash: &str| BasicUser { user: "u".into(), password_hash: hash.into(), roles: vec![] };
        for (hash, why) in [
            ("plain text", "is not a PHC string"),
            ("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "must be Argon2id"),
        ] {
            let Err(err) = BasicUsers::new(&[user(hash)]) else { panic!("{hash} accepted") };
            let err = err.to_string();
            assert!(err.contains(why), "{hash}: {err}");
        }
    }
}
