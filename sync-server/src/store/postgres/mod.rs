//! The PostgreSQL store: many stateless server instances over one database.
//!
//! The guarantees of [`Store`] hold across instances because they rest on the database alone:
//! - **Unique, increasing timestamps.** Each scope has a row in `sync_clocks`, locked by a push
//!   until its commit ([`writes`]): pushes to one scope, from any instance, run one after another.
//! - **No missed change.** A pull reads the clock and the rows in one statement ([`reads`]).
//! - **Atomic, durable pushes.** A push is one transaction; its answer is sent after `COMMIT`
//!   returned. When the connection is lost during `COMMIT`, the store asks the database, on
//!   another connection, whether that transaction committed (`txid_status`).
//!
//! Connections come from a bounded pool ([`connection`]); a connection that fails a request is
//! discarded and replaced, so the store recovers by itself when the database comes back.
//! Failures to reach the database are [`StoreError::Unavailable`] (`503`). The schema is
//! versioned and migrated at start-up ([`schema`]).
//!
//! Object ids are stored as `BYTEA` (their UTF-8 bytes): ids are opaque strings that may contain
//! any character, NUL included, which a PostgreSQL `TEXT` cannot hold, and byte order matches the
//! SQLite store's. Fields are stored as the exact JSON text they were merged into (`TEXT`, not
//! `JSONB`, which would reorder keys and rewrite numbers).

mod connection;
mod dashboard;
mod listen;
mod outbox;
mod reads;
mod schema;
mod tombstones;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use sync_proto::{Cursor, PullQuery};

