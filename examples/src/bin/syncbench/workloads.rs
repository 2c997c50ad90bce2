//! The workloads, each measured through HTTP and through the `Store` directly (push bodies parsed
//! with `sync-proto` and applied with `Store::push`; pulls rendered with `Store::pull_stream`), so
//! the direct figure is everything the server does except HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use memchr::memmem;
use rand::Rng;
use sync_proto::{Cursor, EntityName, Limits, PullQuery, parse_push};
use sync_server::store::{Push, Scope, Store};

use crate::data::push_body;
use crate::server::Server;
use crate::stats::{median, median_f64, ms, per_sec, percentile, rate};

/// Counts objects (one `"_lastChange":` each) in a pull answer read chunk by chunk, and keeps the
/// answer's tail to read `now` from, without holding the answer.
#[derive(Debug, Default)]
struct AnswerScan {
    objects: usize,
    tail: Vec<u8>,
}

const MARK: &[u8] = b"\"_lastChange\":";
/// Enough of the answer's end to hold `"now":N` and what follows it.
const TAIL: usize = 64;

impl AnswerScan {
    fn feed(&mut self, chunk: &[u8]) {
        // Marks split across two chunks are found in the joint: the previous tail plus this head.
        let mut joint = self.tail[self.tail.len().saturating_sub(MARK.len() - 1)..].to_vec();
        joint.extend_from_slice(&chunk[..chunk.len().min(MARK.len() - 1)]);
        self.objects += memmem::find_iter(&joint, MARK).count() + memmem::find_iter(chunk, MARK).count();
        // The last bytes of the answer so far, however small the chunks.
        self.tail.extend_from_slice(&chunk[chunk.len().saturating_sub(TAIL)..]);
        self.tail.drain(..self.tail.len().saturating_sub(TAIL));
    }

    fn now(&self) -> anyhow::Result<i64> {
        let at = memmem::rfind(&self.tail, b"\"now\":").context("answer without now")?;
        let digits: String =
            self.tail[at + 6..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
        Ok(digits.parse()?)
    }
}

/// One benchmark session: a server, the same store opened directly, an HTTP client.
pub struct Bench {
    /// The server under test.
    pub server: Server,
    /// How many times each workload runs.
    pub runs: usize,
    endpoint: Arc<Endpoint>,
    /// A random prefix of this session's entity names, so any existing database will do.
    tag: String,
}

impl Bench {
    /// A session over `server` and the same store opened directly.
    pub fn new(server: Server, store: Arc<dyn Store>, runs: usize) -> Self {
        let tag = format!("{:06x}", rand::rng().random_range(0..0xFF_FFFF));
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("HTTP client");
        let endpoint = Arc::new(Endpoint { base_url: server.base_url.clone(), store, http });
        Self { server, runs, endpoint, tag }
    }

    /// The store, opened directly.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.endpoint.store)
    }

    /// This session's random prefix of entity names.
    pub fn tag(&self) -> String {
        self.tag.clone()
    }

    /// This session's entity `name`, as a scope and as its path.
    pub(crate) fn entity(&self, name: &str) -> (Scope, String) {
        let entity = EntityName::new(format!("B{}{name}", self.tag)).expect("valid entity name");
        let path = format!("/b{}{name}Changes", self.tag);
        (Scope::entity(entity), path)
    }

    /// Pushes `body` to `scope` through the store directly; returns the push's `now`.
    pub(crate) async fn direct_push(&self, scope: &Scope, body: &[u8]) -> anyhow::Result<i64> {
        self.endpoint.direct_push(scope, body).await
    }

