//! The PostgreSQL store: many stateless server instances over one database.
//!
//! The guarantees of [`Store`] hold across instances because they rest on the database alone:
//! - **Unique, increasing timestamps.** Each entity has a row in `sync_clocks`. A push locks it
//!   (`SELECT ... FOR UPDATE`) before anything else, takes [`next_timestamp`] from it, and keeps the
//!   lock until its commit: pushes to one entity, from any instance, run one after another, and
//!   each reads everything its predecessor committed.
//! - **No missed change.** A pull reads the clock and the rows in one statement, hence one
//!   snapshot: a reader that sees the clock at `C` sees every push that took a timestamp `<= C`,
//!   and every push it does not see commits with a timestamp `> C`.
//! - **Atomic, durable pushes.** A push is one transaction; its answer is sent after `COMMIT`
//!   returned. When the connection is lost during `COMMIT` (the only moment the outcome is
//!   unknown to the client), the store asks the database, on another connection, whether that
//!   transaction committed (`txid_status`), and answers accordingly.
//!
//! Connections come from a bounded pool (deadpool); a connection found closed is discarded and
//! replaced, so the store recovers by itself when the database comes back. Failures to reach the
//! database are [`StoreError::Unavailable`] (`503`). The schema is versioned: [`MIGRATIONS`] are
//! embedded in the binary and applied at start-up in one transaction under an advisory lock, so
//! instances starting together apply each migration exactly once.
//!
//! Object ids are stored as `BYTEA` (their UTF-8 bytes): ids are opaque strings that may contain
//! any character, NUL included, which a PostgreSQL `TEXT` cannot hold, and byte order matches the
//! SQLite store's. Fields are stored as the exact JSON text they were merged into (`TEXT`, not
//! `JSONB`, which would reorder keys and rewrite numbers).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Transaction};
use futures_util::TryStreamExt;
use futures_util::future::try_join;
use serde::{Deserialize, Serialize};
use sync_proto::{Change, Cursor, EntityName, Fields, PullQuery, PullWriter};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, RowStream};

use super::{
    AnswerSink, AnswerStream, ObjectState, Page, PullPage, Push, PushOutcome, STREAM_CHUNK_BYTES, Store, StoreError,
    StoredObject, answer_channel,
};
use crate::clock::{self, Clock, next_timestamp};

/// Tuning of the PostgreSQL store (the `[postgres]` section of the configuration).
///
/// Every instance opens at most `pool_size` connections: size it so that the number of instances
/// times `pool_size` stays below the database's `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresOptions {
    /// Connections this instance keeps at most; requests beyond this wait for a free one.
    pub pool_size: u32,
    /// How long opening a connection may take before the request fails with `503`.
    pub connect_timeout_ms: u64,
    /// How long a request waits for a free connection before it fails with `503`.
    pub wait_timeout_ms: u64,
    /// The longest a statement may run, lock waits included, and the longest a transaction may sit
    /// idle (so that a stalled instance cannot hold an entity's clock for long); 0 leaves the
    /// database's own settings. Sent as startup options of each connection.
    pub statement_timeout_ms: u64,
    /// How long an idempotency key (and the answer it replays) is kept.
    pub idempotency_ttl_secs: u64,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
            connect_timeout_ms: 5_000,
            wait_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            idempotency_ttl_secs: 24 * 3600,
        }
    }
}

/// One version of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version it brings the schema to; versions start at 1 and have no gaps.
    pub version: i32,
    /// What it does, recorded in `sync_schema_migrations`.
    pub description: &'static str,
    /// The statements, run in the migration transaction.
    pub sql: &'static str,
}

