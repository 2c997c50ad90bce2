//! The outbox of the SQLite store (see [`crate::store::outbox`]): every change of a row runs on
//! the writer's connection (one statement, or one transaction, at a time, serialized with the
//! pushes and, by SQLite's lock, with other processes); reads use the reader pool.

use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::SqliteStore;
use super::connection::{classify, no_reader};
use crate::store::StoreError;
use crate::store::outbox::{
    Attempt, Bound, Claimed, Dialect, EVENT_COLUMNS, EventData, EventFilter, EventRow, Finished, Held, LOG_COLUMNS,
    LogRow, ObjectKey, Outbox, SubscriptionStats, add_logged, after_columns, filter_sql, held_columns,
};

/// Due events and events whose lease ran out, each found in `seq` order along the
/// `(subscription, state, seq)` index, so that a claim reads little more than what it takes
/// however many events wait.
const CLAIM: &str = "UPDATE outbox SET state = 'delivering', lease_token = ?1, lease_until_ms = ?2
    WHERE seq IN (
        SELECT seq FROM (
            SELECT * FROM (
                SELECT o.seq FROM outbox o
                WHERE o.subscription = ?3 AND o.state = 'pending' AND o.next_attempt_ms <= ?4
                  AND NOT EXISTS (
                      SELECT 1 FROM outbox e
                      WHERE e.subscription = o.subscription AND e.entity = o.entity AND e.partition = o.partition
                        AND e.object_id = o.object_id AND e.seq < o.seq AND e.state IN ('pending', 'delivering', 'dead'))
                ORDER BY o.seq LIMIT ?5)
            UNION ALL
            SELECT * FROM (
                SELECT o.seq FROM outbox o
                WHERE o.subscription = ?3 AND o.state = 'delivering' AND o.lease_until_ms < ?4
                ORDER BY o.seq LIMIT ?5))
        ORDER BY seq LIMIT ?5)
    RETURNING seq, event_id, entity, partition, object_id, operation, object, last_change, request_id, created_ms, attempts";

const FINISH: &str = "UPDATE outbox SET state = ?3, attempts = attempts + 1, next_attempt_ms = ?4,
        lease_token = NULL, lease_until_ms = NULL, last_status = ?5, last_error = ?6,
        finished_ms = CASE WHEN ?7 THEN ?8 ELSE NULL END
    WHERE seq = ?1 AND lease_token = ?2 AND state = 'delivering'";

/// Takes the stream lease when it is free, ran out or is already this token's, and the
/// subscription is not disabled; the row is created on the first take.
const LEASE_STREAM: &str = "INSERT INTO outbox_subscriptions (name, enabled, changed_ms, lease_token, lease_until_ms)
    VALUES (?1, 1, ?3, ?2, ?4)
    ON CONFLICT (name) DO UPDATE SET lease_token = excluded.lease_token, lease_until_ms = excluded.lease_until_ms
    WHERE outbox_subscriptions.enabled
      AND (outbox_subscriptions.lease_token IS NULL OR outbox_subscriptions.lease_token = ?2
           OR outbox_subscriptions.lease_until_ms < ?3)";

const RELEASE_STREAM: &str =
    "UPDATE outbox_subscriptions SET lease_token = NULL, lease_until_ms = NULL WHERE name = ?1 AND lease_token = ?2";

/// One attempt of the outbox row `?1`, kept in its own row.
const INSERT_ATTEMPT: &str =
    "INSERT INTO outbox_attempts (seq, at_ms, duration_ms, status, error) VALUES (?1, ?2, ?3, ?4, ?5)";

pub(super) const SQLITE: Dialect =
    Dialect { placeholder: |n| format!("?{n}"), object_id_is: |p| format!("object_id = {p}"), position: "instr" };

fn to_sql(bound: Vec<Bound>) -> Vec<Sql> {
    bound
        .into_iter()
        .map(|b| match b {
            Bound::Text(t) => Sql::Text(t),
            Bound::Int(i) => Sql::Integer(i),
        })
        .collect()
}

/// The [`EventData`] of a row whose columns from `first` on are `event_id, entity, partition,
/// object_id, operation, object, last_change, request_id, created_ms`.
fn event_data(r: &Row<'_>, first: usize) -> rusqlite::Result<EventData> {
    Ok(EventData {
        event_id: r.get(first)?,
        entity: r.get(first + 1)?,
        partition: r.get(first + 2)?,
        object_id: r.get(first + 3)?,
        operation: r.get(first + 4)?,
        object: r.get(first + 5)?,
        last_change: r.get(first + 6)?,
        request_id: r.get(first + 7)?,
        created_ms: r.get(first + 8)?,
    })
}

