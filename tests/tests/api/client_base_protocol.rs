//! The sync client against a server that speaks only the base protocol, as persistence.js's
//! reference servers do: no paging, no idempotent push, and an id listed twice (a tombstone
//! without `_lastChange`, then the live object) after a removed object was re-created.

use std::sync::atomic::Ordering;

use crate::client_support::{
    BaseServer, Device, LossyProxy, fast_transport, project, server_objects, server_updates, todo_entity,
};
use serde_json::json;
use sync_client::{PreferLocal, PreferRemote, SyncOptions};

const TODO: &str = "/todoChanges";

async fn assert_converged(server: &BaseServer, devices: &[&Device]) {
    let on_server = project(&server_objects(&server.endpoint(), TODO).await, &["text", "done"]);
    for device in devices {
        assert_eq!(device.todos(), on_server, "{} differs from the server", device.name);
        assert_eq!(device.store.pending_changes("Todo").unwrap(), 0, "{} has changes left", device.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_converge_through_a_base_protocol_server() {
    let server = BaseServer::start().await;
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "milk");
    a.add("2", "bread");
    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    assert_eq!(a.todos(), b.todos());

    // Disjoint edits merge; the same field edited on both sides is decided by the handler.
    a.store.update("Todo", "1", json!({"text": "oat milk"})).unwrap();
    b.store.update("Todo", "1", json!({"done": true})).unwrap();
    a.store.update("Todo", "2", json!({"text": "rye bread"})).unwrap();
    b.store.update("Todo", "2", json!({"text": "white bread"})).unwrap();
    a.sync(PreferRemote).await;
    let report = b.sync(PreferLocal).await;
    assert_eq!(report.conflicts(), 1);
    a.sync(PreferRemote).await;
    assert_eq!(a.todos()["1"], json!({"text": "oat milk", "done": true}));
    assert_eq!(a.text("2").as_deref(), Some("white bread"));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_object_listed_twice_stays_live() {
    let server = BaseServer::start().await;
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "milk");
    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    a.store.remove("Todo", "1").unwrap();
    b.store.update("Todo", "1", json!({"text": "still needed"})).unwrap();
    a.sync(PreferRemote).await;
    // b keeps its edit over the removal: the server re-creates the object.
    assert_eq!(b.sync(PreferLocal).await.conflicts(), 1);

    let updates = server_updates(&server.endpoint(), TODO).await;
    assert_eq!(updates.len(), 2, "the base server lists the re-created id twice: {updates:?}");
    assert!(updates[0].get("_lastChange").is_none());

    a.sync(PreferRemote).await;
    let c = Device::new("c", &server.endpoint());
    let report = c.sync(PreferRemote).await;
    assert_eq!(report.pulled(), 1, "one object, however often it is listed");
    assert_eq!(c.text("1").as_deref(), Some("still needed"));
    assert_converged(&server, &[&a, &b, &c]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_push_answer_is_applied_again_by_a_base_server_and_still_converges() {
    let server = BaseServer::start().await;
    let proxy = LossyProxy::start(&server.base_url).await;
    let a = Device::with(
        "a",
        [todo_entity()],
        fast_transport(&server.endpoint().via(&proxy.base_url), 3),
        SyncOptions::default(),
    );
    a.add("1", "milk");
    proxy.drop_next_push_answers(1);
    let report = a.sync(PreferRemote).await;
    assert_eq!(proxy.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(report.entities[0].replayed_pushes, 0, "a base server does not replay");
    assert_eq!(server.pushes.load(Ordering::SeqCst), 2, "without idempotency the retry is applied again");

    let b = Device::new("b", &server.endpoint());
    b.sync(PreferRemote).await;
    a.sync(PreferRemote).await;
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}
