//! The janitors: periodic clean-up of what the store keeps only for a while (idempotency keys,
//! and tombstones when `tombstone_retention_days` is set), each a [`Tasks::every`] job that works
//! in small batches, so that no transaction holds the writer or a lock for long.
//!
//! A purged tombstone moves its scope's purge horizon past it; a pull whose cursor is older than
//! the horizon might miss removals, so it is answered with the whole scope instead (a reset, see
//! docs/PROTOCOL.md).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::Store;
use crate::store::idempotency::expiry_horizon;
use crate::tasks::Tasks;

/// How often expired idempotency keys are purged. Keys count as unknown from the moment they
/// expire, whether purged yet or not.
pub const IDEMPOTENCY_PURGE_PERIOD: Duration = Duration::from_secs(60);

/// Rows one janitor statement deletes at most.
pub const PURGE_BATCH: usize = 1_000;

/// How often tombstones past their retention are purged.
pub const TOMBSTONE_PURGE_PERIOD: Duration = Duration::from_secs(60);

/// Starts the janitor of idempotency keys older than `ttl`, and, when `tombstone_retention` is
/// set, the one of tombstones older than it.
pub fn start(
    tasks: &mut Tasks,
    store: Arc<dyn Store>,
    ttl: Duration,
    tombstone_retention: Option<Duration>,
    clock: Arc<dyn Clock>,
) {
    let (keys, keys_clock) = (Arc::clone(&store), Arc::clone(&clock));
    tasks.every("idempotency-janitor", IDEMPOTENCY_PURGE_PERIOD, move || {
        let (store, clock) = (Arc::clone(&keys), Arc::clone(&keys_clock));
        async move { purge_idempotency_keys(&*store, expiry_horizon(clock.now_ms(), ttl)).await }
    });
    if let Some(retention) = tombstone_retention {
        tasks.every("tombstone-janitor", TOMBSTONE_PURGE_PERIOD, move || {
            let (store, clock) = (Arc::clone(&store), Arc::clone(&clock));
            let before_ms = clock.now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            async move { purge_tombstones(&*store, before_ms).await }
        });
    }
}

/// Deletes every tombstone older than `before_ms`, batch by batch, each batch its own short
/// transaction.
pub async fn purge_tombstones(store: &dyn Store, before_ms: i64) -> Result<(), String> {
    let purged = in_batches(|| store.purge_tombstones(before_ms, PURGE_BATCH)).await?;
    if purged > 0 {
        tracing::info!(purged, "tombstones past their retention purged");
    }
    Ok(())
}

/// Deletes every idempotency key remembered before `before_ms`, batch by batch.
async fn purge_idempotency_keys(store: &dyn Store, before_ms: i64) -> Result<(), String> {
    let purged = in_batches(|| store.purge_idempotency_keys(before_ms, PURGE_BATCH)).await?;
    if purged > 0 {
        tracing::debug!(purged, "expired idempotency keys purged");
    }
    Ok(())
}

/// Runs `batch` until one deletes nothing (a batch may delete fewer than [`PURGE_BATCH`] while
/// more is left: PostgreSQL purges tombstones one scope per batch); returns how many in all.
async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::store::StoreError>>,
{
    let mut purged = 0;
    loop {
        match batch().await.map_err(|e| crate::error::chain(&e))? {
            0 => return Ok(purged),
            n => purged += n,
        }
    }
}
