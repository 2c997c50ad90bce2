//! The base protocol as persistence.js speaks it, end to end over real HTTP and a real SQLite file.

mod helpers;

use helpers::TestServer;
use serde_json::json;

#[tokio::test]
async fn push_then_pull_returns_objects_with_the_push_timestamp() {
    let server = TestServer::start().await;
    let api = server.api();
    let empty = api.pull("/taskChanges", 0).await;
    assert!(empty.updates.is_empty());

    let now =
        api.push("/taskChanges", json!([{"id": "F89F99F7B887423FB4B9C961C3883C0A", "name": "Main project"}])).await;
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!(pulled.now, now);
    assert_eq!(
        pulled.updates,
        vec![json!({"id": "F89F99F7B887423FB4B9C961C3883C0A", "name": "Main project", "_lastChange": now})]
    );
    assert!(api.pull("/taskChanges", now).await.updates.is_empty());
    server.stop().await;
}
