//! Live sync: [`Syncer::sync_live`] keeps a store in sync, syncing again whenever the server says
//! an entity changed (long-poll, where the server offers it; polling where it does not) and
//! whenever local changes wait to be pushed, backing off while syncs fail.
//!
//! One thread per entity waits on the server ([`Transport::wait_for_changes`]); after it saw a
//! change it waits for the next sync to finish before asking again, so one change causes one sync.
//! Where the server cannot wait, those threads end and the syncing thread polls. The calling
//! thread runs the syncs, one at a time, and hands each outcome to the app.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sync_proto::Cursor;

use crate::conflict::ConflictHandler;
use crate::engine::{SyncReport, Syncer};
use crate::error::SyncError;
use crate::store::Store;
use crate::tracking;
use crate::transport::{Transport, Waited};

/// A long-poll that ends with no change sooner than this was not a wait.
const EARLY: Duration = Duration::from_secs(1);

/// How [`Syncer::sync_live`] decides when to sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOptions {
    /// How long one long-poll asks the server to wait (the server may lower it).
    pub wait: Duration,
    /// How often local changes are looked for between syncs.
    pub local_check: Duration,
    /// How often to sync when the server cannot wait (no long-poll).
    pub poll: Duration,
    /// The first pause after a failure; it doubles with each failure in a row...
    pub min_backoff: Duration,
    /// ... up to this.
    pub max_backoff: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(50),
            local_check: Duration::from_millis(500),
            poll: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl LiveOptions {
    /// The pause after `failures` failures in a row: doubling from `min_backoff` up to
    /// `max_backoff`, less up to a fifth at random so that devices do not retry in step.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self.min_backoff.saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(self.max_backoff).mul_f64(1.0 - rand::random::<f64>() / 5.0)
    }
}

/// Counts finished syncs, so that waiters know when the change they saw was pulled.
#[derive(Default)]
struct Syncs {
    done: Mutex<u64>,
    changed: Condvar,
}

