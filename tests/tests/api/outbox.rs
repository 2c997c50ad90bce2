//! Every change reaches the other systems: pushes append outbox events in their transaction, and
//! workers deliver them as signed webhooks to a real receiver over HTTP, at least once, in order
//! per object, with every failed attempt kept, dead events redriven, across instances and through
//! a SIGKILL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use sync_proto::webhook::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use sync_server::Config;
use sync_server::outbox::{OutboxConfig, WebhookConfig};
use sync_server::store::outbox::EventFilter;
use tokio::io::AsyncBufReadExt;

use crate::helpers::{Api, Backend, OPERATOR, ServerProcess, TestDb, TestServer, backend_tests, with_operator};

const SECRET: &str = "whsec_dGhlIHNlY3JldCBvZiB0aGUgb3V0Ym94IHRlc3Rz";

/// What a receiver does with a request: its status, from the event.
pub(crate) type Policy = Arc<dyn Fn(&Value) -> u16 + Send + Sync>;

/// A webhook receiver: checks every signature, records every request it accepted (2xx), and
/// notices two requests for one event at the same time.
#[derive(Clone)]
pub(crate) struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    policy: Mutex<Policy>,
    /// Every event answered 2xx, in the order answered.
    delivered: Mutex<Vec<Value>>,
    /// Every request, whatever it was answered.
    requests: AtomicUsize,
    in_flight: Mutex<HashSet<String>>,
    overlaps: AtomicUsize,
    bad_signatures: AtomicUsize,
    /// Requests that carried a batch.
    batches: AtomicUsize,
    /// While true, every request is answered 503 (the receiver is "down").
    down: AtomicBool,
}

