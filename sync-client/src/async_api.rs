//! The async API for tokio apps (feature `tokio`): [`AsyncStore`] and [`AsyncSyncer`] beside the
//! blocking [`Store`] and [`Syncer`], sharing one engine and one database.
//!
//! Every call runs the blocking call of the same name on tokio's blocking pool
//! (`spawn_blocking`), so it never stalls the runtime's workers, on a current-thread runtime
//! too: the runtime keeps running its other tasks while a sync waits on the network or a store
//! call on the disk. Both need a tokio runtime to be running. A call that is dropped before it
//! completes (its future cancelled) still completes on the blocking pool: a write or a sync is
//! never cut half-way.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::conflict::ConflictHandler;
use crate::engine::{EntityReport, SyncReport, Syncer};
use crate::error::{StoreError, SyncError};
use crate::live::LiveOptions;
use crate::status::SyncStatus;
use crate::store::{Query, Record, Store};

/// Runs `f` on the blocking pool and waits for it without blocking the runtime. A panic in `f`
/// is resumed here, as if `f` had run in place.
async fn off_the_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime that shuts down cancels a blocking task, and then nothing awaits this.
        Err(e) => panic!("the blocking task of an async store call did not run: {e}"),
    }
}

/// A [`Store`] for async code: the same database, with each call awaited.
#[derive(Debug, Clone)]
pub struct AsyncStore {
    store: Store,
}

impl AsyncStore {
    /// The async API of `store` (a cheap handle on the same database).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The blocking store, for what this type has no method of (subscriptions, which never
    /// block, and [`Store::typed`]).
    pub fn blocking(&self) -> &Store {
        &self.store
    }

    /// Runs `f` with the blocking store on the blocking pool: for a transaction, typed records or
    /// any other store call, in one trip.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        off_the_runtime(move || f(&store)).await
    }

    /// See [`Store::insert`].
    pub async fn insert(&self, entity: &str, fields: Value) -> Result<String, StoreError> {
        let entity = entity.to_owned();
        self.call(move |s| s.insert(&entity, fields)).await
    }

    /// See [`Store::insert_with_id`].
    pub async fn insert_with_id(&self, entity: &str, id: &str, fields: Value) -> Result<(), StoreError> {
        let (entity, id) = (entity.to_owned(), id.to_owned());
        self.call(move |s| s.insert_with_id(&entity, &id, fields)).await
    }

    /// See [`Store::update`].
    pub async fn update(&self, entity: &str, id: &str, fields: Value) -> Result<(), StoreError> {
        let (entity, id) = (entity.to_owned(), id.to_owned());
        self.call(move |s| s.update(&entity, &id, fields)).await
    }

    /// See [`Store::remove`].
    pub async fn remove(&self, entity: &str, id: &str) -> Result<(), StoreError> {
        let (entity, id) = (entity.to_owned(), id.to_owned());
        self.call(move |s| s.remove(&entity, &id)).await
    }

    /// See [`Store::get`].
    pub async fn get(&self, entity: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let (entity, id) = (entity.to_owned(), id.to_owned());
        self.call(move |s| s.get(&entity, &id)).await
    }

    /// See [`Store::query`].
    pub async fn query(&self, query: Query) -> Result<Vec<Record>, StoreError> {
        self.call(move |s| s.query(&query)).await
    }

    /// See [`Store::pending_changes`].
    pub async fn pending_changes(&self, entity: &str) -> Result<usize, StoreError> {
        let entity = entity.to_owned();
        self.call(move |s| s.pending_changes(&entity)).await
    }
}

/// A [`Syncer`] for async code: the same engine, with each sync awaited.
#[derive(Debug, Clone)]
pub struct AsyncSyncer {
    syncer: Arc<Syncer>,
}

impl AsyncSyncer {
    /// The async API of `syncer`.
    pub fn new(syncer: impl Into<Arc<Syncer>>) -> Self {
        Self { syncer: syncer.into() }
    }

    /// The blocking syncer, shared with this one (a sync from either waits for one from the
    /// other).
    pub fn blocking(&self) -> &Arc<Syncer> {
        &self.syncer
    }

    /// The store this syncer syncs, for async code.
    pub fn store(&self) -> AsyncStore {
        AsyncStore::new(self.syncer.store().clone())
    }

    /// See [`Syncer::sync_all`]. The handler runs on the blocking pool.
    pub async fn sync_all<H>(&self, handler: H) -> Result<SyncReport, SyncError>
    where
        H: ConflictHandler + Send + 'static,
    {
        let syncer = Arc::clone(&self.syncer);
        off_the_runtime(move || syncer.sync_all(&handler)).await
    }

    /// See [`Syncer::sync_entity`]. The handler runs on the blocking pool.
    pub async fn sync_entity<H>(&self, entity: &str, handler: H) -> Result<EntityReport, SyncError>
    where
        H: ConflictHandler + Send + 'static,
    {
        let (syncer, entity) = (Arc::clone(&self.syncer), entity.to_owned());
        off_the_runtime(move || syncer.sync_entity(&entity, &handler)).await
    }

    /// See [`Syncer::status`].
    pub async fn status(&self) -> Result<SyncStatus, StoreError> {
        let syncer = Arc::clone(&self.syncer);
        off_the_runtime(move || syncer.status()).await
    }

    /// Live sync ([`Syncer::sync_live`]) as a stream of its outcomes: syncs now, then whenever
    /// the server or this device has changes, on the blocking pool; each sync's outcome is
    /// awaited with [`LiveReports::next`]. At most a few outcomes wait unread; after that the
    /// loop waits for the app to read. [`LiveReports::stop`] (or dropping it) ends the loop
    /// between syncs within [`LiveOptions::local_check`], or when the sync under way ends.
    pub fn live<H>(&self, handler: H, options: LiveOptions) -> LiveReports
    where
        H: ConflictHandler + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(LIVE_BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let (syncer, flag) = (Arc::clone(&self.syncer), Arc::clone(&stop));
        let running = tokio::task::spawn_blocking(move || {
            syncer.live(&handler, options, flag, |outcome| match sender.blocking_send(outcome) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            });
        });
        LiveReports { receiver, stop, running: Some(running) }
    }

    /// Like [`Syncer::watch_status`], on a tokio channel that async code awaits. Dropping the
    /// receiver ends it.
    pub fn watch_status(&self) -> mpsc::UnboundedReceiver<SyncStatus> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.syncer.board().add_watcher(move |status| sender.send(status.clone()).is_ok());
        receiver
    }
}

/// Outcomes of live sync not read yet before the loop waits for the app.
const LIVE_BACKLOG: usize = 4;

/// The outcomes of live sync, one per sync; see [`AsyncSyncer::live`].
#[derive(Debug)]
pub struct LiveReports {
    receiver: mpsc::Receiver<Result<SyncReport, SyncError>>,
    stop: Arc<AtomicBool>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl LiveReports {
    /// The outcome of the next sync; `None` once live sync ended.
    pub async fn next(&mut self) -> Option<Result<SyncReport, SyncError>> {
        self.receiver.recv().await
    }

    /// Ends live sync and waits for its loop to end (see [`AsyncSyncer::live`] for how soon).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Closed, a sync that ends meanwhile cannot wait for room to report.
        self.receiver.close();
        if let Some(running) = self.running.take()
            && let Err(e) = running.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

impl Drop for LiveReports {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
