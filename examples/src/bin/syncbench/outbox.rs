//! W7: what the outbox costs pushes, how fast it delivers, and how late. Three servers over the
//! same store, in the same run: one without subscriptions (the baseline), one with a webhook, one
//! with a webhook taking batches of 100, all to a receiver in this process that records when each
//! object's event arrived.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::bail;
use serde_json::Value;

use sync_proto::{EntityName, Limits, parse_push};
use sync_server::store::{Push, Scope, Store};

use crate::data::push_body;
use crate::server::Server;
use crate::stats::{median, median_f64, ms, per_sec, percentile, rate};

const SECRET: &str = "whsec_YSBzZWNyZXQgb2YgdGhlIGJlbmNobWFyaw==";

/// Per entity, when each object's first event arrived (counting an entity's arrivals reads one
/// length, so that waiting for them takes nothing from the receiver).
type Arrivals = Arc<Mutex<HashMap<String, HashMap<String, Instant>>>>;

/// A receiver that answers `204` at once and records arrivals.
pub struct Receiver {
    url: String,
    arrivals: Arrivals,
}

impl Receiver {
    /// Starts it on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let arrivals: Arrivals = Arc::default();
        let data = web::Data::new(Arc::clone(&arrivals));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(2)
            .listen(listener)?
            .run();
        tokio::spawn(server);
        Ok(Self { url, arrivals })
    }

    /// A `syncbench serve` configuration delivering to this receiver, `batch` events a request.
    pub fn config(&self, batch: usize) -> String {
        format!(
            "[outbox]\npoll_interval_ms = 100\n\n[[webhook]]\nname = \"bench\"\nurl = \"{}\"\nsecrets = [\"{SECRET}\"]\nbatch = {batch}\nconcurrency = 8\n",
            self.url
        )
    }

    fn count(&self, entity: &str) -> usize {
        self.arrivals.lock().map(|a| a.get(entity).map_or(0, HashMap::len)).unwrap_or(0)
    }

    /// Waits until `n` objects of `entity` arrived; returns when the last did.
    async fn wait_for(&self, entity: &str, n: usize) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count(entity) < n {
            if Instant::now() > deadline {
                bail!("W7: {} of {n} events of {entity} arrived within 120 s", self.count(entity));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let arrivals = self.arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(arrivals.get(entity).and_then(|a| a.values().max().copied()).unwrap_or_else(Instant::now))
    }

    fn arrival(&self, entity: &str, id: &str) -> Option<Instant> {
        self.arrivals.lock().ok()?.get(entity)?.get(id).copied()
    }
}

async fn receive(body: web::Bytes, arrivals: web::Data<Arrivals>) -> HttpResponse {
    let now = Instant::now();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else { return HttpResponse::BadRequest().finish() };
    let events =
        if body["type"] == "batch" { body["events"].as_array().cloned().unwrap_or_default() } else { vec![body] };
    if let Ok(mut arrivals) = arrivals.lock() {
        for e in events {
            let (entity, id) = (e["entity"].as_str().unwrap_or_default(), e["object_id"].as_str().unwrap_or_default());
            arrivals.entry(entity.to_owned()).or_default().entry(id.to_owned()).or_insert(now);
        }
    }
    HttpResponse::NoContent().finish()
}

/// The ids of `push_body(start, count, _)`.
fn ids(start: usize, count: usize) -> Vec<String> {
    (start..start + count).map(|i| format!("{:032X}", i as u128 * 0x9E37_79B9_7F4A_7C15)).collect()
}

async fn push(http: &reqwest::Client, base_url: &str, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let resp = http.post(format!("{base_url}{path}")).body(body).send().await?;
    if resp.status() != 200 {
        bail!("push answered {}", resp.status());
    }
    Ok(())
}

