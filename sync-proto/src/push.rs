//! Parsing and validation of a push (`POST`) body into typed changes.
//!
//! The whole body is checked before anything is applied: a single invalid item rejects the push,
//! and the error lists every faulty item (up to [`MAX_REPORTED_ITEMS`]). Field values keep the
//! exact JSON text they were sent with.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{ErrorBody, ErrorCode, ItemError};
use crate::field::{self, EntitySchema};
use crate::{Cursor, Limits, ObjectId};

/// At most this many faulty items are listed in one error answer.
pub const MAX_REPORTED_ITEMS: usize = 100;

/// One object of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create the object, or merge these fields into it (absent fields keep their stored value).
    Upsert {
        /// The object's id.
        id: ObjectId,
        /// The fields sent, without `id`, `_removed` and `_lastChange`.
        fields: FieldsJson,
        /// The `_lastChange` sent with it, when a whole number (see [`Change::based_on`]).
        based_on: Option<Cursor>,
    },
    /// Remove the object, leaving a tombstone.
    Remove {
        /// The object's id.
        id: ObjectId,
        /// The `_lastChange` sent with it, when a whole number (see [`Change::based_on`]).
        based_on: Option<Cursor>,
    },
}

impl Change {
    /// The id of the object this change is about.
    pub fn id(&self) -> &ObjectId {
        match self {
            Self::Upsert { id, .. } | Self::Remove { id, .. } => id,
        }
    }

    /// The version the sender's copy was based on: the `_lastChange` it sent, 0 ("new") when it
    /// sent none or one that is not a whole number. Only a push with preconditions is checked
    /// against it; any other push ignores `_lastChange`, as base clients echo it.
    pub fn based_on(&self) -> Cursor {
        match self {
            Self::Upsert { based_on, .. } | Self::Remove { based_on, .. } => based_on.unwrap_or(Cursor::ZERO),
        }
    }
}

/// The header by which a push asks for preconditions (`Sync-Preconditions: on`): each item's
/// `_lastChange` must then be the version stored (0 for none), or nothing is applied (`409`).
pub const PRECONDITIONS_HEADER: &str = "Sync-Preconditions";

/// The fields of an object as a JSON object text, each value exactly as the client wrote it.
/// Built only by parsing a push or by [`FieldsJson::merged_onto`], so it is always a valid JSON object
/// without duplicate or reserved keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldsJson(String);

impl FieldsJson {
    /// An object with no fields.
    pub fn empty() -> Self {
        Self("{}".into())
    }

    /// Wraps a JSON object text read back from a store that only ever stored [`FieldsJson`].
    pub fn from_stored(json: String) -> Self {
        Self(json)
    }

    /// The JSON object text, e.g. `{"name":"x","done":false}`.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The JSON object text, owned.
    pub fn into_json(self) -> String {
        self.0
    }

    /// The members between the braces (`"name":"x","done":false`), for splicing into an answer.
    pub fn members(&self) -> &str {
        members_of(&self.0)
    }

    /// These fields written over `base`: a field present here replaces the base's value in place, a
    /// field only in `base` is kept, a new field is appended. `null` is a value like any other.
    pub fn merged_onto(&self, base: &FieldsJson) -> FieldsJson {
        let (Ok(base_pairs), Ok(new_pairs)) = (object_pairs(base.as_json()), object_pairs(self.as_json())) else {
            // Both texts were produced by this module; if one could not be read, the newer one wins.
            return self.clone();
        };
        let mut out = ObjectWriter::with_capacity(base.0.len() + self.0.len());
        for (key, value) in &base_pairs {
            let newer = new_pairs.iter().find(|(k, _)| k == key).map_or(*value, |(_, v)| *v);
            out.push(key, newer);
        }
        for (key, value) in &new_pairs {
            if !base_pairs.iter().any(|(k, _)| k == key) {
                out.push(key, value);
            }
        }
        out.finish()
    }

    /// The value of one field, as its JSON text.
    pub fn get(&self, name: &str) -> Option<String> {
        object_pairs(self.as_json()).ok()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v.get().to_owned())
    }
}

impl fmt::Display for FieldsJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a push body was refused. Nothing of it may be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The body is not valid JSON (or not UTF-8).
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is valid JSON but not an array.
    #[error("the body must be a JSON array of objects")]
    NotAnArray,
    /// More items than [`Limits::max_items`].
    #[error("a push may hold at most {max} items")]
    TooManyItems {
        /// The configured limit.
        max: usize,
    },
    /// Some items are invalid; each is listed.
    #[error("{count} invalid item(s) in the push; nothing was applied")]
    InvalidItems {
        /// How many items are invalid in all.
        count: usize,
        /// The first [`MAX_REPORTED_ITEMS`] of them.
        details: Vec<ItemError>,
    },
}

