//! Writes of the PostgreSQL store: the steps of [`push::apply`] in SQL, the commit, and what to
//! answer when the connection is lost during `COMMIT`.
//!
//! The clock row lock (`SELECT ... FOR UPDATE`) orders a push after every other push to its
//! scope, from any instance; every read after it is a later statement, so it sees what those
//! pushes committed. The reads are sent with the lock, in one round trip; all writes of a push
//! are one statement.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Transaction};
use futures_util::future::join4;
use sync_proto::Cursor;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::PostgresStore;
use super::connection::{Failure, classify, connection_lost};
use crate::store::idempotency::{Idempotency, Remembered};
use crate::store::outbox::log_events;
use crate::store::push::{self, Found, KeyLookup, ObjectState, PushTx, Writes};
use crate::store::{Push, PushOutcome, Scope, StoreError};

/// How long the store keeps asking whether a push whose `COMMIT` lost its connection committed.
const COMMIT_RESOLVE_WINDOW: Duration = Duration::from_secs(3);

const LOCK_CLOCK: &str = "SELECT last, txid_current() FROM sync_clocks WHERE entity = $1 AND partition = $2 FOR UPDATE";
const CREATE_CLOCK: &str = "INSERT INTO sync_clocks (entity, partition, last) VALUES ($1, $2, 0)
    ON CONFLICT (entity, partition) DO NOTHING";
const FIND_KEY: &str = "SELECT now, fingerprint FROM sync_idempotency
    WHERE entity = $1 AND partition = $2 AND key = $3 AND created_ms >= $4";
/// Written as a semi-join on the whole primary key, so that each id is one probe of it: with
/// `entity = $1 AND partition = $2 AND id = ANY($3)` the planner takes the
/// `(entity, partition, last_change)` index whenever it underestimates a partition (a new or a
/// fast-growing one), and then each push reads the whole partition.
const LOAD_OBJECTS: &str = "SELECT id, removed, fields, last_change FROM sync_objects
    WHERE (entity, partition, id) IN (SELECT $1::text, $2::text, unnest($3::bytea[]))";
/// Every write of a push in one statement: the clock, the idempotency key (when `$7` is not
/// null; an expired key not purged yet is replaced), the push's row of the outbox log for each
/// subscription `$13`, and the objects.
const APPLY: &str = r#"
    WITH clock AS (
        UPDATE sync_clocks SET last = $3 WHERE entity = $1 AND partition = $2
    ), idempotency_key AS (
        INSERT INTO sync_idempotency (entity, partition, key, now, fingerprint, created_ms)
        SELECT $1, $2, $7::text, $3, $8::text, $9::bigint WHERE $7::text IS NOT NULL
        ON CONFLICT (entity, partition, key) DO UPDATE
        SET now = EXCLUDED.now, fingerprint = EXCLUDED.fingerprint, created_ms = EXCLUDED.created_ms
    ), events AS (
        INSERT INTO sync_outbox_log (subscription, entity, partition, last_change, request_id, created_ms,
                                     events_count, events)
        SELECT s, $1, $2, $3, $10::text, $9, $11::integer, $12::bytea FROM unnest($13::text[]) AS s
    )
    INSERT INTO sync_objects (entity, partition, id, last_change, removed, fields)
    SELECT $1, $2, u.id, $3, u.removed, u.fields
    FROM unnest($4::bytea[], $5::boolean[], $6::text[]) AS u (id, removed, fields)
    ON CONFLICT (entity, partition, id) DO UPDATE
    SET last_change = EXCLUDED.last_change, removed = EXCLUDED.removed, fields = EXCLUDED.fields
"#;
const PURGE_KEYS: &str = "DELETE FROM sync_idempotency WHERE ctid IN
    (SELECT ctid FROM sync_idempotency WHERE created_ms < $1 LIMIT $2)";
const TXID_STATUS: &str = "SELECT txid_status($1)";
/// A push's statements are planned once per connection, not at every push: their best plan does
/// not depend on the values (each probes primary keys), but PostgreSQL estimates the generic
/// plan of an array parameter at ten elements and so keeps planning each execution anew, which
/// was about a seventh of the database's time per push. For the push's transaction only.
const GENERIC_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// The steps of [`push::apply`] in one PostgreSQL transaction.
struct PgTx<'t> {
    tx: &'t Transaction<'t>,
    /// The transaction's id, learnt with the clock lock: what to ask about if `COMMIT` is lost.
    xid: i64,
}

