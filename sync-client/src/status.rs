//! Sync status and progress, for a UI to show: whether a sync is pulling or pushing, offline or
//! idle; when the last sync succeeded; how many local changes wait; the last error; and, during a
//! sync, how far it got.
//!
//! [`Syncer::status`] reads it at any time; [`Syncer::watch_status`] and [`Syncer::on_status`]
//! are told each change of it during a sync: when an entity's pull or push starts, after each
//! pulled page and each acknowledged push, and when the sync ends. The outcome of the last sync
//! (its time, or its error) is kept in the database, so a process that starts later reads it
//! too ([`Store::sync_status`]).
//!
//! **Totals.** The protocol's pull answer carries no count (only `updates`, `now` and `more`,
//! see `docs/PROTOCOL.md`), and the capabilities announce none: while pages remain, nobody knows
//! how many objects are left, so [`Progress::total`] is `None` until the last page of the pull is
//! in, and then the number of objects pulled.

use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::Syncer;
use crate::error::{StoreError, SyncError};
use crate::store::Store;
use crate::tracking;

/// What a syncer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// No sync is running, and the last one did not fail for want of the server (it succeeded,
    /// none ran yet, or it failed otherwise: see [`SyncStatus::last_error`]).
    Idle,
    /// A sync is pulling the server's changes.
    Pulling,
    /// A sync is pushing local changes.
    Pushing,
    /// No sync is running, and the last one failed because the server could not be reached.
    Offline,
}

/// How far the entity being synced got in this sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The entity being synced.
    pub entity: String,
    /// Objects pulled so far (as counted in [`crate::EntityReport::pulled`]).
    pub pulled: usize,
    /// Pages pulled so far; it only grows during a sync.
    pub pages: usize,
    /// Objects pushed and acknowledged so far.
    pub pushed: usize,
    /// How many objects the pull brings in all, when known: the protocol tells no count ahead
    /// (see the [module docs](crate::status)), so this is `None` while pages remain and the
    /// number pulled once the last page is in.
    pub total: Option<usize>,
}

/// Why the last sync failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// The error and its causes, as one line.
    pub message: String,
    /// Whether syncing again later may succeed as things are (see [`SyncError::is_retryable`]).
    pub retryable: bool,
    /// Whether the server could not be reached (see [`SyncError::is_unreachable`]).
    pub unreachable: bool,
    /// When the sync failed.
    pub at: SystemTime,
}

/// The state of syncing, as a UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// What is happening.
    pub activity: Activity,
    /// How far the running sync got, while one runs.
    pub progress: Option<Progress>,
    /// When a sync of this database last succeeded.
    pub last_synced: Option<SystemTime>,
    /// Objects with local changes not pushed yet, over all entities.
    pub pending_changes: usize,
    /// Why the last sync failed; `None` once a sync succeeded after it.
    pub last_error: Option<LastError>,
}

type Watcher = Box<dyn Fn(&SyncStatus) -> bool + Send + Sync>;

/// The part of the status only the running syncer knows, and who wants to hear of it.
#[derive(Default)]
pub(crate) struct Board {
    running: Mutex<Option<(Activity, Progress)>>,
    watchers: Mutex<Vec<Watcher>>,
}

impl Board {
    fn running(&self) -> MutexGuard<'_, Option<(Activity, Progress)>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn watchers(&self) -> MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a watcher, told each status until it returns `false`.
    pub(crate) fn add_watcher(&self, watcher: impl Fn(&SyncStatus) -> bool + Send + Sync + 'static) {
        self.watchers().push(Box::new(watcher));
    }

    /// Starts the sync of `entity`.
    pub(crate) fn begin(&self, entity: &str) {
        let progress = Progress { entity: entity.to_owned(), pulled: 0, pages: 0, pushed: 0, total: None };
        *self.running() = Some((Activity::Pulling, progress));
    }

    /// Sets the activity and progress of the running sync.
    pub(crate) fn update(&self, activity: Activity, change: impl FnOnce(&mut Progress)) {
        if let Some((current, progress)) = self.running().as_mut() {
            *current = activity;
            change(progress);
        }
    }

    /// Ends the running sync.
    pub(crate) fn end(&self) {
        *self.running() = None;
    }

    /// Tells the watchers the status now. Reads the store for the part kept there, without
    /// holding a lock of this board meanwhile.
    pub(crate) fn publish(&self, store: &Store) {
        if self.watchers().is_empty() {
            return;
        }
        let status = match self.status(store) {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sync status to publish it");
                return;
            }
        };
        // Called without the watchers' lock held, so that a watcher may add watchers (its
        // thread would otherwise wait on itself) and a slow one holds up no other sync.
        let mut called = std::mem::take(&mut *self.watchers());
        called.retain(|watcher| watcher(&status));
        let mut watchers = self.watchers();
        let added = std::mem::replace(&mut *watchers, called);
        watchers.extend(added);
    }

    fn status(&self, store: &Store) -> Result<SyncStatus, StoreError> {
        let mut status = store.sync_status()?;
        if let Some((activity, progress)) = self.running().clone() {
            status.activity = activity;
            status.progress = Some(progress);
        }
        Ok(status)
    }
}

impl Syncer {
    /// The status now: the running sync's activity and progress, else idle or offline; with the
    /// outcome of the last sync and the pending local changes read from the store.
    pub fn status(&self) -> Result<SyncStatus, StoreError> {
        self.board().status(self.store())
    }

    /// A channel told each change of the status from now on (see the [module
    /// docs](crate::status)). Dropping the receiver ends it.
    pub fn watch_status(&self) -> mpsc::Receiver<SyncStatus> {
        let (sender, receiver) = mpsc::channel();
        self.board().add_watcher(move |status| sender.send(status.clone()).is_ok());
        receiver
    }

