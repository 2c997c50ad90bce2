//! The push algorithm, written once for every store.
//!
//! Inside one transaction of the store (SQLite: a savepoint of the writer's group transaction;
//! PostgreSQL: a transaction of its own), [`apply`] takes these steps in this order:
//! 1. lock the scope's clock, so that pushes to one scope run one after another and each reads
//!    everything its predecessor committed;
//! 2. read, once the lock is granted, the push remembered under the idempotency key, if any, and
//!    the stored state of every id of the push; a remembered push is replayed (see
//!    [`super::idempotency`]) and nothing is written. Both steps are one call of the store, so that
//!    a store with a network between it and its database can send the reads with the lock request
//!    (one round trip, not two) as long as they run after it;
//! 3. take the timestamp [`next_timestamp`] from the clock and the wall clock;
//! 4. apply each change in order by the push rules of [`ObjectState::after`];
//! 5. write the clock, the changed objects, the idempotency key, and, for each subscription that
//!    takes the entity, one outbox log row holding an event per changed object (see
//!    [`super::outbox`]).
//!
//! The store commits afterwards; if anything fails, the store rolls the transaction back and
//! nothing of the push is applied.

use std::collections::{HashMap, HashSet};

use sync_proto::{Change, Cursor, FieldsJson};

use super::idempotency::{Idempotency, Remembered};
use super::outbox::{NewEvent, Routes, event_ids};
use super::{Conflict, Push, PushOutcome, Scope, StoreError, StoredObject};
use crate::clock::{Clock, next_timestamp};
use sync_proto::webhook::Operation;

/// What is stored for one id, as a push finds it and then leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectState {
    /// Never stored.
    Absent,
    /// A tombstone.
    Removed,
    /// A live object with these fields.
    Live(FieldsJson),
}

impl ObjectState {
    /// The state after `change`, or `None` when it changes nothing: the one statement of the push
    /// rules. A field absent from an upsert keeps its stored value; an upsert of a removed object
    /// re-creates it from the fields sent; removing an object that is unknown or already removed
    /// changes nothing (so echoed removals get no new timestamp).
    pub(crate) fn after(&self, change: &Change) -> Option<ObjectState> {
        match (change, self) {
            (Change::Upsert { fields, .. }, Self::Absent | Self::Removed) => Some(Self::Live(fields.clone())),
            (Change::Upsert { fields, .. }, Self::Live(old)) => Some(Self::Live(fields.merged_onto(old))),
            (Change::Remove { .. }, Self::Live(_)) => Some(Self::Removed),
            (Change::Remove { .. }, Self::Absent | Self::Removed) => None,
        }
    }

    /// The state a store row holds: its `removed` flag and its fields' JSON text.
    pub(crate) fn from_row(removed: bool, fields: String) -> Self {
        if removed { Self::Removed } else { Self::Live(FieldsJson::from_stored(fields)) }
    }

    /// The `removed` flag and the fields' JSON text a store writes for this state.
    pub(crate) fn columns(&self) -> (bool, &str) {
        match self {
            Self::Live(fields) => (false, fields.as_json()),
            Self::Removed | Self::Absent => (true, "{}"),
        }
    }
}

/// What [`PushTx::read`] found.
pub(crate) struct Found {
    /// The push remembered under the key, if the push has a key and one is remembered.
    pub(crate) earlier: Option<Remembered>,
    /// What is stored for the ids asked for; ids not in it are absent.
    pub(crate) stored: HashMap<String, ObjectState>,
    /// The `_lastChange` of each id in `stored`, when asked for (a push with preconditions).
    pub(crate) versions: HashMap<String, Cursor>,
}

/// One row a push writes.
pub(crate) struct Write {
    /// The object's id.
    pub(crate) id: String,
    /// Its state after the push.
    pub(crate) state: ObjectState,
}

/// The idempotency key to look up, and the time (epoch ms) from which remembered keys are valid.
#[derive(Clone, Copy)]
pub(crate) struct KeyLookup<'a> {
    pub(crate) key: &'a Idempotency,
    pub(crate) valid_from_ms: i64,
}

