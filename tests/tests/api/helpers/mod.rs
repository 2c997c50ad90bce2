//! What every end-to-end test shares: a real server on port 0 over a fresh store, in this process
//! ([`TestServer`]) or as a child process of the shipped binary ([`ServerProcess`]), and typed
//! helpers for the two requests of the protocol.
//!
//! Every store runs the same tests, with authentication off and on: [`backend_tests!`] turns an
//! `async fn(Backend)` into one test per [`Backend`], and [`TestDb`] gives each test a fresh
//! database of that backend (a temp SQLite file, or a PostgreSQL database created on the server
//! named by `SYNC_TEST_POSTGRES_URL` and dropped afterwards). Without that variable the PostgreSQL
//! variants fail, unless `SYNC_TEST_SKIP=postgres` says to skip them (they print `SKIPPED`);
//! under `CI` nothing may be skipped. The browser tests follow the same rule for Chromium
//! (`SYNC_TEST_SKIP=browser`; see `browser::chrome`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sync_server::clock::Clock;
use sync_server::store::{PostgresOptions, PostgresStore, Scope, SqliteOptions, SqliteStore, Store};
use sync_server::{Application, Config};
use sync_tests::with_dbname;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

pub mod stress;
mod suite_auth;
pub use suite_auth::{Endpoint, SUITE_USER, partition_of, token_of};
use suite_auth::{SUITE_AUTH_TOML, with_suite_auth};

/// The variable naming the PostgreSQL server the tests create their databases on, as a URL
/// (`postgres://postgres@127.0.0.1:5432/postgres`); its user must be allowed to create databases.
pub const POSTGRES_URL_VAR: &str = "SYNC_TEST_POSTGRES_URL";

/// Test databases are named with this prefix, the creation time and a random suffix.
const TEST_DB_PREFIX: &str = "sync_test_";

/// Test databases older than this are left over from killed runs, and dropped by the next run.
const STALE_TEST_DB_SECS: u64 = 6 * 3600;

/// The databases the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A fresh database on the PostgreSQL server of [`POSTGRES_URL_VAR`].
    Postgres,
}

/// What one variant of a test runs against: a database, with authentication off or on. With
/// it on, servers started for the test authenticate as [`suite_auth`] says, and their
/// [`Endpoint`]s and [`Api`]s act as [`SUITE_USER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The database.
    pub db: Db,
    /// Whether the servers authenticate.
    pub auth: bool,
}

impl Backend {
    /// A SQLite file, no authentication.
    pub const SQLITE: Backend = Backend { db: Db::Sqlite, auth: false };
    /// A PostgreSQL database, no authentication.
    pub const POSTGRES: Backend = Backend { db: Db::Postgres, auth: false };

    /// The same database, with authentication on.
    pub const fn with_auth(self) -> Self {
        Backend { auth: true, ..self }
    }

    /// Whether tests of this backend run here. PostgreSQL needs [`POSTGRES_URL_VAR`]; without it
    /// `test` fails, unless [`SKIP_VAR`] names `postgres` (see [`service_available`]).
    pub fn is_available(self, test: &str) -> bool {
        self.db == Db::Sqlite
            || service_available(test, "postgres", POSTGRES_URL_VAR, "postgres://postgres@127.0.0.1:5432/postgres")
    }

    /// The objects of `entity` a test's requests reach: those of [`SUITE_USER`]'s partition with
    /// authentication on, those outside any partition without.
    pub fn scope(self, entity: &str) -> Scope {
        let entity = sync_proto::EntityName::new(entity).expect("an entity name");
        if self.auth { Scope::partitioned(entity, partition_of(SUITE_USER)) } else { Scope::entity(entity) }
    }

    /// `config` as this backend runs it: with the suite's authentication when it is on.
    fn configure(self, config: Config) -> Config {
        if self.auth { with_suite_auth(config) } else { config }
    }

    /// The token clients of a server of this backend send: [`SUITE_USER`]'s when it
    /// authenticates.
    fn token(self) -> Option<String> {
        self.auth.then(|| token_of(SUITE_USER))
    }
}

/// The admin user of tests of the admin API and console: name and passphrase.
pub const OPERATOR: (&str, &str) = ("ops", "a long operator passphrase");

