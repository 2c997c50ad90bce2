//! Long-poll: pulls that wait for a change in their scope (`GET <path>?since=S&wait=N`), and how
//! commits wake them on this instance and on every other one sharing the store.
//!
//! - [`Feed`]: the scopes waited on, each with a [`Notify`]; a commit wakes its scope's waiters.
//! - [`LongPolls`]: the wait of one request (bounded in number and in time, cut short by shutdown).
//! - A push acknowledged here wakes this instance's waiters at once ([`LongPolls::committed`]) and
//!   is announced to the other instances by a background task ([`Store::announce`]: PostgreSQL
//!   `NOTIFY`, a few scopes per statement). Commits made elsewhere come in through
//!   [`Store::watch`]: PostgreSQL `LISTEN`, or, for SQLite files shared by several processes, a
//!   watch of the file; where no announcement can arrive (the listening connection is down), the
//!   stores compare the clocks of the waited scopes instead ([`wake_changed`]).
//!
//! A woken request reads its scope again: a wake-up is a hint, never an answer, so a spurious one
//! costs one read and a missed one at most the rest of the wait.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync_proto::{Cursor, PullQuery};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{PullPage, Scope, Store, StoreError};
use crate::tasks::Tasks;

/// How long the announcer waits before sending again announcements that failed.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);

/// The `[long_poll]` section: how long and how many pulls may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LongPollConfig {
    /// The longest wait honoured, in seconds; a longer `wait` is lowered to it. `0` turns
    /// long-poll off: `wait` is ignored and every pull is answered at once. Keep it below the
    /// idle timeout of any proxy in front of the server.
    pub max_wait_secs: u64,
    /// Most pulls waiting at once on this instance; one more is answered `503` with `Retry-After`.
    pub max_waiting: usize,
    /// How often commits that cannot be announced are looked for, in milliseconds: those of other
    /// processes sharing an SQLite file, and those of other PostgreSQL instances while this one's
    /// listening connection is down.
    pub poll_ms: u64,
}

impl Default for LongPollConfig {
    fn default() -> Self {
        Self { max_wait_secs: 55, max_waiting: 10_000, poll_ms: 50 }
    }
}

/// The scopes pulls are waiting on. Cloning shares it.
#[derive(Clone, Default)]
pub struct Feed(Arc<Mutex<HashMap<Scope, Waited>>>);

struct Waited {
    notify: Arc<Notify>,
    listeners: usize,
    /// The lowest `now` a waiter read and found nothing after; `None` until one has, and again
    /// after a wake-up (the woken read again).
    seen: Option<Cursor>,
}

impl Feed {
    /// Registers interest in `scope` until the listener is dropped.
    pub fn listen(&self, scope: &Scope) -> Listener {
        let mut scopes = self.scopes();
        let waited = scopes.entry(scope.clone()).or_insert_with(|| Waited {
            notify: Arc::new(Notify::new()),
            listeners: 0,
            seen: None,
        });
        waited.listeners += 1;
        Listener { feed: self.clone(), scope: scope.clone(), notify: Arc::clone(&waited.notify) }
    }

    /// Wakes every pull waiting on `scope`.
    pub fn wake(&self, scope: &Scope) {
        if let Some(waited) = self.scopes().get_mut(scope) {
            waited.seen = None;
            waited.notify.notify_waiters();
        }
    }

    /// Wakes every waiting pull.
    pub fn wake_all(&self) {
        for waited in self.scopes().values_mut() {
            waited.seen = None;
            waited.notify.notify_waiters();
        }
    }

    /// The waited scopes whose waiters have read, each with the lowest `now` they found nothing
    /// after (a clock past it means a commit they have not seen), and whether every waited scope
    /// is among them (`false` while a waiter is still reading: its read may predate a commit).
    pub fn waited(&self) -> (Vec<(Scope, Cursor)>, bool) {
        let scopes = self.scopes();
        let seen: Vec<_> = scopes.iter().filter_map(|(scope, w)| w.seen.map(|seen| (scope.clone(), seen))).collect();
        let complete = seen.len() == scopes.len();
        (seen, complete)
    }

