//! Reads of the SQLite store. Each pull runs in a deferred transaction of a reader connection: its
//! snapshot starts at the first read, the clock, and every following read sees that same snapshot
//! (WAL mode lets readers run beside the writer).

use rusqlite::{Connection, OptionalExtension, params};
use sync_proto::{Cursor, FieldsJson, PullQuery};
use tokio::sync::oneshot;

use super::connection::{Snapshot, classify, unreadable};
use crate::store::answer::ChunkedAnswer;
use crate::store::read::{ReadTx, Rows, resets};
use crate::store::{Scope, StoreError, StoredObject};

/// The last timestamp given in `scope` (0 before its first push).
pub(super) fn clock_of(conn: &Connection, scope: &Scope) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT last FROM clocks WHERE entity = ?1 AND partition = ?2")
        .and_then(|mut stmt| stmt.query_row([scope.key(), scope.partition()], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(classify)
}

/// The scope's clock and purge horizon (0 and 0 before its first push).
fn clock_and_horizon(conn: &Connection, scope: &Scope) -> Result<(Cursor, Cursor), StoreError> {
    conn.prepare_cached("SELECT last, purged_through FROM clocks WHERE entity = ?1 AND partition = ?2")
        .and_then(|mut stmt| {
            stmt.query_row([scope.key(), scope.partition()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .optional()
        })
        .map(|row| {
            let (last, purged) = row.unwrap_or_default();
            (Cursor::from_millis(last), Cursor::from_millis(purged))
        })
        .map_err(classify)
}

/// Every object of one push (one `_lastChange`), in id order. Without statistics SQLite would
/// rather walk the whole scope in id order than sort one push's objects: the index on
/// `_lastChange` keeps this read to the push itself.
const ROWS_AT: &str = "SELECT id, last_change, removed, fields FROM objects INDEXED BY objects_by_change
     WHERE entity = ?1 AND partition = ?2 AND last_change = ?3 ORDER BY id";

/// The reads of [`crate::store::read::page`] in one transaction's snapshot.
pub(super) struct SqliteRead<'c>(pub(super) &'c Connection);

impl ReadTx for SqliteRead<'_> {
    type Error = StoreError;

    async fn rows_after(&mut self, scope: &Scope, since: Cursor, fetch: Option<usize>) -> Result<Rows, StoreError> {
        let (high_water, horizon) = clock_and_horizon(self.0, scope)?;
        let reset = resets(since, horizon);
        let since = if reset { Cursor::ZERO } else { since };
        let fetch = fetch.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = select_rows(
            self.0,
            "SELECT id, last_change, removed, fields FROM objects
             WHERE entity = ?1 AND partition = ?2 AND last_change > ?3 ORDER BY last_change, id LIMIT ?4",
            params![scope.key(), scope.partition(), since.millis(), fetch],
        )?;
        Ok(Rows { high_water, reset, rows })
    }

    async fn rows_at(&mut self, scope: &Scope, at: Cursor) -> Result<Vec<StoredObject>, StoreError> {
        select_rows(self.0, ROWS_AT, params![scope.key(), scope.partition(), at.millis()])
    }
}

fn select_rows(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredObject>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(classify)?;
    let rows = stmt
        .query_map(args, |r| {
            let removed: bool = r.get(2)?;
            Ok(StoredObject {
                id: r.get(0)?,
                last_change: Cursor::from_millis(r.get(1)?),
                fields: if removed { None } else { Some(FieldsJson::from_stored(r.get(3)?)) },
            })
        })
        .map_err(classify)?;
    rows.collect::<Result<_, _>>().map_err(classify)
}

/// Writes the whole answer since `since` into `answer`, chunk by chunk, from one snapshot of
/// `conn`; signals `ready` once the snapshot is taken (the HTTP status can still be chosen until
/// then).
pub(super) fn stream(
    conn: &Connection,
    scope: &Scope,
    query: PullQuery,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
    answer: &mut ChunkedAnswer,
) -> Result<(), StoreError> {
    let tx = Snapshot::begin(conn)?;
    let (now, since) = opening(&tx, scope, query, answer)?;
    if let Some(ready) = ready.take()
        && ready.send(Ok(())).is_err()
    {
        return Ok(()); // the request is gone
    }
    let read_all =
        each_change(&tx, scope, since, |id, last_change, fields| match answer.row(id, last_change, fields) {
            Some(chunk) => answer.blocking_send(Ok(chunk)),
            None => true,
        })?;
    if read_all {
        let last = answer.finish(now);
        answer.blocking_send(Ok(last));
    } // else the client went away, or stopped reading
    Ok(())
}

/// Writes the whole answer into `answer` as its only chunk, from one snapshot of `conn`, when
/// it fits in one; false, with nothing sent, as soon as it does not. It never waits on the
/// answer's reader, so it may run on the request's own thread.
pub(super) fn one_chunk(
    conn: &Connection,
    scope: &Scope,
    query: PullQuery,
    answer: &mut ChunkedAnswer,
) -> Result<bool, StoreError> {
    let tx = Snapshot::begin(conn)?;
    let (now, since) = opening(&tx, scope, query, answer)?;
    let fits = each_change(&tx, scope, since, |id, last_change, fields| answer.row(id, last_change, fields).is_none())?;
    if fits {
        answer.finish_alone(now);
    }
    Ok(fits)
}

/// The scope's clock, and the cursor the answer starts from: `query.since`, or 0 when it is older
/// than the purge horizon (the answer is then marked as a reset, if the client asked for that).
fn opening(
    tx: &Connection,
    scope: &Scope,
    query: PullQuery,
    answer: &mut ChunkedAnswer,
) -> Result<(Cursor, Cursor), StoreError> {
    let (now, horizon) = clock_and_horizon(tx, scope)?;
    if !resets(query.since, horizon) {
        return Ok((now, query.since));
    }
    if query.resets {
        answer.mark_reset();
    }
    Ok((now, Cursor::ZERO))
}

/// Calls `row` with every object changed after `since`, in `_lastChange` order, until it returns
/// false. True when every one was read.
fn each_change(
    tx: &Connection,
    scope: &Scope,
    since: Cursor,
    mut row: impl FnMut(&str, Cursor, Option<&str>) -> bool,
) -> Result<bool, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, last_change, removed, fields FROM objects
             WHERE entity = ?1 AND partition = ?2 AND last_change > ?3 ORDER BY last_change",
        )
        .map_err(classify)?;
    let mut rows = stmt.query(params![scope.key(), scope.partition(), since.millis()]).map_err(classify)?;
    while let Some(r) = rows.next().map_err(classify)? {
        let id = r.get_ref(0).map_err(classify)?.as_str().map_err(unreadable)?;
        let last_change = Cursor::from_millis(r.get(1).map_err(classify)?);
        let removed: bool = r.get(2).map_err(classify)?;
        let fields = if removed { None } else { Some(r.get_ref(3).map_err(classify)?.as_str().map_err(unreadable)?) };
        if !row(id, last_change, fields) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::ROWS_AT;

    #[test]
    fn a_push_is_read_through_the_index_on_last_change_not_the_whole_scope() {
        let dir = tempfile::tempdir().unwrap();
        let conn =
            super::super::schema::open_writer(&dir.path().join("plan.db"), std::time::Duration::from_secs(1)).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {ROWS_AT}"))
            .unwrap()
            .query_map(rusqlite::params!["e", "", 1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan.iter().any(|step| step.contains("objects_by_change")), "{plan:?}");
    }
}
