//! The sync bookkeeping kept beside the app's tables, in the same SQLite file:
//!
//! - `_sync_meta`: the local change counter (and the bookkeeping format version). Every local
//!   write takes the next counter value in the same transaction as the write, so "changed since"
//!   never depends on the wall clock, which may jump.
//! - `_sync_rows`: per object, whether it has local changes not yet pushed (`dirty_seq`, the
//!   counter value of its last local write), whether it was removed locally (a tombstone), and its
//!   base version: the server's `_lastChange` and field values it was last synced at, which the
//!   three-way merge compares both sides with.
//! - `_sync_cursors`: per entity, the `now` of the last pulled page.
//! - `_sync_pending`: per entity, the push being sent, with its idempotency key, recorded before
//!   it is sent so that after a crash or a lost answer the same push is sent again under the same
//!   key.
//! - `_sync_fields`: the declared type of each field, so a changed type is noticed.
//! - `_sync_outcome`: when the last sync succeeded, and the error of the last one if it failed
//!   after that, for the sync status of a process that starts later. Older clients leave it alone.
//!
//! Functions here run inside a transaction the caller holds.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sync_proto::FieldType;

use crate::error::StoreError;
use crate::schema::{EntityDef, Fields};
use crate::store;

/// The bookkeeping tables; every statement is idempotent.
const BOOKKEEPING: &str = "
    CREATE TABLE IF NOT EXISTS _sync_meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO _sync_meta (key, value) VALUES ('change_counter', 0), ('format', 2);
    CREATE TABLE IF NOT EXISTS _sync_fields (
        entity TEXT NOT NULL,
        field  TEXT NOT NULL,
        type   TEXT NOT NULL,
        PRIMARY KEY (entity, field)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _sync_rows (
        entity           TEXT    NOT NULL,
        id               TEXT    NOT NULL,
        dirty_seq        INTEGER,             -- NULL: no local change to push
        local_removed    INTEGER NOT NULL DEFAULT 0,
        base_state       INTEGER NOT NULL DEFAULT 0,  -- 0 unknown, 1 live, 2 removed, 3 live as the local row
        base_last_change INTEGER,
        base_fields      TEXT,                -- JSON object, when base_state = 1
        PRIMARY KEY (entity, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS _sync_rows_dirty ON _sync_rows (entity, dirty_seq) WHERE dirty_seq IS NOT NULL;
    CREATE TABLE IF NOT EXISTS _sync_cursors (
        entity TEXT PRIMARY KEY,
        since  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _sync_set_aside (
        entity TEXT NOT NULL,
        key    TEXT NOT NULL,                 -- the object's id, or its text when it has none
        id     TEXT,
        raw    TEXT NOT NULL,                 -- the update as received
        reason TEXT NOT NULL,
        PRIMARY KEY (entity, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _sync_outcome (
        key         INTEGER PRIMARY KEY CHECK (key = 1),
        synced_at   INTEGER,                  -- ms since the epoch; NULL: never
        failed_at   INTEGER,                  -- NULL: the last sync succeeded
        error       TEXT,
        retryable   INTEGER,
        unreachable INTEGER
    );
    CREATE TABLE IF NOT EXISTS _sync_pending (
        entity   TEXT PRIMARY KEY,
        key      TEXT    NOT NULL,
        body     TEXT    NOT NULL,
        captured INTEGER NOT NULL             -- the change counter when the push was built
    ) WITHOUT ROWID;
";

/// The bookkeeping format this code reads and writes. Format 2 added base state 3 (a clean object
/// whose base is its local row, stored once); format 1 files are upgraded when opened, and a
/// client that reads only format 1 refuses the file instead of misreading it.
const FORMAT: i64 = 2;

/// Creates the bookkeeping tables if needed and checks their format.
pub(crate) fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(BOOKKEEPING).map_err(StoreError::sqlite("creating the sync tables"))?;
    let format: i64 = conn
        .query_row("SELECT value FROM _sync_meta WHERE key = 'format'", [], |r| r.get(0))
        .map_err(StoreError::sqlite("reading the sync format"))?;
    match format {
        FORMAT => Ok(()),
        1 => conn
            .execute("UPDATE _sync_meta SET value = ?1 WHERE key = 'format'", [FORMAT])
            .map(drop)
            .map_err(StoreError::sqlite("upgrading the sync format")),
        other => Err(StoreError::Corrupt(format!("sync tables have format {other}, this client reads {FORMAT}"))),
    }
}

/// The declared type recorded for a field, if it was declared before.
pub(crate) fn recorded_type(conn: &Connection, entity: &str, field: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT type FROM _sync_fields WHERE entity = ?1 AND field = ?2", params![entity, field], |r| {
        r.get(0)
    })
    .optional()
    .map_err(StoreError::sqlite("reading declared fields"))
}

/// Records the declared type of a field.
pub(crate) fn record_type(conn: &Connection, entity: &str, field: &str, ty: FieldType) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _sync_fields (entity, field, type) VALUES (?1, ?2, ?3)
         ON CONFLICT (entity, field) DO UPDATE SET type = excluded.type",
        params![entity, field, ty.as_str()],
    )
    .map(drop)
    .map_err(StoreError::sqlite("recording declared fields"))
}

/// Takes the next value of the local change counter.
pub(crate) fn next_seq(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("UPDATE _sync_meta SET value = value + 1 WHERE key = 'change_counter' RETURNING value")
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
        .map_err(StoreError::sqlite("advancing the change counter"))
}

/// The current value of the local change counter: every local write so far has a value at most this.
pub(crate) fn current_seq(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT value FROM _sync_meta WHERE key = 'change_counter'", [], |r| r.get(0))
        .map_err(StoreError::sqlite("reading the change counter"))
}

/// The version of an object this device last knew the server to have.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Base {
    /// Never synced: created locally and not acknowledged yet.
    Unknown,
    /// A live object with these (declared, normalized) fields.
    Live {
        /// The server's `_lastChange` of that version, when the server sent one.
        last_change: Option<i64>,
        /// Its field values.
        fields: Fields,
    },
    /// Removed on the server.
    Removed {
        /// The server's `_lastChange` of the removal, when the server sent one.
        last_change: Option<i64>,
    },
}