    /// Whether no pull is waiting.
    pub fn is_idle(&self) -> bool {
        self.scopes().is_empty()
    }

    fn scopes(&self) -> MutexGuard<'_, HashMap<Scope, Waited>> {
        // The map stays consistent whatever a panicking holder did: every update is one statement.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Interest in one scope; dropping it withdraws the interest.
pub struct Listener {
    feed: Feed,
    scope: Scope,
    notify: Arc<Notify>,
}

impl Listener {
    /// What wakes this listener; enable the future before reading the scope, so that a commit
    /// between the read and the wait is not missed.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Records that a read of the scope found nothing after `now`.
    pub fn saw(&self, now: Cursor) {
        if let Some(waited) = self.feed.scopes().get_mut(&self.scope) {
            waited.seen = Some(waited.seen.map_or(now, |seen| seen.min(now)));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut scopes = self.feed.scopes();
        if let Some(waited) = scopes.get_mut(&self.scope) {
            waited.listeners -= 1;
            if waited.listeners == 0 {
                scopes.remove(&self.scope);
            }
        }
    }
}

/// Wakes the waiters of every waited scope whose clock moved past what they saw: how commits made
/// elsewhere are found when nobody announces them. Returns whether every waited scope was
/// compared (see [`Feed::waited`]); if not, compare again later.
pub async fn wake_changed(store: &dyn Store, feed: &Feed) -> Result<bool, StoreError> {
    let (waited, complete) = feed.waited();
    if waited.is_empty() {
        return Ok(complete);
    }
    let scopes: Vec<Scope> = waited.iter().map(|(scope, _)| scope.clone()).collect();
    let clocks = store.clocks(&scopes).await?;
    for ((scope, seen), clock) in waited.iter().zip(clocks) {
        if clock > *seen {
            feed.wake(scope);
        }
    }
    Ok(complete)
}

/// The long-polls of one instance.
pub struct LongPolls {
    config: LongPollConfig,
    feed: Feed,
    waiting: AtomicUsize,
    closing: watch::Sender<bool>,
    /// Scopes committed here and not announced yet (a set: announcing a scope once covers every
    /// commit made before the announcement).
    unannounced: Mutex<HashSet<Scope>>,
    announce: Notify,
    /// This instance's id in announcements, so that it skips its own.
    origin: u64,
    metrics: Metrics,
}

impl LongPolls {
    /// Long-polls under `config`.
    pub fn new(config: LongPollConfig, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            config,
            feed: Feed::default(),
            waiting: AtomicUsize::new(0),
            closing: watch::channel(false).0,
            unannounced: Mutex::new(HashSet::new()),
            announce: Notify::new(),
            origin: rand::random(),
            metrics,
        })
    }

    /// Whether long-poll is on; capabilities announce it then.
    pub fn max_wait_secs(&self) -> Option<u64> {
        (self.config.max_wait_secs > 0).then_some(self.config.max_wait_secs)
    }

    /// Pulls waiting on this instance now, and the most it holds at once.
    pub fn waiting(&self) -> (usize, usize) {
        (self.waiting.load(Ordering::Relaxed), self.config.max_waiting)
    }

