//! The transactional outbox: what a push appends for other systems, and what the delivery workers
//! need of the store.
//!
//! Every applied push appends, in its own transaction, **one row to the outbox log per
//! subscription** that takes its entity ([`Routes`]), holding all its events (one per changed
//! object): the change commits with its events or not at all, a replayed push appends nothing,
//! and a push pays for one insert however many objects it changed.
//!
//! Per subscription, one worker at a time (across instances, under the subscription's **stream
//! lease**) reads the subscription's oldest log rows, delivers their events, and then, in one
//! transaction guarded by its lease, deletes those rows and keeps an **outbox row** for each event
//! that was not delivered: its first attempt failed, or an earlier event of its object is still
//! held. An event is in the log or in the outbox until it is delivered, never in neither; an
//! event delivered at its first attempt leaves nothing behind but the delivery metrics. Each
//! outbox row is one event for one subscription, with its delivery state:
//!
//! - `pending`: waiting for its next attempt (`next_attempt_ms`);
//! - `delivering`: claimed by a worker under a lease (`lease_token`, `lease_until_ms`); a lease
//!   that runs out (its instance died) makes the row claimable again;
//! - `delivered`, `skipped`: done (an operator skipped it);
//! - `dead`: out of attempts, kept with its attempt history until an operator redrives or skips it.
//!
//! **Order per object**: one object's pushes commit in the order of their log rows (they hold the
//! lock of the object's partition); the stream sends a log event only while its object has no
//! outbox row `pending`, `delivering` or `dead`, and at most one event per object at a time; an
//! outbox row is claimable only while no earlier row of the same subscription and object is
//! `pending`, `delivering` or `dead`. So one object's events reach a subscription in commit
//! order, and a failing object holds back only its own later events. Every state change of a
//! claimed row is guarded by its lease token, so a worker whose lease was taken over can never
//! overwrite what the new holder did. Every attempt of an event that has an outbox row is kept in
//! its own row.

use async_trait::async_trait;
use serde::Serialize;
use sync_proto::webhook::Operation;

use super::StoreError;

/// Which subscriptions take the events of which entities.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<Route>);

/// One subscription's entities.
#[derive(Debug, Clone)]
pub struct Route {
    /// The subscription's name.
    pub subscription: String,
    /// The entities it takes; empty: all.
    pub entities: Vec<String>,
}

impl Routes {
    /// These routes.
    pub fn new(routes: Vec<Route>) -> Self {
        Self(routes)
    }

    /// Whether no subscription takes anything: pushes append no event.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The subscriptions that take events of `entity`.
    pub(crate) fn subscriptions_of<'s: 'e, 'e>(&'s self, entity: &'e str) -> impl Iterator<Item = &'s str> + 'e {
        self.0
            .iter()
            .filter(move |r| r.entities.is_empty() || r.entities.iter().any(|e| e == entity))
            .map(|r| r.subscription.as_str())
    }
}

/// One event a push appends (for every subscription that takes its entity).
#[derive(Debug, Clone)]
pub(crate) struct NewEvent<'a> {
    /// The event's id, the same for every subscription.
    pub(crate) event_id: uuid::Uuid,
    /// The object's id.
    pub(crate) object_id: &'a str,
    /// What happened to it.
    pub(crate) operation: Operation,
    /// Its fields after the change (JSON object text); `None` for a removal.
    pub(crate) object: Option<&'a str>,
}

/// The `events` column of a push's log row: a JSON array of
/// `[event_id, object_id, operation, fields or null]`, the stored fields spliced in as they are,
/// LZ4-compressed: the JSON repeats every field name and each event id's prefix, so the events
/// cost a push's commit about a quarter of their bytes (a test measures it).
pub(crate) fn log_events(events: &[NewEvent<'_>]) -> Vec<u8> {
    let mut json = Vec::with_capacity(events.iter().map(|e| e.object.map_or(4, str::len) + 72).sum());
    json.push(b'[');
    for (n, e) in events.iter().enumerate() {
        if n > 0 {
            json.push(b',');
        }
        json.extend_from_slice(b"[\"");
        json.extend_from_slice(e.event_id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).as_bytes());
        json.extend_from_slice(b"\",");
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut json, e.object_id);
        json.extend_from_slice(b",\"");
        json.extend_from_slice(e.operation.as_str().as_bytes());
        json.extend_from_slice(b"\",");
        json.extend_from_slice(e.object.unwrap_or("null").as_bytes());
        json.push(b']');
    }
    json.push(b']');
    lz4_flex::compress_prepend_size(&json)
}