/// An [`EventRow`] from the [`EVENT_COLUMNS`] of a row.
fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: r.get(0)?,
        subscription: r.get(1)?,
        event: event_data(r, 2)?,
        state: r.get(11)?,
        attempts: r.get(12)?,
        next_attempt_ms: r.get(13)?,
        last_status: r.get(14)?,
        last_error: r.get(15)?,
    })
}

/// Every subscription's state and counts ([`Outbox::subscriptions`]), on one connection.
pub(super) fn subscription_stats(conn: &Connection, names: Vec<String>) -> rusqlite::Result<Vec<SubscriptionStats>> {
    let mut known: Vec<String> = conn
        .prepare_cached("SELECT name FROM outbox_subscriptions")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in names {
        if !known.contains(&name) {
            known.push(name);
        }
    }
    known.sort();
    let mut counts = conn.prepare_cached(
        "SELECT count(*) FILTER (WHERE state IN ('pending', 'delivering')),
                    count(*) FILTER (WHERE state = 'pending' AND attempts > 0),
                    count(*) FILTER (WHERE state = 'dead'),
                    min(created_ms) FILTER (WHERE state IN ('pending', 'delivering'))
             FROM outbox WHERE subscription = ?1 AND state IN ('pending', 'delivering', 'dead')",
    )?;
    let mut state = conn.prepare_cached("SELECT enabled, reason FROM outbox_subscriptions WHERE name = ?1")?;
    let mut stats = Vec::with_capacity(known.len());
    for name in known {
        let (pending, failing, dead, oldest_pending_ms) =
            counts.query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        let (enabled, disabled_reason) =
            state.query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?))).optional()?.unwrap_or((true, None));
        stats.push(SubscriptionStats { name, enabled, disabled_reason, pending, failing, dead, oldest_pending_ms });
    }
    let backlog: Vec<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT subscription, sum(events_count), min(created_ms) FROM outbox_log GROUP BY subscription",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    add_logged(&mut stats, &backlog);
    Ok(stats)
}

