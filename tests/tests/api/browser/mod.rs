//! The web app example (`examples/webapp`) in real headless Chromium, served by the shipped
//! server binary with the example's own configuration: two browser profiles are two devices of
//! one user, logged in through the page's form (the token in the cookie the server reads). They
//! add, edit and remove to-dos and converge through the server without a click on Sync (the
//! long-poll brings the other device's changes); one keeps working while the server is stopped,
//! its edits kept in localStorage, and both converge once the server is back on the same port and
//! database. A reloaded page shows what localStorage kept and pushes nothing again.
//!
//! Screenshots of each step go to `target/browser-artifacts/webapp/`.

mod chrome;
mod console;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::helpers::{Api, Backend, ServerProcess, TestDb};
use chrome::{Browser, Page};

/// The secret the test's identity provider signs with (the server reads it from its config).
const SECRET: &str = "the secret of the web app test, long enough for HS256";

/// The example as shipped.
fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp").join(path)
}

/// An HS256 token of `user`, as the identity provider of a deployment would issue it.
fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("an HS256 key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token")
}

/// The example's `sync.toml`, with the secret it otherwise takes from `SYNC_JWT_SECRET`.
fn config_file() -> tempfile::NamedTempFile {
    let shipped = std::fs::read_to_string(example("sync.toml")).expect("examples/webapp/sync.toml");
    let algorithms = "algorithms = [\"HS256\"]\n";
    assert!(shipped.contains(algorithms), "the example's config signs with HS256");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), shipped.replace(algorithms, &format!("{algorithms}secret = \"{SECRET}\"\n"))).unwrap();
    file
}

async fn serve(db: &TestDb, bind: &str, config: &Path) -> ServerProcess {
    let static_dir = example("static");
    let args = ["--config", config.to_str().unwrap(), "--static-dir", static_dir.to_str().unwrap()];
    ServerProcess::spawn_bound(db, bind, &args).await
}

/// A to-do as the page lists it: its text, and whether it is done.
type Todo = (String, bool);

fn todos(list: &[(&str, bool)]) -> Vec<Todo> {
    let mut list: Vec<Todo> = list.iter().map(|(t, d)| (t.to_string(), *d)).collect();
    list.sort();
    list
}

/// What the page lists, sorted.
async fn listed(page: &Page) -> Vec<Todo> {
    let items = page
        .eval(
            "return Array.from(document.querySelectorAll('#todos li')).map(li => \
             [li.querySelector('.text') ? li.querySelector('.text').textContent : '', li.classList.contains('done')])",
        )
        .await;
    let mut list: Vec<Todo> = serde_json::from_value(items).expect("a list of to-dos");
    list.sort();
    list
}

/// The sync status the page shows: its state (`synced`, `offline`, ...) and the local changes
/// not pushed yet.
async fn status(page: &Page) -> (String, u64) {
    let status =
        page.eval("const s = document.getElementById('status'); return [s.dataset.state, s.dataset.pending]").await;
    (status[0].as_str().unwrap_or_default().to_owned(), status[1].as_str().unwrap_or("0").parse().unwrap_or(0))
}

