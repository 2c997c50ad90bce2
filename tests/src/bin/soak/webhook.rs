//! The outbox's receiver: every push the server applies writes one event per changed object, all
//! carrying the push's `now`, so the events received are a record of every application, made by
//! the server itself. An application whose `now` no client was acknowledged is a push applied a
//! second time (every push is acknowledged by the end of the run).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sync_client::webhook::{self, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::http::read_request;

/// The secret the instances sign with.
pub const SECRET: &str = "whsec_dGhlIHNlY3JldCBvZiB0aGUgY2hhb3Mgc29haw==";

/// One event as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The object's id.
    pub object_id: String,
    /// The push's `now`.
    pub last_change: i64,
}

/// What the receiver got.
#[derive(Default)]
pub struct Events {
    /// By event id: a retried delivery is the same event.
    pub by_id: Mutex<HashMap<String, Received>>,
    /// Requests whose signature did not verify (refused).
    pub bad_signatures: AtomicU64,
}

#[derive(Deserialize)]
struct Batch {
    events: Vec<Event>,
}

/// Starts the receiver on an ephemeral loopback port.
pub async fn start(events: Arc<Events>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                let _ = serve(conn, &events).await;
            });
        }
    });
    Ok(addr)
}

async fn serve(mut conn: TcpStream, events: &Events) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let (mut reader, mut writer) = conn.split();
        let Some(request) = read_request(&mut reader, &mut buffer).await? else { return Ok(()) };
        let status = match accept(&request, events) {
            Ok(()) => "200 OK",
            Err(()) => "401 Unauthorized",
        };
        writer.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await?;
    }
}

fn accept(request: &crate::http::Request, events: &Events) -> Result<(), ()> {
    let header = |name| request.header(name).unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let body = request.body();
    let verified = webhook::verify(
        &[SECRET],
        header(webhook::ID_HEADER),
        header(webhook::TIMESTAMP_HEADER),
        header(webhook::SIGNATURE_HEADER),
        body,
        now,
        webhook::DEFAULT_TOLERANCE_SECS,
    );
    if verified.is_err() {
        events.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return Err(());
    }
    let received: Vec<Event> = match serde_json::from_slice::<Batch>(body) {
        Ok(batch) => batch.events,
        Err(_) => vec![serde_json::from_slice::<Event>(body).map_err(|_| ())?],
    };
    let mut by_id = events.by_id.lock().expect("events");
    for event in received {
        by_id.insert(event.id, Received { object_id: event.object_id, last_change: event.last_change });
    }
    Ok(())
}
