//! The outbox's tasks: per subscription, a delivery worker, which sends the log's events under the
//! subscription's stream lease and the outbox's due events (retries) under their leases (each
//! request to a different object, at most `concurrency` at once), renews the leases while the
//! requests run, and keeps what failed with its attempt; the janitor; and the refresh of the
//! metrics.

use std::collections::{HashMap, HashSet};
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
use crate::store::outbox::{After, Attempt, Claimed, EventData, Finished, Held, ObjectKey};
use crate::store::{Store, StoreError};
use crate::tasks::{Shutdown, Tasks};

/// How often the outbox's metrics are read from the store.
const METRICS_PERIOD: Duration = Duration::from_secs(5);
/// How often delivered events past their retention are pruned, and how many per statement.
const PRUNE_PERIOD: Duration = Duration::from_secs(60);
const PRUNE_BATCH: usize = 1_000;
/// Log rows (pushes) one round of the stream reads: enough to keep up with many small pushes, few
/// enough that its settling transaction stays short beside the pushes waiting for SQLite's writer.
const STREAM_ROWS: usize = 64;
/// Events one round of the stream takes at most (beyond one log row), so that its memory stays
/// bounded however large the pushes were.
const STREAM_EVENTS: usize = 10_000;

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
    async fn send(&self, events: &[&EventData]) -> Sent {
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
    // This worker's stream lease: the same token every round, so that it renews its own lease.
    let token: i64 = rand::random::<i64>().abs();
    loop {
        if shutdown.is_requested() {
            return Ok(());
        }
        let now = context.clock.now_ms();
        let enabled = context.store.is_enabled(&name).await;
        let claimed = match enabled {
            Ok(true) => context.store.claim(&name, now, now + lease_ms, delivery.concurrency * delivery.batch).await,
            Ok(false) => Ok(Vec::new()),
            Err(ref e) => Err(e.clone()),
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(subscription = %name, error = %crate::error::chain(&e), "cannot claim outbox events; trying again");
                Vec::new()
            }
        };
        let retried = !claimed.is_empty();
        if retried {
            deliver_batch(&context, &sender, &delivery, claimed).await;
        }
        // A disabled subscription's log waits, undelivered, until it is enabled again.
        let streamed = matches!(enabled, Ok(true))
            && match stream(&context, &sender, &delivery, token).await {
                Ok(rows) => rows > 0,
                Err(e) => {
                    tracing::warn!(subscription = %name, error = %crate::error::chain(&e), "cannot deliver the outbox log; trying again");
                    false
                }
            };
        if !retried && !streamed {
            tokio::select! {
                _ = shutdown.requested() => return Ok(()),
                _ = notify.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// One round of the subscription's stream, when its log holds rows and this worker holds (or
/// takes) its lease: reads the oldest log rows, sends their events in waves (at most one event
/// per object in a wave, none of an object held back by the outbox or by a failure in this
/// round), then settles: deletes the rows and keeps every event not delivered as an outbox row,
/// and gives the lease up once the log is drained. Returns how many log rows it read.
async fn stream(context: &Context, sender: &Sender, delivery: &Delivery, token: i64) -> Result<usize, StoreError> {
    let lease_ms = (context.outbox.lease_secs * 1000) as i64;
    let (store, name) = (&context.store, delivery.name.as_str());
    // A read first: an idle stream costs no write, and its lease stays free for whichever
    // instance's pushes come next.
    if store.read_log(name, 1).await?.is_empty() {
        return Ok(0);
    }
    let now = context.clock.now_ms();
    if !store.lease_stream(name, token, now, now + lease_ms).await? {
        return Ok(0);
    }
    // Read again under the lease: the previous holder may have settled these rows meanwhile.
    let mut log = store.read_log(name, STREAM_ROWS).await?;
    if log.is_empty() {
        store.release_stream(name, token).await?;
        return Ok(0);
    }
    // Whole rows only, up to STREAM_EVENTS events (one row alone may hold more).
    let mut events = Vec::new();
    let mut rows = 0;
    for row in &log {
        if rows > 0 && events.len() >= STREAM_EVENTS {
            break;
        }
        events.extend(row.events()?);
        rows += 1;
    }
    let drained = log.len() < STREAM_ROWS && rows == log.len();
    log.truncate(rows);
    // Each event's object as a number, so that the waves below compare numbers.
    let mut numbers: HashMap<ObjectKey, usize> = HashMap::new();
    let object_of: Vec<usize> = events
        .iter()
        .map(|e| {
            let next = numbers.len();
            *numbers.entry(key_of(e)).or_insert(next)
        })
        .collect();
    let mut objects = vec![ObjectKey::default(); numbers.len()];
    for (key, n) in numbers {
        objects[n] = key;
    }
    // Objects whose later events wait behind an outbox row, or behind a failure of this round.
    let mut blocked = store.held_objects(name, &objects).await?;
    let renewing = {
        let (store, clock, name) = (Arc::clone(store), Arc::clone(&context.clock), name.to_owned());
        let every = Duration::from_millis((lease_ms / 3).max(1) as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let now = clock.now_ms();
                if let Err(e) = store.lease_stream(&name, token, now, now + lease_ms).await {
                    tracing::warn!(error = %crate::error::chain(&e), "cannot renew the outbox stream lease");
                }
            }
        })
    };
    let cap = delivery.concurrency * delivery.batch;
    let (mut held, mut tried) = (Vec::new(), Vec::new());
    // Events waiting behind an earlier event of their object, in order, and the next event not
    // looked at yet: each wave takes from the first, then from the second until it is full.
    let (mut waiting, mut next) = (Vec::new(), 0);
    let mut gone = false;
    while next < events.len() || !waiting.is_empty() {
        let mut wave = Wave::default();
        let mut consider = |wave: &mut Wave, i: usize| {
            if gone || blocked[object_of[i]] {
                held.push(Held { event: events[i].clone(), attempt: None });
            } else {
                wave.offer(i, object_of[i], cap);
            }
        };
        for i in std::mem::take(&mut waiting) {
            consider(&mut wave, i);
        }
        while next < events.len() && wave.sent.len() < cap {
            consider(&mut wave, next);
            next += 1;
        }
        let Wave { sent: wave, waiting: still, .. } = wave;
        waiting = still;
        let events = &events;
        let sends = wave.chunks(delivery.batch).map(|chunk| async move {
            let at_ms = context.clock.now_ms();
            let batch: Vec<&EventData> = chunk.iter().map(|&i| &events[i]).collect();
            (chunk, at_ms, sender.send(&batch).await)
        });
        let results = join_all(sends).await;
        let now = context.clock.now_ms();
        for (chunk, at_ms, sent) in results {
            for &i in chunk {
                let (attempt, after) = outcome(delivery, 0, at_ms, &sent, now);
                gone |= matches!(sent.answer, Answer::Gone);
                if after != After::Delivered {
                    blocked[object_of[i]] = true;
                    held.push(Held { event: events[i].clone(), attempt: Some((attempt, after)) });
                }
                tried.push((i, sent.clone(), after));
            }
        }
    }
    renewing.abort();
    let seqs: Vec<i64> = log.iter().map(|row| row.seq).collect();
    if store.settle(name, token, &seqs, &held).await? {
        let now = context.clock.now_ms();
        for (i, sent, after) in &tried {
            after_attempt(context, delivery, &events[*i], 0, sent, *after, now).await;
        }
        if drained {
            // The log is drained, as far as this round saw.
            store.release_stream(name, token).await?;
        }
    } else {
        tracing::info!(subscription = %name, "the outbox stream lease was taken over before its round was settled");
    }
    Ok(log.len())
}

/// One wave of a stream round, being put together.
#[derive(Default)]
struct Wave {
    /// The events it sends.
    sent: Vec<usize>,
    /// Their objects.
    taken: HashSet<usize>,
    /// Objects with an event waiting for a later wave.
    behind: HashSet<usize>,
    /// Those events, in order.
    waiting: Vec<usize>,
}

impl Wave {
    /// Takes event `i` of `object`, unless the wave is full or already has an event of the object
    /// (sent or waiting): the event then waits for a later wave.
    fn offer(&mut self, i: usize, object: usize, cap: usize) {
        if self.sent.len() < cap && !self.behind.contains(&object) && self.taken.insert(object) {
            self.sent.push(i);
        } else {
            self.behind.insert(object);
            self.waiting.push(i);
        }
    }
}

fn key_of(event: &EventData) -> ObjectKey {
    (event.entity.clone(), event.partition.clone(), event.object_id.clone())
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
        let events: Vec<&EventData> = chunk.iter().map(|c| &c.event).collect();
        (chunk, at_ms, sender.send(&events).await)
    });
    let results = join_all(sends).await;
    renewing.abort();
    let now = context.clock.now_ms();
    let mut finished = Vec::with_capacity(claimed.len());
    let mut answers = Vec::with_capacity(claimed.len());
    for (chunk, at_ms, sent) in &results {
        for claimed in *chunk {
            let (attempt, after) = outcome(delivery, claimed.attempts, *at_ms, sent, now);
            finished.push(Finished { seq: claimed.seq, lease_token: claimed.lease_token, attempt, after });
            answers.push((claimed, sent));
        }
    }
    match context.store.finish(&finished).await {
        Ok(applied) => {
            for ((claimed, sent), (f, applied)) in answers.into_iter().zip(finished.iter().zip(applied)) {
                if applied {
                    after_attempt(context, delivery, &claimed.event, claimed.attempts, sent, f.after, now).await;
                } else {
                    tracing::info!(seq = claimed.seq, "an outbox lease was taken over before its attempt was recorded");
                }
            }
        }
        // The leases run out and the events are tried again: at least once, never lost.
        Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot record outbox attempts"),
    }
}

/// The record of one attempt of an event tried `attempts` times before, and what becomes of it.
fn outcome(config: &Delivery, attempts: i32, at_ms: i64, sent: &Sent, now: i64) -> (Attempt, After) {
    let attempt = Attempt {
        at_ms,
        duration_ms: sent.took.as_millis() as i64,
        status: sent.status.map(i32::from),
        error: sent.error.clone(),
    };
    let number = attempts as usize + 1;
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
    (attempt, after)
}

/// Counts a recorded attempt of `event` (tried `attempts` times before), and acts on what it
/// means for the subscription.
async fn after_attempt(
    context: &Context,
    config: &Delivery,
    event: &EventData,
    attempts: i32,
    sent: &Sent,
    after: After,
    now: i64,
) {
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
            event = %event.event_id,
            error = sent.error.as_deref().unwrap_or_default(),
            "an outbox event is dead after {} attempts",
            attempts + 1
        ),
        (_, After::RetryAt(at)) if outcome == "failed" => tracing::debug!(
            subscription = %config.name,
            event = %event.event_id,
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
