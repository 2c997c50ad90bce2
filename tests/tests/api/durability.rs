//! A `200` means durable: acknowledged pushes survive a restart and a crash (`SIGKILL` while
//! writers are pushing, in the middle of group commits) with nothing half-applied, the server
//! runs on the durability settings it reads back from its database, and a graceful shutdown lets
//! in-flight requests finish.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{Api, Backend, Db, ServerProcess, TestDb, backend_tests, find};
use serde_json::json;

/// Objects per batch of the crash test: a batch is there whole or not at all.
const BATCH: usize = 4;
/// Concurrent writers when the crash comes, so that commits are grouped.
const WRITERS: usize = 8;
/// Pushes acknowledged before the crash.
const ACKED_BEFORE_CRASH: usize = 150;

/// What a `200` of this server rests on, as it read it back from its open database: a WAL
/// synced at every commit, or PostgreSQL's fsync and synchronous commit.
fn assert_durable(server: &ServerProcess, backend: Backend) {
    let expected = match backend.db {
        Db::Sqlite => "journal_mode=wal synchronous=full",
        Db::Postgres => "fsync=on synchronous_commit=on",
    };
    assert_eq!(server.durability, expected, "the server does not run durably");
}

/// Pushes batches of [`BATCH`] new objects until the server stops answering; returns each
/// acknowledged batch with its `now` (into `acked`), and whether a request was cut.
async fn push_batches(api: Api, writer: usize, acked: Arc<Mutex<Vec<(String, i64)>>>) -> bool {
    for n in 0.. {
        let batch = format!("{writer}-{n}");
        let items: Vec<_> = (0..BATCH).map(|k| json!({"id": format!("k{batch}-{k}"), "batch": batch})).collect();
        match api.try_post("/noteChanges", &json!(items).to_string()).await {
            Ok((200, body)) => acked.lock().unwrap().push((batch, body["now"].as_i64().expect("now"))),
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    false
}

async fn acknowledged_pushes_survive_a_restart_and_a_crash(backend: Backend) {
    let test_db = TestDb::create(backend).await;

    let server = ServerProcess::spawn(&test_db, &[]).await;
    let api = server.api();
    let mut acked = Vec::new();
    for i in 0..20 {
        let now = api.push("/noteChanges", json!([{"id": format!("n{i}"), "i": i, "s": "é😀"}])).await;
        acked.push((format!("n{i}"), now));
    }
    let removed = api.push("/noteChanges", json!([{"id": "n0", "_removed": true}])).await;
    let status = server.signal_and_wait(15).await;
    assert!(status.success(), "graceful stop exits 0, got {status:?}");

    let server = ServerProcess::spawn(&test_db, &[]).await;
    let api = server.api();
    let pulled = api.pull("/noteChanges", 0).await;
    assert_eq!(pulled.now, removed, "the clock survives the restart");
    assert_eq!(find(&pulled, "n0").unwrap(), &json!({"id": "n0", "_removed": true, "_lastChange": removed}));
    for (id, now) in &acked[1..] {
        let obj = find(&pulled, id).unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(obj["_lastChange"], *now);
        assert_eq!(obj["s"], "é😀");
    }

    // Killed while writers push, so that commits are in flight and grouped: every acknowledged
    // batch is there whole with its `now`, and no batch is there in part.
    assert_durable(&server, backend);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(push_batches(server.api(), w, acked.clone()))).collect();
    tokio::time::timeout(Duration::from_secs(120), async {
        while acked.lock().unwrap().len() < ACKED_BEFORE_CRASH {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writers push");
    let status = server.signal_and_wait(9).await;
    assert!(!status.success());
    let mut cut = 0;
    for w in writers {
        cut += usize::from(w.await.expect("writer"));
    }
    assert_eq!(cut, WRITERS, "every writer was pushing when the server was killed");

    let server = ServerProcess::spawn(&test_db, &[]).await;
    assert_durable(&server, backend);
    let api = server.api();
    let pulled = api.pull("/noteChanges", 0).await;
    assert_eq!(pulled.more, None, "one page holds everything");
    let mut batches: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for update in &pulled.updates {
        if let Some(batch) = update["batch"].as_str() {
            batches.entry(batch.to_owned()).or_default().push(update["_lastChange"].as_i64().expect("_lastChange"));
        }
    }
    for (batch, stamps) in &batches {
        assert_eq!(stamps.len(), BATCH, "batch {batch} is half-applied after SIGKILL");
        assert!(stamps.iter().all(|s| s == &stamps[0]), "batch {batch} has several timestamps");
    }
    let acked = acked.lock().unwrap().clone();
    for (batch, now) in &acked {
        assert_eq!(batches.get(batch), Some(&vec![*now; BATCH]), "acknowledged batch {batch} lost after SIGKILL");
    }
    let last = acked.iter().map(|(_, now)| *now).max().expect("acknowledged pushes");
    assert!(pulled.now >= last, "the clock went back across the crash");
    let next = api.push("/noteChanges", json!([])).await;
    assert!(next > pulled.now, "timestamps keep increasing across restarts");
    eprintln!(
        "{} batches acknowledged, {} applied in all, {WRITERS} pushes cut by SIGKILL",
        acked.len(),
        batches.len()
    );
    server.signal_and_wait(15).await;
}

async fn sigterm_lets_an_in_flight_push_finish(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let mut server = ServerProcess::spawn(&test_db, &[]).await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();

    // Send the head and half the body, signal the server, then send the rest: the request was
    // in flight when the signal came, so it must still be answered and applied. The server's
    // `100 Continue` says it has read the head; its log says that the shutdown has begun.
    let body = json!([{"id": "inflight", "done": true}]).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /taskChanges HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        server.endpoint().header_lines(),
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    let mut interim = [0; 25];
    conn.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "the server read the head");
    conn.write_all(first.as_bytes()).unwrap();

    server.signal(15);
    server.wait_for_log("shutting down").await;
    conn.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    let status = server.wait().await;
    assert!(status.success(), "{status:?}");

    let server = ServerProcess::spawn(&test_db, &[]).await;
    let pulled = server.api().pull("/taskChanges", 0).await;
    assert_eq!(find(&pulled, "inflight").unwrap()["done"], true);
    server.signal_and_wait(15).await;
}

backend_tests!(multi_thread: acknowledged_pushes_survive_a_restart_and_a_crash, sigterm_lets_an_in_flight_push_finish);
