//! `docs/openapi.yaml` against the server: the served description is the file; the route table
//! (read from the server's source) and the described operations are the same set, and a running
//! server routes exactly the described methods of each described path; and real requests to
//! every operation, succeeding and failing, are answered with a documented status, headers and
//! body. A change to either side that is not made to the other fails here.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sync_server::Config;

use crate::helpers::{Backend, OPERATOR, TestServer};

const DESCRIPTION: &str = include_str!("../../../docs/openapi.yaml");
const ROUTES_SOURCE: &str = include_str!("../../../sync-server/src/routes/mod.rs");
const ADMIN_ROUTES_SOURCE: &str = include_str!("../../../sync-server/src/admin/api.rs");
const CHANGES_SOURCE: &str = include_str!("../../../sync-server/src/routes/changes.rs");

/// The methods a probe tries on every described path; the others are never routed.
const PROBED_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

const JWT_SECRET: &str = "the secret of the description's tests";

/// The parsed description, and what checking an answer against it takes.
struct Description {
    doc: Value,
}

/// One answer, read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Description {
    fn load() -> Self {
        let doc: Value = serde_norway::from_str(DESCRIPTION).expect("docs/openapi.yaml is valid YAML");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "an OpenAPI 3.1 description");
        Self { doc }
    }

    /// Every described `(path, METHOD)`.
    fn operations(&self) -> Vec<(String, String)> {
        let paths = self.doc["paths"].as_object().expect("paths");
        let mut operations = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().expect("a path item").keys() {
                if PROBED_METHODS.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                    operations.push((path.clone(), method.to_ascii_uppercase()));
                }
            }
        }
        operations
    }

    /// `value`, or what its `$ref` points to (within this document), followed to the end.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(target) = value.get("$ref").and_then(Value::as_str) {
            let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("a reference outside the file: {target}"));
            value = self.doc.pointer(pointer).unwrap_or_else(|| panic!("a dangling reference: {target}"));
        }
        value
    }

    /// A validator of `schema`, whose references resolve within this document.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = self.doc.clone();
        root["allOf"] = json!([schema]);
        jsonschema::draft202012::new(&root).expect("the schema compiles")
    }

    /// The response the description gives for this status of this operation; panics if none.
    fn response(&self, path: &str, method: &str, status: u16) -> &Value {
        let operation = &self.doc["paths"][path][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not described");
        let response = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path} answered {status}, which its description does not list"));
        self.resolve(response)
    }

    /// Checks an answer to `method path` against the description of `response` (an object of
    /// `components/responses` or of an operation): its required headers, each described header's
    /// value, its content type, and its body against the content's schema.
    fn check_response(&self, what: &str, response: &Value, answer: &Answer) {
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let header = self.resolve(header);
            match answer.headers.get(name) {
                None => assert!(!header["required"].as_bool().unwrap_or(false), "{what}: no {name} header"),
                Some(value) => {
                    let value = json!(value.to_str().expect("a text header"));
                    let validator = self.validator(&header["schema"]);
                    let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{what}: header {name}: {value} is not as described: {errors:?}");
                }
            }
        }
        let Some(content) = response["content"].as_object() else {
            assert!(answer.body.is_empty(), "{what}: a body where none is described");
            return;
        };
        let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let described = content
            .get(media)
            .unwrap_or_else(|| panic!("{what}: content type {content_type:?}, not one of {:?}", content.keys()));
        let body = if media == "application/json" {
            serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{what}: the body is not JSON: {e}"))
        } else {
            json!(std::str::from_utf8(&answer.body).unwrap_or_else(|_| panic!("{what}: the body is not text")))
        };
        let validator = self.validator(&described["schema"]);
        let errors: Vec<String> =
            validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: the body is not as described: {errors:?}\n{body}");
    }

    /// Checks an answer to an operation: its status is documented for it, and the answer is as
    /// that status's description says.
    fn check(&self, path: &str, method: &str, answer: &Answer) {
        let what = format!("{method} {path} → {}", answer.status);
        self.check_response(&what, self.response(path, method, answer.status), answer);
    }
}

