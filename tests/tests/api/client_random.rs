//! Randomized multi-device sync against the real server: random inserts, edits, removals and
//! syncs on three devices (random page sizes, push batches and conflict handlers), checked after
//! every sync and at the end.
//!
//! Every value written is unique, so a value on the server says which edit it came from. The
//! test is sequential, so whatever changes on the server during one device's sync was caused by
//! that device. After each sync of device D it checks:
//! - every edit and removal D made since its last sync is on the server, unless the sync reports
//!   a conflict on that field or removal: then the server holds what D's handler chose (the
//!   report says which resolution), and D's edits of the other fields of that object are there
//!   too;
//! - every change on the server during the sync is one of those edits or removals, or what a
//!   handler chose: nothing the device did not write is pushed (no stale value overwrites
//!   another device's edit).
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
    Conflict, ConflictKind, Entity, FieldType, Fields, PreferLocal, PreferRemote, Query, Resolution, ResolvedConflict,
    SyncOptions,
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
            // An update that sets no field changes nothing: a removal on the server wins.
            if !values.is_empty() {
                let entry = unsynced[d].entry(id).or_insert_with(|| Unsynced::Fields(BTreeMap::new()));
                match entry {
                    Unsynced::Fields(known) => known.extend(values),
                    Unsynced::Removed => unreachable!("a removed object is not live"),
                }
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
            let resolved = &report.entities[0].conflicts;
            syncs += 1;
            conflicts += resolved.len();
            let at = format!("seed {seed}, op {op}, device {}", device.name);
            check_sync(&at, &unsynced[d], resolved, &before, &after);
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

/// The checks after one sync of a device (`at` names it) that had made the `unsynced` changes
/// and met the `resolved` conflicts; see the module docs.
fn check_sync(
    at: &str,
    unsynced: &BTreeMap<String, Unsynced>,
    resolved: &[ResolvedConflict],
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
) {
    let conflicts: BTreeMap<&str, &ResolvedConflict> = resolved.iter().map(|c| (c.id.as_str(), c)).collect();
    for (id, change) in unsynced {
        let conflict = conflicts.get(id.as_str());
        match (change, conflict.map(|c| c.kind)) {
            (Unsynced::Removed, None) => assert!(!after.contains_key(id), "{at}: the removal of {id} was lost"),
            (Unsynced::Fields(values), None | Some(ConflictKind::Fields)) => {
                let Some(object) = after.get(id) else { panic!("{at}: {id} with unsynced edits is not on the server") };
                let contested = conflict.map(|c| c.fields.as_slice()).unwrap_or_default();
                for (field, value) in values.iter().filter(|(f, _)| !contested.contains(f)) {
                    assert_eq!(&object[field], value, "{at}: the edit of {id}.{field} was lost");
                }
            }
            // A removal conflict: what the handler chose, checked below.
            _ => {}
        }
    }
    for conflict in resolved {
        let id = conflict.id.as_str();
        let edits = match unsynced.get(id) {
            Some(Unsynced::Fields(values)) => values.clone(),
            _ => BTreeMap::new(),
        };
        check_resolution(at, conflict, &edits, before.get(id), after.get(id));
    }

    let ids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for id in ids {
        let mine = unsynced.get(id);
        let conflict = conflicts.get(id.as_str());
        match (before.get(id), after.get(id)) {
            (Some(_), None) => {
                assert!(mine == Some(&Unsynced::Removed) || conflict.is_some(), "{at}: {id} was removed by nobody")
            }
            (None, Some(object)) => {
                if conflict.is_some() {
                    continue;
                }
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
                    let merged = conflict.is_some_and(|c| match &c.resolution {
                        Resolution::Merged(fields) => fields.contains_key(field),
                        _ => false,
                    });
                    assert!(
                        written == Some(&new[field]) || merged,
                        "{at}: {id}.{field} was overwritten with a value not written here"
                    );
                }
            }
            (None, None) => {}
        }
    }
}

/// Checks that the server holds what the resolution of `conflict` makes of the object, given
/// the device's unsynced `edits` of it and the server's object `before` and `after` the sync: the
/// chosen side's values of the contested fields, or its removal, or its live object, and the
/// handler's values where it merged.
fn check_resolution(
    at: &str,
    conflict: &ResolvedConflict,
    edits: &BTreeMap<String, Value>,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    let id = &conflict.id;
    let merged = match &conflict.resolution {
        Resolution::Merged(fields) => Some(fields),
        _ => None,
    };
    let removed = matches!(
        (conflict.kind, &conflict.resolution),
        (ConflictKind::LocalRemoved, Resolution::KeepLocal) | (ConflictKind::RemoteRemoved, Resolution::TakeRemote)
    );
    if removed {
        assert!(after.is_none(), "{at}: {id} should be removed, as the handler chose");
        return;
    }
    let Some(object) = after else { panic!("{at}: {id} should be live, as the handler chose") };
    for field in FIELDS {
        // The value the resolution gives `field`, where this side of the sync knows it.
        let expected = match (conflict.kind, &conflict.resolution) {
            _ if merged.is_some_and(|m| m.contains_key(field)) => merged.map(|m| m[field].clone()),
            // The contested fields: the chosen side's value (the server's is the one before).
            (ConflictKind::Fields, Resolution::KeepLocal) => edits.get(field).cloned(),
            (ConflictKind::Fields, Resolution::TakeRemote) if conflict.fields.iter().any(|f| f == field) => {
                before.map(|b| b[field].clone())
            }
            // Against a local removal the live side is the server's object; against a remote
            // removal, the device's object, whose edits are known.
            (ConflictKind::LocalRemoved, _) => before.map(|b| b[field].clone()),
            (ConflictKind::RemoteRemoved, _) => edits.get(field).cloned(),
            // Uncontested fields: checked with the device's edits above.
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(object[field], expected, "{at}: {id}.{field} is not what the handler chose");
        }
    }
}

backend_tests!(multi_thread: random_edits_removals_and_sync_orders_converge_without_losing_edits);