/// Everything an applied push writes.
pub(crate) struct Writes<'a> {
    /// The push's timestamp: the clock's new value and every row's `_lastChange`.
    pub(crate) now: i64,
    /// The rows, each id once.
    pub(crate) rows: &'a [Write],
    /// The key to remember, with `wall_ms` as the time it was remembered (and the time of the
    /// outbox events).
    pub(crate) key: Option<&'a Idempotency>,
    pub(crate) wall_ms: i64,
    /// The subscriptions that take the entity: each gets one row of the outbox log.
    pub(crate) subscriptions: &'a [&'a str],
    /// The outbox events, in each of those rows (none when there is no subscription).
    pub(crate) events: &'a [NewEvent<'a>],
    /// The push's request id, kept with its events.
    pub(crate) request_id: Option<&'a str>,
}

/// The steps of a push in one store's transaction. Each store implements them in its own SQL; the
/// order and the rules are [`apply`]'s.
pub(crate) trait PushTx {
    /// The store's error (PostgreSQL's tells a lost connection apart, to retry on another).
    type Error: From<StoreError>;

    /// Locks the scope's clock until the end of the transaction (creating it at 0 when the scope
    /// is new), then reads the push remembered under the key (if still valid) and what is stored
    /// for `ids` (with each one's `_lastChange` when `versions`). Returns the clock's last
    /// timestamp and what was found. The reads must see everything committed before the lock was
    /// granted: they may be sent before it is, but must run after.
    async fn lock_and_read(
        &mut self,
        scope: &Scope,
        key: Option<KeyLookup<'_>>,
        ids: &[&str],
        versions: bool,
    ) -> Result<(i64, Found), Self::Error>;

    /// Writes the clock, every row, the key, and the events.
    async fn write(&mut self, scope: &Scope, writes: &Writes<'_>) -> Result<(), Self::Error>;
}

/// Applies `push` inside `tx`, or replays the push remembered under its key. The caller commits.
pub(crate) async fn apply<T: PushTx>(
    tx: &mut T,
    scope: &Scope,
    push: &Push,
    clock: &dyn Clock,
    routes: &Routes,
) -> Result<PushOutcome, T::Error> {
    let key = push.idempotency.as_ref();
    let ids = unique_ids(&push.changes);
    // The key's horizon is taken before the lock is granted, since the lookup may be sent with
    // the lock request: it can only be earlier, so a key at the very end of its time is replayed
    // rather than applied again.
    let lookup = key.map(|key| KeyLookup { key, valid_from_ms: key.valid_from_ms(clock.now_ms()) });
    let (last, found) = tx.lock_and_read(scope, lookup, &ids, push.preconditions).await?;
    // Read after the lock was granted, however long that took, so that timestamps stay close to
    // the time of commit.
    let wall_ms = clock.now_ms();
    if let (Some(key), Some(earlier)) = (key, &found.earlier) {
        return Ok(key.replay(earlier)?);
    }
    if push.preconditions {
        let conflicts = conflicts(&push.changes, &found);
        if !conflicts.is_empty() {
            return Err(StoreError::Conflict(conflicts).into());
        }
    }
    let now = next_timestamp(wall_ms, last);
    let rows = plan_writes(&push.changes, found.stored);
    let subscriptions: Vec<&str> = routes.subscriptions_of(scope.key()).collect();
    let event_ids = if subscriptions.is_empty() { Vec::new() } else { event_ids(rows.len()) };
    let events = events_of(&rows, &event_ids);
    let request_id = push.request_id.as_deref();
    let writes = Writes { now, rows: &rows, key, wall_ms, subscriptions: &subscriptions, events: &events, request_id };
    tx.write(scope, &writes).await?;
    Ok(PushOutcome { now: Cursor::from_millis(now), replayed: false })
}

/// The changes whose stated base is not the stored version, each id once (its first change: later
/// ones in the same push build on it). "New" (0) matches a tombstone too: re-creating a removed
/// object overwrites no one's data, and a client may have forgotten the tombstone it pulled.
fn conflicts(changes: &[Change], found: &Found) -> Vec<Conflict> {
    let mut seen = HashSet::new();
    changes
        .iter()
        .filter(|change| seen.insert(change.id().as_str()))
        .filter_map(|change| {
            let id = change.id().as_str();
            let stored = found.versions.get(id).copied().unwrap_or(Cursor::ZERO);
            let removed = matches!(found.stored.get(id), Some(ObjectState::Removed));
            let current = change.based_on() == stored || (removed && change.based_on() == Cursor::ZERO);
            (!current).then(|| Conflict {
                id: id.to_owned(),
                based_on: change.based_on(),
                current: found.stored.get(id).map(|state| StoredObject {
                    id: id.to_owned(),
                    last_change: stored,
                    fields: match state {
                        ObjectState::Live(fields) => Some(fields.clone()),
                        ObjectState::Removed | ObjectState::Absent => None,
                    },
                }),
            })
        })
        .collect()
}

/// One event per written row (`event_ids[i]` for `rows[i]`; none when `event_ids` is empty).
fn events_of<'a>(rows: &'a [Write], event_ids: &[uuid::Uuid]) -> Vec<NewEvent<'a>> {
    rows.iter()
        .zip(event_ids)
        .map(|(row, event_id)| {
            let (operation, object) = match &row.state {
                ObjectState::Live(fields) => (Operation::Upsert, Some(fields.as_json())),
                ObjectState::Removed | ObjectState::Absent => (Operation::Remove, None),
            };
            NewEvent { event_id: *event_id, object_id: &row.id, operation, object }
        })
        .collect()
}

