//! Long-poll (`wait=` on pulls): an answer with no update waits for a commit in its scope, made on
//! this instance or on another one sharing the store (PostgreSQL `LISTEN/NOTIFY`; for SQLite,
//! another process's commit to the file), until the wait ends or the server stops; the number of
//! waiting pulls is bounded. Waits are observed through `sync_long_polls_waiting`, never assumed
//! after a sleep; the time bounds are far from the waits they tell apart.

use std::time::{Duration, Instant};

use serde_json::json;
use sync_server::{Application, Config};

use crate::helpers::{Api, Backend, TestDb, TestServer, backend_tests, parse_pull};

/// The wait every test asks for: far longer than any of them should take.
const WAIT: &str = "wait=50";
/// How long a test gives a woken pull to answer: far less than [`WAIT`].
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// How many pulls the server says are waiting.
async fn waiting(api: &Api) -> i64 {
    let text = reqwest::get(format!("{}/metrics", api.base_url)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("sync_long_polls_waiting "))
        .and_then(|n| n.trim().parse().ok())
        .expect("sync_long_polls_waiting is reported")
}

/// Returns once `n` pulls are waiting on the server of `api`.
async fn until_waiting(api: &Api, n: i64) {
    let started = Instant::now();
    while waiting(api).await != n {
        assert!(started.elapsed() < ANSWER_WITHIN, "{n} pulls never waited (now {})", waiting(api).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `GET path?since=S&wait=50` in the background.
fn wait_for(api: &Api, path: &str, since: i64) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let (api, query) = (api.clone(), format!("{path}?since={since}&{WAIT}"));
    tokio::spawn(async move { api.get(&query).await })
}

async fn answer_of(pull: tokio::task::JoinHandle<(u16, serde_json::Value)>) -> (u16, serde_json::Value) {
    tokio::time::timeout(ANSWER_WITHIN, pull).await.expect("the pull was answered in time").unwrap()
}

async fn a_pull_with_changes_waits_for_nothing(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let now = api.push("/taskChanges", json!([{"id": "t1", "title": "a"}])).await;
    let (status, body) = answer_of(wait_for(&api, "/taskChanges", 0)).await;
    assert_eq!(status, 200, "{body}");
    let pulled = parse_pull(&body);
    assert_eq!((pulled.now, pulled.updates.len()), (now, 1));
    server.stop().await;
}

async fn a_waiting_pull_is_answered_by_the_next_push(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let since = api.push("/taskChanges", json!([{"id": "t1", "title": "a"}])).await;
    let other = wait_for(&api, "/noteChanges", 0);
    let pull = wait_for(&api, "/taskChanges", since);
    until_waiting(&api, 2).await;
    let now = api.push("/taskChanges", json!([{"id": "t2", "title": "b"}])).await;
    let (status, body) = answer_of(pull).await;
    assert_eq!(status, 200, "{body}");
    let pulled = parse_pull(&body);
    assert_eq!(pulled.now, now);
    assert_eq!(pulled.updates.iter().map(|u| u["id"].clone()).collect::<Vec<_>>(), [json!("t2")]);
    // The pull of another entity is still waiting: only its own scope wakes it.
    until_waiting(&api, 1).await;
    assert!(!other.is_finished());
    api.push("/noteChanges", json!([{"id": "n1"}])).await;
    assert_eq!(parse_pull(&answer_of(other).await.1).updates.len(), 1);
    until_waiting(&api, 0).await;
    server.stop().await;
}

/// Two instances over one database: a pull waiting on the second is answered by a push to the
/// first. On PostgreSQL the push is announced with `NOTIFY`; on SQLite the second instance finds
/// the other's commit in the file (two servers in one process share nothing but the file, as two
/// processes would).
async fn a_push_on_one_instance_answers_a_pull_waiting_on_another(backend: Backend) {
    let db = TestDb::create(backend).await;
    let first = TestServer::start_over(Config::default(), db.clone()).await;
    let second = TestServer::start_over(Config::default(), db).await;
    let (a, b) = (first.api(), second.api());
    let mut since = a.push("/taskChanges", json!([{"id": "t1"}])).await;
    for round in 0..3 {
        let pull = wait_for(&b, "/taskChanges", since);
        until_waiting(&b, 1).await;
        let now = a.push("/taskChanges", json!([{"id": format!("r{round}")}])).await;
        let (status, body) = answer_of(pull).await;
        assert_eq!(status, 200, "{body}");
        let pulled = parse_pull(&body);
        assert_eq!(pulled.updates.iter().map(|u| u["id"].clone()).collect::<Vec<_>>(), [json!(format!("r{round}"))]);
        assert_eq!(pulled.now, now);
        since = now;
    }
    first.stop().await;
    second.stop().await;
}

/// PostgreSQL: while the connection listening for other instances' commits is down (here every
/// connection to the database is terminated, as a restart would), a waiting pull is still answered
/// by a push to another instance, found by its clock.
#[tokio::test]
async fn a_pull_waiting_while_the_listening_connection_is_lost_is_still_answered() {
    if !Backend::POSTGRES.is_available(module_path!()) {
        return;
    }
    let db = TestDb::create(Backend::POSTGRES).await;
    let first = TestServer::start_over(Config::default(), db.clone()).await;
    let second = TestServer::start_over(Config::default(), db.clone()).await;
    let (a, b) = (first.api(), second.api());
    let since = a.push("/taskChanges", json!([{"id": "t1"}])).await;
    let pull = wait_for(&b, "/taskChanges", since);
    until_waiting(&b, 1).await;
    assert!(db.terminate_connections().await >= 2, "the listening connections were terminated");
    let now = a.push("/taskChanges", json!([{"id": "t2"}])).await;
    let (status, body) = answer_of(pull).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((parse_pull(&body).now, parse_pull(&body).updates.len()), (now, 1));
    first.stop().await;
    second.stop().await;
}

async fn a_wait_that_ends_answers_like_a_pull_with_no_change(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let since = api.push("/taskChanges", json!([{"id": "t1"}])).await;
    let started = Instant::now();
    let (status, body) = api.get(&format!("/taskChanges?since={since}&wait=1")).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "answered before the wait ended");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"updates": [], "now": since}));
    let (_, plain) = api.get(&format!("/taskChanges?since={since}")).await;
    assert_eq!(body, plain, "a base client parses it as any pull with no change");
    // `wait=0` and a paged pull wait the same way.
    let (_, paged) = api.get(&format!("/taskChanges?since={since}&limit=5&wait=0")).await;
    assert_eq!(paged, json!({"updates": [], "now": since, "more": false}));
    server.stop().await;
}

