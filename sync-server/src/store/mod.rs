//! Storage of synced objects behind one trait, [`Store`], with an implementation per database.
//!
//! What a store does is written once, here, over small per-backend traits; the backends only say
//! how to run each step in their database:
//! - [`push`]: the push algorithm (lock the clock, take the timestamp, load the stored objects,
//!   apply the push rules, write, remember the idempotency key) over [`push::PushTx`];
//! - [`idempotency`]: the rules of idempotent pushes (fingerprint, replay, reuse with another body);
//! - [`read`]: pages of a pull that never split one timestamp, over [`read::ReadTx`];
//! - [`answer`]: the chunked writer of streamed full answers, shared by both stores.
//!
//! Every implementation guarantees the invariants of `docs/PROTOCOL.md`:
//! 1. the `now` of a pull is a high-water mark read in the same snapshot as the rows, so every
//!    change with `_lastChange <= now` was visible to that read and every later commit is larger;
//! 2. `_lastChange` values of successive pushes to a scope strictly increase (see
//!    [`crate::clock::next_timestamp`]), taken from a clock row held until commit;
//! 3. a push is applied in one transaction, whole or not at all;
//! 4. a push returns only after its transaction is durably committed.

pub mod answer;
pub mod dashboard;
pub mod idempotency;
pub mod outbox;
pub mod postgres;
pub(crate) mod push;
pub(crate) mod read;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use sync_proto::{Change, Cursor, EntityName, FieldsJson, PullQuery, PullWriter};

pub use answer::AnswerStream;
pub use dashboard::Dashboard;
pub use idempotency::Idempotency;
pub use outbox::{Outbox, Routes};
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{SqliteOptions, SqliteStore};

/// Which objects a store operation is about: one entity's objects in one partition. Every key of
/// the store (objects, clock, idempotency keys) is taken within a scope, so nothing of one scope
/// is visible from another, and each scope has its own clock and cursors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    entity: EntityName,
    partition: String,
}

impl Scope {
    /// The objects of `entity` outside any partition: every object while authentication is off.
    pub fn entity(entity: EntityName) -> Self {
        Self { entity, partition: String::new() }
    }

    /// The objects of `entity` in `partition` (a user, a team, or the shared partition of
    /// authenticated users). An empty partition is the one of [`Scope::entity`].
    pub fn partitioned(entity: EntityName, partition: impl Into<String>) -> Self {
        Self { entity, partition: partition.into() }
    }

    /// The entity's name.
    pub fn entity_name(&self) -> &EntityName {
        &self.entity
    }

    /// The partition, empty outside any.
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The entity's name, as the stores key their rows by it.
    pub(crate) fn key(&self) -> &str {
        self.entity.as_str()
    }
}

/// Logs show the entity only: a partition may name a user.
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.entity.fmt(f)
    }
}

/// One stored object as a pull returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The object's id.
    pub id: String,
    /// When it last changed (the `now` of the push that changed it).
    pub last_change: Cursor,
    /// Its fields, or `None` for a tombstone.
    pub fields: Option<FieldsJson>,
}

/// One page of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPage {
    /// Objects with `since < _lastChange <= now`, in `_lastChange` order.
    pub objects: Vec<StoredObject>,
    /// The cursor to pull from next.
    pub now: Cursor,
    /// Whether changes past `now` were left for the next page (only a paged pull leaves any).
    pub more: bool,
    /// The cursor was older than the scope's purge horizon: this page holds nothing, and the
    /// answer is the whole scope ([`Store::pull_stream`] gives it).
    pub reset: bool,
}

impl PullPage {
    /// The JSON answer for this page; `more` is written only for a paged pull.
    pub fn to_json(&self, paged: bool) -> String {
        let mut answer = PullWriter::new();
        for object in &self.objects {
            match &object.fields {
                Some(fields) => answer.object(&object.id, fields, object.last_change),
                None => answer.tombstone(&object.id, object.last_change),
            }
        }
        answer.finish(self.now, paged.then_some(self.more))
    }
}

/// A push to apply.
#[derive(Debug, Clone)]
pub struct Push {
    /// The validated changes, applied in order.
    pub changes: Vec<Change>,
    /// The idempotency key the push came with, if any.
    pub idempotency: Option<Idempotency>,
    /// The request id of the push, kept with its outbox events.
    pub request_id: Option<String>,
    /// Whether each change must be based on the stored version ([`Change::based_on`]); if any
    /// is not, nothing is applied ([`StoreError::Conflict`]).
    pub preconditions: bool,
}

impl Push {
    /// A push of these changes, without a key, a request id or preconditions.
    pub fn new(changes: Vec<Change>) -> Self {
        Self { changes, idempotency: None, request_id: None, preconditions: false }
    }
}

/// An object of a push with preconditions whose stored version is not the one the push was based
/// on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The object's id.
    pub id: String,
    /// The version the push was based on (0 for "new").
    pub based_on: Cursor,
    /// What is stored now; `None` when nothing is.
    pub current: Option<StoredObject>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The `_lastChange` of every object of the push.
    pub now: Cursor,
    /// True when the idempotency key had been applied before and nothing was applied now.
    pub replayed: bool,
}

