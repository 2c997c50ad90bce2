//! A `200` means durable: acknowledged pushes survive a restart, a crash (`SIGKILL`), and a
//! graceful shutdown lets in-flight requests finish.

use std::io::{Read, Write};
use std::time::Duration;

use crate::helpers::{Backend, ServerProcess, TestDb, backend_tests, find};
use serde_json::json;

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

    // Acknowledged, then killed without any chance to flush: still there.
    let mut last = 0;
    for i in 0..50 {
        last = api.push("/noteChanges", json!([{"id": format!("k{i}"), "i": i}])).await;
    }
    let status = server.signal_and_wait(9).await;
    assert!(!status.success());

    let server = ServerProcess::spawn(&test_db, &[]).await;
    let api = server.api();
    let pulled = api.pull("/noteChanges", 0).await;
    assert_eq!(pulled.now, last);
    for i in 0..50 {
        assert!(find(&pulled, &format!("k{i}")).is_some(), "k{i} lost after SIGKILL");
    }
    let next = api.push("/noteChanges", json!([])).await;
    assert!(next > last, "timestamps keep increasing across restarts");
    server.signal_and_wait(15).await;
}

async fn sigterm_lets_an_in_flight_push_finish(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let server = ServerProcess::spawn(&test_db, &[]).await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();

    // Send the head and half the body, signal the server, then send the rest: the request was
    // in flight when the signal came, so it must still be answered and applied.
    let body = json!([{"id": "inflight", "done": true}]).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /taskChanges HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        server.endpoint().header_lines(),
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = tokio::spawn(server.signal_and_wait(15));
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    let status = stopping.await.unwrap();
    assert!(status.success(), "{status:?}");

    let server = ServerProcess::spawn(&test_db, &[]).await;
    let pulled = server.api().pull("/taskChanges", 0).await;
    assert_eq!(find(&pulled, "inflight").unwrap()["done"], true);
    server.signal_and_wait(15).await;
}

backend_tests!(multi_thread: acknowledged_pushes_survive_a_restart_and_a_crash, sigterm_lets_an_in_flight_push_finish);