impl Base {
    /// The server's `_lastChange` of this version.
    pub(crate) fn last_change(&self) -> Option<i64> {
        match self {
            Self::Unknown => None,
            Self::Live { last_change, .. } | Self::Removed { last_change } => *last_change,
        }
    }

    /// The fields of a live base.
    pub(crate) fn fields(&self) -> Option<&Fields> {
        match self {
            Self::Live { fields, .. } => Some(fields),
            _ => None,
        }
    }
}

/// The bookkeeping of one object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowState {
    /// The change counter of the last local write not yet pushed; `None` when clean.
    pub(crate) dirty_seq: Option<i64>,
    /// Whether the object was removed locally (its table row is gone; this is its tombstone).
    pub(crate) local_removed: bool,
    /// The version last synced.
    pub(crate) base: Base,
}

/// A `_sync_rows` row as stored: dirty_seq, local_removed, base_state, base_last_change, base_fields.
type RawRow = (Option<i64>, bool, i64, Option<i64>, Option<String>);

/// The base states as stored.
const UNKNOWN: i64 = 0;
const LIVE: i64 = 1;
const REMOVED: i64 = 2;
/// Live, with the fields of the object's local row (which has no local change): the base of
/// every object a sync brought and nothing changed since, kept without a second copy.
const LIVE_AS_LOCAL: i64 = 3;

