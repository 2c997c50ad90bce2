//! The SQLite schema, its migrations, and the settings every writing connection runs with.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::connection::{classify, open_error, retry_while_busy};
use crate::store::StoreError;

/// The schema, one migration per entry; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE objects (
        entity      TEXT    NOT NULL,
        id          TEXT    NOT NULL,
        last_change INTEGER NOT NULL,
        removed     INTEGER NOT NULL,
        fields      TEXT    NOT NULL,   -- the JSON object of the fields, '{}' for a tombstone
        PRIMARY KEY (entity, id)
    );
    CREATE INDEX objects_by_change ON objects (entity, last_change);
    CREATE TABLE clocks (
        entity TEXT    PRIMARY KEY,
        last   INTEGER NOT NULL         -- the last timestamp given to a push to this entity
    ) WITHOUT ROWID;
    CREATE TABLE idempotency (
        entity      TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        now         INTEGER NOT NULL,
        fingerprint TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (entity, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_by_age ON idempotency (created_ms);
"#];

/// Opens the writing connection of the file at `path`: WAL, `synchronous = FULL` (every
/// acknowledged push survives a crash or a power loss), pending migrations applied.
pub(super) fn open_writer(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(busy).map_err(|e| open_error(path, e))?;
    // Switching to WAL can answer "busy" at once, without waiting, while another process opens
    // the same file; so can the first migration. Both are retried until the busy timeout.
    retry_while_busy(busy, || {
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
    })
    .map_err(|e| open_error(path, e))?;
    if let Some(newer) = retry_while_busy(busy, || migrate(&mut conn)).map_err(classify)? {
        return Err(StoreError::internal_because(format!(
            "the schema of {} (version {newer}) is newer than this server's (version {})",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    Ok(conn)
}

/// Applies pending migrations. Returns the schema version found when it is newer than this
/// server knows, without touching the database.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Option<usize>> {
    // Under an immediate transaction, so that processes starting at once apply each migration once.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Ok(Some(applied));
    }
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(None)
}
