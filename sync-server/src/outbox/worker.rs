//! The delivery workers: per subscription, claim due events under a lease, send them (each to a
//! different object, at most `concurrency` at once), renew the leases while the requests run, and
//! record every attempt. Also the outbox's janitor and the refresh of its metrics.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;

use super::Sent;
use super::Wake;
use super::amqp::Amqp;
use super::config::{AmqpConfig, Delivery, OutboxConfig, WebhookConfig};
use super::schedule::{Answer, after_failure};
use super::webhook::Webhook;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::outbox::{After, Attempt, Claimed, Finished};
use crate::tasks::{Shutdown, Tasks};

/// How often the outbox's metrics are read from the store.
const METRICS_PERIOD: Duration = Duration::from_secs(5);
/// How often delivered events past their retention are pruned, and how many per statement.
const PRUNE_PERIOD: Duration = Duration::from_secs(60);
const PRUNE_BATCH: usize = 1_000;

/// Everything a worker shares with the server.
#[derive(Clone)]
pub struct Context {
    /// The store holding the outbox.
    pub store: Arc<dyn Store>,
    /// The outbox settings.
    pub outbox: OutboxConfig,
    /// Where attempts are counted.
    pub metrics: Metrics,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
}

/// What carries one subscription's events.
pub enum Sender {
    /// Signed HTTP requests.
    Webhook(Webhook),
    /// Messages to a broker.
    Amqp(Box<Amqp>),
}

impl Sender {
    fn delivery(&self) -> Delivery {
        match self {
            Self::Webhook(w) => w.config().delivery(),
            Self::Amqp(a) => a.config().delivery(),
        }
    }

    /// Sends `events` (one, or a webhook's batch) once.
    async fn send(&self, events: &[&crate::store::outbox::EventData]) -> Sent {
        match (self, events) {
            (Self::Webhook(w), _) => w.send(events).await,
            (Self::Amqp(a), [event]) => a.send(event).await,
            (Self::Amqp(_), _) => unreachable!("AMQP deliveries carry one event each"),
        }
    }
}

/// Starts one supervised worker per subscription, the janitor and the metrics refresh; returns
/// what pushes wake the workers with.
pub fn start(
    tasks: &mut Tasks,
    context: Context,
    webhooks: &[WebhookConfig],
    amqp: &[AmqpConfig],
) -> Result<Wake, String> {
    let mut senders = Vec::new();
    for w in webhooks {
        senders.push(Sender::Webhook(Webhook::new(w.clone(), context.outbox.excerpt_bytes)?));
    }
    senders.extend(amqp.iter().map(|a| Sender::Amqp(Box::new(Amqp::new(a.clone())))));
    let wake = Wake::new(senders.len());
    if senders.is_empty() {
        return Ok(wake);
    }
    let names: Vec<String> = senders.iter().map(|s| s.delivery().name).collect();
    for (n, sender) in senders.into_iter().enumerate() {
        context.metrics.subscription(&names[n]);
        let (context, notify) = (context.clone(), wake.worker(n));
        tasks.spawn("outbox-delivery", move |shutdown| run(context, sender, notify, shutdown));
    }
    let refresh = context.clone();
    tasks.every("outbox-metrics", METRICS_PERIOD, move || {
        let (context, names) = (refresh.clone(), names.clone());
        async move { refresh_metrics(&context, &names).await }
    });
    tasks.every("outbox-janitor", PRUNE_PERIOD, move || {
        let context = context.clone();
        async move { prune(&context).await }
    });
    Ok(wake)
}

