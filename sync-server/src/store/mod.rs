//! Storage of synced objects behind one trait, [`Store`], with an implementation per database.
//!
//! Every implementation guarantees the invariants of the protocol:
//! 1. the `now` of a pull is a high-water mark read in the same snapshot as the rows, so every
//!    change with `_lastChange <= now` was visible to that read and every later commit is larger;
//! 2. `_lastChange` values of successive pushes to an entity strictly increase (see
//!    [`crate::clock::next_timestamp`]), taken from a clock row held until commit;
//! 3. a push is applied in one transaction, whole or not at all;
//! 4. a push returns only after its transaction is durably committed.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use bytes::Bytes;
use sync_proto::{Change, Cursor, EntityName, Fields, IdempotencyKey, PullQuery, PullWriter};
use tokio::sync::mpsc;

pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{SqliteOptions, SqliteStore};

/// One stored object as a pull returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The object's id.
    pub id: String,
    /// When it last changed (the `now` of the push that changed it).
    pub last_change: Cursor,
    /// Its fields, or `None` for a tombstone.
    pub fields: Option<Fields>,
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

/// A complete pull answer being produced, as chunks of its JSON text in order. The snapshot is
/// taken before the first chunk; a store failure after that ends the stream with an error.
pub type AnswerStream = mpsc::Receiver<Result<Bytes, StoreError>>;

/// A streamed answer is handed to the HTTP layer in chunks of about this many bytes ...
pub(crate) const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// ... with at most this many chunks waiting for a slow client ...
const STREAM_DEPTH: usize = 4;
/// ... and a client that takes no chunk for this long is dropped, so that it cannot hold a
/// database connection and its snapshot forever.
const STREAM_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The sending side of an [`AnswerStream`].
pub(crate) struct AnswerSink(mpsc::Sender<Result<Bytes, StoreError>>);

/// A new answer channel.
pub(crate) fn answer_channel() -> (AnswerSink, AnswerStream) {
    let (sink, stream) = mpsc::channel(STREAM_DEPTH);
    (AnswerSink(sink), stream)
}

impl AnswerSink {
    /// Sends a chunk (or the error that ends the answer). False when the client is gone or has
    /// taken nothing for [`STREAM_STALL`]: the producer should stop.
    pub(crate) async fn send(&self, chunk: Result<Bytes, StoreError>) -> bool {
        matches!(tokio::time::timeout(STREAM_STALL, self.0.send(chunk)).await, Ok(Ok(())))
    }

    /// As [`AnswerSink::send`], from a blocking thread of the runtime (`spawn_blocking`).
    pub(crate) fn blocking_send(&self, chunk: Result<Bytes, StoreError>) -> bool {
        tokio::runtime::Handle::current().block_on(self.send(chunk))
    }
}

/// What is stored for one id, as a push finds it and then leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectState {
    /// Never stored.
    Absent,
    /// A tombstone.
    Removed,
    /// A live object with these fields.
    Live(Fields),
}

impl ObjectState {
    /// The state after `change`, or `None` when it changes nothing: the one statement of the push
    /// rules for every store. A field absent from an upsert keeps its stored value; an upsert of a
    /// removed object re-creates it from the fields sent; removing an object that is unknown or
    /// already removed changes nothing (so echoed removals get no new timestamp).
    pub(crate) fn after(&self, change: &Change) -> Option<ObjectState> {
        match (change, self) {
            (Change::Upsert { fields, .. }, Self::Absent | Self::Removed) => Some(Self::Live(fields.clone())),
            (Change::Upsert { fields, .. }, Self::Live(old)) => Some(Self::Live(fields.merged_onto(old))),
            (Change::Remove { .. }, Self::Live(_)) => Some(Self::Removed),
            (Change::Remove { .. }, Self::Absent | Self::Removed) => None,
        }
    }

    /// The `removed` flag and the fields' JSON text a store writes for this state.
    pub(crate) fn columns(&self) -> (bool, &str) {
        match self {
            Self::Live(fields) => (false, fields.as_json()),
            Self::Removed | Self::Absent => (true, "{}"),
        }
    }
}

/// A push to apply.
#[derive(Debug, Clone)]
pub struct Push {
    /// The validated changes, applied in order.
    pub changes: Vec<Change>,
    /// The idempotency key and a fingerprint of the request it came with.
    pub idempotency: Option<(IdempotencyKey, String)>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The `_lastChange` of every object of the push.
    pub now: Cursor,
    /// True when the idempotency key had been applied before and nothing was applied now.
    pub replayed: bool,
}

/// Why a store operation failed. Whatever the error, nothing of a failed push was applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, locked or overloaded; the same request may succeed later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The idempotency key was used before for a push with another body.
    #[error("idempotency key {0:?} was already used for a different push")]
    IdempotencyKeyReused(String),
    /// Stored data could not be read back, or the database failed in an unexpected way.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// `unavailable` or `internal` for a failure of the store, `None` for a refused request.
    pub fn failure_kind(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable(_) => Some("unavailable"),
            Self::Internal(_) => Some("internal"),
            Self::IdempotencyKeyReused(_) => None,
        }
    }
}

