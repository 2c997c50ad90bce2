//! Preconditions on pushes (`Sync-Preconditions: on`): each item's `_lastChange` must be the
//! version the server holds (0 for none), or nothing of the push is applied and the answer is
//! `409 conflict` with the current versions; without the header `_lastChange` is ignored, as
//! base clients echo it.

use serde_json::{Value, json};

use crate::helpers::{Api, Backend, TestServer, backend_tests};

const ON: (&str, &str) = ("Sync-Preconditions", "on");

async fn push_checked(api: &Api, items: Value) -> (u16, Value) {
    api.post_with("/taskChanges", &items.to_string(), &[ON]).await
}

async fn a_push_based_on_the_stored_versions_is_applied(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let (status, body) = push_checked(&api, json!([{"id": "a", "v": 1}, {"id": "b", "v": 1, "_lastChange": 0}])).await;
    assert_eq!(status, 200, "new objects: no _lastChange, or 0: {body}");
    let first = body["now"].as_i64().unwrap();
    let (status, body) = push_checked(
        &api,
        json!([{"id": "a", "v": 2, "_lastChange": first}, {"id": "b", "_removed": true, "_lastChange": first}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let second = body["now"].as_i64().unwrap();
    let (status, body) = push_checked(&api, json!([{"id": "b", "v": 3, "_lastChange": second}])).await;
    assert_eq!(status, 200, "a tombstone's version is its removal's: {body}");
    let third = body["now"].as_i64().unwrap();
    let (status, body) = push_checked(&api, json!([{"id": "b", "_removed": true, "_lastChange": third}])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = push_checked(&api, json!([{"id": "b", "v": 4}])).await;
    assert_eq!(status, 200, "re-creating a removed object as new overwrites nothing: {body}");
    let pulled = api.pull("/taskChanges", 0).await;
    let a = pulled.updates.iter().find(|u| u["id"] == "a").unwrap();
    let b = pulled.updates.iter().find(|u| u["id"] == "b").unwrap();
    assert_eq!((a["v"].clone(), b["v"].clone()), (json!(2), json!(4)));
    server.stop().await;
}

async fn one_stale_item_of_many_applies_nothing_and_names_the_current_versions(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let base = api.push("/taskChanges", json!([{"id": "a", "v": 1}, {"id": "b", "v": 1}, {"id": "c", "v": 1}])).await;
    let theirs = api.push("/taskChanges", json!([{"id": "b", "v": "theirs"}, {"id": "c", "_removed": true}])).await;
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("new{i}"), "v": i}))
        .chain([
            json!({"id": "a", "v": 2, "_lastChange": base}),
            json!({"id": "b", "v": 2, "_lastChange": base}),
            json!({"id": "c", "v": 2, "_lastChange": base}),
            json!({"id": "d", "v": 2, "_lastChange": base}),
        ])
        .collect();
    let (status, body) = push_checked(&api, Value::Array(items)).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("3 object(s)"), "{body}");
    let conflicts = body["conflicts"].as_array().unwrap();
    let by_id = |id: &str| conflicts.iter().find(|c| c["id"] == id).cloned();
    assert_eq!(conflicts.len(), 3, "a is current; b, c and d are not: {body}");
    assert!(by_id("a").is_none());
    assert_eq!(by_id("b").unwrap()["current"], json!({"id": "b", "v": "theirs", "_lastChange": theirs}));
    assert_eq!(by_id("c").unwrap()["current"], json!({"id": "c", "_removed": true, "_lastChange": theirs}));
    assert_eq!(by_id("d").unwrap(), json!({"id": "d", "based_on": base, "current": null}));
    // Nothing was applied: not the new objects, not `a`, and the clock did not move.
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!(pulled.now, theirs);
    assert_eq!(pulled.updates.len(), 3);
    assert_eq!(pulled.updates.iter().find(|u| u["id"] == "a").unwrap()["v"], 1);
    server.stop().await;
}

async fn without_the_header_last_change_is_ignored_as_before(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "a", "v": 1}])).await;
    // A base client echoing a stale or odd `_lastChange` is never refused.
    for echoed in [json!(1), json!("7"), json!(null)] {
        let (status, body) =
            api.post("/taskChanges", &json!([{"id": "a", "v": 2, "_lastChange": echoed}]).to_string()).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = api.post_with("/taskChanges", "[]", &[("Sync-Preconditions", "maybe")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_header")), "{body}");
    server.stop().await;
}

/// A `409` is not remembered under its idempotency key: once the client has merged, the same key
/// may carry the corrected push.
async fn a_conflicted_push_leaves_its_idempotency_key_unused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let base = api.push("/taskChanges", json!([{"id": "a", "v": 1}])).await;
    let theirs = api.push("/taskChanges", json!([{"id": "a", "v": 2}])).await;
    let key = ("Idempotency-Key", "k-409");
    let stale = json!([{"id": "a", "v": 3, "_lastChange": base}]).to_string();
    assert_eq!(api.post_with("/taskChanges", &stale, &[ON, key]).await.0, 409);
    let merged = json!([{"id": "a", "v": 3, "_lastChange": theirs}]).to_string();
    let (status, body) = api.post_with("/taskChanges", &merged, &[ON, key]).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

backend_tests!(
    a_push_based_on_the_stored_versions_is_applied,
    one_stale_item_of_many_applies_nothing_and_names_the_current_versions,
    without_the_header_last_change_is_ignored_as_before,
    a_conflicted_push_leaves_its_idempotency_key_unused,
);
