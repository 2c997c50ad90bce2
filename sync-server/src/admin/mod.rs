//! The operators' side of the server: the admin JSON API under `/admin/api` ([`api`]) and the
//! admin console, its HTML pages under `/admin` ([`console`]): what the store and the outbox hold
//! and what failed, and the actions an operator takes on it (redrive, skip, enable or disable a
//! subscription), each written to an audit log.
//!
//! Both are off until `[[admin.users]]` are configured (Argon2id hashes, verified in constant
//! time, Basic authentication; repeated failures from one address are slowed down and then
//! refused), and both authenticate and authorize in one place, [`operator`]. A read-only mode
//! refuses every change. Changes must not come from a page of another site (`Origin`,
//! `Sec-Fetch-Site`), so that a browser that remembers an operator's Basic credentials cannot be
//! made to send them with a forged form; the API also takes only JSON, and the console's forms
//! carry a token only this server can make for the operator ([`Admins::csrf_token`]).

pub mod api;
pub mod console;
mod templates;
mod text;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::basic::{BasicUser, BasicUsers, verify_off_thread};
use crate::auth::limiter::FailureLimiter;
use crate::auth::{AuthError, Identity};
use crate::config::ConfigError;
use crate::error::ApiError;
use crate::state::AppState;

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The operators (`user`, `password_hash` from `sync-server hash-password`); none: the admin
    /// API and the console are off.
    pub users: Vec<BasicUser>,
    /// Refuse every change (`403`): operators may look, not act.
    pub read_only: bool,
    /// The longest the console's overview and failure searches may run, in milliseconds, before
    /// they are stopped (`503`, nothing changed), so that a page over a large store cannot hold a
    /// connection or a snapshot the sync traffic needs; 0 leaves them unbounded.
    pub statement_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { users: Vec::new(), read_only: false, statement_timeout_ms: 5_000 }
    }
}

/// The operators' authentication, built once from `[admin]`.
pub struct Admins {
    users: Arc<BasicUsers>,
    limiter: FailureLimiter,
    /// The key of the console's CSRF tokens: random per process, so that only this process can
    /// make them and none outlives it.
    csrf_key: [u8; 32],
    /// Whether changes are refused.
    pub read_only: bool,
    /// How long the console's dashboard queries may run (zero: unbounded).
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for Admins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admins").field("read_only", &self.read_only).finish_non_exhaustive()
    }
}

/// The `WWW-Authenticate` challenge of the admin API.
pub const CHALLENGE: &str = r#"Basic realm="sync admin", charset="UTF-8""#;

impl Admins {
    /// The operators of `config`, or `None` when there are none (the API is then off).
    pub fn from_config(config: &AdminConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        if config.users.is_empty() {
            return Ok(None);
        }
        let users = Arc::new(BasicUsers::in_section("admin.users", &config.users)?);
        let limiter = FailureLimiter::new(10, Duration::from_secs(60));
        Ok(Some(Arc::new(Self {
            users,
            limiter,
            csrf_key: rand::random(),
            read_only: config.read_only,
            statement_timeout: Duration::from_millis(config.statement_timeout_ms),
        })))
    }

    fn csrf_mac(&self, operator: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.csrf_key).expect("HMAC takes keys of any length");
        mac.update(b"sync admin console csrf\0");
        mac.update(operator.as_bytes());
        mac
    }

    /// The CSRF token of `operator`'s forms: an HMAC of the name under this process's key, which a
    /// page of another site can neither read nor compute.
    pub fn csrf_token(&self, operator: &str) -> String {
        hex::encode(self.csrf_mac(operator).finalize().into_bytes())
    }

    /// Whether `token` is `operator`'s CSRF token, compared in constant time.
    pub fn csrf_matches(&self, operator: &str, token: &str) -> bool {
        hex::decode(token.trim()).is_ok_and(|bytes| self.csrf_mac(operator).verify_slice(&bytes).is_ok())
    }

    /// The operator sending `req`, from its Basic credentials.
    pub async fn authenticate(&self, req: &HttpRequest) -> Result<Identity, AuthError> {
        let address = req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let credentials = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, credentials)| credentials.trim().to_owned());
        self.limiter
            .guard(address, async {
                match credentials {
                    None => Err(AuthError::Refused("the admin API takes Basic credentials of [[admin.users]]".into())),
                    Some(credentials) => verify_off_thread(&self.users, &credentials).await,
                }
            })
            .await
    }
}

/// What a request of an operator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only.
    Look,
    /// Changes something: refused in read-only mode, and from pages of other sites.
    Change,
}

/// The operator sending `req`: `404` while no operator is configured, `401` with the challenge
/// without valid credentials, and for a change, `403` in read-only mode or when a page of another
/// site sent it. The API and the console both start here.
pub(crate) async fn operator(req: &HttpRequest, state: &AppState, access: Access) -> Result<Identity, ApiError> {
    let Some(admins) = &state.admins else {
        return Err(ApiError::NotFound("the admin API is off: configure [[admin.users]]".into()));
    };
    let who = admins.authenticate(req).await.map_err(|why| ApiError::Auth { why, challenge: CHALLENGE.into() })?;
    if access == Access::Change {
        if admins.read_only {
            let why = AuthError::Forbidden("the admin API is read-only ([admin] read_only)".into());
            return Err(ApiError::Auth { why, challenge: CHALLENGE.into() });
        }
        state.origins.check_ambient(req)?;
    }
    Ok(who)
}

/// Writes an operator's action to the audit log (and the log).
pub(crate) async fn audit_action(
    state: &AppState,
    who: &Identity,
    action: &str,
    detail: String,
) -> Result<(), ApiError> {
    tracing::info!(operator = %who.subject, action, detail = %detail, "admin action");
    Ok(state.store.audit(state.clock.now_ms(), &who.subject, action, &detail).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admins() -> Arc<Admins> {
        let hash = crate::auth::basic::hash_password("pw").unwrap();
        let users = vec![BasicUser { user: "ops".into(), password_hash: hash, roles: vec![] }];
        Admins::from_config(&AdminConfig { users, ..AdminConfig::default() }).unwrap().unwrap()
    }

    #[test]
    fn csrf_tokens_are_the_operators_own_and_this_processs_own() {
        let (a, b) = (admins(), admins());
        let token = a.csrf_token("ops");
        assert!(a.csrf_matches("ops", &token));
        assert!(!a.csrf_matches("other", &token), "another operator's token");
        assert!(!b.csrf_matches("ops", &token), "another process's token");
        assert!(!a.csrf_matches("ops", ""));
        assert!(!a.csrf_matches("ops", "not hex"));
        assert!(!a.csrf_matches("ops", &token[..token.len() - 2]), "a truncated token");
    }

    #[test]
    fn the_statement_timeout_is_read_from_the_admin_section() {
        assert_eq!(AdminConfig::default().statement_timeout_ms, 5_000);
        let config: AdminConfig = toml::from_str("statement_timeout_ms = 250").unwrap();
        let hash = crate::auth::basic::hash_password("pw").unwrap();
        let users = vec![BasicUser { user: "ops".into(), password_hash: hash, roles: vec![] }];
        let admins = Admins::from_config(&AdminConfig { users, ..config }).unwrap().unwrap();
        assert_eq!(admins.statement_timeout, Duration::from_millis(250));
    }
}