    /// Starts the tasks that announce this instance's commits and bring in everyone else's.
    pub fn start(self: &Arc<Self>, tasks: &mut Tasks, store: Arc<dyn Store>) {
        let (polls, announcing) = (Arc::clone(self), Arc::clone(&store));
        tasks.spawn("long-poll-announcer", move |mut shutdown| async move {
            loop {
                tokio::select! {
                    _ = shutdown.requested() => return Ok(()),
                    () = polls.announce.notified() => {}
                }
                let scopes: Vec<Scope> = std::mem::take(&mut *lock(&polls.unannounced)).into_iter().collect();
                if let Err(e) = announcing.announce(polls.origin, &scopes).await {
                    tracing::warn!(error = %crate::error::chain(&e), "cannot announce commits to other instances; retrying");
                    lock(&polls.unannounced).extend(scopes);
                    tokio::select! {
                        _ = shutdown.requested() => return Ok(()),
                        () = tokio::time::sleep(ANNOUNCE_RETRY) => polls.announce.notify_one(),
                    }
                }
            }
        });
        let polls = Arc::clone(self);
        tasks.spawn("long-poll-watcher", move |mut shutdown| async move {
            let poll = Duration::from_millis(polls.config.poll_ms.max(1));
            tokio::select! {
                _ = shutdown.requested() => Ok(()),
                watched = store.watch(polls.origin, polls.feed.clone(), poll) => {
                    Err(format!("the watch of other instances' commits ended: {watched:?}"))
                }
            }
        });
    }

    /// A push was acknowledged in `scope`: wakes its waiters here, and has it announced.
    pub fn committed(&self, scope: &Scope) {
        self.feed.wake(scope);
        lock(&self.unannounced).insert(scope.clone());
        self.announce.notify_one();
    }

    /// Answers every waiting pull now, and every later one at once: the server is stopping.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Returns once the pull `query` (with a `wait`) should be answered: at once when `scope` has
    /// changes after `since`, else after a commit in it, at the end of the wait, or at shutdown.
    /// `Err` when too many pulls are waiting already, or the store fails.
    pub async fn wait(&self, store: &dyn Store, scope: &Scope, query: PullQuery) -> Result<(), ApiError> {
        let Some(wait) = query.wait.filter(|_| self.config.max_wait_secs > 0) else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(wait.min(self.config.max_wait_secs));
        let probe = PullQuery { since: query.since, limit: Some(1), ..PullQuery::default() };
        let mut closing = self.closing.subscribe();
        // Taken once the first read found nothing: a pull with something to answer needs none.
        let mut slot = None;
        loop {
            if *closing.borrow_and_update() || Instant::now() >= deadline {
                return Ok(());
            }
            let listener = self.feed.listen(scope);
            let woken = listener.notify().notified();
            let mut woken = std::pin::pin!(woken);
            woken.as_mut().enable();
            let page = store.pull(scope, probe).await?;
            if answers_now(&page) {
                return Ok(());
            }
            if slot.is_none() {
                slot = Some(self.park()?);
            }
            listener.saw(page.now);
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = closing.changed() => return Ok(()),
            }
        }
    }

    fn park(&self) -> Result<Parked<'_>, ApiError> {
        let max = self.config.max_waiting;
        let taken = self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(n) => {
                self.metrics.long_polls_waiting(n as i64 + 1);
                Ok(Parked(self))
            }
            Err(_) => {
                self.metrics.long_poll_refused();
                Err(ApiError::TooManyWaiting(max))
            }
        }
    }
}

/// Whether a pull has something to answer: changes, or a reset.
fn answers_now(page: &PullPage) -> bool {
    !page.objects.is_empty() || page.reset
}

/// One of the [`LongPollConfig::max_waiting`] places, given back when dropped.
struct Parked<'a>(&'a LongPolls);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let left = self.0.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.metrics.long_polls_waiting(left as i64);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The payload of an announcement: which instance committed in which scope. Entity names and
/// partitions are short; a scope too long for PostgreSQL's 8,000-byte payloads is announced as
/// "anything may have changed" (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The announcing instance.
    pub origin: u64,
    /// The scope's entity, and its partition.
    pub scope: Option<(String, String)>,
}

impl Announcement {
    /// The longest payload sent; PostgreSQL refuses 8,000 bytes and more.
    pub const MAX_BYTES: usize = 7_900;

