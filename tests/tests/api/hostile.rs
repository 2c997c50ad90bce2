//! Hostile clients against the shipped binary: thousands of idle connections, readers that never
//! take a large answer, uploads that trickle, and a flood of distinct entity names. Under each,
//! the server keeps answering health checks and other clients, its memory (`VmRSS`) stays within
//! a stated bound, and what ends the attack is the documented, configurable limit, seen from
//! outside: the connection closes, the answer is cut, the push is answered `408`.
//!
//! The server runs as a child process so that its own connection handling and memory are
//! measured, not the test's. Timeouts are set to a few seconds so that each test lasts seconds;
//! every bound on time is generous, for a loaded two-core machine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::helpers::{Api, Backend, ServerProcess, TestDb};

/// The most a well-behaved request may take while the server is under attack.
const PROMPT: Duration = Duration::from_secs(5);

/// A server over a fresh SQLite file with `config` (TOML) as its configuration file.
struct Target {
    server: ServerProcess,
    _db: TestDb,
    _config: tempfile::NamedTempFile,
}

impl Target {
    async fn start(config: &str) -> Self {
        let db = TestDb::create(Backend::SQLITE).await;
        let file = tempfile::NamedTempFile::new().expect("config file");
        std::fs::write(file.path(), config).expect("config written");
        let path = file.path().to_str().expect("a UTF-8 temp path").to_owned();
        let server = ServerProcess::spawn(&db, &["--config", &path]).await;
        Self { server, _db: db, _config: file }
    }

    fn addr(&self) -> String {
        self.server.base_url.trim_start_matches("http://").to_owned()
    }

    fn api(&self) -> Api {
        self.server.api()
    }

    fn rss_kib(&self) -> u64 {
        proc_status_kib(self.server.pid(), "VmRSS")
    }

    /// The sockets the server holds open: its listener, its store's, and one per connection.
    fn sockets(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.server.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|link| link.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// Waits until the server holds at most (`Below`) or at least (`Above`) `count` sockets;
    /// panics after `within`, saying what it saw.
    async fn wait_for_sockets(&self, bound: Bound, count: usize, within: Duration, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            let now = self.sockets();
            let reached = match bound {
                Bound::Below => now <= count,
                Bound::Above => now >= count,
            };
            if reached {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "{what}: the server still holds {now} sockets after {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Clone, Copy)]
enum Bound {
    Below,
    Above,
}

/// A `kB` line of `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// The soft limit on open files of this process (the server, its child, inherits it).
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string(Path::new("/proc/self/limits")).expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    line.split_whitespace().nth(3).and_then(|soft| soft.parse().ok()).unwrap_or(usize::MAX)
}

/// What a well-behaved client does: a health check, a push and a pull that sees it. Returns the
/// slowest of the three, after checking each is answered within [`PROMPT`].
async fn well_behaved(api: &Api, id: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let (status, body) = api.get("/healthz").await;
    assert_eq!(status, 200, "/healthz under attack: {body}");
    slowest = slowest.max(started.elapsed());
    let started = Instant::now();
    api.push("/goodChanges", json!([{"id": id, "by": "a well-behaved client"}])).await;
    slowest = slowest.max(started.elapsed());
    let started = Instant::now();
    let pulled = api.pull("/goodChanges", 0).await;
    slowest = slowest.max(started.elapsed());
    assert!(pulled.updates.iter().any(|u| u["id"] == id), "the push of {id} is not pulled back");
    assert!(slowest < PROMPT, "a well-behaved request took {slowest:?} under attack (bound {PROMPT:?})");
    slowest
}

/// Reads until the peer closes the connection (end of file or reset), up to `deadline`. Returns
/// the bytes read and whether the close was seen.
async fn read_until_closed(conn: &mut TcpStream, deadline: tokio::time::Instant) -> (usize, bool) {
    let (mut total, mut buf) = (0, vec![0u8; 64 * 1024]);
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (total, true),
            Ok(Ok(n)) => total += n,
            Err(_) => return (total, false),
        }
    }
}

/// 2,000 connections (fewer if the open-files limit is lower: each takes a descriptor here and one
/// in the server) are opened and left idle: a third send nothing, a third half a request head, a
/// third one request and then nothing. The server accepts them all, keeps serving others, holds a
/// bounded amount of memory per connection, and closes each after `head_timeout_secs` or
/// `keep_alive_secs`, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_are_closed_by_the_head_and_keep_alive_timeouts() {
    const HEAD_TIMEOUT: Duration = Duration::from_secs(6);
    const KEEP_ALIVE: Duration = Duration::from_secs(4);
    // Bounds per connection: actix keeps a read buffer and a small state per connection.
    const KIB_PER_CONNECTION: u64 = 48;
    let target = Target::start(&format!(
        "workers = 2\nhead_timeout_secs = {}\nkeep_alive_secs = {}\n",
        HEAD_TIMEOUT.as_secs(),
        KEEP_ALIVE.as_secs()
    ))
    .await;
    let api = target.api();
    well_behaved(&api, "before").await;
    let (rss_before, sockets_before) = (target.rss_kib(), target.sockets());

