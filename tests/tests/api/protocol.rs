//! The base protocol as persistence.js speaks it, and the extensions, end to end over real HTTP,
//! against every store.

use crate::helpers::{Backend, TestServer, backend_tests, find};
use serde_json::{Value, json};

async fn push_then_pull_returns_objects_with_the_push_timestamp(backend: Backend) {
    let server = TestServer::start_on(backend).await;
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

async fn missing_since_means_zero_and_unknown_parameters_are_ignored(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "a"}])).await;
    let (status, body) = api.get("/taskChanges").await;
    assert_eq!(status, 200);
    assert_eq!(body["updates"].as_array().unwrap().len(), 1);
    let (status, body) = api.get("/taskChanges?since=0&_=123").await;
    assert_eq!((status, body["updates"].as_array().unwrap().len()), (200, 1));
    assert!(body.get("more").is_none(), "a base client never gets extension fields");
    server.stop().await;
}

async fn every_push_gets_a_fresh_now_even_when_empty(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let first = api.push("/taskChanges", json!([])).await;
    let second = api.push("/taskChanges", json!([])).await;
    let third = api.push("/taskChanges", json!([{"id": "x"}])).await;
    assert!(first < second && second < third, "{first} {second} {third}");
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!(pulled.updates.len(), 1, "an empty push changes nothing");
    assert_eq!(pulled.now, third);
    server.stop().await;
}

async fn absent_fields_keep_the_server_value_and_null_is_stored(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "t", "name": "a", "done": false, "note": "keep"}])).await;
    let now = api.push("/taskChanges", json!([{"id": "t", "done": true, "name": null, "extra": 3}])).await;
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!(
        pulled.updates,
        vec![json!({"id": "t", "name": null, "done": true, "note": "keep", "extra": 3, "_lastChange": now})]
    );
    server.stop().await;
}

async fn removals_leave_tombstones_and_recreation_brings_the_id_back(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let created = api.push("/taskChanges", json!([{"id": "r", "name": "old", "n": 1}])).await;
    let removed = api.push("/taskChanges", json!([{"id": "r", "_removed": true}])).await;
    let pulled = api.pull("/taskChanges", created).await;
    assert_eq!(pulled.updates, vec![json!({"id": "r", "_removed": true, "_lastChange": removed})]);

    // A removal echoed back, or of an unknown id, is not an error and changes nothing.
    let echoed =
        api.push("/taskChanges", json!([{"id": "r", "_removed": true}, {"id": "never", "_removed": true}])).await;
    let after_echo = api.pull("/taskChanges", removed).await;
    assert!(after_echo.updates.is_empty(), "{:?}", after_echo.updates);
    assert!(echoed > removed);

    let recreated = api.push("/taskChanges", json!([{"id": "r", "name": "new"}])).await;
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!(
        pulled.updates,
        vec![json!({"id": "r", "name": "new", "_lastChange": recreated})],
        "a re-created object starts from the fields sent, not the removed ones"
    );
    server.stop().await;
}

