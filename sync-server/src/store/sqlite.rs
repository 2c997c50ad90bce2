//! The embedded SQLite store: one file, nothing to install.
//!
//! Writes go through one connection owned by a writer thread. Pushes queue for it; it takes every
//! push waiting and commits them as a group: one `BEGIN IMMEDIATE` transaction, each push inside
//! its own savepoint (so each is still applied whole or not at all, and gets its own timestamp),
//! one commit, one `fsync`, then every push of the group is answered. Writers are serialized
//! (also across processes sharing the file, by SQLite's own lock), and under load the cost of
//! durability is shared instead of paid per push. Reads use a bounded pool of connections; WAL
//! mode lets them run beside the writer, each pull reading the clock and the rows in one snapshot.
//! `synchronous = FULL` makes every acknowledged push survive a crash or power loss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use sync_proto::{Change, Cursor, EntityName, Fields, PullQuery};

use bytes::Bytes;
use sync_proto::PullWriter;
use tokio::sync::{mpsc, oneshot};

use super::{
    AnswerSink, AnswerStream, ObjectState, Page, PullPage, Push, PushOutcome, STREAM_CHUNK_BYTES, Store, StoreError,
    StoredObject, answer_channel,
};
use crate::clock::{self, Clock, next_timestamp};

/// Tuning of the SQLite store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteOptions {
    /// Connections serving paged pulls and health checks; requests beyond this wait for one.
    pub readers: u32,
    /// Connections serving full (streamed) pulls, kept apart from `readers`: a full pull holds its
    /// connection until its client has read the whole answer, so slow or stalled clients must
    /// not be able to take the connections every other read needs.
    pub stream_readers: u32,
    /// How long a statement waits for a lock held by another process, and a pull for a free
    /// connection, before the request fails with `503`.
    pub busy_timeout_ms: u64,
    /// How long an idempotency key (and the answer it replays) is kept.
    pub idempotency_ttl_secs: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { readers: 4, stream_readers: 16, busy_timeout_ms: 5_000, idempotency_ttl_secs: 24 * 3600 }
    }
}

