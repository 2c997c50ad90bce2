//! The `todo` example as people run it: the built program, two `--db` files as two devices,
//! against the sync server and against a base-protocol server.

use std::path::{Path, PathBuf};

use crate::client_support::BaseServer;
use crate::helpers::TestServer;

/// The `todo` example, built from its source with these tests.
const TODO_BIN: &str = env!("CARGO_BIN_EXE_todo-under-test");

/// One device of the `todo` program: a database file and the server it syncs with.
struct Todo {
    db: PathBuf,
    server: String,
}

/// What one run printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Todo {
    fn new(dir: &Path, name: &str, server: &str) -> Self {
        Self { db: dir.join(format!("{name}.db")), server: server.to_owned() }
    }

    async fn run(&self, args: &[&str]) -> Run {
        let output = tokio::process::Command::new(TODO_BIN)
            .arg("--db")
            .arg(&self.db)
            .args(["--server", &self.server])
            .args(args)
            .env_remove("TODO_DB")
            .env_remove("TODO_SERVER")
            .output()
            .await
            .expect("todo runs");
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its output.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.success, "todo {args:?} failed: {}", run.stderr);
        run.stdout
    }

    async fn add(&self, text: &str) -> String {
        self.ok(&["add", text]).await.trim().to_owned()
    }

    async fn list(&self) -> String {
        self.ok(&["list"]).await
    }
}

