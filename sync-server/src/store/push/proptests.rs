//! Properties of the push rules ([`ObjectState::after`], [`plan_writes`]) and of [`apply`] over an
//! in-memory store, as docs/PROTOCOL.md states them: fields left out keep their stored values, a
//! field sent replaces the stored one verbatim, a removed object is re-created from the fields sent
//! only, a removal of what is not live changes nothing, and every object a push changes, and only
//! those, gets the push's fresh timestamp.
//!
//! Changes are made by parsing push bodies, as the server makes them, so stored fields are always
//! texts [`sync_proto::parse_push`] or [`FieldsJson::merged_onto`] produced. Failures are not
//! persisted to files: a real one is kept as a named unit test instead, which stays meaningful
//! when a strategy changes (a stored seed silently stops reproducing then).

use std::collections::{HashMap, HashSet};
use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sync_proto::{EntityName, Limits, parse_push};

use super::*;
use crate::store::run_ready;

/// Field names, a few needing escapes, one that looks reserved but is not.
const NAMES: &[&str] = &["a", "b", "c", "d", "é", "q\"", "_x"];
/// Value texts the server must keep exactly as sent.
const VALUES: &[&str] = &[
    "1",
    "1.0",
    "1e3",
    "-0",
    "null",
    "true",
    "false",
    r#""x""#,
    r#""\ud83d""#,
    r#""a\u0000b""#,
    "12345678901234567890",
    r#"[1,{"k":2}]"#,
    "{}",
    r#""""#,
];
const IDS: &[&str] = &["o1", "o2", "o3"];

fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}

/// Distinct field names with value texts, in the order sent.
fn fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((prop::sample::select(NAMES), prop::sample::select(VALUES)), 0..6).prop_map(|pairs| {
        let mut seen = HashSet::new();
        pairs.into_iter().filter(|(k, _)| seen.insert(*k)).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    })
}

/// One item of a push as a client writes it.
#[derive(Debug, Clone)]
struct Sent {
    id: &'static str,
    /// The fields of an upsert; `None` for a removal.
    fields: Option<Vec<(String, String)>>,
    /// A `_lastChange` echoed with the item, which a push without preconditions ignores.
    echoed: Option<i64>,
    /// An upsert written with `"_removed": false`.
    not_removed: bool,
}

impl Sent {
    fn body(&self) -> String {
        let mut members = vec![format!("\"id\":{}", json_string(self.id))];
        match &self.fields {
            None => members.push("\"_removed\":true".into()),
            Some(fields) => {
                members.extend(fields.iter().map(|(k, v)| format!("{}:{v}", json_string(k))));
                if self.not_removed {
                    members.insert(1, "\"_removed\":false".into());
                }
            }
        }
        if let Some(n) = self.echoed {
            members.push(format!("\"_lastChange\":{n}"));
        }
        format!("{{{}}}", members.join(","))
    }

    fn change(&self) -> Change {
        parse_all(std::slice::from_ref(self)).remove(0)
    }
}

fn sent() -> impl Strategy<Value = Sent> {
    (prop::sample::select(IDS), prop::option::weighted(0.7, fields()), prop::option::of(0..5i64), any::<bool>())
        .prop_map(|(id, fields, echoed, not_removed)| Sent { id, fields, echoed, not_removed })
}

fn upsert() -> impl Strategy<Value = Sent> {
    sent().prop_map(|s| Sent { fields: Some(s.fields.unwrap_or_default()), ..s })
}

fn parse_all(items: &[Sent]) -> Vec<Change> {
    let body = format!("[{}]", items.iter().map(Sent::body).collect::<Vec<_>>().join(","));
    parse_push(body.as_bytes(), &Limits::default(), None).expect("the generated push is valid")
}

/// A live state whose fields came from a push, as every stored object's did.
fn live_state() -> impl Strategy<Value = ObjectState> {
    fields().prop_map(|fields| {
        match (Sent { id: "o1", fields: Some(fields), echoed: None, not_removed: false }).change() {
            Change::Upsert { fields, .. } => ObjectState::Live(fields),
            Change::Remove { .. } => unreachable!("an item with fields is an upsert"),
        }
    })
}