/// The schema, one migration per entry; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE objects (
        entity      TEXT    NOT NULL,
        id          TEXT    NOT NULL,
        last_change INTEGER NOT NULL,
        removed     INTEGER NOT NULL,
        fields      TEXT    NOT NULL,   -- the JSON object of the fields, '{}' for a tombstone
        PRIMARY KEY (entity, id)
    );
    CREATE INDEX objects_by_change ON objects (entity, last_change);
    CREATE TABLE clocks (
        entity TEXT    PRIMARY KEY,
        last   INTEGER NOT NULL         -- the last timestamp given to a push to this entity
    ) WITHOUT ROWID;
    CREATE TABLE idempotency (
        entity      TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        now         INTEGER NOT NULL,
        fingerprint TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (entity, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_by_age ON idempotency (created_ms);
"#];

/// A commit group takes waiting pushes until it holds this many ...
const GROUP_MAX_PUSHES: usize = 256;
/// ... or this many objects, so that one group's transaction stays short.
const GROUP_MAX_ITEMS: usize = 20_000;
/// Pushes that may wait for the writer before new ones wait to be queued.
const WRITE_QUEUE: usize = 1024;

/// How often, at most, expired idempotency keys are purged (by the push that notices).
const PURGE_INTERVAL_MS: i64 = 60_000;

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Pushes for the writer thread, the only one that writes: timestamps are handed out in
    /// commit order because only it takes them.
    writes: mpsc::Sender<WriteJob>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    /// Connections of full pulls only (see [`SqliteOptions::stream_readers`]).
    stream_readers: r2d2::Pool<SqliteConnectionManager>,
}

/// A push waiting for the writer, and where to send its outcome.
struct WriteJob {
    entity: EntityName,
    push: Push,
    reply: oneshot::Sender<Result<PushOutcome, StoreError>>,
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    idempotency_ttl_ms: i64,
    last_purge_ms: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, and prepares
    /// the reader pool.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        Self::open_with_clock(path, options, clock::system())
    }

    /// As [`SqliteStore::open`], with the wall clock given (tests make it step back).
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        options: SqliteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let busy = Duration::from_millis(options.busy_timeout_ms);
        let mut writer = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        writer.busy_timeout(busy).map_err(internal)?;
        // Switching to WAL can answer "busy" at once, without waiting, while another process opens
        // the same file; so can the first migration. Both are retried until the busy timeout.
        retry_while_busy(busy, || {
            writer.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
        })
        .map_err(|e| open_error(&path, e))?;
        if let Some(newer) = retry_while_busy(busy, || migrate(&mut writer)).map_err(classify)? {
            return Err(StoreError::Internal(format!(
                "the schema of {} (version {newer}) is newer than this server's (version {})",
                path.display(),
                MIGRATIONS.len()
            )));
        }

        let reader_pool = |size: u32| {
            let manager = SqliteConnectionManager::file(&path).with_init(move |c| {
                c.busy_timeout(busy)?;
                c.execute_batch("PRAGMA query_only = ON;")
            });
            r2d2::Pool::builder()
                .max_size(size.max(1))
                .min_idle(Some(1))
                .connection_timeout(busy.max(Duration::from_millis(100)))
                .build(manager)
                .map_err(|e| StoreError::Unavailable(format!("cannot open readers on {}: {e}", path.display())))
        };
        let readers = reader_pool(options.readers)?;
        let stream_readers = reader_pool(options.stream_readers)?;

        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn: writer,
            clock,
            idempotency_ttl_ms: (options.idempotency_ttl_secs as i64).saturating_mul(1000),
            last_purge_ms: 0,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { path, writes, readers, stream_readers }) })
    }

    async fn run<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || job(&inner))
            .await
            .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip(self), fields(entity = %entity), err)]
    async fn pull(&self, entity: &EntityName, query: PullQuery) -> Result<PullPage, StoreError> {
        let entity = entity.clone();
        self.run(move |inner| inner.pull(&entity, query)).await
    }

    #[tracing::instrument(skip(self, push), fields(entity = %entity, items = push.changes.len()), err)]
    async fn push(&self, entity: &EntityName, push: Push) -> Result<PushOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let job = WriteJob { entity: entity.clone(), push, reply };
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.inner.writes.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    #[tracing::instrument(skip(self), fields(entity = %entity), err)]
    async fn pull_stream(&self, entity: &EntityName, since: Cursor) -> Result<AnswerStream, StoreError> {
        let (sink, stream) = answer_channel();
        let (ready, opened) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let entity = entity.clone();
        tokio::task::spawn_blocking(move || {
            let mut ready = Some(ready);
            if let Err(e) = inner.stream(&entity, since, &mut ready, &sink) {
                // Before the snapshot was taken the caller can still answer with an error status;
                // after, the error ends the stream and the client sees a truncated answer.
                match ready.take() {
                    Some(ready) => drop(ready.send(Err(e))),
                    None => drop(sink.blocking_send(Err(e))),
                }
            }
        });
        opened.await.map_err(|_| StoreError::Internal("the pull task ended before reading".into()))??;
        Ok(stream)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.run(|inner| {
            let conn = inner.readers.get().map_err(unavailable)?;
            conn.query_row("SELECT 1", [], |_| Ok(())).map_err(classify)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.inner.path.display())
    }
}

impl Inner {
    fn pull(&self, entity: &EntityName, query: PullQuery) -> Result<PullPage, StoreError> {
        let mut conn = self.readers.get().map_err(unavailable)?;
        // A deferred transaction: its snapshot starts at the first read, the clock, and every
        // following read sees that same snapshot.
        let tx = conn.transaction().map_err(classify)?;
        let high_water = Cursor::from_millis(clock_of(&tx, entity)?);
        let since = query.since.millis();
        let fetch = query.limit.map_or(-1, |n| n as i64 + 1);
        let rows = select_rows(
            &tx,
            "SELECT id, last_change, removed, fields FROM objects
             WHERE entity = ?1 AND last_change > ?2 ORDER BY last_change, id LIMIT ?3",
            params![entity.as_str(), since, fetch],
        )?;
        match Page::cut(rows, query, high_water) {
            Page::Ready(page) => Ok(page),
            Page::WholeGroup(at) => {
                let objects = select_rows(
                    &tx,
                    "SELECT id, last_change, removed, fields FROM objects
                     WHERE entity = ?1 AND last_change = ?2 ORDER BY id LIMIT ?3",
                    params![entity.as_str(), at.millis(), -1],
                )?;
                Ok(Page::whole_group(objects, at, high_water))
            }
        }
    }

