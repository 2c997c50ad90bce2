//! Rules of other systems, applied before a push is accepted: a back office that refuses some
//! data the apps accept.
//!
//! Each [`PushValidator`] sees every push to the entities it covers, as sent, after it was parsed
//! and checked and before its transaction starts (so no lock is held while it runs), and
//! accepts it or not. A rejection is answered `422 rejected` with the validator's reason; a
//! validator that cannot answer makes the push `503 unavailable`; either way nothing is applied.
//! Validators see retried pushes too (an `Idempotency-Key` replay is validated again).
//!
//! Two kinds: `[[validation]]` hooks in the configuration ([`HttpValidator`]: a signed `POST`, a
//! `2xx` accepts, a `4xx` rejects with the answer's `message` or text, a `5xx` or a timeout is
//! unavailability), and, for Rust backends embedding the server, any implementation given to
//! [`crate::startup::Application::build_with`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sync_proto::webhook::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

use crate::config::ConfigError;
use crate::store::Scope;
use crate::store::outbox::excerpt;

/// A push as validators see it.
#[derive(Debug, Clone, Copy)]
pub struct PushToValidate<'a> {
    /// Its entity and partition.
    pub scope: &'a Scope,
    /// The body as sent (a JSON array of objects, already checked).
    pub body: &'a [u8],
    /// Its request id.
    pub request_id: Option<&'a str>,
}

/// Why a validator did not accept a push.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Verdict {
    /// The push breaks a rule: answered `422 rejected` with this reason.
    #[error("{0}")]
    Rejected(String),
    /// The validator could not decide: answered `503`.
    #[error("{0}")]
    Unavailable(String),
}

/// A rule of another system on pushes.
#[async_trait]
pub trait PushValidator: Send + Sync + std::fmt::Debug {
    /// Accepts the push (`Ok`) or says why not. Called for every push, of every entity: a
    /// validator that covers some entities only accepts the others.
    async fn validate(&self, push: PushToValidate<'_>) -> Result<(), Verdict>;
}

/// One `[[validation]]` hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Its name, in answers and logs.
    pub name: String,
    /// Where pushes are `POST`ed for a verdict.
    pub url: String,
    /// The entities whose pushes it sees; empty: all.
    #[serde(default)]
    pub entities: Vec<String>,
    /// How long it may take before the push is answered `503`.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Secrets signing the requests as webhooks are signed (`whsec_` and base64), so that the
    /// hook knows they come from this server; none: unsigned.
    #[serde(default)]
    pub secrets: Vec<String>,
}

fn default_timeout() -> f64 {
    5.0
}

/// The request body a hook receives.
#[derive(Serialize)]
struct HookRequest<'a> {
    entity: &'a str,
    partition: &'a str,
    request_id: Option<&'a str>,
    push: &'a RawValue,
}

/// A `[[validation]]` hook, called over HTTP.
#[derive(Debug)]
pub struct HttpValidator {
    config: ValidationConfig,
    client: reqwest::Client,
}

impl HttpValidator {
    /// A client for `config`, after checking it.
    pub fn new(config: ValidationConfig) -> Result<Self, ConfigError> {
        let name = &config.name;
        let invalid = |m: String| Err(ConfigError::Invalid(format!("validation {name:?}: {m}")));
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return invalid(format!("url {:?} is not http:// or https://", config.url));
        }
        if !(config.timeout_secs > 0.0 && config.timeout_secs.is_finite()) {
            return invalid("timeout_secs must be above 0".into());
        }
        if config.secrets.iter().any(|s| sync_proto::webhook::secret_key(s).is_err()) {
            return invalid("a secret is not whsec_ followed by base64".into());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs_f64(config.timeout_secs))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("validation {name:?}: cannot build its HTTP client: {e}")))?;
        Ok(Self { config, client })
    }

    /// The hooks of a configuration.
    pub fn all(configs: &[ValidationConfig]) -> Result<Vec<Arc<dyn PushValidator>>, ConfigError> {
        configs.iter().map(|c| Ok(Arc::new(Self::new(c.clone())?) as Arc<dyn PushValidator>)).collect()
    }
}

#[async_trait]
impl PushValidator for HttpValidator {
    async fn validate(&self, push: PushToValidate<'_>) -> Result<(), Verdict> {
        let entity = push.scope.entity_name().as_str();
        if !self.config.entities.is_empty() && !self.config.entities.iter().any(|e| e == entity) {
            return Ok(());
        }
        let name = &self.config.name;
        let pushed = std::str::from_utf8(push.body)
            .ok()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
            .ok_or_else(|| Verdict::Unavailable(format!("{name}: the push could not be passed on")))?;
        let request =
            HookRequest { entity, partition: push.scope.partition(), request_id: push.request_id, push: pushed };
        let body = serde_json::to_vec(&request).map_err(|e| Verdict::Unavailable(format!("{name}: {e}")))?;
        let mut call = self.client.post(&self.config.url).header(reqwest::header::CONTENT_TYPE, "application/json");
        if !self.config.secrets.is_empty() {
            let id = push.request_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
            let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            let secrets: Vec<&str> = self.config.secrets.iter().map(String::as_str).collect();
            let signature = sign(&secrets, &id, timestamp, &body).map_err(|e| Verdict::Unavailable(e.to_string()))?;
            call = call
                .header(ID_HEADER, id)
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signature);
        }
        let answer = call.body(body).send().await.map_err(|e| {
            let kind = if e.is_timeout() { "did not answer in time" } else { "cannot be reached" };
            Verdict::Unavailable(format!("the validation hook {name} {kind}"))
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        if status.is_client_error() {
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            let reason = if reason.is_empty() { format!("HTTP {}", status.as_u16()) } else { excerpt(&reason, 500) };
            return Err(Verdict::Rejected(format!("rejected by {name}: {reason}")));
        }
        tracing::warn!(hook = %name, status = status.as_u16(), answer = %excerpt(text.trim(), 500), "a validation hook failed");
        Err(Verdict::Unavailable(format!("the validation hook {name} failed (HTTP {})", status.as_u16())))
    }
}