    /// W1: push 10,000 objects in batches of 1,000 and in one batch; W2: pull them all since 0.
    pub async fn w1_w2(&self) -> anyhow::Result<()> {
        const N: usize = 10_000;
        let (mut batched, mut batched_direct, mut single, mut single_direct) = (vec![], vec![], vec![], vec![]);
        let (mut pull, mut pull_direct) = (vec![], vec![]);
        for run in 0..self.runs {
            let (_, path) = self.entity(&format!("W1r{run}"));
            let (direct, _) = self.entity(&format!("D1r{run}"));
            let bodies: Vec<_> = (0..N / 1000).map(|b| push_body(b * 1000, 1000, 0)).collect();

            let started = Instant::now();
            for body in &bodies {
                self.endpoint.http_push(&path, body.clone()).await?;
            }
            batched.push(started.elapsed());
            let started = Instant::now();
            for body in &bodies {
                self.endpoint.direct_push(&direct, body).await?;
            }
            batched_direct.push(started.elapsed());

            let one = push_body(0, N, 0);
            let (_, single_path) = self.entity(&format!("W1s{run}"));
            let (single_entity, _) = self.entity(&format!("D1s{run}"));
            let started = Instant::now();
            self.endpoint.http_push(&single_path, one.clone()).await?;
            single.push(started.elapsed());
            let started = Instant::now();
            self.endpoint.direct_push(&single_entity, &one).await?;
            single_direct.push(started.elapsed());

            let started = Instant::now();
            let scan = self.endpoint.http_pull(&path, 0).await?;
            pull.push(started.elapsed());
            ensure!(scan.objects == N, "W2 pulled {} objects over HTTP, expected {N}", scan.objects);
            let started = Instant::now();
            let scan = self.endpoint.direct_pull(&direct, 0).await?;
            pull_direct.push(started.elapsed());
            ensure!(scan.objects == N, "W2 pulled {} objects directly, expected {N}", scan.objects);
        }
        row("W1 push 10,000 in batches of 1,000", N, &batched, &batched_direct);
        row("W1 push 10,000 in one batch", N, &single, &single_direct);
        row("W2 pull 10,000 since 0", N, &pull, &pull_direct);
        Ok(())
    }

    /// W3: the pull of a 10-object delta with 10,000 and then 100,000 objects stored.
    pub async fn w3(&self) -> anyhow::Result<()> {
        const REPS: usize = 50;
        let (entity, path) = self.entity("W3");
        let (direct, _) = self.entity("D3");
        let mut stored = 0;
        let mut p50 = Vec::new();
        for target in [10_000, 100_000] {
            for e in [&entity, &direct] {
                for start in (stored..target).step_by(10_000) {
                    self.endpoint.direct_push(e, &push_body(start, 10_000.min(target - start), 0)).await?;
                }
            }
            stored = target;
            let (mut http, mut local) = (Vec::new(), Vec::new());
            let mut since = self.endpoint.http_pull(&path, 0).await?.now()?;
            let mut direct_since = self.endpoint.direct_pull(&direct, 0).await?.now()?;
            for rep in 0..REPS {
                let first = rand::rng().random_range(0..target - 10);
                let body = push_body(first, 10, rep + 1);
                self.endpoint.http_push(&path, body.clone()).await?;
                let started = Instant::now();
                let scan = self.endpoint.http_pull(&path, since).await?;
                http.push(started.elapsed());
                ensure!(scan.objects == 10, "W3 delta had {} objects over HTTP", scan.objects);
                since = scan.now()?;

                self.endpoint.direct_push(&direct, &body).await?;
                let started = Instant::now();
                let scan = self.endpoint.direct_pull(&direct, direct_since).await?;
                local.push(started.elapsed());
                ensure!(scan.objects == 10, "W3 delta had {} objects directly", scan.objects);
                direct_since = scan.now()?;
            }
            println!(
                "W3 10-object delta, {:>7} stored    http p50 {}  p99 {}    direct p50 {}  p99 {}    http/direct p50 {:.2}",
                target,
                ms(median(&http)),
                ms(percentile(&http, 99.0)),
                ms(median(&local)),
                ms(percentile(&local, 99.0)),
                median(&local).as_secs_f64() / median(&http).as_secs_f64().max(1e-9),
            );
            p50.push(median(&http));
        }
        println!(
            "W3 p50 with 100,000 stored / p50 with 10,000 stored: {:.2}",
            p50[1].as_secs_f64() / p50[0].as_secs_f64().max(1e-9)
        );
        Ok(())
    }

