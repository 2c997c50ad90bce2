//! Every bad input of the protocol gets its 4xx JSON error body and changes nothing.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::helpers::{Api, Backend, Endpoint, TestServer, backend_tests};
use serde_json::{Value, json};
use sync_server::Config;
use sync_server::config::EntityConfig;

/// Asserts the error shape of PROTOCOL.md and returns the body.
fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// The whole visible state of an entity: the full pull answer, `now` included.
async fn snapshot(api: &Api, path: &str) -> Value {
    let (status, body) = api.get(&format!("{path}?since=0")).await;
    assert_eq!(status, 200);
    body
}

async fn seeded(backend: Backend) -> (TestServer, Api, Value) {
    let server = TestServer::start_with_on(small_limits(), backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "keep", "name": "original", "n": 1}])).await;
    let before = snapshot(&api, "/taskChanges").await;
    (server, api, before)
}

fn small_limits() -> Config {
    let mut config = Config::default();
    config.limits.max_body_bytes = 64 * 1024;
    config.limits.max_items = 5;
    config.limits.max_fields = 4;
    config.limits.max_id_bytes = 16;
    config.limits.max_field_name_bytes = 8;
    config.limits.max_string_bytes = 32;
    config.limits.max_depth = 3;
    config
}

async fn malformed_or_misshapen_bodies_are_refused_and_change_nothing(backend: Backend) {
    let (server, api, before) = seeded(backend).await;
    let cases: &[(&str, u16, &str)] = &[
        ("", 400, "malformed_json"),
        ("[{", 400, "malformed_json"),
        ("[1,]", 400, "malformed_json"),
        ("{\"id\":\"keep\",\"name\":\"x\"}", 400, "invalid_body"),
        ("\"text\"", 400, "invalid_body"),
        ("null", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"name\":\"changed\"}, 7]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"name\":\"changed\"}, {\"name\":\"no id\"}]", 400, "invalid_body"),
        ("[{\"id\":5}]", 400, "invalid_body"),
        ("[{\"id\":null}]", 400, "invalid_body"),
        ("[{\"id\":\"\"}]", 400, "invalid_body"),
        ("[{\"id\":\"an-id-longer-than-sixteen\"}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"_removed\":\"yes\"}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"a\":1,\"a\":2}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"toolongname\":1}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"name\":\"a string that is longer than thirty-two bytes\"}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"deep\":[[[1]]]}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"n\":1e999}]", 400, "invalid_body"),
        ("[{\"id\":\"keep\",\"n\":[-1E400]}]", 400, "invalid_body"),
        (
            "[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"},{\"id\":\"d\"},{\"id\":\"e\"},{\"id\":\"f\"}]",
            413,
            "too_many_items",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = api.post("/taskChanges", body).await;
        assert_error(got, &answer, *status, code);
        assert_eq!(snapshot(&api, "/taskChanges").await, before, "{body} changed something");
    }
    let (got, answer) = api.post("/taskChanges", "[{\"id\":\"keep\",\"name\":\"\u{ff}\"}]").await;
    assert_eq!(got, 200, "valid UTF-8 is fine: {answer}");
    let long = format!("[{{\"id\":\"big\",\"n\":{}}}]", "9".repeat(40));
    let (got, answer) = api.post("/taskChanges", &long).await;
    assert_eq!(got, 200, "integers of any length are kept: {answer}");
    let pulled = server.endpoint().request(&reqwest::Client::new(), reqwest::Method::GET, "/taskChanges?since=0");
    let pulled = pulled.send().await.unwrap().text().await.unwrap();
    assert!(pulled.contains(&format!(":{}", "9".repeat(40))), "every digit is kept: {pulled}");
    server.stop().await;
}

async fn each_invalid_item_is_listed_with_index_id_field_and_reason(backend: Backend) {
    let (server, api, before) = seeded(backend).await;
    let (status, body) = api.post("/taskChanges", r#"[{"id":"ok"}, 3, {"id":"x","_removed":1}, {"id":7}]"#).await;
    assert_error(status, &body, 400, "invalid_body");
    let details = body["details"].as_array().unwrap();
    assert_eq!(details.len(), 3);
    assert_eq!(details[0]["index"], 1);
    assert_eq!((details[1]["index"].as_u64(), details[1]["id"].as_str()), (Some(2), Some("x")));
    assert_eq!(details[1]["field"], "_removed");
    assert_eq!((details[2]["index"].as_u64(), details[2]["field"].as_str()), (Some(3), Some("id")));
    assert!(details.iter().all(|d| d["reason"].as_str().is_some_and(|r| !r.is_empty())));
    assert_eq!(snapshot(&api, "/taskChanges").await, before);
    server.stop().await;
}

async fn invalid_utf8_is_refused(backend: Backend) {
    let (server, _api, _) = seeded(backend).await;
    let resp = server
        .endpoint()
        .request(&reqwest::Client::new(), reqwest::Method::POST, "/taskChanges")
        .body(b"[{\"id\":\"\xff\"}]".to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 400, "malformed_json");
    server.stop().await;
}

async fn bad_query_parameters_are_refused(backend: Backend) {
    let (server, api, _) = seeded(backend).await;
    for query in ["since=abc", "since=1.5", "since=1e3", "since=99999999999999999999", "since=0&limit=x", "limit=-2"] {
        let (status, body) = api.get(&format!("/taskChanges?{query}")).await;
        assert_error(status, &body, 400, "invalid_query");
    }
    server.stop().await;
}

async fn unknown_paths_and_methods_are_refused(backend: Backend) {
    let (server, api, before) = seeded(backend).await;
    for path in ["/task", "/", "/a/taskChanges", "/Changes", "/9taskChanges"] {
        let (status, body) = api.get(path).await;
        assert_error(status, &body, 404, "unknown_entity");
    }
    let resp = server
        .endpoint()
        .request(&reqwest::Client::new(), reqwest::Method::DELETE, "/taskChanges")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 405, "method_not_allowed");
    let (status, body) = api.post_with("/taskChanges", "[]", &[("Idempotency-Key", "has space")]).await;
    assert_error(status, &body, 400, "invalid_header");
    assert_eq!(snapshot(&api, "/taskChanges").await, before);
    server.stop().await;
}

async fn declared_entities_check_types_and_refuse_unknown_entities(backend: Backend) {
    let config = Config {
        entities: vec![
            EntityConfig {
                name: "Task".into(),
                path: Some("/taskUpdates".into()),
                fields: [("name", "TEXT"), ("done", "BOOL"), ("due", "DATE"), ("n", "INT")]
                    .into_iter()
                    .map(|(k, t)| (k.to_owned(), t.parse().unwrap()))
                    .collect(),
                scope: None,
                read_roles: vec![],
                write_roles: vec![],
            },
            EntityConfig {
                name: "Note".into(),
                path: None,
                fields: Default::default(),
                scope: None,
                read_roles: vec![],
                write_roles: vec![],
            },
        ],
        ..Config::default()
    };
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();
    // An entity declared without fields (for its path, scope or roles) accepts any field.
    api.push("/noteChanges", json!([{"id": "n", "anything": [1], "at": "all"}])).await;
    api.push("/taskUpdates", json!([{"id": "t", "name": "x", "done": 1, "due": 1279888110, "n": null}])).await;
    let before = snapshot(&api, "/taskUpdates").await;
    for body in [
        r#"[{"id":"t","name":5}]"#,
        r#"[{"id":"t","done":"true"}]"#,
        r#"[{"id":"t","done":2}]"#,
        r#"[{"id":"t","due":1.5}]"#,
        r#"[{"id":"t","n":"1"}]"#,
        r#"[{"id":"t","undeclared":1}]"#,
    ] {
        let (status, answer) = api.post("/taskUpdates", body).await;
        assert_error(status, &answer, 400, "invalid_body");
        assert!(answer["details"][0]["field"].is_string(), "{answer}");
    }
    assert_eq!(snapshot(&api, "/taskUpdates").await, before);
    for path in ["/taskChanges", "/feedChanges"] {
        let (status, body) = api.get(path).await;
        assert_error(status, &body, 404, "unknown_entity");
        let (status, body) = api.post(path, "[]").await;
        assert_error(status, &body, 404, "unknown_entity");
    }
    server.stop().await;
}

/// `head` (a request line and headers) with the endpoint's credentials after its first line.
fn with_credentials(endpoint: &Endpoint, head: &str) -> String {
    head.replacen("\r\n", &format!("\r\n{}", endpoint.header_lines()), 1)
}

/// Connects to the endpoint's server.
fn connect(endpoint: &Endpoint) -> std::net::TcpStream {
    std::net::TcpStream::connect(endpoint.base_url.trim_start_matches("http://")).unwrap()
}

/// Sends raw bytes with the endpoint's credentials and returns the status line and how long the
/// answer took.
fn raw_request(endpoint: &Endpoint, head: &str, body: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let head = with_credentials(endpoint, head);
    let mut conn = connect(endpoint);
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    let _ = conn.write_all(body);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.contains("\"status\":\"error\""), "no JSON error body: {text}");
    (text.lines().next().unwrap_or_default().to_owned(), started.elapsed())
}