/// The bookkeeping of one object, if it has any.
pub(crate) fn row_state(conn: &Connection, def: &EntityDef, id: &str) -> Result<Option<RowState>, StoreError> {
    let entity = def.name.as_str();
    let raw: Option<RawRow> = conn
        .prepare_cached(
            "SELECT dirty_seq, local_removed, base_state, base_last_change, base_fields
             FROM _sync_rows WHERE entity = ?1 AND id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![entity, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .optional()
        })
        .map_err(StoreError::sqlite("reading sync state"))?;
    let Some((dirty_seq, local_removed, state, last_change, fields)) = raw else { return Ok(None) };
    let base = match (state, fields) {
        (UNKNOWN, _) => Base::Unknown,
        (LIVE, Some(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(fields)) => Base::Live { last_change, fields },
            _ => return Err(StoreError::Corrupt(format!("base version of {entity} {id:?} is not a JSON object"))),
        },
        (REMOVED, _) => Base::Removed { last_change },
        // A local row removed behind the store's back leaves nothing known of the base.
        (LIVE_AS_LOCAL, _) => match store::read_row(conn, def, id)? {
            Some(fields) => Base::Live { last_change, fields },
            None => Base::Unknown,
        },
        (other, _) => return Err(StoreError::Corrupt(format!("base state {other} of {entity} {id:?}"))),
    };
    Ok(Some(RowState { dirty_seq, local_removed, base }))
}

/// What a pulled version is checked against first, read without the base itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowHead {
    /// The counter value of the object's last local change not pushed; `None` when clean.
    pub(crate) dirty_seq: Option<i64>,
    /// The base's `_lastChange`.
    pub(crate) last_change: Option<i64>,
}

/// The [`RowHead`] of an object, if it has bookkeeping.
pub(crate) fn row_head(conn: &Connection, entity: &str, id: &str) -> Result<Option<RowHead>, StoreError> {
    conn.prepare_cached("SELECT dirty_seq, base_last_change FROM _sync_rows WHERE entity = ?1 AND id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![entity, id], |r| Ok(RowHead { dirty_seq: r.get(0)?, last_change: r.get(1)? }))
                .optional()
        })
        .map_err(StoreError::sqlite("reading sync state"))
}

/// Records that an object has no local change and its base is its local row, as the server
/// sent it at `last_change`.
pub(crate) fn set_synced(
    conn: &Connection,
    entity: &str,
    id: &str,
    last_change: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO _sync_rows (entity, id, dirty_seq, local_removed, base_state, base_last_change, base_fields)
         VALUES (?1, ?2, NULL, 0, 3, ?3, NULL)
         ON CONFLICT (entity, id) DO UPDATE SET dirty_seq = NULL, local_removed = 0, base_state = 3,
             base_last_change = excluded.base_last_change, base_fields = NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![entity, id, last_change]))
    .map(drop)
    .map_err(StoreError::sqlite("writing sync state"))
}

/// [`set_synced`] for an object this device has no bookkeeping of (the common case of a first
/// sync); returns `false`, writing nothing, when it has some.
pub(crate) fn insert_synced(
    conn: &Connection,
    entity: &str,
    id: &str,
    last_change: Option<i64>,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "INSERT INTO _sync_rows (entity, id, dirty_seq, local_removed, base_state, base_last_change, base_fields)
         VALUES (?1, ?2, NULL, 0, 3, ?3, NULL) ON CONFLICT (entity, id) DO NOTHING",
    )
    .and_then(|mut stmt| stmt.execute(params![entity, id, last_change]))
    .map(|inserted| inserted == 1)
    .map_err(StoreError::sqlite("writing sync state"))
}

