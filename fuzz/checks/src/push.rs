//! The push body (`POST /itemChanges`), schemaless and against a declared schema.
//!
//! Each input is checked three ways:
//! 1. against an independent reading of the body with `serde_json`: an accepted push has exactly
//!    the items sent, each with its id, its removal flag, its `_lastChange` and its fields with
//!    their exact JSON text, within every limit and (declared) of its field's type; a refused one
//!    is refused with the documented code;
//! 2. parse → serialize → parse gives the same changes;
//! 3. through the server's own handler, over a real SQLite store: a refused push answers the
//!    status of its code and exactly the error body `parse_push` describes, and the store is left
//!    as it was (its clock has not moved, nothing is pulled after it); an accepted push answers a
//!    `now` above every earlier one, and a pull from before it returns exactly the objects it
//!    changed, each as the push rules say (absent fields kept, removals of unknown objects
//!    ignored), which the client's reader of pull answers reads the same way.
//!
//! The store lives as long as the process, and so does a model of it: later inputs push onto the
//! objects of earlier ones.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use actix_web::test::TestRequest;
use serde_json::Value;
use serde_json::value::RawValue;
use sync_proto::push::{MAX_REPORTED_ITEMS, write_json_string};
use sync_proto::{Change, Cursor, EntitySchema, ErrorBody, ErrorCode, FieldType, Limits, PushError, parse_push};
use sync_server::Config;
use sync_server::config::EntityConfig;

use crate::harness::Harness;

/// Small limits, so that fuzzing reaches every one of them.
pub const LIMITS: Limits = Limits {
    max_body_bytes: 2048,
    max_items: 16,
    max_id_bytes: 16,
    max_fields: 8,
    max_field_name_bytes: 16,
    max_string_bytes: 32,
    max_depth: 4,
    max_inflight_body_bytes: 1 << 20,
    max_page: 10,
};

/// The path pushes go to; schemaless it is entity `Item` too.
const PATH: &str = "/itemChanges";

/// The fields of the declared entity `Item`: one of each type.
pub fn declared_fields() -> BTreeMap<String, FieldType> {
    [
        ("t", FieldType::Text),
        ("i", FieldType::Int),
        ("g", FieldType::BigInt),
        ("r", FieldType::Real),
        ("b", FieldType::Bool),
        ("d", FieldType::Date),
        ("j", FieldType::Json),
    ]
    .into_iter()
    .map(|(name, kind)| (name.to_owned(), kind))
    .collect()
}

/// Checks a push body against an entity without a schema (see the module doc).
pub fn schemaless(data: &[u8]) {
    SCHEMALESS.with(|session| check(data, None, &mut session.borrow_mut()));
}

/// Checks a push body against the declared entity `Item` of [`declared_fields`].
pub fn declared(data: &[u8]) {
    let schema = EntitySchema { fields: declared_fields() };
    DECLARED.with(|session| check(data, Some(&schema), &mut session.borrow_mut()));
}

thread_local! {
    static SCHEMALESS: RefCell<Session> = RefCell::new(Session::new(false));
    static DECLARED: RefCell<Session> = RefCell::new(Session::new(true));
}

/// What the store should hold for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    Removed,
    /// Field name to the exact JSON text of its value.
    Live(BTreeMap<String, String>),
}

struct Session {
    server: Harness,
    model: HashMap<String, Stored>,
    /// The `now` of the last accepted push: the scope's clock.
    clock: i64,
}

impl Session {
    fn new(declared: bool) -> Self {
        let mut config = Config { limits: LIMITS, ..Config::default() };
        if declared {
            config.entities = vec![EntityConfig {
                name: "Item".into(),
                path: None,
                fields: declared_fields(),
                scope: None,
                read_roles: Vec::new(),
                write_roles: Vec::new(),
            }];
        }
        Self { server: Harness::new(config), model: HashMap::new(), clock: 0 }
    }