    /// W4: 32 concurrent clients, each pushing 20 batches of 50 new objects and pulling after
    /// each push; then every client must have seen all objects exactly once, every push a unique now.
    pub async fn w4(&self) -> anyhow::Result<()> {
        const CLIENTS: usize = 32;
        const BATCHES: usize = 20;
        const SIZE: usize = 50;
        let total = CLIENTS * BATCHES * SIZE;
        let (mut walls, mut walls_direct) = (Vec::new(), Vec::new());
        let (mut latencies, mut latencies_direct) = (Vec::new(), Vec::new());
        for run in 0..self.runs {
            for direct in [false, true] {
                let (entity, path) = self.entity(&format!("{}4r{run}", if direct { "D" } else { "W" }));
                let started = Instant::now();
                let mut tasks = Vec::new();
                for client in 0..CLIENTS {
                    let me = Arc::clone(&self.endpoint);
                    let (entity, path) = (entity.clone(), path.clone());
                    tasks.push(tokio::spawn(async move {
                        let (mut since, mut seen, mut nows, mut lat) = (0, 0, Vec::new(), Vec::new());
                        for batch in 0..BATCHES {
                            let body = push_body((client * BATCHES + batch) * SIZE, SIZE, 0);
                            let t = Instant::now();
                            let now = if direct {
                                me.direct_push(&entity, &body).await?
                            } else {
                                me.http_push(&path, body).await?
                            };
                            lat.push(t.elapsed());
                            nows.push(now);
                            let t = Instant::now();
                            let scan = me.pull_via(direct, &entity, &path, since).await?;
                            lat.push(t.elapsed());
                            seen += scan.objects;
                            since = scan.now()?;
                        }
                        anyhow::Ok((since, seen, nows, lat))
                    }));
                }
                let mut results = Vec::new();
                for task in tasks {
                    results.push(task.await??);
                }
                let wall = started.elapsed();
                // Everything is acknowledged now: one last pull per client must complete its view.
                let mut all_nows = Vec::new();
                for (since, seen, nows, lat) in results {
                    let rest = self.endpoint.pull_via(direct, &entity, &path, since).await?;
                    ensure!(seen + rest.objects == total, "a client saw {} of {total} objects", seen + rest.objects);
                    all_nows.extend(nows);
                    if direct { latencies_direct.extend(lat) } else { latencies.extend(lat) }
                }
                let unique: std::collections::HashSet<_> = all_nows.iter().collect();
                if unique.len() != all_nows.len() {
                    bail!("two pushes got the same now");
                }
                if direct { walls_direct.push(wall) } else { walls.push(wall) }
            }
        }
        row("W4 32 clients x 20 pushes of 50 + pulls", total, &walls, &walls_direct);
        println!(
            "W4 per request                         http p50 {}  p99 {}    direct p50 {}  p99 {}    (verified: every client saw all {total} objects, all nows unique)",
            ms(median(&latencies)),
            ms(percentile(&latencies, 99.0)),
            ms(median(&latencies_direct)),
            ms(percentile(&latencies_direct, 99.0)),
        );
        Ok(())
    }

