//! `syncbench`: measures the sync server through HTTP and, in the same run, the same work through
//! the `Store` directly (no HTTP), so that every HTTP figure is also a ratio of its limit.
//!
//! It starts its own server (this program re-run as `syncbench serve`, so the server's memory is
//! measured alone) on an ephemeral port over a fresh store, or targets `--url`.
//!
//! ```text
//! cargo run --release -p examples --bin syncbench                       # SQLite in a temp dir
//! cargo run --release -p examples --bin syncbench -- --db postgres://postgres@127.0.0.1/bench
//! cargo run --release -p examples --bin syncbench -- --only W1,W2 --runs 9
//! cargo run --release -p examples --bin syncbench -- --db postgres://postgres@127.0.0.1/bench --only W6
//! cargo run --release -p examples --bin syncbench -- --only W7           # the outbox's cost and lag
//! cargo run --release -p examples --bin syncbench -- --only W9           # long-poll wake-ups, memory
//! cargo run --release -p examples --bin syncbench -- --only C1           # the client: first sync, local writes
//! cargo run --release -p examples --bin syncbench -- --only W10          # delta pulls at 32 connections
//! ```

mod client;
mod data;
mod live;
mod outbox;
mod server;
mod stats;
mod workloads;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sync_server::config::{Config, DbUrl};
use sync_server::store::outbox::{Route, Routes};

/// Benchmarks of the sync server: pushes, pulls, deltas, concurrency, a large pull.
#[derive(Debug, Parser)]
#[command(name = "syncbench")]
struct Args {
    /// The store: `sqlite` (a fresh file in a temp dir), `sqlite://PATH`, or `postgres://...`
    /// (entities get a fresh random prefix, so any database will do).
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// Benchmark a server that is already running at this base URL instead of starting one
    /// (`--db` must then name the same store, for the direct-store figures).
    #[arg(long)]
    url: Option<String>,
    /// Repetitions of each workload; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only these workloads (`W1,W3`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Objects stored for W5.
    #[arg(long, default_value_t = 1_000_000)]
    w5_objects: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (used by the benchmark itself, so the server runs in its own process).
    Serve {
        /// Store URL.
        #[arg(long)]
        db: String,
        /// Address.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        /// A configuration file (its db and bind are replaced by the flags).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Serve { db, bind, config }) = args.command {
        sync_server::telemetry::init(sync_server::telemetry::LogFormat::Json);
        let file = config.map(|path| Config::from_file(&path)).transpose()?.unwrap_or_default();
        let config = Config { db, bind, ..file };
        return actix_web::rt::System::new().block_on(sync_server::run(config));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let db = if args.db == "sqlite" { format!("sqlite://{}", temp.path().join("bench.db").display()) } else { args.db };
    let db_url = DbUrl::parse(&db)?;
    let config = Config { db: db.clone(), ..Config::default() };
    let store =
        sync_server::startup::open_store(&db_url, &config, Default::default()).await.context("opening the store")?;

    let server = match &args.url {
        Some(url) => server::Server::external(url.clone()),
        None => server::Server::spawn(&db).await?,
    };
    let selected = |w: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(w));
    let bench = workloads::Bench::new(server, store, args.runs.max(1));
    println!("store: {}   runs: {}   machine: {}", describe(&db_url), bench.runs, machine());
    println!();
    if selected("W1") || selected("W2") {
        bench.w1_w2().await?;
    }
    if selected("W3") {
        bench.w3().await?;
    }
    if selected("W4") {
        bench.w4().await?;
    }
    if selected("W5") {
        bench.w5(args.w5_objects).await?;
    }
    if selected("W6") {
        // A second server, with authentication, so that every writer has a partition of its own.
        let secret = format!("bench-{:032x}", rand::random::<u128>());
        let config = temp.path().join("auth.toml");
        std::fs::write(&config, format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{secret}\"\n"))?;
        let with_auth = server::Server::spawn_with(&db, &["--config", &config.display().to_string()]).await?;
        bench.w6(&with_auth, &secret).await?;
        with_auth.stop();
    }
    if selected("W10") {
        bench.w10().await?;
    }
    if selected("W8") {
        bench.w8().await?;
    }
    if selected("W9") {
        // A second instance over the same store: another process on the SQLite file.
        let second = server::Server::spawn(&db).await?;
        live::w9(&bench.server, &second, &bench.tag(), bench.runs).await?;
        second.stop();
    }
    if selected("C1") || selected("C2") {
        bench.client().await?;
    }
    if selected("W7") {
        // Servers with a webhook subscription, beside the plain one, over the same store.
        let receiver = outbox::Receiver::start()?;
        let mut servers = Vec::new();
        for batch in [1, 100] {
            let config = temp.path().join(format!("outbox-{batch}.toml"));
            std::fs::write(&config, receiver.config(batch))?;
            servers.push(server::Server::spawn_with(&db, &["--config", &config.display().to_string()]).await?);
        }
        let (tag, store) = (bench.tag(), bench.store());
        outbox::w7(&bench.server, &servers[0], &servers[1], &receiver, &store, &tag, bench.runs).await?;
        // Stopped first: their workers would otherwise still be delivering (and writing to the
        // same file) while the direct figures are taken.
        for server in servers {
            server.stop_and_wait().await;
        }
        // Pairs of stores opened alike, one with a subscription nobody delivers: what appending
        // costs a push alone. On SQLite each has a fresh file: two writers on one file slow each
        // other down (each commit of one empties the other's page cache).
        let routes = Routes::new(vec![Route { subscription: format!("direct{tag}"), entities: vec![] }]);
        let open = async |routed: bool, run: usize| {
            let url = match &db_url {
                DbUrl::Sqlite(_) => DbUrl::Sqlite(temp.path().join(format!("w7-{run}-{routed}.db"))),
                DbUrl::Postgres(_) => db_url.clone(),
            };
            let routes = if routed { routes.clone() } else { Routes::default() };
            anyhow::Ok(sync_server::startup::open_store(&url, &config, routes).await?)
        };
        outbox::w7_direct(open, &tag, bench.runs).await?;
    }
    bench.server.stop();
    Ok(())
}

fn describe(db: &DbUrl) -> String {
    match db {
        DbUrl::Sqlite(path) => format!("SQLite ({})", PathBuf::from(path).display()),
        DbUrl::Postgres(_) => "PostgreSQL".into(),
    }
}

/// The CPU model and core count, so figures are read with their machine.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()))
}
