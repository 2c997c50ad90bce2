//! One webhook request: the event as JSON, signed per the Standard Webhooks specification (see
//! [`sync_proto::webhook`]), sent without following redirects.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sync_proto::webhook::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

use super::Sent;
use super::config::WebhookConfig;
use super::schedule::Answer;
use crate::store::outbox::{EventData, excerpt};

/// The sender of one subscription.
#[derive(Debug, Clone)]
pub struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
    excerpt_bytes: usize,
}

impl Webhook {
    /// A sender for `config`, keeping `excerpt_bytes` of failed answers.
    pub fn new(config: WebhookConfig, excerpt_bytes: usize) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs_f64(config.timeout_secs))
            .user_agent(concat!("sync-server/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .build()
            .map_err(|e| format!("webhook {}: cannot build its HTTP client: {e}", config.name))?;
        Ok(Self { config, client, excerpt_bytes })
    }

    /// The subscription's settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Sends `events` once, in one request: one event as its own body, with its id as
    /// `webhook-id`; several (with `batch` above 1) as `{"type": "batch", "events": [...]}`,
    /// with a fresh `webhook-id` of the batch (receivers deduplicate by each event's `id`).
    pub async fn send(&self, events: &[&EventData]) -> Sent {
        let started = Instant::now();
        let failed = |error: String| Sent {
            answer: Answer::Failed { retry_after: None },
            status: None,
            error: Some(error),
            took: started.elapsed(),
        };
        let (id, body) = match events {
            [event] => (event.event_id.clone(), super::event_body(event)),
            _ => (format!("batch_{}", uuid::Uuid::now_v7()), batch_body(events)),
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => return failed(e),
        };
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let secrets: Vec<&str> = self.config.secrets.iter().map(String::as_str).collect();
        let signature = match sign(&secrets, &id, timestamp, &body) {
            Ok(signature) => signature,
            Err(e) => return failed(e.to_string()),
        };
        let request = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, &id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return failed(transport_error(&e)),
        };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let answer = Answer::of_status(status, retry_after.as_deref());
        let error = match answer {
            Answer::Delivered => None,
            _ => {
                let text = response.text().await.unwrap_or_default();
                Some(format!("HTTP {status}: {}", excerpt(text.trim(), self.excerpt_bytes)))
            }
        };
        Sent { answer, status: Some(status), error, took: started.elapsed() }
    }
}

/// The body of a batch: `{"type": "batch", "events": [...]}`, each event as it is sent alone.
fn batch_body(events: &[&EventData]) -> Result<Vec<u8>, String> {
    let mut body = br#"{"type":"batch","events":["#.to_vec();
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend(super::event_body(event)?);
    }
    body.extend(b"]}");
    Ok(body)
}

/// A transport error with its causes, for the attempt history.
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut message = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}
