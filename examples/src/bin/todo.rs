//! `todo`: a command-line to-do list that works offline and syncs when asked.
//!
//! ```text
//! todo --db FILE --server URL [--token TOKEN] add TEXT | list | done ID | edit ID TEXT | rm ID
//!      | sync [--prefer local|remote] | watch [--prefer local|remote] | status
//! ```
//!
//! Each `--db` file is one device. Items are the entity `Todo` (fields `text` TEXT and `done`
//! BOOL) synced through `/todoChanges` on the server at `--server` (a base URL), so a persistence.js
//! app declaring the same entity shares them. Every command but `sync` and `watch` works offline;
//! `sync` exits with status 1 and a message when the server cannot be reached. `watch` keeps
//! syncing until interrupted: at once when another device pushes (long-poll) or an item is changed
//! here (by `todo` in another shell), printing one line per sync that changed something, and
//! retrying with backoff while the server is unreachable. `sync` shows its progress on a
//! terminal (objects and pages pulled; the protocol tells no total ahead); `status` prints the
//! sync status kept in the database: idle or offline, the last sync, the pending changes and
//! the last error.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sync_client::{
    Activity, ConflictHandler, Entity, FieldType, HttpTransport, LiveOptions, Order, PreferLocal, PreferRemote, Query,
    Resolution, RetryPolicy, Store, SyncReport, SyncStatus, Syncer,
};

#[derive(Parser)]
#[command(about = "A to-do list that works offline and syncs with a sync server")]
struct Cli {
    /// The local database file (one per device); created if missing.
    #[arg(long, env = "TODO_DB")]
    db: PathBuf,
    /// The server's base URL, e.g. http://127.0.0.1:8080 (needed by `sync` only).
    #[arg(long, env = "TODO_SERVER")]
    server: Option<String>,
    /// A bearer token for a server with authentication (better given as TODO_TOKEN, which
    /// stays out of the shell history and `ps`).
    #[arg(long, env = "TODO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Adds an item and prints its id.
    Add {
        /// What to do.
        text: String,
    },
    /// Prints every item as `ID<TAB>done|open<TAB>TEXT`, sorted by text.
    List,
    /// Marks an item done.
    Done {
        /// The item's id.
        id: String,
    },
    /// Changes an item's text.
    Edit {
        /// The item's id.
        id: String,
        /// The new text.
        text: String,
    },
    /// Removes an item.
    Rm {
        /// The item's id.
        id: String,
    },
    /// Syncs with the server.
    Sync {
        /// Which side wins when an item changed on both.
        #[arg(long, value_enum, default_value_t = Prefer::Remote)]
        prefer: Prefer,
    },
    /// Keeps syncing, on every change here or on the server, until interrupted.
    Watch {
        /// Which side wins when an item changed on both.
        #[arg(long, value_enum, default_value_t = Prefer::Remote)]
        prefer: Prefer,
    },
    /// Prints the sync status: idle or offline, the last sync, pending changes, the last error.
    Status,
}

#[derive(Clone, Copy, ValueEnum)]
enum Prefer {
    Local,
    Remote,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("todo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let todo = Entity::new("Todo").field("text", FieldType::Text).field("done", FieldType::Bool);
    let store = Store::open(&cli.db, [todo]).with_context(|| format!("cannot open {}", cli.db.display()))?;
    match cli.command {
        Command::Add { text } => println!("{}", store.insert("Todo", json!({"text": text, "done": false}))?),
        Command::List => {
            for item in store.query(&Query::new("Todo").order_by("text", Order::Asc))? {
                let state = if item.get_bool("done") == Some(true) { "done" } else { "open" };
                println!("{}\t{state}\t{}", item.id, item.get_str("text").unwrap_or_default());
            }
        }
        Command::Done { id } => store.update("Todo", &id, json!({"done": true}))?,
        Command::Edit { id, text } => store.update("Todo", &id, json!({"text": text}))?,
        Command::Rm { id } => store.remove("Todo", &id)?,
        Command::Sync { prefer } => {
            let syncer = Syncer::new(store, transport(cli.server, cli.token)?);
            let bar = progress_bar();
            let shown = bar.clone();
            syncer.on_status(move |status| show_progress(&shown, status));
            let outcome = syncer.sync_all(handler(prefer));
            bar.finish_and_clear();
            print_report(&outcome?);
        }
        Command::Watch { prefer } => {
            let syncer = Syncer::new(store, transport(cli.server, cli.token)?);
            println!("watching; Ctrl-C stops");
            syncer.sync_live(handler(prefer), LiveOptions::default(), |outcome| {
                match outcome {
                    Ok(report) if report.pulled() + report.pushed() + report.conflicts() > 0 => print_report(report),
                    Ok(_) => {}
                    Err(e) => eprintln!("todo: {e}; trying again"),
                }
                ControlFlow::Continue(())
            });
        }
        Command::Status => print_status(&store.sync_status()?),
    }
    Ok(())
}

/// A bar on stderr, drawn only when it is a terminal (so scripts read stdout as before).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Shows a sync's progress: objects and pages so far (no total: the server cannot tell one ahead).
fn show_progress(bar: &ProgressBar, status: &SyncStatus) {
    let Some(progress) = &status.progress else { return };
    let message = match status.activity {
        Activity::Pushing => format!("pushing {}: {} pushed", progress.entity, progress.pushed),
        _ => format!("pulling {}: {} objects, {} pages", progress.entity, progress.pulled, progress.pages),
    };
    bar.set_message(message);
}

fn print_status(status: &SyncStatus) {
    let activity = match status.activity {
        Activity::Offline => "offline",
        Activity::Pulling => "pulling",
        Activity::Pushing => "pushing",
        Activity::Idle => "idle",
    };
    println!("status: {activity}");
    println!("last sync: {}", status.last_synced.map_or_else(|| "never".to_owned(), utc));
    println!("pending changes: {}", status.pending_changes);
    match &status.last_error {
        Some(error) => println!("last error: {} ({})", error.message, utc(error.at)),
        None => println!("last error: none"),
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(at: SystemTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from(at).format(format).unwrap_or_default()
}

fn transport(server: Option<String>, token: Option<String>) -> anyhow::Result<HttpTransport> {
    let server = server.context("sync and watch need --server URL (or TODO_SERVER)")?;
    let mut transport = HttpTransport::builder(&server)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .retry(RetryPolicy { max_retries: 2, ..RetryPolicy::default() });
    if let Some(token) = token {
        // A fixed token cannot be refreshed: after a 401 the sync fails and says so.
        transport = transport.token_provider(move |_refresh| Ok(token.clone()));
    }
    Ok(transport.build()?)
}

fn handler(prefer: Prefer) -> &'static dyn ConflictHandler {
    match prefer {
        Prefer::Local => &PreferLocal,
        Prefer::Remote => &PreferRemote,
    }
}

fn print_report(report: &SyncReport) {
    println!("synced: pulled {}, pushed {}, conflicts {}", report.pulled(), report.pushed(), report.conflicts());
    for conflict in report.entities.iter().flat_map(|e| &e.conflicts) {
        let outcome = match conflict.resolution {
            Resolution::KeepLocal => "kept local",
            Resolution::TakeRemote => "took remote",
            Resolution::Merged(_) => "merged",
        };
        println!("conflict on {} ({}): {outcome}", conflict.id, conflict.fields.join(", "));
    }
}
