//! When PostgreSQL goes away, requests fail fast with `503` and a JSON error body, nothing is
//! half-applied, a `503` means not applied, and the server recovers by itself when the database is
//! back. Faults are made two ways: `pg_terminate_backend` on the test database's connections
//! (what a database restart or failover does to them), and a loopback TCP proxy between server
//! and database that can refuse connections or cut one exactly around its `COMMIT`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::{Api, Backend, ServerProcess, TestDb, TestServer, find};
use serde_json::{Value, json};
use sync_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Pushes that must have failed for the cut-connections test to have tested anything.
const MIN_FAILED_PUSHES: usize = 3;
/// Rounds of cuts at most, some 30 ms apart, while waiting for that many failures.
const MAX_CUT_ROUNDS: u64 = 600;

/// How long a request may take to fail when the database is unreachable.
const FAIL_FAST: Duration = Duration::from_secs(5);

/// Whether this PostgreSQL-only test can run; says so when it cannot.
fn postgres_available(test: &str) -> bool {
    Backend::POSTGRES.is_available(test)
}

fn assert_unavailable(status: u16, body: &Value) {
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// A push of one batch: three new objects tagged with the batch, and the writer's pair of objects
/// set to the batch's number. Atomicity means: the three exist or none does, and the pair agree.
fn batch_body(writer: usize, n: usize) -> String {
    json!([
        {"id": format!("b{writer}-{n}-0"), "batch": format!("{writer}-{n}")},
        {"id": format!("b{writer}-{n}-1"), "batch": format!("{writer}-{n}")},
        {"id": format!("pair{writer}-a"), "n": n},
        {"id": format!("b{writer}-{n}-2"), "batch": format!("{writer}-{n}")},
        {"id": format!("pair{writer}-b"), "n": n},
    ])
    .to_string()
}

/// The outcome of each batch push: `Some(now)` for a `200`, `None` for a `503`.
type Outcomes = Vec<(usize, usize, Option<i64>)>;

/// What the writers of a faulty run share: when to stop, and what failed so far.
#[derive(Clone, Default)]
struct Faulty {
    stop: Arc<AtomicBool>,
    /// The longest a failing request took, in milliseconds.
    slowest_failure: Arc<AtomicUsize>,
    /// Pushes answered `503`.
    failed_pushes: Arc<AtomicUsize>,
}

async fn write_batches(api: Api, writer: usize, faulty: Faulty) -> Outcomes {
    let Faulty { stop, slowest_failure, failed_pushes } = faulty;
    let mut outcomes = Outcomes::new();
    for n in 0..5_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let (status, body) = api.post("/batchChanges", &batch_body(writer, n)).await;
        match status {
            200 => outcomes.push((writer, n, Some(body["now"].as_i64().expect("now")))),
            _ => {
                assert_unavailable(status, &body);
                slowest_failure.fetch_max(started.elapsed().as_millis() as usize, Ordering::Relaxed);
                failed_pushes.fetch_add(1, Ordering::Relaxed);
                outcomes.push((writer, n, None));
            }
        }
    }
    outcomes
}

async fn read_while_faulty(api: Api, stop: Arc<AtomicBool>, slowest_failure: Arc<AtomicUsize>) -> usize {
    let mut failures = 0;
    for _ in 0..50_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let query = if failures % 2 == 0 { "/batchChanges?since=0" } else { "/batchChanges?since=0&limit=7" };
        let (status, body) = api.get(query).await;
        if status == 200 {
            crate::helpers::parse_pull(&body);
        } else {
            assert_unavailable(status, &body);
            slowest_failure.fetch_max(started.elapsed().as_millis() as usize, Ordering::Relaxed);
            failures += 1;
        }
    }
    failures
}

