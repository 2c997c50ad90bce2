//! What every end-to-end test shares: a real server on port 0 over a fresh store, in this process
//! ([`TestServer`]) or as a child process of the shipped binary ([`ServerProcess`]), and typed
//! helpers for the two requests of the protocol.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sync_server::Config;
use sync_server::store::Store;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The shipped server binary, built with these tests.
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_sync-server-under-test");

/// A server running in this process on an ephemeral port, over a fresh SQLite file in a temp dir.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The store, for checks that bypass HTTP.
    pub store: std::sync::Arc<dyn Store>,
    /// The SQLite file.
    pub db_path: PathBuf,
    handle: actix_web::dev::ServerHandle,
    client: reqwest::Client,
    _dir: TempDir,
}

impl TestServer {
    /// A schemaless server with default limits.
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// A server with this configuration; its `bind` and `db` are replaced by port 0 and a temp file.
    pub async fn start_with(mut config: Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("sync.db");
        config.db = format!("sqlite://{}", db_path.display());
        config.workers = 2;
        config.shutdown_timeout_secs = 1;
        let validated = config.validate().expect("valid test config");
        let store = sync_server::startup::open_store(&validated.db, &config).await.expect("store opens");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let server = sync_server::serve(listener, store.clone(), &config, &validated).expect("server starts");
        let handle = server.handle();
        tokio::spawn(server);
        Self { base_url: format!("http://127.0.0.1:{port}"), store, db_path, handle, client: client(), _dir: dir }
    }

    /// Stops accepting, lets in-flight requests finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }

    /// An HTTP view of this server.
    pub fn api(&self) -> Api {
        Api { base_url: self.base_url.clone(), client: self.client.clone() }
    }
}

/// Typed requests against one server.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    client: reqwest::Client,
}

/// A pull answer.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `now`.
    pub now: i64,
    /// `updates`.
    pub updates: Vec<Value>,
    /// `more`, when the server sent it.
    pub more: Option<bool>,
}

impl Api {
    /// An API for a server at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self { base_url: base_url.into(), client: client() }
    }

    /// `GET path?since=` and its parsed answer; panics unless `200`.
    pub async fn pull(&self, path: &str, since: i64) -> Pulled {
        let (status, body) = self.get(&format!("{path}?since={since}")).await;
        assert_eq!(status, 200, "pull failed: {body}");
        parse_pull(&body)
    }

    /// `GET path_and_query`, returning status and body as JSON.
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = self.client.get(format!("{}{path_and_query}", self.base_url)).send().await.expect("GET sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    /// `POST path` with `items`; panics unless `200`; returns `now`.
    pub async fn push(&self, path: &str, items: Value) -> i64 {
        let (status, body) = self.post(path, &items.to_string()).await;
        assert_eq!(status, 200, "push failed: {body}");
        assert_eq!(body["status"], "ok");
        body["now"].as_i64().expect("now is an integer")
    }

    /// `POST path` with a raw body, returning status and body as JSON.
    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_with(path, body, &[]).await
    }

    /// `POST path` with a raw body and extra headers, returning status and body as JSON.
    pub async fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("POST sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }
}

/// Parses a pull answer, checking its shape.
pub fn parse_pull(body: &Value) -> Pulled {
    Pulled {
        now: body["now"].as_i64().expect("now is an integer"),
        updates: body["updates"].as_array().expect("updates is an array").clone(),
        more: body.get("more").map(|m| m.as_bool().expect("more is a boolean")),
    }
}

/// The update for `id` in a pull, if any.
pub fn find<'a>(pulled: &'a Pulled, id: &str) -> Option<&'a Value> {
    pulled.updates.iter().find(|u| u["id"] == json!(id))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client")
}

/// The shipped binary running as a child process; killed when dropped.
pub struct ServerProcess {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    child: tokio::process::Child,
}

impl ServerProcess {
    /// Starts the binary on port 0 with `--db db` and extra arguments, and waits until it listens.
    pub async fn spawn(db: &str, extra: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(SERVER_BIN)
            .args(["--bind", "127.0.0.1:0", "--db", db, "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "warn,sync_server::startup=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("server binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read server log") {
                if let Some(addr) = listening_addr(&line) {
                    return addr;
                }
                eprintln!("server: {line}");
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server listens within 30 s");
        // Keep draining the log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { base_url: format!("http://{addr}"), child }
    }

    /// An HTTP view of this server.
    pub fn api(&self) -> Api {
        Api::new(self.base_url.clone())
    }

    /// Sends a signal to the server (`SIGTERM` = 15, `SIGKILL` = 9) and waits for it to exit.
    pub async fn signal_and_wait(mut self, signal: i32) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args([format!("-{signal}"), pid]).status().expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits in time").expect("wait")
    }
}

/// The address in the server's "listening on" log line (JSON format), if this is that line.
fn listening_addr(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    fields.get("message")?.as_str()?.starts_with("listening on").then(|| fields["addr"].as_str().map(str::to_owned))?
}

/// A fresh SQLite path in `dir`.
pub fn sqlite_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sync.db").display())
}
