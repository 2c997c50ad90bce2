//! The chaos soak: the shipped server and the Rust client under faults for a chosen time, then
//! exact checks that nothing acknowledged was lost, no push was applied twice and no `now` was
//! given twice.
//!
//! For each backend it runs:
//! - server instances as separate processes of the shipped binary (`sync-server-under-test`,
//!   built from `sync-server/src/main.rs`): `--instances` of them over one fresh PostgreSQL
//!   database (created for the run and dropped after it), or one over a fresh SQLite file;
//! - `--devices` devices, each a `sync-client` `Store` with a `Syncer` and an `HttpTransport`,
//!   making random inserts, field updates and removals of one shared set of objects and syncing
//!   (conflicts resolved with `PreferLocal`);
//! - one TCP proxy per device, sending each connection to a random running instance and
//!   injecting faults into a share of requests (`--fault-rate`): delays of the request or of its
//!   answer, requests dropped, connections cut after part of a push's body was forwarded, and
//!   after part of an answer was forwarded;
//! - instances killed with SIGKILL at random times (on average every `--kill-every`) and started
//!   again on the same port; with PostgreSQL, the servers' connections terminated with
//!   `pg_terminate_backend` at random times (on average every `--terminate-every`);
//! - a webhook subscription to a receiver in this program: the outbox events are the server's own
//!   record of every push it applied.
//!
//! Then the faults stop, and every device syncs in quiet rounds until none has anything left to
//! push and a whole round pushed nothing. The checks (see `check.rs`): every device equals the
//! server (pulled fresh); the server equals the replay of every acknowledged push in `now` order
//! (`lost`, `unexplained`); every field edit was acknowledged unless its device overwrote it
//! (`never pushed`); every application in the outbox has an acknowledged `now` (`applied
//! twice`), and every acknowledged change has its events; no `now` answered two pushes
//! (`duplicate now`). It prints a summary per backend and exits non-zero if a check failed; the
//! servers' logs of a failed run are kept and their folder printed.
//!
//! ```text
//! cargo build -p sync-tests --bin soak --bin sync-server-under-test
//! SYNC_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     target/debug/soak --duration 60s --backend both
//! ```
//!
//! Only loopback addresses are used: servers, proxies and the receiver listen on 127.0.0.1.

mod check;
mod cluster;
mod device;
mod http;
mod proxy;
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use rand::Rng;
use sync_client::{Cursor, HttpTransport, RemoteObject, Transport};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cluster::{Cluster, PgDatabase};
use crate::device::Device;
use crate::proxy::Faults;
use crate::webhook::Events;

/// Runs server instances and sync clients under network faults, crashes and lost database
/// connections for a while, then checks that no acknowledged edit was lost, no push was applied
/// twice and no `now` was given twice. Exits non-zero if a check fails.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long faults are injected (`90s`, `10m`, `1h`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Which store to soak; `both` runs SQLite, then PostgreSQL.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// Server instances over the PostgreSQL database (SQLite always runs one).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Client devices, each behind its own faulty proxy.
    #[arg(long, default_value_t = 6)]
    devices: usize,
    /// Objects shared by the devices (fewer: more conflicts).
    #[arg(long, default_value_t = 24)]
    objects: usize,
    /// The share of requests that meet a proxy fault.
    #[arg(long, default_value_t = 0.08)]
    fault_rate: f64,
    /// Mean time between SIGKILLs of a random instance; 0 never kills.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    kill_every: Duration,
    /// Mean time between terminations of PostgreSQL connections; 0 never terminates.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    terminate_every: Duration,
    /// The PostgreSQL server (a database is created on it for the run and dropped after).
    #[arg(long, env = "SYNC_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The server binary [default: sync-server-under-test beside this program].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seed of the devices' edits (faults and timing stay random).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("not a duration: {text:?} (try 90s, 10m)"))?;
    let secs = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Retries of the client's transport and pushes it sent again, counted from its log events:
/// they are the client's own, not this program's guesses.
static TRANSPORT_RETRIES: AtomicU64 = AtomicU64::new(0);
static PUSHES_SENT_AGAIN: AtomicU64 = AtomicU64::new(0);

struct ClientEvents;

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for ClientEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("sync_client") {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0 == "retrying" {
            TRANSPORT_RETRIES.fetch_add(1, Ordering::Relaxed);
        } else if message.0.starts_with("sending again a push") {
            PUSHES_SENT_AGAIN.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // SOAK_LOG (an EnvFilter, e.g. `sync_client=debug`) prints logs; by default only the
    // counters see them.
    let filter = EnvFilter::try_from_env("SOAK_LOG").unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::registry()
        .with(ClientEvents)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soak: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match runtime.block_on(run_all(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::ExitCode::from(2)
        }
    };
    // A device's sync still blocked on a dead connection must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn run_all(args: Args) -> anyhow::Result<bool> {
    let backends = match args.backend {
        BackendArg::Sqlite => vec![Backend::Sqlite],
        BackendArg::Postgres => vec![Backend::Postgres],
        BackendArg::Both => vec![Backend::Sqlite, Backend::Postgres],
    };
    if backends.contains(&Backend::Postgres) && args.postgres_url.is_none() {
        bail!("PostgreSQL needs --postgres-url or SYNC_TEST_POSTGRES_URL");
    }
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("sync-server-under-test"),
    };
    if !server_bin.exists() {
        bail!(
            "no server binary at {} (cargo build -p sync-tests --bin sync-server-under-test, or --server-bin)",
            server_bin.display()
        );
    }
    let mut passed = true;
    for backend in backends {
        passed &= soak(&args, backend, &server_bin).await?;
    }
    Ok(passed)
}

/// One backend's soak; `Ok(false)` when a check failed.
async fn soak(args: &Args, backend: Backend, server_bin: &Path) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new().prefix("sync-soak-").tempdir()?;
    let events = Arc::new(Events::default());
    let receiver = webhook::start(Arc::clone(&events)).await?;
    let config = dir.path().join("server.toml");
    // Fast outbox polling and short leases, so that events of a killed instance's deliveries
    // arrive within the run; retries for as long as a run's faults can last.
    let schedule = std::iter::once("0".to_owned()).chain(std::iter::repeat_n("1".to_owned(), 200)).collect::<Vec<_>>();
    std::fs::write(
        &config,
        format!(
            "[outbox]\nlease_secs = 3\npoll_interval_ms = 200\n\n[[webhook]]\nname = \"soak\"\n\
             url = \"http://{receiver}/events\"\nsecrets = [\"{}\"]\nbatch = 50\ntimeout_secs = 5\n\
             schedule_secs = [{}]\n",
            webhook::SECRET,
            schedule.join(", ")
        ),
    )?;
    let (db_url, pg, instances) = match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.path().join("sync.db").display()), None, 1),
        Backend::Postgres => {
            let pg = PgDatabase::create(args.postgres_url.as_deref().expect("checked")).await?;
            (pg.url.clone(), Some(pg), args.instances.max(1))
        }
    };
    let result = run(args, backend, server_bin, dir.path(), &db_url, pg.as_ref(), instances, &events).await;
    if let Some(pg) = &pg
        && let Err(e) = pg.drop_database().await
    {
        eprintln!("soak: could not drop database {}: {e:#}", pg.name);
    }
    match result {
        Ok(true) => Ok(true),
        other => {
            let kept = dir.keep();
            eprintln!("soak: the servers' logs are kept in {}", kept.display());
            other
        }
    }
}

/// Counts at the start of a backend's run, so that a second backend reports its own.
struct Start {
    retries: u64,
    sent_again: u64,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &Args,
    backend: Backend,
    server_bin: &Path,
    dir: &Path,
    db_url: &str,
    pg: Option<&PgDatabase>,
    instances: usize,
    events: &Events,
) -> anyhow::Result<bool> {
    let start = Start {
        retries: TRANSPORT_RETRIES.load(Ordering::Relaxed),
        sent_again: PUSHES_SENT_AGAIN.load(Ordering::Relaxed),
    };
    let cluster = Arc::new(Cluster::start(server_bin, db_url, &dir.join("server.toml"), instances, dir).await?);
    let result = drive(args, backend, dir, &cluster, pg, events, &start).await;
    cluster.stop().await;
    result
}