/// Checks the final state against what the writers were told: a `200` batch is there whole with
/// its `now`, a `503` batch is not there at all, and each pair of objects agrees.
fn check_atomicity(all: &Value, outcomes: &Outcomes) {
    let pulled = crate::helpers::parse_pull(all);
    let mut batches: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for update in &pulled.updates {
        if let Some(batch) = update["batch"].as_str() {
            batches.entry(batch.to_owned()).or_default().push(update["_lastChange"].as_i64().expect("_lastChange"));
        }
    }
    for (batch, stamps) in &batches {
        assert_eq!(stamps.len(), 3, "batch {batch} is half-applied");
        assert!(stamps.iter().all(|s| *s == stamps[0]), "batch {batch} has several timestamps");
    }
    for (writer, n, outcome) in outcomes {
        let present = batches.get(&format!("{writer}-{n}"));
        match outcome {
            Some(now) => assert_eq!(present, Some(&vec![*now; 3]), "acknowledged batch {writer}-{n} is not there"),
            None => assert!(present.is_none(), "batch {writer}-{n} answered 503 but was applied"),
        }
    }
    let writers: HashSet<usize> = outcomes.iter().map(|(w, _, _)| *w).collect();
    for writer in writers {
        let a = find(&pulled, &format!("pair{writer}-a"));
        let b = find(&pulled, &format!("pair{writer}-b"));
        match (a, b) {
            (Some(a), Some(b)) => {
                assert_eq!((&a["n"], &a["_lastChange"]), (&b["n"], &b["_lastChange"]), "a pair was torn apart")
            }
            (None, None) => {}
            _ => panic!("only one object of pair {writer} exists"),
        }
        let last_ok = outcomes.iter().filter(|(w, _, o)| *w == writer && o.is_some()).map(|(_, n, _)| *n).max();
        assert_eq!(
            a.map(|a| a["n"].as_u64().expect("n") as usize),
            last_ok,
            "pair {writer} is not the last acknowledged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_give_503_apply_nothing_and_the_server_recovers() {
    if !postgres_available("cut_connections_give_503_apply_nothing_and_the_server_recovers") {
        return;
    }
    const WRITERS: usize = 4;
    let db = TestDb::create(Backend::POSTGRES).await;
    let server = ServerProcess::spawn(&db, &[]).await;
    let api = server.api();
    api.push("/batchChanges", json!([])).await;

    let faulty = Faulty::default();
    let Faulty { stop, slowest_failure, failed_pushes } = faulty.clone();
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(write_batches(server.api(), w, faulty.clone()))).collect();
    let readers: Vec<_> =
        (0..2).map(|_| tokio::spawn(read_while_faulty(server.api(), stop.clone(), slowest_failure.clone()))).collect();

    // Cut every connection of the server, over and over, while requests are in flight, until
    // pushes have failed: a cut before a commit is retried on a fresh connection, so only cuts
    // that come again and again, or during a commit, fail a push.
    let mut terminated = 0;
    for round in 0..MAX_CUT_ROUNDS {
        tokio::time::sleep(Duration::from_millis(20 + 7 * (round % 5))).await;
        terminated += db.terminate_connections().await;
        if round >= 15 && failed_pushes.load(Ordering::Relaxed) >= MIN_FAILED_PUSHES {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Outcomes::new();
    for w in writers {
        outcomes.extend(w.await.expect("writer"));
    }
    let mut read_failures = 0;
    for r in readers {
        read_failures += r.await.expect("reader");
    }
    let failed = outcomes.iter().filter(|(_, _, o)| o.is_none()).count();
    let slowest = Duration::from_millis(slowest_failure.load(Ordering::Relaxed) as u64);
    eprintln!(
        "{terminated} connections cut; {} pushes, {failed} answered 503; {read_failures} pulls answered 503; \
         slowest failure {slowest:?}",
        outcomes.len()
    );
    assert!(terminated > 0, "no connection was cut: the test tested nothing");
    assert!(failed >= MIN_FAILED_PUSHES, "only {failed} pushes failed: the faults did not reach a push");
    assert!(outcomes.len() - failed > 0, "no push succeeded between the cuts");
    assert!(slowest < FAIL_FAST, "a failing request took {slowest:?}");

    // Recovered, without a restart: once the server says it is healthy, every request succeeds.
    wait_healthy(&api).await;
    for i in 0..20 {
        let now = api.push("/batchChanges", json!([{"id": format!("after{i}"), "ok": true}])).await;
        assert!(api.pull("/batchChanges", now - 1).await.updates.iter().any(|u| u["id"] == format!("after{i}")));
    }
    let (status, body) = api.get("/healthz").await;
    assert_eq!(status, 200, "{body}");

    let (status, all) = api.get("/batchChanges?since=0").await;
    assert_eq!(status, 200, "{all}");
    check_atomicity(&all, &outcomes);
    server.signal_and_wait(15).await;
}

/// Waits until the server answers its health check with `200`, for [`FAIL_FAST`] at most.
async fn wait_healthy(api: &Api) {
    tokio::time::timeout(FAIL_FAST, async {
        while api.get("/healthz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server is healthy again");
}

/// What the proxy does to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Relays bytes both ways.
    Relay,
    /// Closes every connection, and new ones as soon as they are accepted: the database is down.
    Down,
    /// Relays, but cuts the next connection that sends `COMMIT` before the database sees it.
    CutBeforeCommit,
    /// Relays, but cuts the next connection that sends `COMMIT` after the database got it, before
    /// its answer reaches the server.
    CutAfterCommit,
}

/// A TCP proxy on loopback in front of the PostgreSQL server, that makes faults on demand.
struct FaultProxy {
    addr: std::net::SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    /// How many connections were cut at a `COMMIT`.
    cuts: Arc<AtomicUsize>,
}

impl FaultProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(watch::channel(Mode::Relay).0);
        let cuts = Arc::new(AtomicUsize::new(0));
        let (proxy_mode, proxy_cuts) = (Arc::clone(&mode), Arc::clone(&cuts));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *proxy_mode.borrow() == Mode::Down {
                    continue; // dropped: closed at once
                }
                let (upstream, mode, cuts) = (upstream.clone(), Arc::clone(&proxy_mode), Arc::clone(&proxy_cuts));
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, mode, cuts).await;
                    }
                });
            }
        });
        Self { addr, mode, cuts }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` pointed at the proxy instead of the database server.
    fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let userinfo = authority.rsplit_once('@').map_or(String::new(), |(u, _)| format!("{u}@"));
        format!("{scheme}://{userinfo}{}/{path}", self.addr)
    }
}

/// `host:port` of the database server a URL names.
fn upstream_of(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") }
}

/// Relays one connection until either side closes or the mode says to cut it.
async fn relay(mut client: TcpStream, mut server: TcpStream, mode: Arc<watch::Sender<Mode>>, cuts: Arc<AtomicUsize>) {
    let mut watching = mode.subscribe();
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                let chunk = &up[..n];
                let commit = chunk.windows(7).any(|w| w == b"COMMIT\0");
                let current = *watching.borrow();
                if commit && current == Mode::CutBeforeCommit {
                    mode.send_replace(Mode::Relay);
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if server_write.write_all(chunk).await.is_err() {
                    return;
                }
                if commit && current == Mode::CutAfterCommit {
                    mode.send_replace(Mode::Relay);
                    cuts.fetch_add(1, Ordering::SeqCst);
                    // The database's answer to COMMIT means it committed: drop it, with the
                    // connection, instead of passing it on.
                    let _ = server_read.read(&mut down).await;
                    return;
                }
            }
            read = server_read.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if client_write.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
            changed = watching.changed() => {
                if changed.is_err() || *watching.borrow() == Mode::Down {
                    return;
                }
            }
        }
    }
}

/// A server over a fresh PostgreSQL database that it reaches only through a [`FaultProxy`].
/// (The server's handle on the database keeps the database alive until the server is dropped.)
async fn server_behind_proxy() -> (FaultProxy, TestServer) {
    let db = TestDb::create(Backend::POSTGRES).await;
    let proxy = FaultProxy::start(upstream_of(&db.url)).await;
    let mut via_proxy = db.clone();
    via_proxy.url = proxy.url_for(&db.url);
    let server = TestServer::start_over(Config::default(), via_proxy).await;
    (proxy, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_requests_fail_fast_and_then_recover() {
    if !postgres_available("while_the_database_is_down_requests_fail_fast_and_then_recover") {
        return;
    }
    let (proxy, server) = server_behind_proxy().await;
    let api = server.api();
    let before = api.push("/noteChanges", json!([{"id": "kept", "v": 1}])).await;

    proxy.set(Mode::Down);
    for i in 0..10 {
        let started = Instant::now();
        let (status, body) = api.post("/noteChanges", &json!([{"id": format!("lost{i}")}]).to_string()).await;
        assert_unavailable(status, &body);
        let (status, body) = api.get("/noteChanges?since=0").await;
        assert_unavailable(status, &body);
        let (status, body) = api.get("/healthz").await;
        assert_unavailable(status, &body);
        assert!(started.elapsed() < FAIL_FAST, "three failing requests took {:?}", started.elapsed());
    }

    proxy.set(Mode::Relay);
    let after = api.push("/noteChanges", json!([{"id": "new", "v": 2}])).await;
    assert!(after > before);
    let pulled = api.pull("/noteChanges", 0).await;
    let ids: Vec<&str> = pulled.updates.iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids, ["kept", "new"], "nothing of the refused pushes was applied");
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_commit_answers_what_actually_happened() {
    if !postgres_available("a_connection_lost_during_commit_answers_what_actually_happened") {
        return;
    }
    let (proxy, server) = server_behind_proxy().await;
    let api = server.api();
    let first = api.push("/noteChanges", json!([{"id": "a", "v": 1}])).await;

    // The database never got the COMMIT: it rolls back, and the answer must be 503.
    proxy.set(Mode::CutBeforeCommit);
    let (status, body) = api.post("/noteChanges", &json!([{"id": "a", "v": 2}, {"id": "b"}]).to_string()).await;
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy did not cut at COMMIT");
    assert_unavailable(status, &body);
    let pulled = api.pull("/noteChanges", 0).await;
    assert_eq!(pulled.updates, [json!({"id": "a", "v": 1, "_lastChange": first})]);

    // The database committed, but the answer to COMMIT was lost: the push did happen, so 200.
    proxy.set(Mode::CutAfterCommit);
    let (status, body) = api.post("/noteChanges", &json!([{"id": "a", "v": 3}, {"id": "c"}]).to_string()).await;
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 2, "the proxy did not cut after COMMIT");
    assert_eq!(status, 200, "{body}");
    let now = body["now"].as_i64().expect("now");
    let pulled = api.pull("/noteChanges", 0).await;
    assert_eq!(pulled.now, now);
    assert_eq!(
        pulled.updates,
        [json!({"id": "a", "v": 3, "_lastChange": now}), json!({"id": "c", "_lastChange": now})],
        "applied once, whole"
    );
    server.stop().await;
}