async fn values_round_trip_exactly(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let body = r#"[{"id":"v","int":1,"float":1.0,"neg":-0.5,"exp":1e3,"t":true,"f":false,"nul":null,
        "i64":9223372036854775807,"big":123456789012345678901234567890,"s":"nul\u0000 astral 😀 \ud83d\ude00 \"q\" \\",
        "empty":"","half":"\ud83d","date":1279888110,"arr":[1,"a",[null]],"obj":{"k":1.50}}]"#;
    let (status, answer) = api.post("/valueChanges", body).await;
    assert_eq!(status, 200, "{answer}");
    let resp = server
        .endpoint()
        .request(&reqwest::Client::new(), reqwest::Method::GET, "/valueChanges?since=0")
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    for raw in [
        r#""int":1,"#,
        r#""float":1.0,"#,
        r#""neg":-0.5"#,
        r#""exp":1e3"#,
        r#""t":true"#,
        r#""nul":null"#,
        r#""i64":9223372036854775807"#,
        r#""big":123456789012345678901234567890"#,
        r#""date":1279888110"#,
        r#""obj":{"k":1.50}"#,
        r#""half":"\ud83d""#,
    ] {
        assert!(text.contains(raw), "{raw} not kept verbatim in {text}");
    }
    // serde_json cannot hold a lone surrogate in a String: checked verbatim above, left out here.
    let v: Value = serde_json::from_str(&text.replace(r#""half":"\ud83d","#, "")).unwrap();
    let obj = &v["updates"][0];
    assert_eq!(obj["s"], "nul\u{0} astral 😀 😀 \"q\" \\");
    assert_eq!(obj["empty"], "");
    assert_eq!(obj["arr"], json!([1, "a", [null]]));
    assert!(obj["int"].is_u64() && obj["t"].is_boolean());
    server.stop().await;
}

async fn paged_pulls_never_split_one_push_and_cover_everything(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let mut expected = std::collections::BTreeMap::new();
    for batch in 0..7 {
        let size = [1, 3, 2, 5, 1, 4, 2][batch];
        let items: Vec<Value> = (0..size).map(|i| json!({"id": format!("b{batch}-{i}"), "n": i})).collect();
        let now = api.push("/pageChanges", Value::Array(items.clone())).await;
        for item in items {
            expected.insert(item["id"].as_str().unwrap().to_owned(), now);
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    let mut since = 0;
    let mut pages = 0;
    loop {
        let (status, body) = api.get(&format!("/pageChanges?since={since}&limit=3")).await;
        assert_eq!(status, 200);
        let page = crate::helpers::parse_pull(&body);
        pages += 1;
        let stamps: Vec<i64> = page.updates.iter().map(|u| u["_lastChange"].as_i64().unwrap()).collect();
        assert!(stamps.iter().all(|&s| s > since && s <= page.now), "page outside (since, now]");
        if page.updates.len() > 3 {
            assert!(stamps.iter().all(|&s| s == stamps[0]), "an oversized page holds one push only");
        }
        for u in &page.updates {
            assert!(seen.insert(u["id"].as_str().unwrap().to_owned(), u["_lastChange"].as_i64().unwrap()).is_none());
        }
        since = page.now;
        if !page.more.expect("a paged pull says whether more remain") {
            break;
        }
        assert!(pages < 50);
    }
    assert_eq!(seen, expected);
    assert!(pages >= 4, "{pages} pages");
    server.stop().await;
}

async fn a_push_resent_with_its_idempotency_key_is_applied_once(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    let body = json!([{"id": "k", "n": 1}]).to_string();
    let key = [("Idempotency-Key", "push-0001")];
    let (s1, first) = api.post_with("/keyChanges", &body, &key).await;
    api.push("/keyChanges", json!([{"id": "k", "n": 2}])).await;
    let (s2, second) = api.post_with("/keyChanges", &body, &key).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["now"], second["now"], "the replay answers with the original now");
    let pulled = api.pull("/keyChanges", 0).await;
    assert_eq!(find(&pulled, "k").unwrap()["n"], 2, "the replay did not apply the push again");

    let (status, err) = api.post_with("/keyChanges", r#"[{"id":"k","n":3}]"#, &key).await;
    assert_eq!((status, err["error"].as_str()), (422, Some("idempotency_key_reused")));
    let (other_entity, _) = api.post_with("/otherChanges", &body, &key).await;
    assert_eq!(other_entity, 200, "keys are scoped to their entity");
    server.stop().await;
}

async fn entities_are_independent_and_paths_map_to_capitalised_names(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    api.push("/feedChanges", json!([{"id": "1", "nome": "a"}])).await;
    assert!(api.pull("/taskChanges", 0).await.updates.is_empty());
    assert_eq!(api.pull("/feedChanges", 0).await.updates.len(), 1);
    let feed = backend.scope("Feed");
    let query = sync_proto::PullQuery::default();
    let page = server.store.pull(&feed, query).await.unwrap();
    assert_eq!(page.objects.len(), 1, "/feedChanges is stored as entity Feed");
    server.stop().await;
}

async fn healthz_answers_and_responses_carry_a_request_id(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let resp = reqwest::get(format!("{}/healthz", server.base_url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    server.stop().await;
}

async fn metrics_count_requests_and_pushed_objects(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "a"}, {"id": "b"}])).await;
    let (status, _) = api.post("/taskChanges", "[{").await;
    assert_eq!(status, 400);
    let text = reqwest::get(format!("{}/metrics", server.base_url)).await.unwrap().text().await.unwrap();
    for line in [
        r#"sync_pushes_total{outcome="applied"} 1"#,
        "sync_pushed_objects_total 2",
        r#"sync_http_requests_total{method="POST",status="200"} 1"#,
        r#"sync_http_requests_total{method="POST",status="400"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    server.stop().await;
}

async fn browsers_of_configured_origins_may_sync_and_others_may_not(backend: Backend) {
    let config = sync_server::Config { cors_origins: vec!["https://app.example".into()], ..Default::default() };
    let server = TestServer::start_with_on(config, backend).await;
    let http = reqwest::Client::new();
    let endpoint = server.endpoint();
    let (get, post) = (
        || endpoint.request(&http, reqwest::Method::GET, "/taskChanges"),
        || endpoint.request(&http, reqwest::Method::POST, "/taskChanges"),
    );
    let url = format!("{}/taskChanges", server.base_url);
    // Preflights carry no credentials: browsers never send them.
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    let pulled = get().header("Origin", "https://app.example").send().await.unwrap();
    assert_eq!(pulled.status(), 200);
    assert_eq!(pulled.headers()["access-control-allow-origin"], "https://app.example");
    let other = get().header("Origin", "https://evil.example").send().await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(other.status(), 403);

    // A preflight from another origin gets the same JSON refusal, not the CORS layer's text.
    let foreign_preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_preflight.status(), 403);
    assert!(!foreign_preflight.headers().contains_key("access-control-allow-origin"));
    let body: Value = foreign_preflight.json().await.expect("a JSON error body");
    assert_eq!((body["status"].as_str(), body["error"].as_str()), (Some("error"), Some("forbidden_origin")));

    // A simple cross-origin POST needs no preflight: the server itself must refuse it.
    let api = server.api();
    let forged = post()
        .header("Origin", "https://evil.example")
        .header("Content-Type", "text/plain")
        .body(r#"[{"id":"forged"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.json::<Value>().await.unwrap()["error"], "forbidden_origin");
    let own_origin = server.base_url.clone();
    for origin in [None, Some("https://app.example"), Some(own_origin.as_str())] {
        let mut fine = post().body(r#"[{"id":"fine"}]"#);
        if let Some(origin) = origin {
            fine = fine.header("Origin", origin);
        }
        assert_eq!(fine.send().await.unwrap().status(), 200, "{origin:?}");
    }
    assert!(find(&api.pull("/taskChanges", 0).await, "forged").is_none());
    server.stop().await;

    let same_origin_only = TestServer::start_on(backend).await;
    let plain = same_origin_only
        .endpoint()
        .request(&http, reqwest::Method::GET, "/taskChanges")
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(!plain.headers().contains_key("access-control-allow-origin"), "no CORS unless configured");
    same_origin_only.stop().await;
}

/// A client that starts a large full pull and never reads it holds a streaming connection, but
/// neither health checks nor paged pulls (which the sync client uses) may starve.
async fn a_stalled_full_pull_does_not_starve_health_checks_or_paged_pulls(backend: Backend) {
    let mut config = sync_server::Config::default();
    config.sqlite.stream_readers = 1;
    config.sqlite.busy_timeout_ms = 500;
    config.postgres.pool_size = 2; // one connection for full pulls
    config.postgres.wait_timeout_ms = 500;
    let server = TestServer::start_with_on(config, backend).await;
    let api = server.api();
    let filler = "x".repeat(1000);
    for batch in 0..40 {
        let items: Vec<Value> = (0..400).map(|i| json!({"id": format!("{batch}-{i}"), "s": filler})).collect();
        api.push("/bigChanges", Value::Array(items)).await;
    }

    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let stalled = std::net::TcpStream::connect(&addr).unwrap();
    // A read that cannot hang the test (this runtime's worker) should the server never answer.
    stalled.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let request = format!("GET /bigChanges?since=0 HTTP/1.1\r\nHost: x\r\n{}\r\n", server.endpoint().header_lines());
    std::io::Write::write_all(&mut &stalled, request.as_bytes()).unwrap();
    // The status line has come: the server holds the streaming reader, and nothing more is read.
    let mut status_line = [0u8; 12];
    std::io::Read::read_exact(&mut &stalled, &mut status_line).unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 200");

    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, 200, "health checks do not wait for streaming connections");
    let (status, page) = api.get("/bigChanges?since=0&limit=10").await;
    assert_eq!(
        (status, page["updates"].as_array().map(Vec::len), page["more"].as_bool()),
        (200, Some(400), Some(true))
    );
    let (status, body) = api.get("/bigChanges?since=0").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "the one streaming connection is held");
    drop(stalled);
    server.stop().await;
}

/// The capabilities document tells the extensions of this configuration, to any caller, and the
/// client reads it.
async fn capabilities_tell_the_extensions_offered(backend: Backend) {
    let mut config = sync_server::config::Config::default();
    config.limits.max_page = 321;
    config.idempotency_ttl_secs = 3_600;
    let server = TestServer::start_with_on(config, backend).await;
    // No credentials: the document tells the protocol, not the data.
    let (status, body) = crate::helpers::Api::new(server.base_url.clone()).get("/_sync/capabilities").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["extensions"]["paging"], json!({"max_limit": 321}));
    assert_eq!(body["extensions"]["idempotency"], json!({"retention_secs": 3600}));
    assert_eq!(body["extensions"]["long_poll"], json!({"max_wait_secs": 55}));
    assert_eq!(body["extensions"]["preconditions"], json!({"header": "Sync-Preconditions"}));
    let partitions = &body["extensions"]["partitions"];
    if backend.auth {
        assert_eq!(*partitions, json!({"authentication": "bearer"}));
    } else {
        assert!(partitions.is_null(), "{body}");
    }
    let (status, body) = server.api().post("/_sync/capabilities", "{}").await;
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")), "{body}");

    let base_url = server.base_url.clone();
    let read = tokio::task::spawn_blocking(move || {
        sync_client::HttpTransport::builder(&base_url).build().unwrap().capabilities().unwrap()
    })
    .await
    .unwrap()
    .expect("the server says");
    assert_eq!(read.extensions.paging.map(|p| p.max_limit), Some(321));
    assert_eq!(read.extensions.partitions.is_some(), backend.auth);
    server.stop().await;
}

backend_tests!(multi_thread: a_stalled_full_pull_does_not_starve_health_checks_or_paged_pulls);

backend_tests!(
    capabilities_tell_the_extensions_offered,
    metrics_count_requests_and_pushed_objects,
    browsers_of_configured_origins_may_sync_and_others_may_not,
    push_then_pull_returns_objects_with_the_push_timestamp,
    missing_since_means_zero_and_unknown_parameters_are_ignored,
    every_push_gets_a_fresh_now_even_when_empty,
    absent_fields_keep_the_server_value_and_null_is_stored,
    removals_leave_tombstones_and_recreation_brings_the_id_back,
    values_round_trip_exactly,
    paged_pulls_never_split_one_push_and_cover_everything,
    a_push_resent_with_its_idempotency_key_is_applied_once,
    entities_are_independent_and_paths_map_to_capitalised_names,
    healthz_answers_and_responses_carry_a_request_id,
);