/// The schema, in order. `sync_schema_migrations` records which versions a database has.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "objects, per-entity clocks, idempotency keys",
    sql: r#"
        CREATE TABLE sync_objects (
            entity      TEXT    NOT NULL,
            id          BYTEA   NOT NULL,   -- the id's UTF-8 bytes
            last_change BIGINT  NOT NULL,
            removed     BOOLEAN NOT NULL,
            fields      TEXT    NOT NULL,   -- the JSON object text of the fields, '{}' for a tombstone
            PRIMARY KEY (entity, id)
        );
        CREATE INDEX sync_objects_by_change ON sync_objects (entity, last_change, id);
        CREATE TABLE sync_clocks (
            entity TEXT   PRIMARY KEY,
            last   BIGINT NOT NULL          -- the last timestamp given to a push to this entity
        );
        CREATE TABLE sync_idempotency (
            entity      TEXT   NOT NULL,
            key         TEXT   NOT NULL,
            now         BIGINT NOT NULL,
            fingerprint TEXT   NOT NULL,
            created_ms  BIGINT NOT NULL,
            PRIMARY KEY (entity, key)
        );
        CREATE INDEX sync_idempotency_by_age ON sync_idempotency (created_ms);
    "#,
}];

/// The advisory lock that serializes migrations between instances ("sync-mig" in ASCII).
const MIGRATION_LOCK: i64 = 0x7379_6e63_2d6d_6967;

/// How often, at most, an instance purges expired idempotency keys.
const PURGE_INTERVAL_MS: i64 = 60_000;

/// How many connections a request tries when the ones it gets turn out to be closed before
/// anything was sent on them.
const CONNECTION_ATTEMPTS: usize = 3;

/// How long the store keeps asking whether a push whose `COMMIT` lost its connection committed.
const COMMIT_RESOLVE_WINDOW: Duration = Duration::from_secs(3);

/// TCP keepalive idle time on database connections, so that a silently dropped connection is
/// noticed within about a minute rather than the system default of two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

const LOCK_CLOCK: &str = "SELECT last, txid_current() FROM sync_clocks WHERE entity = $1 FOR UPDATE";
const CREATE_CLOCK: &str = "INSERT INTO sync_clocks (entity, last) VALUES ($1, 0) ON CONFLICT (entity) DO NOTHING";
const FIND_KEY: &str = "SELECT now, fingerprint FROM sync_idempotency WHERE entity = $1 AND key = $2";
const LOAD_OBJECTS: &str = "SELECT id, removed, fields FROM sync_objects WHERE entity = $1 AND id = ANY($2)";
/// Every write of a push in one statement: the clock, the idempotency key (when `$6` is not
/// null), and the objects.
const APPLY: &str = r#"
    WITH clock AS (
        UPDATE sync_clocks SET last = $2 WHERE entity = $1
    ), idempotency_key AS (
        INSERT INTO sync_idempotency (entity, key, now, fingerprint, created_ms)
        SELECT $1, $6::text, $2, $7::text, $8::bigint WHERE $6::text IS NOT NULL
    )
    INSERT INTO sync_objects (entity, id, last_change, removed, fields)
    SELECT $1, u.id, $2, u.removed, u.fields
    FROM unnest($3::bytea[], $4::boolean[], $5::text[]) AS u (id, removed, fields)
    ON CONFLICT (entity, id) DO UPDATE
    SET last_change = EXCLUDED.last_change, removed = EXCLUDED.removed, fields = EXCLUDED.fields
"#;
/// The high-water mark and the rows after `since`, in one statement and so in one snapshot. The
/// clock row comes first; with no rows the object columns are null.
const PULL: &str = r#"
    SELECT h.last, o.id, o.last_change, o.removed, o.fields
    FROM (SELECT COALESCE((SELECT last FROM sync_clocks WHERE entity = $1), 0) AS last) AS h
    LEFT JOIN LATERAL (
        SELECT id, last_change, removed, fields FROM sync_objects
        WHERE entity = $1 AND last_change > $2
        ORDER BY last_change, id
        LIMIT $3
    ) AS o ON true
    ORDER BY o.last_change, o.id
"#;
/// Every object of one push, for a page that must not split it.
const PULL_GROUP: &str = "SELECT id, last_change, removed, fields FROM sync_objects
    WHERE entity = $1 AND last_change = $2 ORDER BY id";