/// The storage of synced objects. Implementations are shared by every request of a server.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Changes to `entity` after `query.since`, with the high-water mark read in the same snapshot.
    async fn pull(&self, entity: &EntityName, query: PullQuery) -> Result<PullPage, StoreError>;

    /// The complete answer to an unpaged pull, streamed, so that its size does not bound memory.
    /// Returns once the snapshot is taken (errors before that are returned here).
    ///
    /// The default builds the whole answer with [`Store::pull`]; stores override it to stream.
    async fn pull_stream(&self, entity: &EntityName, since: Cursor) -> Result<AnswerStream, StoreError> {
        let page = self.pull(entity, PullQuery { since, limit: None }).await?;
        let (sink, stream) = mpsc::channel(1);
        // The channel is new and has room for this one message.
        let _ = sink.try_send(Ok(Bytes::from(page.to_json(false))));
        Ok(stream)
    }

    /// Applies a push atomically under a fresh, unique timestamp, or replays the answer of an
    /// earlier push with the same idempotency key.
    async fn push(&self, entity: &EntityName, push: Push) -> Result<PushOutcome, StoreError>;

    /// Checks that the store answers.
    async fn health(&self) -> Result<(), StoreError>;

    /// A description for logs, without credentials (`sqlite:///var/lib/sync.db`).
    fn describe(&self) -> String;
}

/// The page a pull answers, from the rows a store read after `query.since` (up to `limit + 1`
/// of them when paged) and the high-water mark of the same snapshot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Page {
    /// The answer.
    Ready(PullPage),
    /// One push alone holds more objects than a page: the store must answer every object of this
    /// `_lastChange`, with `now` at it ([`Page::whole_group`]).
    WholeGroup(Cursor),
}

impl Page {
    /// Cuts the rows into a page without splitting one `_lastChange` across pages.
    pub(crate) fn cut(mut rows: Vec<StoredObject>, query: PullQuery, high_water: Cursor) -> Self {
        let complete = |objects| Page::Ready(PullPage { objects, now: high_water, more: false });
        let Some(limit) = query.limit else { return complete(rows) };
        if rows.len() <= limit {
            return complete(rows);
        }
        let boundary = rows[limit].last_change;
        rows.truncate(limit);
        while rows.last().is_some_and(|r| r.last_change == boundary) {
            rows.pop();
        }
        match rows.last() {
            Some(last) => Page::Ready(PullPage { now: last.last_change, objects: rows, more: true }),
            None => Page::WholeGroup(boundary),
        }
    }

    /// The page of every object of the push at `at`.
    pub(crate) fn whole_group(objects: Vec<StoredObject>, at: Cursor, high_water: Cursor) -> PullPage {
        PullPage { objects, now: at, more: high_water > at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_rules_merge_recreate_and_ignore_redundant_removals() {
        let id = sync_proto::ObjectId::new("a", 8).unwrap();
        let upsert = |json: &str| Change::Upsert { id: id.clone(), fields: Fields::from_stored(json.into()) };
        let remove = Change::Remove { id: id.clone() };
        let live = |json: &str| ObjectState::Live(Fields::from_stored(json.into()));
        assert_eq!(ObjectState::Absent.after(&upsert(r#"{"x":1}"#)), Some(live(r#"{"x":1}"#)));
        assert_eq!(live(r#"{"x":1,"y":2}"#).after(&upsert(r#"{"x":3}"#)), Some(live(r#"{"x":3,"y":2}"#)));
        assert_eq!(ObjectState::Removed.after(&upsert(r#"{"x":1}"#)), Some(live(r#"{"x":1}"#)));
        assert_eq!(live("{}").after(&remove), Some(ObjectState::Removed));
        assert_eq!(ObjectState::Removed.after(&remove), None);
        assert_eq!(ObjectState::Absent.after(&remove), None);
        assert_eq!(ObjectState::Removed.columns(), (true, "{}"));
    }

    fn rows(stamps: &[i64]) -> Vec<StoredObject> {
        stamps
            .iter()
            .enumerate()
            .map(|(i, &t)| StoredObject { id: i.to_string(), last_change: Cursor::from_millis(t), fields: None })
            .collect()
    }

    #[test]
    fn pages_never_split_one_timestamp() {
        let hw = Cursor::from_millis(9);
        let q = |limit| PullQuery { since: Cursor::ZERO, limit };
        let ready = |stamps: &[i64], now: i64, more| {
            Page::Ready(PullPage { objects: rows(stamps), now: Cursor::from_millis(now), more })
        };
        assert_eq!(Page::cut(rows(&[1, 2, 3]), q(None), hw), ready(&[1, 2, 3], 9, false));
        assert_eq!(Page::cut(rows(&[1, 2]), q(Some(2)), hw), ready(&[1, 2], 9, false));
        assert_eq!(Page::cut(rows(&[1, 2, 3]), q(Some(2)), hw), ready(&[1, 2], 2, true));
        assert_eq!(Page::cut(rows(&[1, 2, 2]), q(Some(2)), hw), ready(&[1], 1, true));
        assert_eq!(Page::cut(rows(&[2, 2, 2]), q(Some(2)), hw), Page::WholeGroup(Cursor::from_millis(2)));
        let group = Page::whole_group(rows(&[2, 2, 2]), Cursor::from_millis(2), hw);
        assert!(group.more && group.now == Cursor::from_millis(2));
    }
}