    /// W6: 32 writers pushing at once (20 batches of 50 new objects each), every writer in a
    /// partition of its own, against 32 writers of one partition, through `server` (which runs
    /// with authentication, tokens signed with `secret`) and directly. One partition has one
    /// clock row, which orders its pushes; partitions of their own do not wait for each other.
    /// Each run measures both, in turns (which goes first alternates), so that each run's ratio
    /// compares two figures taken moments apart.
    pub async fn w6(&self, server: &Server, secret: &str) -> anyhow::Result<()> {
        const CLIENTS: usize = 32;
        const BATCHES: usize = 20;
        const SIZE: usize = 50;
        let total = CLIENTS * BATCHES * SIZE;
        // walls[own as usize][direct as usize]: one duration per run.
        let mut walls: [[Vec<Duration>; 2]; 2] = Default::default();
        for run in 0..self.runs {
            let order = if run % 2 == 0 { [true, false] } else { [false, true] };
            for own in order {
                for direct in [false, true] {
                    let name = format!("{}6{}r{run}", if direct { "D" } else { "W" }, if own { "o" } else { "s" });
                    let (entity, path) = self.entity(&name);
                    let started = Instant::now();
                    let mut tasks = Vec::new();
                    for client in 0..CLIENTS {
                        let me = Arc::clone(&self.endpoint);
                        let user = if own { format!("writer-{client}") } else { "everyone".to_owned() };
                        let scope = Scope::partitioned(entity.entity_name().clone(), format!("user:{user}"));
                        let (path, url, token) = (path.clone(), server.base_url.clone(), token(secret, &user)?);
                        tasks.push(tokio::spawn(async move {
                            for batch in 0..BATCHES {
                                let body = push_body((client * BATCHES + batch) * SIZE, SIZE, 0);
                                if direct {
                                    me.direct_push(&scope, &body).await?;
                                } else {
                                    me.http_push_to(&url, &path, &token, body).await?;
                                }
                            }
                            anyhow::Ok(())
                        }));
                    }
                    for task in tasks {
                        task.await??;
                    }
                    walls[usize::from(own)][usize::from(direct)].push(started.elapsed());
                }
            }
        }
        let [one, own] = &walls;
        row("W6 32 writers, own partitions", total, &own[0], &own[1]);
        row("W6 32 writers, one partition", total, &one[0], &one[1]);
        // A rate ratio is the inverse ratio of the durations.
        let ratio = |own: &[Duration], one: &[Duration]| {
            let medians = median(one).as_secs_f64() / median(own).as_secs_f64().max(1e-9);
            let paired: Vec<f64> =
                own.iter().zip(one).map(|(own, one)| one.as_secs_f64() / own.as_secs_f64().max(1e-9)).collect();
            (medians, median_f64(&paired))
        };
        let ((http, http_paired), (direct, direct_paired)) = (ratio(&own[0], &one[0]), ratio(&own[1], &one[1]));
        println!(
            "W6 own partitions / one partition      http {http:.2} (median of runs' ratios {http_paired:.2})    direct {direct:.2} (median of runs' ratios {direct_paired:.2})"
        );
        Ok(())
    }