    /// The store holds nothing after the clock, and the clock has not moved.
    fn assert_unchanged(&self, what: &str) {
        let (status, body) = self.server.send(TestRequest::get().uri(&format!("{PATH}?since={}", self.clock)));
        assert_eq!(status, 200, "pull after {what}: {}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).expect("a pull answer is JSON");
        assert_eq!(answer["updates"], Value::Array(Vec::new()), "{what} reached the store");
        assert_eq!(answer["now"], Value::from(self.clock), "{what} moved the clock");
    }
}

fn check(data: &[u8], schema: Option<&EntitySchema>, session: &mut Session) {
    let parsed = parse_push(data, &LIMITS, schema);
    match &parsed {
        Ok(changes) => check_accepted(data, changes, schema),
        Err(e) => check_refused(data, e),
    }

    let request =
        TestRequest::post().uri(PATH).insert_header(("content-type", "application/json")).set_payload(data.to_vec());
    let (status, body) = session.server.send(request);
    if data.len() > LIMITS.max_body_bytes {
        let error = crate::error_body(status, &body);
        assert_eq!(error.error, ErrorCode::BodyTooLarge);
        session.assert_unchanged("a push over max_body_bytes");
        return;
    }
    match parsed {
        Err(e) => {
            let error = crate::error_body(status, &body);
            assert_eq!(error, e.to_body(), "the answer is not the parser's error");
            session.assert_unchanged("a refused push");
        }
        Ok(changes) => {
            assert_eq!(status, 200, "an accepted push was answered {}", String::from_utf8_lossy(&body));
            let answer: Value = serde_json::from_slice(&body).expect("a push answer is JSON");
            assert_eq!(answer["status"], "ok");
            let now = answer["now"].as_i64().expect("an integer now");
            assert!(now > session.clock, "now {now} does not follow {}", session.clock);
            let changed = apply(&mut session.model, &changes);
            let since = std::mem::replace(&mut session.clock, now);
            check_pulled(session, since, now, &changed);
        }
    }
}

/// The push rules, written from the protocol: an upsert creates the object or sets the fields it
/// sends, keeping the others; a removal leaves a tombstone of a live object and changes nothing
/// else. Returns the ids that changed.
fn apply(model: &mut HashMap<String, Stored>, changes: &[Change]) -> HashSet<String> {
    let mut changed = HashSet::new();
    for change in changes {
        let id = change.id().as_str().to_owned();
        match change {
            Change::Upsert { fields, .. } => {
                let sent = members(fields.as_json()).expect("fields are a JSON object");
                let next = match model.remove(&id) {
                    Some(Stored::Live(mut old)) => {
                        old.extend(sent);
                        old
                    }
                    _ => sent,
                };
                model.insert(id.clone(), Stored::Live(next));
                changed.insert(id);
            }
            Change::Remove { .. } => {
                if let Some(stored @ Stored::Live(_)) = model.get_mut(&id) {
                    *stored = Stored::Removed;
                    changed.insert(id);
                }
            }
        }
    }
    changed
}

fn check_pulled(session: &Session, since: i64, now: i64, changed: &HashSet<String>) {
    let (status, body) = session.server.send(TestRequest::get().uri(&format!("{PATH}?since={since}")));
    assert_eq!(status, 200);
    let text = std::str::from_utf8(&body).expect("a pull answer is UTF-8");
    #[derive(serde::Deserialize)]
    struct Answer {
        updates: Vec<BTreeMap<String, Box<RawValue>>>,
        now: i64,
    }
    let answer: Answer = serde_json::from_str(text).expect("a pull answer");
    assert_eq!(answer.now, now, "the pull's now is not the push's");
    let mut seen = HashSet::new();
    for mut update in answer.updates {
        let id: String = serde_json::from_str(update.remove("id").expect("an id").get()).expect("a string id");
        let last_change: i64 = serde_json::from_str(update.remove("_lastChange").expect("_lastChange").get()).unwrap();
        assert_eq!(last_change, now, "{id} was pulled with another _lastChange");
        assert!(seen.insert(id.clone()), "{id} was pulled twice");
        let expected = session.model.get(&id).unwrap_or_else(|| panic!("{id} was pulled but never pushed"));
        let got = match update.remove("_removed") {
            Some(flag) => {
                assert_eq!(flag.get(), "true");
                assert!(update.is_empty(), "a tombstone with fields");
                Stored::Removed
            }
            None => Stored::Live(update.into_iter().map(|(k, v)| (k, v.get().to_owned())).collect()),
        };
        assert_eq!(&got, expected, "{id} is not stored as the push rules say");
    }
    let seen: HashSet<String> = seen;
    assert_eq!(&seen, changed, "the pull after the push is not the objects it changed");

    // The client reads the same answer the same way.
    let page = sync_client::transport::parse_pull_answer(text).expect("the client reads a server's answer");
    assert!(page.unreadable.is_empty(), "the client could not read {:?}", page.unreadable);
    assert_eq!((page.now.millis(), page.more, page.reset), (now, false, false));
    assert_eq!(page.updates.len(), changed.len());
    for object in &page.updates {
        assert_eq!(object.last_change, Some(now));
        match &session.model[&object.id] {
            Stored::Removed => assert!(object.removed && object.fields.is_empty(), "{}", object.id),
            Stored::Live(fields) => {
                assert!(!object.removed);
                assert_eq!(object.fields.len(), fields.len(), "{}", object.id);
                for (name, text) in fields {
                    // A lone surrogate is read as U+FFFD by the client: only other values compare.
                    if let Ok(value) = serde_json::from_str::<Value>(text) {
                        assert_eq!(object.fields.get(name), Some(&value), "{}.{name}", object.id);
                    }
                }
            }
        }
    }
}

/// The members of a JSON object text, each value as its exact text.
fn members(object: &str) -> Result<BTreeMap<String, String>, serde_json::Error> {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(object)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.get().to_owned())).collect())
}

