//! How the SQLite store holds its connections: the pools of readers, waiting out locks held by
//! other processes, and what each SQLite error means for the client.

use std::path::Path;
use std::time::{Duration, Instant};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};

use crate::store::StoreError;

/// A pool of `size` read-only connections to the file at `path`. A request waits for a free one
/// at most the busy timeout, then fails with `503`.
pub(super) fn reader_pool(
    path: &Path,
    size: u32,
    busy: Duration,
) -> Result<r2d2::Pool<SqliteConnectionManager>, StoreError> {
    let manager = SqliteConnectionManager::file(path).with_init(move |c| {
        c.busy_timeout(busy)?;
        c.execute_batch("PRAGMA query_only = ON;")
    });
    r2d2::Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(1))
        // A connection to a local file does not go stale as a network one does; checking it on
        // every checkout would cost each pull a statement.
        .test_on_check_out(false)
        .connection_timeout(busy.max(Duration::from_millis(100)))
        .build(manager)
        .map_err(|e| StoreError::unavailable(format!("cannot open readers on {}", path.display()), e))
}

/// One read transaction of a reader connection: every statement in it sees the snapshot its
/// first read took. Begun and ended by cached statements, where rusqlite's `Transaction` parses
/// its `BEGIN` on every call, a cost a small delta pull feels.
pub(super) struct Snapshot<'c>(&'c rusqlite::Connection);

impl<'c> Snapshot<'c> {
    /// Begins it.
    pub(super) fn begin(conn: &'c rusqlite::Connection) -> Result<Self, StoreError> {
        conn.prepare_cached("BEGIN").and_then(|mut stmt| stmt.execute([])).map_err(classify)?;
        Ok(Self(conn))
    }
}

impl std::ops::Deref for Snapshot<'_> {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        self.0
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // It wrote nothing: ending it only releases the snapshot. Should that fail, the pool's
        // next user finds a transaction still open and its `BEGIN` fails, rather than reading
        // an old snapshot unknowingly.
        if let Err(e) = self.0.prepare_cached("ROLLBACK").and_then(|mut stmt| stmt.execute([])) {
            tracing::warn!(error = %e, "ending a read transaction failed");
        }
    }
}

/// Runs `op` again while it fails with "busy" or "locked", for at most `patience`.
pub(super) fn retry_while_busy<T>(
    patience: Duration,
    mut op: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let started = Instant::now();
    loop {
        match op() {
            Err(e) if is_busy(&e) && started.elapsed() < patience => std::thread::sleep(Duration::from_millis(10)),
            other => return other,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

/// Busy and locked databases are transient; everything else is a fault.
pub(super) fn classify(e: rusqlite::Error) -> StoreError {
    if is_busy(&e) {
        StoreError::unavailable("the SQLite database is locked by another writer", e)
    } else {
        StoreError::internal("an SQLite statement failed", e)
    }
}

/// A stored value of the wrong type.
pub(super) fn unreadable(e: rusqlite::types::FromSqlError) -> StoreError {
    StoreError::internal("a stored object is unreadable", e)
}

/// No reader became free within the busy timeout.
pub(super) fn no_reader(e: r2d2::Error) -> StoreError {
    StoreError::unavailable("no database connection became free in time", e)
}

/// The file could not be opened or set up.
pub(super) fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::unavailable(format!("cannot open {}", path.display()), e)
}