    let count = 2_000.min(open_files_limit().saturating_sub(300) / 2);
    assert!(count >= 500, "an open-files limit of {} leaves too few descriptors for this test", open_files_limit());
    let mut idle = Vec::with_capacity(count);
    for i in 0..count {
        let mut conn = TcpStream::connect(target.addr()).await.expect("connect");
        let (sent, timeout): (&[u8], _) = match i % 3 {
            0 => (b"", HEAD_TIMEOUT),
            1 => (b"POST /goodChanges HTTP/1.1\r\nHost: x\r\nContent-Ty", HEAD_TIMEOUT),
            _ => (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", KEEP_ALIVE),
        };
        conn.write_all(sent).await.expect("write");
        idle.push((conn, Instant::now(), timeout));
    }
    let opened = idle.first().map(|(_, at, _)| at.elapsed()).unwrap_or_default();
    target
        .wait_for_sockets(
            Bound::Above,
            sockets_before + count,
            Duration::from_secs(5),
            "accepting the idle connections",
        )
        .await;
    let slowest = well_behaved(&api, "during").await;
    let rss_during = target.rss_kib();
    let grown = rss_during.saturating_sub(rss_before);
    eprintln!(
        "{count} idle connections opened in {opened:?}; RSS {rss_before} KiB -> {rss_during} KiB \
         (+{grown}, {} KiB per connection); slowest well-behaved request {slowest:?}",
        grown / count as u64
    );
    assert!(
        grown < KIB_PER_CONNECTION * count as u64,
        "{count} idle connections grew the server by {grown} KiB (bound {KIB_PER_CONNECTION} KiB each)"
    );

    // Each connection is watched for its close; every one must be closed by the server, after its
    // timeout (a second of slack for timer granularity) and well before the test would notice.
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT + Duration::from_secs(15);
    let mut watchers = JoinSet::new();
    for (mut conn, opened_at, timeout) in idle {
        watchers.spawn(async move {
            let (_, closed) = read_until_closed(&mut conn, deadline).await;
            (closed, opened_at.elapsed(), timeout)
        });
    }
    let (mut earliest, mut latest) = (Duration::MAX, Duration::ZERO);
    for (closed, after, timeout) in watchers.join_all().await {
        assert!(closed, "an idle connection was still open {after:?} after it was opened (timeout {timeout:?})");
        assert!(
            after + Duration::from_secs(1) >= timeout,
            "an idle connection was closed after {after:?}, before {timeout:?}"
        );
        earliest = earliest.min(after);
        latest = latest.max(after);
    }
    eprintln!("idle connections closed between {earliest:?} and {latest:?} after they were opened");
    target
        .wait_for_sockets(Bound::Below, sockets_before, Duration::from_secs(5), "after the idle connections closed")
        .await;
    well_behaved(&api, "after").await;
}

/// Readers that ask for a large full pull (20,000 objects, some 10 MB, far more than the socket
/// buffers hold) and never read it, or read a byte now and then. The answer is produced only as
/// fast as it is read, so the server's memory stays bounded; other clients, full pulls included,
/// are served meanwhile; and each stalled connection is dropped after `send_timeout_secs`, which
/// gives back the database connection its answer held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_a_large_answer_are_dropped_after_the_send_timeout() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(2);
    const SLOW: usize = 8;
    const OBJECTS: usize = 20_000;
    // Bounds the memory they cost together: at most a few chunks of 64 KiB each are queued per
    // answer, against the 80 MB their answers would take if the server buffered them.
    const MAX_GROWTH_KIB: u64 = 40 * 1024;
    // One stream reader more than the slow readers, so that a well-behaved full pull finds one.
    let target = Target::start(&format!(
        "workers = 2\nsend_timeout_secs = {}\n[sqlite]\nstream_readers = {}\nbusy_timeout_ms = 2000\n",
        SEND_TIMEOUT.as_secs(),
        SLOW + 1
    ))
    .await;
    let api = target.api();
    let text = "x".repeat(480);
    for batch in 0..OBJECTS / 10_000 {
        let items: Vec<Value> = (0..10_000).map(|i| json!({"id": format!("o{batch}-{i}"), "text": text})).collect();
        api.push("/bigChanges", Value::Array(items)).await;
    }
    let full = api.get_response("/bigChanges?since=0").await.bytes().await.expect("a full pull").len();
    well_behaved(&api, "before").await;
    let (rss_before, sockets_before) = (target.rss_kib(), target.sockets());