/// W7, over `plain` (no subscription) and servers with a webhook, one event and 100 events a
/// request, to `receiver`.
pub async fn w7(
    plain: &Server,
    single: &Server,
    batched: &Server,
    receiver: &Receiver,
    store: &Arc<dyn Store>,
    tag: &str,
    runs: usize,
) -> anyhow::Result<()> {
    const N: usize = 10_000;
    const CLIENTS: usize = 32;
    const BATCHES: usize = 20;
    const SIZE: usize = 50;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let servers = [
        ("none", plain),
        ("webhook, delivery paused", single),
        ("webhook", single),
        ("webhook, batches of 100", batched),
    ];
    let mut w1: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut delivered: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut w4: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut lags = Vec::new();
    for run in 0..runs {
        for (label, server) in servers {
            // W1 with the outbox: 10 pushes of 1,000, then the time until every event arrived.
            let entity = format!("B{tag}W7r{run}{}", label.len());
            let path = format!("/b{tag}W7r{run}{}Changes", label.len());
            let paused = label == "webhook, delivery paused";
            if paused {
                // Events are appended, nothing is delivered: the cost of the outbox alone.
                store.set_enabled("bench", false, Some("benchmark"), 0).await?;
            }
            let started = Instant::now();
            for b in 0..N / 1000 {
                push(&http, &server.base_url, &path, push_body(b * 1000, 1000, 0)).await?;
            }
            w1.entry(label).or_default().push(started.elapsed());
            if paused {
                store.set_enabled("bench", true, None, 0).await?;
                receiver.wait_for(&entity, N).await?;
            } else if label != "none" {
                let last = receiver.wait_for(&entity, N).await?;
                delivered.entry(label).or_default().push(last - started);
            }

            // W4 with the outbox: 32 clients pushing 20 batches of 50 at once; lag per object.
            if label == "webhook, batches of 100" {
                continue;
            }
            let entity = format!("B{tag}W7c{run}{}", label.len());
            let path = format!("/b{tag}W7c{run}{}Changes", label.len());
            if paused {
                store.set_enabled("bench", false, Some("benchmark"), 0).await?;
            }
            let started = Instant::now();
            let mut tasks = Vec::new();
            for client in 0..CLIENTS {
                let (http, url, path) = (http.clone(), server.base_url.clone(), path.clone());
                tasks.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for batch in 0..BATCHES {
                        let start = (client * BATCHES + batch) * SIZE;
                        push(&http, &url, &path, push_body(start, SIZE, 0)).await?;
                        acked.push((start, Instant::now()));
                    }
                    anyhow::Ok(acked)
                }));
            }
            let mut acked = Vec::new();
            for task in tasks {
                acked.extend(task.await??);
            }
            w4.entry(label).or_default().push(started.elapsed());
            if paused {
                store.set_enabled("bench", true, None, 0).await?;
                receiver.wait_for(&entity, CLIENTS * BATCHES * SIZE).await?;
            } else if label == "webhook" {
                receiver.wait_for(&entity, CLIENTS * BATCHES * SIZE).await?;
                for (start, at) in acked {
                    for id in ids(start, SIZE) {
                        if let Some(arrived) = receiver.arrival(&entity, &id) {
                            lags.push(arrived.saturating_duration_since(at));
                        }
                    }
                }
            }
        }
    }
    let none = median(&w1["none"]);
    for (label, _) in servers {
        let took = median(&w1[label]);
        println!(
            "W7 push 10,000 in batches of 1,000, {label:<24} {:>16} ({})   outbox/none {:.2}",
            per_sec(rate(N, took)),
            ms(took),
            none.as_secs_f64() / took.as_secs_f64().max(1e-9)
        );
    }
    for label in ["webhook", "webhook, batches of 100"] {
        let took = median(&delivered[label]);
        let events = per_sec(rate(N, took)).replace("obj/s", "events/s");
        println!("W7 deliver 10,000 events, {label:<30} {events:>19} ({} from the first push)", ms(took));
    }
    let none4 = median(&w4["none"]);
    let total = CLIENTS * BATCHES * SIZE;
    for label in ["none", "webhook, delivery paused", "webhook"] {
        let took = median(&w4[label]);
        println!(
            "W7 32 clients x 20 pushes of 50, {label:<27} {:>16} ({})   outbox/none {:.2}",
            per_sec(rate(total, took)),
            ms(took),
            none4.as_secs_f64() / took.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "W7 lag from acknowledgement to delivery under that load: p50 {}   p99 {}   ({} events)",
        ms(percentile(&lags, 50.0)),
        ms(percentile(&lags, 99.0)),
        lags.len()
    );
    Ok(())
}

