//! `static_dir`: a web app's files served at the paths no entity takes, over real HTTP. Bad
//! paths are sent byte for byte on a raw connection (HTTP clients would normalise `..` away
//! before sending), and none of them reaches a file outside the directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use sync_server::Config;

use crate::helpers::{Backend, TestServer};

/// A directory with an app inside, and a file beside it that must never be served.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app");
        std::fs::create_dir_all(app.join("docs")).unwrap();
        std::fs::write(app.join("index.html"), "<!doctype html><p>the app</p>").unwrap();
        std::fs::write(app.join("app.js"), "console.log(1)").unwrap();
        std::fs::write(app.join("style.css"), "p{}").unwrap();
        std::fs::write(app.join("docs/index.html"), "docs").unwrap();
        std::fs::write(app.join("healthz"), "a file named like a reserved path").unwrap();
        std::fs::write(app.join(".env"), "SECRET=1").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), app.join("link.txt")).unwrap();
        Self { dir }
    }

    async fn serve(&self) -> TestServer {
        let config = Config { static_dir: Some(self.dir.path().join("app")), ..Config::default() };
        TestServer::start_with_on(config, Backend::SQLITE).await
    }
}

/// Sends `method target` as written, byte for byte, and returns the status, the head (lower-cased)
/// and the body.
fn raw(base_url: &str, method: &str, target: &str) -> (u16, String, String) {
    let addr = base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_app_is_served_with_content_types_and_entities_keep_their_paths() {
    let site = Site::new();
    let server = site.serve().await;
    let url = server.base_url.clone();

    let page = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.text().await.unwrap(), "<!doctype html><p>the app</p>");
    for (path, kind) in [("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8")] {
        let answer = reqwest::get(format!("{url}{path}")).await.unwrap();
        assert_eq!((answer.status().as_u16(), answer.headers()["content-type"].to_str().unwrap()), (200, kind));
    }
    let docs = reqwest::get(format!("{url}/docs/")).await.unwrap();
    assert_eq!(docs.text().await.unwrap(), "docs");

    // A directory without its slash is redirected to it, so the page's relative links work.
    let (status, head, _) = tokio::task::spawn_blocking(move || raw(&url, "GET", "/docs?x=1")).await.unwrap();
    assert_eq!(status, 301);
    assert!(head.contains("location: /docs/?x=1"), "{head}");

    // HEAD: the headers without the body.
    let url = server.base_url.clone();
    let (status, head, body) = tokio::task::spawn_blocking(move || raw(&url, "HEAD", "/app.js")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(head.contains("content-length: 14"), "{head}");

    // Entity paths and reserved paths are the server's, whatever the directory holds.
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "t1", "title": "x"}])).await;
    assert_eq!(api.pull("/taskChanges", 0).await.updates.len(), 1);
    let (status, body) = api.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = api.post("/app.js", "[]").await;
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")));
    server.stop().await;
}

#[tokio::test]
async fn bad_paths_get_a_clear_error_and_nothing_outside_is_served() {
    let site = Site::new();
    let server = site.serve().await;
    let url = server.base_url.clone();
    let long = format!("/{}", "a".repeat(2000));
    let answers = tokio::task::spawn_blocking(move || {
        let invalid = [
            "/../secret.txt",
            "/docs/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/.%2e/secret.txt",
            "/..%2fsecret.txt",
            "/docs%2f..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/app.js%00",
            "/%zz",
            "//secret.txt",
            long.as_str(),
        ];
        // Hidden names, links out of the directory, absent files: nothing there.
        let missing = ["/.env", "/link.txt", "/nothing.html", "/app.js/more"];
        let expect = |code| move |target: &&str| (target.chars().take(40).collect::<String>(), code);
        let cases =
            invalid.iter().map(expect((400, "invalid_path"))).chain(missing.iter().map(expect((404, "not_found"))));
        let mut answers = Vec::new();
        for ((shown, expected), target) in cases.zip(invalid.iter().chain(&missing)) {
            let (status, _, body) = raw(&url, "GET", target);
            answers.push((shown, expected, status, body));
        }
        answers
    })
    .await
    .unwrap();
    for (target, (code_status, code), status, body) in &answers {
        assert!(!body.contains("outside") && !body.contains("SECRET"), "{target} served a file it must not: {body}");
        let error: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{target}: a JSON error, got {body}"));
        assert_eq!((*status, error["error"].as_str().unwrap()), (*code_status, *code), "{target}: {body}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // A file named like a reserved path is never served in its place.
    let (status, body) = server.api().get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    server.stop().await;
}

#[tokio::test]
async fn without_static_dir_other_paths_stay_unknown_entities() {
    let server = TestServer::start_with_on(Config::default(), Backend::SQLITE).await;
    let (status, body) = server.api().get("/index.html").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_entity")));
    server.stop().await;
}

#[tokio::test]
async fn a_static_dir_that_is_not_a_directory_stops_the_start() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let config = Config { static_dir: Some(file.path().to_owned()), ..Config::default() };
    let Err(err) = sync_server::Application::build(config).await else { panic!("a file accepted as static_dir") };
    assert!(err.to_string().contains("static_dir"), "{err}");
}
