//! The console's reads on the SQLite store (see [`crate::store::dashboard`]): on a reader
//! connection, in one snapshot, interrupted at their deadline.

use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;

use super::SqliteStore;
use super::connection::{Snapshot, classify, no_reader};
use super::outbox::{count_events, select_events, subscription_stats};
use crate::store::StoreError;
use crate::store::dashboard::{Dashboard, EntityStats, Overview, StreamLease, timed_out};
use crate::store::outbox::{EventFilter, EventRow};

impl SqliteStore {
    /// Runs `job` in a snapshot of a reader, stopped once `timeout` has passed.
    async fn within<T: Send + 'static>(
        &self,
        timeout: Duration,
        job: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.blocking(move |inner| {
            let conn = inner.readers.get().map_err(no_reader)?;
            let snapshot = Snapshot::begin(&conn)?;
            interrupted_after(&snapshot, timeout, job)
        })
        .await
    }
}

/// Runs `job` on `conn`, interrupting it once `timeout` has passed (zero: never). SQLite has no
/// statement timeout of its own; an interrupt from a watchdog thread stops the statement running
/// at the deadline, and the watchdog is joined before the connection goes back to its pool, so
/// that a late interrupt can never reach another query.
pub(super) fn interrupted_after<T>(
    conn: &Connection,
    timeout: Duration,
    job: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    if timeout.is_zero() {
        return job(conn).map_err(classify);
    }
    let handle = conn.get_interrupt_handle();
    let (finished, deadline) = mpsc::channel::<()>();
    let watchdog = std::thread::Builder::new()
        .name("sqlite-deadline".into())
        .spawn(move || {
            let fired = deadline.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout);
            if fired {
                handle.interrupt();
            }
            fired
        })
        .map_err(|e| StoreError::internal("cannot start the deadline of a console query", e))?;
    let outcome = job(conn);
    drop(finished);
    let fired = watchdog.join().unwrap_or(true);
    match outcome {
        Err(e) if fired || e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            Err(timed_out(timeout, e))
        }
        other => other.map_err(classify),
    }
}

#[async_trait]
impl Dashboard for SqliteStore {
    async fn overview(&self, names: &[String], timeout: Duration) -> Result<Overview, StoreError> {
        let names = names.to_vec();
        self.within(timeout, move |conn| {
            let entities = conn
                .prepare_cached(
                    "SELECT entity, count(*) FILTER (WHERE removed = 0), count(*) FILTER (WHERE removed <> 0),
                            max(last_change), count(DISTINCT partition)
                     FROM objects GROUP BY entity ORDER BY entity",
                )?
                .query_map([], |r| {
                    Ok(EntityStats {
                        entity: r.get(0)?,
                        objects: r.get(1)?,
                        tombstones: r.get(2)?,
                        latest_change: r.get(3)?,
                        partitions: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let leases = conn
                .prepare_cached("SELECT name, lease_token, lease_until_ms FROM outbox_subscriptions ORDER BY name")?
                .query_map([], |r| Ok(StreamLease { subscription: r.get(0)?, holder: r.get(1)?, until_ms: r.get(2)? }))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Overview { entities, subscriptions: subscription_stats(conn, names)?, leases })
        })
        .await
    }

    async fn events_within(
        &self,
        filter: &EventFilter,
        before_seq: Option<i64>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<EventRow>, StoreError> {
        let filter = filter.clone();
        self.within(timeout, move |conn| select_events(conn, &filter, before_seq, limit)).await
    }

    async fn count_within(&self, filter: &EventFilter, timeout: Duration) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.within(timeout, move |conn| count_events(conn, &filter)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query that takes seconds: counting a recursive sequence of a hundred million rows.
    const SLOW: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000)
                        SELECT count(*) FROM n";

    #[test]
    fn a_query_past_its_deadline_is_stopped_and_the_connection_serves_the_next() {
        let conn = Connection::open_in_memory().unwrap();
        let started = std::time::Instant::now();
        let err =
            interrupted_after(&conn, Duration::from_millis(50), |c| c.query_row(SLOW, [], |r| r.get::<_, i64>(0)))
                .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "stopped at the deadline: {:?}", started.elapsed());
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("statement timeout of 50 ms"), "{err}");
        // A quick query within a deadline, and later ones, are not touched by the earlier interrupt.
        let one =
            interrupted_after(&conn, Duration::from_secs(5), |c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
        assert_eq!(one.unwrap(), 1_i64);
        assert_eq!(conn.query_row("SELECT 2", [], |r| r.get::<_, i64>(0)).unwrap(), 2);
    }

    #[test]
    fn a_zero_timeout_leaves_queries_unbounded() {
        let conn = Connection::open_in_memory().unwrap();
        let quick =
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT count(*) FROM n";
        let n: i64 = interrupted_after(&conn, Duration::ZERO, |c| c.query_row(quick, [], |r| r.get(0))).unwrap();
        assert_eq!(n, 100_000);
    }
}