const PURGE_KEYS: &str = "DELETE FROM sync_idempotency WHERE created_ms < $1";
const TXID_STATUS: &str = "SELECT txid_status($1)";

/// The PostgreSQL implementation of [`Store`]. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Full pulls in progress, at most half the pool: each holds its connection until its client
    /// has read the whole answer, and slow or stalled clients must not take the connections that
    /// pushes, paged pulls and health checks need.
    streams: Arc<tokio::sync::Semaphore>,
    /// The connection string without its password, for logs.
    description: String,
    clock: Arc<dyn Clock>,
    options: PostgresOptions,
    last_purge_ms: AtomicI64,
}

/// Why one attempt at a pull or a push failed.
enum Failure {
    /// The connection was lost before anything was committed on it (PostgreSQL rolls back the
    /// transaction of a lost session): the same request may be tried on another connection.
    Lost(tokio_postgres::Error),
    /// The connection was lost while `COMMIT` was under way: the transaction `xid` may or may not
    /// have committed.
    CommitLost { xid: i64, now: i64, error: tokio_postgres::Error },
    /// Anything else; nothing was committed.
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if connection_lost(&e) { Self::Lost(e) } else { Self::Failed(classify(e)) }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`), checks it,
    /// and applies pending migrations. Fails if the database cannot be reached, uses an encoding
    /// other than UTF-8, or has a schema newer than this server.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        Self::connect_with_clock(url, options, clock::system()).await
    }

    /// As [`PostgresStore::connect`], with the wall clock given (tests make it step back).
    pub async fn connect_with_clock(
        url: &str,
        options: PostgresOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Internal(format!("invalid PostgreSQL connection string: {e}")))?;
        let description = describe(&config);
        if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
            return Err(StoreError::Internal(format!(
                "{description}: this build does not support TLS to PostgreSQL; use sslmode=disable or prefer, \
                 and secure the network path (a local socket, a private network or a TLS sidecar)"
            )));
        }
        let connect_timeout = Duration::from_millis(options.connect_timeout_ms.max(1));
        config.connect_timeout(connect_timeout).keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("sync-server");
        }
        if options.statement_timeout_ms > 0 {
            let ms = options.statement_timeout_ms;
            let ours = format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}");
            let all = match config.get_options() {
                Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
                _ => ours,
            };
            config.options(all);
        }

        // Fast recycling only asks whether the connection was closed; a connection that dies
        // while idle is noticed by its reader task, and one that fails a request is discarded.
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1) as usize)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_millis(options.wait_timeout_ms.max(1))))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;

        let mut client = pool.get().await.map_err(|e| match pool_error(e) {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!("cannot connect to {description}: {why}")),
            other => other,
        })?;
        check_encoding(&client, &description).await?;
        migrate(&mut client, &description).await?;
        drop(client);

        let streams = Arc::new(tokio::sync::Semaphore::new((options.pool_size as usize / 2).max(1)));
        Ok(Self {
            inner: Arc::new(Inner { pool, streams, description, clock, options, last_purge_ms: AtomicI64::new(0) }),
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(skip(self), fields(entity = %entity), err)]
    async fn pull(&self, entity: &EntityName, query: PullQuery) -> Result<PullPage, StoreError> {
        let mut attempt = 1;
        loop {
            let client = self.client().await?;
            match pull_on(&client, entity, query).await {
                Ok(page) => return Ok(page),
                Err(Failure::Lost(e)) => {
                    discard(client);
                    if attempt == CONNECTION_ATTEMPTS {
                        return Err(classify(e));
                    }
                    attempt += 1;
                }
                Err(Failure::Failed(e)) => return Err(e),
                Err(Failure::CommitLost { error, .. }) => return Err(classify(error)),
            }
        }
    }

    #[tracing::instrument(skip(self, push), fields(entity = %entity, items = push.changes.len()), err)]
    async fn push(&self, entity: &EntityName, push: Push) -> Result<PushOutcome, StoreError> {
        let mut attempt = 1;
        loop {
            let mut client = self.client().await?;
            let result = self.push_on(&mut client, entity, &push).await;
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(Failure::Lost(e)) => {
                    discard(client);
                    if attempt == CONNECTION_ATTEMPTS {
                        return Err(classify(e));
                    }
                    tracing::debug!(error = %e, attempt, "connection lost before commit; trying another");
                    attempt += 1;
                }
                Err(Failure::CommitLost { xid, now, error }) => {
                    discard(client);
                    return self.resolve_commit(xid, now, error).await;
                }
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
    }

    #[tracing::instrument(skip(self), fields(entity = %entity), err)]
    async fn pull_stream(&self, entity: &EntityName, since: Cursor) -> Result<AnswerStream, StoreError> {
        let wait = Duration::from_millis(self.inner.options.wait_timeout_ms);
        let slot = tokio::time::timeout(wait, Arc::clone(&self.inner.streams).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| StoreError::Unavailable("too many full pulls in progress".into()))?;
        let mut attempt = 1;
        let (client, first, rows) = loop {
            let client = self.client().await?;
            match open_stream(&client, entity, since).await {
                Ok((first, rows)) => break (client, first, rows),
                // The connection may be inside the stream's transaction: it never goes back to the
                // pool from here.
                Err(Failure::Lost(e)) => {
                    discard(client);
                    if attempt == CONNECTION_ATTEMPTS {
                        return Err(classify(e));
                    }
                    attempt += 1;
                }
                Err(Failure::Failed(e)) => {
                    discard(client);
                    return Err(e);
                }
                Err(Failure::CommitLost { error, .. }) => {
                    discard(client);
                    return Err(classify(error));
                }
            }
        };
        let (sink, stream) = answer_channel();
        tokio::spawn(async move {
            let _slot = slot;
            match write_answer(first, rows, &sink).await {
                Ok(Written::Whole) => match client.batch_execute("COMMIT").await {
                    Ok(()) => drop(client),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot end a streamed pull's transaction");
                        discard(client);
                    }
                },
                // Closing the connection stops the statement at once, where returning it to the
                // pool would first drain every row left.
                Ok(Written::Abandoned) => discard(client),
                Err(e) => {
                    // The status line is sent already: the error ends the stream, and the client
                    // sees a truncated answer.
                    sink.send(Err(e)).await;
                    discard(client);
                }
            }
        });
        Ok(stream)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            let client = self.client().await?;
            match client.simple_query("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) if connection_lost(&e) && attempt < CONNECTION_ATTEMPTS => {
                    discard(client);
                    attempt += 1;
                }
                Err(e) => return Err(classify(e)),
            }
        }
    }

    fn describe(&self) -> String {
        self.inner.description.clone()
    }
}

impl PostgresStore {
    /// One attempt at a push on `client`: lock the entity's clock, read what the push needs, write
    /// everything in one statement, commit.
    async fn push_on(&self, client: &mut Object, entity: &EntityName, push: &Push) -> Result<PushOutcome, Failure> {
        let tx = client.transaction().await?;
        let e = entity.as_str();

        // The clock row lock orders this push after every other push to the entity; every read
        // below is a later statement, so it sees what those pushes committed.
        let lock = tx.prepare_cached(LOCK_CLOCK).await?;
        let (last, xid) = match tx.query_opt(&lock, &[&e]).await? {
            Some(row) => (row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?),
            None => {
                // The first push to this entity: create its clock, then lock it like any other.
                let create = tx.prepare_cached(CREATE_CLOCK).await?;
                tx.execute(&create, &[&e]).await?;
                let row = tx.query_one(&lock, &[&e]).await?;
                (row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?)
            }
        };

        let ids = unique_ids(&push.changes);
        let (earlier, stored) = try_join(earlier_push(&tx, e, push), load_objects(&tx, e, &ids)).await?;
        if let (Some((now, earlier_fingerprint)), Some((key, fingerprint))) = (earlier, &push.idempotency) {
            // Dropping the transaction rolls it back: a replay changes nothing, the clock included.
            return if &earlier_fingerprint == fingerprint {
                Ok(PushOutcome { now: Cursor::from_millis(now), replayed: true })
            } else {
                Err(Failure::Failed(StoreError::IdempotencyKeyReused(key.as_str().to_owned())))
            };
        }

        let wall = self.inner.clock.now_ms();
        let now = next_timestamp(wall, last);
        let writes = plan_writes(&push.changes, stored);
        let (mut w_ids, mut w_removed, mut w_fields) = (Vec::new(), Vec::new(), Vec::new());
        for (id, state) in &writes {
            let (removed, fields) = state.columns();
            w_ids.push(id.as_bytes());
            w_removed.push(removed);
            w_fields.push(fields);
        }
        let (key, fingerprint) = match &push.idempotency {
            Some((key, fingerprint)) => (Some(key.as_str()), Some(fingerprint.as_str())),
            None => (None, None),
        };
        let apply = tx.prepare_cached(APPLY).await?;
        tx.execute(&apply, &[&e, &now, &w_ids, &w_removed, &w_fields, &key, &fingerprint, &wall]).await?;

        match tx.commit().await {
            Ok(()) => {}
            Err(error) if connection_lost(&error) => return Err(Failure::CommitLost { xid, now, error }),
            Err(error) => return Err(error.into()),
        }
        self.purge_expired_keys(wall);
        Ok(PushOutcome { now: Cursor::from_millis(now), replayed: false })
    }

    /// The connection was lost during `COMMIT` of transaction `xid`: asks the database whether it
    /// committed, so that the answer is `200` exactly when the push was applied. When that cannot
    /// be learnt within [`COMMIT_RESOLVE_WINDOW`], the answer is `503` and the outcome unknown,
    /// which is what idempotency keys are for.
    async fn resolve_commit(
        &self,
        xid: i64,
        now: i64,
        error: tokio_postgres::Error,
    ) -> Result<PushOutcome, StoreError> {
        let deadline = Instant::now() + COMMIT_RESOLVE_WINDOW;
        loop {
            match self.transaction_status(xid).await {
                Ok(Some(status)) if status == "committed" => {
                    tracing::warn!(xid, now, "the connection was lost during COMMIT, but the push committed");
                    self.purge_expired_keys(self.inner.clock.now_ms());
                    return Ok(PushOutcome { now: Cursor::from_millis(now), replayed: false });
                }
                Ok(Some(status)) if status == "aborted" => return Err(classify(error)),
                // "in progress": the backend has not finished yet; or the database cannot be asked yet.
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                last => {
                    tracing::error!(
                        xid,
                        now,
                        error = %error,
                        status = ?last,
                        "the connection was lost during COMMIT and whether the push committed is unknown"
                    );
                    return Err(StoreError::Unavailable(format!(
                        "the connection to the database was lost during commit and the outcome is unknown: {error}"
                    )));
                }
            }
        }
    }

    /// `committed`, `aborted` or `in progress`, from a fresh connection.
    async fn transaction_status(&self, xid: i64) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(TXID_STATUS).await.map_err(classify)?;
        client.query_one(&stmt, &[&xid]).await.and_then(|row| row.try_get(0)).map_err(classify)
    }

    /// Deletes idempotency keys older than the configured time to live, at most once per
    /// [`PURGE_INTERVAL_MS`] per instance, in the background: a push never waits for it.
    fn purge_expired_keys(&self, wall: i64) {
        let last = self.inner.last_purge_ms.load(Ordering::Relaxed);
        if wall - last < PURGE_INTERVAL_MS
            || self.inner.last_purge_ms.compare_exchange(last, wall, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let horizon = wall - (self.inner.options.idempotency_ttl_secs as i64).saturating_mul(1000);
        let pool = self.inner.pool.clone();
        tokio::spawn(async move {
            let purged = async {
                let client = pool.get().await.map_err(pool_error)?;
                let stmt = client.prepare_cached(PURGE_KEYS).await.map_err(classify)?;
                client.execute(&stmt, &[&horizon]).await.map_err(classify)
            }
            .await;
            match purged {
                Ok(n) => tracing::debug!(purged = n, "expired idempotency keys purged"),
                Err(e) => tracing::warn!(error = %e, "cannot purge expired idempotency keys"),
            }
        });
    }
}

/// The pull itself; its rows and its high-water mark come from one statement.
async fn pull_on(client: &Object, entity: &EntityName, query: PullQuery) -> Result<PullPage, Failure> {
    let e = entity.as_str();
    let fetch = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX - 1) + 1);
    let stmt = client.prepare_cached(PULL).await?;
    let mut high_water = 0;
    let mut rows = Vec::new();
    for row in client.query(&stmt, &[&e, &query.since.millis(), &fetch]).await? {
        high_water = row.try_get(0)?;
        if let Some(id) = row.try_get::<_, Option<Vec<u8>>>(1)? {
            rows.push(stored_object(id, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)?);
        }
    }
    let high_water = Cursor::from_millis(high_water);
    match Page::cut(rows, query, high_water) {
        Page::Ready(page) => Ok(page),
        Page::WholeGroup(at) => {
            // Another snapshot, and that is enough: the objects of one push became visible
            // together, and one moved on by a later push shows up after `at`, in a later page.
            let stmt = client.prepare_cached(PULL_GROUP).await?;
            let mut objects = Vec::new();
            for row in client.query(&stmt, &[&e, &at.millis()]).await? {
                objects.push(stored_object(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)?);
            }
            Ok(Page::whole_group(objects, at, high_water))
        }
    }
}

/// Starts the pull statement without a limit and waits for its first row, which carries the
/// high-water mark (there always is one): from then on the snapshot is taken.
///
/// The statement runs in a read-only transaction of its own without a statement timeout: it lasts
/// as long as the client takes to read the answer, which for a first sync over a slow link may be
/// longer than any push should. The caller ends that transaction, or discards the connection.
async fn open_stream(
    client: &Object,
    entity: &EntityName,
    since: Cursor,
) -> Result<(Row, Pin<Box<RowStream>>), Failure> {
    client.batch_execute("BEGIN READ ONLY; SET LOCAL statement_timeout = 0").await?;
    let stmt = client.prepare_cached(PULL).await?;
    let no_limit: Option<i64> = None;
    let params: [&(dyn ToSql + Sync); 3] = [&entity.as_str(), &since.millis(), &no_limit];
    let mut rows = Box::pin(client.query_raw(&stmt, params).await?);
    let first = rows
        .try_next()
        .await?
        .ok_or_else(|| Failure::Failed(StoreError::Internal("the pull statement returned no row".into())))?;
    Ok((first, rows))
}

/// How far a streamed answer got.
enum Written {
    /// Every row was sent.
    Whole,
    /// The client went away before the end.
    Abandoned,
}

/// Writes the answer from the rows of [`open_stream`] into `sink`, chunk by chunk.
async fn write_answer(first: Row, mut rows: Pin<Box<RowStream>>, sink: &AnswerSink) -> Result<Written, StoreError> {
    let now = Cursor::from_millis(first.try_get(0).map_err(classify)?);
    let mut answer = PullWriter::new();
    let mut next = Some(first);
    while let Some(row) = next {
        if let Some(id) = row.try_get::<_, Option<&[u8]>>(1).map_err(classify)? {
            let id =
                std::str::from_utf8(id).map_err(|_| StoreError::Internal("a stored id is not valid UTF-8".into()))?;
            let last_change = Cursor::from_millis(row.try_get(2).map_err(classify)?);
            if row.try_get(3).map_err(classify)? {
                answer.tombstone(id, last_change);
            } else {
                answer.object_json(id, row.try_get(4).map_err(classify)?, last_change);
            }
        }
        if answer.len() >= STREAM_CHUNK_BYTES && !sink.send(Ok(Bytes::from(answer.take()))).await {
            return Ok(Written::Abandoned);
        }
        next = rows.try_next().await.map_err(classify)?;
    }
    sink.send(Ok(Bytes::from(answer.finish(now, None)))).await;
    Ok(Written::Whole)
}

fn stored_object(id: Vec<u8>, last_change: i64, removed: bool, fields: String) -> Result<StoredObject, Failure> {
    Ok(StoredObject {
        id: stored_id(id)?,
        last_change: Cursor::from_millis(last_change),
        fields: if removed { None } else { Some(Fields::from_stored(fields)) },
    })
}

/// Ids are written from Rust strings only, so their bytes are always UTF-8.
fn stored_id(id: Vec<u8>) -> Result<String, Failure> {
    String::from_utf8(id).map_err(|_| Failure::Failed(StoreError::Internal("a stored id is not valid UTF-8".into())))
}

/// The `now` and fingerprint of an earlier push under the same idempotency key, if any.
async fn earlier_push(tx: &Transaction<'_>, entity: &str, push: &Push) -> Result<Option<(i64, String)>, Failure> {
    let Some((key, _)) = &push.idempotency else {
        return Ok(None);
    };
    let stmt = tx.prepare_cached(FIND_KEY).await?;
    match tx.query_opt(&stmt, &[&entity, &key.as_str()]).await? {
        Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
        None => Ok(None),
    }
}

/// What is stored for `ids`; ids not returned are absent.
async fn load_objects(
    tx: &Transaction<'_>,
    entity: &str,
    ids: &[&str],
) -> Result<HashMap<String, ObjectState>, Failure> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
    let stmt = tx.prepare_cached(LOAD_OBJECTS).await?;
    let mut stored = HashMap::with_capacity(ids.len());
    for row in tx.query(&stmt, &[&entity, &keys]).await? {
        let id = stored_id(row.try_get(0)?)?;
        let current = if row.try_get(1)? {
            ObjectState::Removed
        } else {
            ObjectState::Live(Fields::from_stored(row.try_get(2)?))
        };
        stored.insert(id, current);
    }
    Ok(stored)
}

/// The distinct ids of a push, in order of first appearance.
fn unique_ids(changes: &[Change]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::with_capacity(changes.len());
    changes.iter().map(|c| c.id().as_str()).filter(|id| seen.insert(*id)).collect()
}

/// Applies each change in order to what is stored, by the rules of [`ObjectState::after`]. Returns
/// the rows to write (each id once, in order of first change), leaving out ids left unchanged.
fn plan_writes(changes: &[Change], mut stored: HashMap<String, ObjectState>) -> Vec<(String, ObjectState)> {
    let mut order: Vec<&str> = Vec::new();
    let mut dirty = std::collections::HashSet::new();
    for change in changes {
        let id = change.id().as_str();
        let current = stored.entry(id.to_owned()).or_insert(ObjectState::Absent);
        let Some(next) = current.after(change) else { continue };
        *current = next;
        if dirty.insert(id) {
            order.push(id);
        }
    }
    order.into_iter().filter_map(|id| stored.remove_entry(id)).collect()
}

/// Refuses databases whose encoding cannot hold every string a client may send.
async fn check_encoding(client: &Object, description: &str) -> Result<(), StoreError> {
    let row = client.query_one("SELECT current_setting('server_encoding')", &[]).await.map_err(classify)?;
    let encoding: String = row.try_get(0).map_err(classify)?;
    if encoding != "UTF8" {
        return Err(StoreError::Internal(format!(
            "{description}: the database encoding is {encoding}; the sync store needs UTF8 \
             (CREATE DATABASE ... ENCODING 'UTF8')"
        )));
    }
    Ok(())
}

/// Applies pending [`MIGRATIONS`] in one transaction, under an advisory lock held until its end:
/// instances starting together wait for each other, and a crash midway applies nothing.
async fn migrate(client: &mut Object, description: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(classify)?;
    // A migration may take longer than requests are allowed to; so may waiting for another
    // instance's migration.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0").await.map_err(classify)?;
    let free: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(classify)?;
    if !free {
        tracing::info!("another instance is migrating {description}; waiting for it");
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(classify)?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sync_schema_migrations (
            version     INTEGER     PRIMARY KEY,
            description TEXT        NOT NULL,
            applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(classify)?;
    let applied: i32 = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM sync_schema_migrations", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(classify)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if applied > latest {
        return Err(StoreError::Internal(format!(
            "{description}: the database schema (version {applied}) is newer than this server (version {latest})"
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tracing::info!(version = migration.version, description = migration.description, "applying migration");
        tx.batch_execute(migration.sql).await.map_err(classify)?;
        tx.execute(
            "INSERT INTO sync_schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)
}

/// `postgres://user@host:port/dbname`: where the store is, without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let dbname = config.get_dbname().or(config.get_user()).unwrap_or_default();
    format!("postgres://{user}{}/{dbname}", hosts.join(","))
}

