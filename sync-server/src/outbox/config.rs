//! The `[[webhook]]` subscriptions and the `[outbox]` section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::store::outbox::{Route, Routes};

/// One webhook subscription: every change of its entities is sent to `url`, signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name: unique, shown in metrics and the admin API (letters, digits, `-`, `_`).
    pub name: String,
    /// Where events are `POST`ed. Redirects are not followed: only a `2xx` counts as delivered.
    pub url: String,
    /// The signing secrets (`whsec_` and base64), newest first; each signs every request, so a
    /// receiver that knows any of them accepts it while a secret is rotated.
    pub secrets: Vec<String>,
    /// The entities whose changes it takes; empty: all.
    #[serde(default)]
    pub entities: Vec<String>,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// The delay before each attempt, from the previous failure (the first from the commit): the
    /// number of entries is the number of attempts; after the last, the event is dead.
    #[serde(default = "default_schedule")]
    pub schedule_secs: Vec<f64>,
    /// Each delay is moved by up to this fraction, at random, so that retries do not arrive
    /// together.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Requests in flight at once (each to a different object).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Events per request: above 1, up to this many events (of different objects) travel in one
    /// batch envelope, and are delivered or retried together.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    1
}

fn default_timeout() -> f64 {
    15.0
}

fn default_schedule() -> Vec<f64> {
    vec![0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
}

fn default_jitter() -> f64 {
    0.1
}

fn default_concurrency() -> usize {
    8
}

/// One AMQP subscription: every change of its entities is published to a RabbitMQ exchange as a
/// persistent message, the event id as its `message_id`, routed by `<entity>.<operation>`
/// (`Task.upsert`, `Task.remove`); a message counts as delivered once the broker confirmed it
/// and routed it to at least one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Its name: unique among all subscriptions, shown in metrics and the admin API.
    pub name: String,
    /// The broker (`amqp://user:password@host:5672/%2f`).
    pub url: String,
    /// The exchange; declared (durable, `topic`) unless `declare` is false.
    pub exchange: String,
    /// Whether to declare the exchange at connection.
    #[serde(default = "default_declare")]
    pub declare: bool,
    /// The entities whose changes it takes; empty: all.
    #[serde(default)]
    pub entities: Vec<String>,
    /// How long one publish may take until the broker confirms it.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// As for webhooks: one delay per attempt.
    #[serde(default = "default_schedule")]
    pub schedule_secs: Vec<f64>,
    /// As for webhooks.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Messages in flight at once (each of a different object).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_declare() -> bool {
    true
}

/// How a subscription's events are retried, whatever carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The subscription's name.
    pub name: String,
    /// Its entities; empty: all.
    pub entities: Vec<String>,
    /// One delay per attempt.
    pub schedule_secs: Vec<f64>,
    /// The fraction delays move by.
    pub jitter: f64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Events per delivery.
    pub batch: usize,
}

impl WebhookConfig {
    /// Its delivery settings.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            name: self.name.clone(),
            entities: self.entities.clone(),
            schedule_secs: self.schedule_secs.clone(),
            jitter: self.jitter,
            concurrency: self.concurrency,
            batch: self.batch,
        }
    }
}

impl AmqpConfig {
    /// Its delivery settings.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            name: self.name.clone(),
            entities: self.entities.clone(),
            schedule_secs: self.schedule_secs.clone(),
            jitter: self.jitter,
            concurrency: self.concurrency,
            batch: 1,
        }
    }
}

/// The `[outbox]` section: how delivery workers share the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// How long a claimed event stays claimed without a renewal; leases are renewed while a
    /// delivery runs, and an instance that dies leaves its events to others after this.
    pub lease_secs: u64,
    /// How often workers look for due events when no push of this instance woke them (pushes
    /// of other instances, retries that came due).
    pub poll_interval_ms: u64,
    /// How long delivered and skipped events are kept before they are pruned.
    pub retention_hours: u64,
    /// How much of a failed answer's body each attempt keeps.
    pub excerpt_bytes: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { lease_secs: 30, poll_interval_ms: 1_000, retention_hours: 7 * 24, excerpt_bytes: 1_024 }
    }
}

impl OutboxConfig {
    /// The lease.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// Checks the subscriptions and returns the routes pushes append events along.
pub fn routes(webhooks: &[WebhookConfig], amqp: &[AmqpConfig], outbox: &OutboxConfig) -> Result<Routes, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if outbox.lease_secs == 0 || outbox.poll_interval_ms == 0 {
        return invalid("outbox.lease_secs and outbox.poll_interval_ms must be at least 1".into());
    }
    for w in webhooks {
        let name = &w.name;
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            return invalid(format!("webhook {name}: url {:?} is not http:// or https://", w.url));
        }
        if w.secrets.is_empty() {
            return invalid(format!("webhook {name}: needs at least one secret (whsec_ and base64)"));
        }
        if let Some(bad) = w.secrets.iter().find(|s| sync_proto::webhook::secret_key(s).is_err()) {
            let shown: String = bad.chars().take(6).collect();
            return invalid(format!("webhook {name}: a secret ({shown}...) is not whsec_ followed by base64"));
        }
        check_delivery("webhook", &w.delivery(), w.timeout_secs)?;
    }
    for a in amqp {
        let name = &a.name;
        if !(a.url.starts_with("amqp://") || a.url.starts_with("amqps://")) {
            return invalid(format!("amqp {name}: url is not amqp:// or amqps://"));
        }
        if a.exchange.is_empty() {
            return invalid(format!("amqp {name}: exchange is empty"));
        }
        check_delivery("amqp", &a.delivery(), a.timeout_secs)?;
    }
    let all: Vec<Delivery> =
        webhooks.iter().map(WebhookConfig::delivery).chain(amqp.iter().map(AmqpConfig::delivery)).collect();
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = all.iter().find(|d| !names.insert(d.name.clone())) {
        return invalid(format!("subscription {}: the name is used twice", twice.name));
    }
    Ok(Routes::new(all.into_iter().map(|d| Route { subscription: d.name, entities: d.entities }).collect()))
}

fn check_delivery(kind: &str, d: &Delivery, timeout_secs: f64) -> Result<(), ConfigError> {
    let name = &d.name;
    let invalid = |m: String| Err(ConfigError::Invalid(format!("{kind} {name:?}: {m}")));
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return invalid("a name is letters, digits, - and _".into());
    }
    if d.schedule_secs.is_empty() || d.schedule_secs.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return invalid("schedule_secs needs one or more delays of 0 or more seconds".into());
    }
    let timeout_ok = timeout_secs > 0.0 && timeout_secs.is_finite();
    if !(0.0..1.0).contains(&d.jitter) || !timeout_ok || d.concurrency == 0 || d.batch == 0 {
        return invalid("jitter must be in [0, 1), timeout_secs, concurrency and batch above 0".into());
    }
    Ok(())
}