    /// Writes the whole answer since `since` into `sink`, chunk by chunk, from one snapshot;
    /// signals `ready` once the snapshot is taken.
    fn stream(
        &self,
        entity: &EntityName,
        since: Cursor,
        ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
        sink: &AnswerSink,
    ) -> Result<(), StoreError> {
        let mut conn = self.stream_readers.get().map_err(unavailable)?;
        let tx = conn.transaction().map_err(classify)?;
        let now = Cursor::from_millis(clock_of(&tx, entity)?);
        if let Some(ready) = ready.take()
            && ready.send(Ok(())).is_err()
        {
            return Ok(()); // the request is gone
        }
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, last_change, removed, fields FROM objects
                 WHERE entity = ?1 AND last_change > ?2 ORDER BY last_change",
            )
            .map_err(classify)?;
        let mut rows = stmt.query(params![entity.as_str(), since.millis()]).map_err(classify)?;
        let mut answer = PullWriter::new();
        while let Some(row) = rows.next().map_err(classify)? {
            let id = row.get_ref(0).map_err(classify)?.as_str().map_err(unreadable)?;
            let last_change = Cursor::from_millis(row.get(1).map_err(classify)?);
            if row.get(2).map_err(classify)? {
                answer.tombstone(id, last_change);
            } else {
                let fields = row.get_ref(3).map_err(classify)?.as_str().map_err(unreadable)?;
                answer.object_json(id, fields, last_change);
            }
            if answer.len() >= STREAM_CHUNK_BYTES && !sink.blocking_send(Ok(Bytes::from(answer.take()))) {
                return Ok(()); // the client went away, or stopped reading
            }
        }
        sink.blocking_send(Ok(Bytes::from(answer.finish(now, None))));
        Ok(())
    }
}

