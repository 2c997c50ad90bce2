//! `tasks`: a small app loop on `sync-client`: a typed entity, a subscription printing what
//! changed, live sync, and a status line. Usage: `tasks [SERVER_URL] [DB_FILE]` (defaults:
//! `http://127.0.0.1:8080`, `tasks.db`); Ctrl-C stops it.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sync_client::{
    Activity, FieldType, HttpTransport, LiveOptions, PreferRemote, Store, SyncStatus, Syncer, TypedEntity,
};

/// The app's own struct; `Task::entity()` declares it, and opening the store checks that each
/// field fits its declared type.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    title: String,
    done: bool,
    /// Whole seconds since the epoch (`DATE`); `None` is `null`.
    due: Option<i64>,
    tags: Vec<String>,
}

impl TypedEntity for Task {
    const NAME: &'static str = "Task";
    const FIELDS: &'static [(&'static str, FieldType)] =
        &[("title", FieldType::Text), ("done", FieldType::Bool), ("due", FieldType::Date), ("tags", FieldType::Json)];
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let db = args.next().unwrap_or_else(|| "tasks.db".into());

    let store = Store::open(&db, [Task::entity()])?;
    let tasks = store.typed::<Task>()?;
    if tasks.all()?.is_empty() {
        let task = Task { title: "try sync-client".into(), done: false, due: None, tags: vec!["rust".into()] };
        println!("added {}", tasks.insert(&task)?);
    }

    // Told after each local write and once per sync that changed the open tasks, with the ids;
    // the callback runs with the store's lock released, so it may read the store.
    let _open = store.subscribe(Task::query().filter("done", false), |change| {
        println!("{} open task(s) changed ({:?}):", change.ids.len(), change.cause);
        for task in change.typed::<Task>().unwrap_or_default() {
            println!("  {}  {}  {:?}", task.id, task.value.title, task.value.tags);
        }
    })?;

    let syncer = Syncer::new(store.clone(), HttpTransport::new(&server)?);
    syncer.on_status(|status| eprintln!("{}", status_line(status)));
    syncer.sync_live(&PreferRemote, LiveOptions::default(), |outcome| {
        if let Err(e) = outcome {
            eprintln!("sync failed, retrying: {e}");
        }
        ControlFlow::Continue(())
    });
    Ok(())
}

/// One line for a status bar.
fn status_line(status: &SyncStatus) -> String {
    let pending = status.pending_changes;
    match (&status.activity, &status.progress) {
        (Activity::Pulling, Some(p)) => format!("pulling {}: {} objects, {} pages", p.entity, p.pulled, p.pages),
        (Activity::Pushing, Some(p)) => format!("pushing {}: {} pushed", p.entity, p.pushed),
        (Activity::Offline, _) => format!("offline, {pending} change(s) waiting"),
        _ => format!("synced, {pending} change(s) waiting"),
    }
}
