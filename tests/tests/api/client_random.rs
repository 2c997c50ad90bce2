//! Randomized multi-device sync against the real server: random inserts, edits, removals and
//! syncs on three devices (random page sizes, push batches and conflict handlers), checked after
//! every sync and at the end.
//!
//! Every value written is unique, so a value on the server says which edit it came from. The
//! test is sequential, so whatever changes on the server during one device's sync was caused by
//! that device. After each sync of device D it checks:
//! - every edit and removal D made since its last sync is on the server, unless the sync reports
//!   a conflict on that object (then D's handler decided);
//! - every change on the server during the sync is one of those edits or removals, or concerns
//!   an object in conflict: nothing the device did not write is pushed (no stale value
//!   overwrites another device's edit).
//!
//! At the end every device syncs twice and must equal the server, with nothing left to push.
//!
//! The seed is printed; set `SYNC_RANDOM_SEED` to replay a run, `SYNC_RANDOM_OPS` for its length.

use std::collections::{BTreeMap, BTreeSet};

use crate::client_support::{Device, fast_transport, project, server_objects};
use crate::helpers::{Backend, TestServer, backend_tests};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sync_client::{
    Conflict, ConflictKind, Entity, FieldType, Fields, PreferLocal, PreferRemote, Query, Resolution, SyncOptions,
};

const PATH: &str = "/noteChanges";
const FIELDS: [&str; 3] = ["title", "body", "rank"];

fn note() -> Entity {
    Entity::new("Note").field("title", FieldType::Text).field("body", FieldType::Text).field("rank", FieldType::Int)
}

/// What a device changed since its last sync, per object.
#[derive(Debug, Clone, PartialEq)]
enum Unsynced {
    /// These fields were set to these values.
    Fields(BTreeMap<String, Value>),
    /// The object was removed.
    Removed,
}

/// A handler that varies with the object: keeps local, takes remote, or writes a merged title.
fn mixed_handler(conflict: &Conflict) -> Resolution {
    let pick = conflict.id.bytes().map(usize::from).sum::<usize>() % 3;
    match (pick, conflict.kind) {
        (0, _) => Resolution::KeepLocal,
        (1, ConflictKind::Fields) if conflict.fields.iter().any(|f| f == "title") => {
            let mut merged = Fields::new();
            let title = |side: &Option<Fields>| side.as_ref().and_then(|f| f["title"].as_str().map(str::to_owned));
            let both = format!(
                "{}|{}",
                title(&conflict.local).unwrap_or_default(),
                title(&conflict.remote).unwrap_or_default()
            );
            merged.insert("title".into(), json!(both));
            Resolution::Merged(merged)
        }
        _ => Resolution::TakeRemote,
    }
}

#[derive(Clone, Copy)]
enum Handler {
    Local,
    Remote,
    Mixed,
}

async fn sync(device: &Device, handler: Handler) -> sync_client::SyncReport {
    match handler {
        Handler::Local => device.sync(PreferLocal).await,
        Handler::Remote => device.sync(PreferRemote).await,
        Handler::Mixed => device.sync(mixed_handler as fn(&Conflict) -> Resolution).await,
    }
}