impl PushTx for PgTx<'_> {
    type Error = Failure;

    async fn lock_and_read(
        &mut self,
        scope: &Scope,
        key: Option<KeyLookup<'_>>,
        ids: &[&str],
        versions: bool,
    ) -> Result<(i64, Found), Failure> {
        let statements = Statements {
            lock: self.tx.prepare_cached(LOCK_CLOCK).await?,
            find_key: self.tx.prepare_cached(FIND_KEY).await?,
            load: self.tx.prepare_cached(LOAD_OBJECTS).await?,
        };
        let (clock, found) = match locked_reads(self.tx, &statements, scope, key, ids, versions).await? {
            (Some(clock), found) => (clock, found),
            // The first push to this scope: its reads ran without a lock to hold them back.
            // Create its clock, then lock it and read again like any other.
            (None, _) => {
                let create = self.tx.prepare_cached(CREATE_CLOCK).await?;
                self.tx.execute(&create, &[&scope.key(), &scope.partition()]).await?;
                match locked_reads(self.tx, &statements, scope, key, ids, versions).await? {
                    (Some(clock), found) => (clock, found),
                    (None, _) => return Err(StoreError::internal_because("the clock row just created is gone").into()),
                }
            }
        };
        self.xid = clock.try_get(1)?;
        Ok((clock.try_get(0)?, found))
    }

    async fn write(&mut self, scope: &Scope, writes: &Writes<'_>) -> Result<(), Failure> {
        let (mut ids, mut removed, mut fields) = (Vec::new(), Vec::new(), Vec::new());
        for row in writes.rows {
            let (r, f) = row.state.columns();
            ids.push(row.id.as_bytes());
            removed.push(r);
            fields.push(f);
        }
        let key = writes.key;
        let (key, fingerprint) = (key.map(Idempotency::key), key.map(Idempotency::fingerprint));
        let events = (!writes.subscriptions.is_empty()).then(|| log_events(writes.events));
        let events_count = writes.events.len() as i32;
        let args: [&(dyn ToSql + Sync); 13] = [
            &scope.key(),
            &scope.partition(),
            &writes.now,
            &ids,
            &removed,
            &fields,
            &key,
            &fingerprint,
            &writes.wall_ms,
            &writes.request_id,
            &events_count,
            &events,
            &writes.subscriptions,
        ];
        let apply = self.tx.prepare_cached(APPLY).await?;
        self.tx.execute(&apply, &args).await?;
        Ok(())
    }
}

/// The statements of [`locked_reads`], prepared before any of them is sent.
struct Statements {
    lock: Statement,
    find_key: Statement,
    load: Statement,
}

/// The clock's row locked `FOR UPDATE` (none when the scope has no clock yet), then the push
/// remembered under `key` and what is stored for `ids`, in one round trip: the statements
/// ([`GENERIC_PLANS`] first) are sent together, in this order, and the server runs them one after
/// another, so the two reads take their snapshots once the lock is granted and see every push
/// committed before it. They are sent only once prepared: a statement still to prepare would
/// wait for that answer and could go out after a read.
async fn locked_reads(
    tx: &Transaction<'_>,
    statements: &Statements,
    scope: &Scope,
    key: Option<KeyLookup<'_>>,
    ids: &[&str],
    versions: bool,
) -> Result<(Option<Row>, Found), Failure> {
    let (entity, partition) = (scope.key(), scope.partition());
    let generic_plans = tx.batch_execute(GENERIC_PLANS);
    let lock = async { tx.query_opt(&statements.lock, &[&entity, &partition]).await };
    let remembered = async {
        match key {
            None => Ok(None),
            Some(KeyLookup { key, valid_from_ms }) => {
                tx.query_opt(&statements.find_key, &[&entity, &partition, &key.key(), &valid_from_ms]).await
            }
        }
    };
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
    let load = async {
        if keys.is_empty() { Ok(Vec::new()) } else { tx.query(&statements.load, &[&entity, &partition, &keys]).await }
    };
    // Joined, not tried: when the lock fails, the reads fail too ("current transaction is
    // aborted"), and the lock's error is the one to report.
    let (generic_plans, clock, earlier, rows) = join4(generic_plans, lock, remembered, load).await;
    generic_plans?;
    let clock = clock?;
    let earlier = match earlier? {
        Some(row) => Some(Remembered { now: row.try_get(0)?, fingerprint: row.try_get(1)? }),
        None => None,
    };
    let rows = rows?;
    let (mut stored, mut found_versions) = (HashMap::with_capacity(rows.len()), HashMap::new());
    for row in rows {
        let id = super::reads::stored_id(row.try_get(0)?)?;
        if versions {
            found_versions.insert(id.clone(), Cursor::from_millis(row.try_get(3)?));
        }
        stored.insert(id, ObjectState::from_row(row.try_get(1)?, row.try_get(2)?));
    }
    Ok((clock, Found { earlier, stored, versions: found_versions }))
}

