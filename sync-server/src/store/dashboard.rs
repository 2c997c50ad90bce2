//! What the admin console reads of a store beyond the outbox's own reads: the objects each
//! entity holds, the outbox's stream leases, and the failure searches, each bounded by a
//! statement timeout.
//!
//! Operators' pages must never hold a connection or a snapshot for long on a store that serves
//! pushes: every method here runs in one read-only snapshot and gives up once `timeout` has passed
//! (PostgreSQL: `SET LOCAL statement_timeout` in a read-only transaction; SQLite: an interrupt of
//! the reader's connection at the deadline), failing with [`StoreError::Unavailable`] and changing
//! nothing. A timeout of zero leaves the queries unbounded.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;
use super::outbox::{EventFilter, EventRow, SubscriptionStats};

/// What one entity holds, over all its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityStats {
    /// The entity's name.
    pub entity: String,
    /// Live objects.
    pub objects: i64,
    /// Tombstones of removed objects, kept for pulls (see `tombstone_retention_days`).
    pub tombstones: i64,
    /// The `_lastChange` of its latest change, over every partition.
    pub latest_change: Option<i64>,
    /// Partitions that hold at least one of its objects or tombstones.
    pub partitions: i64,
}

/// A subscription's stream lease: which delivery worker of all instances sends its log now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamLease {
    /// The subscription.
    pub subscription: String,
    /// The holding worker's token (random per worker and instance), `None` while free.
    pub holder: Option<i64>,
    /// Until when it is held unless renewed (epoch ms).
    pub until_ms: Option<i64>,
}

/// The console's overview, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// Every entity with a stored object or tombstone, by name.
    pub entities: Vec<EntityStats>,
    /// Every subscription's state and counts ([`super::Outbox::subscriptions`]).
    pub subscriptions: Vec<SubscriptionStats>,
    /// Every subscription's stream lease, by name.
    pub leases: Vec<StreamLease>,
}

/// The console's reads, each within a statement timeout (see the module doc).
#[async_trait]
pub trait Dashboard: Send + Sync {
    /// The overview; subscriptions named in `names` appear even without any event yet.
    async fn overview(&self, names: &[String], timeout: Duration) -> Result<Overview, StoreError>;

    /// As [`super::Outbox::events`], within `timeout`.
    async fn events_within(
        &self,
        filter: &EventFilter,
        before_seq: Option<i64>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<EventRow>, StoreError>;

    /// As [`super::Outbox::count`], within `timeout`.
    async fn count_within(&self, filter: &EventFilter, timeout: Duration) -> Result<u64, StoreError>;
}

/// The error of a query stopped at its deadline.
pub(crate) fn timed_out(timeout: Duration, cause: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(
        format!("the query ran past the console's statement timeout of {} ms", timeout.as_millis()),
        cause,
    )
}
