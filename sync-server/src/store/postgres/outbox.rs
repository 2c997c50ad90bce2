//! The outbox of the PostgreSQL store (see [`crate::store::outbox`]). Workers of every instance
//! claim rows with `FOR UPDATE SKIP LOCKED`, so concurrent claims never overlap and never wait for
//! each other; object ids are kept as bytes, as in `sync_objects`.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use super::connection::{Failure, with_connection};
use super::reads::stored_id;
use crate::store::StoreError;
use crate::store::outbox::{
    Attempt, Bound, Claimed, Dialect, EVENT_COLUMNS, EventData, EventFilter, EventRow, Finished, Held, LOG_COLUMNS,
    LogRow, ObjectKey, Outbox, SubscriptionStats, add_logged, after_columns, filter_sql, held_columns,
};

pub(super) const POSTGRES: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    object_id_is: |p| format!("object_id = convert_to({p}, 'UTF8')"),
    position: "strpos",
};

/// Takes the stream lease when it is free, ran out or is already this token's, and the
/// subscription is not disabled; the row is created on the first take.
const LEASE_STREAM: &str =
    "INSERT INTO sync_outbox_subscriptions (name, enabled, changed_ms, lease_token, lease_until_ms)
    VALUES ($1, TRUE, $3, $2, $4)
    ON CONFLICT (name) DO UPDATE SET lease_token = EXCLUDED.lease_token, lease_until_ms = EXCLUDED.lease_until_ms
    WHERE sync_outbox_subscriptions.enabled
      AND (sync_outbox_subscriptions.lease_token IS NULL OR sync_outbox_subscriptions.lease_token = $2
           OR sync_outbox_subscriptions.lease_until_ms < $3)";

/// The held events of a settle, in order, with the first attempt of those that were tried.
const APPEND_HELD: &str = "WITH input AS (
        SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                             $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::int[], $13::bigint[],
                             $14::int[], $15::text[], $16::bigint[], $17::bigint[])
            WITH ORDINALITY AS i (event_id, entity, partition, object_id, operation, object, last_change,
                                  request_id, created_ms, state, attempts, next_attempt, status, error,
                                  at_ms, duration_ms, n)
    ), held AS (
        INSERT INTO sync_outbox (subscription, event_id, entity, partition, object_id, operation, object,
                                 last_change, request_id, created_ms, state, attempts, next_attempt_ms,
                                 last_status, last_error)
        SELECT $1, event_id, entity, partition, object_id, operation, object, last_change, request_id,
               created_ms, state, attempts, next_attempt, status, error
        FROM input ORDER BY n
        RETURNING seq, event_id
    )
    INSERT INTO sync_outbox_attempts (seq, at_ms, duration_ms, status, error)
    SELECT h.seq, i.at_ms, i.duration_ms, i.status, i.error
    FROM held h JOIN input i ON i.event_id = h.event_id
    WHERE i.attempts > 0";

const CLAIM: &str = "WITH pending AS (
        SELECT o.seq FROM sync_outbox o
        WHERE o.subscription = $3 AND o.state = 'pending' AND o.next_attempt_ms <= $4
          AND NOT EXISTS (
              SELECT 1 FROM sync_outbox e
              WHERE e.subscription = o.subscription AND e.entity = o.entity AND e.partition = o.partition
                AND e.object_id = o.object_id AND e.seq < o.seq AND e.state IN ('pending', 'delivering', 'dead'))
        ORDER BY o.seq LIMIT $5
        FOR UPDATE SKIP LOCKED
    ), expired AS (
        SELECT o.seq FROM sync_outbox o
        WHERE o.subscription = $3 AND o.state = 'delivering' AND o.lease_until_ms < $4
        ORDER BY o.seq LIMIT $5
        FOR UPDATE SKIP LOCKED
    )
    UPDATE sync_outbox SET state = 'delivering', lease_token = $1, lease_until_ms = $2
    WHERE seq IN (SELECT seq FROM (SELECT seq FROM pending UNION ALL SELECT seq FROM expired) due ORDER BY seq LIMIT $5)
    RETURNING seq, event_id, entity, partition, object_id, operation, object, last_change, request_id, created_ms, attempts";

