//! The sync client end to end: devices with real SQLite files syncing through real HTTP with a
//! real server (in this process, on an ephemeral port).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::client_support::{Device, LossyProxy, fast_transport, project, server_objects, server_updates, todo_entity};
use crate::helpers::{Backend, Endpoint, TestServer, backend_tests};
use serde_json::{Value, json};
use sync_client::{
    Conflict, ConflictKind, Cursor, HttpTransport, IdempotencyKey, PreferLocal, PreferRemote, PullPage, PushAck,
    Resolution, Store, SyncOptions, Transport, TransportError,
};

const TODO: &str = "/todoChanges";

async fn assert_converged(server: &TestServer, devices: &[&Device]) {
    let on_server = project(&server_objects(&server.endpoint(), TODO).await, &["text", "done"]);
    for device in devices {
        assert_eq!(device.todos(), on_server, "{} differs from the server", device.name);
        assert_eq!(device.store.pending_changes("Todo").unwrap(), 0, "{} has changes left", device.name);
    }
}

async fn two_devices_converge_through_edits_and_removals(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "milk");
    a.add("2", "bread");
    let report = a.sync(PreferRemote).await;
    assert_eq!((report.pulled(), report.pushed(), report.conflicts()), (0, 2, 0));
    let report = b.sync(PreferRemote).await;
    assert_eq!((report.pulled(), report.pushed()), (2, 0));
    assert_eq!(a.todos(), b.todos());

    b.store.update("Todo", "1", json!({"done": true})).unwrap();
    b.store.remove("Todo", "2").unwrap();
    b.add("3", "eggs");
    b.sync(PreferRemote).await;
    a.sync(PreferRemote).await;
    assert_eq!(a.todos().keys().collect::<Vec<_>>(), ["1", "3"]);
    assert_eq!(a.todos()["1"], json!({"text": "milk", "done": true}));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

async fn three_devices_converge_whatever_the_sync_order(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let devices: Vec<Device> = ["a", "b", "c"].iter().map(|n| Device::new(n, &server.endpoint())).collect();
    for (i, device) in devices.iter().enumerate() {
        device.add(&format!("{i}"), &format!("from {}", device.name));
    }
    for i in [2, 1, 0, 2, 1] {
        devices[i].sync(PreferRemote).await;
    }
    devices[0].store.update("Todo", "2", json!({"done": true})).unwrap();
    devices[1].store.update("Todo", "0", json!({"text": "renamed by b"})).unwrap();
    devices[2].store.remove("Todo", "1").unwrap();
    for i in [1, 0, 2, 1, 0] {
        devices[i].sync(PreferRemote).await;
    }
    let refs: Vec<&Device> = devices.iter().collect();
    assert_converged(&server, &refs).await;
    assert_eq!(
        devices[0].todos(),
        [
            ("0".to_owned(), json!({"text": "renamed by b", "done": false})),
            ("2".to_owned(), json!({"text": "from c", "done": true})),
        ]
        .into()
    );
    server.stop().await;
}

/// Two synced devices, then each edits the text of to-do `1` (b also marks it done).
async fn conflicting_text_edits(server: &TestServer) -> (Device, Device) {
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "original");
    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    a.store.update("Todo", "1", json!({"text": "from a"})).unwrap();
    b.store.update("Todo", "1", json!({"text": "from b", "done": true})).unwrap();
    a.sync(PreferRemote).await;
    (a, b)
}

async fn prefer_local_keeps_the_local_value_of_a_conflicting_field(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = conflicting_text_edits(&server).await;
    let report = b.sync(PreferLocal).await;
    let conflicts = &report.entities[0].conflicts;
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].kind, conflicts[0].fields.as_slice()),
        (ConflictKind::Fields, ["text".to_owned()].as_slice())
    );
    assert_eq!(b.todos()["1"], json!({"text": "from b", "done": true}));
    a.sync(PreferRemote).await;
    assert_eq!(a.todos()["1"], json!({"text": "from b", "done": true}));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