async fn a_huge_content_length_is_refused_at_once_without_reading_the_body(backend: Backend) {
    let (server, api, before) = seeded(backend).await;
    let endpoint = server.endpoint();
    let (status, took) = tokio::task::spawn_blocking(move || {
        let head = "POST /taskChanges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 2147483648\r\nConnection: close\r\n\r\n";
        raw_request(&endpoint, head, b"[")
    })
    .await
    .unwrap();
    assert!(status.contains("413"), "{status}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    assert_eq!(snapshot(&api, "/taskChanges").await, before);
    server.stop().await;
}

async fn a_chunked_body_over_the_limit_is_refused(backend: Backend) {
    let (server, api, before) = seeded(backend).await;
    let endpoint = server.endpoint();
    let (status, _) = tokio::task::spawn_blocking(move || {
        let item = format!("{{\"id\":\"keep\",\"name\":\"{}\"}},", "x".repeat(20));
        let payload = format!("[{}]", item.repeat(4000));
        let chunk = format!("{:x}\r\n{payload}\r\n0\r\n\r\n", payload.len());
        let head = "POST /taskChanges HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        raw_request(&endpoint, head, chunk.as_bytes())
    })
    .await
    .unwrap();
    assert!(status.contains("413"), "{status}");
    assert_eq!(snapshot(&api, "/taskChanges").await, before);
    server.stop().await;
}

async fn uploads_beyond_the_body_budget_are_refused_at_once_and_the_budget_comes_back(backend: Backend) {
    let mut config = small_limits();
    config.limits.max_inflight_body_bytes = 100 * 1024;
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();

    // A slow upload reserves 60,000 bytes of the budget from its Content-Length, then trickles.
    let endpoint = server.endpoint();
    let mut slow = connect(&endpoint);
    let head = with_credentials(
        &endpoint,
        "POST /taskChanges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n[",
    );
    slow.write_all(head.as_bytes()).unwrap();
    held_body_bytes(&api, |held| held >= 60_000.0).await;

    // 50,000 more bytes do not fit: refused at once, without reading them.
    let padded = format!("[{{\"id\":\"late\"}}{}]", " ".repeat(50_000));
    let (status, body) = api.post("/taskChanges", &padded).await;
    assert_error(status, &body, 503, "unavailable");
    // A small push still fits beside the slow one.
    api.push("/taskChanges", json!([{"id": "small"}])).await;

    // Once the slow upload is gone, its share is given back.
    drop(slow);
    held_body_bytes(&api, |held| held == 0.0).await;
    let (status, _) = api.post("/taskChanges", &padded).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Waits until `/metrics` shows a body budget holding what `wanted` accepts, for 10 s at most.
async fn held_body_bytes(api: &Api, wanted: impl Fn(f64) -> bool) {
    let started = Instant::now();
    loop {
        let held = api.metric("sync_push_body_bytes").await;
        if held.is_some_and(&wanted) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the body budget holds {held:?} bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_stalled_upload_is_answered_408_and_changes_nothing(backend: Backend) {
    let config = Config { body_timeout_secs: 1, ..small_limits() };
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "keep"}])).await;
    let before = snapshot(&api, "/taskChanges").await;
    let endpoint = server.endpoint();
    let (status, took) = tokio::task::spawn_blocking(move || {
        let head = "POST /taskChanges HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
        raw_request(&endpoint, head, b"[{\"id\":\"half")
    })
    .await
    .unwrap();
    assert!(status.contains("408"), "{status}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(snapshot(&api, "/taskChanges").await, before);
    server.stop().await;
}

backend_tests!(
    a_stalled_upload_is_answered_408_and_changes_nothing,
    uploads_beyond_the_body_budget_are_refused_at_once_and_the_budget_comes_back,
    malformed_or_misshapen_bodies_are_refused_and_change_nothing,
    each_invalid_item_is_listed_with_index_id_field_and_reason,
    invalid_utf8_is_refused,
    bad_query_parameters_are_refused,
    unknown_paths_and_methods_are_refused,
    declared_entities_check_types_and_refuse_unknown_entities,
    a_huge_content_length_is_refused_at_once_without_reading_the_body,
    a_chunked_body_over_the_limit_is_refused,
);