impl PushError {
    /// The machine-readable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::NotAnArray | Self::InvalidItems { .. } => ErrorCode::InvalidBody,
            Self::TooManyItems { .. } => ErrorCode::TooManyItems,
        }
    }

    /// The JSON error body for this error.
    pub fn to_body(&self) -> ErrorBody {
        let details = match self {
            Self::InvalidItems { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        ErrorBody::with_details(self.code(), self.to_string(), details)
    }
}

/// Parses and validates a push body against `limits` and, for a declared entity, its `schema`.
///
/// An item is `{"id": "...", <fields>}`; `{"id": "...", "_removed": true}` is a removal;
/// `_lastChange` is set by the server and ignored when sent. Every item is checked; the first
/// [`MAX_REPORTED_ITEMS`] faults are reported.
pub fn parse_push(body: &[u8], limits: &Limits, schema: Option<&EntitySchema>) -> Result<Vec<Change>, PushError> {
    let text = std::str::from_utf8(body).map_err(|e| PushError::MalformedJson(e.to_string()))?;
    let whole: &RawValue = serde_json::from_str(text).map_err(|e| PushError::MalformedJson(e.to_string()))?;
    if !whole.get().starts_with('[') {
        return Err(PushError::NotAnArray);
    }
    let mut de = serde_json::Deserializer::from_str(whole.get());
    let items = de
        .deserialize_seq(BoundedItems { max: limits.max_items })
        .map_err(|_| PushError::TooManyItems { max: limits.max_items })?;

    let mut changes = Vec::with_capacity(items.len());
    let mut details = Vec::new();
    let mut count = 0;
    for (index, item) in items.into_iter().enumerate() {
        match parse_item(item, limits, schema) {
            Ok(change) => changes.push(change),
            Err(mut faults) => {
                count += 1;
                for fault in &mut faults {
                    fault.index = index;
                }
                let room = MAX_REPORTED_ITEMS.saturating_sub(details.len());
                details.extend(faults.into_iter().take(room));
            }
        }
    }
    if count > 0 { Err(PushError::InvalidItems { count, details }) } else { Ok(changes) }
}

fn parse_item(item: &RawValue, limits: &Limits, schema: Option<&EntitySchema>) -> Result<Change, Vec<ItemError>> {
    let fault = |id: Option<&str>, field: Option<&str>, reason: String| ItemError {
        index: 0,
        id: id.map(str::to_owned),
        field: field.map(str::to_owned),
        reason,
    };
    let pairs = object_pairs(item.get()).map_err(|reason| vec![fault(None, None, reason)])?;

    let mut faults = Vec::new();
    let raw_id = pairs.iter().find(|(k, _)| k == "id").map(|(_, v)| *v);
    let id_text: Option<String> = raw_id.and_then(|v| serde_json::from_str(v.get()).ok());
    let id = match (raw_id, &id_text) {
        (None, _) => Err("missing".to_owned()),
        (Some(raw), None) if raw.get().starts_with('"') => Err("must be valid Unicode (no lone surrogate)".to_owned()),
        (Some(_), None) => Err("must be a string".to_owned()),
        (Some(_), Some(text)) => ObjectId::new(text.clone(), limits.max_id_bytes).map_err(|e| e.to_string()),
    };
    let id = id.map_err(|reason| faults.push(fault(None, Some("id"), reason))).ok();
    let shown_id = id_text.as_deref().filter(|_| id.is_some());

    let mut removed = false;
    let mut based_on = None;
    let mut out = ObjectWriter::with_capacity(item.get().len());
    let mut field_count = 0;
    for (i, (key, value)) in pairs.iter().enumerate() {
        let key = key.as_str();
        if pairs[..i].iter().any(|(k, _)| k == key) {
            faults.push(fault(shown_id, Some(key), "appears twice in the object".into()));
            continue;
        }
        match key {
            "id" => continue,
            "_lastChange" => based_on = value.get().parse::<i64>().ok().filter(|n| *n >= 0).map(Cursor::from_millis),
            "_removed" => match value.get() {
                "true" => removed = true,
                "false" => {}
                _ => faults.push(fault(shown_id, Some(key), "must be true or false".into())),
            },
            _ => {
                field_count += 1;
                if let Err(reason) = check_field(key, value, limits, schema) {
                    faults.push(fault(shown_id, Some(key), reason));
                } else {
                    out.push(key, value);
                }
            }
        }
    }
    if field_count > limits.max_fields {
        faults.push(fault(shown_id, None, format!("more than {} fields", limits.max_fields)));
    }
    match id {
        Some(id) if faults.is_empty() => Ok(if removed {
            Change::Remove { id, based_on }
        } else {
            Change::Upsert { id, fields: out.finish(), based_on }
        }),
        _ => Err(faults),
    }
}

fn check_field(name: &str, value: &RawValue, limits: &Limits, schema: Option<&EntitySchema>) -> Result<(), String> {
    if name.is_empty() {
        return Err("field names must not be empty".into());
    }
    if name.len() > limits.max_field_name_bytes {
        return Err(format!("field name longer than {} bytes", limits.max_field_name_bytes));
    }
    let kind = field::inspect(value, limits)?;
    match schema {
        Some(schema) => schema.check(name, value, kind),
        None => Ok(()),
    }
}

/// Writes a JSON object from keys and raw values, escaping keys and copying values verbatim.
struct ObjectWriter(String);

impl ObjectWriter {
    fn with_capacity(n: usize) -> Self {
        let mut s = String::with_capacity(n + 2);
        s.push('{');
        Self(s)
    }

    fn push(&mut self, key: &str, value: &RawValue) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        write_json_string(&mut self.0, key);
        self.0.push(':');
        self.0.push_str(value.get());
    }

    fn finish(mut self) -> FieldsJson {
        self.0.push('}');
        FieldsJson(self.0)
    }
}

