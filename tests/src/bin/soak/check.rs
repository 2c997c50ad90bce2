//! The checks at the end of a run, each exact rather than statistical:
//!
//! - **lost**: the server applies pushes in the order of their `now` (unique and increasing per
//!   entity), field by field, by the push rules of docs/PROTOCOL.md. Replaying every acknowledged
//!   push in that order gives the state the server must hold; every field where it differs is an
//!   acknowledged write lost (or one nobody acknowledged: "unexplained"). And with `PreferLocal`
//!   every field edit a device made is pushed unless the same device overwrote it (or removed the
//!   object) before pushing: one that was neither acknowledged nor overwritten is lost too.
//! - **applied twice**: every application writes outbox events carrying its `now`. Each `now`
//!   in the events must be the `now` of an acknowledged push; since every push is acknowledged by
//!   the end, another is a second application of a push whose first answer was lost. Each
//!   acknowledged push that changed something must have its events, and exactly its objects.
//! - **duplicate now**: no two pushes (two idempotency keys) were answered the same `now`.
//! - **converged**: every device holds exactly the server's live objects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};
use sync_client::{Record, RemoteObject};

use crate::device::{Ack, Edit, FIELDS, Log};
use crate::webhook::Received;

/// An object as the server holds it.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Live(Map<String, Value>),
    Removed,
}

/// What the checks found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Field edits acknowledged by the server (a value of the edit in an acknowledged push).
    pub acknowledged_edits: usize,
    /// Field edits overwritten on their own device before any push.
    pub overwritten_locally: usize,
    /// Acknowledged writes later overwritten by another acknowledged write.
    pub superseded: usize,
    /// Removals not pushed because the server's removal of the object came first.
    pub removals_merged: usize,
    /// Acknowledged writes the server does not hold.
    pub lost: usize,
    /// Field edits neither acknowledged nor overwritten locally.
    pub never_pushed: usize,
    /// Server state no acknowledged push explains.
    pub unexplained: usize,
    /// Applications (by their events) of no acknowledged `now`.
    pub applied_twice: usize,
    /// Acknowledged pushes that changed objects but have no events.
    pub events_missing: usize,
    /// Acknowledged pushes whose events name other objects than the push changed.
    pub events_mismatched: usize,
    /// `now` values answered to more than one push.
    pub duplicate_now: usize,
    /// Devices whose objects differ from the server's.
    pub diverged: usize,
    /// What went wrong, for the report.
    pub details: Vec<String>,
}

impl Outcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.lost
            + self.never_pushed
            + self.unexplained
            + self.applied_twice
            + self.events_missing
            + self.events_mismatched
            + self.duplicate_now
            + self.diverged
            == 0
    }

    fn fail(&mut self, detail: String) {
        if self.details.len() < 20 {
            self.details.push(detail);
        }
    }
}

/// The `now` of every acknowledged push that changed objects, so wrote outbox events.
pub fn expected_event_nows(logs: &[Log]) -> BTreeSet<i64> {
    replay(&applications(logs)).1.into_keys().collect()
}

/// One application per idempotency key, in `now` order.
pub fn applications(logs: &[Log]) -> Vec<&Ack> {
    let mut seen = HashSet::new();
    let mut acks: Vec<&Ack> = logs.iter().flat_map(|l| &l.acks).filter(|a| seen.insert(a.key.as_str())).collect();
    acks.sort_by_key(|a| a.now);
    acks
}

/// The state the server must hold after `acks` (in order), the objects each changed (by `now`),
/// and how many field writes a later write or a removal overwrote.
#[allow(clippy::type_complexity)]
fn replay(acks: &[&Ack]) -> (BTreeMap<String, State>, BTreeMap<i64, BTreeSet<String>>, usize) {
    let mut state: BTreeMap<String, State> = BTreeMap::new();
    let mut changed: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut superseded = 0;
    for ack in acks {
        for item in &ack.items {
            let Some(Value::String(id)) = item.get("id") else { continue };
            if item.get("_removed") == Some(&Value::Bool(true)) {
                // Removing what is not live changes nothing (no tombstone, no new timestamp).
                if let Some(State::Live(fields)) = state.get(id) {
                    superseded += fields.len();
                    state.insert(id.clone(), State::Removed);
                    changed.entry(ack.now).or_default().insert(id.clone());
                }
                continue;
            }
            let fields: Map<String, Value> =
                item.iter().filter(|(k, _)| !matches!(k.as_str(), "id" | "_lastChange")).map(clone).collect();
            match state.get_mut(id) {
                Some(State::Live(stored)) => {
                    superseded += fields.keys().filter(|f| stored.contains_key(*f)).count();
                    stored.extend(fields);
                }
                // A removed or unknown object is created from the fields sent.
                _ => {
                    state.insert(id.clone(), State::Live(fields));
                }
            }
            changed.entry(ack.now).or_default().insert(id.clone());
        }
    }
    (state, changed, superseded)
}

fn clone((k, v): (&String, &Value)) -> (String, Value) {
    (k.clone(), v.clone())
}