/// A plain HTTP client: the checks must see every header and byte of an answer.
struct Client {
    base_url: String,
    http: reqwest::Client,
}

impl Client {
    fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        Self { base_url: base_url.to_owned(), http }
    }

    async fn send(&self, method: &str, path_and_query: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.http.request(method, format!("{}{path_and_query}", self.base_url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let answer = request.send().await.expect("request sent");
        let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
        Answer { status, headers, body: answer.bytes().await.expect("answer read").to_vec() }
    }

    async fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", path_and_query, headers, None).await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.send("POST", path, headers, Some(body)).await
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A SQLite server configured by `toml`, with [`OPERATOR`] as its admin user.
async fn with_operator(toml: &str) -> TestServer {
    let config: Config = toml::from_str(toml).expect("the configuration parses");
    TestServer::start_with_on(crate::helpers::with_operator(config), Backend::SQLITE).await
}

/// A server with every optional part of the API on: the admin API with one subscription whose
/// receiver never answers (so its events stay in the outbox), allowed origins, small limits that
/// requests can exceed, and room for a single long-poll.
async fn full_server() -> TestServer {
    with_operator(
        r#"
        cors_origins = ["https://app.example"]
        [limits]
        max_body_bytes = 4096
        max_inflight_body_bytes = 4096
        max_items = 5
        [long_poll]
        max_waiting = 1
        [[webhook]]
        name = "erp"
        url = "http://127.0.0.1:9/"
        secrets = ["whsec_dGhlIHJlY2VpdmVyIHNlY3JldCwgMzIgYnl0ZXMgb2s="]
        "#,
    )
    .await
}

/// A server with authentication on, one declared entity that only writers may push to, a
/// read-only admin API, and a failure limit low enough to reach.
async fn authenticating_server() -> TestServer {
    with_operator(&format!(
        r#"
        [auth]
        max_failures = 3
        [auth.jwt]
        algorithms = ["HS256"]
        secret = "{JWT_SECRET}"
        [[entity]]
        name = "Task"
        write_roles = ["writer"]
        [admin]
        read_only = true
        "#
    ))
    .await
}

fn token(user: &str, roles: &[&str]) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let claims = json!({"sub": user, "roles": roles, "iat": now, "exp": now + 3600});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("an HMAC key"))
        .expect("token signs")
}

#[tokio::test]
async fn the_served_description_is_the_file() {
    let description = Description::load();
    let server = TestServer::start().await;
    let answer = Client::new(&server.base_url).get(sync_proto::OPENAPI_PATH, &[]).await;
    description.check(sync_proto::OPENAPI_PATH, "GET", &answer);
    assert_eq!(answer.status, 200);
    assert_eq!(std::str::from_utf8(&answer.body).expect("UTF-8"), DESCRIPTION, "the served description differs");
    server.stop().await;
}

