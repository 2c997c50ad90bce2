//! The embedded SQLite store: one file, nothing to install.
//!
//! Writes go through a single connection behind a mutex, each push in one `BEGIN IMMEDIATE`
//! transaction, so writers are serialized (also across processes sharing the file, by SQLite's
//! own lock). Reads use a bounded pool of connections; WAL mode lets them run beside the writer,
//! each pull reading the clock and the rows in one snapshot. `synchronous = FULL` makes every
//! acknowledged push survive a crash or power loss.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use sync_proto::{Change, Cursor, EntityName, Fields, PullQuery};

use super::{PageCut, PullPage, Push, PushOutcome, Store, StoreError, StoredObject, cut_page};
use crate::clock::{self, Clock, next_timestamp};

/// Tuning of the SQLite store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteOptions {
    /// Connections serving pulls; pulls beyond this wait for one.
    pub readers: u32,
    /// How long a statement waits for a lock held by another process, and a pull for a free
    /// connection, before the request fails with `503`.
    pub busy_timeout_ms: u64,
    /// How long an idempotency key (and the answer it replays) is kept.
    pub idempotency_ttl_secs: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { readers: 4, busy_timeout_ms: 5_000, idempotency_ttl_secs: 24 * 3600 }
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

/// How often, at most, expired idempotency keys are purged (by the push that notices).
const PURGE_INTERVAL_MS: i64 = 60_000;

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The only connection that writes: holding its lock is holding the right to take the next
    /// timestamp, so timestamps are handed out in commit order.
    writer: Mutex<Connection>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    clock: Arc<dyn Clock>,
    options: SqliteOptions,
    last_purge_ms: AtomicI64,
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
        writer
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
            .map_err(|e| open_error(&path, e))?;
        migrate(&mut writer)?;

        let manager = SqliteConnectionManager::file(&path).with_init(move |c| {
            c.busy_timeout(busy)?;
            c.execute_batch("PRAGMA query_only = ON;")
        });
        let readers = r2d2::Pool::builder()
            .max_size(options.readers.max(1))
            .min_idle(Some(1))
            .connection_timeout(busy.max(Duration::from_millis(100)))
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("cannot open readers on {}: {e}", path.display())))?;

        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers,
                clock,
                options,
                last_purge_ms: AtomicI64::new(0),
            }),
        })
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
        let entity = entity.clone();
        self.run(move |inner| inner.push(&entity, push)).await
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
        let Some(limit) = query.limit else {
            return Ok(PullPage { objects: rows, now: high_water, more: false });
        };
        match cut_page(rows, limit) {
            PageCut::Complete(objects) => Ok(PullPage { objects, now: high_water, more: false }),
            PageCut::Partial(objects) => {
                let now = objects.last().map_or(query.since, |o| o.last_change);
                Ok(PullPage { objects, now, more: true })
            }
            PageCut::WholeGroup(at) => {
                let objects = select_rows(
                    &tx,
                    "SELECT id, last_change, removed, fields FROM objects
                     WHERE entity = ?1 AND last_change = ?2 ORDER BY id LIMIT ?3",
                    params![entity.as_str(), at.millis(), -1],
                )?;
                let more = high_water > at;
                Ok(PullPage { objects, now: at, more })
            }
        }
    }

    fn push(&self, entity: &EntityName, push: Push) -> Result<PushOutcome, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;

        if let Some((key, fingerprint)) = &push.idempotency {
            let earlier: Option<(i64, String)> = tx
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

        let wall = self.clock.now_ms();
        let now = next_timestamp(wall, clock_of(&tx, entity)?);
        tx.execute(
            "INSERT INTO clocks (entity, last) VALUES (?1, ?2) ON CONFLICT (entity) DO UPDATE SET last = excluded.last",
            params![entity.as_str(), now],
        )
        .map_err(classify)?;
        apply_changes(&tx, entity, &push.changes, now)?;

        if let Some((key, fingerprint)) = &push.idempotency {
            tx.execute(
                "INSERT INTO idempotency (entity, key, now, fingerprint, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![entity.as_str(), key.as_str(), now, fingerprint, wall],
            )
            .map_err(classify)?;
        }
        self.purge_expired_keys(&tx, wall)?;
        tx.commit().map_err(classify)?;
        Ok(PushOutcome { now: Cursor::from_millis(now), replayed: false })
    }

    fn purge_expired_keys(&self, tx: &Transaction<'_>, wall: i64) -> Result<(), StoreError> {
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        if wall - last < PURGE_INTERVAL_MS {
            return Ok(());
        }
        self.last_purge_ms.store(wall, Ordering::Relaxed);
        let horizon = wall - (self.options.idempotency_ttl_secs as i64).saturating_mul(1000);
        tx.execute("DELETE FROM idempotency WHERE created_ms < ?1", [horizon]).map_err(classify)?;
        Ok(())
    }
}

/// Applies each change in order under timestamp `now`. A field absent from an upsert keeps its
/// stored value; an upsert of a removed object re-creates it from the fields sent; removing an
/// object that is unknown or already removed changes nothing.
fn apply_changes(tx: &Transaction<'_>, entity: &EntityName, changes: &[Change], now: i64) -> Result<(), StoreError> {
    let mut current =
        tx.prepare_cached("SELECT removed, fields FROM objects WHERE entity = ?1 AND id = ?2").map_err(classify)?;
    let mut insert = tx
        .prepare_cached("INSERT INTO objects (entity, id, last_change, removed, fields) VALUES (?1, ?2, ?3, 0, ?4)")
        .map_err(classify)?;
    let mut update = tx
        .prepare_cached("UPDATE objects SET last_change = ?3, removed = ?4, fields = ?5 WHERE entity = ?1 AND id = ?2")
        .map_err(classify)?;
    let e = entity.as_str();
    for change in changes {
        let id = change.id().as_str();
        let stored: Option<(bool, String)> =
            current.query_row(params![e, id], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(classify)?;
        match (change, stored) {
            (Change::Upsert { fields, .. }, None) => {
                insert.execute(params![e, id, now, fields.as_json()]).map_err(classify)?;
            }
            (Change::Upsert { fields, .. }, Some((true, _))) => {
                update.execute(params![e, id, now, false, fields.as_json()]).map_err(classify)?;
            }
            (Change::Upsert { fields, .. }, Some((false, old))) => {
                let merged = fields.merged_onto(&Fields::from_stored(old));
                update.execute(params![e, id, now, false, merged.as_json()]).map_err(classify)?;
            }
            (Change::Remove { .. }, Some((false, _))) => {
                update.execute(params![e, id, now, true, "{}"]).map_err(classify)?;
            }
            (Change::Remove { .. }, None | Some((true, _))) => {}
        }
    }
    Ok(())
}

fn clock_of(tx: &Transaction<'_>, entity: &EntityName) -> Result<i64, StoreError> {
    tx.query_row("SELECT last FROM clocks WHERE entity = ?1", [entity.as_str()], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(classify)
}

fn select_rows(tx: &Transaction<'_>, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredObject>, StoreError> {
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

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // Under an immediate transaction, so that processes starting at once apply each migration once.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(classify)?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database schema (version {applied}) is newer than this server (version {})",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql).map_err(classify)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64).map_err(classify)?;
    tx.commit().map_err(classify)
}

/// Busy and locked databases are transient; everything else is a fault.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
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