fn state() -> impl Strategy<Value = ObjectState> {
    prop_oneof![Just(ObjectState::Absent), Just(ObjectState::Removed), live_state()]
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The members of a JSON object text in order, values as their text; panics on anything else,
/// so a merge that wrote invalid JSON fails the property that reads it.
fn pairs(json: &str) -> Vec<(String, String)> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: &RawValue = map.next_value()?;
                out.push((key, value.get().to_owned()));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let out = de.deserialize_map(Pairs).unwrap_or_else(|e| panic!("not a JSON object ({e}): {json}"));
    de.end().unwrap_or_else(|e| panic!("trailing text ({e}): {json}"));
    out
}

fn live_pairs(state: &ObjectState) -> Option<Vec<(String, String)>> {
    match state {
        ObjectState::Live(fields) => Some(pairs(fields.as_json())),
        ObjectState::Removed | ObjectState::Absent => None,
    }
}

fn keys(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_str()).collect()
}

fn applied(state: &ObjectState, change: &Change) -> ObjectState {
    state.after(change).unwrap_or_else(|| state.clone())
}

proptest! {
    #![proptest_config(config())]

    /// "Fields that an object leaves out keep their stored values ... A field in the push replaces
    /// the stored value, even if the new value is null": each value as sent, each key once, stored
    /// fields in their places and new ones after them in the order sent.
    #[test]
    fn an_upsert_keeps_the_fields_it_leaves_out_and_replaces_those_it_sends(
        stored in live_state(),
        item in upsert(),
    ) {
        let old = live_pairs(&stored).unwrap();
        let sent = item.fields.clone().unwrap();
        let after = stored.after(&item.change());
        let new = after.as_ref().and_then(live_pairs);
        prop_assert!(new.is_some(), "an upsert of a live object leaves it live: {after:?}");
        let new = new.unwrap();
        for (key, value) in &sent {
            prop_assert_eq!(new.iter().find(|(k, _)| k == key).map(|(_, v)| v), Some(value), "sent {}", key);
        }
        for (key, value) in old.iter().filter(|(k, _)| !sent.iter().any(|(s, _)| s == k)) {
            prop_assert_eq!(new.iter().find(|(k, _)| k == key).map(|(_, v)| v), Some(value), "kept {}", key);
        }
        let expected_keys: Vec<&str> =
            keys(&old).into_iter().chain(keys(&sent).into_iter().filter(|k| !old.iter().any(|(o, _)| o == k))).collect();
        prop_assert_eq!(keys(&new), expected_keys, "each key once, stored ones in place, new ones appended");
    }

    /// "Pushing an id that was removed re-creates the object from the fields sent": nothing of the
    /// object before its removal comes back, and a never-stored id is created the same way.
    #[test]
    fn an_upsert_of_a_removed_or_unknown_object_holds_exactly_the_fields_sent(
        before in prop_oneof![Just(ObjectState::Absent), live_state()],
        removed_first in any::<bool>(),
        item in upsert(),
    ) {
        let removal = Sent { fields: None, ..item.clone() }.change();
        let start = if removed_first { applied(&before, &removal) } else { ObjectState::Absent };
        let after = start.after(&item.change());
        prop_assert_eq!(after.as_ref().and_then(live_pairs), item.fields.clone(), "from {:?}", start);
    }

    /// A client may send a change again (a retry without a key, an echo of what it pulled): the
    /// second application leaves the same state, and a repeated removal changes nothing at all, so
    /// it gets no new `_lastChange`.
    #[test]
    fn the_same_change_twice_leaves_what_it_leaves_once(stored in state(), item in sent()) {
        let change = item.change();
        let once = applied(&stored, &change);
        let twice = once.after(&change);
        prop_assert_eq!(twice.clone().unwrap_or_else(|| once.clone()), once.clone());
        if item.fields.is_none() {
            prop_assert_eq!(twice, None, "a repeated removal is no change");
        }
    }

    /// "Removing an id that the server does not have, or has already removed, is not an error, and
    /// it changes nothing": only a live object is removed, and it leaves a tombstone with no
    /// fields, whatever the removal carried.
    #[test]
    fn only_a_live_object_is_removed_and_it_leaves_a_bare_tombstone(stored in state(), item in sent()) {
        let removal = Sent { fields: None, ..item }.change();
        let after = stored.after(&removal);
        match stored {
            ObjectState::Live(_) => {
                prop_assert_eq!(after.as_ref().map(ObjectState::columns), Some((true, "{}")));
            }
            ObjectState::Removed | ObjectState::Absent => prop_assert_eq!(after, None),
        }
    }

    /// "`_lastChange` in a pushed object is ignored" and `id` and `_removed` are not fields: no
    /// sequence of pushes stores any of them among an object's fields.
    #[test]
    fn no_reserved_key_is_ever_stored_as_a_field(
        stored in state(),
        items in prop::collection::vec(sent().prop_map(|s| Sent { id: "o1", ..s }), 1..6),
    ) {
        let mut state = stored;
        for change in parse_all(&items) {
            state = applied(&state, &change);
            if let Some(fields) = live_pairs(&state) {
                for reserved in ["id", "_removed", "_lastChange"] {
                    prop_assert!(!fields.iter().any(|(k, _)| k == reserved), "{} stored: {:?}", reserved, fields);
                }
            }
        }
    }

    /// The rows of a push (one id may appear more than once, applied in order): the state each id
    /// reaches by its changes in turn, each id once in order of its first change that changed
    /// something, and no row at all for an id none of whose changes changed anything.
    #[test]
    fn a_push_writes_each_changed_id_once_with_the_state_its_changes_reach(
        stored in prop::collection::vec(state(), IDS.len()),
        items in prop::collection::vec(sent(), 0..10),
    ) {
        let stored: HashMap<String, ObjectState> = IDS
            .iter()
            .zip(stored)
            .filter(|(_, s)| *s != ObjectState::Absent)
            .map(|(id, s)| ((*id).to_owned(), s))
            .collect();
        let changes = parse_all(&items);
        let mut expected: Vec<(String, ObjectState)> = Vec::new();
        let mut current = stored.clone();
        for change in &changes {
            let id = change.id().as_str();
            let state = current.get(id).cloned().unwrap_or(ObjectState::Absent);
            if let Some(next) = state.after(change) {
                current.insert(id.to_owned(), next);
                if !expected.iter().any(|(e, _)| e == id) {
                    expected.push((id.to_owned(), ObjectState::Absent));
                }
            }
        }
        for (id, state) in &mut expected {
            *state = current[id.as_str()].clone();
        }
        let written: Vec<(String, ObjectState)> =
            plan_writes(&changes, stored).into_iter().map(|w| (w.id, w.state)).collect();
        prop_assert_eq!(written, expected);
    }
}

