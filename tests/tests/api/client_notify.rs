//! Change notifications end to end: subscriptions on a device told once per sync that changed
//! what they watch, and never for a sync that changed nothing of it, through a real server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sync_client::{Cause, Entity, FieldType, PreferRemote, Query, SyncOptions, Watch};

use crate::client_support::{Device, fast_transport, todo_entity};
use crate::helpers::{Backend, TestServer, backend_tests};

/// What one device's subscriptions were told, as `(ids, cause)` per notification.
type Told = Arc<Mutex<Vec<(Vec<String>, Cause)>>>;

fn tag_entity() -> Entity {
    Entity::new("Tag").field("name", FieldType::Text)
}

fn device(name: &str, server: &TestServer, page_size: usize) -> Device {
    let options = SyncOptions { page_size: Some(page_size), ..SyncOptions::default() };
    Device::with(name, [todo_entity(), tag_entity()], fast_transport(&server.endpoint(), 0), options)
}

fn take(told: &Told) -> Vec<(Vec<String>, Cause)> {
    std::mem::take(&mut *told.lock().unwrap())
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Syncs `device`, failing the test if the sync (and so the callbacks it runs) does not return
/// within the deadline: a callback that waited for a lock the sync holds would hang it.
async fn sync_within_deadline(device: &Device) {
    tokio::time::timeout(Duration::from_secs(60), device.sync(PreferRemote)).await.expect("the sync returned in time");
}

async fn subscriptions_fire_once_per_sync_that_changed_them(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let writer = device("writer", &server, 500);
    let reader = device("reader", &server, 2);

    // A query subscription whose callback reads the store for each id it is told.
    let open_told: Told = Arc::default();
    let texts = Arc::new(Mutex::new(Vec::new()));
    let (store, log, read) = (reader.store.clone(), Arc::clone(&open_told), Arc::clone(&texts));
    let _open = reader
        .store
        .subscribe(Query::new("Todo").filter("done", false), move |change| {
            for id in &change.ids {
                let text = store.get("Todo", id).unwrap().and_then(|r| r.get_str("text").map(str::to_owned));
                read.lock().unwrap().push(text.unwrap_or_default());
            }
            log.lock().unwrap().push((change.ids.clone(), change.cause));
        })
        .unwrap();
    let todos = reader.store.watch(Watch::entity("Todo")).unwrap();

    // Five new to-dos in five pushes, pulled over three pages (a page never splits a push): one
    // notification for the whole sync.
    for i in 1..=5 {
        writer.add(&i.to_string(), &format!("item {i}"));
        sync_within_deadline(&writer).await;
    }
    sync_within_deadline(&reader).await;
    let all = ids(&["1", "2", "3", "4", "5"]);
    assert_eq!(take(&open_told), [(all.clone(), Cause::Sync)]);
    assert_eq!(
        *texts.lock().unwrap(),
        ["item 1", "item 2", "item 3", "item 4", "item 5"],
        "the callback read the store"
    );
    let change = todos.try_recv().unwrap();
    assert_eq!((change.ids, change.cause), (all, Cause::Sync));

    // A sync with nothing new, and a sync that changed only another entity: nothing is told.
    sync_within_deadline(&reader).await;
    writer.store.insert_with_id("Tag", "t", json!({"name": "home"})).unwrap();
    sync_within_deadline(&writer).await;
    sync_within_deadline(&reader).await;
    assert_eq!(reader.all("Tag").len(), 1, "the other entity was pulled");
    assert_eq!(take(&open_told), []);
    assert!(todos.try_recv().is_err());

    // A to-do outside the query's result: the entity is told, the query is not.
    writer.store.insert_with_id("Todo", "6", json!({"text": "done already", "done": true})).unwrap();
    sync_within_deadline(&writer).await;
    sync_within_deadline(&reader).await;
    assert_eq!(take(&open_told), []);
    assert_eq!(todos.try_recv().unwrap().ids, ["6"]);

    // A local write is told at once, with its ids; its push and the server's echo of it in the
    // next pull change nothing more.
    reader.store.update("Todo", "2", json!({"done": true})).unwrap();
    assert_eq!(take(&open_told), [(ids(&["2"]), Cause::Local)]);
    assert_eq!(todos.try_recv().map(|c| (c.ids, c.cause)), Ok((ids(&["2"]), Cause::Local)));
    assert_eq!(reader.sync(PreferRemote).await.pushed(), 1);
    sync_within_deadline(&reader).await;
    assert_eq!(take(&open_told), []);
    assert!(todos.try_recv().is_err(), "the echo of the device's own push is no change");

    // Another device's edit of an object in the result, and a removal: one notification.
    writer.sync(PreferRemote).await;
    writer.store.update("Todo", "1", json!({"text": "renamed"})).unwrap();
    writer.store.remove("Todo", "3").unwrap();
    sync_within_deadline(&writer).await;
    sync_within_deadline(&reader).await;
    assert_eq!(take(&open_told), [(ids(&["1", "3"]), Cause::Sync)]);
    assert_eq!(todos.try_recv().unwrap().ids, ["1", "3"]);
    assert!(todos.try_recv().is_err());
    server.stop().await;
}

backend_tests!(multi_thread: subscriptions_fire_once_per_sync_that_changed_them);
