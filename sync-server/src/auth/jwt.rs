//! Bearer tokens (JWT), verified with the `jsonwebtoken` crate.
//!
//! The algorithms accepted are an explicit allow-list, and a token's `alg` never chooses the kind
//! of key: a key verifies only the algorithms of its own family (an HS256 token "signed" with an
//! RSA public key is refused), `none` never parses. `exp` is required; `nbf` and `iat` are
//! honoured with the configured leeway; `iss` and `aud` are checked when configured.
//!
//! Keys: a shared secret (`secret`, `secret_file`, or the `SYNC_JWT_SECRET` environment variable),
//! a PEM public key file (RSA, EC or Ed25519), and a JWKS file whose keys are chosen by the
//! token's `kid`. Key files are read again when their modification time changes (looked at most
//! once a second), so a rotated JWKS is used without a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use super::{AuthError, Identity};
use crate::config::ConfigError;

/// The environment variable a shared secret may come from.
pub const SECRET_VAR: &str = "SYNC_JWT_SECRET";

/// How often, at most, key files are looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The `[auth.jwt]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The algorithms accepted, e.g. `["RS256"]`: required, none by default.
    pub algorithms: Vec<String>,
    /// A shared secret for HS256/384/512 (prefer `secret_file` or `SYNC_JWT_SECRET`).
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the shared secret (trailing white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// A PEM public key (RSA, EC or Ed25519), for tokens without a `kid`.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`, as an OIDC provider publishes it), keys chosen by `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The `iss` a token must have, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// An `aud` a token must have, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Leeway for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The claim that names the subject.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim that lists the roles (an array of strings, or one space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

impl JwtConfig {
    /// HS256 tokens signed with `secret`, every other setting at its default: the section that
    /// `algorithms = ["HS256"]` and `secret = "..."` alone give.
    pub fn hs256(secret: &str) -> Self {
        Self {
            algorithms: vec!["HS256".into()],
            secret: Some(secret.into()),
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: default_leeway(),
            subject_claim: default_subject_claim(),
            roles_claim: default_roles_claim(),
        }
    }
}

fn default_leeway() -> u64 {
    60
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// Verifies tokens with the configured keys.
pub struct JwtVerifier {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    secret: Option<DecodingKey>,
    public_key: Option<Watched<DecodingKey>>,
    jwks: Option<Watched<JwkSet>>,
}

/// A key file and what was last read from it.
struct Watched<T> {
    path: PathBuf,
    state: Mutex<WatchedState<T>>,
    parse: fn(&[u8], &[Algorithm]) -> Result<T, String>,
}

struct WatchedState<T> {
    value: Arc<T>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl<T> Watched<T> {
    fn open(
        path: &PathBuf,
        algorithms: &[Algorithm],
        parse: fn(&[u8], &[Algorithm]) -> Result<T, String>,
    ) -> Result<Self, ConfigError> {
        let bytes =
            std::fs::read(path).map_err(|e| ConfigError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let value = parse(&bytes, algorithms).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path: path.clone(),
            state: Mutex::new(WatchedState { value: Arc::new(value), modified, checked: Instant::now() }),
            parse,
        })
    }

    /// The current value, read again if the file changed. A file that cannot be read or parsed
    /// keeps the last good value (and says so in the log).
    fn current(&self, algorithms: &[Algorithm]) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if modified != state.modified {
                match std::fs::read(&self.path).map_err(|e| e.to_string()).and_then(|b| (self.parse)(&b, algorithms)) {
                    Ok(value) => {
                        tracing::info!(file = %self.path.display(), "key file changed; new keys in use");
                        state.value = Arc::new(value);
                        state.modified = modified;
                    }
                    Err(e) => {
                        tracing::warn!(file = %self.path.display(), error = %e, "key file unreadable; keeping the last keys")
                    }
                }
            }
        }
        Arc::clone(&state.value)
    }
}

fn parse_pem(bytes: &[u8], algorithms: &[Algorithm]) -> Result<DecodingKey, String> {
    let families: Vec<AlgorithmFamily> = algorithms.iter().map(|a| a.family()).collect();
    type FromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
    let attempts: [(AlgorithmFamily, FromPem); 3] = [
        (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem),
        (AlgorithmFamily::Ec, DecodingKey::from_ec_pem),
        (AlgorithmFamily::Ed, DecodingKey::from_ed_pem),
    ];
    attempts
        .iter()
        .filter(|(family, _)| families.contains(family))
        .find_map(|(_, from_pem)| from_pem(bytes).ok())
        .ok_or_else(|| "not a PEM public key of an allowed algorithm's kind".to_owned())
}