/// `(path, METHOD)` of every route of the server's route table, read from its source: the
/// resources of `routes::configure`, the admin scope's routes, and the entity paths of the
/// default service with the methods `changes::dispatch` serves. Path segments in braces match
/// any one segment.
fn source_routes() -> Vec<(String, String)> {
    let body = |source: &'static str, start: &str| -> &'static str {
        let from = source.find(start).unwrap_or_else(|| panic!("{start} is missing from the source"));
        let rest = &source[from..];
        &rest[..rest.find("\n}\n").expect("the function ends")]
    };
    let constants = [
        ("sync_proto::CAPABILITIES_PATH", sync_proto::CAPABILITIES_PATH),
        ("sync_proto::OPENAPI_PATH", sync_proto::OPENAPI_PATH),
    ];
    let mut routes = Vec::new();

    let table = body(ROUTES_SOURCE, "pub fn configure(");
    let services: Vec<&str> = table.split("web::resource(").skip(1).collect();
    for service in services {
        let argument = service[..service.find(')').expect("a closed argument")].trim();
        let path = match argument.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
            Some(literal) => literal.to_owned(),
            None => constants
                .iter()
                .find(|(name, _)| *name == argument)
                .unwrap_or_else(|| panic!("the route table names {argument}: add it to the constants here"))
                .1
                .to_owned(),
        };
        let chain =
            &service[..service.find(".service(").or_else(|| service.find(".configure(")).unwrap_or(service.len())];
        for method in PROBED_METHODS {
            if chain.contains(&format!(".{}(", method.to_ascii_lowercase())) {
                routes.push((path.clone(), method.to_owned()));
            }
        }
    }
    assert!(table.contains(".configure(crate::admin::api::configure)"), "the admin routes moved");
    assert!(table.contains(".default_service(web::to(changes::changes))"), "the entity paths moved");

    let admin = body(ADMIN_ROUTES_SOURCE, "pub fn configure(");
    // The console's HTML pages share the admin scope. They are pages for people, not operations of
    // the API, so docs/openapi.yaml leaves them out on purpose; console.rs tests them.
    assert!(admin.contains(".configure(super::console::configure)"), "the console's pages moved");
    let scope = admin.split("web::scope(\"").nth(1).expect("the admin scope");
    let prefix = &scope[..scope.find('"').expect("closed")];
    for route in admin.split("(\"/api/").skip(1) {
        let path = &route[..route.find('"').expect("closed")];
        let method = route.split("web::").nth(1).expect("a method guard");
        let method = method[..method.find('(').expect("a call")].to_ascii_uppercase();
        routes.push((format!("{prefix}/api/{path}"), method));
    }

    let dispatch = body(CHANGES_SOURCE, "async fn dispatch(");
    for method in PROBED_METHODS {
        if dispatch.contains(&format!("Method::{method} =>")) {
            routes.push(("/{entity}Changes".to_owned(), method.to_owned()));
        }
    }
    routes
}

/// Whether a route template of the source (`{x}` matching one segment) matches a described path.
fn template_matches(template: &str, described: &str) -> bool {
    let (template, described): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), described.split('/').collect());
    template.len() == described.len()
        && template.iter().zip(&described).all(|(t, d)| (t.starts_with('{') && t.ends_with('}')) || t == d)
}

/// A concrete request path for a described path: each parameter replaced by a value that names
/// something the full server has or may have.
fn concrete(path: &str) -> String {
    path.replace("{entity}", "task").replace("{seq}", "1").replace("{name}", "erp")
}