/// The distinct ids of a push, in order of first appearance.
fn unique_ids(changes: &[Change]) -> Vec<&str> {
    let mut seen = HashSet::with_capacity(changes.len());
    changes.iter().map(|c| c.id().as_str()).filter(|id| seen.insert(*id)).collect()
}

/// Applies each change in order to what is stored, by the rules of [`ObjectState::after`]. Returns
/// the rows to write (each id once, in order of first change), leaving out ids left unchanged.
fn plan_writes(changes: &[Change], mut stored: HashMap<String, ObjectState>) -> Vec<Write> {
    let mut order: Vec<&str> = Vec::new();
    let mut dirty = HashSet::new();
    for change in changes {
        let id = change.id().as_str();
        let current = stored.entry(id.to_owned()).or_insert(ObjectState::Absent);
        let Some(next) = current.after(change) else { continue };
        *current = next;
        if dirty.insert(id) {
            order.push(id);
        }
    }
    order.into_iter().filter_map(|id| stored.remove_entry(id)).map(|(id, state)| Write { id, state }).collect()
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use sync_proto::ObjectId;

    fn upsert(id: &str, json: &str) -> Change {
        Change::Upsert {
            id: ObjectId::new(id, 64).unwrap(),
            fields: FieldsJson::from_stored(json.into()),
            based_on: None,
        }
    }

    fn remove(id: &str) -> Change {
        Change::Remove { id: ObjectId::new(id, 64).unwrap(), based_on: None }
    }

    fn live(json: &str) -> ObjectState {
        ObjectState::Live(FieldsJson::from_stored(json.into()))
    }

    #[test]
    fn push_rules_merge_recreate_and_ignore_redundant_removals() {
        assert_eq!(ObjectState::Absent.after(&upsert("a", r#"{"x":1}"#)), Some(live(r#"{"x":1}"#)));
        assert_eq!(live(r#"{"x":1,"y":2}"#).after(&upsert("a", r#"{"x":3}"#)), Some(live(r#"{"x":3,"y":2}"#)));
        assert_eq!(ObjectState::Removed.after(&upsert("a", r#"{"x":1}"#)), Some(live(r#"{"x":1}"#)));
        assert_eq!(live("{}").after(&remove("a")), Some(ObjectState::Removed));
        assert_eq!(ObjectState::Removed.after(&remove("a")), None);
        assert_eq!(ObjectState::Absent.after(&remove("a")), None);
        assert_eq!(ObjectState::Removed.columns(), (true, "{}"));
        assert_eq!(ObjectState::from_row(true, "{}".into()), ObjectState::Removed);
    }

    #[test]
    fn writes_follow_the_changes_of_a_push_in_order() {
        let stored =
            HashMap::from([("live".to_owned(), live(r#"{"a":1,"b":2}"#)), ("gone".to_owned(), ObjectState::Removed)]);
        let changes = vec![
            upsert("live", r#"{"b":3}"#),
            remove("unknown"),
            remove("gone"),
            upsert("new", r#"{"x":null}"#),
            remove("new"),
            upsert("gone", r#"{"c":1}"#),
            upsert("live", r#"{"d":true}"#),
        ];
        let writes: Vec<_> = plan_writes(&changes, stored).into_iter().map(|w| (w.id, w.state)).collect();
        assert_eq!(
            writes,
            vec![
                ("live".to_owned(), live(r#"{"a":1,"b":3,"d":true}"#)),
                ("new".to_owned(), ObjectState::Removed),
                ("gone".to_owned(), live(r#"{"c":1}"#)),
            ],
            "merged in order; removals of unknown or removed objects write nothing"
        );
        assert_eq!(unique_ids(&changes), ["live", "unknown", "gone", "new"]);
    }
}
