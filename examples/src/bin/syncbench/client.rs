//! C1 and C2: the Rust client. C1 is a first sync of 100,000 objects into an empty local store,
//! beside the same pages pulled and parsed by the client's transport without being applied, and
//! the same rows inserted by plain rusqlite; C2 is local writes with change tracking against
//! plain rusqlite inserts. Every figure of a run is measured against a baseline of the same run.

use std::time::{Duration, Instant};

use anyhow::ensure;
use rusqlite::params;
use serde_json::json;
use sync_client::transport::Transport;
use sync_client::{Cursor, Entity, FieldType, HttpTransport, PreferRemote, Store, SyncOptions, Syncer};

use crate::data::push_body;
use crate::stats::{median, ms, per_sec, rate};
use crate::workloads::Bench;

/// Objects in C1's first sync.
const FIRST_SYNC: usize = 100_000;
/// Local writes in C2.
const LOCAL_WRITES: usize = 10_000;

/// The benchmark's objects as a client declares them (see `data::push_body`).
fn entity(name: &str) -> Entity {
    Entity::new(name)
        .field("title", FieldType::Text)
        .field("done", FieldType::Bool)
        .field("priority", FieldType::Int)
        .field("due", FieldType::Int)
}

/// The rusqlite baseline: `rows` (id, title, priority, due; never done) inserted in one
/// transaction into a new file at `path`, in a table of the client's shape; returns how long
/// the inserts and the commit took.
fn plain_inserts(
    path: &std::path::Path,
    rows: impl Iterator<Item = (String, String, i64, i64)>,
) -> anyhow::Result<Duration> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE t (id TEXT PRIMARY KEY NOT NULL, title TEXT, done INTEGER, priority INTEGER, due INTEGER)
             WITHOUT ROWID;",
    )?;
    let started = Instant::now();
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (id, title, priority, due) in rows {
            insert.execute(params![id, title, false, priority, due])?;
        }
    }
    tx.commit()?;
    Ok(started.elapsed())
}

impl Bench {
    /// C1 and C2.
    pub async fn client(&self) -> anyhow::Result<()> {
        let (scope, path) = self.entity("C1");
        for start in (0..FIRST_SYNC).step_by(10_000) {
            self.direct_push(&scope, &push_body(start, 10_000, 0)).await?;
        }
        let (name, base_url, runs) = (scope.entity_name().to_string(), self.server.base_url.clone(), self.runs);
        tokio::task::spawn_blocking(move || first_sync(&name, &path, &base_url, runs)).await??;
        tokio::task::spawn_blocking(move || local_writes(runs)).await??;
        Ok(())
    }
}

fn first_sync(name: &str, path: &str, base_url: &str, runs: usize) -> anyhow::Result<()> {
    let (mut synced, mut pulled, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let page_size = SyncOptions::default().page_size;
    for run in 0..runs {
        let dir = tempfile::tempdir()?;

        let transport = HttpTransport::new(base_url)?;
        let started = Instant::now();
        let (mut since, mut objects) = (Cursor::from_millis(0), 0);
        loop {
            let page = transport.pull(path, since, page_size)?;
            objects += page.updates.len();
            since = page.now;
            if !page.more {
                break;
            }
        }
        pulled.push(started.elapsed());
        ensure!(objects == FIRST_SYNC, "C1 pulled {objects} objects, expected {FIRST_SYNC}");

        let store = Store::open(dir.path().join(format!("client{run}.db")), [entity(name).path(path)])?;
        let syncer = Syncer::new(store.clone(), HttpTransport::new(base_url)?);
        let started = Instant::now();
        let report = syncer.sync_all(&PreferRemote)?;
        synced.push(started.elapsed());
        ensure!(report.pulled() == FIRST_SYNC, "C1 synced {} objects, expected {FIRST_SYNC}", report.pulled());
        let count = store.query(&sync_client::Query::new(name))?.len();
        ensure!(count == FIRST_SYNC, "C1 left {count} objects in the local store");

        let rows = (0..FIRST_SYNC).map(|i| {
            let id = format!("{:032X}", i as u128 * 0x9E37_79B9_7F4A_7C15);
            (id, format!("Write the quarterly report, part {i}"), (i % 5) as i64, 1_790_000_000 + i as i64)
        });
        plain.push(plain_inserts(&dir.path().join(format!("plain{run}.db")), rows)?);
    }
    let (synced, pulled, plain) = (median(&synced), median(&pulled), median(&plain));
    line(&format!("C1 first sync of {FIRST_SYNC} into an empty client store"), FIRST_SYNC, synced, None);
    line("C1 the same pages pulled and parsed, not applied", FIRST_SYNC, pulled, Some(("sync/pull", synced)));
    line("C1 the same rows by plain rusqlite, one transaction", FIRST_SYNC, plain, Some(("sync/rusqlite", synced)));
    Ok(())
}

fn local_writes(runs: usize) -> anyhow::Result<()> {
    let (mut tracked, mut plain): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("client.db"), [entity("Task")])?;
        let started = Instant::now();
        store.transaction(|tx| {
            for i in 0..LOCAL_WRITES {
                tx.insert("Task", json!({"title": format!("part {i}"), "done": false, "priority": 3, "due": i}))?;
            }
            Ok::<_, sync_client::StoreError>(())
        })?;
        tracked.push(started.elapsed());
        ensure!(store.pending_changes("Task")? == LOCAL_WRITES, "C2 tracked fewer writes than it made");

        let rows = (0..LOCAL_WRITES).map(|i| (sync_client::new_id(), format!("part {i}"), 3, i as i64));
        plain.push(plain_inserts(&dir.path().join(format!("plain{run}.db")), rows)?);
    }
    let (tracked, plain) = (median(&tracked), median(&plain));
    line(
        &format!("C2 {LOCAL_WRITES} local inserts with change tracking, one transaction"),
        LOCAL_WRITES,
        tracked,
        None,
    );
    line("C2 the same by plain rusqlite, one transaction", LOCAL_WRITES, plain, Some(("tracked/plain", tracked)));
    Ok(())
}

/// Prints one figure: `objects` in `took`, and with a baseline, `label` and how long the measured
/// work took against it (the baseline's time over the measured one's).
fn line(name: &str, objects: usize, took: Duration, against: Option<(&str, Duration)>) {
    let ratio = against.map_or(String::new(), |(label, measured)| {
        format!("   {label} {:.2}", took.as_secs_f64() / measured.as_secs_f64().max(1e-9))
    });
    println!("{name:<70} {:>16} ({}){ratio}", per_sec(rate(objects, took)), ms(took));
}
