//! The console's reads on the PostgreSQL store (see [`crate::store::dashboard`]): each in a
//! read-only transaction whose statements run under `SET LOCAL statement_timeout`.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::error::SqlState;

use super::PostgresStore;
use super::connection::{DbError, Failure, with_connection};
use super::outbox::{count_events, select_events, subscription_stats};
use crate::store::StoreError;
use crate::store::dashboard::{Dashboard, EntityStats, Overview, StreamLease, timed_out};
use crate::store::outbox::{EventFilter, EventRow};

/// Runs `$op` (an expression using the transaction `$tx`, giving `Result<_, Failure>`) in a
/// read-only transaction of a pooled connection, its statements stopped after `$timeout` (the
/// session's own `statement_timeout` when zero).
macro_rules! within {
    ($store:expr, $timeout:expr, |$tx:ident| $op:expr) => {{
        let timeout: Duration = $timeout;
        with_connection(&$store.inner.pool, |mut client| async move {
            let outcome: Result<_, Failure> = async {
                let $tx = client.build_transaction().read_only(true).start().await?;
                if !timeout.is_zero() {
                    $tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", timeout.as_millis())).await?;
                }
                let value = $op?;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            (client, outcome)
        })
        .await
        .map(|(_, value)| value)
        .map_err(|failure| past_deadline(failure, timeout))
    }};
}

/// The error of a failed console read: a statement cancelled by the statement timeout says so.
fn past_deadline(failure: Failure, timeout: Duration) -> StoreError {
    let error = failure.into_store_error();
    let cancelled = match &error {
        StoreError::Unavailable { cause: Some(cause), .. } => {
            cause.downcast_ref::<DbError>().is_some_and(|e| e.code == Some(SqlState::QUERY_CANCELED))
        }
        _ => false,
    };
    if cancelled { timed_out(timeout, error) } else { error }
}

#[async_trait]
impl Dashboard for PostgresStore {
    async fn overview(&self, names: &[String], timeout: Duration) -> Result<Overview, StoreError> {
        within!(self, timeout, |tx| async {
            let entities = tx
                .query(
                    "SELECT entity, count(*) FILTER (WHERE NOT removed), count(*) FILTER (WHERE removed),
                            max(last_change), count(DISTINCT partition)
                     FROM sync_objects GROUP BY entity ORDER BY entity",
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(EntityStats {
                        entity: r.try_get(0)?,
                        objects: r.try_get(1)?,
                        tombstones: r.try_get(2)?,
                        latest_change: r.try_get(3)?,
                        partitions: r.try_get(4)?,
                    })
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let leases = tx
                .query("SELECT name, lease_token, lease_until_ms FROM sync_outbox_subscriptions ORDER BY name", &[])
                .await?
                .iter()
                .map(|r| {
                    Ok(StreamLease { subscription: r.try_get(0)?, holder: r.try_get(1)?, until_ms: r.try_get(2)? })
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let subscriptions = subscription_stats(&tx, names).await?;
            Ok::<_, Failure>(Overview { entities, subscriptions, leases })
        }
        .await)
    }

    async fn events_within(
        &self,
        filter: &EventFilter,
        before_seq: Option<i64>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<EventRow>, StoreError> {
        within!(self, timeout, |tx| select_events(&tx, filter, before_seq, limit).await)
    }

    async fn count_within(&self, filter: &EventFilter, timeout: Duration) -> Result<u64, StoreError> {
        within!(self, timeout, |tx| count_events(&tx, filter).await)
    }
}