/// A store in memory: each id's state with its `_lastChange`, and the clock.
#[derive(Debug, Clone, Default)]
struct MemTx {
    clock: i64,
    objects: HashMap<String, (ObjectState, i64)>,
}

impl PushTx for MemTx {
    type Error = StoreError;

    async fn lock_and_read(
        &mut self,
        _: &Scope,
        _: Option<KeyLookup<'_>>,
        ids: &[&str],
        versions: bool,
    ) -> Result<(i64, Found), StoreError> {
        let held = || ids.iter().filter_map(|id| self.objects.get(*id).map(|o| (*id, o)));
        let found = Found {
            earlier: None,
            stored: held().map(|(id, (state, _))| (id.to_owned(), state.clone())).collect(),
            versions: if versions {
                held().map(|(id, (_, at))| (id.to_owned(), Cursor::from_millis(*at))).collect()
            } else {
                HashMap::new()
            },
        };
        Ok((self.clock, found))
    }

    async fn write(&mut self, _: &Scope, writes: &Writes<'_>) -> Result<(), StoreError> {
        self.clock = writes.now;
        for row in writes.rows {
            self.objects.insert(row.id.clone(), (row.state.clone(), writes.now));
        }
        Ok(())
    }
}

/// A wall clock stopped at one reading.
struct Wall(i64);

