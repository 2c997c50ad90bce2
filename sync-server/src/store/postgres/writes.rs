//! Writes of the PostgreSQL store: the steps of [`push::apply`] in SQL, the commit, and what to
//! answer when the connection is lost during `COMMIT`.
//!
//! The clock row lock (`SELECT ... FOR UPDATE`) orders a push after every other push to its
//! scope, from any instance; every read after it is a later statement, so it sees what those
//! pushes committed. All writes of a push are one statement.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Transaction};
use futures_util::future::try_join;
use sync_proto::Cursor;
use tokio_postgres::types::ToSql;

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

/// The steps of [`push::apply`] in one PostgreSQL transaction.
struct PgTx<'t> {
    tx: &'t Transaction<'t>,
    /// The transaction's id, learnt with the clock lock: what to ask about if `COMMIT` is lost.
    xid: i64,
}

impl PushTx for PgTx<'_> {
    type Error = Failure;

    async fn lock_clock(&mut self, scope: &Scope) -> Result<i64, Failure> {
        let lock = self.tx.prepare_cached(LOCK_CLOCK).await?;
        let row = match self.tx.query_opt(&lock, &[&scope.key(), &scope.partition()]).await? {
            Some(row) => row,
            None => {
                // The first push to this scope: create its clock, then lock it like any other.
                let create = self.tx.prepare_cached(CREATE_CLOCK).await?;
                self.tx.execute(&create, &[&scope.key(), &scope.partition()]).await?;
                self.tx.query_one(&lock, &[&scope.key(), &scope.partition()]).await?
            }
        };
        self.xid = row.try_get(1)?;
        Ok(row.try_get(0)?)
    }

    async fn read(
        &mut self,
        scope: &Scope,
        key: Option<KeyLookup<'_>>,
        ids: &[&str],
        versions: bool,
    ) -> Result<Found, Failure> {
        let (earlier, (stored, found_versions)) =
            try_join(remembered(self.tx, scope, key), load_objects(self.tx, scope, ids, versions)).await?;
        Ok(Found { earlier, stored, versions: found_versions })
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

/// The push remembered under `key` (still valid at its horizon), if any.
async fn remembered(
    tx: &Transaction<'_>,
    scope: &Scope,
    key: Option<KeyLookup<'_>>,
) -> Result<Option<Remembered>, Failure> {
    let Some(KeyLookup { key, valid_from_ms }) = key else { return Ok(None) };
    let stmt = tx.prepare_cached(FIND_KEY).await?;
    match tx.query_opt(&stmt, &[&scope.key(), &scope.partition(), &key.key(), &valid_from_ms]).await? {
        Some(row) => Ok(Some(Remembered { now: row.try_get(0)?, fingerprint: row.try_get(1)? })),
        None => Ok(None),
    }
}

/// What is stored for `ids` (ids not returned are absent), with each one's `_lastChange` when
/// `versions`.
async fn load_objects(
    tx: &Transaction<'_>,
    scope: &Scope,
    ids: &[&str],
    versions: bool,
) -> Result<(HashMap<String, ObjectState>, HashMap<String, Cursor>), Failure> {
    let (mut stored, mut found_versions) = (HashMap::with_capacity(ids.len()), HashMap::new());
    if ids.is_empty() {
        return Ok((stored, found_versions));
    }
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
    let stmt = tx.prepare_cached(LOAD_OBJECTS).await?;
    for row in tx.query(&stmt, &[&scope.key(), &scope.partition(), &keys]).await? {
        let id = super::reads::stored_id(row.try_get(0)?)?;
        if versions {
            found_versions.insert(id.clone(), Cursor::from_millis(row.try_get(3)?));
        }
        stored.insert(id, ObjectState::from_row(row.try_get(1)?, row.try_get(2)?));
    }
    Ok((stored, found_versions))
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