/// Waits until the page lists `expected`.
async fn wait_listed(page: &Page, expected: &[Todo]) {
    page.wait_for(&format!("the list {expected:?}"), || async {
        let list = listed(page).await;
        if list == expected { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await
}

/// Waits until the page's sync status is `state` with `pending` local changes.
async fn wait_status(page: &Page, state: &str, pending: u64) {
    page.wait_for(&format!("status {state} with {pending} pending"), || async {
        let shown = status(page).await;
        if shown == (state.to_owned(), pending) { Ok(()) } else { Err(format!("{shown:?}")) }
    })
    .await
}

/// The live to-dos the server holds for the token's user, sorted.
async fn on_server(api: &Api) -> Vec<Todo> {
    let pulled = api.pull("/todoChanges", 0).await;
    let mut list: Vec<Todo> = pulled
        .updates
        .iter()
        .filter(|u| u.get("_removed") != Some(&json!(true)))
        .map(|u| (u["text"].as_str().unwrap_or_default().to_owned(), u["done"] == json!(true)))
        .collect();
    list.sort();
    list
}

async fn wait_on_server(api: &Api, page: &Page, expected: &[Todo]) {
    page.wait_for(&format!("the server holding {expected:?}"), || async {
        let list = on_server(api).await;
        if list == expected { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await
}

/// The page's log-in: loads it, waits for the form, gives it the token.
async fn log_in(page: &Page, base_url: &str, token: &str, screenshot: bool) {
    page.client.goto(&format!("{base_url}/")).await.expect("the page loads");
    page.wait_for("the login form", || async {
        if page.eval("return !document.getElementById('login').hidden").await == json!(true) {
            Ok(())
        } else {
            Err("hidden".into())
        }
    })
    .await;
    page.fill("#token", token).await;
    if screenshot {
        page.screenshot("1-login").await;
    }
    page.click("#login-form button[type=submit]").await;
    // The page reloads as the user, opens their store and syncs.
    wait_status(page, "synced", 0).await;
}

async fn add(page: &Page, text: &str) {
    page.fill("#new-text", text).await;
    page.click("#add-form button[type=submit]").await;
}

/// The button `class` of the to-do whose text is `text`.
fn button_of(text: &str, class: &str) -> String {
    format!("//li[span[@class='text' and .='{text}']]/*[@class='{class}']")
}

async fn edit(page: &Page, from: &str, to: &str) {
    page.click_at(Locator::XPath(&button_of(from, "edit"))).await;
    let field = page.client.find(Locator::Css("li input.edit-text")).await.expect("the edit field");
    // The field opens with its text selected: typing replaces it.
    field.send_keys(&format!("{to}{}", char::from(Key::Enter))).await.unwrap();
}

async fn toggle(page: &Page, text: &str) {
    page.click_at(Locator::XPath(&button_of(text, "toggle"))).await;
}

async fn remove(page: &Page, text: &str) {
    page.click_at(Locator::XPath(&button_of(text, "remove"))).await;
}

#[tokio::test]
async fn two_devices_converge_through_the_server_and_one_works_offline() {
    const TEST: &str = "two_devices_converge_through_the_server_and_one_works_offline";
    let Some(browser) = Browser::find(TEST) else { return };
    let started = Instant::now();
    let artifacts = chrome::artifacts_dir("webapp");
    let profiles = tempfile::tempdir().unwrap();
    let db = TestDb::create(Backend::SQLITE).await;
    let config = config_file();
    let server = serve(&db, "127.0.0.1:0", config.path()).await;
    let base_url = server.base_url.clone();
    let alice = token("alice");
    let api = Api::new(&base_url).bearer(&alice);

    let driver = browser.driver().await;
    let phone = driver.open("phone", &profiles.path().join("phone"), &artifacts).await;
    let laptop = driver.open("laptop", &profiles.path().join("laptop"), &artifacts).await;
    log_in(&phone, &base_url, &alice, true).await;
    log_in(&laptop, &base_url, &alice, false).await;
    assert_eq!(listed(&phone).await, vec![], "a new user starts with nothing");

    // Added on the phone: the laptop shows them by itself (its long-poll hears of the push).
    for text in ["buy milk", "call mum", "water the plants"] {
        add(&phone, text).await;
    }
    let three = todos(&[("buy milk", false), ("call mum", false), ("water the plants", false)]);
    wait_listed(&phone, &three).await;
    wait_status(&phone, "synced", 0).await;
    wait_listed(&laptop, &three).await;
    phone.screenshot("2-added").await;
    laptop.screenshot("2-received").await;

    // Edits on both devices, of different to-dos.
    edit(&laptop, "call mum", "call mum on sunday").await;
    toggle(&laptop, "buy milk").await;
    remove(&phone, "water the plants").await;
    let two = todos(&[("buy milk", true), ("call mum on sunday", false)]);
    wait_listed(&laptop, &two).await;
    wait_listed(&phone, &two).await;
    wait_status(&phone, "synced", 0).await;
    wait_status(&laptop, "synced", 0).await;
    wait_on_server(&api, &phone, &two).await;
    laptop.screenshot("3-edited").await;
    phone.screenshot("3-converged").await;

    // The server stops; the phone goes on, and keeps its edits in localStorage.
    let addr = base_url.trim_start_matches("http://").to_owned();
    let stopped = server.signal_and_wait(15).await;
    assert!(stopped.success(), "the server stops cleanly: {stopped:?}");
    wait_status(&phone, "offline", 0).await;
    add(&phone, "fix the bike").await;
    edit(&phone, "buy milk", "buy oat milk").await;
    remove(&phone, "call mum on sunday").await;
    let offline = todos(&[("buy oat milk", true), ("fix the bike", false)]);
    wait_listed(&phone, &offline).await;
    wait_status(&phone, "offline", 3).await;
    let kept = phone.eval("return localStorage.getItem('todo:alice')").await;
    let kept = kept.as_str().expect("the store is kept in localStorage");
    assert!(
        kept.contains("fix the bike") && kept.contains("buy oat milk"),
        "localStorage holds the offline edits: {kept}"
    );
    wait_listed(&laptop, &two).await;
    phone.screenshot("4-offline").await;

    // Back on the same port and database: the phone pushes, the laptop pulls.
    let server = serve(&db, &addr, config.path()).await;
    wait_status(&phone, "synced", 0).await;
    wait_listed(&laptop, &offline).await;
    wait_status(&laptop, "synced", 0).await;
    wait_on_server(&api, &phone, &offline).await;
    phone.screenshot("5-back-online").await;
    laptop.screenshot("5-converged").await;

    // A reload shows what localStorage kept, and its sync pushes nothing again (the saved
    // _lastChange survives the load).
    let pushed = api.metric("sync_pushed_objects_total").await.expect("the pushed-objects counter");
    laptop.client.refresh().await.unwrap();
    wait_listed(&laptop, &offline).await;
    wait_status(&laptop, "synced", 0).await;
    assert_eq!(api.metric("sync_pushed_objects_total").await, Some(pushed), "a reload pushed objects again");
    assert_eq!(listed(&phone).await, offline);
    laptop.screenshot("6-reloaded").await;

    // Another user of the same server sees none of it.
    let bob = driver.open("bob", &profiles.path().join("bob"), &artifacts).await;
    log_in(&bob, &server.base_url, &token("bob"), false).await;
    assert_eq!(listed(&bob).await, vec![]);
    bob.screenshot("7-other-user").await;

    for page in [phone, laptop, bob] {
        page.close().await;
    }
    drop(driver);
    let stopped = server.signal_and_wait(15).await;
    assert!(stopped.success(), "the server stops cleanly: {stopped:?}");
    eprintln!("browser scenario took {:.1} s; screenshots in {}", started.elapsed().as_secs_f64(), artifacts.display());
}

/// The page's files as the server sends them: what the browser test loads, checked at the
/// HTTP level (types, and the vendored client carrying its fixes).
#[tokio::test]
async fn the_example_page_is_served_with_its_vendored_client() {
    let db = TestDb::create(Backend::SQLITE).await;
    let config = config_file();
    let server = serve(&db, "127.0.0.1:0", config.path()).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", server.base_url));
    let page = get("/").await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    for script in
        ["vendor/persistence.js", "vendor/persistence.store.memory.js", "vendor/persistence.sync.js", "app.js"]
    {
        assert!(html.contains(&format!("src=\"{script}\"")), "the page loads {script}");
        let answer = get(&format!("/{script}")).await.unwrap();
        assert_eq!(answer.status(), 200, "{script}");
        assert_eq!(answer.headers()["content-type"], "text/javascript; charset=utf-8");
    }
    let store = get("/vendor/persistence.store.memory.js").await.unwrap().text().await.unwrap();
    assert!(store.contains("trackedObjects[id]._new = false;"), "the vendored store carries its fixes");
    // Without the cookie the data stays closed; the page itself is open.
    let anonymous = get("/todoChanges?since=0").await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    server.signal_and_wait(15).await;
}