/// Before a local write creates, changes or removes an object's row: a base kept as the local row
/// is copied out, so the write does not change the base with it. Where the row is gone (removed
/// behind the store's back), nothing is known of the base, nor of its `_lastChange`.
pub(crate) fn keep_base(conn: &Connection, def: &EntityDef, id: &str) -> Result<(), StoreError> {
    let entity = def.name.as_str();
    let state: Option<i64> = conn
        .prepare_cached("SELECT base_state FROM _sync_rows WHERE entity = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.query_row(params![entity, id], |r| r.get(0)).optional())
        .map_err(StoreError::sqlite("reading sync state"))?;
    if state != Some(LIVE_AS_LOCAL) {
        return Ok(());
    }
    let (code, fields, known) = match store::read_row(conn, def, id)? {
        // Serializing a map of JSON values to a string cannot fail.
        Some(fields) => (LIVE, Some(serde_json::to_string(&fields).unwrap_or_default()), true),
        None => (UNKNOWN, None, false),
    };
    conn.prepare_cached(
        "UPDATE _sync_rows SET base_state = ?3, base_fields = ?4,
             base_last_change = CASE WHEN ?5 THEN base_last_change END
         WHERE entity = ?1 AND id = ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![entity, id, code, fields, known]))
    .map(drop)
    .map_err(StoreError::sqlite("writing sync state"))
}

/// Writes the bookkeeping of one object.
pub(crate) fn set_row_state(conn: &Connection, entity: &str, id: &str, state: &RowState) -> Result<(), StoreError> {
    let (code, last_change, fields) = match &state.base {
        Base::Unknown => (UNKNOWN, None, None),
        Base::Live { last_change, fields } => {
            // Serializing a map of JSON values to a string cannot fail.
            (LIVE, *last_change, Some(serde_json::to_string(fields).unwrap_or_default()))
        }
        Base::Removed { last_change } => (REMOVED, *last_change, None),
    };
    conn.prepare_cached(
        "INSERT INTO _sync_rows (entity, id, dirty_seq, local_removed, base_state, base_last_change, base_fields)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (entity, id) DO UPDATE SET dirty_seq = excluded.dirty_seq,
             local_removed = excluded.local_removed, base_state = excluded.base_state,
             base_last_change = excluded.base_last_change, base_fields = excluded.base_fields",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![entity, id, state.dirty_seq, state.local_removed, code, last_change, fields])
    })
    .map(drop)
    .map_err(StoreError::sqlite("writing sync state"))
}

/// Forgets the bookkeeping of one object (it is removed on both sides, nothing left to push).
pub(crate) fn delete_row_state(conn: &Connection, entity: &str, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM _sync_rows WHERE entity = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.execute(params![entity, id]))
        .map(drop)
        .map_err(StoreError::sqlite("deleting sync state"))
}

/// Records a local write of an object: takes the next counter value and marks the object dirty
/// with it, as a live object or, when `removed`, as a tombstone. The base version is kept.
pub(crate) fn record_local_write(conn: &Connection, entity: &str, id: &str, removed: bool) -> Result<(), StoreError> {
    let seq = next_seq(conn)?;
    conn.prepare_cached(
        "INSERT INTO _sync_rows (entity, id, dirty_seq, local_removed) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (entity, id) DO UPDATE SET dirty_seq = excluded.dirty_seq, local_removed = excluded.local_removed",
    )
    .and_then(|mut stmt| stmt.execute(params![entity, id, seq, removed]))
    .map(drop)
    .map_err(StoreError::sqlite("recording a local change"))
}