/// Runs every check.
pub fn check(
    logs: &[Log],
    server: &[RemoteObject],
    devices: &[Vec<Record>],
    events: &HashMap<String, Received>,
) -> Outcome {
    let mut out = Outcome::default();
    let acks = applications(logs);

    // duplicate now: one `now` per push.
    let mut keys_by_now: HashMap<i64, BTreeSet<&str>> = HashMap::new();
    for ack in logs.iter().flat_map(|l| &l.acks) {
        keys_by_now.entry(ack.now).or_default().insert(&ack.key);
    }
    for (now, keys) in &keys_by_now {
        if keys.len() > 1 {
            out.duplicate_now += 1;
            out.fail(format!("now {now} was answered to {} pushes: {keys:?}", keys.len()));
        }
    }
    let mut nows_by_key: HashMap<&str, BTreeSet<i64>> = HashMap::new();
    for ack in logs.iter().flat_map(|l| &l.acks) {
        nows_by_key.entry(&ack.key).or_default().insert(ack.now);
    }
    for (key, nows) in &nows_by_key {
        if nows.len() > 1 {
            out.applied_twice += nows.len() - 1;
            out.fail(format!("push {key} was acknowledged with several nows: {nows:?}"));
        }
    }

    // lost, unexplained: the server against the replay of acknowledged pushes.
    let (expected, changed, superseded) = replay(&acks);
    out.superseded = superseded;
    let actual: BTreeMap<String, State> = server
        .iter()
        .map(|o| {
            let state = if o.removed { State::Removed } else { State::Live(o.fields.clone()) };
            (o.id.clone(), state)
        })
        .collect();
    let ids: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for id in ids {
        match (expected.get(id), actual.get(id)) {
            (Some(State::Live(want)), Some(State::Live(got))) => {
                for field in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
                    match (want.get(field), got.get(field)) {
                        (Some(w), Some(g)) if w == g => {}
                        (Some(w), g) => {
                            out.lost += 1;
                            out.fail(format!("{id}.{field}: acknowledged {w}, the server holds {g:?}"));
                        }
                        (None, g) => {
                            out.unexplained += 1;
                            out.fail(format!("{id}.{field}: the server holds {g:?}, which no push acknowledged"));
                        }
                    }
                }
            }
            (Some(State::Removed), Some(State::Removed)) => {}
            (Some(want), got) => {
                out.lost += 1;
                out.fail(format!("{id}: acknowledged as {want:?}, the server holds {got:?}"));
            }
            (None, got) => {
                out.unexplained += 1;
                out.fail(format!("{id}: the server holds {got:?}, which no push acknowledged"));
            }
        }
    }

    // never pushed: each field edit is in an acknowledged push of its device, or overwritten there.
    for (device, log) in logs.iter().enumerate() {
        let mut pushed: HashSet<(&str, &str, String)> = HashSet::new();
        let mut removed: HashSet<&str> = HashSet::new();
        for ack in &log.acks {
            for item in &ack.items {
                let Some(Value::String(id)) = item.get("id") else { continue };
                if item.get("_removed") == Some(&Value::Bool(true)) {
                    removed.insert(id);
                }
                for field in FIELDS {
                    if let Some(v) = item.get(field) {
                        pushed.insert((id, field, v.to_string()));
                    }
                }
            }
        }
        for (at, edit) in log.edits.iter().enumerate() {
            let later = &log.edits[at + 1..];
            match edit {
                Edit::Set { id, field, value } => {
                    if pushed.contains(&(id.as_str(), *field, value.to_string())) {
                        out.acknowledged_edits += 1;
                    } else if later.iter().any(|e| match e {
                        Edit::Set { id: i, field: f, .. } => i == id && f == field,
                        Edit::Remove { id: i } => i == id,
                    }) {
                        out.overwritten_locally += 1;
                    } else {
                        out.never_pushed += 1;
                        out.fail(format!("device {device}: {id}.{field} = {value} was never acknowledged"));
                    }
                }
                Edit::Remove { id } => {
                    if !removed.contains(id.as_str()) && !later.iter().any(|e| e.id() == id) {
                        // Both sides removed it: the merge has nothing to push. Whether the
                        // object ends removed is the server check's business.
                        out.removals_merged += 1;
                    }
                }
            }
        }
    }

    // applied twice, events: the server's own record of its applications.
    let mut applied: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for event in events.values() {
        applied.entry(event.last_change).or_default().insert(event.object_id.clone());
    }
    let acked_nows: HashSet<i64> = logs.iter().flat_map(|l| &l.acks).map(|a| a.now).collect();
    for (now, objects) in &applied {
        if !acked_nows.contains(now) {
            out.applied_twice += 1;
            // Events carry no key: the acknowledged pushes of the same objects are the suspects.
            let suspects: Vec<(usize, &str, i64)> = acks
                .iter()
                .filter(|a| changed.get(&a.now) == Some(objects))
                .take(3)
                .map(|a| (a.device, a.key.as_str(), a.now))
                .collect();
            out.fail(format!(
                "an application at {now} of {objects:?} was never acknowledged; acknowledged pushes of the \
                 same objects (device, key, now): {suspects:?}"
            ));
        }
    }
    for (now, objects) in &changed {
        match applied.get(now) {
            None => {
                out.events_missing += 1;
                out.fail(format!("the push acknowledged at {now} changed {objects:?} but wrote no events"));
            }
            Some(got) if got != objects => {
                out.events_mismatched += 1;
                out.fail(format!("the push acknowledged at {now} changed {objects:?}, its events name {got:?}"));
            }
            Some(_) => {}
        }
    }

    // converged: each device holds the server's live objects, every declared field included.
    let live: BTreeMap<&str, Map<String, Value>> = server
        .iter()
        .filter(|o| !o.removed)
        .map(|o| {
            let fields = FIELDS.iter().map(|f| ((*f).to_owned(), o.fields.get(*f).cloned().unwrap_or(Value::Null)));
            (o.id.as_str(), fields.collect())
        })
        .collect();
    for (device, records) in devices.iter().enumerate() {
        let local: BTreeMap<&str, Map<String, Value>> =
            records.iter().map(|r| (r.id.as_str(), r.fields.clone())).collect();
        if local != live {
            out.diverged += 1;
            let differing: Vec<&&str> =
                live.keys().chain(local.keys()).filter(|id| live.get(**id) != local.get(**id)).collect();
            out.fail(format!("device {device} differs from the server on {differing:?}"));
        }
    }
    out
}
