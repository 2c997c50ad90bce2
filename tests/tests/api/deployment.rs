//! What an operator meets when deploying: start-up errors that name their step and cause once,
//! a PostgreSQL role with only the rights the README lists, a schema missing from `search_path`,
//! a database that refuses connections, and error bodies that never carry a database's text.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sync_server::Config;
use sync_server::store::{PostgresOptions, PostgresStore};

use crate::helpers::{Backend, SERVER_BIN, TestDb, TestServer};

/// Runs the shipped binary with `args` until it exits (it must, within 30 s); returns its status
/// and what it wrote on standard error.
async fn run_binary(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(SERVER_BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server exits")
    .expect("the server runs");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn start_up_errors_name_the_problem_and_print_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nmax_items = \"many\"\n").unwrap();
    let (status, stderr) = run_binary(&["--config", config.to_str().unwrap()]).await;
    assert!(!status.success());
    assert!(stderr.contains(&format!("invalid config file {}", config.display())), "{stderr}");
    assert_eq!(stderr.matches("max_items").count(), 1, "the TOML error is printed once:\n{stderr}");
    assert!(stderr.contains("Caused by"), "{stderr}");

    let (status, stderr) =
        run_binary(&["--bind", "localhost", "--db", dir.path().join("x.db").to_str().unwrap()]).await;
    assert!(!status.success());
    assert!(stderr.contains("needs a host and a port, like 127.0.0.1:8080"), "{stderr}");
}

#[tokio::test]
async fn an_sqlite_server_ignores_the_postgres_section() {
    let config: Config = toml::from_str("[postgres]\npool_size = 0\nwait_timeout_ms = 0").unwrap();
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    server.api().push("/taskChanges", json!([{"id": "a"}])).await;
    server.stop().await;
}

#[tokio::test]
async fn a_role_with_only_the_documented_rights_runs_the_server_after_a_first_start_by_the_owner() {
    if !Backend::POSTGRES.is_available("a_role_with_only_the_documented_rights_runs_the_server") {
        return;
    }
    let db = TestDb::create(Backend::POSTGRES).await;
    let (name, admin) = db.postgres_admin().await;
    let role = format!("sync_app_{:08x}", rand::random::<u32>());
    let grants = crate::docs::marked_block(include_str!("../../../README.md"), "least-privilege grants")
        .replace("DATABASE sync ", &format!("DATABASE {name} "))
        .replace("sync_app", &role);
    let (create_role, grants) = grants.split_once(';').expect("CREATE ROLE first");
    let owner = {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    // As on PostgreSQL 15 and later whatever the version: only the owner creates in `public`.
    owner.batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC").await.unwrap();
    owner.batch_execute(create_role).await.unwrap();

    // Before the owner's first start, the role cannot create the tables: the error names the
    // step, says what to do, and keeps the database's message as its cause.
    let role_url = db.url_as(&role);
    let early = PostgresStore::connect(&role_url, PostgresOptions::default()).await.err().expect("no rights yet");
    let message = sync_server::error::chain(&early);
    assert!(message.contains("cannot create sync_schema_migrations"), "{message}");
    assert!(message.contains("the role lacks a right it needs"), "{message}");
    assert!(message.contains("42501"), "the database's error is the cause: {message}");

    // The owner's first start migrates; then the README's grants are all the role needs.
    drop(db.open_store().await);
    owner.batch_execute(grants).await.unwrap();
    let mut config = TestServer::config_over(Config::default(), &db);
    config.db = role_url;
    let app = TestServer::serve(sync_server::Application::build(config).await.expect("starts as the role"), db.clone());
    let api = app.api();
    let now = api.push("/taskChanges", json!([{"id": "a", "v": 1}])).await;
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!((pulled.now, pulled.updates.len()), (now, 1));
    app.stop().await;
    drop(owner);
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
}

#[tokio::test]
async fn a_schema_missing_from_search_path_is_named() {
    if !Backend::POSTGRES.is_available("a_schema_missing_from_search_path_is_named") {
        return;
    }
    let db = TestDb::create(Backend::POSTGRES).await;
    let url = format!("{}?options=-c%20search_path%3Dnosuch", db.url);
    let err = PostgresStore::connect(&url, PostgresOptions::default()).await.err().expect("no schema to work in");
    let message = sync_server::error::chain(&err);
    assert!(message.contains("no schema of the search_path (nosuch) exists"), "{message}");
}

#[tokio::test]
async fn a_database_refusing_connections_is_a_503_whose_body_has_none_of_its_text() {
    if !Backend::POSTGRES.is_available("a_database_refusing_connections_is_a_503") {
        return;
    }
    let db = TestDb::create(Backend::POSTGRES).await;
    let server = TestServer::start_over(Config::default(), db.clone()).await;
    let api = server.api();
    api.push("/taskChanges", json!([{"id": "a"}])).await;

    let (name, admin) = db.postgres_admin().await;
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
    db.terminate_connections().await;
    let (status, body) = api.get("/taskChanges?since=0").await;
    let (push_status, push_body) = api.post("/taskChanges", r#"[{"id":"b"}]"#).await;
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();

    for (status, body) in [(status, &body), (push_status, &push_body)] {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "unavailable");
        let message = body["message"].as_str().unwrap();
        for leaked in ["accepting connections", "55000", "sync_test_", "postgres"] {
            assert!(!message.contains(leaked), "the body carries the database's text: {message}");
        }
    }
    let health = reqwest::get(format!("{}/healthz", server.base_url)).await.unwrap();
    assert_eq!(health.status(), 200, "the server recovers by itself");
    let pulled = api.pull("/taskChanges", 0).await;
    assert_eq!(
        pulled.updates.iter().map(|u| u["id"].clone()).collect::<Vec<Value>>(),
        [json!("a")],
        "b was not applied"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dead_background_task_fails_the_health_check() {
    let db = TestDb::create(Backend::SQLITE).await;
    let mut app = sync_server::Application::build(TestServer::config_over(Config::default(), &db)).await.unwrap();
    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    app.tasks().spawn("embedded-worker", |_| async move {
        let _ = failed.await;
        Err("its queue is gone".to_owned())
    });
    let server = TestServer::serve(app, db);
    let health = || async { reqwest::get(format!("{}/healthz", server.base_url)).await.unwrap() };
    assert_eq!(health().await.status(), 200);
    fail.send(()).unwrap();
    let mut answer = health().await;
    for _ in 0..100 {
        if answer.status() != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = health().await;
    }
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert!(body["message"].as_str().unwrap().contains("embedded-worker"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_is_configurable() {
    let config = Config { keep_alive_secs: 0, ..Config::default() };
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    let answer = reqwest::get(format!("{}/healthz", server.base_url)).await.unwrap();
    assert_eq!(answer.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    server.stop().await;
    let kept = TestServer::start_with_on(Config::default(), Backend::SQLITE).await;
    let answer = reqwest::get(format!("{}/healthz", kept.base_url)).await.unwrap();
    assert_ne!(answer.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    kept.stop().await;
}
