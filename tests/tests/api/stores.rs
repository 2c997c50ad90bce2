//! The `Store` contract, checked directly (no HTTP) against every store: merge rules, tombstones,
//! idempotency, paging, opaque ids, unique timestamps under concurrent pushes, and migrations run
//! by several instances at once.

use std::collections::HashSet;
use std::sync::Arc;

use crate::helpers::{Backend, TestDb, backend_tests};
use crate::store_clock::ManualClock;
use sync_proto::{Change, Cursor, EntityName, IdempotencyKey, Limits, PullQuery, parse_push};
use sync_server::store::idempotency::DEFAULT_TTL;
use sync_server::store::{
    Idempotency, PostgresOptions, PostgresStore, PullPage, Push, Routes, Scope, Store, StoreError,
};

/// An idempotency key for a push whose body is `body`, kept for the default time.
fn key_for(key: &IdempotencyKey, body: &str) -> Option<Idempotency> {
    Some(Idempotency::new(key.clone(), body.as_bytes(), DEFAULT_TTL))
}

/// The changes of a push body, parsed as the server parses them.
fn changes(body: &str) -> Vec<Change> {
    parse_push(body.as_bytes(), &Limits::default(), None).unwrap()
}

async fn push(store: &Arc<dyn Store>, entity: &Scope, body: &str) -> i64 {
    store.push(entity, Push::new(changes(body))).await.unwrap().now.millis()
}

async fn pull(store: &Arc<dyn Store>, entity: &Scope, since: i64, limit: Option<usize>) -> PullPage {
    store.pull(entity, PullQuery { since: Cursor::from_millis(since), limit, ..PullQuery::default() }).await.unwrap()
}

/// `(id, last_change, fields JSON or None)` of each object of a page.
fn rows(page: &PullPage) -> Vec<(String, i64, Option<String>)> {
    page.objects
        .iter()
        .map(|o| (o.id.clone(), o.last_change.millis(), o.fields.as_ref().map(|f| f.as_json().to_owned())))
        .collect()
}

