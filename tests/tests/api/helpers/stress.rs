//! What the stress tests share: how long writers run ([`let_writers_run`]), and the "no missed
//! change" check, applied to every pull rather than to final states: from the acknowledged changes, [`History`] knows which version of each object every
//! cursor must deliver, and [`History::check`] holds each logged pull to it. A reader that skips a
//! change is caught by the first pull whose `now` reaches it, even when a later write of the same
//! id would have hidden the skip from a comparison of final states.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Past this, writers that have not acknowledged enough pushes fail the test.
const MAX_EXTRA_WRITING: Duration = Duration::from_secs(60);

/// How long the stress tests write at least: `SYNC_STRESS_SECS` (default 5 s).
pub fn duration() -> Duration {
    let secs = std::env::var("SYNC_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    Duration::from_secs(secs)
}

/// Returns once writers have written for [`duration`] and acknowledged at least `min` pushes in
/// all (`pushes` counts them): a slow machine makes the test longer, not weaker. Panics when the
/// pushes do not come within [`MAX_EXTRA_WRITING`] more.
pub async fn let_writers_run(pushes: &AtomicUsize, min: usize) {
    tokio::time::sleep(duration()).await;
    let late = Instant::now();
    while pushes.load(Ordering::Relaxed) < min {
        assert!(
            late.elapsed() < MAX_EXTRA_WRITING,
            "only {} of {min} pushes acknowledged {MAX_EXTRA_WRITING:?} after the stress time",
            pushes.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One acknowledged change: the partition it was pushed to, the push's `now`, the id, and the
/// value or `None` for a removal.
pub type Acked<P> = Vec<(P, i64, String, Option<String>)>;

/// Per partition and id: the last `_lastChange` and value (`None` for a tombstone).
pub type View<P> = BTreeMap<(P, String), (i64, Option<String>)>;

/// One pull as a reader received it.
#[derive(Debug)]
pub struct Pull<P> {
    /// The partition (user, entity, ...) pulled.
    pub partition: P,
    /// The cursor sent.
    pub since: i64,
    /// The answer's `now`.
    pub now: i64,
    /// The answer's `more`: a page that ends before the snapshot's high-water mark.
    pub more: bool,
    /// Whether the pull asked for a page (`limit`): PostgreSQL may read the page's last push in a
    /// second statement, whose snapshot is newer than the first.
    pub paged: bool,
    /// Whether the pull was sent before the writers were told to stop.
    pub during_writes: bool,
    /// Each update: id, `_lastChange`, value or `None` for a tombstone.
    pub updates: Vec<(String, i64, Option<String>)>,
}

/// What a reader holds after applying every pull of `log` in order.
pub fn received<P: Ord + Clone>(log: &[Pull<P>]) -> View<P> {
    let mut view = View::new();
    for pull in log {
        for (id, stamp, value) in &pull.updates {
            view.insert((pull.partition.clone(), id.clone()), (*stamp, value.clone()));
        }
    }
    view
}

/// The versions acknowledged changes leave, per partition in timestamp order, replayed with the
/// protocol's rules: removing an absent or already removed object changes nothing, so it leaves
/// no version.
pub struct History<P> {
    /// Per partition, every version in `_lastChange` order: (stamp, id, value).
    versions: BTreeMap<P, Vec<(i64, String, Option<String>)>>,
}

impl<P: Ord + Clone + Debug> History<P> {
    /// Replays `acked`.
    pub fn replay(mut acked: Acked<P>) -> Self {
        acked.sort_by_key(|(_, now, _, _)| *now);
        let mut live: BTreeMap<(P, String), bool> = BTreeMap::new();
        let mut versions: BTreeMap<P, Vec<(i64, String, Option<String>)>> = BTreeMap::new();
        for (partition, now, id, value) in acked {
            let was_live = live.get(&(partition.clone(), id.clone())).copied().unwrap_or(false);
            if value.is_some() || was_live {
                live.insert((partition.clone(), id.clone()), value.is_some());
                versions.entry(partition).or_default().push((now, id, value));
            }
        }
        History { versions }
    }

    /// The state every partition ends in.
    pub fn final_state(&self) -> View<P> {
        let mut state = View::new();
        for (partition, versions) in &self.versions {
            for (stamp, id, value) in versions {
                state.insert((partition.clone(), id.clone()), (*stamp, value.clone()));
            }
        }
        state
    }

    /// Checks one pull: it holds exactly the objects changed in `(since, now]`, each at its last
    /// version at or before `now`, and nothing else. A page answers from a snapshot that may be
    /// newer than its `now` (one that ends before the high-water mark, or one whose last push
    /// was read again on its own), where an object changed in `(since, now]` may already have a
    /// later version: that object is left to the pull its new version falls in. An unpaged pull
    /// is one snapshot on every store, and must hold every change its `now` reaches.
    pub fn check(&self, pull: &Pull<P>) -> Result<(), String> {
        let versions = self.versions.get(&pull.partition).map(Vec::as_slice).unwrap_or_default();
        let from = versions.partition_point(|(stamp, _, _)| *stamp <= pull.since);
        let to = versions.partition_point(|(stamp, _, _)| *stamp <= pull.now);
        let expected: BTreeMap<String, (i64, Option<String>)> =
            versions[from..to].iter().map(|(stamp, id, value)| (id.clone(), (*stamp, value.clone()))).collect();
        let superseded = |id: &str| (pull.more || pull.paged) && versions[to..].iter().any(|(_, later, _)| later == id);
        let got: BTreeMap<String, (i64, Option<String>)> =
            pull.updates.iter().map(|(id, stamp, value)| (id.clone(), (*stamp, value.clone()))).collect();
        if got.len() != pull.updates.len() {
            return Err(format!("{pull:?} holds an id twice"));
        }
        for (id, version) in &expected {
            match got.get(id) {
                None if superseded(id) => {}
                None => {
                    return Err(format!(
                        "the pull of {:?} from {} (now {}) missed {id} at {version:?}",
                        pull.partition, pull.since, pull.now
                    ));
                }
                Some(seen) if seen != version => {
                    return Err(format!(
                        "the pull of {:?} from {} (now {}) has {id} at {seen:?}, not at {version:?}",
                        pull.partition, pull.since, pull.now
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some((id, seen)) = got.iter().find(|(id, _)| !expected.contains_key(*id)) {
            return Err(format!(
                "the pull of {:?} from {} (now {}) has {id} at {seen:?}, which no acknowledged push left there",
                pull.partition, pull.since, pull.now
            ));
        }
        Ok(())
    }

    /// Checks every pull of each reader's log (see [`History::check`]), and that each reader
    /// received changes at least `min_live` times while the writers were still writing, so the
    /// check covered reads concurrent with writes and not only a final catch-up.
    pub fn check_logs(&self, logs: &[Vec<Pull<P>>], min_live: usize) {
        for (r, log) in logs.iter().enumerate() {
            for pull in log {
                if let Err(e) = self.check(pull) {
                    panic!("reader {r}: {e}");
                }
            }
            let live = log.iter().filter(|p| p.during_writes && !p.updates.is_empty()).count();
            assert!(
                live >= min_live,
                "reader {r} received changes in only {live} pulls while writers ran (of {} pulls): the test did not test concurrency",
                log.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History<u8> {
        History::replay(vec![
            (0, 10, "a".into(), Some("a1".into())),
            (0, 20, "a".into(), Some("a2".into())),
            (0, 20, "b".into(), None),
            (0, 30, "b".into(), Some("b1".into())),
            (0, 40, "b".into(), None),
            (0, 50, "b".into(), None),
        ])
    }

    fn pull(since: i64, now: i64, updates: &[(&str, i64, Option<&str>)]) -> Pull<u8> {
        Pull {
            partition: 0,
            since,
            now,
            more: false,
            paged: false,
            during_writes: true,
            updates: updates.iter().map(|(id, s, v)| (id.to_string(), *s, v.map(str::to_owned))).collect(),
        }
    }

    #[test]
    fn a_pull_must_hold_every_change_its_now_reaches() {
        let h = history();
        h.check(&pull(0, 10, &[("a", 10, Some("a1"))])).unwrap();
        h.check(&pull(0, 40, &[("a", 20, Some("a2")), ("b", 40, None)])).unwrap();
        // Removing what was never there, or twice, leaves nothing to deliver.
        h.check(&pull(40, 50, &[])).unwrap();
        // A change skipped by a cursor, later overwritten: final states agree, this pull does not.
        assert!(h.check(&pull(10, 20, &[])).is_err());
        assert!(h.check(&pull(0, 40, &[("a", 20, Some("a2"))])).is_err());
        assert!(h.check(&pull(0, 20, &[("a", 10, Some("a1"))])).is_err());
        assert!(h.check(&pull(0, 10, &[("a", 10, Some("a1")), ("b", 20, None)])).is_err());
        // A page may leave out what changed again after its end, and only that.
        let page = |since, now, updates| Pull { more: true, ..pull(since, now, updates) };
        h.check(&page(0, 10, &[])).unwrap();
        h.check(&page(0, 30, &[("a", 20, Some("a2"))])).unwrap();
        assert!(h.check(&page(0, 40, &[("a", 20, Some("a2"))])).is_err());
        assert!(h.check(&page(0, 20, &[])).is_err());
        // So may the last page of a paged read, and again only what changed after it.
        let last_page = |since, now, updates| Pull { paged: true, ..pull(since, now, updates) };
        h.check(&last_page(0, 10, &[])).unwrap();
        assert!(h.check(&last_page(0, 20, &[])).is_err());
    }
}