/// The members between the braces of a JSON object text.
pub(crate) fn members_of(object: &str) -> &str {
    object.get(1..object.len().saturating_sub(1)).unwrap_or("").trim()
}

/// Appends `s` as a JSON string literal, escaped exactly as `serde_json` escapes it.
pub fn write_json_string(out: &mut String, s: &str) {
    // Most ids and keys need no escaping: copy them as they are, which keeps answers cheap to write.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string always serializes"));
    }
}

/// The members of a JSON object text, in order, values unparsed.
fn object_pairs(text: &str) -> Result<Vec<(String, &RawValue)>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(PairsVisitor).map_err(|e| {
        if e.to_string().starts_with(NOT_AN_OBJECT) { NOT_AN_OBJECT.to_owned() } else { format!("invalid object: {e}") }
    })
}

const NOT_AN_OBJECT: &str = "the item must be a JSON object";

struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NOT_AN_OBJECT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<String>()? {
            pairs.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(pairs)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(NOT_AN_OBJECT))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
}

/// The items of the top-level array, unparsed, failing as soon as there are more than `max`.
struct BoundedItems {
    max: usize,
}

impl<'de> Visitor<'de> for BoundedItems {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                return Err(de::Error::custom("too many items"));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldType;

    fn parse(body: &str) -> Result<Vec<Change>, PushError> {
        parse_push(body.as_bytes(), &Limits::default(), None)
    }

    fn upsert_fields(change: &Change) -> &str {
        match change {
            Change::Upsert { fields, .. } => fields.as_json(),
            Change::Remove { .. } => panic!("expected an upsert"),
        }
    }

    #[test]
    fn values_keep_their_exact_text() {
        let body =
            r#"[{"id":"A","i":1,"f":1.0,"b":true,"n":null,"big":12345678901234567890,"s":"a\u0000b😀","e":1e3}]"#;
        let changes = parse(body).unwrap();
        assert_eq!(changes[0].id().as_str(), "A");
        assert_eq!(
            upsert_fields(&changes[0]),
            r#"{"i":1,"f":1.0,"b":true,"n":null,"big":12345678901234567890,"s":"a\u0000b😀","e":1e3}"#
        );
    }

    #[test]
    fn empty_push_is_valid() {
        assert_eq!(parse("[]").unwrap(), vec![]);
        assert_eq!(parse(" [ ] ").unwrap(), vec![]);
    }