use self::connection::{Failure, discard, pool_error, with_connection};
use self::reads::{PgRead, Written};
pub use self::schema::{MIGRATIONS, Migration};
use super::answer::{self, AnswerStream};
use super::outbox::Routes;
use super::{PullPage, Push, PushOutcome, Scope, Store, StoreError, read};
use crate::clock::{self, Clock};

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
    /// idle (so that a stalled instance cannot hold a clock for long); 0 leaves the database's
    /// own settings. Sent as startup options of each connection.
    pub statement_timeout_ms: u64,
    /// How long a streamed answer waits for a client that takes nothing before it stops and
    /// gives its connection back. Not part of the section: the server sets it to
    /// `send_timeout_secs`.
    #[serde(skip)]
    pub answer_stall: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
            connect_timeout_ms: 5_000,
            wait_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            answer_stall: answer::DEFAULT_STALL,
        }
    }
}

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
    /// Where pushes append outbox events.
    routes: Routes,
    /// The settings of the pool's connections, for the one that listens for other instances' commits.
    config: tokio_postgres::Config,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`), checks it,
    /// and applies pending migrations. Fails if the database cannot be reached, uses an encoding
    /// other than UTF-8, has no schema to work in, or has a schema newer than this server.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        Self::connect_with_clock(url, options, clock::system()).await
    }

    /// As [`PostgresStore::connect`], with the wall clock given (tests make it step back).
    pub async fn connect_with_clock(
        url: &str,
        options: PostgresOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::connect_with(url, options, clock, Routes::default()).await
    }

    /// As [`PostgresStore::connect_with_clock`], with pushes appending outbox events along
    /// `routes`.
    pub async fn connect_with(
        url: &str,
        options: PostgresOptions,
        clock: Arc<dyn Clock>,
        routes: Routes,
    ) -> Result<Self, StoreError> {
        let (pool, description, config) = connection::pool(url, &options)?;
        let mut client = pool.get().await.map_err(|e| match pool_error(e) {
            StoreError::Unavailable { cause, .. } => {
                StoreError::Unavailable { what: format!("cannot connect to {description}"), cause }
            }
            other => other,
        })?;
        schema::prepare(&mut client, &description).await?;
        drop(client);
        let streams = Arc::new(tokio::sync::Semaphore::new((options.pool_size as usize / 2).max(1)));
        Ok(Self { inner: Arc::new(Inner { pool, streams, description, clock, options, routes, config }) })
    }
}

#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(skip(self), fields(scope = %scope))]
    async fn pull(&self, scope: &Scope, query: PullQuery) -> Result<PullPage, StoreError> {
        with_connection(&self.inner.pool, |client| async move {
            let page = read::page(&mut PgRead(&client), scope, query).await;
            (client, page)
        })
        .await
        .map(|(_, page)| page)
        .map_err(Failure::into_store_error)
    }

    #[tracing::instrument(skip(self), fields(scope = %scope))]
    async fn pull_stream(&self, scope: &Scope, query: PullQuery) -> Result<AnswerStream, StoreError> {
        let wait = Duration::from_millis(self.inner.options.wait_timeout_ms);
        let slot = tokio::time::timeout(wait, Arc::clone(&self.inner.streams).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| StoreError::unavailable_because("too many full pulls in progress"))?;
        let (client, open) = with_connection(&self.inner.pool, |client| async move {
            let open = reads::open_stream(&client, scope, query).await;
            (client, open)
        })
        .await
        .map_err(Failure::into_store_error)?;
        let (mut answer, stream) = answer::channel(self.inner.options.answer_stall);
        tokio::spawn(async move {
            let _slot = slot;
            match reads::write_answer(open, &mut answer).await {
                Ok(Written::Whole) => match client.batch_execute("COMMIT").await {
                    Ok(()) => drop(client),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot end a streamed pull's transaction");
                        discard(client);
                    }
                },
                Ok(Written::Abandoned) => discard(client),
                Err(e) => {
                    // The status line is sent already: the error ends the stream, and the client
                    // sees a truncated answer.
                    answer.send(Err(e)).await;
                    discard(client);
                }
            }
        });
        Ok(stream)
    }

    #[tracing::instrument(skip(self, push), fields(scope = %scope, items = push.changes.len()))]
    async fn push(&self, scope: &Scope, push: Push) -> Result<PushOutcome, StoreError> {
        let attempt = |mut client| {
            let push = &push;
            async move {
                let outcome = self.push_on(&mut client, scope, push).await;
                (client, outcome)
            }
        };
        match with_connection(&self.inner.pool, attempt).await {
            Ok((_, outcome)) => Ok(outcome),
            Err(Failure::CommitLost { xid, now, error }) => self.resolve_commit(xid, now, error).await,
            Err(failure) => Err(failure.into_store_error()),
        }
    }

    async fn purge_tombstones(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        with_connection(&self.inner.pool, |mut client| async move {
            let purged = tombstones::purge(&mut client, before_ms, batch).await;
            (client, purged)
        })
        .await
        .map(|(_, n)| n)
        .map_err(Failure::into_store_error)
    }

    async fn purge_idempotency_keys(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        with_connection(&self.inner.pool, |mut client| async move {
            let purged = Self::purge_keys_on(&mut client, before_ms, batch).await;
            (client, purged)
        })
        .await
        .map(|(_, n)| n)
        .map_err(Failure::into_store_error)
    }

    async fn clocks(&self, scopes: &[Scope]) -> Result<Vec<Cursor>, StoreError> {
        let entities: Vec<&str> = scopes.iter().map(Scope::key).collect();
        let partitions: Vec<&str> = scopes.iter().map(Scope::partition).collect();
        let (_, rows) = with_connection(&self.inner.pool, |client| {
            let (entities, partitions) = (&entities, &partitions);
            async move {
                let rows = client
                    .query(
                        "SELECT COALESCE(c.last, 0)
                         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(entity, partition, n)
                         LEFT JOIN sync_clocks c USING (entity, partition)
                         ORDER BY s.n",
                        &[entities, partitions],
                    )
                    .await
                    .map_err(Failure::from);
                (client, rows)
            }
        })
        .await
        .map_err(Failure::into_store_error)?;
        Ok(rows.iter().map(|row| Cursor::from_millis(row.get(0))).collect())
    }

    async fn announce(&self, origin: u64, scopes: &[Scope]) -> Result<(), StoreError> {
        self.notify(origin, scopes).await
    }

    async fn watch(&self, origin: u64, feed: crate::live::Feed, poll: Duration) -> Result<(), StoreError> {
        self.listen(origin, feed, poll).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        with_connection(&self.inner.pool, |client| async move {
            let answered = client.simple_query("SELECT 1").await.map(drop).map_err(Failure::from);
            (client, answered)
        })
        .await
        .map(drop)
        .map_err(Failure::into_store_error)
    }

    async fn durability(&self) -> Result<String, StoreError> {
        with_connection(&self.inner.pool, |client| async move {
            let settings = client
                .query_one("SELECT current_setting('fsync'), current_setting('synchronous_commit')", &[])
                .await
                .and_then(|row| {
                    let (fsync, commit): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                    Ok(format!("fsync={fsync} synchronous_commit={commit}"))
                })
                .map_err(Failure::from);
            (client, settings)
        })
        .await
        .map(|(_, settings)| settings)
        .map_err(Failure::into_store_error)
    }

    fn describe(&self) -> String {
        self.inner.description.clone()
    }
}