fn parse_jwks(bytes: &[u8], _: &[Algorithm]) -> Result<JwkSet, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))
}

impl JwtVerifier {
    /// Reads the configured keys.
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(format!("auth.jwt: {m}"));
        if config.algorithms.is_empty() {
            return Err(invalid("algorithms must list the algorithms accepted, e.g. [\"RS256\"]".into()));
        }
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| a.parse::<Algorithm>().map_err(|_| invalid(format!("unknown algorithm {a:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let secret = match (&config.secret, &config.secret_file, std::env::var(SECRET_VAR).ok()) {
            (Some(secret), _, _) => Some(secret.trim().to_owned()),
            (None, Some(file), _) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| invalid(format!("cannot read {}: {e}", file.display())))?
                    .trim_end()
                    .to_owned(),
            ),
            (None, None, env) => env.filter(|s| !s.is_empty()),
        };
        let hmac = algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac);
        let secret = match (secret, hmac) {
            (Some(secret), true) => {
                Some(DecodingKey::from_secret(secret.as_bytes()).map_err(|e| invalid(e.to_string()))?)
            }
            (None, true) => return Err(invalid(format!("an HS algorithm needs secret, secret_file or {SECRET_VAR}"))),
            (Some(_), false) => return Err(invalid("a secret is set but no HS algorithm is allowed".into())),
            (None, false) => None,
        };
        let public_key =
            config.public_key_file.as_ref().map(|path| Watched::open(path, &algorithms, parse_pem)).transpose()?;
        let jwks = config.jwks_file.as_ref().map(|path| Watched::open(path, &algorithms, parse_jwks)).transpose()?;
        if !hmac && public_key.is_none() && jwks.is_none() {
            return Err(invalid("public-key algorithms need public_key_file or jwks_file".into()));
        }
        Ok(Self { config: config.clone(), algorithms, secret, public_key, jwks })
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str, from_cookie: bool) -> Result<Identity, AuthError> {
        let refused = |why: &str| AuthError::Refused(why.to_owned());
        let header = decode_header(token).map_err(|_| refused("the token is not a JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(refused("the token's algorithm is not accepted"));
        }
        let key = match &header.kid {
            Some(kid) if self.jwks.is_some() => {
                let jwks = self.jwks.as_ref().map(|j| j.current(&self.algorithms)).unwrap_or_default();
                let jwk = jwks.find(kid).ok_or_else(|| refused("the token's kid names no known key"))?;
                DecodingKey::from_jwk(jwk).map_err(|_| refused("the token's key is unusable"))?
            }
            _ => match header.alg.family() {
                AlgorithmFamily::Hmac => self.secret.clone(),
                _ => self.public_key.as_ref().map(|k| DecodingKey::clone(&k.current(&self.algorithms))),
            }
            .ok_or_else(|| refused("no key verifies this token"))?,
        };
        // A key verifies only the algorithms of its own kind, whatever the token says.
        if key.family() != header.alg.family() {
            return Err(refused("the token's algorithm does not match its key"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway_secs;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.validate_aud = self.config.audience.is_some();
        if let Some(audience) = &self.config.audience {
            validation.set_audience(&[audience]);
        }
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
        }
        let claims = decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|e| AuthError::Refused(refusal(e.kind())))?
            .claims;
        let now = jsonwebtoken::get_current_timestamp();
        if claims.get("iat").and_then(serde_json::Value::as_u64).is_some_and(|iat| iat > now + self.config.leeway_secs)
        {
            return Err(refused("the token was issued in the future"));
        }
        let subject = claims
            .get(&self.config.subject_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Refused(format!("the token has no {} claim", self.config.subject_claim)))?
            .to_owned();
        let roles = match claims.get(&self.config.roles_claim) {
            Some(serde_json::Value::Array(roles)) => {
                roles.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect()
            }
            Some(serde_json::Value::String(roles)) => roles.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Identity { subject, roles, claims, from_cookie })
    }
}

/// What a client is told about a refused token: enough to fix it, nothing about the keys.
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the token's issuer is not accepted".into(),
        K::InvalidAudience => "the token's audience is not accepted".into(),
        K::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        K::InvalidSignature => "the token's signature is invalid".into(),
        _ => "the token is invalid".into(),
    }
}