    /// Calls `callback` with each change of the status from now on, for as long as this syncer
    /// lives. It runs on the syncing thread while the sync holds the database's sync lock (but
    /// not the store's lock): it may read and write the store, and must not start a sync of this
    /// database, which would wait for the one calling it.
    pub fn on_status(&self, callback: impl Fn(&SyncStatus) + Send + Sync + 'static) {
        self.board().add_watcher(move |status| {
            callback(status);
            true
        });
    }
}

impl Store {
    /// The status as this database keeps it, when no sync of this process is asked: idle, or
    /// offline when the last sync could not reach the server; the last sync's outcome and the
    /// pending local changes. [`Syncer::status`] adds what a running sync is doing.
    pub fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        self.transaction(|tx| {
            let mut pending_changes = 0;
            for def in self.schema().entities() {
                pending_changes += tracking::dirty_count(tx.conn(), def.name.as_str())?;
            }
            let outcome = tracking::outcome(tx.conn())?;
            let last_error = outcome.error.map(|e| LastError {
                message: e.message,
                retryable: e.retryable,
                unreachable: e.unreachable,
                at: from_millis(e.at),
            });
            let offline = last_error.as_ref().is_some_and(|e| e.unreachable);
            Ok(SyncStatus {
                activity: if offline { Activity::Offline } else { Activity::Idle },
                progress: None,
                last_synced: outcome.synced_at.map(from_millis),
                pending_changes,
                last_error,
            })
        })
    }

    /// Keeps the outcome of a sync that just ended: its time when it succeeded, its error when
    /// it failed.
    pub(crate) fn record_sync_outcome(&self, outcome: Result<(), &SyncError>) -> Result<(), StoreError> {
        let now = to_millis(SystemTime::now());
        let error = outcome.err().map(|e| tracking::OutcomeError {
            message: one_line(e),
            retryable: e.is_retryable(),
            unreachable: e.is_unreachable(),
            at: now,
        });
        self.transaction(|tx| tracking::record_outcome(tx.conn(), now, error.as_ref()))
    }
}

/// An error and its causes, joined with `: `.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sync_proto::{Cursor, FieldType, IdempotencyKey};

    use super::*;
    use crate::conflict::PreferRemote;
    use crate::error::TransportError;
    use crate::schema::Entity;
    use crate::transport::{PullPage, PushAck, RemoteObject, Transport};

    /// A server of `pages` pages of `per_page` objects each, or an unreachable one.
    struct Pages {
        pages: i64,
        per_page: usize,
        reachable: bool,
    }

    impl Transport for Pages {
        fn pull(&self, _: &str, since: Cursor, _: Option<usize>) -> Result<PullPage, TransportError> {
            if !self.reachable {
                return Err(TransportError::Connect { url: "http://x/todoChanges".into(), reason: "refused".into() });
            }
            let page = since.millis() + 1;
            let updates = (0..self.per_page)
                .map(|i| RemoteObject {
                    id: format!("{page}-{i}"),
                    last_change: Some(page),
                    removed: false,
                    fields: json!({"text": "x"}).as_object().unwrap().clone(),
                })
                .collect();
            Ok(PullPage {
                updates,
                now: Cursor::from_millis(page),
                more: page < self.pages,
                unreadable: Vec::new(),
                reset: false,
            })
        }

        fn push(&self, _: &str, _: &str, _: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
            Ok(PushAck { now: Cursor::from_millis(1_000), replayed: false })
        }
    }

    fn store() -> Store {
        Store::open_in_memory([Entity::new("Todo").field("text", FieldType::Text)]).unwrap()
    }

    #[test]
    fn each_page_is_told_and_the_total_is_known_with_the_last() {
        let syncer = Syncer::new(store(), Pages { pages: 3, per_page: 2, reachable: true });
        let statuses = syncer.watch_status();
        syncer.sync_all(&PreferRemote).unwrap();
        let seen: Vec<SyncStatus> = statuses.try_iter().collect();
        let pulling: Vec<(usize, usize, Option<usize>)> = seen
            .iter()
            .filter(|s| s.activity == Activity::Pulling)
            .filter_map(|s| s.progress.as_ref().map(|p| (p.pages, p.pulled, p.total)))
            .collect();
        assert_eq!(pulling, [(0, 0, None), (1, 2, None), (2, 4, None), (3, 6, Some(6))]);
        let last = seen.last().unwrap();
        assert_eq!((last.activity, last.progress.is_none(), last.last_error.is_none()), (Activity::Idle, true, true));
        assert!(last.last_synced.is_some());
    }

    #[test]
    fn an_unreachable_server_is_offline_with_the_error_kept_until_a_sync_succeeds() {
        let store = store();
        store.insert("Todo", json!({"text": "offline"})).unwrap();
        let offline = Syncer::new(store.clone(), Pages { pages: 1, per_page: 0, reachable: false });
        assert!(offline.sync_all(&PreferRemote).unwrap_err().is_unreachable());
        let status = offline.status().unwrap();
        assert_eq!((status.activity, status.pending_changes, status.last_synced), (Activity::Offline, 1, None));
        let error = status.last_error.unwrap();
        assert!(error.retryable && error.unreachable && error.message.contains("refused"), "{error:?}");
        assert_eq!(store.sync_status().unwrap().activity, Activity::Offline, "kept in the database");

        let online = Syncer::new(store.clone(), Pages { pages: 1, per_page: 0, reachable: true });
        online.sync_all(&PreferRemote).unwrap();
        let status = store.sync_status().unwrap();
        assert_eq!((status.activity, status.pending_changes), (Activity::Idle, 0));
        assert!(status.last_error.is_none() && status.last_synced.is_some());
    }
}