/// Two devices converge through adds, edits, done, removals and conflicts with each `--prefer`.
async fn two_devices_converge(server: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (one, two) = (Todo::new(dir.path(), "one", server), Todo::new(dir.path(), "two", server));

    let milk = one.add("milk").await;
    let bread = one.add("bread").await;
    let eggs = one.add("eggs").await;
    assert_eq!(milk.len(), 32, "ids are 32 hex digits: {milk}");
    assert_eq!(one.list().await, format!("{bread}\topen\tbread\n{eggs}\topen\teggs\n{milk}\topen\tmilk\n"));
    one.ok(&["sync"]).await;
    two.ok(&["sync"]).await;
    assert_eq!(one.list().await, two.list().await);
    let status = two.ok(&["status"]).await;
    assert!(status.starts_with("status: idle\nlast sync: 20"), "{status}");
    assert!(status.ends_with(" UTC\npending changes: 0\nlast error: none\n"), "{status}");

    // Edits, done and a removal on both sides, none conflicting.
    two.ok(&["done", &milk]).await;
    two.ok(&["rm", &eggs]).await;
    one.ok(&["edit", &bread, "rye bread"]).await;
    let jam = one.add("jam").await;
    one.ok(&["sync"]).await;
    two.ok(&["sync"]).await;
    one.ok(&["sync"]).await;
    let expected = format!("{jam}\topen\tjam\n{milk}\tdone\tmilk\n{bread}\topen\trye bread\n");
    assert_eq!(one.list().await, expected);
    assert_eq!(two.list().await, expected);

    // The same item edited on both: --prefer local keeps the syncing device's text.
    one.ok(&["edit", &jam, "apricot jam"]).await;
    two.ok(&["edit", &jam, "plum jam"]).await;
    one.ok(&["sync"]).await;
    let out = two.ok(&["sync", "--prefer", "local"]).await;
    assert!(out.contains("conflicts 1") && out.contains("(text): kept local"), "{out}");
    one.ok(&["sync"]).await;
    assert!(one.list().await.contains(&format!("{jam}\topen\tplum jam")));
    assert_eq!(one.list().await, two.list().await);

    // Again: --prefer remote takes the server's text.
    one.ok(&["edit", &jam, "cherry jam"]).await;
    two.ok(&["edit", &jam, "fig jam"]).await;
    one.ok(&["sync"]).await;
    two.ok(&["sync", "--prefer", "remote"]).await;
    one.ok(&["sync"]).await;
    assert!(two.list().await.contains(&format!("{jam}\topen\tcherry jam")));
    assert_eq!(one.list().await, two.list().await);

    // Removed on one, edited on the other: --prefer local on the editor brings it back.
    one.ok(&["rm", &bread]).await;
    two.ok(&["edit", &bread, "sourdough"]).await;
    one.ok(&["sync"]).await;
    two.ok(&["sync", "--prefer", "local"]).await;
    one.ok(&["sync"]).await;
    assert!(one.list().await.contains(&format!("{bread}\topen\tsourdough")));
    assert_eq!(one.list().await, two.list().await);

    // And --prefer remote on the editor accepts the removal.
    one.ok(&["rm", &bread]).await;
    two.ok(&["done", &bread]).await;
    one.ok(&["sync"]).await;
    two.ok(&["sync", "--prefer", "remote"]).await;
    assert!(!two.list().await.contains(&bread));
    assert_eq!(one.list().await, two.list().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_devices_converge_on_the_sync_server() {
    let server = TestServer::start().await;
    two_devices_converge(&server.base_url).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_devices_converge_on_a_base_protocol_server() {
    let server = BaseServer::start().await;
    two_devices_converge(&server.base_url).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_works_offline_and_sync_fails_clearly_without_a_server() {
    let (_refusing, port) = crate::helpers::refusing_port();
    let dir = tempfile::tempdir().unwrap();
    let todo = Todo::new(dir.path(), "offline", &format!("http://127.0.0.1:{port}"));
    let id = todo.add("offline item").await;
    todo.ok(&["done", &id]).await;
    todo.ok(&["edit", &id, "edited offline"]).await;
    assert_eq!(todo.list().await, format!("{id}\tdone\tedited offline\n"));

    assert_eq!(todo.ok(&["status"]).await, "status: idle\nlast sync: never\npending changes: 1\nlast error: none\n");

    let sync = todo.run(&["sync"]).await;
    assert!(!sync.success, "sync without a server must fail");
    assert!(sync.stderr.contains("cannot sync"), "{}", sync.stderr);
    assert!(sync.stderr.contains("cannot reach"), "{}", sync.stderr);
    assert!(!sync.stderr.contains("pulling"), "no progress bar drawn when stderr is not a terminal: {}", sync.stderr);

    // A later run reads the failed sync's outcome from the database.
    let status = todo.ok(&["status"]).await;
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[..3], ["status: offline", "last sync: never", "pending changes: 1"], "{status}");
    assert!(lines[3].starts_with("last error: cannot sync Todo: cannot reach"), "{status}");
    assert!(lines[3].ends_with(" UTC)"), "the error's time: {status}");

    let missing = todo.run(&["done", "NOPE"]).await;
    assert!(!missing.success);
    assert!(missing.stderr.contains("no Todo with id"), "{}", missing.stderr);
    todo.ok(&["rm", &id]).await;
    assert_eq!(todo.list().await, "");
}

/// Splits one shell command line into words, with double quotes (all the README uses).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The README's walkthrough, line by line as written: each `todo` line runs against a real
/// server, and the output its comment gives after `→` must be printed (`ID` is the id `add`
/// printed, a tab is written as a tab).
#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut id = None;
    let mut checked = 0;
    for line in crate::docs::marked_block(include_str!("../../../README.md"), "todo walkthrough").lines() {
        let (command, comment) = line.split_once('#').map_or((line, ""), |(c, m)| (c.trim(), m.trim()));
        let words = shell_words(command);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let ["todo", "--db", db, ref args @ ..] = words[..] else {
            continue; // starting the server, defining `todo`
        };
        let device = Todo::new(dir.path(), db.trim_end_matches(".db"), &server.base_url);
        let args: Vec<String> = args.iter().map(|a| a.replace("ID", id.as_deref().unwrap_or("ID"))).collect();
        let out = device.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        if args[0] == "add" {
            id = Some(out.trim().to_owned());
        }
        if let Some(expected) = comment.strip_prefix("→ ") {
            let expected = expected.replace("ID", id.as_deref().expect("add ran first"));
            assert!(out.contains(&expected), "`{command}` printed {out:?}, the README says {expected:?}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "the walkthrough's outputs were checked ({checked})");
    server.stop().await;
}

/// `todo --token` syncs with a server that requires authentication; without it, sync says 401.
#[tokio::test]
async fn todo_syncs_with_a_token_and_is_refused_without_one() {
    const SECRET: &str = "a secret of the todo test, long enough for HS256";
    let mut config = sync_server::Config::default();
    config.auth.jwt =
        Some(sync_server::auth::jwt::JwtConfig { leeway_secs: 5, ..sync_server::auth::jwt::JwtConfig::hs256(SECRET) });
    let server = TestServer::start_with_on(config, crate::helpers::Backend::SQLITE).await;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &serde_json::json!({"sub": "ann", "exp": exp}), &key)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let phone = Todo::new(dir.path(), "phone", &server.base_url);
    phone.add("buy milk").await;
    let refused = phone.run(&["sync"]).await;
    assert!(!refused.success && refused.stderr.contains("401"), "{}", refused.stderr);
    let out = phone.ok(&["--token", &token, "sync"]).await;
    assert!(out.contains("pushed 1"), "{out}");
    let ann = server.api().bearer(&token);
    assert_eq!(ann.pull("/todoChanges", 0).await.updates[0]["text"], "buy milk");
    server.stop().await;
}

/// `todo watch` as a user runs it beside another device: the other device's change reaches the
/// watching one without any command there, and an item added on the watching device (by `todo`
/// in another shell) reaches the other.
#[tokio::test]
async fn todo_watch_keeps_a_device_in_sync_both_ways() {
    use tokio::io::AsyncBufReadExt;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (watching, other) =
        (Todo::new(dir.path(), "watching", &server.base_url), Todo::new(dir.path(), "other", &server.base_url));
    let mut watch = tokio::process::Command::new(TODO_BIN)
        .arg("--db")
        .arg(&watching.db)
        .args(["--server", &server.base_url, "watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("todo watch runs");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next_line = async move || {
        tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("todo watch printed in time")
            .expect("stdout readable")
            .expect("todo watch still runs")
    };
    assert_eq!(next_line().await, "watching; Ctrl-C stops");

    let milk = other.add("milk").await;
    other.ok(&["sync"]).await;
    assert_eq!(next_line().await, "synced: pulled 1, pushed 0, conflicts 0");
    assert_eq!(watching.list().await, format!("{milk}\topen\tmilk\n"));

    let bread = watching.add("bread").await;
    assert_eq!(next_line().await, "synced: pulled 0, pushed 1, conflicts 0");
    other.ok(&["sync"]).await;
    assert_eq!(other.list().await, format!("{bread}\topen\tbread\n{milk}\topen\tmilk\n"));
    drop(watch);
    server.stop().await;
}
