//! The outbox examples as people run them: `receiver` keeps its own copy of the data from signed
//! webhooks, applying each event once; `backoffice` writes another system's data into the server,
//! idempotently; the apps see it, and so does the receiver.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sync_server::Config;
use sync_server::auth::basic::{BasicUser, hash_password};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{Api, Backend, TestServer};

const RECEIVER_BIN: &str = env!("CARGO_BIN_EXE_receiver-under-test");
const BACKOFFICE_BIN: &str = env!("CARGO_BIN_EXE_backoffice-under-test");
const SECRET: &str = "whsec_dGhlIHJlY2VpdmVyIGV4YW1wbGUncyBzZWNyZXQ=";

/// Starts `receiver` on a free port; returns it and its URL.
async fn start_receiver(db: &std::path::Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(RECEIVER_BIN)
        .args(["--bind", "127.0.0.1:0", "--db", db.to_str().unwrap(), "--secret", SECRET])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("receiver starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    let url = first.strip_prefix("receiving on ").expect("the receiver says where it listens").to_owned();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("receiver: {line}");
        }
    });
    (child, url)
}

async fn receiver_state(url: &str) -> Value {
    reqwest::get(format!("{url}/objects")).await.unwrap().json().await.unwrap()
}

async fn wait_for_receiver(url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = receiver_state(url).await;
        if done(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "{what}: {state:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn basic(base_url: &str, user: &str, password: &str) -> Api {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Api::new(base_url).authorized(&format!("Basic {credentials}"))
}

fn run_backoffice(base_url: &str, file: &std::path::Path) -> String {
    let output = std::process::Command::new(BACKOFFICE_BIN)
        .args(["--url", base_url, "--entity", "Product", "--user", "backoffice", "--password", "back office pass"])
        .arg(file)
        .output()
        .expect("backoffice runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_flows_both_ways_through_the_receiver_and_the_back_office() {
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, receiver_url) = start_receiver(&dir.path().join("receiver.db")).await;
    let user = |name: &str, password: &str, roles: &[&str]| BasicUser {
        user: name.into(),
        password_hash: hash_password(password).unwrap(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let config: Config = toml::from_str(&format!(
        r#"
        [[entity]]
        name = "Task"
        [[entity]]
        name = "Product"
        scope = "shared"
        write_roles = ["editor"]

        [outbox]
        poll_interval_ms = 50

        [[webhook]]
        name = "receiver"
        url = "{receiver_url}/hooks"
        secrets = ["{SECRET}"]
        "#
    ))
    .unwrap();
    let config = Config {
        auth: sync_server::auth::AuthConfig {
            basic: vec![user("alice", "alice pass", &[]), user("backoffice", "back office pass", &["editor"])],
            ..Default::default()
        },
        ..config
    };
    let server = TestServer::start_with_on(config, Backend::SQLITE).await;
    let alice = basic(&server.base_url, "alice", "alice pass");

    // The app's change reaches the receiver.
    alice.push("/taskChanges", json!([{"id": "t1", "title": "call the supplier"}])).await;
    let state = wait_for_receiver(&receiver_url, "alice's task", |s| s["objects"].as_array().unwrap().len() == 1).await;
    assert_eq!(
        (state["objects"][0]["partition"].as_str(), state["objects"][0]["fields"].clone()),
        (Some("user:alice"), json!({"title": "call the supplier"}))
    );

    // The back office's products reach the apps and the receiver; a second run applies nothing.
    let file = dir.path().join("products.jsonl");
    std::fs::write(&file, "{\"id\":\"p1\",\"name\":\"Oats\",\"price\":2.5}\n{\"id\":\"p2\",\"name\":\"Rye\"}\n\n{\"id\":\"p3\",\"name\":\"Spelt\"}\n").unwrap();
    let printed = run_backoffice(&server.base_url, &file);
    assert!(printed.contains("3 objects to") && printed.contains("3 applied, 0 already applied"), "{printed}");
    let products = alice.pull("/productChanges", 0).await;
    assert_eq!(products.updates.len(), 3, "the apps see the back office's data");
    let state = wait_for_receiver(&receiver_url, "the products", |s| s["objects"].as_array().unwrap().len() == 4).await;
    let processed = state["processed_events"].as_i64().unwrap();
    assert_eq!(processed, 4);
    let again = run_backoffice(&server.base_url, &file);
    assert!(again.contains("0 applied, 3 already applied before"), "{again}");
    assert_eq!(alice.pull("/productChanges", 0).await.now, products.now, "nothing changed");

    // A delivery that arrives twice is applied once; a forged one is refused.
    let event = json!({"id": "evt-twice", "type": "object.upsert", "entity": "Task", "partition": "user:alice",
        "object_id": "t9", "operation": "upsert", "object": {"title": "once"}, "lastChange": 1, "request_id": null});
    let body = event.to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let signature = sync_proto::webhook::sign(&[SECRET], "evt-twice", now, body.as_bytes()).unwrap();
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let answer = http
            .post(format!("{receiver_url}/hooks"))
            .header("webhook-id", "evt-twice")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", &signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204);
    }
    let forged = http
        .post(format!("{receiver_url}/hooks"))
        .header("webhook-id", "evt-forged")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", &signature)
        .body(body.replace("evt-twice", "evt-forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let state = receiver_state(&receiver_url).await;
    assert_eq!(state["processed_events"].as_i64(), Some(processed + 1), "{state:#}");
    server.stop().await;
}
