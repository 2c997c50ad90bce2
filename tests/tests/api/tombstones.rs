//! Tombstone retention (`tombstone_retention_days`): tombstones are purged in small batches, each
//! scope's purge horizon moves past them, and a pull from before the horizon is answered with the
//! whole scope (marked `"reset": true` for clients that send `reset=1`), so no client misses a
//! removal. The purge never deletes a live object, whatever pushes run meanwhile. The tests purge
//! through the janitor's own function, with a horizon in the future (everything is old enough).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use sync_client::PreferRemote;
use sync_server::Config;
use sync_server::janitor::purge_tombstones;

use crate::client_support::{Device, server_objects};
use crate::helpers::{Backend, TestServer, backend_tests, parse_pull};

/// Purges every tombstone the store holds now.
async fn purge_all(server: &TestServer) {
    let far = sync_server::clock::system().now_ms() + 3_600_000;
    purge_tombstones(&*server.store, far).await.expect("the purge runs");
}

fn ids(updates: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = updates.iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

async fn a_cursor_older_than_the_purge_horizon_gets_the_whole_scope(backend: Backend) {
    let config = Config { tombstone_retention_days: 30, ..Config::default() };
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();
    let before = api.push("/taskChanges", json!([{"id": "a"}, {"id": "b"}])).await;
    let removed = api.push("/taskChanges", json!([{"id": "b", "_removed": true}])).await;
    let after = api.push("/taskChanges", json!([{"id": "c"}])).await;
    purge_all(&server).await;

    // From the removal on, nothing was purged that the client has not seen: a delta as ever.
    let (_, delta) = api.get(&format!("/taskChanges?since={removed}&reset=1")).await;
    assert_eq!(delta, json!({"updates": [{"id": "c", "_lastChange": after}], "now": after}));
    // From before it, the tombstone of `b` is gone: the whole scope, marked for a client that asks.
    let (_, reset) = api.get(&format!("/taskChanges?since={before}&reset=1")).await;
    assert_eq!(reset["reset"], true, "{reset}");
    assert_eq!(
        (ids(parse_pull(&reset).updates.as_slice()), reset["now"].clone()),
        (vec!["a".into(), "c".into()], json!(after))
    );
    let (_, unmarked) = api.get(&format!("/taskChanges?since={before}")).await;
    assert!(unmarked.get("reset").is_none(), "a base client gets the same answer, unmarked: {unmarked}");
    assert_eq!(ids(&parse_pull(&unmarked).updates), ["a", "c"]);
    // Paged or waiting, the same: the whole scope at once (its pages would start over and over).
    let (_, paged) = api.get(&format!("/taskChanges?since={before}&limit=1&reset=1")).await;
    assert_eq!(
        (paged["reset"].clone(), ids(&parse_pull(&paged).updates)),
        (json!(true), vec!["a".to_owned(), "c".to_owned()])
    );
    let waiting = format!("/taskChanges?since={before}&reset=1&wait=30");
    let (_, waited) = tokio::time::timeout(std::time::Duration::from_secs(10), api.get(&waiting))
        .await
        .expect("a reset waits for nothing");
    assert_eq!(waited["reset"], true, "a reset is answered at once: {waited}");
    // From 0, a full answer as always, marked: the client may hold objects it never pulled.
    let (_, full) = api.get("/taskChanges?since=0&reset=1").await;
    assert_eq!(
        (full["reset"].clone(), ids(&parse_pull(&full).updates)),
        (json!(true), vec!["a".to_owned(), "c".to_owned()])
    );
    let (_, capabilities) = api.get("/_sync/capabilities").await;
    assert_eq!(capabilities["extensions"]["reset"], json!({"tombstone_retention_days": 30}));
    server.stop().await;
}

/// Writers remove and re-create objects while the purge runs again and again: at the end every
/// object is in the state of its last acknowledged push, and the purge did delete tombstones.
async fn the_purge_racing_pushes_loses_no_live_object(backend: Backend) {
    const WRITERS: usize = 4;
    const IDS: usize = 10;
    const ROUNDS: usize = 15;
    let server = TestServer::start_on(backend).await;
    let store = Arc::clone(&server.store);
    let (writing, purges) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let purger = {
        let (writing, purges, store) = (Arc::clone(&writing), Arc::clone(&purges), Arc::clone(&store));
        tokio::spawn(async move {
            while writing.load(Ordering::Acquire) {
                let far = sync_server::clock::system().now_ms() + 3_600_000;
                let n = store.purge_tombstones(far, 3).await.expect("a purge batch");
                purges.fetch_add(n, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let api = server.api();
        writers.push(tokio::spawn(async move {
            let mut last = HashMap::new();
            for round in 0..ROUNDS {
                for i in 0..IDS {
                    let id = format!("w{w}i{i}");
                    let live = (round + i) % 3 != 0;
                    let item =
                        if live { json!({"id": id, "round": round}) } else { json!({"id": id, "_removed": true}) };
                    api.push("/taskChanges", json!([item])).await;
                    last.insert(id, live.then_some(round));
                }
            }
            last
        }));
    }
    let mut expected = HashMap::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    writing.store(false, Ordering::Release);
    purger.await.unwrap();
    assert!(purges.load(Ordering::Relaxed) > 0, "the purge deleted tombstones while pushes ran");
    let on_server = server_objects(&server.endpoint(), "/taskChanges").await;
    for (id, round) in &expected {
        match round {
            Some(round) => assert_eq!(on_server.get(id).map(|o| o["round"].clone()), Some(json!(round)), "{id}"),
            None => assert!(!on_server.contains_key(id), "{id} was removed last"),
        }
    }
    server.stop().await;
}

/// A device offline for longer than the retention: its next sync is a reset. It drops what the
/// server no longer has, keeps its own unsynced edits and new objects, and pushes them.
async fn a_client_offline_past_the_horizon_resets_and_keeps_its_unsynced_edits(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let endpoint = server.endpoint();
    let (away, other) = (Device::new("away", &endpoint), Device::new("other", &endpoint));
    for id in ["x", "y", "z"] {
        away.add(id, id);
    }
    away.sync(PreferRemote).await;
    other.sync(PreferRemote).await;
    // Offline, `away` edits x and z and adds w; meanwhile the other device removes y and z.
    away.store.update("Todo", "x", json!({"text": "x, edited offline"})).unwrap();
    away.store.update("Todo", "z", json!({"text": "z, edited offline"})).unwrap();
    away.add("w", "new offline");
    other.store.remove("Todo", "y").unwrap();
    other.store.remove("Todo", "z").unwrap();
    other.sync(PreferRemote).await;
    purge_all(&server).await;

    let report = away.sync(PreferRemote).await;
    let entity = &report.entities[0];
    assert!(entity.reset, "{report:?}");
    assert_eq!(entity.dropped, 1, "y is gone from the server and was not changed here: {report:?}");
    let texts: Vec<(String, Value)> = away.todos().into_iter().map(|(id, f)| (id, f["text"].clone())).collect();
    assert_eq!(
        texts,
        [
            ("w".to_owned(), json!("new offline")),
            ("x".to_owned(), json!("x, edited offline")),
            ("z".to_owned(), json!("z, edited offline")),
        ],
        "the unsynced edits are kept; z's removal was purged, so nothing says it was removed"
    );
    let on_server = server_objects(&endpoint, "/todoChanges").await;
    assert_eq!(on_server.keys().collect::<Vec<_>>(), ["w", "x", "z"]);
    assert_eq!(on_server["x"]["text"], "x, edited offline");
    let again = away.sync(PreferRemote).await;
    assert!(!again.entities[0].reset, "the cursor is past the horizon now");
    server.stop().await;
}

backend_tests!(
    a_cursor_older_than_the_purge_horizon_gets_the_whole_scope,
    a_client_offline_past_the_horizon_resets_and_keeps_its_unsynced_edits,
);
backend_tests!(multi_thread: the_purge_racing_pushes_loses_no_live_object);