/// Every attempt of a batch in one statement, guarded by each row's lease.
const FINISH: &str = "WITH input AS (
        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::int[], $6::text[],
                             $7::bool[], $8::bigint[], $9::bigint[], $10::bigint[])
            AS i (seq, token, state, next_attempt, status, error, done, end_ms, at_ms, duration_ms)
    ), finished AS (
        UPDATE sync_outbox o SET state = i.state, attempts = o.attempts + 1, next_attempt_ms = i.next_attempt,
            lease_token = NULL, lease_until_ms = NULL, last_status = i.status, last_error = i.error,
            finished_ms = CASE WHEN i.done THEN i.end_ms END
        FROM input i
        WHERE o.seq = i.seq AND o.lease_token = i.token AND o.state = 'delivering'
        RETURNING o.seq
    ), attempts AS (
        INSERT INTO sync_outbox_attempts (seq, at_ms, duration_ms, status, error)
        SELECT i.seq, i.at_ms, i.duration_ms, i.status, i.error FROM input i WHERE i.seq IN (SELECT seq FROM finished)
    )
    SELECT seq FROM finished";

/// The columns of [`FINISH`], one entry per attempt.
#[derive(Default)]
struct FinishColumns<'a> {
    seqs: Vec<i64>,
    tokens: Vec<i64>,
    states: Vec<&'static str>,
    nexts: Vec<Option<i64>>,
    statuses: Vec<Option<i32>>,
    errors: Vec<Option<&'a str>>,
    done: Vec<bool>,
    ends: Vec<i64>,
    ats: Vec<i64>,
    durations: Vec<i64>,
}

/// The columns of [`APPEND_HELD`], one entry per held event.
#[derive(Default)]
struct HeldColumns<'a> {
    event_ids: Vec<&'a str>,
    entities: Vec<&'a str>,
    partitions: Vec<&'a str>,
    object_ids: Vec<&'a [u8]>,
    operations: Vec<&'a str>,
    objects: Vec<Option<&'a str>>,
    last_changes: Vec<i64>,
    request_ids: Vec<Option<&'a str>>,
    created: Vec<i64>,
    states: Vec<&'static str>,
    attempts: Vec<i32>,
    nexts: Vec<Option<i64>>,
    statuses: Vec<Option<i32>>,
    errors: Vec<Option<String>>,
    ats: Vec<i64>,
    durations: Vec<i64>,
}

fn event_data(r: &Row, first: usize) -> Result<EventData, Failure> {
    Ok(EventData {
        event_id: r.try_get(first)?,
        entity: r.try_get(first + 1)?,
        partition: r.try_get(first + 2)?,
        object_id: stored_id(r.try_get(first + 3)?)?,
        operation: r.try_get(first + 4)?,
        object: r.try_get(first + 5)?,
        last_change: r.try_get(first + 6)?,
        request_id: r.try_get(first + 7)?,
        created_ms: r.try_get(first + 8)?,
    })
}

/// An [`EventRow`] from the [`EVENT_COLUMNS`] of a row.
fn event_row(r: &Row) -> Result<EventRow, Failure> {
    Ok(EventRow {
        seq: r.try_get(0)?,
        subscription: r.try_get(1)?,
        event: event_data(r, 2)?,
        state: r.try_get(11)?,
        attempts: r.try_get(12)?,
        next_attempt_ms: r.try_get(13)?,
        last_status: r.try_get(14)?,
        last_error: r.try_get(15)?,
    })
}

/// The values of [`Bound`]s as statement parameters.
fn params(bound: &[Bound]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    bound
        .iter()
        .map(|b| -> Box<dyn ToSql + Sync + Send> {
            match b {
                Bound::Text(t) => Box::new(t.clone()),
                Bound::Int(i) => Box::new(*i),
            }
        })
        .collect()
}