impl Syncs {
    fn count(&self) -> u64 {
        *self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finished(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Returns once a sync finished after the `seen`th, or `stop` was set.
    fn wait_past(&self, seen: u64, stop: &AtomicBool) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while *done <= seen && !stop.load(Ordering::Acquire) {
            done = self.changed.wait_timeout(done, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// What every waiting thread shares with the syncing one.
struct Shared {
    store: Store,
    transport: Arc<dyn Transport>,
    options: LiveOptions,
    syncs: Syncs,
    /// Set to end live sync: by the loop when `on_sync` breaks, or by whoever started it.
    stop: Arc<AtomicBool>,
}

impl Shared {
    /// Sleeps `pause`, or less when stopped meanwhile.
    fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        while !self.stop.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
    }

    /// Waits for the server's changes of one entity and says so on `changed`, until stopped.
    fn watch(&self, entity: &str, path: &str, changed: &mpsc::Sender<()>) {
        let mut failures = 0;
        while !self.stop.load(Ordering::Acquire) {
            let seen = self.syncs.count();
            let since = match self.store.transaction(|tx| tracking::cursor(tx.conn(), entity)) {
                Ok(since) => Cursor::from_millis(since),
                Err(e) => {
                    tracing::warn!(entity, error = %e, "cannot read the cursor; waiting without it");
                    Cursor::ZERO
                }
            };
            let asked = Instant::now();
            match self.transport.wait_for_changes(path, since, self.options.wait) {
                Ok(Waited::Unchanged) => {
                    failures = 0;
                    // A server that stops waiting (it is shutting down, or turned long-poll off)
                    // answers at once: do not ask it again at once.
                    if asked.elapsed() < EARLY {
                        self.pause(self.options.min_backoff);
                    }
                }
                // The syncing thread polls on its own.
                Ok(Waited::Unsupported) => return,
                Ok(Waited::Changed) => {
                    failures = 0;
                    if changed.send(()).is_err() {
                        return;
                    }
                    self.syncs.wait_past(seen, &self.stop);
                }
                Err(e) => {
                    failures += 1;
                    let pause = self.options.backoff(failures);
                    tracing::info!(entity, error = %e, pause_ms = pause.as_millis() as u64, "cannot wait for changes");
                    self.pause(pause);
                }
            }
        }
    }
}

impl Syncer {
    /// Syncs now, then again whenever the server has changes or local changes wait, until
    /// `on_sync` returns [`ControlFlow::Break`]. Every sync's outcome is handed to `on_sync`;
    /// after a failure the next sync waits [`LiveOptions::backoff`]. The threads waiting on the
    /// server end after their current wait (at most [`LiveOptions::wait`] plus the transport's
    /// timeout) once this returns.
    pub fn sync_live<H: ConflictHandler + ?Sized>(
        &self,
        handler: &H,
        options: LiveOptions,
        mut on_sync: impl FnMut(&Result<SyncReport, SyncError>) -> ControlFlow<()>,
    ) {
        self.live(handler, options, Arc::default(), |outcome| on_sync(&outcome));
    }

    /// [`Syncer::sync_live`], handing each outcome over to `on_sync` (to send it elsewhere), and
    /// ending also once `stop` is set: within [`LiveOptions::local_check`] between syncs, or
    /// when the sync under way ends.
    pub(crate) fn live<H: ConflictHandler + ?Sized>(
        &self,
        handler: &H,
        options: LiveOptions,
        stop: Arc<AtomicBool>,
        mut on_sync: impl FnMut(Result<SyncReport, SyncError>) -> ControlFlow<()>,
    ) {
        let shared = Arc::new(Shared {
            store: self.store().clone(),
            transport: Arc::clone(self.transport()),
            options,
            syncs: Syncs::default(),
            stop,
        });
        let stopped = || shared.stop.load(Ordering::Acquire);
        let end = || {
            shared.stop.store(true, Ordering::Release);
            shared.syncs.finished();
        };
        let (changed, changes) = mpsc::channel();
        for def in self.store().schema().entities() {
            let (shared, changed) = (Arc::clone(&shared), changed.clone());
            let (entity, path) = (def.name.clone(), def.path.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("sync-live-{entity}"))
                .spawn(move || shared.watch(entity.as_str(), &path, &changed));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a thread waiting for changes; polling only");
            }
        }
        drop(changed);
        let mut failures = 0;
        loop {
            // Changes seen before this sync starts are pulled by it.
            while changes.try_recv().is_ok() {}
            let outcome = self.sync_all(handler);
            shared.syncs.finished();
            let failed = outcome.is_err();
            if on_sync(outcome).is_break() || stopped() {
                end();
                return;
            }
            if failed {
                failures += 1;
                shared.pause(options.backoff(failures));
                if stopped() {
                    end();
                    return;
                }
                continue;
            }
            failures = 0;
            let poll_at = Instant::now() + options.poll;
            loop {
                if stopped() {
                    end();
                    return;
                }
                match changes.recv_timeout(options.local_check) {
                    Ok(()) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) if self.local_changes_wait() => break,
                    Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= poll_at => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // No thread waits on the server (none could start, or it cannot wait): poll.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        shared.pause(options.local_check);
                        if self.local_changes_wait() || Instant::now() >= poll_at {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Whether any entity has local changes not pushed yet.
    fn local_changes_wait(&self) -> bool {
        self.store()
            .schema()
            .entities()
            .iter()
            .any(|def| self.store().pending_changes(def.name.as_str()).is_ok_and(|n| n > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_a_little_jitter() {
        let options = LiveOptions {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..LiveOptions::default()
        };
        let within = |d: Duration, secs: f64| d.as_secs_f64() <= secs && d.as_secs_f64() >= secs * 0.8;
        assert!(within(options.backoff(1), 1.0));
        assert!(within(options.backoff(2), 2.0));
        assert!(within(options.backoff(4), 8.0));
        assert!(within(options.backoff(5), 10.0));
        assert!(within(options.backoff(100), 10.0));
    }
}