    let request = b"GET /bigChanges?since=0 HTTP/1.1\r\nHost: x\r\n\r\n";
    let asked = Instant::now();
    let mut readers = JoinSet::new();
    let dropped_flag = Arc::new(AtomicBool::new(false));
    for i in 0..SLOW {
        let mut conn = TcpStream::connect(target.addr()).await.expect("connect");
        conn.write_all(request).await.expect("write");
        // Two of them read one byte every half second: the window the client opens stays too
        // small to be announced, so to the server they are as stalled as the others.
        let trickle = i < 2;
        let dropped_flag = Arc::clone(&dropped_flag);
        readers.spawn(async move {
            let mut read = 0;
            if trickle {
                let mut byte = [0u8; 1];
                while !dropped_flag.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match conn.read(&mut byte).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            }
            (read, conn)
        });
    }
    target
        .wait_for_sockets(Bound::Above, sockets_before + SLOW, Duration::from_secs(5), "accepting the slow readers")
        .await;

    // Meanwhile: the usual requests, and a full pull of the same 10 MB, are served.
    let slowest = well_behaved(&api, "during").await;
    let started = Instant::now();
    let pulled = api.pull("/bigChanges", 0).await;
    let full_pull = started.elapsed();
    assert_eq!(pulled.updates.len(), OBJECTS);
    assert!(full_pull < 2 * PROMPT, "a full pull took {full_pull:?} beside the slow readers");
    let rss_during = target.rss_kib();

    target.wait_for_sockets(Bound::Below, sockets_before, Duration::from_secs(20), "with readers stalled").await;
    let dropped = asked.elapsed();
    dropped_flag.store(true, Ordering::Relaxed);
    let rss_after = target.rss_kib();
    let grown = rss_during.max(rss_after).saturating_sub(rss_before);
    eprintln!(
        "{SLOW} stalled readers of a {full}-byte answer: RSS {rss_before} KiB -> {rss_during} KiB during, \
         {rss_after} KiB after (+{grown}); slowest well-behaved request {slowest:?}, full pull {full_pull:?}; \
         dropped {dropped:?} after they asked"
    );
    assert!(grown < MAX_GROWTH_KIB, "{SLOW} stalled readers grew the server by {grown} KiB");
    assert!(dropped >= SEND_TIMEOUT, "stalled readers were dropped after {dropped:?}, before {SEND_TIMEOUT:?}");

