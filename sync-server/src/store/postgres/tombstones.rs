//! Tombstone retention on PostgreSQL (see [`crate::store::Store::purge_tombstones`]): one scope
//! per transaction, its clock row locked first, as a push locks it, so that a purge and the pushes
//! of that scope run one after another (never a deadlock, never a tombstone deleted under a push
//! re-creating it), and an advisory lock so that one instance purges at a time.

use deadpool_postgres::Object;

use super::connection::Failure;

/// The advisory lock of the purge ("sync-tmb" in ASCII).
const PURGE_LOCK: i64 = 0x7379_6e63_2d74_6d62;

/// Deletes at most `batch` tombstones of one scope older than `before_ms`; returns how many (0
/// when none is left, or another instance is purging).
pub(super) async fn purge(client: &mut Object, before_ms: i64, batch: usize) -> Result<u64, Failure> {
    let tx = client.transaction().await?;
    let locked: bool = tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK]).await?.get(0);
    if !locked {
        return Ok(0);
    }
    let scope = tx
        .query_opt(
            "SELECT entity, partition FROM sync_objects WHERE removed AND last_change < $1 ORDER BY last_change LIMIT 1",
            &[&before_ms],
        )
        .await?;
    let Some(scope) = scope else { return Ok(0) };
    let (entity, partition): (String, String) = (scope.get(0), scope.get(1));
    tx.execute("SELECT last FROM sync_clocks WHERE entity = $1 AND partition = $2 FOR UPDATE", &[&entity, &partition])
        .await?;
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let purged: i64 = tx
        .query_one(
            "WITH deleted AS (
                 DELETE FROM sync_objects WHERE ctid IN (
                     SELECT ctid FROM sync_objects
                     WHERE entity = $1 AND partition = $2 AND removed AND last_change < $3
                     ORDER BY last_change LIMIT $4)
                 RETURNING last_change
             ), moved AS (
                 UPDATE sync_clocks SET purged_through = GREATEST(purged_through, (SELECT max(last_change) FROM deleted))
                 WHERE entity = $1 AND partition = $2 AND EXISTS (SELECT 1 FROM deleted)
                 RETURNING 1
             )
             SELECT count(*) FROM deleted",
            &[&entity, &partition, &before_ms, &limit],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(purged as u64)
}