/// `n` event ids for one push: a UUIDv7 counted up in its 62 random low bits, so the ids of a push
/// are unique and ordered at the cost of one clock read and one random draw, and never meet another
/// push's (a push holds at most a few thousand of the 2^62 values after a random start).
pub(crate) fn event_ids(n: usize) -> Vec<uuid::Uuid> {
    const LOW: u128 = (1 << 62) - 1;
    let first = uuid::Uuid::now_v7().as_u128();
    (0..n as u128).map(|i| uuid::Uuid::from_u128((first & !LOW) | ((first & LOW).wrapping_add(i) & LOW))).collect()
}

/// The columns every read of [`LogRow`]s selects, in the order the stores read them.
pub(crate) const LOG_COLUMNS: &str = "seq, entity, partition, last_change, request_id, created_ms, events";

/// One row of a subscription's outbox log: one push's events.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// Its place in the log.
    pub seq: i64,
    /// The entity.
    pub entity: String,
    /// The partition.
    pub partition: String,
    /// The push's `now`, every object's `_lastChange`.
    pub last_change: i64,
    /// The push's request id.
    pub request_id: Option<String>,
    /// When the push committed (epoch ms).
    pub created_ms: i64,
    /// Its events ([`log_events`]).
    pub events: Vec<u8>,
}

impl LogRow {
    /// Its events, in the push's order.
    pub fn events(&self) -> Result<Vec<EventData>, StoreError> {
        type Logged = (String, String, String, Option<Box<serde_json::value::RawValue>>);
        let unreadable = |e: &dyn std::fmt::Display| {
            StoreError::internal_because(format!("the outbox log row {} cannot be read: {e}", self.seq))
        };
        let json = lz4_flex::decompress_size_prepended(&self.events).map_err(|e| unreadable(&e))?;
        let events: Vec<Logged> = serde_json::from_slice(&json).map_err(|e| unreadable(&e))?;
        Ok(events
            .into_iter()
            .map(|(event_id, object_id, operation, object)| EventData {
                event_id,
                entity: self.entity.clone(),
                partition: self.partition.clone(),
                object_id,
                operation,
                object: object.map(|o| o.get().to_owned()),
                last_change: self.last_change,
                request_id: self.request_id.clone(),
                created_ms: self.created_ms,
            })
            .collect())
    }
}

/// An event of the log that leaves it undelivered, kept as an outbox row.
#[derive(Debug, Clone)]
pub struct Held {
    /// The event.
    pub event: EventData,
    /// Its attempt and what became of it; `None` when it was held back unsent, behind an earlier
    /// event of its object (it is then due at once, in its turn).
    pub attempt: Option<(Attempt, After)>,
}

/// Adds to each subscription's counts the events still in its log: `backlog` is
/// `(subscription, events, oldest created_ms)`.
pub(crate) fn add_logged(stats: &mut [SubscriptionStats], backlog: &[(String, i64, i64)]) {
    for s in stats {
        for (_, events, oldest) in backlog.iter().filter(|(name, ..)| *name == s.name) {
            s.pending += events;
            s.oldest_pending_ms = Some(s.oldest_pending_ms.map_or(*oldest, |o| o.min(*oldest)));
        }
    }
}

/// An object, as the order per object knows it: `(entity, partition, object id)`.
pub type ObjectKey = (String, String, String);

/// An event claimed for delivery, under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The row (event and subscription).
    pub seq: i64,
    /// The lease: every later change of the row must name it.
    pub lease_token: i64,
    /// The event.
    pub event: EventData,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventData {
    /// Its id (the receiver's deduplication key).
    pub event_id: String,
    /// The entity.
    pub entity: String,
    /// The partition, empty outside any.
    pub partition: String,
    /// The object's id.
    pub object_id: String,
    /// `upsert` or `remove`.
    pub operation: String,
    /// The object's fields after the change (JSON object text), `None` for a removal.
    pub object: Option<String>,
    /// The object's `_lastChange`.
    pub last_change: i64,
    /// The push's request id.
    pub request_id: Option<String>,
    /// When the push committed (epoch ms, the wall clock of its transaction).
    pub created_ms: i64,
}

