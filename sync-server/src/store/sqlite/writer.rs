//! The writer thread of the SQLite store: the one connection that writes.
//!
//! Pushes queue for it; it takes every push waiting and commits them as a group: one
//! `BEGIN IMMEDIATE` transaction, each push inside its own savepoint (so each is still applied
//! whole or not at all, and gets its own timestamp), one commit, one `fsync`, then every push of
//! the group is answered. Writers are serialized (also across processes sharing the file, by
//! SQLite's own lock), timestamps are handed out in commit order because only this thread takes
//! them, and under load the cost of durability is shared instead of paid per push.
//!
//! A push's outbox log rows are written after the group's last savepoint, not inside the push's
//! own: every push appends to the same last pages of the log, and inside a savepoint SQLite first
//! copies each page it changes to the sub-journal (to roll that savepoint back), so appending in
//! the savepoints would copy those pages once per push. They are still in the group's transaction
//! (a push commits with its events or not at all), in the pushes' order, and only for the pushes
//! whose savepoint was kept.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::connection::classify;
use crate::clock::Clock;
use crate::store::idempotency::Remembered;
use crate::store::outbox::{Routes, log_events};
use crate::store::push::{self, Found, KeyLookup, ObjectState, PushTx, Writes};
use crate::store::{Push, PushOutcome, Scope, StoreError, run_ready};

/// A commit group takes waiting pushes until it holds this many ...
const GROUP_MAX_PUSHES: usize = 256;
/// ... or this many objects, so that one group's transaction stays short.
const GROUP_MAX_ITEMS: usize = 20_000;
/// Jobs that may wait for the writer before new ones wait to be queued.
pub(super) const QUEUE: usize = 1024;

/// Work for the writer thread, and where to send its outcome.
pub(super) enum Job {
    /// A push, with the span of the request it came from (the writer logs inside it).
    Push { scope: Scope, push: Push, span: tracing::Span, reply: oneshot::Sender<Result<PushOutcome, StoreError>> },
    /// Delete at most `batch` idempotency keys remembered before `before_ms`.
    Purge { before_ms: i64, batch: usize, reply: oneshot::Sender<Result<u64, StoreError>> },
    /// Any other write (the outbox's deliveries and operators' actions), run alone on the
    /// writer's connection; it replies itself.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Stop as if the thread had died (to test what notices a dead writer).
    #[cfg(test)]
    Crash,
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) routes: Arc<Routes>,
}