const RESERVED: [&str; 3] = ["id", "_removed", "_lastChange"];

fn check_accepted(data: &[u8], changes: &[Change], schema: Option<&EntitySchema>) {
    let items: Vec<BTreeMap<String, Box<RawValue>>> =
        serde_json::from_slice(data).expect("an accepted push is an array of objects");
    assert_eq!(items.len(), changes.len(), "items were lost or made up");
    assert!(changes.len() <= LIMITS.max_items);
    for (index, (item, change)) in items.iter().zip(changes).enumerate() {
        let id: String = serde_json::from_str(item["id"].get()).expect("an accepted id is a string");
        assert_eq!(change.id().as_str(), id, "item {index}");
        assert!(!id.is_empty() && id.len() <= LIMITS.max_id_bytes, "item {index}: id {id:?} out of bounds");
        let removed = item.get("_removed").map(|v| v.get());
        assert!(matches!(removed, None | Some("true" | "false")), "item {index}: _removed {removed:?} accepted");
        let based_on = item.get("_lastChange").and_then(|v| v.get().parse::<i64>().ok()).filter(|n| *n >= 0);
        assert_eq!(change.based_on(), Cursor::from_millis(based_on.unwrap_or(0)), "item {index}");

        let fields: BTreeMap<&str, &str> =
            item.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())).map(|(k, v)| (k.as_str(), v.get())).collect();
        assert!(fields.len() <= LIMITS.max_fields, "item {index}: {} fields accepted", fields.len());
        for (name, value) in &fields {
            assert!(!name.is_empty() && name.len() <= LIMITS.max_field_name_bytes, "item {index}: field {name:?}");
            check_value_limits(value, index, name);
            if let Some(schema) = schema {
                let kind = schema.fields.get(*name).unwrap_or_else(|| panic!("item {index}: undeclared {name:?}"));
                assert!(fits(*kind, value), "item {index}: {name} = {value} accepted as {kind}");
            }
        }
        match (change, removed) {
            (Change::Remove { .. }, Some("true")) => {}
            (Change::Upsert { fields: sent, .. }, None | Some("false")) => {
                let sent = members(sent.as_json()).expect("fields are a JSON object");
                let expected: BTreeMap<String, String> =
                    fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                assert_eq!(sent, expected, "item {index}: fields not kept as sent");
            }
            _ => panic!("item {index}: _removed {removed:?} read as {change:?}"),
        }
    }

    let again = parse_push(serialize(changes).as_bytes(), &LIMITS, schema);
    assert_eq!(again.as_deref(), Ok(changes), "parse → serialize → parse changed the push");
}