/// Events matching `filter`, newest first ([`Outbox::events`]), on one connection.
pub(super) fn select_events(
    conn: &Connection,
    filter: &EventFilter,
    before_seq: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<EventRow>> {
    let (conditions, bound) = filter_sql(filter, 3, SQLITE);
    let sql = format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE seq < ?1 AND {conditions} ORDER BY seq DESC LIMIT ?2");
    let mut values = vec![Sql::Integer(before_seq.unwrap_or(i64::MAX)), Sql::Integer(limit as i64)];
    values.extend(to_sql(bound));
    let mut stmt = conn.prepare(&sql)?;
    stmt.query_map(params_from_iter(values), event_row)?.collect()
}

/// How many events match `filter` ([`Outbox::count`]), on one connection.
pub(super) fn count_events(conn: &Connection, filter: &EventFilter) -> rusqlite::Result<u64> {
    let (conditions, bound) = filter_sql(filter, 1, SQLITE);
    let sql = format!("SELECT count(*) FROM outbox WHERE {conditions}");
    conn.query_row(&sql, params_from_iter(to_sql(bound)), |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

/// `seqs` as the JSON array `json_each` reads.
fn seq_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into())
}

impl SqliteStore {
    /// Runs a read on a connection of the reader pool.
    async fn read<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.blocking(move |inner| {
            let conn = inner.readers.get().map_err(no_reader)?;
            job(&conn).map_err(classify)
        })
        .await
    }

    /// Runs a change of the outbox's delivery state on the writer's connection, without waiting
    /// for it to be durable (see [`Outbox::finish`]): SQLite's `synchronous = NORMAL` for it,
    /// `FULL` again after. The next durable commit makes it durable too.
    async fn bookkeeping<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.on_writer(move |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(classify)?;
            let outcome = job(conn).map_err(classify);
            conn.pragma_update(None, "synchronous", "FULL").map_err(classify)?;
            outcome
        })
        .await
    }

    /// Runs a change on the writer's connection.
    async fn change<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.on_writer(move |conn| job(conn).map_err(classify)).await
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn lease_stream(
        &self,
        subscription: &str,
        token: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let subscription = subscription.to_owned();
        self.bookkeeping(move |conn| {
            let taken =
                conn.prepare_cached(LEASE_STREAM)?.execute(params![subscription, token, now_ms, lease_until_ms])?;
            Ok(taken == 1)
        })
        .await
    }

    async fn release_stream(&self, subscription: &str, token: i64) -> Result<(), StoreError> {
        let subscription = subscription.to_owned();
        self.bookkeeping(move |conn| {
            conn.prepare_cached(RELEASE_STREAM)?.execute(params![subscription, token])?;
            Ok(())
        })
        .await
    }

    async fn read_log(&self, subscription: &str, max_rows: usize) -> Result<Vec<LogRow>, StoreError> {
        let subscription = subscription.to_owned();
        let limit = i64::try_from(max_rows).unwrap_or(i64::MAX);
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {LOG_COLUMNS} FROM outbox_log WHERE subscription = ?1 ORDER BY seq LIMIT ?2"
            ))?
            .query_map(params![subscription, limit], |r| {
                Ok(LogRow {
                    seq: r.get(0)?,
                    entity: r.get(1)?,
                    partition: r.get(2)?,
                    last_change: r.get(3)?,
                    request_id: r.get(4)?,
                    created_ms: r.get(5)?,
                    events: r.get(6)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn held_objects(&self, subscription: &str, objects: &[ObjectKey]) -> Result<Vec<bool>, StoreError> {
        let (subscription, objects) = (subscription.to_owned(), objects.to_vec());
        self.read(move |conn| {
            let mut any = conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE subscription = ?1 AND state IN ('pending', 'delivering', 'dead'))",
            )?;
            if !any.query_row(params![subscription], |r| r.get::<_, bool>(0))? {
                return Ok(vec![false; objects.len()]);
            }
            let mut held = conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE subscription = ?1 AND entity = ?2 AND partition = ?3
                                AND object_id = ?4 AND state IN ('pending', 'delivering', 'dead'))",
            )?;
            objects
                .iter()
                .map(|(entity, partition, id)| held.query_row(params![subscription, entity, partition, id], |r| r.get(0)))
                .collect()
        })
        .await
    }

    async fn settle(&self, subscription: &str, token: i64, seqs: &[i64], held: &[Held]) -> Result<bool, StoreError> {
        let (subscription, seqs, held) = (subscription.to_owned(), seq_list(seqs), held.to_vec());
        self.bookkeeping(move |conn| {
            let tx = conn.transaction()?;
            let holding = tx
                .prepare_cached("SELECT 1 FROM outbox_subscriptions WHERE name = ?1 AND lease_token = ?2")?
                .exists(params![subscription, token])?;
            if !holding {
                return Ok(false);
            }
            tx.execute("DELETE FROM outbox_log WHERE seq IN (SELECT value FROM json_each(?1))", params![seqs])?;
            let mut append = tx.prepare_cached(
                "INSERT INTO outbox (subscription, event_id, entity, partition, object_id, operation, object,
                                     last_change, request_id, created_ms, state, attempts, next_attempt_ms,
                                     last_status, last_error, finished_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL)",
            )?;
            let mut attempt_of = tx.prepare_cached(INSERT_ATTEMPT)?;
            for Held { event: e, attempt } in held {
                let (state, next, attempts, status, error) = held_columns(&e, attempt.as_ref());
                append.execute(params![
                    subscription,
                    e.event_id,
                    e.entity,
                    e.partition,
                    e.object_id,
                    e.operation,
                    e.object,
                    e.last_change,
                    e.request_id,
                    e.created_ms,
                    state,
                    attempts,
                    next,
                    status,
                    error
                ])?;
                if let Some((a, _)) = attempt {
                    attempt_of.execute(params![tx.last_insert_rowid(), a.at_ms, a.duration_ms, a.status, a.error])?;
                }
            }
            drop((append, attempt_of));
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn claim(
        &self,
        subscription: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let subscription = subscription.to_owned();
        let token: i64 = rand::random::<i64>().abs();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.bookkeeping(move |conn| {
            let mut stmt = conn.prepare_cached(CLAIM)?;
            let rows = stmt.query_map(params![token, lease_until_ms, subscription, now_ms, limit], |r| {
                Ok(Claimed { seq: r.get(0)?, lease_token: token, event: event_data(r, 1)?, attempts: r.get(10)? })
            })?;
            let mut claimed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            claimed.sort_by_key(|c| c.seq);
            Ok(claimed)
        })
        .await
    }

    async fn renew(&self, leases: &[(i64, i64)], lease_until_ms: i64) -> Result<u64, StoreError> {
        let leases = leases.to_vec();
        self.bookkeeping(move |conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE outbox SET lease_until_ms = ?3 WHERE seq = ?1 AND lease_token = ?2 AND state = 'delivering'",
            )?;
            let mut renewed = 0;
            for (seq, token) in leases {
                renewed += stmt.execute(params![seq, token, lease_until_ms])? as u64;
            }
            Ok(renewed)
        })
        .await
    }

    async fn finish(&self, finished: &[Finished]) -> Result<Vec<bool>, StoreError> {
        let finished = finished.to_vec();
        self.bookkeeping(move |conn| {
            let tx = conn.transaction()?;
            let mut applied = Vec::with_capacity(finished.len());
            for Finished { seq, lease_token, attempt, after } in finished {
                let (state, next, done) = after_columns(after);
                let end = attempt.at_ms + attempt.duration_ms;
                let changed = tx.prepare_cached(FINISH)?.execute(params![
                    seq,
                    lease_token,
                    state,
                    next,
                    attempt.status,
                    attempt.error,
                    done,
                    end
                ])?;
                if changed == 1 {
                    tx.prepare_cached(INSERT_ATTEMPT)?.execute(params![
                        seq,
                        attempt.at_ms,
                        attempt.duration_ms,
                        attempt.status,
                        attempt.error
                    ])?;
                }
                applied.push(changed == 1);
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn is_enabled(&self, subscription: &str) -> Result<bool, StoreError> {
        let subscription = subscription.to_owned();
        self.read(move |conn| {
            let enabled = conn
                .prepare_cached("SELECT enabled FROM outbox_subscriptions WHERE name = ?1")?
                .query_row(params![subscription], |r| r.get(0))
                .optional()?;
            Ok(enabled.unwrap_or(true))
        })
        .await
    }

    async fn subscriptions(&self, names: &[String]) -> Result<Vec<SubscriptionStats>, StoreError> {
        let names = names.to_vec();
        self.read(move |conn| subscription_stats(conn, names)).await
    }

    async fn set_enabled(
        &self,
        subscription: &str,
        enabled: bool,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (subscription, reason) = (subscription.to_owned(), reason.map(str::to_owned));
        self.change(move |conn| {
            conn.prepare_cached(
                "INSERT INTO outbox_subscriptions (name, enabled, reason, changed_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason,
                 changed_ms = excluded.changed_ms",
            )?
            .execute(params![subscription, enabled, reason, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn events(
        &self,
        filter: &EventFilter,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| select_events(conn, &filter, before_seq, limit)).await
    }

    async fn event(&self, seq: i64) -> Result<Option<(EventRow, Vec<Attempt>)>, StoreError> {
        self.read(move |conn| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE seq = ?1");
            let Some(row) = conn.prepare_cached(&sql)?.query_row(params![seq], event_row).optional()? else {
                return Ok(None);
            };
            let attempts = conn
                .prepare_cached(
                    "SELECT at_ms, duration_ms, status, error FROM outbox_attempts WHERE seq = ?1 ORDER BY id DESC",
                )?
                .query_map(params![seq], |r| {
                    Ok(Attempt { at_ms: r.get(0)?, duration_ms: r.get(1)?, status: r.get(2)?, error: r.get(3)? })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some((row, attempts)))
        })
        .await
    }

    async fn redrive(&self, filter: &EventFilter, seqs: Option<&[i64]>, now_ms: i64) -> Result<u64, StoreError> {
        let (conditions, bound) = filter_sql(filter, 3, SQLITE);
        let only = if seqs.is_some() { "seq IN (SELECT value FROM json_each(?2))" } else { "?2 IS NULL" };
        let sql = format!(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?1
             WHERE (state = 'dead' OR (state = 'pending' AND attempts > 0)) AND {only} AND {conditions}"
        );
        let mut values = vec![Sql::Integer(now_ms), seqs.map_or(Sql::Null, |s| Sql::Text(seq_list(s)))];
        values.extend(to_sql(bound));
        self.change(move |conn| Ok(conn.execute(&sql, params_from_iter(values))? as u64)).await
    }

    async fn skip(&self, seqs: &[i64], now_ms: i64) -> Result<u64, StoreError> {
        let list = seq_list(seqs);
        self.change(move |conn| {
            let skipped = conn.execute(
                "UPDATE outbox SET state = 'skipped', next_attempt_ms = NULL, finished_ms = ?1
                 WHERE seq IN (SELECT value FROM json_each(?2)) AND state IN ('pending', 'dead')",
                params![now_ms, list],
            )?;
            Ok(skipped as u64)
        })
        .await
    }

    async fn count(&self, filter: &EventFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| count_events(conn, &filter)).await
    }

    async fn prune(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        self.change(move |conn| {
            let tx = conn.transaction()?;
            let seqs: Vec<i64> = tx
                .prepare_cached(
                    "SELECT seq FROM outbox WHERE state IN ('delivered', 'skipped') AND finished_ms < ?1 LIMIT ?2",
                )?
                .query_map(params![before_ms, batch], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let list = seq_list(&seqs);
            tx.execute("DELETE FROM outbox_attempts WHERE seq IN (SELECT value FROM json_each(?1))", params![list])?;
            let deleted =
                tx.execute("DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?1))", params![list])?;
            tx.commit()?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn audit(&self, at_ms: i64, user: &str, action: &str, detail: &str) -> Result<(), StoreError> {
        let (user, action, detail) = (user.to_owned(), action.to_owned(), detail.to_owned());
        self.change(move |conn| {
            conn.prepare_cached("INSERT INTO admin_audit (at_ms, user, action, detail) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![at_ms, user, action, detail])?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT at_ms, user, action, detail FROM admin_audit ORDER BY id DESC LIMIT ?1")?
                .query_map(params![limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .await
    }
}