impl Writer {
    /// Runs jobs until every sender is gone: pushes in commit groups, purges alone.
    pub(super) fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut next = None;
        while let Some(job) = next.take().or_else(|| queue.blocking_recv()) {
            match job {
                Job::Push { scope, push, span, reply } => {
                    let mut items = push.changes.len();
                    let mut group = vec![(scope, push, span, reply)];
                    while group.len() < GROUP_MAX_PUSHES && items < GROUP_MAX_ITEMS {
                        match queue.try_recv() {
                            Ok(Job::Push { scope, push, span, reply }) => {
                                items += push.changes.len();
                                group.push((scope, push, span, reply));
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
                Job::Purge { before_ms, batch, reply } => {
                    let _ = reply.send(self.purge(before_ms, batch));
                }
                Job::Run(job) => job(&mut self.conn),
                #[cfg(test)]
                Job::Crash => return,
            }
        }
    }

    /// Applies each push of the group in its own savepoint and commits them together, then
    /// answers each. A push that fails is rolled back alone; if the commit fails, none is applied.
    fn commit_group(&mut self, group: Vec<GroupedPush>) {
        match self.apply_group(&group) {
            Ok(outcomes) => {
                for ((.., reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), pushes = group.len(), "commit failed; nothing of the group was applied");
                for (.., reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn apply_group(&mut self, group: &[GroupedPush]) -> Result<Vec<Result<PushOutcome, StoreError>>, StoreError> {
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut log = Vec::new();
        for (scope, push, span, _) in group {
            let _request = span.enter();
            let savepoint = tx.savepoint().map_err(classify)?;
            let mut steps = SqliteTx { conn: &savepoint, log: Vec::new() };
            let outcome = run_ready(push::apply(&mut steps, scope, push, &*self.clock, &self.routes));
            let appended = steps.log;
            match &outcome {
                Ok(_) => {
                    savepoint.commit().map_err(classify)?;
                    log.extend(appended);
                }
                Err(e) => tracing::debug!(error = %e, "push rolled back alone"), // as the savepoint drops
            }
            outcomes.push(outcome);
        }
        append_log(&tx, &log)?;
        tx.commit().map_err(classify)?;
        Ok(outcomes)
    }

    fn purge(&mut self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let deleted = self
            .conn
            .execute(
                "DELETE FROM idempotency WHERE (entity, partition, key) IN
                 (SELECT entity, partition, key FROM idempotency WHERE created_ms < ?1 LIMIT ?2)",
                params![before_ms, batch],
            )
            .map_err(classify)?;
        Ok(deleted as u64)
    }
}

/// One push of a commit group, with its request's span and where its outcome goes.
type GroupedPush = (Scope, Push, tracing::Span, oneshot::Sender<Result<PushOutcome, StoreError>>);

/// The steps of [`push::apply`] on the writer's connection, inside the push's savepoint. The
/// group's `BEGIN IMMEDIATE` holds SQLite's write lock: it is the lock of every clock. The push's
/// outbox log rows are kept in `log`, for [`append_log`] once the savepoint is kept.
struct SqliteTx<'c> {
    conn: &'c Connection,
    log: Vec<LogAppend>,
}

/// One outbox log row to append: a push's events for one subscription.
struct LogAppend {
    subscription: String,
    entity: String,
    partition: String,
    last_change: i64,
    request_id: Option<String>,
    created_ms: i64,
    events_count: i64,
    events: Arc<Vec<u8>>,
}

/// Appends `log`'s rows to the outbox log, in order (their `seq` is the order they commit in).
fn append_log(conn: &Connection, log: &[LogAppend]) -> Result<(), StoreError> {
    if log.is_empty() {
        return Ok(());
    }
    let mut append = conn
        .prepare_cached(
            "INSERT INTO outbox_log (subscription, entity, partition, last_change, request_id, created_ms,
                                     events_count, events)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(classify)?;
    for row in log {
        append
            .execute(params![
                row.subscription,
                row.entity,
                row.partition,
                row.last_change,
                row.request_id,
                row.created_ms,
                row.events_count,
                row.events.as_slice()
            ])
            .map_err(classify)?;
    }
    Ok(())
}

impl PushTx for SqliteTx<'_> {
    type Error = StoreError;

    /// The group's transaction already holds the lock: the reads follow at once.
    async fn lock_and_read(
        &mut self,
        scope: &Scope,
        key: Option<KeyLookup<'_>>,
        ids: &[&str],
        versions: bool,
    ) -> Result<(i64, Found), StoreError> {
        let last = super::reads::clock_of(self.conn, scope)?;
        let earlier = match key {
            None => None,
            Some(KeyLookup { key, valid_from_ms }) => self
                .conn
                .prepare_cached(
                    "SELECT now, fingerprint FROM idempotency
                     WHERE entity = ?1 AND partition = ?2 AND key = ?3 AND created_ms >= ?4",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![scope.key(), scope.partition(), key.key(), valid_from_ms], |r| {
                        Ok(Remembered { now: r.get(0)?, fingerprint: r.get(1)? })
                    })
                    .optional()
                })
                .map_err(classify)?,
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT removed, fields, last_change FROM objects WHERE entity = ?1 AND partition = ?2 AND id = ?3",
            )
            .map_err(classify)?;
        let (mut stored, mut found_versions) = (HashMap::new(), HashMap::new());
        for id in ids {
            let row = stmt
                .query_row(params![scope.key(), scope.partition(), id], |r| {
                    Ok((ObjectState::from_row(r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?))
                })
                .optional()
                .map_err(classify)?;
            if let Some((state, last_change)) = row {
                if versions {
                    found_versions.insert((*id).to_owned(), sync_proto::Cursor::from_millis(last_change));
                }
                stored.insert((*id).to_owned(), state);
            }
        }
        Ok((last, Found { earlier, stored, versions: found_versions }))
    }

    async fn write(&mut self, scope: &Scope, writes: &Writes<'_>) -> Result<(), StoreError> {
        let (conn, now) = (self.conn, writes.now);
        conn.prepare_cached(
            "INSERT INTO clocks (entity, partition, last) VALUES (?1, ?2, ?3)
             ON CONFLICT (entity, partition) DO UPDATE SET last = excluded.last",
        )
        .and_then(|mut stmt| stmt.execute(params![scope.key(), scope.partition(), now]))
        .map_err(classify)?;
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO objects (entity, partition, id, last_change, removed, fields)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (entity, partition, id) DO UPDATE
                 SET last_change = excluded.last_change, removed = excluded.removed, fields = excluded.fields",
            )
            .map_err(classify)?;
        for row in writes.rows {
            let (removed, fields) = row.state.columns();
            upsert.execute(params![scope.key(), scope.partition(), row.id, now, removed, fields]).map_err(classify)?;
        }
        if let Some(key) = writes.key {
            // An expired key that was not purged yet is replaced.
            conn.prepare_cached(
                "INSERT INTO idempotency (entity, partition, key, now, fingerprint, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (entity, partition, key) DO UPDATE
                 SET now = excluded.now, fingerprint = excluded.fingerprint, created_ms = excluded.created_ms",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![scope.key(), scope.partition(), key.key(), now, key.fingerprint(), writes.wall_ms])
            })
            .map_err(classify)?;
        }
        if !writes.subscriptions.is_empty() {
            let events = Arc::new(log_events(writes.events));
            self.log.extend(writes.subscriptions.iter().map(|subscription| LogAppend {
                subscription: (*subscription).to_owned(),
                entity: scope.key().to_owned(),
                partition: scope.partition().to_owned(),
                last_change: now,
                request_id: writes.request_id.map(str::to_owned),
                created_ms: writes.wall_ms,
                events_count: writes.events.len() as i64,
                events: Arc::clone(&events),
            }));
        }
        Ok(())
    }
}