    /// W5: the pull of `n` stored objects, streamed; the server's peak RSS during it.
    pub async fn w5(&self, n: usize) -> anyhow::Result<()> {
        let (entity, path) = self.entity("W5");
        let load = Instant::now();
        for start in (0..n).step_by(10_000) {
            self.endpoint.direct_push(&entity, &push_body(start, 10_000.min(n - start), 0)).await?;
        }
        let loaded = load.elapsed();
        let (mut http, mut direct, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.runs.min(3) {
            self.server.reset_peak_rss();
            let started = Instant::now();
            let scan = self.endpoint.http_pull(&path, 0).await?;
            http.push(started.elapsed());
            ensure!(scan.objects == n, "W5 pulled {} objects over HTTP, expected {n}", scan.objects);
            rss.extend(self.server.peak_rss_mb());
            let started = Instant::now();
            let scan = self.endpoint.direct_pull(&entity, 0).await?;
            direct.push(started.elapsed());
            ensure!(scan.objects == n, "W5 pulled {} objects directly", scan.objects);
        }
        row(&format!("W5 pull {n} stored objects"), n, &http, &direct);
        let rss = rss.iter().cloned().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        println!(
            "W5 server peak RSS during the pull: {}    (loaded {n} objects directly in {:.1} s)",
            rss.map_or("not measured".into(), |r| format!("{r:.1} MiB")),
            loaded.as_secs_f64()
        );
        Ok(())
    }
}

impl Bench {
    /// W10: 32 connections pulling the same 50-object delta (10,000 objects stored, pushed 50 at a
    /// time), 200 pulls each: the cost of a delta pull is per request, not per object.
    pub async fn w10(&self) -> anyhow::Result<()> {
        const CLIENTS: usize = 32;
        const PULLS: usize = 200;
        const SIZE: usize = 50;
        let (entity, path) = self.entity("W10");
        let mut since = 0;
        for batch in 0..10_000 / SIZE {
            let now = self.endpoint.direct_push(&entity, &push_body(batch * SIZE, SIZE, 0)).await?;
            if batch + 1 < 10_000 / SIZE {
                since = now;
            }
        }
        let (mut walls, mut walls_direct, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.runs {
            for direct in [false, true] {
                let started = Instant::now();
                let mut tasks = Vec::new();
                for _ in 0..CLIENTS {
                    let (me, entity, path) = (Arc::clone(&self.endpoint), entity.clone(), path.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut lat = Vec::with_capacity(PULLS);
                        for _ in 0..PULLS {
                            let t = Instant::now();
                            let scan = me.pull_via(direct, &entity, &path, since).await?;
                            lat.push(t.elapsed());
                            ensure!(scan.objects == SIZE, "W10 delta had {} objects", scan.objects);
                        }
                        anyhow::Ok(lat)
                    }));
                }
                for task in tasks {
                    let lat = task.await??;
                    if !direct {
                        latencies.extend(lat);
                    }
                }
                if direct { walls_direct.push(started.elapsed()) } else { walls.push(started.elapsed()) }
            }
        }
        let pulls = CLIENTS * PULLS;
        let (h, d) = (median(&walls), median(&walls_direct));
        println!(
            "W10 32 connections x {PULLS} pulls of a {SIZE}-object delta   http {} pulls/s  p50 {}  p99 {}    direct {} pulls/s    http/direct {:.2}",
            per_sec(rate(pulls, h)).trim_end_matches(" obj/s"),
            ms(median(&latencies)),
            ms(percentile(&latencies, 99.0)),
            per_sec(rate(pulls, d)).trim_end_matches(" obj/s"),
            d.as_secs_f64() / h.as_secs_f64().max(1e-9),
        );
        Ok(())
    }

    /// W8: one plain keep-alive HTTP/1.1 client (a socket, as `http.client` or `curl` use one)
    /// pulling 10,000 objects 15 times in a row. An answer written in several segments that
    /// waited on the client's delayed ACK (Nagle's algorithm) shows as a median far above the
    /// fastest; the target is a median within 2 times the fastest.
    pub async fn w8(&self) -> anyhow::Result<()> {
        const N: usize = 10_000;
        const PULLS: usize = 15;
        let (_, path) = self.entity("W8");
        for b in 0..N / 1000 {
            self.endpoint.http_push(&path, push_body(b * 1000, 1000, 0)).await?;
        }
        let addr = self.server.base_url.trim_start_matches("http://").to_owned();
        let times = tokio::task::spawn_blocking(move || sequential_pulls(&addr, &path, PULLS)).await??;
        let (fastest, middle) = (percentile(&times, 0.0), median(&times));
        println!(
            "W8 {PULLS} sequential pulls of {N} on one connection   fastest {}   median {}   median/fastest {:.2}",
            ms(fastest),
            ms(middle),
            middle.as_secs_f64() / fastest.as_secs_f64().max(1e-9)
        );
        Ok(())
    }
}