/// Removes a connection that failed from the pool instead of returning it.
fn discard(client: Object) {
    drop(Object::take(client));
}

/// Whether `e` means the connection is gone (closed, reset, or its backend terminated): the
/// database may be fine, and a new connection may succeed.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code);
    }
    io_cause(e)
}

fn io_cause(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Failures to reach the database, and those that a retry may not meet again (timeouts, lock
/// and serialization conflicts, overload, a standby that cannot write), are `Unavailable`;
/// everything else is a fault.
fn classify(e: tokio_postgres::Error) -> StoreError {
    let transient = connection_lost(&e)
        || e.code().is_some_and(|code| {
            let class = &code.code()[..2];
            matches!(class, "53" | "28")
                || [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::QUERY_CANCELED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                    SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                    SqlState::INVALID_CATALOG_NAME,
                ]
                .contains(code)
        });
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    let message = match std::error::Error::source(&e).filter(|_| e.as_db_error().is_none()) {
        Some(cause) => format!("{message}: {cause}"),
        None => message,
    };
    if transient { StoreError::Unavailable(message) } else { StoreError::Internal(message) }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no database connection became available in time ({kind:?})"))
        }
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        other => StoreError::Internal(format!("connection pool failure: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_proto::ObjectId;

    fn upsert(id: &str, json: &str) -> Change {
        Change::Upsert { id: ObjectId::new(id, 64).unwrap(), fields: Fields::from_stored(json.into()) }
    }

    fn remove(id: &str) -> Change {
        Change::Remove { id: ObjectId::new(id, 64).unwrap() }
    }

    fn live(json: &str) -> ObjectState {
        ObjectState::Live(Fields::from_stored(json.into()))
    }

    #[test]
    fn writes_follow_the_changes_of_a_push_in_order() {
        let stored =
            HashMap::from([("live".to_owned(), live(r#"{"a":1,"b":2}"#)), ("gone".to_owned(), ObjectState::Removed)]);
        let changes = vec![
            upsert("live", r#"{"b":3}"#),
            remove("unknown"),
            remove("gone"),
            upsert("new", r#"{"x":null}"#),
            remove("new"),
            upsert("gone", r#"{"c":1}"#),
            upsert("live", r#"{"d":true}"#),
        ];
        assert_eq!(
            plan_writes(&changes, stored),
            vec![
                ("live".to_owned(), live(r#"{"a":1,"b":3,"d":true}"#)),
                ("new".to_owned(), ObjectState::Removed),
                ("gone".to_owned(), live(r#"{"c":1}"#)),
            ],
            "merged in order; removals of unknown or removed objects write nothing"
        );
    }

    #[test]
    fn the_description_has_no_password() {
        let config: tokio_postgres::Config = "postgres://app:secret@db.internal:6432/sync".parse().unwrap();
        assert_eq!(describe(&config), "postgres://app@db.internal:6432/sync");
        let config: tokio_postgres::Config = "host=/run/postgresql user=app".parse().unwrap();
        assert_eq!(describe(&config), "postgres://app@/run/postgresql:5432/app");
    }

    #[test]
    fn migrations_are_numbered_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }
}