/// The underlying error of a store failure, kept whole for logs (see [`StoreError`]).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed. Whatever the error, nothing of a failed push was applied.
///
/// The message says what the store was doing; the database's own error is the
/// [`source`](std::error::Error::source), so that logs show the whole chain while answers to
/// clients show neither (see [`crate::error`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, locked or overloaded; the same request may succeed later.
    #[error("the store is unavailable: {what}")]
    Unavailable {
        /// What failed, in the store's words.
        what: String,
        /// The database's error.
        #[source]
        cause: Option<Cause>,
    },
    /// The idempotency key was used before for a push with another body.
    #[error("idempotency key {0:?} was already used for a different push")]
    IdempotencyKeyReused(String),
    /// A push with preconditions was based on versions that changed since; nothing was applied.
    #[error("{} object(s) of the push changed since the versions it was based on; nothing was applied", .0.len())]
    Conflict(Vec<Conflict>),
    /// Stored data could not be read back, or the database failed in an unexpected way.
    #[error("store failure: {what}")]
    Internal {
        /// What failed, in the store's words.
        what: String,
        /// The database's error.
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    /// A transient failure, with the database's error as its cause.
    pub fn unavailable(what: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable { what: what.into(), cause: Some(Arc::new(cause)) }
    }

    /// A transient failure the store itself noticed.
    pub fn unavailable_because(what: impl Into<String>) -> Self {
        Self::Unavailable { what: what.into(), cause: None }
    }

    /// A fault, with the database's error as its cause.
    pub fn internal(what: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal { what: what.into(), cause: Some(Arc::new(cause)) }
    }

    /// A fault the store itself noticed.
    pub fn internal_because(what: impl Into<String>) -> Self {
        Self::Internal { what: what.into(), cause: None }
    }

    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// `unavailable` or `internal` for a failure of the store, `None` for a refused request.
    pub fn failure_kind(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable { .. } => Some("unavailable"),
            Self::Internal { .. } => Some("internal"),
            Self::IdempotencyKeyReused(_) | Self::Conflict(_) => None,
        }
    }
}

/// The storage of synced objects. Implementations are shared by every request of a server.
#[async_trait]
pub trait Store: Outbox + Dashboard + Send + Sync + 'static {
    /// Changes in `scope` after `query.since`, with the high-water mark read in the same snapshot.
    async fn pull(&self, scope: &Scope, query: PullQuery) -> Result<PullPage, StoreError>;

    /// The complete answer to an unpaged pull, streamed, so that its size does not bound memory:
    /// from `query.since`, or the whole scope when the cursor is older than its purge horizon
    /// (marked `"reset": true` when `query.resets`). Returns once the snapshot is taken (errors
    /// before that are returned here).
    async fn pull_stream(&self, scope: &Scope, query: PullQuery) -> Result<AnswerStream, StoreError>;

    /// Deletes at most `batch` tombstones older than `before_ms` (their `_lastChange`), in one
    /// short transaction, moving each scope's purge horizon past them; returns how many. Never
    /// deletes a live object, whatever pushes run meanwhile; on one instance at a time.
    async fn purge_tombstones(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError>;

    /// Applies a push atomically under a fresh, unique timestamp, or replays the answer of an
    /// earlier push with the same idempotency key.
    async fn push(&self, scope: &Scope, push: Push) -> Result<PushOutcome, StoreError>;

    /// Deletes at most `batch` idempotency keys remembered before `before_ms` (epoch
    /// milliseconds), in one short transaction; returns how many. Expired keys are never replayed,
    /// purged or not (see [`idempotency`]).
    async fn purge_idempotency_keys(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError>;

    /// Checks that the store answers and that every part of it is running.
    async fn health(&self) -> Result<(), StoreError>;

    /// The clock of each scope, in order: the `_lastChange` of its latest push, 0 before any (the
    /// `now` a pull of it with nothing after `since` answers).
    async fn clocks(&self, scopes: &[Scope]) -> Result<Vec<Cursor>, StoreError>;

    /// Tells the other instances sharing the database that `scopes` changed, on behalf of
    /// `origin` (see [`crate::live`]). SQLite tells nobody: its other processes watch the file.
    async fn announce(&self, origin: u64, scopes: &[Scope]) -> Result<(), StoreError>;

    /// Wakes `feed`'s waiters for commits made by other instances or processes, as long as the
    /// store is open; where those cannot be heard of, compares the waited scopes' clocks every
    /// `poll` ([`crate::live::wake_changed`]). Commits made through this store are not its
    /// business: whoever acknowledges them wakes the waiters.
    async fn watch(&self, origin: u64, feed: crate::live::Feed, poll: std::time::Duration) -> Result<(), StoreError>;

    /// A description for logs, without credentials (`sqlite:///var/lib/sync.db`).
    fn describe(&self) -> String;

    /// The settings a commit's durability rests on, read back from the open database as
    /// `name=value` pairs separated by spaces: for SQLite the writing connection's
    /// `journal_mode` and `synchronous` (`journal_mode=wal synchronous=full`), for PostgreSQL
    /// `fsync` and `synchronous_commit` as this store's sessions see them. Logged at startup, so
    /// that an operator (and a test) sees what a `200` rests on rather than what was asked for.
    async fn durability(&self) -> Result<String, StoreError>;
}

/// Runs to completion, on this thread, a store step whose I/O is synchronous (SQLite's): the
/// algorithms of [`push`] and [`read`] are written once as `async fn`s for both stores, and over
/// a synchronous connection every `.await` in them is ready at once.
pub(crate) fn run_ready<T>(step: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    step.now_or_never().unwrap_or_else(|| Err(StoreError::internal_because("a synchronous store step waited for I/O")))
}