/// One subscription's loop, until the server stops.
async fn run(context: Context, sender: Sender, notify: Arc<Notify>, mut shutdown: Shutdown) -> Result<(), String> {
    let delivery = sender.delivery();
    let name = delivery.name.clone();
    let poll = Duration::from_millis(context.outbox.poll_interval_ms);
    let lease_ms = (context.outbox.lease_secs * 1000) as i64;
    loop {
        if shutdown.is_requested() {
            return Ok(());
        }
        let now = context.clock.now_ms();
        let claimed = match context.store.is_enabled(&name).await {
            Ok(true) => context.store.claim(&name, now, now + lease_ms, delivery.concurrency * delivery.batch).await,
            Ok(false) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(subscription = %name, error = %crate::error::chain(&e), "cannot claim outbox events; trying again");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = shutdown.requested() => return Ok(()),
                _ = notify.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        deliver_batch(&context, &sender, &delivery, claimed).await;
    }
}

/// Sends every claimed event at once, renewing their leases until all are answered, and records
/// each attempt.
async fn deliver_batch(context: &Context, sender: &Sender, delivery: &Delivery, claimed: Vec<Claimed>) {
    let leases: Vec<(i64, i64)> = claimed.iter().map(|c| (c.seq, c.lease_token)).collect();
    let lease_ms = (context.outbox.lease_secs * 1000) as i64;
    let renewing = {
        let (store, clock) = (Arc::clone(&context.store), Arc::clone(&context.clock));
        let every = Duration::from_millis((lease_ms / 3).max(1) as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.renew(&leases, clock.now_ms() + lease_ms).await {
                    tracing::warn!(error = %crate::error::chain(&e), "cannot renew outbox leases");
                }
            }
        })
    };
    let sends = claimed.chunks(delivery.batch).map(|chunk| async move {
        let at_ms = context.clock.now_ms();
        let events: Vec<&crate::store::outbox::EventData> = chunk.iter().map(|c| &c.event).collect();
        (chunk, at_ms, sender.send(&events).await)
    });
    let results = join_all(sends).await;
    renewing.abort();
    let now = context.clock.now_ms();
    let mut finished = Vec::with_capacity(claimed.len());
    let mut answers = Vec::with_capacity(claimed.len());
    for (chunk, at_ms, sent) in &results {
        for claimed in *chunk {
            finished.push(attempt_of(delivery, claimed, *at_ms, sent, now));
            answers.push((claimed, sent));
        }
    }
    match context.store.finish(&finished).await {
        Ok(applied) => {
            for ((claimed, sent), (f, applied)) in answers.into_iter().zip(finished.iter().zip(applied)) {
                if applied {
                    after_attempt(context, delivery, claimed, sent, f.after, now).await;
                } else {
                    tracing::info!(seq = claimed.seq, "an outbox lease was taken over before its attempt was recorded");
                }
            }
        }
        // The leases run out and the events are tried again: at least once, never lost.
        Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot record outbox attempts"),
    }
}

/// The record of one attempt, and what becomes of its event.
fn attempt_of(config: &Delivery, claimed: &Claimed, at_ms: i64, sent: &Sent, now: i64) -> Finished {
    let attempt = Attempt {
        at_ms,
        duration_ms: sent.took.as_millis() as i64,
        status: sent.status.map(i32::from),
        error: sent.error.clone(),
    };
    let number = claimed.attempts as usize + 1;
    let after = match &sent.answer {
        Answer::Delivered => After::Delivered,
        // The event waits, undelivered, until the subscription is enabled again.
        Answer::Gone => After::RetryAt(now),
        Answer::Failed { retry_after } => after_failure(
            &config.schedule_secs,
            number,
            config.jitter,
            rand::random_range(-1.0..=1.0),
            *retry_after,
            now,
        ),
    };
    Finished { seq: claimed.seq, lease_token: claimed.lease_token, attempt, after }
}

/// Counts a recorded attempt, and acts on what it means for the subscription.
async fn after_attempt(context: &Context, config: &Delivery, claimed: &Claimed, sent: &Sent, after: After, now: i64) {
    let outcome = match after {
        After::Delivered => "delivered",
        After::Dead => "dead",
        After::RetryAt(_) => "failed",
    };
    context.metrics.delivery(&config.name, outcome);
    match (&sent.answer, after) {
        (Answer::Gone, _) => {
            tracing::warn!(subscription = %config.name, "the receiver answered 410 Gone: the subscription is disabled until an operator enables it");
            let disabled = context.store.set_enabled(&config.name, false, Some("the receiver answered 410 Gone"), now);
            if let Err(e) = disabled.await {
                tracing::warn!(subscription = %config.name, error = %crate::error::chain(&e), "cannot disable the subscription");
            }
        }
        (_, After::Dead) => tracing::warn!(
            subscription = %config.name,
            seq = claimed.seq,
            event = %claimed.event.event_id,
            error = sent.error.as_deref().unwrap_or_default(),
            "an outbox event is dead after {} attempts",
            claimed.attempts + 1
        ),
        (_, After::RetryAt(at)) if outcome == "failed" => tracing::debug!(
            subscription = %config.name,
            seq = claimed.seq,
            retry_in_ms = at - now,
            error = sent.error.as_deref().unwrap_or_default(),
            "an outbox delivery failed"
        ),
        _ => {}
    }
}

async fn refresh_metrics(context: &Context, names: &[String]) -> Result<(), String> {
    let stats = context.store.subscriptions(names).await.map_err(|e| crate::error::chain(&e))?;
    let now = context.clock.now_ms();
    for s in stats.iter().filter(|s| names.contains(&s.name)) {
        let lag = s.oldest_pending_ms.map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
        context.metrics.outbox_state(&s.name, lag, s.pending, s.dead);
    }
    Ok(())
}

async fn prune(context: &Context) -> Result<(), String> {
    let before = context.clock.now_ms() - (context.outbox.retention_hours * 3600 * 1000) as i64;
    loop {
        let n = context.store.prune(before, PRUNE_BATCH).await.map_err(|e| crate::error::chain(&e))?;
        if n < PRUNE_BATCH as u64 {
            return Ok(());
        }
    }
}
