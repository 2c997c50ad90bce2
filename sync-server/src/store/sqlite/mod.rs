//! The embedded SQLite store: one file, nothing to install.
//!
//! - [`writer`]: the one connection that writes, on its own thread, committing pushes in groups;
//! - [`reads`]: pulls on a bounded pool of read-only connections, each in one snapshot;
//! - [`connection`]: the pools, waiting out other processes' locks, and error classification;
//! - [`dashboard`]: the console's reads, in a reader's snapshot interrupted at their deadline;
//! - [`schema`]: migrations and the durability settings (WAL, `synchronous = FULL`).

mod connection;
mod dashboard;
mod outbox;
mod reads;
mod schema;
mod tombstones;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use serde::{Deserialize, Serialize};
use sync_proto::{Cursor, PullQuery};
use tokio::sync::{mpsc, oneshot};

use self::connection::{Snapshot, classify, no_reader, reader_pool};
use self::reads::SqliteRead;
use self::writer::{Job, Writer};
use super::answer::{self, AnswerStream};
use super::outbox::Routes;
use super::{PullPage, Push, PushOutcome, Scope, Store, StoreError, read, run_ready};
use crate::clock::{self, Clock};

/// Tuning of the SQLite store (the `[sqlite]` section of the configuration).
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
    /// How long a streamed answer waits for a client that takes nothing before it stops and
    /// gives its connection back. Not part of the section: the server sets it to
    /// `send_timeout_secs`.
    #[serde(skip)]
    pub answer_stall: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { readers: 4, stream_readers: 16, busy_timeout_ms: 5_000, answer_stall: answer::DEFAULT_STALL }
    }
}