/// Up to `limit` objects of `entity` with local changes made at or before counter value `upto`,
/// oldest change first.
pub(crate) fn dirty_rows(conn: &Connection, entity: &str, upto: i64, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id FROM _sync_rows WHERE entity = ?1 AND dirty_seq IS NOT NULL AND dirty_seq <= ?2
             ORDER BY dirty_seq LIMIT ?3",
        )
        .map_err(StoreError::sqlite("listing local changes"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![entity, upto, limit], |r| r.get(0))
        .map_err(StoreError::sqlite("listing local changes"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite("listing local changes"))
}

/// How many objects of `entity` have local changes not yet pushed.
pub(crate) fn dirty_count(conn: &Connection, entity: &str) -> Result<usize, StoreError> {
    conn.query_row("SELECT count(*) FROM _sync_rows WHERE entity = ?1 AND dirty_seq IS NOT NULL", [entity], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| usize::try_from(n).unwrap_or(0))
    .map_err(StoreError::sqlite("counting local changes"))
}

/// The cursor to pull `entity` from: the `now` of its last pulled page, 0 at first.
pub(crate) fn cursor(conn: &Connection, entity: &str) -> Result<i64, StoreError> {
    conn.query_row("SELECT since FROM _sync_cursors WHERE entity = ?1", [entity], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(StoreError::sqlite("reading the cursor"))
}

/// Stores the cursor to pull `entity` from next.
pub(crate) fn set_cursor(conn: &Connection, entity: &str, since: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _sync_cursors (entity, since) VALUES (?1, ?2)
         ON CONFLICT (entity) DO UPDATE SET since = excluded.since",
        params![entity, since],
    )
    .map(drop)
    .map_err(StoreError::sqlite("storing the cursor"))
}

/// A push recorded before sending, until the server acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingPush {
    /// The idempotency key it is sent under, every time.
    pub(crate) key: String,
    /// The exact body, so that a re-send is byte for byte the same request.
    pub(crate) body: String,
    /// The change counter when it was built: objects changed after it stay dirty when it is
    /// acknowledged.
    pub(crate) captured: i64,
}

/// The push of `entity` waiting for an acknowledgement, if any.
pub(crate) fn pending(conn: &Connection, entity: &str) -> Result<Option<PendingPush>, StoreError> {
    conn.query_row("SELECT key, body, captured FROM _sync_pending WHERE entity = ?1", [entity], |r| {
        Ok(PendingPush { key: r.get(0)?, body: r.get(1)?, captured: r.get(2)? })
    })
    .optional()
    .map_err(StoreError::sqlite("reading the pending push"))
}

/// Records the push of `entity` about to be sent.
pub(crate) fn set_pending(conn: &Connection, entity: &str, push: &PendingPush) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _sync_pending (entity, key, body, captured) VALUES (?1, ?2, ?3, ?4)",
        params![entity, push.key, push.body, push.captured],
    )
    .map(drop)
    .map_err(StoreError::sqlite("recording the pending push"))
}

/// Forgets the pending push of `entity` (acknowledged, or refused by the server as invalid).
pub(crate) fn clear_pending(conn: &Connection, entity: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM _sync_pending WHERE entity = ?1", [entity])
        .map(drop)
        .map_err(StoreError::sqlite("clearing the pending push"))
}

/// Keeps a pulled update that cannot be applied, replacing an earlier one of the same object.
pub(crate) fn set_aside(
    conn: &Connection,
    entity: &str,
    id: Option<&str>,
    raw: &str,
    reason: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO _sync_set_aside (entity, key, id, raw, reason) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (entity, key) DO UPDATE SET raw = excluded.raw, reason = excluded.reason",
    )
    .and_then(|mut stmt| stmt.execute(params![entity, id.unwrap_or(raw), id, raw, reason]))
    .map_err(StoreError::sqlite("setting an object aside"))?;
    Ok(())
}

/// Whether any update of `entity` is set aside (so that applying a page asks once, not once per
/// object).
pub(crate) fn any_aside(conn: &Connection, entity: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM _sync_set_aside WHERE entity = ?1)")
        .and_then(|mut stmt| stmt.query_row(params![entity], |r| r.get(0)))
        .map_err(StoreError::sqlite("reading the objects set aside"))
}

/// Forgets the update of `id` set aside, once a version of it was applied.
pub(crate) fn clear_aside(conn: &Connection, entity: &str, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM _sync_set_aside WHERE entity = ?1 AND key = ?2")
        .and_then(|mut stmt| stmt.execute(params![entity, id]))
        .map_err(StoreError::sqlite("forgetting an object set aside"))?;
    Ok(())
}