/// One delivery attempt, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// When it started (epoch ms).
    pub at_ms: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<i32>,
    /// What went wrong (a bounded excerpt of the answer, or the error), `None` when delivered.
    pub error: Option<String>,
}

/// One attempt of a claimed row, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The row.
    pub seq: i64,
    /// Its lease.
    pub lease_token: i64,
    /// The attempt.
    pub attempt: Attempt,
    /// What becomes of the row.
    pub after: After,
}

/// What becomes of a claimed row after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Done.
    Delivered,
    /// Tried again at this time (epoch ms).
    RetryAt(i64),
    /// Out of attempts.
    Dead,
}

/// A subscription's state and counts, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionStats {
    /// Its name.
    pub name: String,
    /// Whether its workers deliver (an operator, or a `410` from the receiver, may stop them).
    pub enabled: bool,
    /// Why it was disabled, when it is.
    pub disabled_reason: Option<String>,
    /// Events waiting (pending or being delivered).
    pub pending: i64,
    /// Pending events that failed at least once.
    pub failing: i64,
    /// Events out of attempts.
    pub dead: i64,
    /// When the oldest waiting event committed (epoch ms): its age is the subscription's lag.
    pub oldest_pending_ms: Option<i64>,
}

/// Which events an operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this subscription's.
    pub subscription: Option<String>,
    /// Only in these states (`pending`, `delivering`, `delivered`, `dead`, `skipped`), or only
    /// `failed` ones (pending after at least one failed attempt); empty: every state.
    pub states: Vec<String>,
    /// Only of this entity.
    pub entity: Option<String>,
    /// Only of this object id.
    pub object_id: Option<String>,
    /// Only of this partition (a user's: `user:alice`).
    pub partition: Option<String>,
    /// Only this event id.
    pub event_id: Option<String>,
    /// Only events committed at or after this time (epoch ms).
    pub from_ms: Option<i64>,
    /// Only events committed before this time (epoch ms).
    pub until_ms: Option<i64>,
    /// Only events whose last error contains this text (ignoring ASCII case).
    pub error_contains: Option<String>,
}

/// An event of one subscription with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// The row.
    pub seq: i64,
    /// The subscription.
    pub subscription: String,
    /// The event.
    #[serde(flatten)]
    pub event: EventData,
    /// `pending`, `delivering`, `delivered`, `dead` or `skipped`.
    pub state: String,
    /// Attempts made since it was last (re)driven.
    pub attempts: i32,
    /// When it is tried next (epoch ms), while pending.
    pub next_attempt_ms: Option<i64>,
    /// The last answer's status.
    pub last_status: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
}