/// The SQLite implementation of [`Store`]. Cloning shares the connections and the writer.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Jobs for the writer thread, the only one that writes.
    writes: mpsc::Sender<Job>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    /// Connections of full pulls only (see [`SqliteOptions::stream_readers`]).
    stream_readers: r2d2::Pool<SqliteConnectionManager>,
    /// See [`SqliteOptions::answer_stall`].
    answer_stall: Duration,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, starts the
    /// writer thread and prepares the reader pools.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        Self::open_with_clock(path, options, clock::system())
    }

    /// As [`SqliteStore::open`], with the wall clock given (tests make it step back).
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        options: SqliteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open_with(path, options, clock, Routes::default())
    }

    /// As [`SqliteStore::open_with_clock`], with pushes appending outbox events along `routes`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
        clock: Arc<dyn Clock>,
        routes: Routes,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let busy = Duration::from_millis(options.busy_timeout_ms);
        let conn = schema::open_writer(&path, busy)?;
        let readers = reader_pool(&path, options.readers, busy)?;
        let stream_readers = reader_pool(&path, options.stream_readers, busy)?;
        let (writes, queue) = mpsc::channel(writer::QUEUE);
        let writer = Writer { conn, clock, routes: Arc::new(routes) };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::internal("cannot start the SQLite writer thread", e))?;
        let answer_stall = options.answer_stall;
        Ok(Self { inner: Arc::new(Inner { path, writes, readers, stream_readers, answer_stall }) })
    }

    /// Runs `job` on the blocking pool.
    async fn blocking<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || job(&inner))
            .await
            .map_err(|e| StoreError::internal("an SQLite task failed", e))?
    }

    /// Runs `job` on the writer's connection, between commit groups, and waits for its outcome.
    async fn on_writer<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(|reply| Job::Run(Box::new(move |conn| drop(reply.send(job(conn)))))).await
    }

    /// Hands a job to the writer thread and waits for its outcome.
    async fn write<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job) -> Result<T, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::unavailable_because("the SQLite writer has stopped");
        self.inner.writes.send(job(reply)).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip(self), fields(scope = %scope))]
    async fn pull(&self, scope: &Scope, query: PullQuery) -> Result<PullPage, StoreError> {
        let scope = scope.clone();
        self.blocking(move |inner| {
            let conn = inner.readers.get().map_err(no_reader)?;
            let tx = Snapshot::begin(&conn)?;
            run_ready(read::page(&mut SqliteRead(&tx), &scope, query))
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(scope = %scope))]
    async fn pull_stream(&self, scope: &Scope, query: PullQuery) -> Result<AnswerStream, StoreError> {
        // Most pulls are deltas of a few rows. When a reader is free at once, such an answer is
        // read here, on the request's thread: handing it to a blocking thread and back cost a
        // 50-object delta pull about a fifth of its time in thread switches. An answer that
        // does not fit one chunk is abandoned at that chunk (a bounded read) and streamed, on
        // the same connection.
        let held = self.inner.stream_readers.try_get();
        if let Some(conn) = &held {
            let (mut answer, stream) = answer::channel(self.inner.answer_stall);
            if reads::one_chunk(conn, scope, query, &mut answer)? {
                return Ok(stream);
            }
        }
        let (mut answer, stream) = answer::channel(self.inner.answer_stall);
        let (ready, opened) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let scope = scope.clone();
        tokio::task::spawn_blocking(move || {
            let mut ready = Some(ready);
            let streamed = held
                .map_or_else(|| inner.stream_readers.get().map_err(no_reader), Ok)
                .and_then(|conn| reads::stream(&conn, &scope, query, &mut ready, &mut answer));
            if let Err(e) = streamed {
                // Before the snapshot was taken the caller can still answer with an error status;
                // after, the error ends the stream and the client sees a truncated answer.
                match ready.take() {
                    Some(ready) => drop(ready.send(Err(e))),
                    None => drop(answer.blocking_send(Err(e))),
                }
            }
        });
        opened.await.map_err(|_| StoreError::internal_because("the pull task ended before reading"))??;
        Ok(stream)
    }

    #[tracing::instrument(skip(self, push), fields(scope = %scope, items = push.changes.len()))]
    async fn push(&self, scope: &Scope, push: Push) -> Result<PushOutcome, StoreError> {
        let (scope, span) = (scope.clone(), tracing::Span::current());
        self.write(|reply| Job::Push { scope, push, span, reply }).await
    }

    async fn purge_idempotency_keys(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        self.write(|reply| Job::Purge { before_ms, batch, reply }).await
    }

    async fn purge_tombstones(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        // On the writer, between commit groups: no push runs meanwhile.
        self.on_writer(move |conn| tombstones::purge(conn, before_ms, batch)).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        if self.inner.writes.is_closed() {
            return Err(StoreError::internal_because("the SQLite writer thread has stopped"));
        }
        self.blocking(|inner| {
            let conn = inner.readers.get().map_err(no_reader)?;
            conn.query_row("SELECT 1", [], |_| Ok(())).map_err(classify)
        })
        .await
    }

    async fn clocks(&self, scopes: &[Scope]) -> Result<Vec<Cursor>, StoreError> {
        let scopes = scopes.to_vec();
        self.blocking(move |inner| {
            let conn = inner.readers.get().map_err(no_reader)?;
            let tx = Snapshot::begin(&conn)?;
            scopes.iter().map(|scope| reads::clock_of(&tx, scope).map(Cursor::from_millis)).collect()
        })
        .await
    }

    async fn announce(&self, _origin: u64, _scopes: &[Scope]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn watch(&self, _origin: u64, feed: crate::live::Feed, poll: Duration) -> Result<(), StoreError> {
        self.watch_file(feed, poll).await
    }

    async fn durability(&self) -> Result<String, StoreError> {
        self.on_writer(|conn| {
            let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(classify)?;
            let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).map_err(classify)?;
            let synchronous = match synchronous {
                0 => "off",
                1 => "normal",
                2 => "full",
                3 => "extra",
                _ => "unknown",
            };
            Ok(format!("journal_mode={} synchronous={synchronous}", journal.to_lowercase()))
        })
        .await
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.inner.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_writer_fails_the_health_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db"), SqliteOptions::default()).unwrap();
        store.health().await.unwrap();
        store.inner.writes.send(Job::Crash).await.unwrap();
        for _ in 0..100 {
            if store.inner.writes.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = store.health().await.unwrap_err();
        assert!(err.to_string().contains("writer thread has stopped"), "{err}");
    }

    /// Reads a streamed answer to its end: how many chunks it came in, and its JSON.
    async fn read_all(mut answer: AnswerStream) -> (usize, serde_json::Value) {
        let (mut chunks, mut text) = (0, Vec::new());
        while let Some(chunk) = answer.recv().await {
            text.extend_from_slice(&chunk.unwrap());
            chunks += 1;
        }
        (chunks, serde_json::from_slice(&text).unwrap())
    }

    #[test]
    fn an_answer_of_one_chunk_needs_no_blocking_thread_and_a_larger_one_still_streams() {
        // The runtime's only blocking thread is held: a pull that waited for one would time out.
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path().join("s.db"), SqliteOptions::default()).unwrap();
            let scope = Scope::entity(sync_proto::EntityName::new("Task").unwrap());
            let push = |body: String| {
                let push =
                    Push::new(sync_proto::parse_push(body.as_bytes(), &sync_proto::Limits::default(), None).unwrap());
                let (store, scope) = (store.clone(), scope.clone());
                async move { store.push(&scope, push).await.unwrap() }
            };
            push(r#"[{"id":"a","t":"x"},{"id":"b","t":"y"}]"#.to_owned()).await;
            let (release, held) = std::sync::mpsc::channel::<()>();
            let holder = tokio::task::spawn_blocking(move || held.recv());

            let small = tokio::time::timeout(Duration::from_secs(5), store.pull_stream(&scope, PullQuery::default()))
                .await
                .expect("a one-chunk answer waited for a blocking thread")
                .unwrap();
            let (chunks, json) = read_all(small).await;
            assert_eq!((chunks, json["updates"].as_array().unwrap().len()), (1, 2));

            // About 200 kB: read from a blocking thread, in chunks, once one is free.
            let text = "z".repeat(1000);
            push(
                serde_json::json!(
                    (0..200).map(|i| serde_json::json!({"id": format!("c{i}"), "t": text})).collect::<Vec<_>>()
                )
                .to_string(),
            )
            .await;
            let large = tokio::spawn({
                let store = store.clone();
                let scope = scope.clone();
                async move { read_all(store.pull_stream(&scope, PullQuery::default()).await.unwrap()).await }
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!large.is_finished(), "a multi-chunk answer was read without a blocking thread");
            release.send(()).unwrap();
            holder.await.unwrap().unwrap();
            let (chunks, json) = large.await.unwrap();
            assert!(chunks > 1, "{chunks} chunk");
            assert_eq!(json["updates"].as_array().unwrap().len(), 202);
        });
    }
}