/// A push body that says exactly `changes`.
fn serialize(changes: &[Change]) -> String {
    let mut out = String::from("[");
    for (i, change) in changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        write_json_string(&mut out, change.id().as_str());
        match change {
            Change::Upsert { fields, .. } => {
                let members = fields.as_json().trim();
                let members = &members[1..members.len() - 1];
                if !members.trim().is_empty() {
                    out.push(',');
                    out.push_str(members);
                }
            }
            Change::Remove { .. } => out.push_str(",\"_removed\":true"),
        }
        let (Change::Upsert { based_on, .. } | Change::Remove { based_on, .. }) = change;
        if let Some(based_on) = based_on {
            out.push_str(&format!(",\"_lastChange\":{}", based_on.millis()));
        }
        out.push('}');
    }
    out.push(']');
    out
}

/// The nesting and string limits, measured on the value as `serde_json` reads it (values it
/// cannot hold, such as lone surrogates, are left to the parser's own tests).
fn check_value_limits(text: &str, index: usize, name: &str) {
    fn walk(value: &Value, depth: usize, index: usize, name: &str) {
        assert!(depth <= LIMITS.max_depth, "item {index}: {name} nested {depth} deep accepted");
        match value {
            Value::String(s) => assert!(s.len() <= LIMITS.max_string_bytes, "item {index}: {name}: long string"),
            Value::Array(items) => items.iter().for_each(|v| walk(v, depth + 1, index, name)),
            Value::Object(members) => members.iter().for_each(|(k, v)| {
                assert!(k.len() <= LIMITS.max_string_bytes, "item {index}: {name}: long key");
                walk(v, depth + 1, index, name);
            }),
            Value::Number(n) => assert!(n.as_f64().is_some_and(f64::is_finite), "item {index}: {name}: {n}"),
            Value::Null | Value::Bool(_) => {}
        }
    }
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        walk(&value, 1, index, name);
    }
}

/// Whether `text` is a value of `kind`, per the table of declared types in `docs/PROTOCOL.md`.
fn fits(kind: FieldType, text: &str) -> bool {
    let integer = |t: &str| {
        let digits = t.strip_prefix('-').unwrap_or(t);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let number = |t: &str| t.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    text == "null"
        || match kind {
            FieldType::Text => text.starts_with('"'),
            FieldType::Int | FieldType::BigInt | FieldType::Date => integer(text),
            FieldType::Real => number(text),
            FieldType::Bool => matches!(text, "true" | "false" | "0" | "1"),
            FieldType::Json => true,
        }
}

fn check_refused(data: &[u8], error: &PushError) {
    let body = error.to_body();
    crate::check_error_shape(&serde_json::to_value(&body).expect("an error body serializes"));
    assert!(matches!(body.error, ErrorCode::MalformedJson | ErrorCode::InvalidBody | ErrorCode::TooManyItems));
    let Ok(whole) = serde_json::from_slice::<Value>(data) else { return };
    assert!(!matches!(error, PushError::MalformedJson(_)), "valid JSON refused as malformed: {error}");
    let Value::Array(items) = whole else {
        assert_eq!(error, &PushError::NotAnArray);
        return;
    };
    if items.len() > LIMITS.max_items {
        assert_eq!(error, &PushError::TooManyItems { max: LIMITS.max_items });
        return;
    }
    let PushError::InvalidItems { count, details } = error else { panic!("{error:?} for an array of {}", items.len()) };
    assert!(*count >= 1 && *count <= items.len());
    assert!(!details.is_empty() && details.len() <= MAX_REPORTED_ITEMS);
    assert!(details.windows(2).all(|w| w[0].index <= w[1].index), "details out of order");
    for detail in details {
        assert!(detail.index < items.len(), "a fault at index {} of {}", detail.index, items.len());
        assert!(!detail.reason.is_empty());
        // An item that sends `id` twice is named by its first (serde_json's reading keeps the last).
        let twice = details.iter().any(|d| d.index == detail.index && d.field.as_deref() == Some("id"));
        if let Some(id) = detail.id.as_ref().filter(|_| !twice) {
            assert_eq!(items[detail.index].get("id"), Some(&Value::String(id.clone())), "a fault names another id");
        }
    }
}

/// An error body, parsed, for the checks of other modules too.
pub(crate) fn parse_error_body(body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)))
}
