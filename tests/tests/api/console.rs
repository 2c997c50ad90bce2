//! The admin console, as an operator's browser uses it: real HTTP to a real server, the HTML read
//! back. Off without operators, Basic authentication, the overview's counts, a dead event of a
//! failing receiver listed with its error and redriven by its form (the CSRF token scraped from
//! the page) until delivered, forged cross-site forms and read-only mode refused without changing
//! anything, bad input answered with error pages, and the statement timeout honoured.

use std::time::{Duration, Instant};

use serde_json::json;
use sync_server::Config;
use sync_server::store::outbox::EventFilter;

use crate::helpers::{Backend, OPERATOR, TestDb, TestServer, backend_tests, with_operator};
use crate::outbox::{Policy, Receiver, accept_all, config_with};

/// An operator's browser: Basic credentials, no redirects followed (the tests read each `303`),
/// and the server's own origin on every form it sends.
struct Browser {
    base: String,
    client: reqwest::Client,
    user: (String, String),
}

/// An answer, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The value of the first `name="csrf"` input of the page.
    fn csrf(&self) -> String {
        let at = self.html.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("no CSRF token in {}", self.html));
        let rest = &self.html[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').expect("closed")].to_owned()
    }

    /// The element with this id, up to the end of its row or its first closing tag of `tag`.
    fn element(&self, id: &str, tag: &str) -> &str {
        let at = self.html.find(&format!(r#"id="{id}""#)).unwrap_or_else(|| panic!("no #{id} in {}", self.html));
        let rest = &self.html[at..];
        &rest[..rest.find(&format!("</{tag}>")).expect("closed")]
    }

    /// The flash cookie an action set, as a `Cookie` header for the next page.
    fn flash_cookie(&self) -> String {
        let set = self.header("set-cookie");
        assert!(set.starts_with("sync_admin_flash="), "a flash message: {set:?}");
        set.split(';').next().unwrap().to_owned()
    }
}

impl Browser {
    fn new(server: &TestServer, user: &str, password: &str) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: server.base_url.clone(), client, user: (user.into(), password.into()) }
    }

    fn operator(server: &TestServer) -> Self {
        Self::new(server, OPERATOR.0, OPERATOR.1)
    }

    async fn read(response: reqwest::Response) -> Answer {
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Answer { status, headers, html: response.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base)).basic_auth(&self.user.0, Some(&self.user.1));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::read(request.send().await.unwrap()).await
    }

    /// A form sent from this server's own page.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    async fn post_from(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let body = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .basic_auth(&self.user.0, Some(&self.user.1))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        Self::read(request.send().await.unwrap()).await
    }
}

/// `text` as a form value (`application/x-www-form-urlencoded`).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn console_is_off_without_operators() {
    let server = TestServer::start().await;
    let browser = Browser::new(&server, "ops", "anything");
    for path in ["/admin", "/admin/failures", "/admin/audit"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.html);
        assert!(page.html.contains("configure [[admin.users]]"), "{}", page.html);
        assert!(page.header("www-authenticate").is_empty(), "no challenge: nothing to log in to");
    }
    server.stop().await;
}

#[tokio::test]
async fn console_refuses_requests_without_an_operators_credentials() {
    let server = TestServer::start_with_on(with_operator(Config::default()), Backend::SQLITE).await;
    let anonymous = reqwest::get(format!("{}/admin", server.base_url)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Basic realm=\"sync admin\""), "{challenge}");
    assert!(anonymous.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let wrong = Browser::new(&server, OPERATOR.0, "not the passphrase").get("/admin/failures").await;
    assert_eq!(wrong.status, 401, "{}", wrong.html);
    assert!(!wrong.html.contains("id=\"failures\""), "nothing of the page is shown");
    let page = Browser::operator(&server).get("/admin").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.element("operator", "strong").ends_with(">ops"), "signed in as ops");
    assert_eq!(page.header("cache-control"), "no-store");
    assert!(page.header("content-security-policy").contains("frame-ancestors 'none'"));
    server.stop().await;
}