/// `pulls` full pulls of `path` on one kept-alive connection to `addr`, each read to the end of
/// its chunked answer; how long each took.
fn sequential_pulls(addr: &str, path: &str, pulls: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = format!("GET {path}?since=0 HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut times = Vec::with_capacity(pulls);
    let mut buffer = vec![0u8; 256 * 1024];
    for _ in 0..pulls {
        let started = Instant::now();
        socket.write_all(request.as_bytes())?;
        let mut answer: Vec<u8> = Vec::new();
        loop {
            let n = socket.read(&mut buffer)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            answer.extend_from_slice(&buffer[..n]);
            if answer.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        times.push(started.elapsed());
        ensure!(
            answer.starts_with(b"HTTP/1.1 200"),
            "W8: the pull answered {}",
            String::from_utf8_lossy(&answer[..40.min(answer.len())])
        );
    }
    Ok(times)
}

/// The two ways to reach the store, HTTP and direct; shared by W4's concurrent clients.
struct Endpoint {
    base_url: String,
    store: Arc<dyn Store>,
    http: reqwest::Client,
}

impl Endpoint {
    async fn http_push(&self, path: &str, body: Vec<u8>) -> anyhow::Result<i64> {
        let resp = self.http.post(format!("{}{path}", self.base_url)).body(body).send().await?;
        ensure!(resp.status() == 200, "push answered {}", resp.status());
        let answer: serde_json::Value = resp.json().await?;
        answer["now"].as_i64().context("push answer without now")
    }

    async fn http_push_to(&self, base_url: &str, path: &str, token: &str, body: Vec<u8>) -> anyhow::Result<i64> {
        let resp = self.http.post(format!("{base_url}{path}")).bearer_auth(token).body(body).send().await?;
        ensure!(resp.status() == 200, "push answered {}", resp.status());
        let answer: serde_json::Value = resp.json().await?;
        answer["now"].as_i64().context("push answer without now")
    }

    async fn http_pull(&self, path: &str, since: i64) -> anyhow::Result<AnswerScan> {
        let mut resp = self.http.get(format!("{}{path}?since={since}", self.base_url)).send().await?;
        ensure!(resp.status() == 200, "pull answered {}", resp.status());
        let mut scan = AnswerScan::default();
        while let Some(chunk) = resp.chunk().await? {
            scan.feed(&chunk);
        }
        Ok(scan)
    }

    async fn direct_push(&self, entity: &Scope, body: &[u8]) -> anyhow::Result<i64> {
        let changes = parse_push(body, &Limits::default(), None)?;
        Ok(self.store.push(entity, Push::new(changes)).await?.now.millis())
    }

    /// A pull through the store directly when `direct`, else through HTTP.
    async fn pull_via(&self, direct: bool, entity: &Scope, path: &str, since: i64) -> anyhow::Result<AnswerScan> {
        if direct { self.direct_pull(entity, since).await } else { self.http_pull(path, since).await }
    }

    async fn direct_pull(&self, entity: &Scope, since: i64) -> anyhow::Result<AnswerScan> {
        let mut chunks = self
            .store
            .pull_stream(entity, PullQuery { since: Cursor::from_millis(since), ..PullQuery::default() })
            .await?;
        let mut scan = AnswerScan::default();
        while let Some(chunk) = chunks.recv().await {
            scan.feed(&chunk?);
        }
        Ok(scan)
    }
}

/// An HS256 token of `subject`, valid for an hour.
fn token(secret: &str, subject: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &serde_json::json!({"sub": subject, "exp": exp}), &key)?)
}

/// Prints one workload: HTTP and direct medians as rates, and their ratio.
fn row(name: &str, objects: usize, http: &[Duration], direct: &[Duration]) {
    let (h, d) = (median(http), median(direct));
    println!(
        "{name:<40} http {:>16} ({})    direct {:>16} ({})    http/direct {:.2}",
        per_sec(rate(objects, h)),
        ms(h),
        per_sec(rate(objects, d)),
        ms(d),
        d.as_secs_f64() / h.as_secs_f64().max(1e-9),
    );
}

#[cfg(test)]
mod tests {
    use super::AnswerScan;

    #[test]
    fn scan_counts_objects_and_reads_now_whatever_the_chunking() {
        let answer = br#"{"updates":[{"id":"a","_lastChange":5},{"id":"b","_removed":true,"_lastChange":6}],"now":1795325310696}"#;
        for size in 1..answer.len() {
            let mut scan = AnswerScan::default();
            for chunk in answer.chunks(size) {
                scan.feed(chunk);
            }
            assert_eq!((scan.objects, scan.now().unwrap()), (2, 1795325310696), "chunks of {size}");
        }
    }
}