    /// The payload announcing a commit in `scope` by `origin`.
    pub fn payload(origin: u64, scope: &Scope) -> String {
        let named =
            Self { origin, scope: Some((scope.entity_name().as_str().to_owned(), scope.partition().to_owned())) };
        let text = serde_json::to_string(&named).unwrap_or_default();
        if text.len() <= Self::MAX_BYTES {
            return text;
        }
        serde_json::to_string(&Self { origin, scope: None }).unwrap_or_default()
    }

    /// Wakes what `payload` announces, unless this instance (`origin`) sent it. A payload that is
    /// not an announcement wakes everyone: a wake-up is only a hint.
    pub fn wake(payload: &str, origin: u64, feed: &Feed) {
        match serde_json::from_str::<Self>(payload) {
            Ok(Self { origin: from, .. }) if from == origin => {}
            Ok(Self { scope: Some((entity, partition)), .. }) => match sync_proto::EntityName::new(entity) {
                Ok(entity) => feed.wake(&Scope::partitioned(entity, partition)),
                Err(_) => feed.wake_all(),
            },
            _ => feed.wake_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(entity: &str, partition: &str) -> Scope {
        Scope::partitioned(sync_proto::EntityName::new(entity).unwrap(), partition)
    }

    #[tokio::test]
    async fn a_wake_reaches_the_listeners_of_its_scope_only() {
        let feed = Feed::default();
        let (task, note) = (feed.listen(&scope("Task", "al")), feed.listen(&scope("Note", "al")));
        {
            let mut woken_task = std::pin::pin!(task.notify().notified());
            let mut woken_note = std::pin::pin!(note.notify().notified());
            woken_task.as_mut().enable();
            woken_note.as_mut().enable();
            feed.wake(&scope("Task", "al"));
            feed.wake(&scope("Task", "bo"));
            assert!(futures_util::FutureExt::now_or_never(woken_task).is_some());
            assert!(futures_util::FutureExt::now_or_never(woken_note.as_mut()).is_none());
            feed.wake_all();
            assert!(futures_util::FutureExt::now_or_never(woken_note).is_some());
        }
        drop((task, note));
        assert!(feed.is_idle(), "dropped listeners leave nothing behind");
    }

    #[test]
    fn the_waited_scopes_carry_the_lowest_now_seen_until_a_wake() {
        let feed = Feed::default();
        let (a, b) = (feed.listen(&scope("Task", "")), feed.listen(&scope("Task", "")));
        assert_eq!(feed.waited(), (vec![], false), "nobody has read yet");
        a.saw(Cursor::from_millis(9));
        b.saw(Cursor::from_millis(7));
        assert_eq!(feed.waited(), (vec![(scope("Task", ""), Cursor::from_millis(7))], true));
        feed.wake(&scope("Task", ""));
        assert_eq!(feed.waited(), (vec![], false), "the woken read again");
        drop(a);
        assert!(!feed.is_idle());
        drop(b);
        assert!(feed.is_idle());
    }

    #[test]
    fn announcements_name_their_scope_and_skip_their_own_origin() {
        let feed = Feed::default();
        let listener = feed.listen(&scope("Task", "user:al"));
        listener.saw(Cursor::from_millis(1));
        let payload = Announcement::payload(7, &scope("Task", "user:al"));
        Announcement::wake(&payload, 7, &feed);
        assert_eq!(feed.waited().0.len(), 1, "an instance's own announcement wakes nothing");
        Announcement::wake(&payload, 8, &feed);
        assert!(feed.waited().0.is_empty(), "another instance's wakes the scope");
        listener.saw(Cursor::from_millis(1));
        Announcement::wake("not json", 8, &feed);
        assert!(feed.waited().0.is_empty(), "an unreadable payload wakes everyone");
        let long = Announcement::payload(7, &scope("Task", &"p".repeat(9_000)));
        assert!(long.len() < Announcement::MAX_BYTES);
        assert_eq!(serde_json::from_str::<Announcement>(&long).unwrap().scope, None);
    }
}
