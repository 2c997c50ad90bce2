//! Tombstone retention on SQLite: the oldest tombstones deleted in one short transaction of the
//! writer's connection, and each scope's purge horizon moved past them (see
//! [`crate::store::Store::purge_tombstones`]). The writer commits pushes one group at a time, so
//! no push runs while a purge does: a tombstone re-created meanwhile is live again when the purge
//! looks, and is not deleted.

use std::collections::HashMap;

use rusqlite::{Connection, TransactionBehavior, params};

use super::connection::classify;
use crate::store::StoreError;

/// Deletes at most `batch` tombstones older than `before_ms`, oldest first; returns how many.
pub(super) fn purge(conn: &mut Connection, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
    let doomed: Vec<(String, String, String, i64)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT entity, partition, id, last_change FROM objects
                 WHERE removed = 1 AND last_change < ?1 ORDER BY last_change LIMIT ?2",
            )
            .map_err(classify)?;
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        stmt.query_map(params![before_ms, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(Iterator::collect)
            .map_err(classify)?
    };
    let mut horizons: HashMap<(&str, &str), i64> = HashMap::new();
    {
        let mut delete = tx
            .prepare_cached("DELETE FROM objects WHERE entity = ?1 AND partition = ?2 AND id = ?3 AND removed = 1")
            .map_err(classify)?;
        for (entity, partition, id, last_change) in &doomed {
            delete.execute(params![entity, partition, id]).map_err(classify)?;
            let horizon = horizons.entry((entity, partition)).or_default();
            *horizon = (*horizon).max(*last_change);
        }
        let mut advance = tx
            .prepare_cached(
                "UPDATE clocks SET purged_through = max(purged_through, ?3) WHERE entity = ?1 AND partition = ?2",
            )
            .map_err(classify)?;
        for ((entity, partition), horizon) in &horizons {
            advance.execute(params![entity, partition, horizon]).map_err(classify)?;
        }
    }
    tx.commit().map_err(classify)?;
    Ok(doomed.len() as u64)
}
