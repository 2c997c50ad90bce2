//! Commits of other processes sharing the file: SQLite cannot tell them, so a connection of its
//! own reads `PRAGMA data_version` (which changes whenever another connection committed) every
//! poll while any pull waits, and when it changed compares the clocks of the waited scopes (see
//! [`crate::live`]). This process's commits change it too; their scopes were woken already, and
//! comparing a clock costs one indexed read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::SqliteStore;
use super::connection::classify;
use crate::live::{Feed, wake_changed};
use crate::store::StoreError;

impl SqliteStore {
    /// Watches the file for other processes' commits until the store is dropped.
    pub(super) async fn watch_file(&self, feed: Feed, poll: Duration) -> Result<(), StoreError> {
        let path = self.inner.path.clone();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path).map_err(classify)?;
            conn.execute_batch("PRAGMA query_only = ON;").map_err(classify)?;
            Ok::<_, StoreError>(Arc::new(Mutex::new(conn)))
        })
        .await
        .map_err(|e| StoreError::internal("the task opening the watching connection failed", e))??;
        let mut last = None;
        loop {
            tokio::time::sleep(poll).await;
            if feed.is_idle() {
                continue;
            }
            let conn = Arc::clone(&conn);
            let version = tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).map_err(classify)
            })
            .await
            .map_err(|e| StoreError::internal("the task reading data_version failed", e))?;
            let version = match version {
                Ok(version) => version,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the file's data_version");
                    continue;
                }
            };
            if last == Some(version) {
                continue;
            }
            // The version is taken as seen only once every waited scope was compared: a failed
            // comparison, or a waiter still reading, is compared again at the next poll.
            match wake_changed(self, &feed).await {
                Ok(true) => last = Some(version),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "cannot compare the clocks of waited scopes"),
            }
        }
    }
}
