//! Pages of a pull, written once for every store: [`page`] over [`ReadTx`].
//!
//! A paged pull reads at most `limit + 1` rows after `since` with the high-water mark of the same
//! snapshot, and [`Page::cut`] cuts them without splitting one `_lastChange` across pages (a
//! client that continued from the middle of one push's objects would skip the rest). When one
//! push alone holds more objects than a page, the page is every object of that push.

use sync_proto::{Cursor, PullQuery};

use super::{PullPage, Scope, StoredObject};

/// What one snapshot of a scope holds after a cursor.
pub(crate) struct Rows {
    /// The scope's high-water mark.
    pub(crate) high_water: Cursor,
    /// Whether the cursor was older than the scope's purge horizon (see [`resets`]): then the
    /// rows are those after 0.
    pub(crate) reset: bool,
    /// The rows, in `(_lastChange, id)` order.
    pub(crate) rows: Vec<StoredObject>,
}

/// Whether a pull from `since` must be answered in full, as a reset: tombstones it has not seen
/// may have been purged (`horizon` is the newest `_lastChange` of a purged one). A pull from 0 is
/// full anyway, but is marked too: a client may hold objects it pushed without pulling since.
pub(crate) fn resets(since: Cursor, horizon: Cursor) -> bool {
    since < horizon
}

/// The reads of a pull in one store's snapshot.
pub(crate) trait ReadTx {
    /// The store's error.
    type Error;

    /// The scope's high-water mark and up to `fetch` rows (all when `None`) with
    /// `_lastChange > since` (or, when [`resets`], after 0), from one snapshot.
    async fn rows_after(&mut self, scope: &Scope, since: Cursor, fetch: Option<usize>) -> Result<Rows, Self::Error>;

    /// Every row with `_lastChange = at`, in id order.
    async fn rows_at(&mut self, scope: &Scope, at: Cursor) -> Result<Vec<StoredObject>, Self::Error>;
}

/// The page answering `query`.
pub(crate) async fn page<R: ReadTx>(reads: &mut R, scope: &Scope, query: PullQuery) -> Result<PullPage, R::Error> {
    let fetch = query.limit.map(|n| n.saturating_add(1));
    let Rows { high_water, reset, rows } = reads.rows_after(scope, query.since, fetch).await?;
    if reset {
        // A reset is answered whole (the HTTP layer streams it): its pages would start over and
        // over from before the horizon.
        return Ok(PullPage { objects: Vec::new(), now: high_water, more: false, reset: true });
    }
    match Page::cut(rows, query, high_water) {
        Page::Ready(page) => Ok(page),
        // Another read, possibly of a later snapshot, and that is enough: the objects of one push
        // became visible together, and one moved on by a later push shows up in a later page.
        Page::WholeGroup(at) => Ok(Page::whole_group(reads.rows_at(scope, at).await?, at, high_water)),
    }
}

/// The page a pull answers, from the rows read after `query.since` (up to `limit + 1` of them
/// when paged) and the high-water mark of the same snapshot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Page {
    /// The answer.
    Ready(PullPage),
    /// One push alone holds more objects than a page: the answer is every object of this
    /// `_lastChange`, with `now` at it ([`Page::whole_group`]).
    WholeGroup(Cursor),
}

impl Page {
    /// Cuts the rows into a page without splitting one `_lastChange` across pages.
    pub(crate) fn cut(mut rows: Vec<StoredObject>, query: PullQuery, high_water: Cursor) -> Self {
        let complete = |objects| Page::Ready(PullPage { objects, now: high_water, more: false, reset: false });
        let Some(limit) = query.limit else { return complete(rows) };
        if rows.len() <= limit {
            return complete(rows);
        }
        let boundary = rows[limit].last_change;
        rows.truncate(limit);
        while rows.last().is_some_and(|r| r.last_change == boundary) {
            rows.pop();
        }
        match rows.last() {
            Some(last) => Page::Ready(PullPage { now: last.last_change, objects: rows, more: true, reset: false }),
            None => Page::WholeGroup(boundary),
        }
    }

    /// The page of every object of the push at `at`.
    pub(crate) fn whole_group(objects: Vec<StoredObject>, at: Cursor, high_water: Cursor) -> PullPage {
        PullPage { objects, now: at, more: high_water > at, reset: false }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(stamps: &[i64]) -> Vec<StoredObject> {
        stamps
            .iter()
            .enumerate()
            .map(|(i, &t)| StoredObject { id: i.to_string(), last_change: Cursor::from_millis(t), fields: None })
            .collect()
    }

    #[test]
    fn only_a_cursor_before_the_horizon_resets() {
        let at = Cursor::from_millis;
        assert!(resets(at(5), at(9)));
        assert!(!resets(at(9), at(9)), "every tombstone after 9 is still there");
        assert!(!resets(at(10), at(9)));
        assert!(resets(Cursor::ZERO, at(9)), "a pull from 0 is whole anyway, and marked");
        assert!(!resets(at(5), Cursor::ZERO), "nothing purged");
    }

    #[test]
    fn pages_never_split_one_timestamp() {
        let hw = Cursor::from_millis(9);
        let q = |limit| PullQuery { since: Cursor::ZERO, limit, ..PullQuery::default() };
        let ready = |stamps: &[i64], now: i64, more| {
            Page::Ready(PullPage { objects: rows(stamps), now: Cursor::from_millis(now), more, reset: false })
        };
        assert_eq!(Page::cut(rows(&[1, 2, 3]), q(None), hw), ready(&[1, 2, 3], 9, false));
        assert_eq!(Page::cut(rows(&[1, 2]), q(Some(2)), hw), ready(&[1, 2], 9, false));
        assert_eq!(Page::cut(rows(&[1, 2, 3]), q(Some(2)), hw), ready(&[1, 2], 2, true));
        assert_eq!(Page::cut(rows(&[1, 2, 2]), q(Some(2)), hw), ready(&[1], 1, true));
        assert_eq!(Page::cut(rows(&[2, 2, 2]), q(Some(2)), hw), Page::WholeGroup(Cursor::from_millis(2)));
        let group = Page::whole_group(rows(&[2, 2, 2]), Cursor::from_millis(2), hw);
        assert!(group.more && group.now == Cursor::from_millis(2));
    }
}