async fn pulls_beyond_max_waiting_are_answered_503(backend: Backend) {
    let mut config = Config::default();
    config.long_poll.max_waiting = 2;
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();
    let pulls = [wait_for(&api, "/taskChanges", 0), wait_for(&api, "/noteChanges", 0)];
    until_waiting(&api, 2).await;
    let resp = api.get_response(&format!("/taskChanges?since=0&{WAIT}")).await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some(), "503 tells when to retry");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(body["message"].as_str().unwrap().contains("2 pulls are waiting"), "{body}");
    // A pull with something to answer needs no place.
    let now = api.push("/taskChanges", json!([{"id": "t1"}])).await;
    api.push("/noteChanges", json!([{"id": "n1"}])).await;
    for pull in pulls {
        assert_eq!(answer_of(pull).await.0, 200);
    }
    until_waiting(&api, 0).await;
    let (status, _) = api.get(&format!("/taskChanges?since={}&wait=1", now - 1)).await;
    assert_eq!(status, 200, "places are given back");
    server.stop().await;
}

/// On shutdown a waiting pull is answered at once, normally, instead of being held until the
/// shutdown timeout (30 s here) cuts its connection.
async fn waiting_pulls_are_answered_when_the_server_stops(backend: Backend) {
    let db = TestDb::create(backend).await;
    let mut config = TestServer::config_over(Config::default(), &db);
    config.shutdown_timeout_secs = 30;
    let server = TestServer::serve(Application::build(config).await.expect("server starts"), db);
    let api = server.api();
    let since = api.push("/taskChanges", json!([{"id": "t1"}])).await;
    let pull = wait_for(&api, "/taskChanges", since);
    until_waiting(&api, 1).await;
    let stopped = tokio::spawn(server.stop());
    let (status, body) = answer_of(pull).await;
    assert_eq!((status, body), (200, json!({"updates": [], "now": since})));
    tokio::time::timeout(ANSWER_WITHIN, stopped).await.expect("the server stopped in time").unwrap();
}

async fn a_wait_that_is_not_a_number_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    for bad in ["wait=soon", "wait=-1", "wait=1.5", "wait="] {
        let (status, body) = api.get(&format!("/taskChanges?since=0&{bad}")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_query")), "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains("wait"), "{body}");
    }
    server.stop().await;
}

backend_tests!(
    a_pull_with_changes_waits_for_nothing,
    a_waiting_pull_is_answered_by_the_next_push,
    a_push_on_one_instance_answers_a_pull_waiting_on_another,
    a_wait_that_ends_answers_like_a_pull_with_no_change,
    pulls_beyond_max_waiting_are_answered_503,
    waiting_pulls_are_answered_when_the_server_stops,
    a_wait_that_is_not_a_number_is_refused,
);