/// The updates of `entity` set aside, by id.
pub(crate) fn set_aside_of(
    conn: &Connection,
    entity: &str,
) -> Result<Vec<(Option<String>, String, String)>, StoreError> {
    let read = StoreError::sqlite("reading the objects set aside");
    let mut stmt = conn
        .prepare_cached("SELECT id, raw, reason FROM _sync_set_aside WHERE entity = ?1 ORDER BY key")
        .map_err(read)?;
    let rows = stmt
        .query_map(params![entity], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(StoreError::sqlite("reading the objects set aside"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite("reading the objects set aside"))
}

/// The error of a failed sync, as kept in `_sync_outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutcomeError {
    pub(crate) message: String,
    pub(crate) retryable: bool,
    pub(crate) unreachable: bool,
    /// Milliseconds since the epoch.
    pub(crate) at: i64,
}

/// The outcome of the last syncs, as kept in `_sync_outcome`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// When a sync last succeeded, in milliseconds since the epoch.
    pub(crate) synced_at: Option<i64>,
    /// The error of the last sync, when it failed.
    pub(crate) error: Option<OutcomeError>,
}

/// Keeps the outcome of a sync that ended at `now`: a success clears the last error.
pub(crate) fn record_outcome(conn: &Connection, now: i64, error: Option<&OutcomeError>) -> Result<(), StoreError> {
    let result = match error {
        None => conn.execute(
            "INSERT INTO _sync_outcome (key, synced_at) VALUES (1, ?1)
             ON CONFLICT (key) DO UPDATE SET synced_at = excluded.synced_at,
                 failed_at = NULL, error = NULL, retryable = NULL, unreachable = NULL",
            [now],
        ),
        Some(e) => conn.execute(
            "INSERT INTO _sync_outcome (key, failed_at, error, retryable, unreachable) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET failed_at = excluded.failed_at, error = excluded.error,
                 retryable = excluded.retryable, unreachable = excluded.unreachable",
            params![e.at, e.message, e.retryable, e.unreachable],
        ),
    };
    result.map(drop).map_err(StoreError::sqlite("recording the outcome of a sync"))
}