/// `config` with [`OPERATOR`] as its one admin user.
pub fn with_operator(mut config: Config) -> Config {
    let password_hash = sync_server::auth::basic::hash_password(OPERATOR.1).expect("hash");
    config.admin.users =
        vec![sync_server::auth::basic::BasicUser { user: OPERATOR.0.into(), password_hash, roles: vec![] }];
    config
}

/// The variable that lets a run without some service skip its tests: a comma-separated list of
/// `postgres`, `amqp` and `browser`. Ignored under `CI`, where every test must run.
pub const SKIP_VAR: &str = "SYNC_TEST_SKIP";

/// Whether the tests needing `service` (reached at the URL in `var`, such as `example`) run:
/// true when `var` is set. Without it, `test` fails saying what to set, so that a run without the
/// service cannot pass for one that tested it; unless [`SKIP_VAR`] names the service outside
/// `CI`, and then it prints `SKIPPED` and returns false.
pub fn service_available(test: &str, service: &str, var: &str, example: &str) -> bool {
    if std::env::var(var).is_ok_and(|url| !url.trim().is_empty()) {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let skipped = std::env::var(SKIP_VAR).is_ok_and(|list| list.split(',').any(|s| s.trim() == service));
    assert!(
        skipped && !ci,
        "{test} needs {service}: set {var} (e.g. {example}), or {SKIP_VAR}={service} to skip it{}",
        if ci { " (not under CI, which runs every test)" } else { "" }
    );
    eprintln!("SKIPPED: {test} on {service}: {SKIP_VAR} names it and {var} is not set");
    false
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound but
/// never listening, so that no other program can take the port meanwhile, as it could take one
/// that was bound and released.
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bound");
    let port = socket.local_addr().expect("an address").as_socket().expect("an IP address").port();
    (socket, port)
}

/// The PostgreSQL server URL of [`POSTGRES_URL_VAR`], if set.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR).ok().filter(|url| !url.trim().is_empty())
}

/// Runs each named `async fn(Backend)` as one test per database and authentication mode:
/// `NAME::sqlite`, `NAME::postgres`, `NAME::sqlite_with_auth` and `NAME::postgres_with_auth`, so
/// that every store passes the same tests, with every user in a partition of their own and
/// without partitions. Prefix the names with `multi_thread:` to run them on a multi-threaded
/// runtime with two workers, or with `per_database:` for tests that choose their own
/// authentication or partitions (they run once per database).
macro_rules! backend_tests {
    (multi_thread: $($name:ident),+ $(,)?) => {
        $crate::helpers::backend_tests!(@each (flavor = "multi_thread", worker_threads = 2) $($name),+);
    };
    (per_database: $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                $crate::helpers::backend_tests!(@variant () $name sqlite $crate::helpers::Backend::SQLITE);
                $crate::helpers::backend_tests!(@variant () $name postgres $crate::helpers::Backend::POSTGRES);
            }
        )+
    };
    (@each $flavor:tt $($name:ident),+) => {
        $(
            mod $name {
                $crate::helpers::backend_tests!(@variant $flavor $name sqlite $crate::helpers::Backend::SQLITE);
                $crate::helpers::backend_tests!(@variant $flavor $name postgres $crate::helpers::Backend::POSTGRES);
                $crate::helpers::backend_tests!(
                    @variant $flavor $name sqlite_with_auth $crate::helpers::Backend::SQLITE.with_auth()
                );
                $crate::helpers::backend_tests!(
                    @variant $flavor $name postgres_with_auth $crate::helpers::Backend::POSTGRES.with_auth()
                );
            }
        )+
    };
    (@variant $flavor:tt $name:ident $variant:ident $backend:expr) => {
        #[tokio::test $flavor]
        async fn $variant() {
            let backend: $crate::helpers::Backend = $backend;
            if backend.is_available(module_path!()) {
                super::$name(backend).await;
            }
        }
    };
    ($($name:ident),+ $(,)?) => {
        $crate::helpers::backend_tests!(@each () $($name),+);
    };
}
pub(crate) use backend_tests;