async fn a_push_merges_fields_and_keeps_null(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    let empty = pull(&store, &task, 0, None).await;
    assert_eq!((empty.objects.len(), empty.now.millis(), empty.more), (0, 0, false));

    let t1 = push(&store, &task, r#"[{"id":"a","name":"x","n":3.0,"due":null}]"#).await;
    let t2 = push(&store, &task, r#"[{"id":"a","n":1e2,"done":true}]"#).await;
    assert!(t2 > t1);
    let page = pull(&store, &task, 0, None).await;
    assert_eq!(page.now.millis(), t2);
    assert_eq!(
        rows(&page),
        [("a".to_owned(), t2, Some(r#"{"name":"x","n":1e2,"due":null,"done":true}"#.to_owned()))],
        "sent fields replace stored ones in place, absent ones stay, new ones are appended, text is kept"
    );
    assert!(pull(&store, &task, t2, None).await.objects.is_empty());
}

async fn removals_leave_tombstones_and_removing_twice_changes_nothing(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    let t1 = push(&store, &task, r#"[{"id":"a","v":1},{"id":"b","v":2}]"#).await;
    let t2 = push(&store, &task, r#"[{"id":"a","_removed":true},{"id":"never","_removed":true}]"#).await;
    let page = pull(&store, &task, 0, None).await;
    assert_eq!(rows(&page), [("b".to_owned(), t1, Some(r#"{"v":2}"#.to_owned())), ("a".to_owned(), t2, None)]);

    // Removing again, or removing an unknown id, is not an error and changes nothing but the clock.
    let t3 = push(&store, &task, r#"[{"id":"a","_removed":true},{"id":"never","_removed":true}]"#).await;
    assert!(t3 > t2);
    let page = pull(&store, &task, t2, None).await;
    assert!(page.objects.is_empty(), "{:?}", rows(&page));
    assert_eq!(page.now.millis(), t3);

    // A removed object is re-created from the fields sent, without its old ones.
    let t4 = push(&store, &task, r#"[{"id":"a","w":true}]"#).await;
    assert_eq!(rows(&pull(&store, &task, t3, None).await), [("a".to_owned(), t4, Some(r#"{"w":true}"#.to_owned()))]);

    // In one push, changes to one id apply in order.
    let t5 =
        push(&store, &task, r#"[{"id":"c","v":1},{"id":"c","_removed":true},{"id":"b","x":1},{"id":"b","v":9}]"#).await;
    assert_eq!(
        rows(&pull(&store, &task, t4, None).await),
        [("b".to_owned(), t5, Some(r#"{"v":9,"x":1}"#.to_owned())), ("c".to_owned(), t5, None)]
    );
}

async fn an_empty_push_advances_the_clock_and_nothing_else(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    let t1 = push(&store, &task, "[]").await;
    let t2 = push(&store, &task, "[]").await;
    assert!(t2 > t1 && t1 > 0);
    let page = pull(&store, &task, 0, None).await;
    assert!(page.objects.is_empty());
    assert_eq!(page.now.millis(), t2, "the high-water mark is the last push, even an empty one");
    assert_eq!(pull(&store, &backend.scope("Other"), 0, None).await.now.millis(), 0, "each entity has its own clock");
}

async fn an_idempotent_push_is_applied_once_and_its_key_is_bound_to_its_body(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    let key = IdempotencyKey::new("push-1").unwrap();
    let first = Push {
        changes: changes(r#"[{"id":"a","v":1}]"#),
        idempotency: key_for(&key, "f1"),
        request_id: None,
        preconditions: false,
    };
    let applied = store.push(&task, first.clone()).await.unwrap();
    assert!(!applied.replayed);
    let later = push(&store, &task, r#"[{"id":"a","v":2}]"#).await;

    let replayed = store.push(&task, first).await.unwrap();
    assert_eq!((replayed.now, replayed.replayed), (applied.now, true), "the original answer, not applied again");
    let page = pull(&store, &task, 0, None).await;
    assert_eq!(rows(&page), [("a".to_owned(), later, Some(r#"{"v":2}"#.to_owned()))]);
    assert_eq!(page.now.millis(), later, "a replay does not advance the clock");

    let other_body = Push {
        changes: changes(r#"[{"id":"b"}]"#),
        idempotency: key_for(&key, "f2"),
        request_id: None,
        preconditions: false,
    };
    assert!(matches!(store.push(&task, other_body).await, Err(StoreError::IdempotencyKeyReused(k)) if k == "push-1"));
    assert!(pull(&store, &task, later, None).await.objects.is_empty(), "a refused push applies nothing");

    // Keys are per entity.
    let elsewhere =
        Push { changes: changes("[]"), idempotency: key_for(&key, "f3"), request_id: None, preconditions: false };
    assert!(!store.push(&backend.scope("Other"), elsewhere).await.unwrap().replayed);
}

async fn an_expired_idempotency_key_is_never_replayed_and_is_purged(backend: Backend) {
    let db = TestDb::create(backend).await;
    // The store's own wall clock, moved by hand: expiry is decided by the clock, not by how fast
    // this machine runs the test.
    let start = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::at(start));
    let store = db.open_store_with_clock(clock.clone()).await;
    let task = backend.scope("Task");
    let key = IdempotencyKey::new("short-lived").unwrap();
    let ttl = std::time::Duration::from_millis(200);
    let push_with_key = || Push {
        changes: changes(r#"[{"id":"a","v":1}]"#),
        idempotency: Some(Idempotency::new(key.clone(), b"same body", ttl)),
        request_id: None,
        preconditions: false,
    };
    let first = store.push(&task, push_with_key()).await.unwrap();
    clock.set(start + 100);
    assert!(store.push(&task, push_with_key()).await.unwrap().replayed, "within its time to live, a replay");
    clock.set(start + 1_000);
    let again = store.push(&task, push_with_key()).await.unwrap();
    assert!(!again.replayed && again.now > first.now, "an expired key is a new push, purged or not");
    assert!(store.push(&task, push_with_key()).await.unwrap().replayed, "and is remembered anew");

    let now_ms = start + 1_000;
    assert_eq!(store.purge_idempotency_keys(now_ms - 60_000, 10).await.unwrap(), 0, "nothing that old");
    assert_eq!(store.purge_idempotency_keys(now_ms + 1, 10).await.unwrap(), 1, "one key per (scope, key)");
    assert_eq!(store.purge_idempotency_keys(now_ms + 1, 10).await.unwrap(), 0);
    assert!(!store.push(&task, push_with_key()).await.unwrap().replayed, "a purged key is forgotten");
}

async fn partitions_share_nothing_not_even_ids_clocks_or_keys(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let name = EntityName::new("Task").unwrap();
    let (alice, bob, outside) = (
        Scope::partitioned(name.clone(), "alice"),
        Scope::partitioned(name.clone(), "bob"),
        Scope::entity(name.clone()),
    );
    let a1 = push(&store, &alice, r#"[{"id":"same","owner":"alice"},{"id":"only-alice"}]"#).await;
    assert_eq!(pull(&store, &bob, 0, None).await.now.millis(), 0, "bob's clock has not moved");
    let b1 = push(&store, &bob, r#"[{"id":"same","owner":"bob"}]"#).await;
    push(&store, &bob, r#"[{"id":"only-alice","_removed":true}]"#).await;
    let rows_of = |page: &PullPage| rows(page).into_iter().map(|(id, _, f)| (id, f)).collect::<Vec<_>>();
    assert_eq!(
        rows_of(&pull(&store, &alice, 0, None).await),
        [
            ("only-alice".to_owned(), Some("{}".to_owned())),
            ("same".to_owned(), Some(r#"{"owner":"alice"}"#.to_owned()))
        ],
        "bob's push of the same id and his removal of an id he does not have leave alice's objects alone"
    );
    assert_eq!(
        rows_of(&pull(&store, &bob, 0, Some(1)).await),
        [("same".to_owned(), Some(r#"{"owner":"bob"}"#.to_owned()))]
    );
    assert!(pull(&store, &outside, 0, None).await.objects.is_empty(), "nothing outside the partitions");
    assert_eq!(pull(&store, &alice, a1, None).await.now.millis(), a1, "alice's cursor is her own clock");
    assert!(b1 > 0);

    let key = IdempotencyKey::new("k").unwrap();
    let keyed = |body: &str| Push {
        changes: changes(body),
        idempotency: key_for(&key, "same bytes"),
        request_id: None,
        preconditions: false,
    };
    let first = store.push(&alice, keyed(r#"[{"id":"k1"}]"#)).await.unwrap();
    let other = store.push(&bob, keyed(r#"[{"id":"k1"}]"#)).await.unwrap();
    assert!(!other.replayed, "another partition's key never replays someone else's answer");
    assert!(store.push(&alice, keyed(r#"[{"id":"k1"}]"#)).await.unwrap().replayed);
    assert_ne!(first.now, Cursor::ZERO);
}

async fn pages_never_split_one_push_and_cover_everything(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    let t1 = push(&store, &task, r#"[{"id":"a"},{"id":"b"}]"#).await;
    let t2 = push(&store, &task, r#"[{"id":"c"},{"id":"d"},{"id":"e"},{"id":"f"}]"#).await;
    let t3 = push(&store, &task, r#"[{"id":"g"}]"#).await;

    let p1 = pull(&store, &task, 0, Some(3)).await;
    assert_eq!((p1.objects.len(), p1.now.millis(), p1.more), (2, t1, true), "the page ends before the split push");
    let p2 = pull(&store, &task, t1, Some(3)).await;
    assert_eq!((p2.objects.len(), p2.now.millis(), p2.more), (4, t2, true), "one push larger than a page comes whole");
    let p3 = pull(&store, &task, t2, Some(3)).await;
    assert_eq!((p3.objects.len(), p3.now.millis(), p3.more), (1, t3, false));
    let ids: Vec<String> = [p1, p2, p3].iter().flat_map(|p| p.objects.iter().map(|o| o.id.clone())).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e", "f", "g"]);

    let last = pull(&store, &task, t3, Some(3)).await;
    assert_eq!((last.objects.len(), last.now.millis(), last.more), (0, t3, false));
}

/// The `text` of each of the 600 objects [`push_600_kb`] stores.
fn text_of_600_kb() -> String {
    "x".repeat(1000)
}

/// Pushes 600 objects of about 1 KB each (ids `0-0` to `5-99`, in six pushes): an answer larger
/// than the chunks that may wait for a reader.
async fn push_600_kb(store: &Arc<dyn Store>, scope: &Scope) {
    let text = text_of_600_kb();
    for batch in 0..6 {
        let body: Vec<_> = (0..100).map(|i| serde_json::json!({"id": format!("{batch}-{i}"), "text": text})).collect();
        push(store, scope, &serde_json::Value::Array(body).to_string()).await;
    }
}

async fn a_streamed_pull_is_the_same_answer_in_chunks(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    push_600_kb(&store, &task).await;
    let text = text_of_600_kb();
    let removed = push(&store, &task, r#"[{"id":"0-0","_removed":true}]"#).await;
    let page = pull(&store, &task, 0, None).await;

    let mut chunks = store.pull_stream(&task, PullQuery::default()).await.unwrap();
    let mut answer = Vec::new();
    let mut count = 0;
    while let Some(chunk) = chunks.recv().await {
        answer.extend_from_slice(&chunk.unwrap());
        count += 1;
    }
    assert!(count > 1, "the answer came in one chunk");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["now"], removed);
    assert_eq!(answer.as_object().unwrap().len(), 2, "an unpaged answer has only updates and now: {}", answer["more"]);
    assert_eq!(answer["updates"].as_array().unwrap().len(), page.objects.len());
    assert_eq!(answer["updates"][599], serde_json::json!({"id": "0-0", "_removed": true, "_lastChange": removed}));
    assert_eq!(answer["updates"][0]["text"], text.as_str());

    // A streamed pull from the last cursor is empty, with the same high-water mark.
    let mut chunks = store
        .pull_stream(&task, PullQuery { since: Cursor::from_millis(removed), ..PullQuery::default() })
        .await
        .unwrap();
    let tail = chunks.recv().await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&tail).unwrap(),
        serde_json::json!({"updates": [], "now": removed})
    );
    assert!(chunks.recv().await.is_none());
}

/// A streamed answer waits for a client that reads nothing for as long as the server's
/// `send_timeout_secs`, and no longer: two stores opened as the server opens them, with 1 s and
/// with 5 s, each answering about 600 KB (more chunks than wait for a reader) to a reader that
/// starts after 2 s. The first has given up, its answer cut short; the second answers in full.
async fn a_streamed_answer_waits_for_its_reader_as_long_as_the_send_timeout(backend: Backend) {
    let db = TestDb::create(backend).await;
    let task = backend.scope("Task");
    push_600_kb(&db.open_store().await, &task).await;
    let url = sync_server::config::DbUrl::parse(&db.url).unwrap();
    for (send_timeout_secs, whole) in [(1, false), (5, true)] {
        let config = sync_server::Config { send_timeout_secs, ..sync_server::Config::default() };
        let store = sync_server::startup::open_store(&url, &config, Routes::default()).await.unwrap();
        let mut chunks = store.pull_stream(&task, PullQuery::default()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let mut answer = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            answer.extend_from_slice(&chunk.unwrap());
        }
        match serde_json::from_slice::<serde_json::Value>(&answer) {
            Ok(json) => {
                assert!(whole, "send_timeout_secs = {send_timeout_secs}: the answer should have been cut short");
                assert_eq!(json["updates"].as_array().unwrap().len(), 600);
            }
            Err(e) => {
                assert!(!whole, "send_timeout_secs = {send_timeout_secs}: cut short after {} bytes: {e}", answer.len())
            }
        }
    }
}

async fn ids_are_opaque_strings(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_store().await;
    let task = backend.scope("Task");
    let ids = ["Z", "a", "é", "😀", "with space", "nul\u{0}inside", "'; DROP TABLE x; --", "A"];
    let body = serde_json::Value::Array(ids.iter().map(|id| serde_json::json!({"id": id, "s": id})).collect());
    let now = push(&store, &task, &body.to_string()).await;
    let page = pull(&store, &task, 0, None).await;
    let got: Vec<&str> = page.objects.iter().map(|o| o.id.as_str()).collect();
    let mut want = ids.to_vec();
    want.sort(); // byte order within one push, as every store sorts
    assert_eq!(got, want);
    assert!(page.objects.iter().all(|o| o.last_change.millis() == now));
    push(&store, &task, r#"[{"id":"nul\u0000inside","_removed":true}]"#).await;
    let page = pull(&store, &task, now, None).await;
    assert_eq!(page.objects.len(), 1);
    assert_eq!((page.objects[0].id.as_str(), page.objects[0].fields.is_none()), ("nul\u{0}inside", true));
}

/// Runs `writer(store, scope, t)` for each `t` in `0..count` at once, alternating between the two
/// stores (two server instances over one database); their outputs, in order of `t`.
async fn writers_at_once<T, F, W>(stores: &[Arc<dyn Store>; 2], scope: &Scope, count: usize, writer: W) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
    W: Fn(Arc<dyn Store>, Scope, usize) -> F,
{
    let handles: Vec<_> =
        (0..count).map(|t| tokio::spawn(writer(Arc::clone(&stores[t % 2]), scope.clone(), t))).collect();
    let mut outputs = Vec::with_capacity(count);
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

async fn concurrent_pushes_to_one_entity_get_unique_increasing_timestamps(backend: Backend) {
    const TASKS: usize = 8;
    const PUSHES: usize = 25;
    let db = TestDb::create(backend).await;
    // Two stores over one database stand for two server instances.
    let stores = [db.open_store().await, db.open_store().await];
    let task = backend.scope("Task");
    let writers = writers_at_once(&stores, &task, TASKS, |store, task, t| async move {
        let mut nows = Vec::new();
        for i in 0..PUSHES {
            nows.push(push(&store, &task, &format!(r#"[{{"id":"t{t}","i":{i}}},{{"id":"shared","by":{t}}}]"#)).await);
        }
        nows
    })
    .await;
    let mut all = Vec::new();
    for nows in writers {
        assert!(nows.windows(2).all(|w| w[0] < w[1]), "one writer's pushes are ordered: {nows:?}");
        all.extend(nows);
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), TASKS * PUSHES, "every push has its own timestamp");

    let page = pull(&stores[1], &task, 0, None).await;
    assert_eq!(page.now.millis(), *unique.iter().max().unwrap());
    assert_eq!(page.objects.len(), TASKS + 1);
    for t in 0..TASKS {
        let o = page.objects.iter().find(|o| o.id == format!("t{t}")).unwrap();
        assert_eq!(o.fields.as_ref().unwrap().get("i").as_deref(), Some(&*(PUSHES - 1).to_string()));
    }
}

/// Each push merges onto what the one before it committed: writers that each change only their
/// own field of one object, at once through two instances, leave every writer's last value. A
/// push whose read ran before it held the clock would merge onto an older object and put back
/// another writer's earlier value.
async fn concurrent_partial_updates_of_one_object_all_merge(backend: Backend) {
    const TASKS: usize = 8;
    const PUSHES: usize = 25;
    let db = TestDb::create(backend).await;
    let stores = [db.open_store().await, db.open_store().await];
    let task = backend.scope("Task");
    writers_at_once(&stores, &task, TASKS, |store, task, t| async move {
        for i in 1..=PUSHES {
            push(&store, &task, &format!(r#"[{{"id":"shared","f{t}":{i}}}]"#)).await;
        }
    })
    .await;
    let page = pull(&stores[0], &task, 0, None).await;
    let fields = page.objects[0].fields.as_ref().unwrap();
    for t in 0..TASKS {
        assert_eq!(fields.get(&format!("f{t}")).as_deref(), Some(&*PUSHES.to_string()), "{}", fields.as_json());
    }
}

async fn instances_starting_together_migrate_once(backend: Backend) {
    let db = TestDb::create(backend).await;
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.open_store().await })
        })
        .collect();
    let mut stores = Vec::new();
    for store in opening {
        stores.push(store.await.unwrap());
    }
    let task = backend.scope("Task");
    let now = push(&stores[0], &task, r#"[{"id":"a"}]"#).await;
    for store in &stores {
        assert_eq!(pull(store, &task, 0, None).await.now.millis(), now);
        store.health().await.unwrap();
    }
    // Opening again, with everything applied, changes nothing.
    let again = db.open_store().await;
    assert_eq!(pull(&again, &task, 0, None).await.objects.len(), 1);
}

backend_tests!(
    a_push_merges_fields_and_keeps_null,
    removals_leave_tombstones_and_removing_twice_changes_nothing,
    an_empty_push_advances_the_clock_and_nothing_else,
    an_idempotent_push_is_applied_once_and_its_key_is_bound_to_its_body,
    an_expired_idempotency_key_is_never_replayed_and_is_purged,
    pages_never_split_one_push_and_cover_everything,
    a_streamed_pull_is_the_same_answer_in_chunks,
    a_streamed_answer_waits_for_its_reader_as_long_as_the_send_timeout,
    ids_are_opaque_strings,
);
backend_tests!(per_database: partitions_share_nothing_not_even_ids_clocks_or_keys);
backend_tests!(
    multi_thread: concurrent_pushes_to_one_entity_get_unique_increasing_timestamps,
    concurrent_partial_updates_of_one_object_all_merge,
    instances_starting_together_migrate_once
);

#[tokio::test]
async fn an_unreachable_postgres_fails_start_up_with_a_clear_error() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let url = "postgres://sync@127.0.0.1:1/sync";
    let err = PostgresStore::connect(url, PostgresOptions { connect_timeout_ms: 2_000, ..PostgresOptions::default() })
        .await
        .err()
        .expect("no database there");
    let message = sync_server::error::chain(&err);
    assert!(matches!(err, StoreError::Unavailable { .. }), "{message}");
    assert!(message.contains("cannot connect to postgres://sync@127.0.0.1:1/sync"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "the cause is kept: {message}");
}

#[tokio::test]
async fn a_postgres_schema_newer_than_the_server_is_refused() {
    if !Backend::POSTGRES.is_available("a_postgres_schema_newer_than_the_server_is_refused") {
        return;
    }
    let db = TestDb::create(Backend::POSTGRES).await;
    drop(db.open_store().await);
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO sync_schema_migrations (version, description) VALUES (999, 'from the future')")
        .await
        .unwrap();
    let err = PostgresStore::connect(&db.url, PostgresOptions::default()).await.err().expect("refused");
    assert!(err.to_string().contains("newer than this server"), "{err}");
}

#[tokio::test]
async fn the_readme_recipe_gives_objects_stored_before_auth_to_one_partition() {
    let db = TestDb::create(Backend::SQLITE).await;
    let task = EntityName::new("Task").unwrap();
    let store = db.open_store().await;
    let before = push(&store, &Scope::entity(task.clone()), r#"[{"id":"a","v":1},{"id":"b","_removed":true}]"#).await;
    let alice = Scope::partitioned(task.clone(), "user:alice");
    let hers = push(&store, &alice, r#"[{"id":"c","v":3}]"#).await;
    drop(store);

    let recipe = crate::docs::marked_block(include_str!("../../../README.md"), "assign unpartitioned objects");
    let path = db.url.strip_prefix("sqlite://").unwrap();
    rusqlite::Connection::open(path).unwrap().execute_batch(recipe).unwrap();

    let store = db.open_store().await;
    assert!(pull(&store, &Scope::entity(task), 0, None).await.objects.is_empty(), "nothing left outside");
    let page = pull(&store, &alice, hers, None).await;
    let moved: Vec<_> = rows(&page).into_iter().map(|(id, at, _)| (id, at > hers && at > before)).collect();
    assert_eq!(moved, [("a".to_owned(), true)], "a device that synced already gets the moved object");
    assert_eq!(pull(&store, &alice, 0, None).await.objects.len(), 2, "hers and the moved one");
}
