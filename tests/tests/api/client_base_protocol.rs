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

/// A base server whose answers are scripted: each pull answers the next body of `answers` (the
/// last one again once they run out), and pushes are acknowledged.
async fn scripted_server(answers: Vec<String>) -> (String, actix_web::dev::ServerHandle) {
    use std::sync::Mutex;

    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

    let answers = web::Data::new((Mutex::new(0usize), answers));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new().app_data(answers.clone()).default_service(web::to(
            |req: HttpRequest, answers: web::Data<(Mutex<usize>, Vec<String>)>| async move {
                if !req.path().ends_with("Changes") {
                    return HttpResponse::NotFound().finish();
                }
                if req.method() == actix_web::http::Method::POST {
                    return HttpResponse::Ok().json(json!({"status": "ok", "now": 9_000}));
                }
                let mut served = answers.0.lock().unwrap();
                let body = answers.1[(*served).min(answers.1.len() - 1)].clone();
                *served += 1;
                HttpResponse::Ok().content_type("application/json").body(body)
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (base_url, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_that_cannot_be_applied_are_set_aside_and_the_sync_goes_on() {
    // A malformed object (a number no float holds), a value of the wrong type, and a good object.
    let first = r#"{"updates": [
        {"id": "huge", "text": "t", "n": 1e999, "_lastChange": 1},
        {"id": "typed", "text": 5, "done": false, "_lastChange": 2},
        {"id": "good", "text": "milk", "done": false, "_lastChange": 3},
        {"text": "no id", "_lastChange": 4}
    ], "now": 4}"#;
    // Later, versions of both that fit replace them.
    let second = r#"{"updates": [
        {"id": "huge", "text": "fixed", "done": true, "_lastChange": 5},
        {"id": "typed", "text": "five", "done": false, "_lastChange": 6}
    ], "now": 6}"#;
    let third = r#"{"updates": [], "now": 6}"#;
    let (base_url, handle) = scripted_server(vec![first.into(), second.into(), third.into()]).await;
    let device = Device::new("a", &crate::helpers::Endpoint { base_url, token: None });

    let report = device.sync(PreferRemote).await;
    let entity = &report.entities[0];
    let set_aside: Vec<Option<&str>> = entity.set_aside.iter().map(|s| s.id.as_deref()).collect();
    assert_eq!(set_aside, [Some("huge"), None, Some("typed")], "{entity:?}");
    assert_eq!(device.todos().keys().collect::<Vec<_>>(), ["good"], "only the good object is applied");
    assert_eq!(device.text("good").as_deref(), Some("milk"));
    let kept = device.store.set_aside("Todo").unwrap();
    let by_id = |id: &str| kept.iter().find(|k| k.id.as_deref() == Some(id)).unwrap().clone();
    assert!(by_id("huge").raw.contains("1e999"), "kept as received: {:?}", by_id("huge"));
    assert!(by_id("huge").reason.contains("number"), "{:?}", by_id("huge"));
    assert_eq!(by_id("typed").reason, "field \"text\": expected TEXT, got an integer");
    assert!(kept.iter().any(|k| k.id.is_none() && k.reason.contains("id")), "{kept:?}");
    assert!(!device.todos().contains_key("typed"), "a value that does not fit is never stored as another");

    // The cursor moved on: the next sync gets the fixed versions, which replace what was set aside.
    let report = device.sync(PreferRemote).await;
    assert!(report.entities[0].set_aside.is_empty(), "{report:?}");
    assert_eq!(device.text("huge").as_deref(), Some("fixed"));
    assert_eq!(device.text("typed").as_deref(), Some("five"));
    let kept = device.store.set_aside("Todo").unwrap();
    assert_eq!(kept.len(), 1, "only the object without an id is left: {kept:?}");
    device.sync(PreferRemote).await;
    handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_server_offers_no_extension() {
    let server = BaseServer::start().await;
    let base_url = server.base_url.clone();
    let read = tokio::task::spawn_blocking(move || {
        sync_client::HttpTransport::builder(&base_url).build().unwrap().capabilities().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(read, None, "a base server answers 404");
    server.stop().await;
}
