//! Every change reaches the other systems: the delivery side of the transactional outbox.
//!
//! Pushes append their events to the outbox log in their own transaction (see
//! [`crate::store::outbox`]). Here, one worker per subscription and instance sends them, each as a
//! signed webhook ([`webhook`]) or an AMQP message ([`amqp`]): the log's events under the
//! subscription's stream lease (one worker of all instances at a time), and the outbox's due
//! events (retries) under a lease per event. The worker records every attempt of an event that
//! failed, schedules the next one ([`schedule`]) or declares the event dead. Workers of several
//! instances share the outbox safely: leases never overlap, a dead instance's leases run out and
//! are taken over, and one object's events reach a subscription in commit order. A `410 Gone`
//! disables the subscription until an operator enables it again (the admin API).
//!
//! - [`config`]: `[[webhook]]` and `[outbox]`;
//! - [`schedule`]: when the next attempt is, and what an answer means;
//! - [`webhook`]: the request, signed per the Standard Webhooks specification;
//! - [`amqp`]: the message, published to a RabbitMQ exchange with publisher confirms;
//! - [`worker`]: the stream and claim, deliver, record loops, and the outbox janitor.

pub mod amqp;
pub mod config;
pub mod schedule;
pub mod webhook;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use sync_proto::webhook::{Event, Operation};
use tokio::sync::Notify;

pub use config::{AmqpConfig, OutboxConfig, WebhookConfig};

use crate::store::outbox::EventData;

/// The body of `event` as every subscription receives it: its JSON (see
/// [`sync_proto::webhook::Event`]), with the stored fields spliced in as they are.
pub fn event_body(event: &EventData) -> Result<Vec<u8>, String> {
    let operation = if event.operation == "remove" { Operation::Remove } else { Operation::Upsert };
    let object = match &event.object {
        Some(json) => Some(RawValue::from_string(json.clone()).map_err(|e| format!("stored fields: {e}"))?),
        None => None,
    };
    let event = Event {
        id: event.event_id.clone(),
        kind: format!("object.{}", operation.as_str()),
        entity: event.entity.clone(),
        partition: event.partition.clone(),
        object_id: event.object_id.clone(),
        operation,
        object,
        last_change: event.last_change,
        request_id: event.request_id.clone(),
    };
    serde_json::to_vec(&event).map_err(|e| e.to_string())
}

/// What one delivery attempt (a request, a publish) came to.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What the answer means.
    pub answer: schedule::Answer,
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// What went wrong, for the attempt history: the status and a bounded excerpt of the body,
    /// or the transport's error.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// Wakes the delivery workers of this instance when a push appended events or an operator made
/// events due, so that delivery does not wait for their next poll. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Vec<Arc<Notify>>>);

impl Wake {
    /// One waker per worker.
    pub(crate) fn new(workers: usize) -> Self {
        Self(Arc::new((0..workers).map(|_| Arc::new(Notify::new())).collect()))
    }

    /// Whether any worker runs (pushes append events only then).
    pub fn is_on(&self) -> bool {
        !self.0.is_empty()
    }

    /// Wakes every worker (a worker busy delivering finds the events at its next round).
    pub fn wake(&self) {
        for notify in self.0.iter() {
            notify.notify_one();
        }
    }

    pub(crate) fn worker(&self, n: usize) -> Arc<Notify> {
        Arc::clone(&self.0[n])
    }
}