    // Once they read, the readers find their answer cut off: what the buffers held, then a reset
    // or the end of the stream, never the whole answer.
    let readers = readers.join_all().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (read, mut conn) in readers {
        let (more, closed) = read_until_closed(&mut conn, deadline).await;
        assert!(closed, "a stalled reader's connection is not closed on its side");
        assert!(read + more < full, "a stalled reader got the whole answer ({} bytes)", read + more);
    }

    // Every database connection the stalled answers held is back: as many full pulls as there
    // are stream readers succeed at once.
    let mut pulls = JoinSet::new();
    for _ in 0..=SLOW {
        let api = api.clone();
        pulls.spawn(async move {
            let resp = api.get_response("/bigChanges?since=0").await;
            (resp.status().as_u16(), resp.bytes().await.map(|b| b.len()).unwrap_or(0))
        });
    }
    for (status, len) in pulls.join_all().await {
        assert_eq!((status, len), (200, full), "a full pull after the stalled readers were dropped");
    }
    well_behaved(&api, "after").await;
}

/// Uploads that announce a 1 MiB body and send it a byte a second (slowloris on the body). Each
/// reserves its `Content-Length` of the body budget; together they take most of it, not all, so
/// others still push, a body of nearly 1 MiB included. Each is answered `408` after
/// `body_timeout_secs`, not before, and nothing of theirs is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_trickle_are_answered_408_after_the_body_timeout_and_apply_nothing() {
    const BODY_TIMEOUT: Duration = Duration::from_secs(2);
    const SLOW: usize = 12;
    const MIB: usize = 1024 * 1024;
    // Only what arrived is held: a few bytes each, against the 12 MiB they announced.
    const MAX_GROWTH_KIB: u64 = 8 * 1024;
    let target = Target::start(&format!(
        "workers = 2\nbody_timeout_secs = {}\n[limits]\nmax_body_bytes = {MIB}\nmax_inflight_body_bytes = {}\n",
        BODY_TIMEOUT.as_secs(),
        16 * MIB
    ))
    .await;
    let api = target.api();
    well_behaved(&api, "before").await;
    let rss_before = target.rss_kib();

    let started = Instant::now();
    let mut uploads = JoinSet::new();
    for i in 0..SLOW {
        let mut conn = TcpStream::connect(target.addr()).await.expect("connect");
        let head = format!(
            "POST /goodChanges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {MIB}\r\n\r\n\
             [{{\"id\":\"slow{i}\"}}"
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        uploads.spawn(async move {
            // JSON allows any amount of white space: each byte keeps the body valid so far.
            let (mut answer, mut buf) = (Vec::new(), [0u8; 4096]);
            let deadline = tokio::time::Instant::now() + BODY_TIMEOUT + Duration::from_secs(15);
            loop {
                tokio::select! {
                    read = conn.read(&mut buf) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if conn.write_all(b" ").await.is_err() {
                            // Refused and closed: what was answered is still to be read.
                            let _ = tokio::time::timeout(Duration::from_secs(1), conn.read_to_end(&mut answer)).await;
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
        });
    }

    // The uploads hold 12 of the 16 MiB: a push of nearly 1 MiB still fits beside them.
    let slowest = well_behaved(&api, "during").await;
    let padded = format!("[{{\"id\":\"large\"}}{}]", " ".repeat(MIB - 64));
    let (status, body) = api.post("/goodChanges", &padded).await;
    assert_eq!(status, 200, "a large push beside the trickling uploads: {body}");
    let rss_during = target.rss_kib();

    for (answer, after) in uploads.join_all().await {
        let status = answer.lines().next().unwrap_or_default();
        assert!(status.contains(" 408 "), "a trickling upload got {status:?} after {after:?}");
        assert!(after >= BODY_TIMEOUT, "a trickling upload was answered after {after:?}, before {BODY_TIMEOUT:?}");
        assert!(answer.contains("\"request_timeout\""), "no JSON error body: {answer}");
    }
    let answered = started.elapsed();
    let grown = rss_during.max(target.rss_kib()).saturating_sub(rss_before);
    eprintln!(
        "{SLOW} trickling uploads of {MIB} bytes: all answered 408 within {answered:?}; RSS {rss_before} KiB -> \
         {rss_during} KiB (+{grown}); slowest well-behaved request {slowest:?}"
    );
    assert!(grown < MAX_GROWTH_KIB, "{SLOW} trickling uploads grew the server by {grown} KiB");

    let pulled = api.pull("/goodChanges", 0).await;
    let slow: Vec<_> =
        pulled.updates.iter().filter(|u| u["id"].as_str().is_some_and(|id| id.starts_with("slow"))).collect();
    assert!(slow.is_empty(), "trickling uploads were applied: {slow:?}");
    assert!(pulled.updates.iter().any(|u| u["id"] == "large"));
    well_behaved(&api, "after").await;
}

/// The series `/metrics` exposes, without comments.
async fn metric_series(api: &Api) -> Vec<String> {
    let resp = api.get_response("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned())
        .collect()
}

/// 5,000 distinct entity names pulled, a quarter of them pushed too (each push waits for its
/// commit to reach the disk, which is what makes a flood slow, not what it is about), in a
/// schemaless server (every
/// `/<name>Changes` path is served). Per entity the server keeps only rows on disk (its objects
/// and its clock): no metric label carries a path or an entity, no cache is kept per entity, and
/// long-poll feeds exist only while a pull waits. So `/metrics` keeps the same series and memory
/// stays within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_entity_names_grows_neither_metrics_nor_memory() {
    const ENTITIES: usize = 5_000;
    const PUSHED_EVERY: usize = 4;
    const CLIENTS: usize = 32;
    const MAX_GROWTH_KIB: u64 = 32 * 1024;
    let target = Target::start("workers = 2\n").await;
    let api = target.api();
    // The series of the requests the flood makes (GET and POST answered 200) exist already.
    well_behaved(&api, "before").await;
    let (series_before, rss_before) = (metric_series(&api).await, target.rss_kib());

    let started = Instant::now();
    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        let api = api.clone();
        clients.spawn(async move {
            for i in (client..ENTITIES).step_by(CLIENTS) {
                let path = format!("/e{i}Changes");
                let pushed = i % PUSHED_EVERY == 0;
                if pushed {
                    api.push(&path, json!([{"id": "only", "n": i}])).await;
                }
                let pulled = api.pull(&path, 0).await;
                assert_eq!(pulled.updates.len(), usize::from(pushed), "{path} holds its own object only");
            }
        });
    }
    clients.join_all().await;
    let flood = started.elapsed();
    let slowest = well_behaved(&api, "after").await;

    let (series_after, rss_after) = (metric_series(&api).await, target.rss_kib());
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!(
        "{ENTITIES} entities pulled ({} pushed) by {CLIENTS} clients in {flood:?}: metric series {} -> {}; \
         RSS {rss_before} KiB -> {rss_after} KiB (+{grown}); slowest well-behaved request after {slowest:?}",
        ENTITIES / PUSHED_EVERY,
        series_before.len(),
        series_after.len()
    );
    let new: Vec<_> = series_after.iter().filter(|s| !series_before.contains(s)).take(5).collect();
    assert!(new.is_empty(), "the flood added metric series: {new:?}");
    assert!(grown < MAX_GROWTH_KIB, "{ENTITIES} entities grew the server by {grown} KiB");
}