/// W7 through the store itself (no HTTP, no delivery, nothing else on the cores): W1's and W4's
/// pushes to a store without a subscription and to one opened alike with one subscription taking
/// every entity. Every run opens a fresh pair (`open(routed, run)`), in turns the one or the other
/// first, and pushes to them in turns the one or the other first: an instance opened or used
/// second was seen to run faster, which would otherwise be counted for or against the outbox.
pub async fn w7_direct(
    open: impl AsyncFn(bool, usize) -> anyhow::Result<Arc<dyn Store>>,
    tag: &str,
    runs: usize,
) -> anyhow::Result<()> {
    const N: usize = 10_000;
    const CLIENTS: usize = 32;
    const BATCHES: usize = 20;
    const SIZE: usize = 50;
    let labels = ["none", "one subscription"];
    let mut w1: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut w4: HashMap<&str, Vec<Duration>> = HashMap::new();
    for run in 0..runs {
        let mut order = [(labels[0], false), (labels[1], true)];
        if run % 2 == 1 {
            order.reverse();
        }
        let mut stores = Vec::new();
        for (label, routed) in order {
            stores.push((label, open(routed, run).await?));
        }
        if run % 4 >= 2 {
            stores.reverse();
        }
        for (label, store) in &stores {
            let (label, store) = (*label, store);
            let scope = |name: &str| {
                Scope::entity(
                    EntityName::new(format!("B{tag}W7{name}{run}{}", label.len())).expect("valid entity name"),
                )
            };
            let (entity, bodies) = (scope("d"), (0..N / 1000).map(|b| push_body(b * 1000, 1000, 0)));
            let started = Instant::now();
            for body in bodies {
                store.push(&entity, Push::new(parse_push(&body, &Limits::default(), None)?)).await?;
            }
            w1.entry(label).or_default().push(started.elapsed());

            let entity = scope("e");
            let started = Instant::now();
            let mut tasks = Vec::new();
            for client in 0..CLIENTS {
                let (store, entity) = (Arc::clone(store), entity.clone());
                tasks.push(tokio::spawn(async move {
                    for batch in 0..BATCHES {
                        let body = push_body((client * BATCHES + batch) * SIZE, SIZE, 0);
                        store.push(&entity, Push::new(parse_push(&body, &Limits::default(), None)?)).await?;
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            w4.entry(label).or_default().push(started.elapsed());
        }
    }
    for (name, total, took) in
        [("push 10,000 in batches of 1,000", N, &w1), ("32 clients x 20 pushes of 50", CLIENTS * BATCHES * SIZE, &w4)]
    {
        let none = median(&took["none"]);
        for label in labels {
            let t = median(&took[label]);
            // Each run's two figures were taken one after the other: their ratio is less moved by
            // what else the machine does than the ratio of the medians.
            let paired: Vec<f64> = took["none"]
                .iter()
                .zip(&took[label])
                .map(|(none, t)| none.as_secs_f64() / t.as_secs_f64().max(1e-9))
                .collect();
            println!(
                "W7 direct {name}, {label:<17} {:>16} ({})   outbox/none {:.2}   median of runs' ratios {:.2}",
                per_sec(rate(total, t)),
                ms(t),
                none.as_secs_f64() / t.as_secs_f64().max(1e-9),
                median_f64(&paired)
            );
        }
    }
    Ok(())
}