    #[test]
    fn removal_carries_only_the_id_and_last_change_is_kept_apart_from_the_fields() {
        let changes =
            parse(r#"[{"id":"A","_removed":true,"x":1},{"id":"B","_removed":false,"_lastChange":5,"x":2}]"#).unwrap();
        assert_eq!(changes[0], Change::Remove { id: ObjectId::new("A", 10).unwrap(), based_on: None });
        assert_eq!(upsert_fields(&changes[1]), r#"{"x":2}"#);
        assert_eq!((changes[0].based_on(), changes[1].based_on()), (Cursor::ZERO, Cursor::from_millis(5)));
        // Whatever a base client echoes, it is never refused: what is not a whole number is "new".
        for odd in ["\"5\"", "-1", "1.5", "null", "{}"] {
            let changes = parse(&format!(r#"[{{"id":"A","_lastChange":{odd}}}]"#)).unwrap();
            assert_eq!(changes[0].based_on(), Cursor::ZERO, "{odd}");
        }
    }

    #[test]
    fn malformed_json_and_non_arrays_are_refused() {
        assert!(matches!(parse("[{"), Err(PushError::MalformedJson(_))));
        assert!(matches!(parse_push(b"[\xff]", &Limits::default(), None), Err(PushError::MalformedJson(_))));
        assert_eq!(parse(r#"{"id":"A"}"#), Err(PushError::NotAnArray));
        assert_eq!(parse("null"), Err(PushError::NotAnArray));
    }

    #[test]
    fn every_bad_item_is_listed_with_its_index() {
        let body =
            r#"[{"id":"ok"}, 5, {"x":1}, {"id":7}, {"id":""}, {"id":"d","a":1,"a":2}, {"id":"r","_removed":"yes"}]"#;
        let Err(PushError::InvalidItems { count, details }) = parse(body) else { panic!("accepted") };
        assert_eq!(count, 6);
        let at = |i: usize| details.iter().find(|d| d.index == i).unwrap();
        assert_eq!(at(1).reason, NOT_AN_OBJECT);
        assert_eq!((at(2).field.as_deref(), at(2).reason.as_str()), (Some("id"), "missing"));
        assert_eq!(at(3).reason, "must be a string");
        assert!(at(4).reason.contains("empty"));
        assert_eq!((at(5).id.as_deref(), at(5).field.as_deref()), (Some("d"), Some("a")));
        assert_eq!(at(6).field.as_deref(), Some("_removed"));
    }

    #[test]
    fn limits_are_enforced() {
        let limits =
            Limits { max_items: 2, max_fields: 1, max_id_bytes: 3, max_field_name_bytes: 2, ..Limits::default() };
        let p = |b: &str| parse_push(b.as_bytes(), &limits, None);
        assert!(p(r#"[{"id":"a"},{"id":"b"}]"#).is_ok());
        assert_eq!(p(r#"[{"id":"a"},{"id":"b"},{"id":"c"}]"#), Err(PushError::TooManyItems { max: 2 }));
        // Each over-limit item is reported with the limit it broke, not just refused.
        let only_fault = |b: &str| match p(b) {
            Err(PushError::InvalidItems { count: 1, details }) => {
                let d = details.into_iter().next().expect("one detail");
                (d.field, d.reason)
            }
            other => panic!("{b}: {other:?}"),
        };
        let (field, reason) = only_fault(r#"[{"id":"abcd"}]"#);
        assert_eq!(field.as_deref(), Some("id"));
        assert!(reason.contains("longer than"), "{reason}");
        assert_eq!(only_fault(r#"[{"id":"a","x":1,"y":2}]"#), (None, "more than 1 fields".to_owned()));
        assert_eq!(
            only_fault(r#"[{"id":"a","xyz":1}]"#),
            (Some("xyz".to_owned()), "field name longer than 2 bytes".to_owned())
        );
    }

    #[test]
    fn schema_rejects_wrong_types_and_unknown_fields() {
        let schema = EntitySchema { fields: [("done".to_owned(), FieldType::Bool)].into() };
        let p = |b: &str| parse_push(b.as_bytes(), &Limits::default(), Some(&schema));
        assert!(p(r#"[{"id":"a","done":true},{"id":"b","done":0}]"#).is_ok());
        for (body, field) in [(r#"[{"id":"a","done":"yes"}]"#, "done"), (r#"[{"id":"a","other":1}]"#, "other")] {
            match p(body) {
                Err(PushError::InvalidItems { count: 1, details }) => {
                    assert_eq!(details[0].field.as_deref(), Some(field), "{body}: {details:?}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in ["plain", "", "quote\"", "back\\slash", "nul\u{0}", "tab\t", "é😀", "\u{7f}"] {
            let mut out = String::from("x");
            write_json_string(&mut out, s);
            assert_eq!(out, format!("x{}", serde_json::to_string(s).unwrap()));
        }
    }

    #[test]
    fn merge_replaces_in_place_keeps_absent_fields_and_nulls() {
        let base = FieldsJson::from_stored(r#"{"a":1,"b":"x","c":true}"#.into());
        let new = FieldsJson::from_stored(r#"{"b":null,"d":2.50}"#.into());
        assert_eq!(new.merged_onto(&base).as_json(), r#"{"a":1,"b":null,"c":true,"d":2.50}"#);
        assert_eq!(FieldsJson::empty().merged_onto(&base), base);
        assert_eq!(base.members(), r#""a":1,"b":"x","c":true"#);
        assert_eq!(FieldsJson::empty().members(), "");
        assert_eq!(base.get("b").as_deref(), Some(r#""x""#));
    }
}
