//! The `sync-server` binary: flags and environment over the configuration file, then the library.

use std::path::PathBuf;

use clap::Parser;
use sync_server::Config;
use sync_server::telemetry::{self, LogFormat};

/// A persistence.js-compatible sync server.
#[derive(Debug, Parser)]
#[command(name = "sync-server", version, about)]
struct Args {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "SYNC_BIND")]
    bind: Option<String>,
    /// Store: a path or sqlite://PATH for SQLite, postgres://... for PostgreSQL [default: ./sync.db]
    #[arg(long, env = "SYNC_DB")]
    db: Option<String>,
    /// TOML configuration file (flags and environment variables override it)
    #[arg(long, env = "SYNC_CONFIG")]
    config: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "SYNC_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if let Some(db) = args.db {
        config.db = db;
    }
    actix_web::rt::System::new().block_on(sync_server::run(config))
}