impl Receiver {
    pub(crate) async fn start(policy: Policy) -> Self {
        let state = Arc::new(ReceiverState {
            policy: Mutex::new(policy),
            delivered: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            in_flight: Mutex::new(HashSet::new()),
            overlaps: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let data = web::Data::from(Arc::clone(&state));
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(2)
            .shutdown_timeout(1)
            .listen(listener)
            .unwrap()
            .run();
        tokio::spawn(server);
        Self { url: format!("http://127.0.0.1:{port}/hooks"), state }
    }

    pub(crate) fn set_policy(&self, policy: Policy) {
        *self.state.policy.lock().unwrap() = policy;
    }

    fn delivered(&self) -> Vec<Value> {
        self.state.delivered.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was delivered, for at most `secs`.
    pub(crate) async fn wait_for(&self, secs: u64, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let delivered = self.delivered();
            if done(&delivered) {
                return delivered;
            }
            assert!(Instant::now() < deadline, "{what}: not within {secs} s; delivered {}", delivered.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn webhook(&self, name: &str, schedule: &[f64]) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: self.url.clone(),
            secrets: vec![SECRET.into()],
            entities: vec![],
            timeout_secs: 5.0,
            schedule_secs: schedule.to_vec(),
            jitter: 0.1,
            concurrency: 8,
            batch: 1,
        }
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<ReceiverState>) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (id, timestamp, signature) = (header(ID_HEADER), header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
    if verify(&[SECRET], &id, &timestamp, &signature, &body, now, 300).is_err() {
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::Unauthorized().finish();
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    let events = if body["type"] == "batch" {
        assert!(id.starts_with("batch_"), "a batch has an id of its own: {id}");
        state.batches.fetch_add(1, Ordering::SeqCst);
        body["events"].as_array().unwrap().clone()
    } else {
        assert_eq!(body["id"], json!(id), "webhook-id is the event id");
        vec![body]
    };
    let ids: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    for id in &ids {
        if !state.in_flight.lock().unwrap().insert(id.clone()) {
            state.overlaps.fetch_add(1, Ordering::SeqCst);
        }
    }
    // A little time in flight, so that overlapping deliveries would meet.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let status = if state.down.load(Ordering::SeqCst) {
        503
    } else {
        let policy = state.policy.lock().unwrap();
        events.iter().map(&**policy).max().unwrap_or(200)
    };
    for id in &ids {
        state.in_flight.lock().unwrap().remove(id);
    }
    if (200..300).contains(&status) {
        state.delivered.lock().unwrap().extend(events);
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .body(format!("the receiver answered {status} for {id}"))
}

pub(crate) fn accept_all() -> Policy {
    Arc::new(|_| 204)
}

/// A config delivering to `webhooks`, polling often, with short leases.
pub(crate) fn config_with(webhooks: Vec<WebhookConfig>) -> Config {
    Config {
        webhooks,
        outbox: OutboxConfig { lease_secs: 2, poll_interval_ms: 50, ..OutboxConfig::default() },
        ..Config::default()
    }
}

/// The `(object id, lastChange)` of each delivered event of `entity`, first deliveries only.
fn first_deliveries(delivered: &[Value]) -> Vec<(String, i64)> {
    let mut seen = HashSet::new();
    delivered
        .iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
        .map(|e| (e["object_id"].as_str().unwrap().to_owned(), e["lastChange"].as_i64().unwrap()))
        .collect()
}

/// Checks that each object's events were first delivered in commit order. An object is its
/// entity and id: objects of two entities with the same id are delivered independently.
fn assert_in_order_per_object(delivered: &[Value]) {
    let mut seen = HashSet::new();
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for event in delivered.iter().filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned())) {
        let object = (event["entity"].as_str().unwrap().to_owned(), event["object_id"].as_str().unwrap().to_owned());
        let stamp = event["lastChange"].as_i64().unwrap();
        if let Some(before) = last.insert(object.clone(), stamp) {
            assert!(stamp > before, "{object:?}: {stamp} delivered after {before}");
        }
    }
}

async fn every_applied_change_is_delivered_signed_once_and_in_order(backend: Backend) {
    let receiver = Receiver::start(accept_all()).await;
    let server = TestServer::start_with_on(config_with(vec![receiver.webhook("erp", &[0.0, 0.2])]), backend).await;
    let api = server.api();
    let first = api.push("/taskChanges", json!([{"id": "a", "title": "one"}, {"id": "b", "n": 1.50}])).await;
    let (status, keyed) =
        api.post_with("/taskChanges", r#"[{"id":"a","done":true}]"#, &[("Idempotency-Key", "k1")]).await;
    assert_eq!(status, 200);
    let (_, replayed) =
        api.post_with("/taskChanges", r#"[{"id":"a","done":true}]"#, &[("Idempotency-Key", "k1")]).await;
    assert_eq!(replayed["now"], keyed["now"], "a replay");
    let (status, _) = api.post("/taskChanges", r#"[{"id":"c"},{"id":5}]"#).await;
    assert_eq!(status, 400, "an invalid push applies nothing and appends nothing");
    // Refused inside the store's transaction (a stale base, with a new object beside it).
    let (status, refused) = api
        .post_with(
            "/taskChanges",
            r#"[{"id":"x","title":"new"},{"id":"a","title":"stale","_lastChange":1}]"#,
            &[("Sync-Preconditions", "on")],
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    let removed =
        api.push("/taskChanges", json!([{"id": "b", "_removed": true}, {"id": "never", "_removed": true}])).await;
    api.push("/noteChanges", json!([{"id": "a", "text": "another entity"}])).await;

    let delivered = receiver.wait_for(20, "five events", |d| d.len() >= 5).await;
    // Once nothing waits (the log's backlog included), every event appended was delivered: one
    // per changed object, none for the replay, the invalid push or the refused one, each delivered
    // once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.store.subscriptions(&["erp".into()]).await.unwrap()[0].pending > 0 {
        assert!(Instant::now() < deadline, "events still wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let series = r#"sync_outbox_deliveries_total{outcome="delivered",subscription="erp"}"#;
    assert_eq!(api.metric(series).await, Some(5.0), "one event per changed object, none for the replay");
    let delivered_now = receiver.delivered();
    assert_eq!(delivered_now.len(), 5, "each delivered once: {delivered_now:#?}");
    assert!(delivered_now.iter().all(|e| e["object_id"] != "x"), "the refused push appended events");
    assert_eq!(receiver.state.bad_signatures.load(Ordering::SeqCst), 0);
    assert_in_order_per_object(&delivered);
    let by_key: BTreeMap<(String, String, i64), &Value> = delivered
        .iter()
        .map(|e| {
            let key = (
                e["entity"].as_str().unwrap().to_owned(),
                e["object_id"].as_str().unwrap().to_owned(),
                e["lastChange"].as_i64().unwrap(),
            );
            (key, e)
        })
        .collect();
    let a1 = by_key[&("Task".to_owned(), "a".to_owned(), first)];
    assert_eq!((a1["type"].as_str(), a1["operation"].as_str()), (Some("object.upsert"), Some("upsert")));
    assert_eq!(a1["object"], json!({"title": "one"}));
    assert!(a1["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{a1}");
    let b1 = by_key[&("Task".to_owned(), "b".to_owned(), first)];
    assert_eq!(serde_json::to_string(&b1["object"]).unwrap(), r#"{"n":1.50}"#.replace("1.50", "1.5"));
    let a2 = by_key[&("Task".to_owned(), "a".to_owned(), keyed["now"].as_i64().unwrap())];
    assert_eq!(a2["object"], json!({"title": "one", "done": true}), "the object's state after the change");
    let gone = by_key[&("Task".to_owned(), "b".to_owned(), removed)];
    assert_eq!((gone["operation"].as_str(), gone["type"].as_str()), (Some("remove"), Some("object.remove")));
    assert!(gone["object"].is_null());
    assert!(by_key.keys().any(|(entity, _, _)| entity == "Note"), "every entity, by default");
    let ids: HashSet<&str> = delivered.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "event ids are unique");

    let stats = server.store.subscriptions(&["erp".into()]).await.unwrap();
    assert_eq!((stats[0].pending, stats[0].dead), (0, 0));
    server.stop().await;
}

async fn a_receiver_refusing_some_objects_kills_only_their_events_until_a_redrive(backend: Backend) {
    let receiver =
        Receiver::start(Arc::new(|e| if e["object_id"].as_str().unwrap().starts_with("bad") { 400 } else { 200 }))
            .await;
    let server =
        TestServer::start_with_on(config_with(vec![receiver.webhook("erp", &[0.0, 0.05, 0.05])]), backend).await;
    let api = server.api();
    let bad_first = api.push("/taskChanges", json!([{"id": "bad-1", "v": 1}, {"id": "good-1", "v": 1}])).await;
    receiver.wait_for(20, "good-1", |d| d.iter().any(|e| e["object_id"] == "good-1")).await;

    // bad-1 goes dead after its three attempts; its next change waits behind it; others flow.
    let filter = EventFilter { states: vec!["dead".into()], ..EventFilter::default() };
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = server.store.events(&filter, None, 10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "bad-1 never went dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((dead.len(), dead[0].event.object_id.as_str(), dead[0].attempts), (1, "bad-1", 3));
    let bad_second = api.push("/taskChanges", json!([{"id": "bad-1", "v": 2}, {"id": "good-2", "v": 1}])).await;
    receiver.wait_for(20, "good-2", |d| d.iter().any(|e| e["object_id"] == "good-2")).await;
    let (row, attempts) = server.store.event(dead[0].seq).await.unwrap().unwrap();
    assert_eq!(row.state, "dead");
    assert_eq!(attempts.len(), 3, "every attempt is kept: {attempts:?}");
    assert!(attempts.iter().all(|a| a.status == Some(400)), "{attempts:?}");
    assert!(attempts[0].error.as_deref().unwrap().starts_with("HTTP 400: the receiver answered 400"), "{attempts:?}");
    assert!(attempts.windows(2).all(|w| w[0].at_ms >= w[1].at_ms), "newest first");
    // Workers claim in commit order: once a later event is delivered, bad-1's next one was passed
    // over, not merely not reached yet.
    api.push("/taskChanges", json!([{"id": "good-3", "v": 1}])).await;
    receiver.wait_for(20, "good-3", |d| d.iter().any(|e| e["object_id"] == "good-3")).await;
    let waiting =
        EventFilter { object_id: Some("bad-1".into()), states: vec!["pending".into()], ..EventFilter::default() };
    let held = server.store.events(&waiting, None, 10).await.unwrap();
    assert_eq!(held.len(), 1, "bad-1's next event waits behind the dead one");
    assert_eq!(held[0].attempts, 0, "and is never tried before it");
    let (row, attempts) = server.store.event(dead[0].seq).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), attempts.len()), ("dead", 3), "the dead one is not tried again either");
    let stats = server.store.subscriptions(&["erp".into()]).await.unwrap();
    assert_eq!((stats[0].dead, stats[0].pending), (1, 1));

    // Fixed receiver, redriven: both of bad-1's events arrive, in order; the history stays.
    receiver.set_policy(accept_all());
    let redriven = server.store.redrive(&filter, None, 0).await.unwrap();
    assert_eq!(redriven, 1);
    let delivered =
        receiver.wait_for(20, "bad-1 twice", |d| d.iter().filter(|e| e["object_id"] == "bad-1").count() >= 2).await;
    let bad: Vec<i64> =
        delivered.iter().filter(|e| e["object_id"] == "bad-1").map(|e| e["lastChange"].as_i64().unwrap()).collect();
    assert_eq!(bad, [bad_first, bad_second]);
    let (row, attempts) = server.store.event(dead[0].seq).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), attempts.len()), ("delivered", 4));
    server.stop().await;
}

async fn a_gone_receiver_disables_its_subscription_until_it_is_enabled(backend: Backend) {
    let receiver = Receiver::start(Arc::new(|_| 410)).await;
    let server = TestServer::start_with_on(config_with(vec![receiver.webhook("erp", &[0.0, 0.05])]), backend).await;
    server.api().push("/taskChanges", json!([{"id": "a"}])).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.store.is_enabled("erp").await.unwrap() {
        assert!(Instant::now() < deadline, "never disabled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing can show that a request will never come; a worker that ignored the switch would
    // retry within 50 ms (the schedule) and poll every 50 ms, and this waits six times that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = receiver.state.requests.load(Ordering::SeqCst);
    assert_eq!(requests, 1, "no request after the 410");
    let stats = server.store.subscriptions(&["erp".into()]).await.unwrap();
    assert_eq!((stats[0].enabled, stats[0].pending), (false, 1), "{stats:?}");
    assert!(stats[0].disabled_reason.as_deref().unwrap().contains("410"));

    receiver.set_policy(accept_all());
    server.store.set_enabled("erp", true, None, 0).await.unwrap();
    receiver.wait_for(20, "the event", |d| d.len() == 1).await;
    server.stop().await;
}

backend_tests!(
    per_database:
    every_applied_change_is_delivered_signed_once_and_in_order,
    a_receiver_refusing_some_objects_kills_only_their_events_until_a_redrive,
    a_gone_receiver_disables_its_subscription_until_it_is_enabled,
);

/// Three instances over one database push concurrently while the receiver fails 30 % of
/// requests, is down for a while, and one instance is killed with SIGKILL while it is: every
/// event arrives, each object's in commit order, and no event is ever in flight twice.
async fn instances_deliver_every_event_at_least_once_through_failures_and_a_crash(backend: Backend) {
    const WRITERS: usize = 6;
    const PUSHES: usize = 25;
    let receiver = Receiver::start(Arc::new(|_| if rand::random_bool(0.3) { 500 } else { 200 })).await;
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    let schedule = "[0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]";
    std::fs::write(
        &config,
        format!(
            "[outbox]\nlease_secs = 2\npoll_interval_ms = 50\n\n[[webhook]]\nname = \"erp\"\nurl = \"{}\"\nsecrets = [\"{SECRET}\"]\nschedule_secs = {schedule}\n",
            receiver.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(ServerProcess::spawn(&db, &["--config", &config]).await);
    }
    let apis: Vec<Api> = servers.iter().map(ServerProcess::api).collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let apis = apis.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..PUSHES {
                    // Instance 0 is killed midway: writers use the others.
                    let api = &apis[1 + (w + i) % 2];
                    let id = format!("o{}", (w * 7 + i) % 20);
                    let now = api.push("/taskChanges", json!([{"id": id, "w": w, "i": i}])).await;
                    acked.push((id, now));
                }
                acked
            })
        })
        .collect();
    // Events flow, then the receiver goes down while writers still write, and an instance is
    // killed once the workers have had a dozen requests refused (their events wait for retries).
    receiver.wait_for(30, "a first delivery", |d| !d.is_empty()).await;
    receiver.state.down.store(true, Ordering::SeqCst);
    let refused_from = receiver.state.requests.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.state.requests.load(Ordering::SeqCst) < refused_from + 12 {
        assert!(Instant::now() < deadline, "the workers never retried while the receiver was down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = servers.remove(0);
    killed.signal_and_wait(9).await;
    receiver.state.down.store(false, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let expected: HashSet<(String, i64)> = acked.iter().cloned().collect();
    let delivered = receiver
        .wait_for(90, "every acknowledged change", |d| {
            let got: HashSet<(String, i64)> = first_deliveries(d).into_iter().collect();
            expected.is_subset(&got)
        })
        .await;
    assert_in_order_per_object(&delivered);
    assert_eq!(receiver.state.overlaps.load(Ordering::SeqCst), 0, "an event was in flight twice at once");
    assert_eq!(receiver.state.bad_signatures.load(Ordering::SeqCst), 0);
    let unique: HashSet<&str> = delivered.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), expected.len(), "one event per acknowledged change");
    let requests = receiver.state.requests.load(Ordering::SeqCst);
    assert!(requests > delivered.len(), "the receiver failed requests: {requests} for {}", delivered.len());
    eprintln!(
        "{backend:?}: {} events delivered ({} deliveries, {requests} requests) through 3 instances and a SIGKILL",
        unique.len(),
        delivered.len()
    );
    for server in servers {
        server.signal_and_wait(15).await;
    }
}

backend_tests!(per_database: instances_deliver_every_event_at_least_once_through_failures_and_a_crash);

/// A receiver that is down while the server commits and is then killed: after a restart, every
/// acknowledged change is delivered.
async fn a_crash_between_commit_and_delivery_loses_nothing(backend: Backend) {
    let receiver = Receiver::start(accept_all()).await;
    receiver.state.down.store(true, Ordering::SeqCst);
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    std::fs::write(
        &config,
        format!(
            "[outbox]\nlease_secs = 2\npoll_interval_ms = 50\n\n[[webhook]]\nname = \"erp\"\nurl = \"{}\"\nsecrets = [\"{SECRET}\"]\nschedule_secs = [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]\n",
            receiver.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let server = ServerProcess::spawn(&db, &["--config", &config]).await;
    let mut acked = HashSet::new();
    for i in 0..20 {
        let now = server.api().push("/taskChanges", json!([{"id": format!("t{i}")}])).await;
        acked.insert((format!("t{i}"), now));
    }
    server.signal_and_wait(9).await;
    assert!(receiver.delivered().is_empty());
    receiver.state.down.store(false, Ordering::SeqCst);
    let server = ServerProcess::spawn(&db, &["--config", &config]).await;
    let delivered = receiver
        .wait_for(30, "every change after the restart", |d| {
            acked.is_subset(&first_deliveries(d).into_iter().collect::<HashSet<_>>())
        })
        .await;
    assert_eq!(first_deliveries(&delivered).len(), 20);
    server.signal_and_wait(15).await;
}

backend_tests!(per_database: a_crash_between_commit_and_delivery_loses_nothing);

/// With `batch`, events of different objects travel together, each with its own id.
async fn batched_webhooks_carry_many_events_per_request(backend: Backend) {
    let receiver = Receiver::start(accept_all()).await;
    let mut webhook = receiver.webhook("erp", &[0.0, 0.05]);
    (webhook.batch, webhook.concurrency) = (10, 2);
    let server = TestServer::start_with_on(config_with(vec![webhook]), backend).await;
    let items: Vec<Value> = (0..45).map(|i| json!({"id": format!("o{i}")})).collect();
    server.api().push("/taskChanges", Value::Array(items)).await;
    server.api().push("/taskChanges", json!([{"id": "o1", "again": true}])).await;
    let delivered = receiver.wait_for(20, "46 events", |d| d.len() >= 46).await;
    assert_eq!(first_deliveries(&delivered).len(), 46);
    assert_in_order_per_object(&delivered);
    let (batches, requests) =
        (receiver.state.batches.load(Ordering::SeqCst), receiver.state.requests.load(Ordering::SeqCst));
    assert!(batches >= 4 && requests < 46, "{batches} batches in {requests} requests");
    server.stop().await;
}

backend_tests!(per_database: batched_webhooks_carry_many_events_per_request);

/// Pushes larger than one round of the stream takes are delivered whole, over several rounds.
async fn pushes_larger_than_a_round_are_delivered_whole_and_in_order(backend: Backend) {
    let receiver = Receiver::start(accept_all()).await;
    let mut webhook = receiver.webhook("erp", &[0.0, 0.05]);
    (webhook.batch, webhook.concurrency) = (100, 4);
    let server = TestServer::start_with_on(config_with(vec![webhook]), backend).await;
    for round in 0..3 {
        let items: Vec<Value> = (0..6_000).map(|i| json!({"id": format!("o{i}"), "round": round})).collect();
        server.api().push("/taskChanges", Value::Array(items)).await;
    }
    let delivered = receiver.wait_for(60, "18,000 events", |d| d.len() >= 18_000).await;
    assert_eq!(first_deliveries(&delivered).len(), 18_000, "every event");
    assert_in_order_per_object(&delivered);
    let last_round = delivered.iter().filter(|e| e["object"]["round"] == 2).count();
    assert_eq!(last_round, 6_000);
    server.stop().await;
}

backend_tests!(per_database: pushes_larger_than_a_round_are_delivered_whole_and_in_order);

/// An HTTP client of the admin API as operator `user`.
fn admin(base_url: &str, user: &str, password: &str) -> Api {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Api::new(base_url).authorized(&format!("Basic {credentials}"))
}

async fn operators_see_failures_and_act_on_them_through_the_admin_api(backend: Backend) {
    let receiver = Receiver::start(Arc::new(|e| if e["object_id"] == "bad" { 422 } else { 200 })).await;
    let config = with_operator(config_with(vec![receiver.webhook("erp", &[0.0, 0.05])]));
    let server = TestServer::start_with_on(config, backend).await;
    server.api().push("/taskChanges", json!([{"id": "bad", "v": 1}, {"id": "fine"}])).await;
    server.api().push("/taskChanges", json!([{"id": "bad", "v": 2}])).await;
    receiver.wait_for(20, "fine", |d| d.iter().any(|e| e["object_id"] == "fine")).await;

    let (status, body) = Api::new(server.base_url.clone()).get("/admin/api/subscriptions").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, _) = admin(&server.base_url, OPERATOR.0, "wrong").get("/admin/api/subscriptions").await;
    assert_eq!(status, 401);
    let ops = admin(&server.base_url, OPERATOR.0, OPERATOR.1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let subscription = loop {
        let (status, body) = ops.get("/admin/api/subscriptions").await;
        assert_eq!(status, 200, "{body}");
        let erp = body["subscriptions"][0].clone();
        if erp["dead"] == 1 {
            break erp;
        }
        assert!(Instant::now() < deadline, "never dead: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((subscription["name"].as_str(), subscription["pending"].as_i64()), (Some("erp"), Some(1)));
    assert!(subscription["lag_seconds"].as_f64().unwrap() >= 0.0);

    let (status, page) = ops.get("/admin/api/events?state=dead&subscription=erp&object_id=bad").await;
    assert_eq!(status, 200, "{page}");
    let dead = &page["events"][0];
    assert_eq!((dead["object"]["v"].as_i64(), dead["attempts"].as_i64()), (Some(1), Some(2)), "{page}");
    let seq = dead["seq"].as_i64().unwrap();
    let (_, detail) = ops.get(&format!("/admin/api/events/{seq}")).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], 422);
    assert!(attempts[0]["error"].as_str().unwrap().contains("the receiver answered 422"), "{detail}");
    let (status, body) = ops.get("/admin/api/events?state=lost").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_query")));
    let (status, body) = ops.get("/admin/api/events/999999").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (_, counted) = ops.get("/admin/api/events/count?object_id=bad").await;
    assert_eq!(counted["count"], 2);

    // Changes must be JSON and come from no other site.
    let filter = r#"{"filter": {"subscription": "erp", "state": "dead"}}"#;
    let as_form = reqwest::Client::new()
        .post(format!("{}/admin/api/redrive", server.base_url))
        .basic_auth(OPERATOR.0, Some(OPERATOR.1))
        .header("Content-Type", "text/plain")
        .body(filter)
        .send()
        .await
        .unwrap();
    assert_eq!(as_form.status(), 400);
    assert_eq!(as_form.json::<Value>().await.unwrap()["error"], "invalid_header");
    let (status, _) = ops.post_with("/admin/api/redrive", filter, &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    let (status, body) = ops.post("/admin/api/redrive", r#"{"seqs": [1], "filter": {}}"#).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_body")));

    receiver.set_policy(accept_all());
    let (status, body) = ops.post("/admin/api/redrive", filter).await;
    assert_eq!((status, body["redriven"].as_i64()), (200, Some(1)), "{body}");
    let delivered =
        receiver.wait_for(20, "bad twice", |d| d.iter().filter(|e| e["object_id"] == "bad").count() == 2).await;
    assert_in_order_per_object(&delivered);

    // An event that failed is skipped while the subscription is disabled: it is never delivered.
    receiver.set_policy(Arc::new(|e| if e["object_id"] == "later" { 503 } else { 200 }));
    server.api().push("/taskChanges", json!([{"id": "later"}])).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let later = loop {
        let (_, failed) = ops.get("/admin/api/events?object_id=later").await;
        if failed["events"][0]["attempts"].as_i64() > Some(0) {
            break failed["events"][0]["seq"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "never failed: {failed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, body) = ops.post("/admin/api/subscriptions/erp/disable", r#"{"reason": "maintenance"}"#).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = ops.get("/admin/api/subscriptions").await;
    assert_eq!(
        (list["subscriptions"][0]["enabled"].as_bool(), list["subscriptions"][0]["disabled_reason"].as_str()),
        (Some(false), Some("maintenance"))
    );
    let (status, _) = ops.post("/admin/api/subscriptions/nope/enable", "").await;
    assert_eq!(status, 404);
    let (status, body) = ops.post(&format!("/admin/api/events/{later}/skip"), "").await;
    assert_eq!((status, body["skipped"].as_i64()), (200, Some(1)), "{body}");
    receiver.set_policy(accept_all());
    ops.post("/admin/api/subscriptions/erp/enable", "").await;
    server.api().push("/taskChanges", json!([{"id": "after"}])).await;
    let delivered = receiver.wait_for(20, "after", |d| d.iter().any(|e| e["object_id"] == "after")).await;
    assert!(!delivered.iter().any(|e| e["object_id"] == "later"), "a skipped event was delivered");

    let (_, audit) = ops.get("/admin/api/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["enable", "skip", "disable", "redrive"], "{audit}");
    assert!(audit["entries"].as_array().unwrap().iter().all(|e| e["user"] == "ops"));
    server.stop().await;

    // Read-only operators look but cannot act; without operators the API is off.
    let mut config = with_operator(config_with(vec![]));
    config.admin.read_only = true;
    let read_only = TestServer::start_with_on(config, backend).await;
    let ops = admin(&read_only.base_url, OPERATOR.0, OPERATOR.1);
    assert_eq!(ops.get("/admin/api/subscriptions").await.0, 200);
    let (status, body) = ops.post("/admin/api/redrive", r#"{"seqs": [1]}"#).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    read_only.stop().await;
    let off = TestServer::start_with_on(Config::default(), backend).await;
    let (status, body) = admin(&off.base_url, "ops", "x").get("/admin/api/subscriptions").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    off.stop().await;
}

backend_tests!(per_database: operators_see_failures_and_act_on_them_through_the_admin_api);

/// Webhooks speak TLS and check the receiver's certificate: a receiver whose certificate no
/// trusted authority signed is refused, and the attempt says why.
#[tokio::test]
async fn an_https_receiver_with_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    // Port 0: s_server binds a free port itself and tells it (`ACCEPT 127.0.0.1:port`).
    let mut tls = tokio::process::Command::new("openssl")
        .args(["s_server", "-www", "-accept", "127.0.0.1:0", "-cert", "cert.pem", "-key", "key.pem"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server starts");
    let mut said = tokio::io::BufReader::new(tls.stdout.take().unwrap()).lines();
    let port = loop {
        let line = said.next_line().await.unwrap().expect("s_server said where it listens");
        if let Some(port) = line.strip_prefix("ACCEPT 127.0.0.1:") {
            break port.trim().to_owned();
        }
    };
    // What it prints of each connection is read, so that it never waits on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = said.next_line().await {} });
    let mut webhook = Receiver::start(accept_all()).await.webhook("erp", &[0.0, 30.0]);
    webhook.url = format!("https://127.0.0.1:{port}/hooks");
    let server = TestServer::start_with_on(config_with(vec![webhook]), Backend::SQLITE).await;
    server.api().push("/taskChanges", json!([{"id": "a"}])).await;
    let failing = EventFilter { states: vec!["failed".into()], ..EventFilter::default() };
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        if let Some(row) = server.store.events(&failing, None, 1).await.unwrap().pop() {
            break row;
        }
        assert!(Instant::now() < deadline, "the https attempt was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = row.last_error.unwrap();
    assert!(error.to_lowercase().contains("certificate"), "the attempt names the certificate: {error}");
    server.stop().await;
    let _ = tls.kill().await;
}