fn seed() -> u64 {
    std::env::var("SYNC_RANDOM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

async fn random_edits_removals_and_sync_orders_converge_without_losing_edits(backend: Backend) {
    let seed = seed();
    let ops: usize = std::env::var("SYNC_RANDOM_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    println!("seed = {seed} (replay with SYNC_RANDOM_SEED={seed}), {ops} operations");
    let mut rng = StdRng::seed_from_u64(seed);

    let server = TestServer::start_on(backend).await;
    let devices: Vec<Device> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let options = SyncOptions {
                page_size: [None, Some(1), Some(2), Some(7)][rng.random_range(0..4)],
                push_batch: [1, 3, 500][rng.random_range(0..3)],
                idempotency: rng.random_bool(0.8),
            };
            println!("device {name}: {options:?}");
            Device::with(name, [note()], fast_transport(&server.endpoint(), 0), options)
        })
        .collect();
    let mut unsynced: Vec<BTreeMap<String, Unsynced>> = vec![BTreeMap::new(); devices.len()];
    let (mut syncs, mut conflicts) = (0, 0);

    for op in 0..ops {
        let d = rng.random_range(0..devices.len());
        let device = &devices[d];
        let live: Vec<String> =
            device.store.query(&Query::new("Note")).expect("query").into_iter().map(|r| r.id).collect();
        let roll = rng.random_range(0..100);
        if roll < 15 || live.is_empty() && roll < 70 {
            let id = format!("{}{op}", device.name);
            let values: BTreeMap<String, Value> = [
                ("title".to_owned(), json!(format!("t{op}"))),
                ("body".to_owned(), json!(format!("b{op}"))),
                ("rank".to_owned(), json!(op)),
            ]
            .into();
            device.store.insert_with_id("Note", &id, json!(values)).expect("insert");
            unsynced[d].insert(id, Unsynced::Fields(values));
        } else if roll < 60 && !live.is_empty() {
            let id = live[rng.random_range(0..live.len())].clone();
            let mut values = BTreeMap::new();
            for field in FIELDS {
                if rng.random_bool(0.5) {
                    let value =
                        if field == "rank" { json!(op) } else { json!(format!("{field}-{}-{op}", device.name)) };
                    values.insert(field.to_owned(), value);
                }
            }
            device.store.update("Note", &id, json!(values)).expect("update");
            let entry = unsynced[d].entry(id).or_insert_with(|| Unsynced::Fields(BTreeMap::new()));
            match entry {
                Unsynced::Fields(known) => known.extend(values),
                Unsynced::Removed => unreachable!("a removed object is not live"),
            }
        } else if roll < 70 && !live.is_empty() {
            let id = live[rng.random_range(0..live.len())].clone();
            device.store.remove("Note", &id).expect("remove");
            unsynced[d].insert(id, Unsynced::Removed);
        } else {
            let handler = [Handler::Local, Handler::Remote, Handler::Mixed][rng.random_range(0..3)];
            let before = server_objects(&server.endpoint(), PATH).await;
            let report = sync(device, handler).await;
            let after = server_objects(&server.endpoint(), PATH).await;
            let in_conflict: BTreeSet<String> = report.entities[0].conflicts.iter().map(|c| c.id.clone()).collect();
            syncs += 1;
            conflicts += in_conflict.len();
            check_sync(seed, op, device, &unsynced[d], &in_conflict, &before, &after);
            unsynced[d].clear();
        }
    }

    for _round in 0..2 {
        for device in &devices {
            device.sync(PreferRemote).await;
        }
    }
    let on_server = project(&server_objects(&server.endpoint(), PATH).await, &FIELDS);
    for device in &devices {
        assert_eq!(device.all("Note"), on_server, "seed {seed}: device {} differs from the server", device.name);
        assert_eq!(device.store.pending_changes("Note").unwrap(), 0, "seed {seed}: {} has changes left", device.name);
    }
    println!("{syncs} syncs, {conflicts} conflicts, {} objects at the end", on_server.len());
    assert!(syncs > 0);
    server.stop().await;
}

/// The checks after one sync of `device`; see the module docs.
fn check_sync(
    seed: u64,
    op: usize,
    device: &Device,
    unsynced: &BTreeMap<String, Unsynced>,
    in_conflict: &BTreeSet<String>,
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
) {
    let at = format!("seed {seed}, op {op}, device {}", device.name);
    for (id, change) in unsynced.iter().filter(|(id, _)| !in_conflict.contains(*id)) {
        match change {
            Unsynced::Removed => assert!(!after.contains_key(id), "{at}: the removal of {id} was lost"),
            Unsynced::Fields(values) => {
                let Some(object) = after.get(id) else { panic!("{at}: {id} with unsynced edits is not on the server") };
                for (field, value) in values {
                    assert_eq!(&object[field], value, "{at}: the edit of {id}.{field} was lost");
                }
            }
        }
    }
    let ids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for id in ids.into_iter().filter(|id| !in_conflict.contains(*id)) {
        let mine = unsynced.get(id);
        match (before.get(id), after.get(id)) {
            (Some(_), None) => assert_eq!(mine, Some(&Unsynced::Removed), "{at}: {id} was removed by nobody"),
            (None, Some(object)) => {
                let Some(Unsynced::Fields(values)) = mine else { panic!("{at}: {id} appeared from nowhere") };
                for field in FIELDS {
                    assert_eq!(Some(&object[field]), values.get(field), "{at}: {id}.{field} was not written here");
                }
            }
            (Some(old), Some(new)) => {
                for field in FIELDS.into_iter().filter(|f| old[*f] != new[*f]) {
                    let written = match mine {
                        Some(Unsynced::Fields(values)) => values.get(field),
                        _ => None,
                    };
                    assert_eq!(
                        written,
                        Some(&new[field]),
                        "{at}: {id}.{field} was overwritten with a value not written here"
                    );
                }
            }
            (None, None) => {}
        }
    }
}

backend_tests!(multi_thread: random_edits_removals_and_sync_orders_converge_without_losing_edits);