impl Clock for Wall {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

fn scope() -> Scope {
    Scope::entity(EntityName::new("Task").unwrap())
}

/// A push of `items` with preconditions, each item based on the `_lastChange` it carries.
fn push_with_preconditions(items: &[Sent]) -> Push {
    Push { preconditions: true, ..Push::new(parse_all(items)) }
}

proptest! {
    #![proptest_config(config())]

    /// Part 2's timestamps through the whole push algorithm, whatever the wall clock does between
    /// pushes: each push's `now` is fresh (greater than the last, even for an empty push or one of
    /// echoed removals), never behind the wall clock; every object it changes gets exactly that
    /// `now`, every other object keeps its `_lastChange`; the store holds what the rules give.
    #[test]
    fn every_push_gets_a_fresh_timestamp_that_only_the_objects_it_changes_carry(
        pushes in prop::collection::vec(
            (prop::collection::vec(sent(), 0..5), 0..2_000i64),
            1..8,
        ),
    ) {
        let mut tx = MemTx::default();
        let mut last_now = 0;
        for (items, wall) in &pushes {
            let before = tx.clone();
            let push = Push::new(parse_all(items));
            let outcome = run_ready(apply(&mut tx, &scope(), &push, &Wall(*wall), &Routes::default())).unwrap();
            let now = outcome.now.millis();
            prop_assert!(now > last_now && now >= *wall, "now {} after {}, wall {}", now, last_now, wall);
            prop_assert!(!outcome.replayed);
            last_now = now;
            let mut expected = before.objects.clone();
            let mut changed = HashSet::new();
            for change in &push.changes {
                let id = change.id().as_str();
                let state = expected.get(id).map_or(ObjectState::Absent, |(s, _)| s.clone());
                if let Some(next) = state.after(change) {
                    expected.insert(id.to_owned(), (next, now));
                    changed.insert(id);
                }
            }
            prop_assert_eq!(&tx.objects, &expected, "changed: {:?}", changed);
            prop_assert_eq!(tx.clock, now);
        }
    }

    /// Preconditions: the push applies only when the first change of every id states the stored
    /// `_lastChange` (0 for an id held as nothing or as a tombstone); otherwise nothing is
    /// applied, the clock does not move, and each such id is reported once with what is stored.
    #[test]
    fn a_push_with_preconditions_applies_whole_or_reports_every_stale_id(
        setup in prop::collection::vec(sent(), 0..6),
        items in prop::collection::vec(sent(), 1..6),
        based_on_stored in prop::collection::vec(any::<bool>(), IDS.len()),
    ) {
        let mut tx = MemTx::default();
        run_ready(apply(&mut tx, &scope(), &Push::new(parse_all(&setup)), &Wall(10), &Routes::default())).unwrap();
        let version = |tx: &MemTx, id: &str| tx.objects.get(id).map_or(0, |(_, at)| *at);
        // Each id's first item states either what is stored or an echoed stamp, right or not.
        let mut first = HashSet::new();
        let items: Vec<Sent> = items
            .into_iter()
            .map(|item| {
                let at = IDS.iter().position(|id| *id == item.id).unwrap();
                if first.insert(item.id) && based_on_stored[at] {
                    Sent { echoed: Some(version(&tx, item.id)), ..item }
                } else {
                    item
                }
            })
            .collect();
        let mut seen = HashSet::new();
        let stale: Vec<&str> = items
            .iter()
            .filter(|item| seen.insert(item.id))
            .filter(|item| {
                let stated = item.echoed.unwrap_or(0);
                let tombstone = matches!(tx.objects.get(item.id), Some((ObjectState::Removed, _)));
                stated != version(&tx, item.id) && !(tombstone && stated == 0)
            })
            .map(|item| item.id)
            .collect();
        let before = tx.clone();
        let result = run_ready(apply(&mut tx, &scope(), &push_with_preconditions(&items), &Wall(20), &Routes::default()));
        match result {
            Ok(outcome) => {
                prop_assert!(stale.is_empty(), "applied although {:?} are stale", stale);
                prop_assert_eq!(outcome.now.millis(), 20.max(before.clock + 1));
            }
            Err(StoreError::Conflict(conflicts)) => {
                let reported: Vec<&str> = conflicts.iter().map(|c| c.id.as_str()).collect();
                prop_assert_eq!(reported, stale);
                for conflict in &conflicts {
                    let held = before.objects.get(&conflict.id);
                    prop_assert_eq!(conflict.current.is_some(), held.is_some());
                    if let (Some(current), Some((state, at))) = (&conflict.current, held) {
                        prop_assert_eq!(current.last_change.millis(), *at);
                        prop_assert_eq!(current.fields.is_some(), matches!(state, ObjectState::Live(_)));
                    }
                }
                prop_assert_eq!(&tx.objects, &before.objects, "nothing applied");
                prop_assert_eq!(tx.clock, before.clock, "the clock did not move");
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}