/// A fresh, empty database for one test, of one backend. Clones share it; it is deleted (the
/// temp dir removed, the PostgreSQL database dropped) when the last clone goes, also when a test
/// fails.
#[derive(Clone)]
pub struct TestDb {
    /// The store URL to give the server (`sqlite://...` or `postgres://...`).
    pub url: String,
    /// What it was created for: servers over it authenticate when this says so.
    pub backend: Backend,
    guard: Arc<DbGuard>,
}

enum DbGuard {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres { server_url: String, name: String },
}

impl TestDb {
    /// Creates an empty database. Panics for PostgreSQL without [`POSTGRES_URL_VAR`].
    pub async fn create(backend: Backend) -> Self {
        match backend.db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("sync.db");
                Self {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    guard: Arc::new(DbGuard::Sqlite { _dir: dir, path }),
                }
            }
            Db::Postgres => {
                let server_url = postgres_url().unwrap_or_else(|| panic!("{POSTGRES_URL_VAR} is not set"));
                let admin = admin_connection(&server_url).await;
                drop_stale_test_databases(&admin).await;
                let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let name = format!("{TEST_DB_PREFIX}{created}_{:016x}", rand::random::<u64>());
                admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
                let url = with_dbname(&server_url, &name);
                Self { url, backend, guard: Arc::new(DbGuard::Postgres { server_url, name }) }
            }
        }
    }

    /// Opens this database as a store, directly (no HTTP), with default options.
    pub async fn open_store(&self) -> Arc<dyn Store> {
        self.open_store_with_clock(sync_server::clock::system()).await
    }

    /// As [`TestDb::open_store`], with the store's wall clock given.
    pub async fn open_store_with_clock(&self, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        match &*self.guard {
            DbGuard::Sqlite { path, .. } => Arc::new(
                SqliteStore::open_with_clock(path, SqliteOptions::default(), clock).expect("SQLite store opens"),
            ),
            DbGuard::Postgres { .. } => Arc::new(
                PostgresStore::connect_with_clock(&self.url, PostgresOptions::default(), clock)
                    .await
                    .expect("PostgreSQL store opens"),
            ),
        }
    }

    /// The name of this PostgreSQL database, and an administrator's connection to its server.
    /// Panics for SQLite.
    pub async fn postgres_admin(&self) -> (String, tokio_postgres::Client) {
        let DbGuard::Postgres { server_url, name } = &*self.guard else {
            panic!("only PostgreSQL databases have an administrator");
        };
        (name.clone(), admin_connection(server_url).await)
    }

    /// This database's URL with the connection's user replaced by `user`.
    pub fn url_as(&self, user: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{user}@{host}")
    }

    /// Terminates every connection of every server to this PostgreSQL database, as a database
    /// restart or a network fault would; returns how many were terminated. Panics for SQLite.
    pub async fn terminate_connections(&self) -> u64 {
        let DbGuard::Postgres { server_url, name } = &*self.guard else {
            panic!("only PostgreSQL connections can be terminated");
        };
        let admin = admin_connection(server_url).await;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[name],
            )
            .await
            .expect("pg_terminate_backend");
        rows.len() as u64
    }
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        let DbGuard::Postgres { server_url, name } = self else {
            return; // the temp dir removes itself
        };
        let (server_url, db) = (server_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its own
        // runtime can. FORCE ends the connections servers of the test may still hold.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let admin = admin_connection(&server_url).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {name}: {dropped:?}");
        }
    }
}