async fn drive(
    args: &Args,
    backend: Backend,
    dir: &Path,
    cluster: &Arc<Cluster>,
    pg: Option<&PgDatabase>,
    events: &Events,
    start: &Start,
) -> anyhow::Result<bool> {
    let faults = Arc::new(Faults { rate: args.fault_rate, ..Faults::default() });
    faults.enabled.store(true, Ordering::Relaxed);
    let seed = args.seed.unwrap_or_else(rand::random);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut logs = Vec::new();
    for n in 0..args.devices.max(1) {
        let proxy = proxy::start(Arc::clone(cluster), Arc::clone(&faults)).await?;
        let mut device = Device::open(n, dir, &format!("http://{proxy}"), args.objects.max(1))?;
        logs.push(Arc::clone(&device.log));
        let stop = Arc::clone(&stop);
        let device_seed = seed.wrapping_add(n as u64);
        threads.push(std::thread::spawn(move || device.run(device_seed, &stop).map(|()| device)));
    }
    println!(
        "soak: {} with {} instance(s), {} devices, {} objects, faults for {:.0} s (seed {seed})",
        backend.name(),
        cluster.instances.len(),
        args.devices,
        args.objects,
        args.duration.as_secs_f64()
    );

    let terminated = Arc::new(AtomicU64::new(0));
    let (chaos_stop, chaos_stopped) = tokio::sync::watch::channel(false);
    let killer = tokio::spawn(kill_at_random(Arc::clone(cluster), args.kill_every, chaos_stopped.clone()));
    let terminator = pg.map(|pg| {
        let (url, name) = (pg.admin_url.clone(), pg.name.clone());
        let pg = PgDatabase { admin_url: url, name, url: String::new() };
        tokio::spawn(terminate_at_random(pg, args.terminate_every, Arc::clone(&terminated), chaos_stopped.clone()))
    });

    let began = Instant::now();
    while began.elapsed() < args.duration {
        let left = args.duration.saturating_sub(began.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        if began.elapsed() < args.duration {
            let (edits, acks) = totals(&logs);
            println!("  {:>5.0} s: {edits} edits, {acks} pushes acknowledged", began.elapsed().as_secs_f64());
        }
    }
    let fault_time = began.elapsed();

    // Faults stop: no more kills or terminations, every instance up, the proxies pass through.
    let _ = chaos_stop.send(true);
    killer.await?.context("killing and restarting instances")?;
    if let Some(terminator) = terminator {
        terminator.await?;
    }
    for n in 0..cluster.instances.len() {
        cluster.restart(n).await?;
    }
    faults.enabled.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut devices = Vec::new();
    for thread in threads {
        let device = tokio::task::spawn_blocking(move || thread.join()).await?;
        devices.push(device.map_err(|_| anyhow::anyhow!("a device panicked"))??);
    }

    // Quiet rounds: until every device synced, has nothing pending, and a whole round pushed
    // nothing, so every device pulled every push.
    let quiet = Instant::now();
    let devices = Arc::new(devices);
    let mut rounds = 0;
    let settled = loop {
        rounds += 1;
        let all = Arc::clone(&devices);
        let (settled, pending) = tokio::task::spawn_blocking(move || {
            let mut settled = true;
            let mut pending = 0;
            for device in all.iter() {
                let (ok, pushed) = device.sync();
                let left = device.pending()?;
                pending += left;
                settled &= ok && pushed == 0 && left == 0;
            }
            Ok::<_, anyhow::Error>((settled, pending))
        })
        .await??;
        if settled {
            break true;
        }
        // A server that breaks the protocol can keep devices from settling: that is a failure to
        // report with the checks, not a reason to run for ever.
        if rounds >= 30 || quiet.elapsed() > Duration::from_secs(180) {
            eprintln!("soak: the devices did not settle in {rounds} quiet rounds ({pending} objects still pending)");
            break false;
        }
    };
    let quiet_time = quiet.elapsed();

    let server = pull_everything(cluster.instances[0].port).await?;
    let device_objects = {
        let all = Arc::clone(&devices);
        tokio::task::spawn_blocking(move || all.iter().map(Device::objects).collect::<anyhow::Result<Vec<_>>>())
            .await??
    };
    let logs: Vec<device::Log> = logs.iter().map(|l| std::mem::take(&mut *l.lock().expect("device log"))).collect();

    // The outbox delivers after the commit: wait for the events of every acknowledged change.
    let expected = check::expected_event_nows(&logs);
    let waited = Instant::now();
    let patience = Duration::from_secs(if settled { 120 } else { 10 });
    while waited.elapsed() < patience {
        let have: std::collections::BTreeSet<i64> =
            events.by_id.lock().expect("events").values().map(|e| e.last_change).collect();
        if expected.is_subset(&have) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A second application would come after the first's events; give the outbox one more poll.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = events.by_id.lock().expect("events").clone();
    let outcome = check::check(&logs, &server, &device_objects, &received);

    let summary = Summary {
        backend,
        instances: cluster.instances.len(),
        devices: devices.len(),
        objects: args.objects,
        seed,
        fault_time,
        quiet_time,
        rounds,
        settled,
        logs: &logs,
        faults: &faults,
        kills: cluster.kills.load(Ordering::Relaxed),
        terminated: (backend == Backend::Postgres).then(|| terminated.load(Ordering::Relaxed)),
        retries: TRANSPORT_RETRIES.load(Ordering::Relaxed) - start.retries,
        sent_again: PUSHES_SENT_AGAIN.load(Ordering::Relaxed) - start.sent_again,
        events: received.len(),
        bad_signatures: events.bad_signatures.load(Ordering::Relaxed),
        server_objects: server.len(),
        outcome: &outcome,
    };
    summary.print();
    Ok(summary.passed())
}

fn totals(logs: &[Arc<Mutex<device::Log>>]) -> (usize, usize) {
    logs.iter().fold((0, 0), |(e, a), l| {
        let l = l.lock().expect("device log");
        (e + l.edits.len(), a + l.acks.len())
    })
}

/// Every object of the entity, pulled fresh from one instance (no proxy, no faults).
async fn pull_everything(port: u16) -> anyhow::Result<Vec<RemoteObject>> {
    tokio::task::spawn_blocking(move || {
        let transport = HttpTransport::new(format!("http://127.0.0.1:{port}"))?;
        let (mut objects, mut since) = (Vec::new(), Cursor::ZERO);
        loop {
            let page = transport.pull(device::PATH, since, Some(1000))?;
            objects.extend(page.updates);
            if !page.more {
                return Ok(objects);
            }
            since = page.now;
        }
    })
    .await?
}

/// A random wait with mean `mean` (exponential: faults come unannounced, sometimes close together).
fn random_wait(mean: Duration) -> Duration {
    let u: f64 = rand::rng().random_range(0.0..1.0);
    mean.mul_f64(-(1.0 - u).ln()).min(mean * 4)
}

async fn kill_at_random(
    cluster: Arc<Cluster>,
    mean: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if mean.is_zero() {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(random_wait(mean)) => {}
            _ = stopped.changed() => return Ok(()),
        }
        let n = rand::rng().random_range(0..cluster.instances.len());
        let down = Duration::from_millis(rand::rng().random_range(100..1500));
        cluster.kill_and_restart(n, down).await?;
    }
}

async fn terminate_at_random(
    pg: PgDatabase,
    mean: Duration,
    terminated: Arc<AtomicU64>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    if mean.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(random_wait(mean)) => {}
            _ = stopped.changed() => return,
        }
        let at_most = rand::rng().random_range(1..=8);
        match pg.terminate_backends(at_most).await {
            Ok(n) => {
                terminated.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => eprintln!("soak: terminating backends failed: {e:#}"),
        }
    }
}

