//! The admin JSON API, under `/admin/api`: what the outbox holds and what failed, and the actions
//! an operator takes on it (redrive, skip, enable or disable a subscription), each written to an
//! audit log.
//!
//! Off until `[[admin.users]]` are configured (Argon2id hashes, verified in constant time, Basic
//! authentication; repeated failures from one address are slowed down and then refused). A
//! read-only mode refuses every change. Changes must be JSON requests (`Content-Type:
//! application/json`) and must not come from a page of another site (`Origin`,
//! `Sec-Fetch-Site`): a browser that remembers an operator's Basic credentials cannot be made to
//! send them with a forged form.

pub mod api;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use serde::{Deserialize, Serialize};

use crate::auth::basic::{BasicUser, BasicUsers, verify_off_thread};
use crate::auth::limiter::FailureLimiter;
use crate::auth::{AuthError, Identity};
use crate::config::ConfigError;

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The operators (`user`, `password_hash` from `sync-server hash-password`); none: the admin
    /// API is off.
    pub users: Vec<BasicUser>,
    /// Refuse every change (`403`): operators may look, not act.
    pub read_only: bool,
}

/// The admin API's authentication, built once from `[admin]`.
pub struct Admins {
    users: Arc<BasicUsers>,
    limiter: FailureLimiter,
    /// Whether changes are refused.
    pub read_only: bool,
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
        Ok(Some(Arc::new(Self { users, limiter, read_only: config.read_only })))
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