impl Writer {
    /// Commits queued pushes in groups until every sender is gone.
    fn run(mut self, mut queue: mpsc::Receiver<WriteJob>) {
        while let Some(first) = queue.blocking_recv() {
            let mut items = first.push.changes.len();
            let mut group = vec![first];
            while group.len() < GROUP_MAX_PUSHES && items < GROUP_MAX_ITEMS {
                let Ok(job) = queue.try_recv() else { break };
                items += job.push.changes.len();
                group.push(job);
            }
            match self.commit_group(&group) {
                Ok(outcomes) => {
                    for (job, outcome) in group.into_iter().zip(outcomes) {
                        let _ = job.reply.send(outcome);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, pushes = group.len(), "commit failed; nothing of the group was applied");
                    for job in group {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Applies each push of the group in its own savepoint and commits them together. A push that
    /// fails is rolled back alone; if the commit fails, none is applied.
    fn commit_group(&mut self, group: &[WriteJob]) -> Result<Vec<Result<PushOutcome, StoreError>>, StoreError> {
        let wall = self.clock.now_ms();
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            let savepoint = tx.savepoint().map_err(classify)?;
            let outcome = apply_push(&savepoint, &job.entity, &job.push, wall);
            if outcome.is_ok() {
                savepoint.commit().map_err(classify)?;
            } // else the savepoint rolls back as it is dropped
            outcomes.push(outcome);
        }
        let purge = wall - self.last_purge_ms >= PURGE_INTERVAL_MS;
        if purge {
            tx.execute("DELETE FROM idempotency WHERE created_ms < ?1", [wall - self.idempotency_ttl_ms])
                .map_err(classify)?;
        }
        tx.commit().map_err(classify)?;
        if purge {
            self.last_purge_ms = wall;
        }
        Ok(outcomes)
    }
}

/// Applies one push under a fresh timestamp, or replays an earlier push with the same key.
fn apply_push(conn: &Connection, entity: &EntityName, push: &Push, wall: i64) -> Result<PushOutcome, StoreError> {
    if let Some((key, fingerprint)) = &push.idempotency {
        let earlier: Option<(i64, String)> = conn
            .query_row(
                "SELECT now, fingerprint FROM idempotency WHERE entity = ?1 AND key = ?2",
                params![entity.as_str(), key.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(classify)?;
        if let Some((now, earlier_fingerprint)) = earlier {
            return if &earlier_fingerprint == fingerprint {
                Ok(PushOutcome { now: Cursor::from_millis(now), replayed: true })
            } else {
                Err(StoreError::IdempotencyKeyReused(key.as_str().to_owned()))
            };
        }
    }
    let now = next_timestamp(wall, clock_of(conn, entity)?);
    conn.execute(
        "INSERT INTO clocks (entity, last) VALUES (?1, ?2) ON CONFLICT (entity) DO UPDATE SET last = excluded.last",
        params![entity.as_str(), now],
    )
    .map_err(classify)?;
    apply_changes(conn, entity, &push.changes, now)?;
    if let Some((key, fingerprint)) = &push.idempotency {
        conn.execute(
            "INSERT INTO idempotency (entity, key, now, fingerprint, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![entity.as_str(), key.as_str(), now, fingerprint, wall],
        )
        .map_err(classify)?;
    }
    Ok(PushOutcome { now: Cursor::from_millis(now), replayed: false })
}

/// Applies each change in order under timestamp `now`, by the rules of [`ObjectState::after`].
fn apply_changes(tx: &Connection, entity: &EntityName, changes: &[Change], now: i64) -> Result<(), StoreError> {
    let mut current =
        tx.prepare_cached("SELECT removed, fields FROM objects WHERE entity = ?1 AND id = ?2").map_err(classify)?;
    // New objects are the common case of a push: try the insert first, and read the stored row
    // only when the id exists already.
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO objects (entity, id, last_change, removed, fields) VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT (entity, id) DO NOTHING",
        )
        .map_err(classify)?;
    let mut update = tx
        .prepare_cached("UPDATE objects SET last_change = ?3, removed = ?4, fields = ?5 WHERE entity = ?1 AND id = ?2")
        .map_err(classify)?;
    let e = entity.as_str();
    for change in changes {
        let id = change.id().as_str();
        if let Change::Upsert { fields, .. } = change
            && insert.execute(params![e, id, now, fields.as_json()]).map_err(classify)? == 1
        {
            continue;
        }
        let stored: Option<(bool, String)> =
            current.query_row(params![e, id], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(classify)?;
        let stored = match stored {
            None => ObjectState::Absent,
            Some((true, _)) => ObjectState::Removed,
            Some((false, fields)) => ObjectState::Live(Fields::from_stored(fields)),
        };
        if let Some(next) = stored.after(change) {
            let (removed, fields) = next.columns();
            update.execute(params![e, id, now, removed, fields]).map_err(classify)?;
        }
    }
    Ok(())
}

fn clock_of(tx: &Connection, entity: &EntityName) -> Result<i64, StoreError> {
    tx.query_row("SELECT last FROM clocks WHERE entity = ?1", [entity.as_str()], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(classify)
}

fn select_rows(tx: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredObject>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).map_err(classify)?;
    let rows = stmt
        .query_map(args, |r| {
            let removed: bool = r.get(2)?;
            Ok(StoredObject {
                id: r.get(0)?,
                last_change: Cursor::from_millis(r.get(1)?),
                fields: if removed { None } else { Some(Fields::from_stored(r.get(3)?)) },
            })
        })
        .map_err(classify)?;
    rows.collect::<Result<_, _>>().map_err(classify)
}

/// Applies pending migrations. Returns the schema version found when it is newer than this
/// server knows, without touching the database.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Option<usize>> {
    // Under an immediate transaction, so that processes starting at once apply each migration once.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Ok(Some(applied));
    }
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(None)
}

/// Runs `op` again while it fails with "busy" or "locked", for at most `patience`.
fn retry_while_busy<T>(patience: Duration, mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    let started = std::time::Instant::now();
    loop {
        match op() {
            Err(e)
                if matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
                    && started.elapsed() < patience =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Busy and locked databases are transient; everything else is a fault.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

fn unreadable(e: rusqlite::types::FromSqlError) -> StoreError {
    StoreError::Internal(format!("stored object unreadable: {e}"))
}

fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn unavailable(e: r2d2::Error) -> StoreError {
    StoreError::Unavailable(format!("no database connection free: {e}"))
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
}