/// Every subscription's state and counts ([`Outbox::subscriptions`]), on one connection or
/// transaction.
pub(super) async fn subscription_stats(
    client: &impl GenericClient,
    names: &[String],
) -> Result<Vec<SubscriptionStats>, Failure> {
    let stmt = client
            .prepare_cached(
                "SELECT n.name, coalesce(s.enabled, TRUE), s.reason,
                    (SELECT count(*) FROM sync_outbox WHERE subscription = n.name AND state IN ('pending', 'delivering')),
                    (SELECT count(*) FROM sync_outbox WHERE subscription = n.name AND state = 'pending' AND attempts > 0),
                    (SELECT count(*) FROM sync_outbox WHERE subscription = n.name AND state = 'dead'),
                    (SELECT min(created_ms) FROM sync_outbox WHERE subscription = n.name AND state IN ('pending', 'delivering'))
                 FROM (SELECT unnest($1::text[]) AS name UNION SELECT name FROM sync_outbox_subscriptions) n
                 LEFT JOIN sync_outbox_subscriptions s ON s.name = n.name
                 ORDER BY n.name",
            )
            .await?;
    let rows = client.query(&stmt, &[&names]).await?;
    let mut stats = rows
        .iter()
        .map(|r| {
            Ok(SubscriptionStats {
                name: r.try_get(0)?,
                enabled: r.try_get(1)?,
                disabled_reason: r.try_get(2)?,
                pending: r.try_get(3)?,
                failing: r.try_get(4)?,
                dead: r.try_get(5)?,
                oldest_pending_ms: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let backlog = client
        .prepare_cached(
            "SELECT subscription, sum(events_count)::bigint, min(created_ms) FROM sync_outbox_log
                 GROUP BY subscription",
        )
        .await?;
    let backlog = client
        .query(&backlog, &[])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    add_logged(&mut stats, &backlog);
    Ok(stats)
}

/// Events matching `filter`, newest first ([`Outbox::events`]), on one connection or transaction.
pub(super) async fn select_events(
    client: &impl GenericClient,
    filter: &EventFilter,
    before_seq: Option<i64>,
    limit: usize,
) -> Result<Vec<EventRow>, Failure> {
    let (conditions, bound) = filter_sql(filter, 3, POSTGRES);
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM sync_outbox WHERE seq < $1 AND {conditions} ORDER BY seq DESC LIMIT $2");
    let (before, limit) = (before_seq.unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX));
    let values = params(&bound);
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&before, &limit];
    args.extend(values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)));
    client.query(sql.as_str(), &args).await?.iter().map(event_row).collect()
}

/// How many events match `filter` ([`Outbox::count`]), on one connection or transaction.
pub(super) async fn count_events(client: &impl GenericClient, filter: &EventFilter) -> Result<u64, Failure> {
    let (conditions, bound) = filter_sql(filter, 1, POSTGRES);
    let sql = format!("SELECT count(*) FROM sync_outbox WHERE {conditions}");
    let values = params(&bound);
    let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
    let n: i64 = client.query_one(sql.as_str(), &args).await?.try_get(0)?;
    Ok(n as u64)
}