async fn prefer_remote_takes_the_server_value_and_keeps_other_local_edits(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = conflicting_text_edits(&server).await;
    let report = b.sync(PreferRemote).await;
    assert_eq!(report.conflicts(), 1);
    assert_eq!(b.todos()["1"], json!({"text": "from a", "done": true}), "b's edit of done does not conflict");
    a.sync(PreferRemote).await;
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

async fn closure_handler_sees_every_side_and_its_merged_value_wins(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = conflicting_text_edits(&server).await;
    let seen: Arc<Mutex<Vec<Conflict>>> = Arc::default();
    let record = Arc::clone(&seen);
    let handler = move |c: &Conflict| {
        record.lock().unwrap().push(c.clone());
        fn text(side: &Option<sync_client::Fields>) -> &str {
            side.as_ref().and_then(|f| f["text"].as_str()).unwrap_or("")
        }
        let mut merged = sync_client::Fields::new();
        merged.insert("text".into(), json!(format!("{} + {}", text(&c.local), text(&c.remote))));
        Resolution::Merged(merged)
    };
    let report = b.sync(handler).await;
    assert_eq!(report.conflicts(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let c = &seen[0];
    assert_eq!((c.entity.as_str(), c.id.as_str(), c.kind), ("Todo", "1", ConflictKind::Fields));
    assert_eq!(c.fields, ["text"]);
    assert_eq!(c.local.as_ref().map(|f| Value::Object(f.clone())), Some(json!({"text": "from b", "done": true})));
    assert_eq!(c.remote.as_ref().map(|f| Value::Object(f.clone())), Some(json!({"text": "from a", "done": false})));
    assert_eq!(c.base.as_ref().map(|f| Value::Object(f.clone())), Some(json!({"text": "original", "done": false})));
    a.sync(PreferRemote).await;
    assert_eq!(a.todos()["1"], json!({"text": "from b + from a", "done": true}));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

async fn invalid_merged_value_fails_the_sync_and_changes_nothing(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (_a, b) = conflicting_text_edits(&server).await;
    let before = b.todos();
    let handler = |_: &Conflict| {
        let mut merged = sync_client::Fields::new();
        merged.insert("text".into(), json!(42));
        Resolution::Merged(merged)
    };
    let err = b.try_sync(handler).await.unwrap_err();
    assert!(matches!(err, sync_client::SyncError::InvalidResolution { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(b.todos(), before);
    assert_eq!(b.store.pending_changes("Todo").unwrap(), 1);
    server.stop().await;
}

async fn disjoint_field_edits_merge_without_a_conflict(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "original");
    a.sync(PreferLocal).await;
    b.sync(PreferLocal).await;
    a.store.update("Todo", "1", json!({"text": "renamed"})).unwrap();
    b.store.update("Todo", "1", json!({"done": true})).unwrap();
    assert_eq!(a.sync(PreferLocal).await.conflicts(), 0);
    assert_eq!(b.sync(PreferLocal).await.conflicts(), 0);
    assert_eq!(a.sync(PreferLocal).await.conflicts(), 0);
    assert_eq!(a.todos()["1"], json!({"text": "renamed", "done": true}));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

/// Device a removes to-do `1` while device b edits it; `remover_first` says who syncs first.
/// Returns both devices after the second one synced with `handler` and the first synced again.
async fn update_versus_remove(server: &TestServer, remover_first: bool, prefer_local: bool) -> (Device, Device) {
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "original");
    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    a.store.remove("Todo", "1").unwrap();
    b.store.update("Todo", "1", json!({"text": "edited"})).unwrap();
    let (first, second) = if remover_first { (&a, &b) } else { (&b, &a) };
    first.sync(PreferRemote).await;
    let report = if prefer_local { second.sync(PreferLocal).await } else { second.sync(PreferRemote).await };
    let conflicts = &report.entities[0].conflicts;
    assert_eq!(conflicts.len(), 1, "update against removal must conflict");
    let expected = if remover_first { ConflictKind::RemoteRemoved } else { ConflictKind::LocalRemoved };
    assert_eq!(conflicts[0].kind, expected);
    first.sync(PreferRemote).await;
    assert_converged(server, &[&a, &b]).await;
    (a, b)
}

async fn update_versus_remove_is_a_conflict_each_handler_decides(backend: Backend) {
    // (remover syncs first, the second device prefers local, whether to-do 1 survives)
    let cases = [
        (true, true, true),   // the editor keeps its edit: the object lives again everywhere
        (true, false, false), // the editor takes the removal
        (false, true, false), // the remover keeps its removal
        (false, false, true), // the remover takes the edited object back
    ];
    for (remover_first, prefer_local, survives) in cases {
        let server = TestServer::start_on(backend).await;
        let (a, _) = update_versus_remove(&server, remover_first, prefer_local).await;
        let expected = survives.then(|| "edited".to_owned());
        assert_eq!(a.text("1"), expected, "remover first: {remover_first}, prefer local: {prefer_local}");
        server.stop().await;
    }
}

/// Forwards to the real transport, and makes one local edit while the first push is in flight.
struct EditDuringPush {
    inner: HttpTransport,
    store: Store,
    edited: AtomicBool,
}

impl Transport for EditDuringPush {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        self.inner.pull(path, since, limit)
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        if !self.edited.swap(true, Ordering::SeqCst) {
            self.store.update("Todo", "1", json!({"text": "edited during the sync"})).expect("edit while pushing");
        }
        self.inner.push(path, body, key)
    }
}

async fn edit_during_sync_is_not_lost(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = (Device::new("a", &server.endpoint()), Device::new("b", &server.endpoint()));
    a.add("1", "before the sync");
    let racing = EditDuringPush {
        inner: fast_transport(&server.endpoint(), 0),
        store: a.store.clone(),
        edited: AtomicBool::new(false),
    };
    let syncer = a.through(racing, SyncOptions::default());
    let report = crate::client_support::run_sync(syncer, PreferRemote).await.unwrap();
    assert_eq!(report.pushed(), 1);
    assert_eq!(a.text("1").as_deref(), Some("edited during the sync"));
    assert_eq!(a.store.pending_changes("Todo").unwrap(), 1, "the edit made in flight is still to push");
    assert_eq!(server_objects(&server.endpoint(), TODO).await["1"]["text"], "before the sync");

    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    assert_eq!(b.text("1").as_deref(), Some("edited during the sync"));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

/// The last text written to each to-do, in the order the store took the writes: every edit holds
/// the lock across its store write, whichever thread makes it.
#[derive(Clone, Default)]
struct EditLog(Arc<Mutex<std::collections::BTreeMap<String, String>>>);

impl EditLog {
    fn edit(&self, store: &Store, id: &str, text: String) {
        let mut last = self.0.lock().unwrap();
        store.update("Todo", id, json!({"text": text})).expect("edit");
        last.insert(id.to_string(), text);
    }
}

/// Edits one to-do while each push is on the wire, after the sync captured what it sends, so every
/// push has an edit racing it (a free-running writer hits that window only by chance).
struct EditsDuringPushes {
    inner: HttpTransport,
    store: Store,
    ids: Vec<String>,
    log: EditLog,
    pushes: AtomicUsize,
}

impl Transport for EditsDuringPushes {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        self.inner.pull(path, since, limit)
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        let n = self.pushes.fetch_add(1, Ordering::SeqCst);
        self.log.edit(&self.store, &self.ids[n * 3 % self.ids.len()], format!("in-flight edit {n}"));
        self.inner.push(path, body, key)
    }
}

async fn edits_racing_repeated_syncs_all_reach_the_server(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = Device::new("a", &server.endpoint());
    let ids: Vec<String> = (0..10).map(|i| format!("{i}")).collect();
    for id in &ids {
        a.add(id, "initial");
    }
    let log = EditLog::default();
    let racing = EditsDuringPushes {
        inner: fast_transport(&server.endpoint(), 0),
        store: a.store.clone(),
        ids: ids.clone(),
        log: log.clone(),
        pushes: AtomicUsize::new(0),
    };
    let syncer = a.through(racing, SyncOptions::default());
    // Beside the edits made during each push, a writer thread edits while syncs run back to back.
    // Every few edits it waits for one more sync to finish, so that syncs and edits interleave
    // however the threads are scheduled.
    const EDITS: usize = 300;
    const EDITS_PER_SYNC: usize = 20;
    let syncs = Arc::new(AtomicUsize::new(0));
    let (store, writer_ids, synced, writer_log) = (a.store.clone(), ids.clone(), syncs.clone(), log.clone());
    let writer = std::thread::spawn(move || {
        for n in 0..EDITS {
            if n % EDITS_PER_SYNC == 0 {
                let seen = synced.load(Ordering::SeqCst);
                while synced.load(Ordering::SeqCst) == seen {
                    std::thread::yield_now();
                }
            }
            writer_log.edit(&store, &writer_ids[n * 7 % writer_ids.len()], format!("edit {n}"));
        }
    });
    let mut pushing = 0;
    while !writer.is_finished() {
        let report = crate::client_support::run_sync(syncer.clone(), PreferRemote).await.expect("sync");
        pushing += usize::from(report.pushed() > 0);
        syncs.fetch_add(1, Ordering::SeqCst);
    }
    writer.join().expect("writer");
    // A sync may push the rest of one batch of edits and the start of the next, no fewer.
    assert!(pushing >= EDITS / EDITS_PER_SYNC / 2, "only {pushing} syncs pushed edits while the writer wrote");
    // The edit the last push raced is still to push; a plain sync sends it, and nothing races it.
    assert!(a.store.pending_changes("Todo").unwrap() > 0, "the edit made during the last push is pending");
    a.sync(PreferRemote).await;
    let on_server = server_objects(&server.endpoint(), TODO).await;
    for (id, text) in log.0.lock().unwrap().iter() {
        assert_eq!(a.text(id).as_deref(), Some(text.as_str()));
        assert_eq!(on_server[id]["text"], json!(text), "the last edit of {id} did not reach the server");
    }
    assert_converged(&server, &[&a]).await;
    server.stop().await;
}

async fn lost_push_answer_is_applied_once_on_retry(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let proxy = LossyProxy::start(&server.base_url).await;
    let a = Device::with(
        "a",
        [todo_entity()],
        fast_transport(&server.endpoint().via(&proxy.base_url), 3),
        SyncOptions::default(),
    );
    a.add("1", "milk");
    a.add("2", "bread");
    proxy.drop_next_push_answers(1);
    let report = a.sync(PreferRemote).await;
    assert_eq!(proxy.dropped.load(Ordering::SeqCst), 1, "the first answer was dropped");
    assert_eq!(report.entities[0].replayed_pushes, 1, "the retry was answered from the first application");
    assert_eq!(report.pushed(), 2);
    assert_eq!(a.store.pending_changes("Todo").unwrap(), 0);

    let updates = server_updates(&server.endpoint(), TODO).await;
    assert_eq!(updates.len(), 2);
    let stamps: Vec<i64> = updates.iter().map(|u| u["_lastChange"].as_i64().unwrap()).collect();
    assert_eq!(stamps[0], stamps[1], "one push, one timestamp");
    let now = server.api().pull(TODO, 0).await.now;
    assert_eq!(now, stamps[0], "nothing was applied after the first application");
    server.stop().await;
}

async fn push_whose_answer_was_lost_before_a_crash_is_resent_under_the_same_key(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let proxy = LossyProxy::start(&server.base_url).await;
    let a = Device::with(
        "a",
        [todo_entity()],
        fast_transport(&server.endpoint().via(&proxy.base_url), 0),
        SyncOptions::default(),
    );
    a.add("1", "milk");
    a.add("2", "bread");
    proxy.drop_next_push_answers(1);
    let err = a.try_sync(PreferRemote).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let applied = server_updates(&server.endpoint(), TODO).await;
    assert_eq!(applied.len(), 2, "the server applied the push whose answer was lost");
    let first_stamp = applied[0]["_lastChange"].as_i64().unwrap();
    assert_eq!(a.store.pending_changes("Todo").unwrap(), 2, "unacknowledged changes stay dirty");

    // The app goes on, then restarts: a new store and syncer on the same file.
    a.store.update("Todo", "1", json!({"text": "oat milk"})).unwrap();
    let reopened = Store::open(&a.path, [todo_entity()]).unwrap();
    let syncer = Arc::new(sync_client::Syncer::new(reopened.clone(), fast_transport(&server.endpoint(), 0)));
    let report = crate::client_support::run_sync(syncer, PreferRemote).await.unwrap();
    assert_eq!(report.entities[0].replayed_pushes, 1, "the recorded push was sent again under its key");
    assert_eq!(report.entities[0].conflicts, vec![], "its echo is no conflict");
    assert_eq!(reopened.pending_changes("Todo").unwrap(), 0);

    let updates = server_updates(&server.endpoint(), TODO).await;
    let by_id = |id: &str| updates.iter().find(|u| u["id"] == id).cloned().unwrap();
    assert_eq!(by_id("2")["_lastChange"], first_stamp, "bread was applied once");
    assert_eq!(by_id("1")["text"], "oat milk");
    assert!(by_id("1")["_lastChange"].as_i64().unwrap() > first_stamp);
    server.stop().await;
}

async fn paged_pull_follows_more_until_the_delta_is_complete(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    for i in 0..10 {
        api.push(TODO, json!([{"id": format!("{i:02}"), "text": format!("item {i}"), "done": false}])).await;
    }
    let options = SyncOptions { page_size: Some(3), ..SyncOptions::default() };
    let a = Device::with("a", [todo_entity()], fast_transport(&server.endpoint(), 0), options);
    let report = a.sync(PreferRemote).await;
    assert_eq!(report.pulled(), 10);
    assert_eq!(a.todos().len(), 10);
    let b = Device::with("b", [todo_entity()], fast_transport(&server.endpoint(), 0), options);
    for i in 0..7 {
        b.add(&format!("b{i}"), "from b");
    }
    let options = SyncOptions { push_batch: 2, ..options };
    let batched = b.through(fast_transport(&server.endpoint(), 0), options);
    let report = crate::client_support::run_sync(batched, PreferRemote).await.unwrap();
    assert_eq!(report.pushed(), 7);
    a.sync(PreferRemote).await;
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

async fn syncs_with_the_real_server_without_extensions(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let base_only = SyncOptions { page_size: None, idempotency: false, ..SyncOptions::default() };
    let a = Device::with("a", [todo_entity()], fast_transport(&server.endpoint(), 0), base_only);
    let b = Device::with("b", [todo_entity()], fast_transport(&server.endpoint(), 0), base_only);
    a.add("1", "milk");
    a.sync(PreferRemote).await;
    b.sync(PreferRemote).await;
    b.store.update("Todo", "1", json!({"done": true})).unwrap();
    a.store.update("Todo", "1", json!({"text": "oat milk"})).unwrap();
    b.sync(PreferRemote).await;
    assert_eq!(a.sync(PreferRemote).await.conflicts(), 0);
    b.sync(PreferRemote).await;
    assert_eq!(b.todos()["1"], json!({"text": "oat milk", "done": true}));
    assert_converged(&server, &[&a, &b]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_the_sync_retryably_and_keeps_local_data() {
    let (_refusing, port) = crate::helpers::refusing_port();
    let a = Device::new("a", &Endpoint::open(&format!("http://127.0.0.1:{port}")));
    a.add("1", "offline");
    let err = a.try_sync(PreferRemote).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("Todo"), "{err}");
    assert_eq!(a.text("1").as_deref(), Some("offline"));
    assert_eq!(a.store.pending_changes("Todo").unwrap(), 1);
}

async fn new_field_is_filled_from_the_server_after_migration(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    server.api().push(TODO, json!([{"id": "1", "text": "milk", "done": false, "priority": 2}])).await;
    let a = Device::new("a", &server.endpoint());
    a.sync(PreferRemote).await;
    let with_priority = todo_entity().field("priority", sync_client::FieldType::Int);
    let reopened = Store::open(&a.path, [with_priority]).unwrap();
    assert_eq!(reopened.get("Todo", "1").unwrap().unwrap().get("priority"), Some(&Value::Null));
    let syncer = Arc::new(sync_client::Syncer::new(reopened.clone(), fast_transport(&server.endpoint(), 0)));
    crate::client_support::run_sync(syncer, PreferRemote).await.unwrap();
    assert_eq!(reopened.get("Todo", "1").unwrap().unwrap().get_i64("priority"), Some(2));
    server.stop().await;
}

#[test]
fn sync_runs_from_a_plain_thread() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let base_url = server.base_url.clone();
    let handle = std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("plain.db"), [todo_entity()]).unwrap();
        store.insert_with_id("Todo", "1", json!({"text": "from a thread"})).unwrap();
        let syncer = sync_client::Syncer::new(store, HttpTransport::new(&base_url).unwrap());
        syncer.sync_all(&PreferRemote).map(|r| r.pushed())
    });
    assert_eq!(handle.join().unwrap().unwrap(), 1);
    let objects = runtime.block_on(server_objects(&server.endpoint(), TODO));
    assert_eq!(objects["1"]["text"], "from a thread");
    runtime.block_on(server.stop());
}

backend_tests!(
    multi_thread:
    two_devices_converge_through_edits_and_removals,
    three_devices_converge_whatever_the_sync_order,
    prefer_local_keeps_the_local_value_of_a_conflicting_field,
    prefer_remote_takes_the_server_value_and_keeps_other_local_edits,
    closure_handler_sees_every_side_and_its_merged_value_wins,
    invalid_merged_value_fails_the_sync_and_changes_nothing,
    disjoint_field_edits_merge_without_a_conflict,
    update_versus_remove_is_a_conflict_each_handler_decides,
    edit_during_sync_is_not_lost,
    edits_racing_repeated_syncs_all_reach_the_server,
    lost_push_answer_is_applied_once_on_retry,
    push_whose_answer_was_lost_before_a_crash_is_resent_under_the_same_key,
    paged_pull_follows_more_until_the_delta_is_complete,
    syncs_with_the_real_server_without_extensions,
    new_field_is_filled_from_the_server_after_migration,
);