struct Summary<'a> {
    backend: Backend,
    instances: usize,
    devices: usize,
    objects: usize,
    seed: u64,
    fault_time: Duration,
    quiet_time: Duration,
    rounds: usize,
    settled: bool,
    logs: &'a [device::Log],
    faults: &'a Faults,
    kills: u64,
    terminated: Option<u64>,
    retries: u64,
    sent_again: u64,
    events: usize,
    bad_signatures: u64,
    server_objects: usize,
    outcome: &'a check::Outcome,
}

impl Summary<'_> {
    fn print(&self) {
        let sum = |f: fn(&device::Log) -> u64| self.logs.iter().map(f).sum::<u64>();
        let edits = sum(|l| l.edits.len() as u64);
        let acks = sum(|l| l.acks.len() as u64);
        let replayed = sum(|l| l.acks.iter().filter(|a| a.replayed).count() as u64);
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let o = self.outcome;
        let terminated = self.terminated.map_or("n/a".to_owned(), |n| n.to_string());
        println!("soak summary ({})", self.backend.name());
        println!(
            "  duration            {:.1} s of faults, then {} quiet round(s) in {:.2} s{}",
            self.fault_time.as_secs_f64(),
            self.rounds,
            self.quiet_time.as_secs_f64(),
            if self.settled { "" } else { ", NOT SETTLED (objects still pending)" }
        );
        println!(
            "  setup               backend {}, instances {}, devices {}, objects {}, seed {}",
            self.backend.name(),
            self.instances,
            self.devices,
            self.objects,
            self.seed
        );
        println!(
            "  edits made          {edits} (field edits acknowledged {}, overwritten locally before a push {}, \
             removals merged with a remote one {})",
            o.acknowledged_edits, o.overwritten_locally, o.removals_merged
        );
        println!(
            "  pushes acknowledged {acks} ({replayed} replayed, {} refused as conflicting and merged again, \
             {} conflicts resolved)",
            sum(|l| l.conflicted_pushes),
            sum(|l| l.conflicts)
        );
        println!(
            "  pulls               {} pages; syncs {} completed, {} failed",
            sum(|l| l.pulls),
            sum(|l| l.syncs),
            sum(|l| l.failed_syncs)
        );
        println!(
            "  retries             {} by the transport, {} unacknowledged pushes sent again, {} pushes failed",
            self.retries,
            self.sent_again,
            sum(|l| l.failed_pushes)
        );
        println!(
            "  faults              delays {}, drops {}, mid-request cuts {}, mid-answer cuts {} ({} of pushes), \
             SIGKILLs {}, terminated PG backends {terminated}",
            count(&self.faults.delays),
            count(&self.faults.drops),
            count(&self.faults.cut_requests),
            count(&self.faults.cut_answers),
            count(&self.faults.cut_push_answers),
            self.kills
        );
        println!(
            "  final state         {} objects on the server; {} acknowledged writes superseded by later ones; \
             {} outbox events, {} bad signatures",
            self.server_objects, o.superseded, self.events, self.bad_signatures
        );
        println!(
            "  checks              converged: {}/{}, lost: {}, never pushed: {}, unexplained: {}, \
             applied twice: {}, events missing: {}, events mismatched: {}, duplicate now: {}",
            self.devices - o.diverged,
            self.devices,
            o.lost,
            o.never_pushed,
            o.unexplained,
            o.applied_twice,
            o.events_missing,
            o.events_mismatched,
            o.duplicate_now
        );
        for detail in &o.details {
            println!("    {detail}");
        }
        println!("  result              {}", if self.passed() { "PASS" } else { "FAIL" });
    }

    fn passed(&self) -> bool {
        self.settled && self.outcome.passed() && self.bad_signatures == 0
    }
}
