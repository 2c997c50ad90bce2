//! Properties of paged pulls, [`page`] over a store in memory, as docs/PROTOCOL.md states them: a
//! client that follows `now` while `more` is true gets every change once and in order; a page
//! never splits the objects of one `_lastChange`; a page holds at most `limit` updates, except a
//! page that is one push alone, and ends only before the first push that does not fit.
//!
//! Failures are not persisted to files: a real one is kept as a named unit test instead, which
//! stays meaningful when a strategy changes (a stored seed silently stops reproducing then).

use proptest::prelude::*;
use proptest::test_runner::Config;
use sync_proto::EntityName;

use super::*;
use crate::store::{StoreError, run_ready};

fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}

/// What a scope holds: rows in `(_lastChange, id)` order, and its high-water mark (at or after
/// the last row: an empty push moves the clock only).
#[derive(Debug, Clone)]
struct Held {
    rows: Vec<StoredObject>,
    high_water: Cursor,
}

impl ReadTx for Held {
    type Error = StoreError;

    async fn rows_after(&mut self, _: &Scope, since: Cursor, fetch: Option<usize>) -> Result<Rows, StoreError> {
        let after = self.rows.iter().filter(|r| r.last_change > since).take(fetch.unwrap_or(usize::MAX));
        Ok(Rows { high_water: self.high_water, reset: false, rows: after.cloned().collect() })
    }

    async fn rows_at(&mut self, _: &Scope, at: Cursor) -> Result<Vec<StoredObject>, StoreError> {
        Ok(self.rows.iter().filter(|r| r.last_change == at).cloned().collect())
    }
}

/// Pushes of 1 to 5 objects each, at increasing timestamps.
fn held() -> impl Strategy<Value = Held> {
    (prop::collection::vec((1..4i64, 1..6usize), 0..10), 0..3i64).prop_map(|(pushes, idle)| {
        let mut at = 0;
        let mut rows = Vec::new();
        for (gap, size) in pushes {
            at += gap;
            // Ids in id order within a push, as the stores read them.
            rows.extend((0..size).map(|i| StoredObject {
                id: format!("{at:04}-{i}"),
                last_change: Cursor::from_millis(at),
                fields: (i % 2 == 0).then(sync_proto::FieldsJson::empty),
            }));
        }
        Held { rows, high_water: Cursor::from_millis(at + idle) }
    })
}

fn scope() -> Scope {
    Scope::entity(EntityName::new("Task").unwrap())
}

/// The pages a client gets from `since` on, following `now` while `more` is true.
fn walk(held: &Held, since: Cursor, limit: usize) -> Vec<PullPage> {
    let mut reads = held.clone();
    let mut pages = Vec::new();
    let mut since = since;
    // Each page holds at least one row, so more pages than rows means the cursor is stuck.
    for _ in 0..=held.rows.len() {
        let query = PullQuery { since, limit: Some(limit), ..PullQuery::default() };
        let page = run_ready(page(&mut reads, &scope(), query)).unwrap();
        let more = page.more;
        since = page.now;
        pages.push(page);
        if !more {
            return pages;
        }
    }
    panic!("no last page after {} pages: {pages:?}", pages.len());
}

fn stamps(rows: &[StoredObject]) -> Vec<i64> {
    rows.iter().map(|r| r.last_change.millis()).collect()
}

proptest! {
    #![proptest_config(config())]

    /// Following the cursor from any `since` delivers every row after it exactly once, in order;
    /// the cursor advances with every page; the last page says `more: false` and gives the
    /// high-water mark, and every page before it gives the `_lastChange` of its last update.
    #[test]
    fn following_the_pages_delivers_every_change_once_and_in_order(
        held in held(),
        since in 0..12i64,
        limit in 1..7usize,
    ) {
        let since = Cursor::from_millis(since);
        let pages = walk(&held, since, limit);
        let delivered: Vec<StoredObject> = pages.iter().flat_map(|p| p.objects.clone()).collect();
        let expected: Vec<StoredObject> = held.rows.iter().filter(|r| r.last_change > since).cloned().collect();
        prop_assert_eq!(stamps(&delivered), stamps(&expected));
        prop_assert_eq!(delivered, expected);
        let mut cursor = since;
        for page in &pages {
            if page.more {
                prop_assert!(page.now > cursor, "the cursor went from {:?} to {:?}", cursor, page.now);
                prop_assert_eq!(Some(page.now), page.objects.last().map(|r| r.last_change));
            } else {
                prop_assert_eq!(page.now, held.high_water);
            }
            prop_assert!(!page.reset);
            cursor = page.now;
        }
    }

    /// A page never ends inside a push: every object held with a `_lastChange` of the page is in
    /// the page. (A split shows as an object the next page skips, so this is checked against what
    /// is held, not against the next page.)
    #[test]
    fn a_page_never_splits_the_objects_of_one_timestamp(held in held(), since in 0..12i64, limit in 1..7usize) {
        for page in walk(&held, Cursor::from_millis(since), limit) {
            for at in page.objects.iter().map(|r| r.last_change) {
                let in_page = page.objects.iter().filter(|r| r.last_change == at).count();
                let held_at = held.rows.iter().filter(|r| r.last_change == at).count();
                prop_assert_eq!(in_page, held_at, "the push at {:?} split", at);
            }
        }
    }

    /// At most `limit` updates, except a page that is one whole push larger than `limit`; and a
    /// page that says `more` takes every push that fits, ending only before the first that does
    /// not.
    #[test]
    fn a_page_is_as_full_as_the_limit_allows_and_no_fuller(held in held(), since in 0..12i64, limit in 1..7usize) {
        let pages = walk(&held, Cursor::from_millis(since), limit);
        for page in &pages {
            let first = page.objects.first().map(|r| r.last_change);
            let one_push = page.objects.iter().all(|r| Some(r.last_change) == first);
            prop_assert!(page.objects.len() <= limit || one_push, "{} updates of several pushes", page.objects.len());
            if page.more && page.objects.len() <= limit {
                let next_at = held.rows.iter().map(|r| r.last_change).find(|at| *at > page.now);
                let next_push = held.rows.iter().filter(|r| Some(r.last_change) == next_at).count();
                prop_assert!(
                    page.objects.len() + next_push > limit,
                    "{} updates and the next push of {} would fit in {}", page.objects.len(), next_push, limit
                );
            }
        }
    }
}
