//! Relations end to end: two devices with their own SQLite files add and remove the same
//! many-to-many links through a real server, concurrently, and end with the same links as each
//! other and as the server; a one-to-one reference to an object removed on another device
//! follows to nothing.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sync_client::{Entity, FieldType, PreferRemote, SyncOptions, link_id};

use crate::client_support::{Device, fast_transport, project, server_objects, server_updates};
use crate::helpers::{Backend, TestServer, backend_tests};

fn entities() -> [Entity; 4] {
    [
        Entity::new("Project").field("name", FieldType::Text),
        Entity::new("Task").field("title", FieldType::Text).reference("project", "Project"),
        Entity::new("Tag").field("name", FieldType::Text),
        Entity::join("TaskTag", "task", "Task", "tag", "Tag"),
    ]
}

fn device(name: &str, server: &TestServer) -> Device {
    Device::with(name, entities(), fast_transport(&server.endpoint(), 0), SyncOptions::default())
}

/// The names of the tags of task `A` on a device, through the relation helper.
fn tags_of_a(device: &Device) -> Vec<String> {
    let tags = device.store.related("TaskTag", "task", "A").expect("related");
    tags.iter().map(|t| t.get_str("name").expect("a tag has a name").to_owned()).collect()
}

/// The links as `id → {task, tag}`.
fn links(device: &Device) -> BTreeMap<String, Value> {
    device.all("TaskTag")
}

/// Syncs `a`, then `b`, then `a` again, so that each has pushed its changes and pulled the
/// other's.
async fn exchange(a: &Device, b: &Device) {
    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    a.sync(PreferRemote).await;
}

/// Both devices and the server hold exactly `expected` (`(task, tag)` pairs), each under its
/// derived id, and `tags_of(A)` on both devices is `tags`.
async fn assert_links(server: &TestServer, a: &Device, b: &Device, expected: &[(&str, &str)], tags: &[&str]) {
    let want: BTreeMap<String, Value> =
        expected.iter().map(|(task, tag)| (link_id("TaskTag", task, tag), json!({"task": task, "tag": tag}))).collect();
    assert_eq!(links(a), want, "links on a");
    assert_eq!(links(b), want, "links on b");
    let held = server_objects(&server.endpoint(), "/taskTagChanges").await;
    assert_eq!(project(&held, &["task", "tag"]), want, "links on the server");
    assert_eq!(tags_of_a(a), tags, "tags of A on a");
    assert_eq!(tags_of_a(b), tags, "tags of A on b");
}

async fn concurrent_link_changes_converge_on_both_devices_and_the_server(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = (device("a", &server), device("b", &server));
    a.store.insert_with_id("Task", "A", json!({"title": "write the report"})).unwrap();
    for tag in ["x", "y"] {
        a.store.insert_with_id("Tag", tag, json!({"name": tag})).unwrap();
    }
    exchange(&a, &b).await;

    // Both add A–x before either syncs: one object, not two.
    a.store.link("TaskTag", "A", "x").unwrap();
    b.store.link("TaskTag", "A", "x").unwrap();
    exchange(&a, &b).await;
    assert_links(&server, &a, &b, &[("A", "x")], &["x"]).await;

    // One removes A–x while the other adds A–y.
    assert!(a.store.unlink("TaskTag", "A", "x").unwrap());
    b.store.link("TaskTag", "A", "y").unwrap();
    exchange(&a, &b).await;
    assert_links(&server, &a, &b, &[("A", "y")], &["y"]).await;
    let removed = json!(link_id("TaskTag", "A", "x"));
    let updates = server_updates(&server.endpoint(), "/taskTagChanges").await;
    assert!(
        updates.iter().any(|u| u.get("id") == Some(&removed) && u.get("_removed") == Some(&json!(true))),
        "the removed link is a tombstone on the server: {updates:?}"
    );

    // The device that did not remove it adds it back; and both re-add it concurrently after a
    // second removal.
    b.store.link("TaskTag", "A", "x").unwrap();
    exchange(&b, &a).await;
    assert_links(&server, &a, &b, &[("A", "x"), ("A", "y")], &["x", "y"]).await;
    assert!(b.store.unlink("TaskTag", "A", "x").unwrap());
    exchange(&b, &a).await;
    assert_links(&server, &a, &b, &[("A", "y")], &["y"]).await;
    a.store.link("TaskTag", "A", "x").unwrap();
    b.store.link("TaskTag", "A", "x").unwrap();
    exchange(&a, &b).await;
    assert_links(&server, &a, &b, &[("A", "x"), ("A", "y")], &["x", "y"]).await;

    // The reverse direction agrees too.
    for device in [&a, &b] {
        let tasks = device.store.related("TaskTag", "tag", "x").unwrap();
        assert_eq!(tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["A"], "tasks of x on {}", device.name);
    }
    server.stop().await;
}

async fn a_reference_to_an_object_removed_elsewhere_follows_to_none(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = (device("a", &server), device("b", &server));
    a.store.insert_with_id("Project", "P", json!({"name": "home"})).unwrap();
    a.store.insert_with_id("Task", "A", json!({"title": "paint", "project": "P"})).unwrap();
    exchange(&a, &b).await;

    // What the server holds is the id string, as persistence.js sends a reference.
    let tasks = server_objects(&server.endpoint(), "/taskChanges").await;
    assert_eq!(tasks["A"]["project"], json!("P"));
    let followed = b.store.follow("Task", "A", "project").unwrap().expect("the project is on b");
    assert_eq!((followed.id.as_str(), followed.get_str("name")), ("P", Some("home")));

    b.store.remove("Project", "P").unwrap();
    exchange(&b, &a).await;
    assert_eq!(a.store.follow("Task", "A", "project").unwrap(), None, "on a");
    assert_eq!(b.store.follow("Task", "A", "project").unwrap(), None, "on b");
    server.stop().await;
}

backend_tests!(
    multi_thread: concurrent_link_changes_converge_on_both_devices_and_the_server,
    a_reference_to_an_object_removed_elsewhere_follows_to_none
);
