//! The `sync-server` binary: flags and environment over the configuration file, then the library;
//! `sync-server hash-password` prints the Argon2id hash of a password read from standard input.

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
    /// Directory of web app files to serve at paths no entity takes [default: none, off]
    #[arg(long, env = "SYNC_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "SYNC_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads a password from standard input (its first line) and prints its Argon2id hash, for
    /// the password_hash of an [[auth.basic]] user.
    HashPassword,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        println!("{}", sync_server::auth::basic::hash_password(password).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
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
    if let Some(dir) = args.static_dir {
        config.static_dir = Some(dir);
    }
    actix_web::rt::System::new().block_on(sync_server::run(config))
}
