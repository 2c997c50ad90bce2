//! Commits announced between instances: `NOTIFY` after a push is acknowledged, `LISTEN` on a
//! connection of its own (see [`crate::live`]).
//!
//! Notifications are sent after commit, by a task of their own, never inside a push's transaction:
//! PostgreSQL serializes the commits of transactions that notify, and pushes must not wait on it.
//! While the listening connection is down (closed, or not answering a check every 5 s), commits of
//! other instances are found by comparing the clocks of the waited scopes every poll for a second,
//! and then once more as the connection is opened again.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::PostgresStore;
use super::connection::{Failure, classify, with_connection};
use crate::live::{Announcement, Feed, wake_changed};
use crate::store::{Scope, StoreError};

/// The channel every instance listens on.
pub(super) const CHANNEL: &str = "sync_changes";

/// How long to wait before opening the listening connection again after a failure.
const RECONNECT: Duration = Duration::from_secs(1);

/// How often the listening connection is asked whether it still answers, and how long it has to.
const CHECK_EVERY: Duration = Duration::from_secs(5);

impl PostgresStore {
    /// Sends one notification per scope, in one statement.
    pub(super) async fn notify(&self, origin: u64, scopes: &[Scope]) -> Result<(), StoreError> {
        if scopes.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = scopes.iter().map(|scope| Announcement::payload(origin, scope)).collect();
        with_connection(&self.inner.pool, |client| {
            let payloads = &payloads;
            async move {
                let sent = client
                    .execute(&format!("SELECT pg_notify('{CHANNEL}', p) FROM unnest($1::text[]) AS p"), &[payloads])
                    .await
                    .map(drop)
                    .map_err(Failure::from);
                (client, sent)
            }
        })
        .await
        .map(drop)
        .map_err(Failure::into_store_error)
    }

    /// Listens for other instances' commits and wakes `feed` for each, until the store is dropped;
    /// compares clocks every `poll` while it cannot listen.
    pub(super) async fn listen(&self, origin: u64, feed: Feed, poll: Duration) -> Result<(), StoreError> {
        loop {
            match self.listen_once(origin, &feed).await {
                Ok(()) => tracing::warn!("the connection listening for other instances' commits closed"),
                Err(e) => tracing::warn!(
                    error = %crate::error::chain(&e),
                    "cannot listen for other instances' commits; comparing clocks every {} ms meanwhile",
                    poll.as_millis()
                ),
            }
            let reconnect = tokio::time::Instant::now() + RECONNECT;
            while tokio::time::Instant::now() < reconnect {
                if let Err(e) = wake_changed(self, &feed).await {
                    tracing::debug!(error = %e, "cannot compare the clocks of waited scopes");
                }
                tokio::time::sleep(poll).await;
            }
        }
    }

    /// One listening connection, from `LISTEN` until it is lost.
    async fn listen_once(&self, origin: u64, feed: &Feed) -> Result<(), StoreError> {
        let (client, mut connection) = self.inner.config.connect(NoTls).await.map_err(classify)?;
        let (notes, mut received) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if notes.send(note.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "the listening connection failed");
                        return;
                    }
                }
            }
        });
        let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(classify);
        if let Err(e) = listening {
            driver.abort();
            return Err(e);
        }
        tracing::debug!("listening for other instances' commits");
        // Commits announced before LISTEN took effect were not heard: look for them once.
        wake_changed(self, feed).await?;
        // A connection whose network path died silently says nothing: ask it, now and then.
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
        loop {
            tokio::select! {
                payload = received.recv() => match payload {
                    Some(payload) => Announcement::wake(&payload, origin, feed),
                    None => return Ok(()),
                },
                _ = checks.tick() => {
                    let answered = tokio::time::timeout(CHECK_EVERY, client.simple_query("SELECT 1")).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        driver.abort();
                        return Err(StoreError::unavailable_because("the listening connection stopped answering"));
                    }
                }
            }
        }
    }
}
