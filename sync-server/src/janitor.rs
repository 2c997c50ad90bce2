//! The janitors: periodic clean-up of what the store keeps only for a while, each a
//! [`Tasks::every`] job that works in small batches, so that no transaction holds the writer or
//! a lock for long.

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

/// Starts the janitor of idempotency keys older than `ttl`.
pub fn start(tasks: &mut Tasks, store: Arc<dyn Store>, ttl: Duration, clock: Arc<dyn Clock>) {
    tasks.every("idempotency-janitor", IDEMPOTENCY_PURGE_PERIOD, move || {
        let (store, clock) = (Arc::clone(&store), Arc::clone(&clock));
        async move { purge_idempotency_keys(&*store, expiry_horizon(clock.now_ms(), ttl)).await }
    });
}

/// Deletes every idempotency key remembered before `before_ms`, batch by batch.
async fn purge_idempotency_keys(store: &dyn Store, before_ms: i64) -> Result<(), String> {
    let mut purged = 0;
    loop {
        let n = store.purge_idempotency_keys(before_ms, PURGE_BATCH).await.map_err(|e| crate::error::chain(&e))?;
        purged += n;
        if n < PURGE_BATCH as u64 {
            break;
        }
    }
    if purged > 0 {
        tracing::debug!(purged, "expired idempotency keys purged");
    }
    Ok(())
}