/// The outcome of the last syncs.
pub(crate) fn outcome(conn: &Connection) -> Result<Outcome, StoreError> {
    conn.query_row("SELECT synced_at, failed_at, error, retryable, unreachable FROM _sync_outcome", [], |r| {
        let error = match (r.get::<_, Option<i64>>(1)?, r.get::<_, Option<String>>(2)?) {
            (Some(at), Some(message)) => Some(OutcomeError {
                message,
                retryable: r.get::<_, Option<bool>>(3)?.unwrap_or(false),
                unreachable: r.get::<_, Option<bool>>(4)?.unwrap_or(false),
                at,
            }),
            _ => None,
        };
        Ok(Outcome { synced_at: r.get(0)?, error })
    })
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(StoreError::sqlite("reading the outcome of the last sync"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        init(&conn).unwrap();
        conn.execute_batch(r#"CREATE TABLE "Todo" ("id" TEXT PRIMARY KEY NOT NULL, "t" TEXT)"#).unwrap();
        conn
    }

    fn todo() -> EntityDef {
        let schema = crate::schema::Schema::new([crate::Entity::new("Todo").field("t", FieldType::Text)]).unwrap();
        schema.entities()[0].clone()
    }

    #[test]
    fn a_synced_base_is_the_local_row_until_a_local_write_copies_it_out() {
        let conn = conn();
        conn.execute(r#"INSERT INTO "Todo" VALUES ('a', 'x')"#, []).unwrap();
        set_synced(&conn, "Todo", "a", Some(7)).unwrap();
        let synced = Base::Live { last_change: Some(7), fields: json!({"t": "x"}).as_object().unwrap().clone() };
        let state = row_state(&conn, &todo(), "a").unwrap().unwrap();
        assert_eq!((state.dirty_seq, &state.base), (None, &synced));
        let stored: Option<String> =
            conn.query_row("SELECT base_fields FROM _sync_rows WHERE id = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, None, "the base is not stored a second time");

        keep_base(&conn, &todo(), "a").unwrap();
        conn.execute(r#"UPDATE "Todo" SET "t" = 'y' WHERE "id" = 'a'"#, []).unwrap();
        record_local_write(&conn, "Todo", "a", false).unwrap();
        let state = row_state(&conn, &todo(), "a").unwrap().unwrap();
        assert_eq!((state.dirty_seq, state.base), (Some(1), synced), "the local write left the base as it was");
    }

    #[test]
    fn an_object_created_where_a_synced_row_had_gone_has_no_known_base() {
        let conn = conn();
        set_synced(&conn, "Todo", "b", Some(7)).unwrap();
        keep_base(&conn, &todo(), "b").unwrap();
        conn.execute(r#"INSERT INTO "Todo" VALUES ('b', 'new')"#, []).unwrap();
        record_local_write(&conn, "Todo", "b", false).unwrap();
        let state = row_state(&conn, &todo(), "b").unwrap().unwrap();
        assert_eq!((state.dirty_seq, state.base), (Some(1), Base::Unknown));
        let head = row_head(&conn, "Todo", "b").unwrap().unwrap();
        assert_eq!(head.last_change, None, "nothing is known of the old version either");
    }

    #[test]
    fn a_format_1_file_is_upgraded_and_a_later_format_refused() {
        let conn = conn();
        conn.execute("UPDATE _sync_meta SET value = 1 WHERE key = 'format'", []).unwrap();
        init(&conn).unwrap();
        let format: i64 =
            conn.query_row("SELECT value FROM _sync_meta WHERE key = 'format'", [], |r| r.get(0)).unwrap();
        assert_eq!(format, FORMAT);
        conn.execute("UPDATE _sync_meta SET value = 3 WHERE key = 'format'", []).unwrap();
        assert!(matches!(init(&conn), Err(StoreError::Corrupt(reason)) if reason.contains("format 3")));
    }

    #[test]
    fn counter_increases_with_every_local_write() {
        let conn = conn();
        assert_eq!(current_seq(&conn).unwrap(), 0);
        record_local_write(&conn, "Todo", "a", false).unwrap();
        record_local_write(&conn, "Todo", "b", false).unwrap();
        record_local_write(&conn, "Todo", "a", true).unwrap();
        assert_eq!(current_seq(&conn).unwrap(), 3);
        let a = row_state(&conn, &todo(), "a").unwrap().unwrap();
        assert_eq!((a.dirty_seq, a.local_removed, a.base), (Some(3), true, Base::Unknown));
        assert_eq!(dirty_rows(&conn, "Todo", 2, 10).unwrap(), vec!["b".to_owned()]);
        assert_eq!(dirty_rows(&conn, "Todo", 3, 10).unwrap(), vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(dirty_count(&conn, "Todo").unwrap(), 2);
    }

    #[test]
    fn local_write_keeps_the_base_version() {
        let conn = conn();
        let base = Base::Live { last_change: Some(7), fields: json!({"t": "x"}).as_object().unwrap().clone() };
        set_row_state(&conn, "Todo", "a", &RowState { dirty_seq: None, local_removed: false, base: base.clone() })
            .unwrap();
        record_local_write(&conn, "Todo", "a", false).unwrap();
        let state = row_state(&conn, &todo(), "a").unwrap().unwrap();
        assert_eq!(state.base, base);
        assert_eq!(state.dirty_seq, Some(1));
    }

    #[test]
    fn one_pending_push_per_entity_until_cleared() {
        let conn = conn();
        let push = PendingPush { key: "k".into(), body: "[]".into(), captured: 4 };
        set_pending(&conn, "Todo", &push).unwrap();
        assert!(set_pending(&conn, "Todo", &push).is_err());
        assert_eq!(pending(&conn, "Todo").unwrap(), Some(push));
        clear_pending(&conn, "Todo").unwrap();
        assert_eq!(pending(&conn, "Todo").unwrap(), None);
        assert_eq!(cursor(&conn, "Todo").unwrap(), 0);
        set_cursor(&conn, "Todo", 9).unwrap();
        assert_eq!(cursor(&conn, "Todo").unwrap(), 9);
    }
}
