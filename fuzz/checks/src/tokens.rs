//! Credentials: JWT bearer tokens (`sync_server::auth::jwt`) and Basic credentials
//! (`sync_server::auth::basic`).
//!
//! Tokens, against a verifier that accepts HS256 with one secret: any text verifies only if it is
//! three base64url segments whose third is the HMAC-SHA256, computed here independently, of the
//! first two with that secret, and whose header says HS256. A token signed with the secret over
//! claims drawn from the input verifies and names its subject and roles; the same token with any
//! one byte changed, signed with another secret, signed as HS384, or expired, does not.
//!
//! Basic credentials: whatever decodes is a user name without `:` and a password that encode back
//! to the same pair; any pair encodes and decodes to itself; and credentials verify iff they
//! decode to the configured user and password.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sha2::Sha256;
use sync_server::auth::basic::{BasicUser, BasicUsers, decode_basic};
use sync_server::auth::jwt::{JwtConfig, JwtVerifier};

use crate::input::Input;

const SECRET: &str = "the secret of the fuzzed verifier";

fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = JwtConfig::hs256(SECRET);
        JwtVerifier::new(&config).expect("the fuzzed verifier's configuration is valid")
    })
}

/// Checks bearer tokens: the input as a token, and a token made from it (see the module doc).
pub fn jwt(data: &[u8]) {
    let verifier = verifier();
    if let Ok(token) = std::str::from_utf8(data)
        && verifier.verify(token, false).is_ok()
    {
        assert_signed_with_secret(token);
    }

    let mut input = Input::new(data);
    let subject = String::from_utf8_lossy(input.bytes(32)).into_owned();
    let roles: Vec<String> = String::from_utf8_lossy(input.bytes(32)).split(',').map(str::to_owned).collect();
    let flip_at = usize::from(input.byte()) | usize::from(input.byte()) << 8;
    let flip_with = input.byte().max(1);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": subject, "roles": roles, "exp": now + 3600, "iat": now});
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key");
    let token = encode(&Header::new(Algorithm::HS256), &claims, &key).expect("a token is signed");

    match verifier.verify(&token, false) {
        Ok(who) => {
            assert!(!subject.is_empty(), "a token without a subject verified");
            assert_eq!(who.subject, subject);
            assert_eq!(who.roles, roles);
        }
        Err(e) => assert!(subject.is_empty(), "a well-signed token was refused: {e}"),
    }

    let mut bytes = token.clone().into_bytes();
    let at = flip_at % bytes.len();
    bytes[at] ^= flip_with;
    if let Ok(changed) = String::from_utf8(bytes) {
        assert!(verifier.verify(&changed, false).is_err(), "a token changed at byte {at} verified: {changed}");
    }

    let other =
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"another secret").unwrap()).unwrap();
    assert!(verifier.verify(&other, false).is_err(), "a token of another secret verified");
    let hs384 = encode(&Header::new(Algorithm::HS384), &claims, &key).unwrap();
    assert!(verifier.verify(&hs384, false).is_err(), "an algorithm not allowed verified");
    let expired = json!({"sub": "someone", "exp": now.saturating_sub(3600)});
    let expired = encode(&Header::new(Algorithm::HS256), &expired, &key).unwrap();
    assert!(verifier.verify(&expired, false).is_err(), "an expired token verified");
}

/// A verified token is three base64url segments, the header says HS256, and the third is the
/// HMAC-SHA256 of the first two with the secret.
fn assert_signed_with_secret(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a verified token of {} segments: {token}", parts.len());
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("a base64url header")).expect("a JSON header");
    assert_eq!(header["alg"], "HS256", "a verified token of another algorithm: {token}");
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("a base64url signature");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(parts[0].as_bytes());
    mac.update(b".");
    mac.update(parts[1].as_bytes());
    assert!(mac.verify_slice(&signature).is_ok(), "a token verified without the secret's signature: {token}");
}

const USER: &str = "ops";
const PASSWORD: &str = "pa:ss wörd";

fn users() -> &'static BasicUsers {
    static USERS: OnceLock<BasicUsers> = OnceLock::new();
    USERS.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        // The smallest Argon2id cost, so that a check of the right user costs microseconds; the
        // server reads the cost from the hash.
        let params = argon2::Params::new(8, 1, 1, None).expect("valid Argon2 parameters");
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"fuzzing salt 16b").expect("a salt");
        let hash = argon.hash_password(PASSWORD.as_bytes(), &salt).expect("a hash").to_string();
        BasicUsers::new(&[BasicUser { user: USER.into(), password_hash: hash, roles: vec!["r".into()] }])
            .expect("a valid user")
    })
}

/// Checks Basic credentials, fast: the slow check of an unknown user (it costs a full Argon2id
/// verification, by design) is left to [`basic_thorough`].
pub fn basic(data: &[u8]) {
    basic_checked(data, false);
}

/// As [`basic`], also verifying credentials of unknown users (tens of milliseconds each).
pub fn basic_thorough(data: &[u8]) {
    basic_checked(data, true);
}

fn basic_checked(data: &[u8], thorough: bool) {
    let credentials = String::from_utf8_lossy(data);
    let decoded = decode_basic(&credentials);
    if let Some((user, password)) = &decoded {
        assert!(!user.contains(':'), "a user name with ':' decoded");
        let again = STANDARD.encode(format!("{user}:{password}"));
        assert_eq!(decode_basic(&again).as_ref(), Some(&(user.clone(), password.clone())));
    }
    let right = decoded.as_ref().is_some_and(|(u, p)| u == USER && p == PASSWORD);
    if thorough || decoded.as_ref().is_none_or(|(u, _)| u == USER) {
        let verified = users().verify(&credentials);
        assert_eq!(verified.is_ok(), right, "{credentials:?} decoded as {decoded:?} verified: {verified:?}");
        if let Ok(who) = verified {
            assert_eq!(who.subject, USER);
        }
    }

    // A pair drawn from the input: the text before the first 0 byte is the user.
    let text = String::from_utf8_lossy(data);
    let (user, password) = text.split_once('\0').unwrap_or((&text, ""));
    if user.contains(':') {
        return;
    }
    let encoded = STANDARD.encode(format!("{user}:{password}"));
    assert_eq!(decode_basic(&encoded), Some((user.to_owned(), password.to_owned())), "{user:?}:{password:?}");
    assert_eq!(decode_basic(&format!("  {encoded}\t")), Some((user.to_owned(), password.to_owned())));
    if user == USER {
        assert_eq!(users().verify(&encoded).is_ok(), password == PASSWORD, "{user:?}:{password:?}");
    }
}