#[tokio::test]
async fn every_route_is_described_and_every_described_operation_is_routed() {
    let description = Description::load();
    let described = description.operations();
    let routes = source_routes();
    assert!(routes.len() >= 14, "the route table was not read: {routes:?}");
    for (template, method) in &routes {
        assert!(
            described.iter().any(|(path, m)| m == method && template_matches(template, path)),
            "the server routes {method} {template}, which docs/openapi.yaml does not describe"
        );
    }
    for (path, method) in &described {
        assert!(
            routes.iter().any(|(template, m)| m == method && template_matches(template, path)),
            "docs/openapi.yaml describes {method} {path}, which the route table does not have"
        );
    }

    // The same, on a running server: each described operation is served (its answer is one it
    // documents, never a 405, nor the admin scope's answer for paths it does not have), and every
    // other method of a described path is a 405 whose Allow lists the described methods.
    let server = full_server().await;
    let client = Client::new(&server.base_url);
    let operator = basic(OPERATOR.0, OPERATOR.1);
    let headers = [("Authorization", operator.as_str()), ("Content-Type", "application/json")];
    let paths: std::collections::BTreeSet<&String> = described.iter().map(|(path, _)| path).collect();
    for path in paths {
        for method in PROBED_METHODS {
            let body = (method != "GET").then_some(if path.ends_with("Changes") { "[]" } else { "{}" });
            let answer = client.send(method, &concrete(path), &headers, body).await;
            let what = format!("{method} {path} → {}", answer.status);
            let unrouted = answer.json()["message"].as_str().is_some_and(|m| m.starts_with("no admin resource at"));
            if described.iter().any(|(p, m)| p == path && m == method) {
                assert!(answer.status != 405 && !unrouted, "{what}: described, but not routed: {}", answer.json());
                description.check(path, method, &answer);
            } else {
                assert_eq!(answer.status, 405, "{what}: not described, but routed: {}", answer.json());
                description.check_response(
                    &what,
                    description.resolve(&json!({"$ref": "#/components/responses/MethodNotAllowed"})),
                    &answer,
                );
                let allowed: Vec<String> =
                    described.iter().filter(|(p, _)| p == path).map(|(_, m)| m.clone()).collect();
                let mut allowed_by_server: Vec<String> =
                    answer.headers["allow"].to_str().expect("text").split(',').map(|m| m.trim().to_owned()).collect();
                allowed_by_server.sort();
                let mut allowed = allowed;
                allowed.sort();
                assert_eq!(allowed_by_server, allowed, "{what}: Allow differs from the described methods");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn every_operation_answers_as_described() {
    let description = Description::load();
    let server = full_server().await;
    let client = Client::new(&server.base_url);
    let check = |path: &'static str, method: &'static str, answer: Answer| {
        description.check(path, method, &answer);
        answer
    };
    let expect = |answer: &Answer, status: u16, code: Option<&str>| {
        assert_eq!(answer.status, status, "{}", answer.json());
        if let Some(code) = code {
            assert_eq!(answer.json()["error"], code, "{}", answer.json());
        }
    };
    const ENTITY: &str = "/{entity}Changes";
    const JSON: (&str, &str) = ("Content-Type", "application/json");

    // The server's own resources.
    for path in ["/healthz", "/metrics", "/_sync/capabilities", "/_sync/openapi.yaml"] {
        let answer = client.get(path, &[]).await;
        expect(&answer, 200, None);
        description.check(path, "GET", &answer);
        let foreign = client.get(path, &[("Origin", "https://evil.example")]).await;
        expect(&foreign, 403, Some("forbidden_origin"));
        description.check(path, "GET", &foreign);
    }

    // Pushes.
    let body = r#"[{"id":"a","title":"first","done":1,"tags":["x"]},{"id":"b"}]"#;
    let keyed = [JSON, ("Idempotency-Key", "push-1")];
    let first = check(ENTITY, "POST", client.post("/taskChanges", &keyed, body).await);
    expect(&first, 200, None);
    let replay = check(ENTITY, "POST", client.post("/taskChanges", &keyed, body).await);
    expect(&replay, 200, None);
    assert_eq!(replay.headers["idempotency-replayed"], "true");
    assert_eq!(replay.json()["now"], first.json()["now"]);
    expect(
        &check(ENTITY, "POST", client.post("/taskChanges", &keyed, "[]").await),
        422,
        Some("idempotency_key_reused"),
    );
    let removal = check(ENTITY, "POST", client.post("/taskChanges", &[], r#"[{"id":"b","_removed":true}]"#).await);
    expect(&removal, 200, None);
    expect(&check(ENTITY, "POST", client.post("/taskChanges", &[JSON], "[{").await), 400, Some("malformed_json"));
    let invalid = check(ENTITY, "POST", client.post("/taskChanges", &[JSON], r#"[{"title":1},{"id":""},7]"#).await);
    expect(&invalid, 400, Some("invalid_body"));
    assert_eq!(invalid.json()["details"].as_array().map(Vec::len), Some(3));
    let bad_key = client.post("/taskChanges", &[JSON, ("Idempotency-Key", "two words")], "[]").await;
    expect(&check(ENTITY, "POST", bad_key), 400, Some("invalid_header"));
    let bad_preconditions = client.post("/taskChanges", &[JSON, ("Sync-Preconditions", "maybe")], "[]").await;
    expect(&check(ENTITY, "POST", bad_preconditions), 400, Some("invalid_header"));
    let preconditions = [JSON, ("Sync-Preconditions", "on")];
    let stale = r#"[{"id":"a","_lastChange":1,"title":"mine"},{"id":"b","_lastChange":1},{"id":"c","_lastChange":5}]"#;
    let conflict = check(ENTITY, "POST", client.post("/taskChanges", &preconditions, stale).await);
    expect(&conflict, 409, Some("conflict"));
    let currents = conflict.json()["conflicts"].as_array().map(Vec::len);
    assert_eq!(currents, Some(3), "a live object, a tombstone and nothing: {}", conflict.json());
    let large = format!(r#"[{{"id":"a","text":"{}"}}]"#, "x".repeat(5000));
    expect(&check(ENTITY, "POST", client.post("/taskChanges", &[JSON], &large).await), 413, Some("body_too_large"));
    let many = r#"[{"id":"1"},{"id":"2"},{"id":"3"},{"id":"4"},{"id":"5"},{"id":"6"}]"#;
    expect(&check(ENTITY, "POST", client.post("/taskChanges", &[JSON], many).await), 413, Some("too_many_items"));
    expect(&check(ENTITY, "POST", client.post("/1taskChanges", &[JSON], "[]").await), 404, Some("unknown_entity"));
    let foreign = client.post("/taskChanges", &[JSON, ("Origin", "https://evil.example")], "[]").await;
    expect(&check(ENTITY, "POST", foreign), 403, Some("forbidden_origin"));

    // Pulls.
    let all = check(ENTITY, "GET", client.get("/taskChanges?since=0", &[]).await);
    expect(&all, 200, None);
    assert_eq!(all.headers["cache-control"], "no-store");
    assert_eq!(all.json()["updates"].as_array().map(Vec::len), Some(2), "an object and a tombstone");
    let page = check(ENTITY, "GET", client.get("/taskChanges?since=0&limit=1&reset=1", &[]).await);
    expect(&page, 200, None);
    assert!(page.json()["more"].is_boolean());
    for query in ["since=abc", "limit=x", "wait=soon", "reset=yes"] {
        let answer = check(ENTITY, "GET", client.get(&format!("/taskChanges?{query}"), &[]).await);
        expect(&answer, 400, Some("invalid_query"));
    }
    expect(&check(ENTITY, "GET", client.get("/1taskChanges", &[]).await), 404, Some("unknown_entity"));
    // One long-poll waits (the most this server holds), so a second is refused until a push wakes
    // the first.
    let waiting = {
        let client = Client::new(&server.base_url);
        tokio::spawn(async move { client.get("/noteChanges?since=0&wait=20", &[]).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&client.get("/metrics", &[]).await.body).contains("\nsync_long_polls_waiting 1") {
        assert!(std::time::Instant::now() < deadline, "the long-poll never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = client.get("/noteChanges?since=0&wait=20", &[]).await;
    expect(&check(ENTITY, "GET", refused), 503, Some("unavailable"));
    expect(&check(ENTITY, "POST", client.post("/noteChanges", &[JSON], r#"[{"id":"n"}]"#).await), 200, None);
    let woken = check(ENTITY, "GET", waiting.await.expect("the long-poll"));
    expect(&woken, 200, None);
    assert_eq!(woken.json()["updates"][0]["id"], "n");

    // The admin API: wait until the receiver's failures have put the events in the outbox.
    let operator = basic(OPERATOR.0, OPERATOR.1);
    let admin = [("Authorization", operator.as_str())];
    let change = [("Authorization", operator.as_str()), JSON];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seq = loop {
        let events = check("/admin/api/events", "GET", client.get("/admin/api/events?limit=1", &admin).await);
        expect(&events, 200, None);
        if let Some(seq) = events.json()["events"][0]["seq"].as_i64() {
            break seq;
        }
        assert!(std::time::Instant::now() < deadline, "no event reached the outbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let anonymous = check("/admin/api/subscriptions", "GET", client.get("/admin/api/subscriptions", &[]).await);
    expect(&anonymous, 401, Some("unauthorized"));
    let subscriptions = check("/admin/api/subscriptions", "GET", client.get("/admin/api/subscriptions", &admin).await);
    expect(&subscriptions, 200, None);
    assert_eq!(subscriptions.json()["subscriptions"][0]["name"], "erp");
    let filtered = client.get("/admin/api/events?state=pending,%20failed,dead&entity=Task&from_ms=0", &admin).await;
    expect(&check("/admin/api/events", "GET", filtered), 200, None);
    for query in ["state=bogus", "nope=1", "limit=-1"] {
        let answer = client.get(&format!("/admin/api/events?{query}"), &admin).await;
        expect(&check("/admin/api/events", "GET", answer), 400, Some("invalid_query"));
    }
    let count =
        check("/admin/api/events/count", "GET", client.get("/admin/api/events/count?state=pending", &admin).await);
    expect(&count, 200, None);
    let bad_count = client.get("/admin/api/events/count?until_ms=soon", &admin).await;
    expect(&check("/admin/api/events/count", "GET", bad_count), 400, Some("invalid_query"));
    let event = check("/admin/api/events/{seq}", "GET", client.get(&format!("/admin/api/events/{seq}"), &admin).await);
    expect(&event, 200, None);
    for missing in ["/admin/api/events/999999999", "/admin/api/events/abc"] {
        expect(&check("/admin/api/events/{seq}", "GET", client.get(missing, &admin).await), 404, Some("not_found"));
    }
    let redriven = client.post(&format!("/admin/api/events/{seq}/redrive"), &change, "{}").await;
    expect(&check("/admin/api/events/{seq}/redrive", "POST", redriven), 200, None);
    let not_json = client.post(&format!("/admin/api/events/{seq}/redrive"), &admin, "{}").await;
    expect(&check("/admin/api/events/{seq}/redrive", "POST", not_json), 400, Some("invalid_header"));
    let missing = client.post("/admin/api/events/999999999/skip", &change, "{}").await;
    expect(&check("/admin/api/events/{seq}/skip", "POST", missing), 404, Some("not_found"));
    let skipped = client.post(&format!("/admin/api/events/{seq}/skip"), &change, "").await;
    expect(&check("/admin/api/events/{seq}/skip", "POST", skipped), 200, None);
    for body in [format!(r#"{{"seqs":[{seq}]}}"#), r#"{"filter":{"state":"dead","subscription":"erp"}}"#.to_owned()] {
        expect(
            &check("/admin/api/redrive", "POST", client.post("/admin/api/redrive", &change, &body).await),
            200,
            None,
        );
    }
    // JSON Schema's integers include `5.0`; numbers that are not a 64-bit integer as written are not.
    let written_whole = client.post("/admin/api/skip", &change, &format!(r#"{{"seqs":[{seq}.0]}}"#)).await;
    expect(&check("/admin/api/skip", "POST", written_whole), 200, None);
    for seqs in ["[2.5]", "[-9223372036854775809]", "[9007199254740994.0]", r#"["1"]"#] {
        let refused = client.post("/admin/api/skip", &change, &format!(r#"{{"seqs":{seqs}}}"#)).await;
        expect(&check("/admin/api/skip", "POST", refused), 400, Some("malformed_json"));
    }
    // serde reads a struct from an array of its fields too: `[null, null]` was a filter that
    // matched (and redrove) every event, and `[]` a body like `{}`.
    let array = client.post("/admin/api/redrive", &change, r#"{"filter":[null,null]}"#).await;
    expect(&check("/admin/api/redrive", "POST", array), 400, Some("malformed_json"));
    let array = client.post("/admin/api/subscriptions/erp/enable", &change, "[]").await;
    expect(&check("/admin/api/subscriptions/{name}/enable", "POST", array), 400, Some("malformed_json"));
    let neither = check("/admin/api/redrive", "POST", client.post("/admin/api/redrive", &change, "{}").await);
    expect(&neither, 400, Some("invalid_body"));
    let broken = check("/admin/api/redrive", "POST", client.post("/admin/api/redrive", &change, "{").await);
    expect(&broken, 400, Some("malformed_json"));
    let bad_state = client.post("/admin/api/redrive", &change, r#"{"filter":{"state":"late"}}"#).await;
    expect(&check("/admin/api/redrive", "POST", bad_state), 400, Some("invalid_query"));
    expect(
        &check("/admin/api/skip", "POST", client.post("/admin/api/skip", &change, r#"{"seqs":[]}"#).await),
        200,
        None,
    );
    let by_filter = client.post("/admin/api/skip", &change, r#"{"filter":{}}"#).await;
    expect(&check("/admin/api/skip", "POST", by_filter), 400, Some("invalid_body"));
    let disabled = client.post("/admin/api/subscriptions/erp/disable", &change, r#"{"reason":"maintenance"}"#).await;
    expect(&check("/admin/api/subscriptions/{name}/disable", "POST", disabled), 200, None);
    let enabled = client.post("/admin/api/subscriptions/erp/enable", &change, "").await;
    expect(&check("/admin/api/subscriptions/{name}/enable", "POST", enabled), 200, None);
    let unknown = client.post("/admin/api/subscriptions/nope/enable", &change, "").await;
    expect(&check("/admin/api/subscriptions/{name}/enable", "POST", unknown), 404, Some("not_found"));
    let audit = check("/admin/api/audit", "GET", client.get("/admin/api/audit?limit=3", &admin).await);
    expect(&audit, 200, None);
    assert_eq!(audit.json()["entries"].as_array().map(Vec::len), Some(3));
    expect(
        &check("/admin/api/audit", "GET", client.get("/admin/api/audit?since=1", &admin).await),
        400,
        Some("invalid_query"),
    );
    let foreign = client.post("/admin/api/skip", &[change[0], JSON, ("Origin", "https://evil.example")], "{}").await;
    expect(&check("/admin/api/skip", "POST", foreign), 403, Some("forbidden_origin"));
    server.stop().await;

    // Authentication, roles, a read-only admin API, and the failure limit.
    let server = authenticating_server().await;
    let client = Client::new(&server.base_url);
    let (reader, writer) = (format!("Bearer {}", token("ann", &[])), format!("Bearer {}", token("bob", &["writer"])));
    let pushed = client.post("/taskChanges", &[("Authorization", writer.as_str()), JSON], r#"[{"id":"t"}]"#).await;
    expect(&check(ENTITY, "POST", pushed), 200, None);
    let pulled = check(ENTITY, "GET", client.get("/taskChanges", &[("Authorization", reader.as_str())]).await);
    expect(&pulled, 200, None);
    let forbidden = client.post("/taskChanges", &[("Authorization", reader.as_str()), JSON], "[]").await;
    expect(&check(ENTITY, "POST", forbidden), 403, Some("forbidden"));
    let undeclared = check(ENTITY, "GET", client.get("/noteChanges", &[("Authorization", reader.as_str())]).await);
    expect(&undeclared, 404, Some("unknown_entity"));
    let capabilities = check("/_sync/capabilities", "GET", client.get("/_sync/capabilities", &[]).await);
    assert_eq!(capabilities.json()["extensions"]["partitions"]["authentication"], "bearer");
    let read_only =
        client.post("/admin/api/redrive", &[("Authorization", operator.as_str()), JSON], r#"{"seqs":[]}"#).await;
    expect(&check("/admin/api/redrive", "POST", read_only), 403, Some("forbidden"));
    for credentials in [None, Some("Bearer not-a-token"), Some("Digest x")] {
        let headers: Vec<(&str, &str)> = credentials.map(|c| ("Authorization", c)).into_iter().collect();
        let refused = check(ENTITY, "GET", client.get("/taskChanges", &headers).await);
        expect(&refused, 401, Some("unauthorized"));
        assert!(refused.headers["www-authenticate"].to_str().expect("text").contains("Bearer"));
    }
    let limited = check(ENTITY, "GET", client.get("/taskChanges", &[("Authorization", reader.as_str())]).await);
    expect(&limited, 429, Some("too_many_attempts"));
    server.stop().await;

    // Without [[admin.users]] the admin API is off.
    let server = TestServer::start().await;
    let off = Client::new(&server.base_url).get("/admin/api/subscriptions", &[]).await;
    expect(&check("/admin/api/subscriptions", "GET", off), 404, Some("not_found"));
    server.stop().await;
}