/// The delivery side of the outbox, on the store that holds it.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Takes or renews the stream lease of `subscription` under `token` until `lease_until_ms`:
    /// `true` when this token holds it now (it was free, ran out, or was this token's already),
    /// `false` while another holds it or the subscription is disabled.
    async fn lease_stream(
        &self,
        subscription: &str,
        token: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Gives up the stream lease of `subscription` if `token` holds it, so that the next worker
    /// with events to deliver (of any instance) takes it at once.
    async fn release_stream(&self, subscription: &str, token: i64) -> Result<(), StoreError>;

    /// The oldest rows of `subscription`'s log, at most `max_rows`, oldest first.
    async fn read_log(&self, subscription: &str, max_rows: usize) -> Result<Vec<LogRow>, StoreError>;

    /// Which of `objects` have an outbox row of `subscription` that holds back their later events
    /// (`pending`, `delivering` or `dead`).
    async fn held_objects(&self, subscription: &str, objects: &[ObjectKey]) -> Result<Vec<bool>, StoreError>;

    /// Ends the handling of log rows `seqs` of `subscription`: deletes them, and appends `held`
    /// (in order) to the outbox with their attempts, in one transaction, only while `token` still
    /// holds the stream lease (`false`, and nothing changed, when it does not). Not waited to be
    /// durable, like [`Outbox::finish`].
    async fn settle(&self, subscription: &str, token: i64, seqs: &[i64], held: &[Held]) -> Result<bool, StoreError>;

    /// Claims up to `limit` events of `subscription` that are due at `now_ms` (or whose lease ran
    /// out), oldest first, each the earliest unfinished event of its object, under a fresh lease
    /// until `lease_until_ms`. Claims of concurrent workers (of any instance) never overlap.
    async fn claim(
        &self,
        subscription: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Extends the leases of rows still held under these tokens; returns how many were.
    async fn renew(&self, leases: &[(i64, i64)], lease_until_ms: i64) -> Result<u64, StoreError>;

    /// Records each attempt of claimed rows and moves each row on, in one transaction; a row
    /// whose lease is no longer the one named is left alone (`false` in its place in the
    /// answer). These bookkeeping commits (and claims) are not waited to be durable: a crash may
    /// forget the last ones, and those events are then delivered again, which at-least-once
    /// delivery allows.
    async fn finish(&self, finished: &[Finished]) -> Result<Vec<bool>, StoreError>;

    /// Whether a subscription's workers deliver (true unless disabled).
    async fn is_enabled(&self, subscription: &str) -> Result<bool, StoreError>;

    /// Every subscription's state and counts (events still in its log count as pending); those
    /// named in `names` appear even when they have no event yet.
    async fn subscriptions(&self, names: &[String]) -> Result<Vec<SubscriptionStats>, StoreError>;

    /// Enables or disables a subscription (`reason` says why it was disabled).
    async fn set_enabled(
        &self,
        subscription: &str,
        enabled: bool,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Events matching `filter`, newest first, at most `limit`, before row `before_seq` if given.
    async fn events(
        &self,
        filter: &EventFilter,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError>;

    /// One row and its attempts, newest first.
    async fn event(&self, seq: i64) -> Result<Option<(EventRow, Vec<Attempt>)>, StoreError>;

    /// Makes dead (or failing pending) rows matching `filter` (or exactly the rows `seqs`, when
    /// given) due again with their attempts counted from zero; their history stays. Returns how many.
    async fn redrive(&self, filter: &EventFilter, seqs: Option<&[i64]>, now_ms: i64) -> Result<u64, StoreError>;

    /// Marks rows as skipped (never delivered): pending or dead ones only. Returns how many.
    async fn skip(&self, seqs: &[i64], now_ms: i64) -> Result<u64, StoreError>;

    /// How many rows match `filter`, for confirmations.
    async fn count(&self, filter: &EventFilter) -> Result<u64, StoreError>;

    /// Deletes at most `batch` delivered or skipped rows finished before `before_ms`, with their
    /// attempts; returns how many.
    async fn prune(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError>;

    /// Appends an entry to the audit log of operators' actions.
    async fn audit(&self, at_ms: i64, user: &str, action: &str, detail: &str) -> Result<(), StoreError>;

    /// The newest entries of the audit log: `(at_ms, user, action, detail)`.
    async fn audit_log(&self, limit: usize) -> Result<Vec<(i64, String, String, String)>, StoreError>;
}

/// The states a filter may name, and `failed`.
pub const STATES: [&str; 6] = ["pending", "delivering", "delivered", "dead", "skipped", "failed"];

/// A bounded excerpt of what a receiver answered, for the attempt history.
pub fn excerpt(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_send_an_entity_to_the_subscriptions_that_take_it() {
        let routes = Routes::new(vec![
            Route { subscription: "all".into(), entities: vec![] },
            Route { subscription: "tasks".into(), entities: vec!["Task".into()] },
        ]);
        assert_eq!(routes.subscriptions_of("Task").collect::<Vec<_>>(), ["all", "tasks"]);
        assert_eq!(routes.subscriptions_of("Note").collect::<Vec<_>>(), ["all"]);
        assert!(Routes::default().is_empty());
    }

    #[test]
    fn filters_bind_every_value_and_name_only_known_states() {
        let filter = EventFilter {
            subscription: Some("erp".into()),
            states: vec!["dead".into(), "failed".into(), "'; DROP TABLE outbox; --".into()],
            object_id: Some("t1".into()),
            from_ms: Some(5),
            error_contains: Some("Timed Out".into()),
            ..EventFilter::default()
        };
        let postgres = Dialect {
            placeholder: |n| format!("${n}"),
            object_id_is: |p| format!("object_id = convert_to({p}, 'UTF8')"),
            position: "strpos",
        };
        let (sql, bound) = filter_sql(&filter, 3, postgres);
        assert_eq!(
            sql,
            "subscription = $3 AND object_id = convert_to($4, 'UTF8') AND created_ms >= $5 AND \
             strpos(lower(last_error), lower($6)) > 0 AND (state = 'dead' OR (state = 'pending' AND attempts > 0))"
        );
        assert_eq!(
            bound,
            [Bound::Text("erp".into()), Bound::Text("t1".into()), Bound::Int(5), Bound::Text("Timed Out".into())]
        );
        assert_eq!(filter_sql(&EventFilter::default(), 1, postgres).0, "TRUE");
    }

    #[test]
    fn a_log_row_gives_back_its_events_as_they_were_appended() {
        let ids = event_ids(2);
        let events = [
            NewEvent {
                event_id: ids[0],
                object_id: "t\"1",
                operation: Operation::Upsert,
                object: Some(r#"{"a":[1,{"b":null}]}"#),
            },
            NewEvent { event_id: ids[1], object_id: "t2", operation: Operation::Remove, object: None },
        ];
        let row = LogRow {
            seq: 1,
            entity: "Task".into(),
            partition: "user:al".into(),
            last_change: 7,
            request_id: Some("r".into()),
            created_ms: 9,
            events: log_events(&events),
        };
        let read = row.events().unwrap();
        let seen: Vec<(&str, &str, &str, Option<&str>)> = read
            .iter()
            .map(|e| (e.event_id.as_str(), e.object_id.as_str(), e.operation.as_str(), e.object.as_deref()))
            .collect();
        let (e1, e2) = (ids[0].to_string(), ids[1].to_string());
        assert_eq!(seen, [(&*e1, "t\"1", "upsert", Some(r#"{"a":[1,{"b":null}]}"#)), (&*e2, "t2", "remove", None)]);
        let first = &read[0];
        assert_eq!((first.entity.as_str(), first.partition.as_str(), first.last_change), ("Task", "user:al", 7));
        assert_eq!((first.request_id.as_deref(), first.created_ms), (Some("r"), 9));
        assert!(LogRow { events: b"[[".to_vec(), ..row.clone() }.events().is_err());
        let truncated = LogRow { events: lz4_flex::compress_prepend_size(b"[[\"e\""), ..row };
        assert!(truncated.events().is_err());
    }

    #[test]
    fn a_push_event_ids_are_distinct_ordered_version_7_uuids() {
        let ids = event_ids(10_000);
        // Sorted and so distinct (a wrap of the low bits is a chance of 10^4 in 2^62).
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        for id in [ids[0], ids[9_999]] {
            assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        // Two pushes in the same millisecond start at unrelated random points.
        let (a, b) = (event_ids(1)[0], event_ids(1)[0]);
        assert_ne!(a, b);
    }

    #[test]
    fn events_still_in_the_log_count_for_their_subscription() {
        let stats = |name: &str, pending, oldest| SubscriptionStats {
            name: name.into(),
            enabled: true,
            disabled_reason: None,
            pending,
            failing: 0,
            dead: 0,
            oldest_pending_ms: oldest,
        };
        let mut all = [stats("erp", 2, Some(50)), stats("cms", 0, None), stats("idle", 0, None)];
        add_logged(&mut all, &[("erp".into(), 10, 40), ("cms".into(), 3, 60)]);
        assert_eq!((all[0].pending, all[0].oldest_pending_ms), (12, Some(40)));
        assert_eq!((all[1].pending, all[1].oldest_pending_ms), (3, Some(60)));
        assert_eq!((all[2].pending, all[2].oldest_pending_ms), (0, None));
    }

    #[test]
    fn log_rows_hold_about_a_quarter_of_their_events_json() {
        // Objects like the benchmark's: a 32-digit id, a title, a flag, two numbers.
        let n = 1_000;
        let ids: Vec<String> = (0..n).map(|i| format!("{:032X}", i as u128 * 0x9E37_79B9_7F4A_7C15)).collect();
        let event_ids = event_ids(n);
        let objects: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"title":"Write the quarterly report, part {i}","done":false,"priority":{},"due":{}}}"#,
                    i % 5,
                    1_790_000_000 + i
                )
            })
            .collect();
        let events: Vec<NewEvent<'_>> = (0..n)
            .map(|i| NewEvent {
                event_id: event_ids[i],
                object_id: &ids[i],
                operation: Operation::Upsert,
                object: Some(&objects[i]),
            })
            .collect();
        let stored = log_events(&events);
        let json = lz4_flex::decompress_size_prepended(&stored).unwrap();
        let ratio = stored.len() as f64 / json.len() as f64;
        assert!(ratio < 0.35, "{} bytes for {} of JSON", stored.len(), json.len());
    }

    #[test]
    fn excerpts_are_bounded_on_a_character_boundary() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}

/// A value bound to a placeholder of [`filter_sql`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bound {
    /// A text value.
    Text(String),
    /// An integer.
    Int(i64),
}

/// The columns every query of [`EventRow`]s selects, in the order the stores read them.
pub(crate) const EVENT_COLUMNS: &str = "seq, subscription, event_id, entity, partition, object_id, operation, object, \
     last_change, request_id, created_ms, state, attempts, next_attempt_ms, last_status, last_error";

/// How a store's SQL names parameters and object ids.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// The placeholder of parameter `n` (`?1`, `$1`).
    pub(crate) placeholder: fn(usize) -> String,
    /// The condition that `object_id` equals the text parameter `p` (PostgreSQL keeps ids as
    /// bytes).
    pub(crate) object_id_is: fn(&str) -> String,
    /// The function giving the position of a text in another, 0 when absent (`instr`, `strpos`).
    pub(crate) position: &'static str,
}

/// The conditions of `filter` as SQL (`TRUE` when it has none) and the values they bind, the
/// placeholders numbered from `first`.
pub(crate) fn filter_sql(filter: &EventFilter, first: usize, dialect: Dialect) -> (String, Vec<Bound>) {
    let mut conditions = Vec::new();
    let mut bound = Vec::new();
    let mut bind = |value: Bound| {
        bound.push(value);
        (dialect.placeholder)(first + bound.len() - 1)
    };
    let texts = [
        ("subscription", &filter.subscription),
        ("entity", &filter.entity),
        ("object_id", &filter.object_id),
        ("partition", &filter.partition),
        ("event_id", &filter.event_id),
    ];
    for (column, value) in texts {
        if let Some(value) = value {
            let p = bind(Bound::Text(value.clone()));
            conditions.push(if column == "object_id" { (dialect.object_id_is)(&p) } else { format!("{column} = {p}") });
        }
    }
    if let Some(from) = filter.from_ms {
        conditions.push(format!("created_ms >= {}", bind(Bound::Int(from))));
    }
    if let Some(until) = filter.until_ms {
        conditions.push(format!("created_ms < {}", bind(Bound::Int(until))));
    }
    if let Some(text) = &filter.error_contains {
        let p = bind(Bound::Text(text.clone()));
        conditions.push(format!("{}(lower(last_error), lower({p})) > 0", dialect.position));
    }
    if !filter.states.is_empty() {
        // Only names of STATES reach here (the admin API checks them), so they are written inline.
        let states: Vec<String> = filter
            .states
            .iter()
            .filter(|s| STATES.contains(&s.as_str()))
            .map(|s| match s.as_str() {
                "failed" => "(state = 'pending' AND attempts > 0)".to_owned(),
                other => format!("state = '{other}'"),
            })
            .collect();
        conditions.push(format!("({})", if states.is_empty() { "FALSE".to_owned() } else { states.join(" OR ") }));
    }
    let sql = if conditions.is_empty() { "TRUE".to_owned() } else { conditions.join(" AND ") };
    (sql, bound)
}

/// The `state, next_attempt_ms, attempts, last_status, last_error` of a held event's new row.
pub(crate) fn held_columns(
    event: &EventData,
    attempt: Option<&(Attempt, After)>,
) -> (&'static str, Option<i64>, i32, Option<i32>, Option<String>) {
    match attempt {
        None => ("pending", Some(event.created_ms), 0, None, None),
        Some((a, after)) => {
            let (state, next, _) = after_columns(*after);
            (state, next, 1, a.status, a.error.clone())
        }
    }
}

/// The `state` and `next_attempt_ms` a row takes after an attempt, and whether it is finished.
pub(crate) fn after_columns(after: After) -> (&'static str, Option<i64>, bool) {
    match after {
        After::Delivered => ("delivered", None, true),
        After::RetryAt(at) => ("pending", Some(at), false),
        After::Dead => ("dead", None, false),
    }
}