/// A connection to the PostgreSQL server for creating and dropping test databases.
async fn admin_connection(server_url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(server_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}={server_url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Drops test databases left over by runs that were killed before they could clean up.
async fn drop_stale_test_databases(admin: &tokio_postgres::Client) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let Ok(rows) = admin.query("SELECT datname FROM pg_database WHERE datname LIKE 'sync\\_test\\_%'", &[]).await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = name.strip_prefix(TEST_DB_PREFIX).and_then(|rest| rest.split('_').next()?.parse::<u64>().ok());
        if created.is_some_and(|created| now.saturating_sub(created) > STALE_TEST_DB_SECS) {
            // Another run may drop it at the same moment; either way it goes.
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

/// The shipped server binary, built with these tests.
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_sync-server-under-test");

/// A server running in this process on an ephemeral port, over a fresh database, started as the
/// binary starts it: through [`Application`].
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The store, for checks that bypass HTTP.
    pub store: Arc<dyn Store>,
    /// The database, kept as long as the server runs.
    _db: TestDb,
    token: Option<String>,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

impl TestServer {
    /// A schemaless server with default limits over a fresh SQLite file.
    pub async fn start() -> Self {
        Self::start_on(Backend::SQLITE).await
    }

    /// A schemaless server with default limits over a fresh database of `backend`.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_with_on(Config::default(), backend).await
    }

    /// A server with this configuration over a fresh database of `backend`.
    pub async fn start_with_on(config: Config, backend: Backend) -> Self {
        Self::start_over(config, TestDb::create(backend).await).await
    }

    /// A server with this configuration over `db` (which may hold data already); its `bind` and
    /// `db` are replaced by port 0 and `db`'s URL.
    pub async fn start_over(config: Config, db: TestDb) -> Self {
        let app = Application::build(Self::config_over(config, &db)).await.expect("server starts");
        Self::serve(app, db)
    }

    /// `config` as the tests run it over `db`: port 0, two workers, a short shutdown, and the
    /// suite's authentication if `db` is of an authenticated variant.
    pub fn config_over(config: Config, db: &TestDb) -> Config {
        let mut config = db.backend.configure(config);
        config.bind = "127.0.0.1:0".into();
        config.db = db.url.clone();
        config.workers = 2;
        config.shutdown_timeout_secs = 1;
        config
    }

    /// Serves an application built by the test (over `db`) until [`TestServer::stop`].
    pub fn serve(app: Application, db: TestDb) -> Self {
        let (base_url, store) = (format!("http://127.0.0.1:{}", app.port()), app.store());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let running = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let token = db.backend.token();
        Self { base_url, store, _db: db, token, stop, running, client: client() }
    }

    /// Stops accepting, lets in-flight requests finish, stops the background tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.expect("server task").expect("server stops cleanly");
    }

    /// Typed requests to this server, as [`SUITE_USER`] when it authenticates.
    pub fn api(&self) -> Api {
        let api = Api { base_url: self.base_url.clone(), client: self.client.clone() };
        match &self.token {
            Some(token) => api.bearer(token),
            None => api,
        }
    }

    /// Where clients reach this server, as [`SUITE_USER`] when it authenticates.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { base_url: self.base_url.clone(), token: self.token.clone() }
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

    /// An API for a server at `base_url` through a client built from `client`.
    pub fn with_client(base_url: &str, client: reqwest::ClientBuilder) -> Self {
        Self { base_url: base_url.to_owned(), client: Self::client_builder(client).build().expect("HTTP client") }
    }

    /// The settings of every test client. Idle connections are closed before the server's
    /// keep-alive (`keep_alive_secs`, 5 s) closes them, so that a request never races the
    /// server's close of the connection it is sent on.
    fn client_builder(client: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        client.timeout(Duration::from_secs(60)).pool_idle_timeout(Duration::from_secs(2))
    }

    /// The same API, sending `Authorization: <value>` with every request.
    pub fn authorized(&self, value: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value.parse().expect("a header value"));
        Self::with_client(&self.base_url, reqwest::Client::builder().default_headers(headers))
    }

    /// The same API, sending `Authorization: Bearer <token>` with every request.
    pub fn bearer(&self, token: &str) -> Self {
        self.authorized(&format!("Bearer {token}"))
    }

    /// `GET path?since=` and its parsed answer; panics unless `200`.
    pub async fn pull(&self, path: &str, since: i64) -> Pulled {
        let (status, body) = self.get(&format!("{path}?since={since}")).await;
        assert_eq!(status, 200, "pull failed: {body}");
        parse_pull(&body)
    }

    /// `GET path_and_query`, returning status and body as JSON.
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = self.get_response(path_and_query).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    /// `GET path_and_query`, the whole answer (status, headers, and the body unread).
    pub async fn get_response(&self, path_and_query: &str) -> reqwest::Response {
        self.client.get(format!("{}{path_and_query}", self.base_url)).send().await.expect("GET sent")
    }

    /// The value of one series of `/metrics`, written as the text format writes it (labels by
    /// name: `sync_outbox_deliveries_total{outcome="delivered",subscription="erp"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get_response("/metrics").await.text().await.expect("metrics text");
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// `POST path` with `items`; panics unless `200`; returns `now`.
    pub async fn push(&self, path: &str, items: Value) -> i64 {
        let (status, body) = self.post(path, &items.to_string()).await;
        assert_eq!(status, 200, "push failed: {body}");
        assert_eq!(body["status"], "ok");
        body["now"].as_i64().expect("now is an integer")
    }

    /// `POST path` with a raw body: status and body as JSON, or the error of a request that got
    /// no answer (the server went away).
    pub async fn try_post(&self, path: &str, body: &str) -> Result<(u16, Value), reqwest::Error> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
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
    Api::client_builder(reqwest::Client::builder()).build().expect("HTTP client")
}