async fn console_overview_shows_what_each_entity_holds(backend: Backend) {
    let server = TestServer::start_with_on(with_operator(Config::default()), backend).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "a", "t": "<b>one</b>"}, {"id": "b"}, {"id": "c"}])).await;
    let last = api.push("/taskChanges", json!([{"id": "c", "_removed": true}])).await;
    api.push("/noteChanges", json!([{"id": "n"}])).await;

    let page = Browser::operator(&server).get("/admin").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let task = page.element("entity-Task", "tr");
    let numbers: Vec<&str> = task.split(r#"<td class="num">"#).skip(1).map(|c| &c[..c.find('<').unwrap()]).collect();
    assert_eq!(numbers, ["2", "1", "1"], "objects, tombstones, partitions: {task}");
    let latest = sync_time(last);
    assert!(task.contains(&latest), "the latest change, {latest}: {task}");
    assert!(page.element("entity-Note", "tr").contains(r#"<td class="num">1</td><td class="num">0</td>"#));
    assert!(page.element("health", "section").contains("answers"), "the store answers");
    assert!(page.element("long-polls", "dd").starts_with(r#"id="long-polls">0 of"#));
    server.stop().await;
}

/// A `_lastChange` as the console writes times (UTC).
fn sync_time(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("a time");
    at.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap()
}

/// The state and attempts of each event of `seqs`.
async fn attempts_of(server: &TestServer, seqs: &[i64]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for seq in seqs {
        let row = server.store.event(*seq).await.unwrap().expect("the event").0;
        out.push((row.state, row.attempts));
    }
    out
}

/// Waits until `n` events of the store are dead.
pub(crate) async fn wait_dead(server: &TestServer, n: usize) -> Vec<i64> {
    let dead = EventFilter { states: vec!["dead".into()], ..EventFilter::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = server.store.events(&dead, None, 100).await.unwrap();
        if rows.len() >= n {
            return rows.iter().map(|r| r.seq).collect();
        }
        assert!(Instant::now() < deadline, "{n} dead events: only {}", rows.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refuse_bad_objects() -> Policy {
    std::sync::Arc::new(
        |event| if event["object_id"].as_str().unwrap_or_default().starts_with("bad") { 500 } else { 204 },
    )
}

async fn console_lists_a_dead_event_and_redrives_it_by_its_form(backend: Backend) {
    let receiver = Receiver::start(refuse_bad_objects()).await;
    let config = with_operator(config_with(vec![receiver.webhook("erp", &[0.0, 0.05])]));
    let server = TestServer::start_with_on(config, backend).await;
    server.api().push("/taskChanges", json!([{"id": "bad-1", "v": 1}, {"id": "good", "v": 1}])).await;
    server.api().push("/noteChanges", json!([{"id": "bad-2", "v": 1}])).await;
    let dead = wait_dead(&server, 2).await;
    let browser = Browser::operator(&server);

    // The failures list shows both, each with the first line of its error.
    let list = browser.get("/admin/failures").await;
    assert_eq!(list.status, 200, "{}", list.html);
    for seq in &dead {
        let row = list.element(&format!("event-{seq}"), "tr");
        assert!(row.contains("the receiver answered 500"), "{row}");
        assert!(row.contains(r#"<span class="badge dead">dead</span>"#), "{row}");
        assert!(row.contains(&format!(r#"name="seq" value="{seq}""#)), "a checkbox: {row}");
    }
    assert!(list.element("matching", "p").contains("<strong>2</strong> events match"), "{}", list.html);
    let filtered = browser.get("/admin/failures?entity=Note&error=ANSWERED+500").await;
    assert!(filtered.element("matching", "p").contains("<strong>1</strong> event matches"), "{}", filtered.html);
    assert!(!filtered.html.contains("bad-1") && filtered.html.contains("bad-2"), "{}", filtered.html);

    // The event's page: the error, the payload hidden, the attempts newest first.
    let bad_1 = EventFilter { object_id: Some("bad-1".into()), ..EventFilter::default() };
    let seq = server.store.events(&bad_1, None, 1).await.unwrap()[0].seq;
    let page = browser.get(&format!("/admin/events/{seq}")).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.element("last-error", "pre").contains("the receiver answered 500"), "{}", page.html);
    assert!(page.html.contains(r#"<details id="payload">"#), "the payload is folded away");
    assert_eq!(page.html.matches(r#"<tr class="attempt">"#).count(), 2, "both attempts");
    assert!(page.html.contains(r#"id="redrive""#) && page.html.contains(r#"id="skip""#));
    let csrf = page.csrf();

    // Forged forms change nothing: another site's page, no token, another token.
    let before = attempts_of(&server, &dead).await;
    let path = format!("/admin/events/{seq}/redrive");
    let forged = [
        browser.post_from(&path, &[("csrf", &csrf)], Some("https://evil.example")).await,
        browser.post(&path, &[]).await,
        browser.post(&path, &[("csrf", "00ff")]).await,
        browser.post(&path, &[("csrf", &format!("{}0", &csrf[1..]))]).await,
    ];
    for answer in &forged {
        assert_eq!(answer.status, 403, "{}", answer.html);
        assert!(answer.header("content-type").starts_with("text/html"));
    }
    let cross_site = browser.client.post(format!("{}{path}", browser.base)).basic_auth(OPERATOR.0, Some(OPERATOR.1));
    let cross_site = cross_site.header("Sec-Fetch-Site", "cross-site").body(format!("csrf={csrf}")).send().await;
    assert_eq!(cross_site.unwrap().status(), 403, "a cross-site fetch without Origin");
    assert_eq!(attempts_of(&server, &dead).await, before, "still dead, and not tried again");
    assert!(server.store.audit_log(10).await.unwrap().is_empty(), "no action was taken");

    // The receiver fixed, the event's form redrives it; delivered, its page says so.
    receiver.set_policy(accept_all());
    let redriven = browser.post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(redriven.status, 303, "{}", redriven.html);
    assert_eq!(redriven.header("location"), format!("/admin/events/{seq}"));
    let cookie = redriven.flash_cookie();
    receiver.wait_for(20, "bad-1", |d| d.iter().any(|e| e["object_id"] == "bad-1")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let after = browser.get_with(&format!("/admin/events/{seq}"), &[("Cookie", &cookie)]).await;
        if after.html.contains(r#"<span class="badge delivered">delivered</span>"#) || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(after.html.contains(r#"<span class="badge delivered">delivered</span>"#), "{}", after.html);
    assert_eq!(after.element("flash", "div"), r#"id="flash" class="flash" role="status">1 event redriven"#);
    assert!(after.header("set-cookie").contains("Max-Age=0"), "the message is shown once");

    // Everything matching a filter: confirmed with its count first.
    let list = browser.get("/admin/failures").await;
    let filter = [("csrf", list.csrf()), ("all", "1".into()), ("state", "dead,failed".into())];
    let form: Vec<(&str, &str)> = filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let confirm = browser.post("/admin/redrive", &form).await;
    assert_eq!(confirm.status, 200, "{}", confirm.html);
    assert_eq!(confirm.element("confirm", "p"), r#"id="confirm">Redrive 1 event?"#);
    let others: Vec<i64> = dead.iter().copied().filter(|d| *d != seq).collect();
    let unconfirmed = attempts_of(&server, &others).await;
    assert!(unconfirmed.iter().all(|(state, _)| state == "dead"), "{unconfirmed:?}");
    assert_eq!(attempts_of(&server, &others).await, unconfirmed, "not before it is confirmed");
    // Confirmed for fewer than match now: asked again, nothing redriven.
    let mut stale = form.clone();
    stale.push(("confirmed", "0"));
    let again = browser.post("/admin/redrive", &stale).await;
    assert_eq!(again.element("confirm", "p"), r#"id="confirm">Redrive 1 event?"#, "{}", again.html);
    assert_eq!(attempts_of(&server, &others).await, unconfirmed, "not for a stale confirmation");
    let mut confirmed = form.clone();
    confirmed.push(("confirmed", "1"));
    let done = browser.post("/admin/redrive", &confirmed).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.header("location"), "/admin/failures?state=dead%2Cfailed");
    receiver.wait_for(20, "bad-2", |d| d.iter().any(|e| e["object_id"] == "bad-2")).await;
    let shown = browser.get_with(done.header("location"), &[("Cookie", &done.flash_cookie())]).await;
    assert!(shown.element("flash", "div").ends_with("1 event redriven"), "{}", shown.html);

    // Both actions are in the audit log, newest first.
    let audit = browser.get("/admin/audit").await;
    let entries: Vec<&str> = audit.html.split(r#"<tr class="audit-entry">"#).skip(1).collect();
    assert_eq!(entries.len(), 2, "{}", audit.html);
    assert!(entries[0].contains("filter") && entries[1].contains(&format!("event {seq}: 1 redriven")), "{entries:?}");
    server.stop().await;
}

async fn console_searches_by_event_object_and_user(backend: Backend) {
    let receiver = Receiver::start(refuse_bad_objects()).await;
    let config = with_operator(config_with(vec![receiver.webhook("erp", &[0.0])]));
    let server = TestServer::start_with_on(config, backend).await;
    server.api().push("/taskChanges", json!([{"id": "bad-x"}, {"id": "bad-y"}])).await;
    let dead = wait_dead(&server, 2).await;
    let browser = Browser::operator(&server);
    let by_object = browser.get("/admin/search?q=bad-x").await;
    assert_eq!(by_object.status, 200, "{}", by_object.html);
    let results = by_object.element("results", "table");
    assert_eq!(results.matches("<tr id=\"event-").count(), 1, "{results}");
    let row = server.store.event(dead[0]).await.unwrap().unwrap().0;
    let by_id = browser.get(&format!("/admin/search?q={}", row.event.event_id)).await;
    assert!(by_id.html.contains(&format!(r#"id="event-{}""#, row.seq)), "{}", by_id.html);
    let by_number = browser.get(&format!("/admin/search?q={}", row.seq)).await;
    assert!(by_number.html.contains(&format!(r#"id="event-{}""#, row.seq)), "{}", by_number.html);
    assert_eq!(row.event.partition.is_empty(), !backend.auth, "partition: {:?}", row.event.partition);
    if backend.auth {
        let user = row.event.partition.strip_prefix("user:").expect("a user's partition");
        let by_user = browser.get(&format!("/admin/search?q={user}")).await;
        assert_eq!(by_user.element("results", "table").matches("<tr id=\"event-").count(), 2, "{}", by_user.html);
    }
    server.stop().await;
}

#[tokio::test]
async fn console_disables_and_enables_a_subscription_by_its_forms() {
    let receiver = Receiver::start(accept_all()).await;
    let config = with_operator(config_with(vec![receiver.webhook("erp", &[0.0])]));
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    let browser = Browser::operator(&server);
    let overview = browser.get("/admin").await;
    assert!(overview.element("subscription-erp", "tr").contains("enabled"), "{}", overview.html);
    let csrf = overview.csrf();
    let disabled =
        browser.post("/admin/subscriptions/erp/disable", &[("csrf", &csrf), ("reason", "ERP <upgrade>")]).await;
    assert_eq!((disabled.status, disabled.header("location")), (303, "/admin"), "{}", disabled.html);
    let stats = server.store.subscriptions(&[]).await.unwrap();
    assert_eq!((stats[0].enabled, stats[0].disabled_reason.as_deref()), (false, Some("ERP <upgrade>")));
    let shown = browser.get_with("/admin", &[("Cookie", &disabled.flash_cookie())]).await;
    assert!(shown.element("flash", "div").ends_with("Subscription erp disabled"), "{}", shown.html);
    let row = shown.element("subscription-erp", "tr");
    assert!(row.contains("disabled") && row.contains("ERP &lt;upgrade&gt;"), "escaped: {row}");
    assert!(row.contains(r#"id="enable-erp""#), "{row}");
    // Pushed while disabled, delivered once enabled again.
    server.api().push("/taskChanges", json!([{"id": "held"}])).await;
    let enabled = browser.post("/admin/subscriptions/erp/enable", &[("csrf", &csrf)]).await;
    assert_eq!(enabled.status, 303, "{}", enabled.html);
    receiver.wait_for(20, "held", |d| d.iter().any(|e| e["object_id"] == "held")).await;
    assert!(server.store.subscriptions(&[]).await.unwrap()[0].enabled);
    server.stop().await;
}

#[tokio::test]
async fn console_read_only_mode_refuses_every_form() {
    let receiver = Receiver::start(refuse_bad_objects()).await;
    let mut config = with_operator(config_with(vec![receiver.webhook("erp", &[0.0])]));
    config.admin.read_only = true;
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    server.api().push("/taskChanges", json!([{"id": "bad-1"}])).await;
    let seq = wait_dead(&server, 1).await[0];
    let browser = Browser::operator(&server);
    let page = browser.get(&format!("/admin/events/{seq}")).await;
    assert!(page.html.contains(r#"id="read-only""#), "{}", page.html);
    assert!(!page.html.contains(r#"id="redrive""#), "no button to press");
    let list = browser.get("/admin/failures").await;
    assert!(!list.html.contains(r#"id="redrive-selected""#) && !list.html.contains(r#"name="seq""#));
    let csrf = list.csrf();
    let seq_text = seq.to_string();
    for (path, form) in [
        (format!("/admin/events/{seq}/redrive"), vec![("csrf", csrf.as_str())]),
        (format!("/admin/events/{seq}/skip"), vec![("csrf", csrf.as_str())]),
        ("/admin/redrive".into(), vec![("csrf", csrf.as_str()), ("seq", seq_text.as_str())]),
        ("/admin/skip".into(), vec![("csrf", csrf.as_str()), ("seq", seq_text.as_str())]),
        ("/admin/subscriptions/erp/disable".into(), vec![("csrf", csrf.as_str())]),
    ] {
        let answer = browser.post(&path, &form).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.html);
        assert!(answer.html.contains("read-only"), "{}", answer.html);
    }
    assert_eq!(server.store.event(seq).await.unwrap().unwrap().0.state, "dead", "nothing changed");
    assert!(server.store.subscriptions(&[]).await.unwrap().iter().all(|s| s.enabled));
    server.stop().await;
}

#[tokio::test]
async fn console_answers_bad_input_with_an_error_page_and_changes_nothing() {
    let receiver = Receiver::start(refuse_bad_objects()).await;
    let server =
        TestServer::start_with_on(with_operator(config_with(vec![receiver.webhook("erp", &[0.0])])), Backend::SQLITE)
            .await;
    server.api().push("/taskChanges", json!([{"id": "bad-1"}])).await;
    let seq = wait_dead(&server, 1).await[0];
    let browser = Browser::operator(&server);
    let csrf = browser.get("/admin").await.csrf();
    let huge = format!("/admin/failures?entity={}", "x".repeat(5000));
    for (path, status) in [
        ("/admin/events/abc", 404),
        ("/admin/events/99999999", 404),
        ("/admin/events/1e3", 404),
        ("/admin/failures?state=gone", 400),
        ("/admin/failures?before=x", 400),
        ("/admin/failures?from=yesterday", 400),
        ("/admin/failures?until=2026-02-30", 400),
        (huge.as_str(), 400),
        ("/admin/nothing-here", 404),
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, status, "{}: {}", &path[..path.len().min(60)], page.html);
        assert!(page.html.contains(r#"id="error-message""#), "an error page: {}", page.html);
    }
    for (path, form, status) in [
        ("/admin/events/abc/redrive".to_owned(), vec![("csrf", csrf.as_str())], 404),
        (format!("/admin/events/{seq}/explode"), vec![("csrf", csrf.as_str())], 404),
        ("/admin/redrive".into(), vec![("csrf", csrf.as_str()), ("seq", "one")], 400),
        ("/admin/redrive".into(), vec![("csrf", csrf.as_str()), ("all", "1"), ("state", "gone")], 400),
        ("/admin/subscriptions/nope/disable".into(), vec![("csrf", csrf.as_str())], 404),
    ] {
        let answer = browser.post(&path, &form).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.html);
    }
    let wrong_method = browser.client.delete(format!("{}/admin/failures", browser.base));
    let wrong_method = wrong_method.basic_auth(OPERATOR.0, Some(OPERATOR.1)).send().await.unwrap();
    assert_eq!((wrong_method.status().as_u16(), wrong_method.headers()["allow"].to_str().unwrap()), (405, "GET"));
    assert_eq!(server.store.event(seq).await.unwrap().unwrap().0.state, "dead", "nothing changed");
    assert!(server.store.audit_log(10).await.unwrap().is_empty());
    server.stop().await;
}

/// Fills `db` with `n` objects of entity `Big`, directly.
async fn fill(db: &TestDb, n: i64) {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute(
            "INSERT INTO objects (entity, partition, id, last_change, removed, fields)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             SELECT 'Big', 'p' || (i % 7), 'id' || i, i, 0, '{}' FROM n",
            [n],
        )
        .unwrap();
    } else {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .execute(
                "INSERT INTO sync_objects (entity, partition, id, last_change, removed, fields)
                 SELECT 'Big', 'p' || (i % 7), convert_to('id' || i, 'UTF8'), i, FALSE, '{}'
                 FROM generate_series(1, $1::bigint) i",
                &[&n],
            )
            .await
            .unwrap();
    }
}

async fn console_queries_stop_at_the_statement_timeout(backend: Backend) {
    let db = TestDb::create(backend).await;
    // Started once so that the schema exists, then filled past what a millisecond reads.
    TestServer::start_over(with_operator(Config::default()), db.clone()).await.stop().await;
    fill(&db, 300_000).await;

    let mut hurried = with_operator(Config::default());
    hurried.admin.statement_timeout_ms = 1;
    let server = TestServer::start_over(hurried, db.clone()).await;
    let browser = Browser::operator(&server);
    let overview = browser.get("/admin").await;
    assert_eq!(overview.status, 200, "the overview still shows health: {}", overview.html);
    assert!(overview.html.contains("statement timeout of 1 ms"), "{}", overview.html);
    assert!(!overview.html.contains(r#"id="entity-Big""#), "{}", overview.html);
    server.stop().await;

    let patient = TestServer::start_over(with_operator(Config::default()), db).await;
    let overview = Browser::operator(&patient).get("/admin").await;
    let big = overview.element("entity-Big", "tr");
    assert!(big.contains(r#"<td class="num">300000</td><td class="num">0</td>"#), "{big}");
    assert!(big.ends_with(r#"<td class="num">7</td>"#), "seven partitions: {big}");
    patient.stop().await;
}

backend_tests!(
    per_database: console_overview_shows_what_each_entity_holds,
    console_lists_a_dead_event_and_redrives_it_by_its_form,
    console_queries_stop_at_the_statement_timeout,
);
// With and without partitions: a user is found by the partition of their events.
backend_tests!(console_searches_by_event_object_and_user);
