//! Who is calling, and which partition of an entity they may read and write.
//!
//! Authentication is off by default (every request reads and writes the objects outside any
//! partition). The `[auth]` section turns it on for entity paths, with any of:
//! - [`jwt`]: bearer tokens (`Authorization: Bearer`) signed with a shared secret (HS256/384/512)
//!   or a public key (RS*, PS*, ES256/384, EdDSA) from a PEM file or a JWKS file chosen by `kid`;
//!   key files are reloaded when they change, so keys rotate without a restart;
//! - the same tokens from a cookie (`cookie = "name"`), for browser apps that cannot add headers:
//!   a push authenticated by a cookie must come from this server's own pages or a `cors_origins`
//!   page, whatever else is configured;
//! - [`basic`]: users with Argon2id password hashes, for small deployments and back offices.
//!
//! A request with no credentials, or bad ones, is `401` with `WWW-Authenticate`; an identity
//! without the right is `403`; repeated failures from one client address are slowed down and then
//! answered `429` ([`limiter`]). Credentials never reach a log line.
//!
//! [`scope`] maps an identity to the partition of an entity: the caller's own (`scope = "user"`),
//! one shared by everyone with the same claim (`scope = { claim = "team" }`), or one for everyone
//! (`scope = "shared"`), each optionally limited by `read_roles` and `write_roles`.

pub mod basic;
pub mod jwt;
pub mod limiter;
pub mod scope;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use serde::{Deserialize, Serialize};

use self::basic::BasicUsers;
use self::jwt::{JwtConfig, JwtVerifier};
use self::limiter::FailureLimiter;
pub use self::scope::EntityScope;
use crate::config::ConfigError;

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens; see [`JwtConfig`].
    pub jwt: Option<JwtConfig>,
    /// The name of a cookie that carries the same tokens as the `Authorization` header.
    pub cookie: Option<String>,
    /// Users of Basic authentication.
    pub basic: Vec<basic::BasicUser>,
    /// The scope of entities that do not declare one (every schemaless entity); `user` unless set.
    pub default_scope: Option<EntityScope>,
    /// Failed authentications from one client address within `failure_window_secs` before it is
    /// answered `429` until the window has passed; failures before that are answered more and
    /// more slowly.
    pub max_failures: u32,
    /// The window of `max_failures`, in seconds.
    pub failure_window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt: None,
            cookie: None,
            basic: Vec::new(),
            default_scope: None,
            max_failures: 10,
            failure_window_secs: 60,
        }
    }
}

impl AuthConfig {
    /// Whether any scheme is configured, which turns authentication on.
    pub fn is_on(&self) -> bool {
        self.jwt.is_some() || !self.basic.is_empty()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject: the token's subject claim, or the Basic user's name.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Every claim of its token (empty for Basic users), for claim-scoped entities.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Whether the credentials came from the cookie (pushes then must pass the origin check).
    pub from_cookie: bool,
}

/// Why a request was not authenticated or not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were sent.
    #[error("authentication is required: send Authorization: Bearer <token>{basic}")]
    Missing {
        /// ", or Basic credentials" when Basic users exist.
        basic: &'static str,
    },
    /// The credentials were refused.
    #[error("the credentials were refused: {0}")]
    Refused(String),
    /// The caller is known but lacks the right.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failures from this client address.
    #[error("too many failed authentications from this address; retry in {retry_after_secs} s")]
    TooManyFailures {
        /// When the client may try again.
        retry_after_secs: u64,
    },
}

/// The server's authentication, built once from `[auth]`.
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    cookie: Option<String>,
    basic: Arc<BasicUsers>,
    limiter: FailureLimiter,
    challenges: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and hashes stay out of every output.
        f.debug_struct("Authenticator").field("challenges", &self.challenges).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the configured schemes, reading key files; `None` when authentication is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, ConfigError> {
        if !config.is_on() {
            if config.cookie.is_some() {
                return Err(ConfigError::Invalid("auth.cookie needs [auth.jwt]: it carries the same tokens".into()));
            }
            return Ok(None);
        }
        if config.cookie.is_some() && config.jwt.is_none() {
            return Err(ConfigError::Invalid("auth.cookie needs [auth.jwt]: it carries the same tokens".into()));
        }
        if config.max_failures == 0 || config.failure_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "auth.max_failures and auth.failure_window_secs must be at least 1".into(),
            ));
        }
        let jwt = config.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let basic = Arc::new(BasicUsers::new(&config.basic)?);
        let mut challenges = Vec::new();
        if jwt.is_some() {
            challenges.push(r#"Bearer realm="sync""#);
        }
        if !basic.is_empty() {
            challenges.push(r#"Basic realm="sync", charset="UTF-8""#);
        }
        Ok(Some(Self {
            jwt,
            cookie: config.cookie.clone(),
            basic,
            limiter: FailureLimiter::new(config.max_failures, Duration::from_secs(config.failure_window_secs)),
            challenges: challenges.join(", "),
        }))
    }

    /// The `WWW-Authenticate` value of a `401`.
    pub fn challenges(&self) -> &str {
        &self.challenges
    }

    /// Authenticates a request: its `Authorization` header, else its cookie. Failures count
    /// against the client's address and are answered later and later, then `429`.
    pub async fn authenticate(&self, req: &HttpRequest) -> Result<Identity, AuthError> {
        let address = req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.limiter.guard(address, self.identify(req)).await
    }

    async fn identify(&self, req: &HttpRequest) -> Result<Identity, AuthError> {
        let missing =
            || AuthError::Missing { basic: if self.basic.is_empty() { "" } else { ", or Basic credentials" } };
        if let Some(value) = req.headers().get(header::AUTHORIZATION) {
            let value =
                value.to_str().map_err(|_| AuthError::Refused("the Authorization header is not text".into()))?;
            let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
            return match (scheme.to_ascii_lowercase().as_str(), &self.jwt) {
                ("bearer", Some(jwt)) => jwt.verify(credentials.trim(), false),
                ("basic", _) if !self.basic.is_empty() => {
                    basic::verify_off_thread(&self.basic, credentials.trim()).await
                }
                _ => Err(AuthError::Refused(format!("the {scheme} scheme is not accepted here"))),
            };
        }
        if let (Some(name), Some(jwt)) = (&self.cookie, &self.jwt)
            && let Some(cookie) = req.cookie(name)
        {
            return jwt.verify(cookie.value(), true);
        }
        Err(missing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_without_tokens_is_refused() {
        let config = AuthConfig { cookie: Some("t".into()), ..AuthConfig::default() };
        let Err(err) = Authenticator::from_config(&config) else { panic!("a cookie without tokens accepted") };
        let err = err.to_string();
        assert!(err.contains("auth.cookie needs [auth.jwt]"), "{err}");
        assert!(Authenticator::from_config(&AuthConfig::default()).unwrap().is_none());
    }
}