/// Runs `$op` (an expression using `client`, a `&deadpool_postgres::Object`) on a pooled
/// connection, trying another one if the connection is lost before the statement ran.
macro_rules! on_connection {
    ($store:expr, |mut $client:ident| $op:expr) => {
        with_connection(&$store.inner.pool, |mut $client| async move {
            let outcome: Result<_, Failure> = async { $op }.await;
            ($client, outcome)
        })
        .await
        .map(|(_, value)| value)
        .map_err(Failure::into_store_error)
    };
    ($store:expr, |$client:ident| $op:expr) => {
        with_connection(&$store.inner.pool, |$client| async move {
            let outcome: Result<_, Failure> = async { $op }.await;
            ($client, outcome)
        })
        .await
        .map(|(_, value)| value)
        .map_err(Failure::into_store_error)
    };
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn lease_stream(
        &self,
        subscription: &str,
        token: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        on_connection!(self, |client| {
            let stmt = client.prepare_cached(LEASE_STREAM).await?;
            Ok(client.execute(&stmt, &[&subscription, &token, &now_ms, &lease_until_ms]).await? == 1)
        })
    }

    async fn release_stream(&self, subscription: &str, token: i64) -> Result<(), StoreError> {
        on_connection!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "UPDATE sync_outbox_subscriptions SET lease_token = NULL, lease_until_ms = NULL
                     WHERE name = $1 AND lease_token = $2",
                )
                .await?;
            client.execute(&stmt, &[&subscription, &token]).await?;
            Ok(())
        })
    }

    async fn read_log(&self, subscription: &str, max_rows: usize) -> Result<Vec<LogRow>, StoreError> {
        let limit = i64::try_from(max_rows).unwrap_or(i64::MAX);
        on_connection!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {LOG_COLUMNS} FROM sync_outbox_log WHERE subscription = $1 ORDER BY seq LIMIT $2"
                ))
                .await?;
            client
                .query(&stmt, &[&subscription, &limit])
                .await?
                .iter()
                .map(|r| {
                    Ok(LogRow {
                        seq: r.try_get(0)?,
                        entity: r.try_get(1)?,
                        partition: r.try_get(2)?,
                        last_change: r.try_get(3)?,
                        request_id: r.try_get(4)?,
                        created_ms: r.try_get(5)?,
                        events: r.try_get(6)?,
                    })
                })
                .collect()
        })
    }

    async fn held_objects(&self, subscription: &str, objects: &[ObjectKey]) -> Result<Vec<bool>, StoreError> {
        let entities: Vec<&str> = objects.iter().map(|(e, ..)| e.as_str()).collect();
        let partitions: Vec<&str> = objects.iter().map(|(_, p, _)| p.as_str()).collect();
        let ids: Vec<&[u8]> = objects.iter().map(|(.., id)| id.as_bytes()).collect();
        let (entities, partitions, ids) = (&entities, &partitions, &ids);
        on_connection!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sync_outbox o WHERE o.subscription = $1 AND o.entity = k.entity
                                    AND o.partition = k.partition AND o.object_id = k.id
                                    AND o.state IN ('pending', 'delivering', 'dead'))
                     FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS k (entity, partition, id, n)
                     ORDER BY k.n",
                )
                .await?;
            client
                .query(&stmt, &[&subscription, entities, partitions, ids])
                .await?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    async fn settle(&self, subscription: &str, token: i64, seqs: &[i64], held: &[Held]) -> Result<bool, StoreError> {
        let mut c = HeldColumns::default();
        for Held { event: e, attempt } in held {
            let (state, next, attempts, status, error) = held_columns(e, attempt.as_ref());
            c.event_ids.push(&e.event_id);
            c.entities.push(&e.entity);
            c.partitions.push(&e.partition);
            c.object_ids.push(e.object_id.as_bytes());
            c.operations.push(&e.operation);
            c.objects.push(e.object.as_deref());
            c.last_changes.push(e.last_change);
            c.request_ids.push(e.request_id.as_deref());
            c.created.push(e.created_ms);
            c.states.push(state);
            c.attempts.push(attempts);
            c.nexts.push(next);
            c.statuses.push(status);
            c.errors.push(error);
            c.ats.push(attempt.as_ref().map_or(0, |(a, _)| a.at_ms));
            c.durations.push(attempt.as_ref().map_or(0, |(a, _)| a.duration_ms));
        }
        let c = &c;
        on_connection!(self, |mut client| {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await?;
            // Locks the subscription's row, so that a worker taking the lease over waits for this
            // transaction, and this one sees whether it did.
            let holding = tx
                .prepare_cached(
                    "SELECT 1 FROM sync_outbox_subscriptions WHERE name = $1 AND lease_token = $2 FOR UPDATE",
                )
                .await?;
            if tx.query_opt(&holding, &[&subscription, &token]).await?.is_none() {
                return Ok(false);
            }
            let delete = tx.prepare_cached("DELETE FROM sync_outbox_log WHERE seq = ANY($1)").await?;
            tx.execute(&delete, &[&seqs]).await?;
            if !c.event_ids.is_empty() {
                let append = tx.prepare_cached(APPEND_HELD).await?;
                let args: [&(dyn ToSql + Sync); 17] = [
                    &subscription,
                    &c.event_ids,
                    &c.entities,
                    &c.partitions,
                    &c.object_ids,
                    &c.operations,
                    &c.objects,
                    &c.last_changes,
                    &c.request_ids,
                    &c.created,
                    &c.states,
                    &c.attempts,
                    &c.nexts,
                    &c.statuses,
                    &c.errors,
                    &c.ats,
                    &c.durations,
                ];
                tx.execute(&append, &args).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    async fn claim(
        &self,
        subscription: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let token: i64 = rand::random::<i64>().abs();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_connection!(self, |mut client| {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await?;
            let stmt = tx.prepare_cached(CLAIM).await?;
            let rows = tx.query(&stmt, &[&token, &lease_until_ms, &subscription, &now_ms, &limit]).await?;
            tx.commit().await?;
            let mut claimed = rows
                .iter()
                .map(|r| {
                    Ok(Claimed {
                        seq: r.try_get(0)?,
                        lease_token: token,
                        event: event_data(r, 1)?,
                        attempts: r.try_get(10)?,
                    })
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            claimed.sort_by_key(|c| c.seq);
            Ok(claimed)
        })
    }

    async fn renew(&self, leases: &[(i64, i64)], lease_until_ms: i64) -> Result<u64, StoreError> {
        let (seqs, tokens): (Vec<i64>, Vec<i64>) = leases.iter().copied().unzip();
        let (seqs, tokens) = (&seqs, &tokens);
        on_connection!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "UPDATE sync_outbox o SET lease_until_ms = $3 FROM unnest($1::bigint[], $2::bigint[]) AS l (seq, token)
                     WHERE o.seq = l.seq AND o.lease_token = l.token AND o.state = 'delivering'",
                )
                .await?;
            Ok(client.execute(&stmt, &[seqs, tokens, &lease_until_ms]).await?)
        })
    }

    async fn finish(&self, finished: &[Finished]) -> Result<Vec<bool>, StoreError> {
        let mut columns = FinishColumns::default();
        for f in finished {
            let (state, next, done) = after_columns(f.after);
            columns.seqs.push(f.seq);
            columns.tokens.push(f.lease_token);
            columns.states.push(state);
            columns.nexts.push(next);
            columns.statuses.push(f.attempt.status);
            columns.errors.push(f.attempt.error.as_deref());
            columns.done.push(done);
            columns.ends.push(f.attempt.at_ms + f.attempt.duration_ms);
            columns.ats.push(f.attempt.at_ms);
            columns.durations.push(f.attempt.duration_ms);
        }
        let c = &columns;
        let applied: Vec<i64> = on_connection!(self, |mut client| {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await?;
            let stmt = tx.prepare_cached(FINISH).await?;
            let args: [&(dyn ToSql + Sync); 10] = [
                &c.seqs,
                &c.tokens,
                &c.states,
                &c.nexts,
                &c.statuses,
                &c.errors,
                &c.done,
                &c.ends,
                &c.ats,
                &c.durations,
            ];
            let rows = tx.query(&stmt, &args).await?;
            tx.commit().await?;
            rows.iter().map(|r| r.try_get::<_, i64>(0).map_err(Failure::from)).collect::<Result<Vec<_>, Failure>>()
        })?;
        Ok(finished.iter().map(|f| applied.contains(&f.seq)).collect())
    }

    async fn is_enabled(&self, subscription: &str) -> Result<bool, StoreError> {
        on_connection!(self, |client| {
            let stmt = client.prepare_cached("SELECT enabled FROM sync_outbox_subscriptions WHERE name = $1").await?;
            let row = client.query_opt(&stmt, &[&subscription]).await?;
            Ok(match row {
                Some(row) => row.try_get(0)?,
                None => true,
            })
        })
    }

    async fn subscriptions(&self, names: &[String]) -> Result<Vec<SubscriptionStats>, StoreError> {
        on_connection!(self, |client| subscription_stats(&client, names).await)
    }

    async fn set_enabled(
        &self,
        subscription: &str,
        enabled: bool,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_connection!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO sync_outbox_subscriptions (name, enabled, reason, changed_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, reason = EXCLUDED.reason,
                     changed_ms = EXCLUDED.changed_ms",
                )
                .await?;
            client.execute(&stmt, &[&subscription, &enabled, &reason, &now_ms]).await?;
            Ok(())
        })
    }

    async fn events(
        &self,
        filter: &EventFilter,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        on_connection!(self, |client| select_events(&client, filter, before_seq, limit).await)
    }

    async fn event(&self, seq: i64) -> Result<Option<(EventRow, Vec<Attempt>)>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM sync_outbox WHERE seq = $1");
        let sql = &sql;
        on_connection!(self, |client| {
            let Some(row) = client.query_opt(sql.as_str(), &[&seq]).await? else { return Ok(None) };
            let attempts = client
                .query(
                    "SELECT at_ms, duration_ms, status, error FROM sync_outbox_attempts WHERE seq = $1 ORDER BY id DESC",
                    &[&seq],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Attempt {
                        at_ms: r.try_get(0)?,
                        duration_ms: r.try_get(1)?,
                        status: r.try_get(2)?,
                        error: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            Ok(Some((event_row(&row)?, attempts)))
        })
    }

    async fn redrive(&self, filter: &EventFilter, seqs: Option<&[i64]>, now_ms: i64) -> Result<u64, StoreError> {
        let (conditions, bound) = filter_sql(filter, 3, POSTGRES);
        let sql = format!(
            "UPDATE sync_outbox SET state = 'pending', attempts = 0, next_attempt_ms = $1
             WHERE (state = 'dead' OR (state = 'pending' AND attempts > 0))
               AND ($2::bigint[] IS NULL OR seq = ANY($2)) AND {conditions}"
        );
        let seqs: Option<Vec<i64>> = seqs.map(<[i64]>::to_vec);
        let (sql, bound, seqs) = (&sql, &bound, &seqs);
        on_connection!(self, |client| {
            let values = params(bound);
            let mut args: Vec<&(dyn ToSql + Sync)> = vec![&now_ms, seqs];
            args.extend(values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)));
            Ok(client.execute(sql.as_str(), &args).await?)
        })
    }

    async fn skip(&self, seqs: &[i64], now_ms: i64) -> Result<u64, StoreError> {
        on_connection!(self, |client| {
            Ok(client
                .execute(
                    "UPDATE sync_outbox SET state = 'skipped', next_attempt_ms = NULL, finished_ms = $1
                     WHERE seq = ANY($2) AND state IN ('pending', 'dead')",
                    &[&now_ms, &seqs],
                )
                .await?)
        })
    }

    async fn count(&self, filter: &EventFilter) -> Result<u64, StoreError> {
        on_connection!(self, |client| count_events(&client, filter).await)
    }

    async fn prune(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        on_connection!(self, |client| {
            let row = client
                .query_one(
                    "WITH gone AS (
                         DELETE FROM sync_outbox WHERE seq IN (
                             SELECT seq FROM sync_outbox
                             WHERE state IN ('delivered', 'skipped') AND finished_ms < $1 LIMIT $2)
                         RETURNING seq),
                     attempts AS (DELETE FROM sync_outbox_attempts WHERE seq IN (SELECT seq FROM gone))
                     SELECT count(*) FROM gone",
                    &[&before_ms, &batch],
                )
                .await?;
            let n: i64 = row.try_get(0)?;
            Ok(n as u64)
        })
    }

    async fn audit(&self, at_ms: i64, user: &str, action: &str, detail: &str) -> Result<(), StoreError> {
        on_connection!(self, |client| {
            client
                .execute(
                    r#"INSERT INTO sync_admin_audit (at_ms, "user", action, detail) VALUES ($1, $2, $3, $4)"#,
                    &[&at_ms, &user, &action, &detail],
                )
                .await?;
            Ok(())
        })
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_connection!(self, |client| {
            client
                .query(
                    r#"SELECT at_ms, "user", action, detail FROM sync_admin_audit ORDER BY id DESC LIMIT $1"#,
                    &[&limit],
                )
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect()
        })
    }
}
