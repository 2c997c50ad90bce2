//! The SQLite schema, its migrations, and the settings every writing connection runs with.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::connection::{classify, open_error, retry_while_busy};
use crate::store::StoreError;

/// The schema, one migration per entry; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
    -- Partitions: every key also holds the partition ('' for objects outside any partition).
    CREATE TABLE objects_v2 (
        entity      TEXT    NOT NULL,
        partition   TEXT    NOT NULL,
        id          TEXT    NOT NULL,
        last_change INTEGER NOT NULL,
        removed     INTEGER NOT NULL,
        fields      TEXT    NOT NULL,
        PRIMARY KEY (entity, partition, id)
    );
    INSERT INTO objects_v2 SELECT entity, '', id, last_change, removed, fields FROM objects;
    DROP TABLE objects;
    ALTER TABLE objects_v2 RENAME TO objects;
    CREATE INDEX objects_by_change ON objects (entity, partition, last_change);
    CREATE TABLE clocks_v2 (
        entity    TEXT    NOT NULL,
        partition TEXT    NOT NULL,
        last      INTEGER NOT NULL,
        PRIMARY KEY (entity, partition)
    ) WITHOUT ROWID;
    INSERT INTO clocks_v2 SELECT entity, '', last FROM clocks;
    DROP TABLE clocks;
    ALTER TABLE clocks_v2 RENAME TO clocks;
    CREATE TABLE idempotency_v2 (
        entity      TEXT    NOT NULL,
        partition   TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        now         INTEGER NOT NULL,
        fingerprint TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (entity, partition, key)
    ) WITHOUT ROWID;
    INSERT INTO idempotency_v2 SELECT entity, '', key, now, fingerprint, created_ms FROM idempotency;
    DROP TABLE idempotency;
    ALTER TABLE idempotency_v2 RENAME TO idempotency;
    CREATE INDEX idempotency_by_age ON idempotency (created_ms);
"#,
    r#"
    -- The transactional outbox: one row per event and subscription (see store::outbox).
    CREATE TABLE outbox (
        seq             INTEGER PRIMARY KEY,   -- the rowid: pruning never reorders what remains
        subscription    TEXT    NOT NULL,
        event_id        TEXT    NOT NULL,
        entity          TEXT    NOT NULL,
        partition       TEXT    NOT NULL,
        object_id       TEXT    NOT NULL,
        operation       TEXT    NOT NULL,   -- 'upsert' or 'remove'
        object          TEXT,               -- the fields after the change; NULL for a removal
        last_change     INTEGER NOT NULL,
        request_id      TEXT,
        created_ms      INTEGER NOT NULL,
        state           TEXT    NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER,
        lease_token     INTEGER,
        lease_until_ms  INTEGER,
        last_status     INTEGER,
        last_error      TEXT,
        finished_ms     INTEGER
    );
    CREATE INDEX outbox_due ON outbox (subscription, state, seq);
    CREATE INDEX outbox_by_object ON outbox (subscription, entity, partition, object_id, seq);
    CREATE TABLE outbox_attempts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        seq         INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status      INTEGER,
        error       TEXT
    );
    CREATE INDEX outbox_attempts_of ON outbox_attempts (seq, id);
    CREATE TABLE outbox_subscriptions (
        name       TEXT    PRIMARY KEY,
        enabled    INTEGER NOT NULL,
        reason     TEXT,
        changed_ms INTEGER NOT NULL
    );
    CREATE TABLE admin_audit (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms  INTEGER NOT NULL,
        user   TEXT    NOT NULL,
        action TEXT    NOT NULL,
        detail TEXT    NOT NULL
    );
"#,
    r#"
    -- The outbox log: one row per push and subscription that takes it, appended in the push's
    -- transaction; the subscription's stream delivers it (see store::outbox).
    CREATE TABLE outbox_log (
        seq          INTEGER PRIMARY KEY,   -- the rowid: the order pushes committed in
        subscription TEXT    NOT NULL,
        entity       TEXT    NOT NULL,
        partition    TEXT    NOT NULL,
        last_change  INTEGER NOT NULL,
        request_id   TEXT,
        created_ms   INTEGER NOT NULL,
        events_count INTEGER NOT NULL,
        events       BLOB    NOT NULL       -- LZ4 of the JSON [[event_id, object_id, operation, fields], ...]
    );
    CREATE INDEX outbox_log_of ON outbox_log (subscription, seq);
    -- The stream lease: which worker delivers the subscription's log.
    ALTER TABLE outbox_subscriptions ADD COLUMN lease_token INTEGER;
    ALTER TABLE outbox_subscriptions ADD COLUMN lease_until_ms INTEGER;
"#,
    r#"
    -- Tombstone retention: the newest _lastChange of a purged tombstone, per scope (a pull from
    -- before it is answered in full), and the tombstones in the order they are purged.
    ALTER TABLE clocks ADD COLUMN purged_through INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX objects_tombstones ON objects (last_change) WHERE removed = 1;
"#,
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_stored_before_partitions_stay_outside_any_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let v1 = Connection::open(&path).unwrap();
        v1.execute_batch(MIGRATIONS[0]).unwrap();
        v1.execute_batch(
            "INSERT INTO objects VALUES ('Task', 'a', 5, 0, '{\"x\":1}');
             INSERT INTO clocks VALUES ('Task', 5);
             INSERT INTO idempotency VALUES ('Task', 'k', 5, 'f', 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(v1);
        let conn = open_writer(&path, Duration::from_secs(1)).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let row: (String, String, i64, String) = conn
            .query_row("SELECT entity, partition, last_change, fields FROM objects", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(row, ("Task".into(), String::new(), 5, r#"{"x":1}"#.into()));
        let clock: i64 = conn.query_row("SELECT last FROM clocks WHERE partition = ''", [], |r| r.get(0)).unwrap();
        let keys: i64 =
            conn.query_row("SELECT count(*) FROM idempotency WHERE partition = ''", [], |r| r.get(0)).unwrap();
        assert_eq!((clock, keys), (5, 1));
    }
}