impl PostgresStore {
    /// One attempt at a push on `client`: [`push::apply`] in a transaction, then `COMMIT`.
    pub(super) async fn push_on(
        &self,
        client: &mut Object,
        scope: &Scope,
        push: &Push,
    ) -> Result<PushOutcome, Failure> {
        let tx = client.transaction().await?;
        let mut steps = PgTx { tx: &tx, xid: 0 };
        let outcome = push::apply(&mut steps, scope, push, &*self.inner.clock, &self.inner.routes).await?;
        let xid = steps.xid;
        if outcome.replayed {
            return Ok(outcome); // dropping the transaction rolls it back: a replay changes nothing
        }
        match tx.commit().await {
            Ok(()) => Ok(outcome),
            Err(error) if connection_lost(&error) => Err(Failure::CommitLost { xid, now: outcome.now.millis(), error }),
            Err(error) => Err(error.into()),
        }
    }

    /// The connection was lost during `COMMIT` of transaction `xid`: asks the database whether it
    /// committed, so that the answer is `200` exactly when the push was applied. When that cannot
    /// be learnt within [`COMMIT_RESOLVE_WINDOW`], the answer is `503` and the outcome unknown,
    /// which is what idempotency keys are for.
    pub(super) async fn resolve_commit(
        &self,
        xid: i64,
        now: i64,
        error: tokio_postgres::Error,
    ) -> Result<PushOutcome, StoreError> {
        let deadline = Instant::now() + COMMIT_RESOLVE_WINDOW;
        loop {
            match self.transaction_status(xid).await {
                Ok(Some(status)) if status == "committed" => {
                    tracing::warn!(xid, now, "the connection was lost during COMMIT, but the push committed");
                    return Ok(PushOutcome { now: Cursor::from_millis(now), replayed: false });
                }
                Ok(Some(status)) if status == "aborted" => return Err(classify(error)),
                // "in progress": the backend has not finished yet; or the database cannot be asked yet.
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                last => {
                    tracing::error!(
                        xid,
                        now,
                        error = %error,
                        status = ?last,
                        "the connection was lost during COMMIT and whether the push committed is unknown"
                    );
                    return Err(StoreError::unavailable(
                        "the connection to the database was lost during commit and the outcome is unknown",
                        super::connection::DbError::from(error),
                    ));
                }
            }
        }
    }

    /// `committed`, `aborted` or `in progress`, from a fresh connection.
    async fn transaction_status(&self, xid: i64) -> Result<Option<String>, StoreError> {
        let client = self.inner.pool.get().await.map_err(super::connection::pool_error)?;
        let stmt = client.prepare_cached(TXID_STATUS).await.map_err(classify)?;
        client.query_one(&stmt, &[&xid]).await.and_then(|row| row.try_get(0)).map_err(classify)
    }

    /// Deletes at most `batch` idempotency keys remembered before `before_ms`, in one short
    /// statement.
    pub(super) async fn purge_keys_on(client: &mut Object, before_ms: i64, batch: usize) -> Result<u64, Failure> {
        let stmt = client.prepare_cached(PURGE_KEYS).await?;
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        Ok(client.execute(&stmt, &[&before_ms, &batch]).await?)
    }
}