/// The shipped binary running as a child process; killed when dropped.
pub struct ServerProcess {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The durability settings the server logged when it began to listen, as it read them back
    /// from its open database (`journal_mode=wal synchronous=full`).
    pub durability: String,
    token: Option<String>,
    child: tokio::process::Child,
    /// The server's log lines after the listening one.
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
    _config: Option<tempfile::NamedTempFile>,
}

impl ServerProcess {
    /// Starts the binary on port 0 over `db` with extra arguments, and waits until it listens.
    /// For an authenticated variant, the suite's `[auth]` is given to it in a `--config` file.
    pub async fn spawn(db: &TestDb, extra: &[&str]) -> Self {
        Self::spawn_bound(db, "127.0.0.1:0", extra).await
    }

    /// As [`ServerProcess::spawn`], listening on `bind` (such as the address of a server that
    /// stopped, to restart it where its clients look for it).
    pub async fn spawn_bound(db: &TestDb, bind: &str, extra: &[&str]) -> Self {
        let config = db.backend.auth.then(|| {
            let file = tempfile::NamedTempFile::new().expect("config file");
            std::fs::write(file.path(), SUITE_AUTH_TOML).expect("config written");
            file
        });
        let mut command = tokio::process::Command::new(SERVER_BIN);
        command.args(["--bind", bind, "--db", &db.url, "--log-format", "json"]);
        if let Some(file) = &config {
            command.arg("--config").arg(file.path());
        }
        let mut child = command
            .args(extra)
            .env("RUST_LOG", "warn,sync_server::startup=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("server binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (addr, durability) = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read server log") {
                if let Some(addr) = sync_server::telemetry::listening_address(&line) {
                    let fields = serde_json::from_str::<Value>(&line).expect("a JSON log line")["fields"].take();
                    return (addr, fields["durability"].as_str().expect("durability is logged").to_owned());
                }
                eprintln!("server: {line}");
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server listens within 30 s");
        // Keep draining the log so the server never blocks on a full pipe.
        let (lines_out, log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = lines_out.send(line);
            }
        });
        let base_url = format!("http://{addr}");
        Self { base_url, durability, token: db.backend.token(), child, log, _config: config }
    }

    /// Where clients reach this server, as [`SUITE_USER`] when it authenticates.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { base_url: self.base_url.clone(), token: self.token.clone() }
    }

    /// Typed requests to this server, as [`SUITE_USER`] when it authenticates.
    pub fn api(&self) -> Api {
        self.endpoint().api()
    }

    /// The server's process id, to read what it holds from `/proc/<pid>/` (memory, sockets).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends a signal to the server (`SIGTERM` = 15, `SIGKILL` = 9).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args([format!("-{signal}"), pid]).status().expect("kill runs");
        assert!(sent.success());
    }

    /// Waits until the server logs a line containing `fragment`, for 30 s at most.
    pub async fn wait_for_log(&mut self, fragment: &str) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.log.recv().await {
                if line.contains(fragment) {
                    return;
                }
            }
            panic!("the server exited without logging {fragment:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("the server did not log {fragment:?} within 30 s"))
    }

    /// Waits for the server to exit, for 30 s at most.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits in time").expect("wait")
    }

    /// Sends a signal to the server (`SIGTERM` = 15, `SIGKILL` = 9) and waits for it to exit.
    pub async fn signal_and_wait(self, signal: i32) -> std::process::ExitStatus {
        self.signal(signal);
        self.wait().await
    }
}
