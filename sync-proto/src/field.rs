//! Field types of a declared entity, and the check of one JSON value: its nesting depth, its string
//! lengths, and (for a declared entity) its type. Values themselves are never rewritten.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Limits;

/// The type of a declared field, with the JSON values it accepts (`null` is accepted by all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FieldType {
    /// A string.
    Text,
    /// An integer (a number written without fraction or exponent).
    Int,
    /// An integer of any size; every digit is kept.
    BigInt,
    /// Any number.
    Real,
    /// `true`/`false`, or `1`/`0` as persistence.js sends them from SQL stores.
    Bool,
    /// Whole seconds since the epoch (a value above 10^12 is read as milliseconds by clients).
    Date,
    /// Any JSON value, nested up to [`Limits::max_depth`].
    Json,
}

impl FieldType {
    /// The canonical name, as written in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "TEXT",
            Self::Int => "INT",
            Self::BigInt => "BIGINT",
            Self::Real => "REAL",
            Self::Bool => "BOOL",
            Self::Date => "DATE",
            Self::Json => "JSON",
        }
    }

    fn accepts(self, kind: JsonKind, raw: &str) -> bool {
        match (self, kind) {
            (_, JsonKind::Null) | (Self::Json, _) => true,
            (Self::Text, JsonKind::String) => true,
            (Self::Int | Self::BigInt | Self::Date, JsonKind::Integer) => true,
            (Self::Real, JsonKind::Integer | JsonKind::Float) => true,
            (Self::Bool, JsonKind::Bool) => true,
            (Self::Bool, JsonKind::Integer) => raw == "0" || raw == "1",
            _ => false,
        }
    }
}

impl FromStr for FieldType {
    type Err = String;

    /// Accepts the canonical names and the SQL spellings persistence.js models use
    /// (`VARCHAR(255)`, `INTEGER`, `BOOLEAN`, `FLOAT`, ...), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let base = upper.split('(').next().unwrap_or("").trim();
        Ok(match base {
            "TEXT" | "VARCHAR" | "CHAR" | "STRING" => Self::Text,
            "INT" | "INTEGER" => Self::Int,
            "BIGINT" => Self::BigInt,
            "REAL" | "FLOAT" | "DOUBLE" | "NUMERIC" | "NUMBER" => Self::Real,
            "BOOL" | "BOOLEAN" => Self::Bool,
            "DATE" | "DATETIME" => Self::Date,
            "JSON" => Self::Json,
            _ => {
                return Err(format!("unknown field type {s:?} (expected TEXT, INT, BIGINT, REAL, BOOL, DATE or JSON)"));
            }
        })
    }
}

impl TryFrom<String> for FieldType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FieldType> for String {
    fn from(t: FieldType) -> Self {
        t.as_str().to_owned()
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The declared fields of an entity. An entity without a schema accepts any field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitySchema {
    /// Field name to type.
    pub fields: BTreeMap<String, FieldType>,
}

impl EntitySchema {
    /// Checks one field of a pushed object against this schema.
    pub fn check(&self, name: &str, value: &RawValue, kind: JsonKind) -> Result<(), String> {
        match self.fields.get(name) {
            None => Err("not a declared field of this entity".into()),
            Some(t) if t.accepts(kind, value.get()) => Ok(()),
            Some(t) => Err(format!("expected {t}, got {}", kind.describe())),
        }
    }
}

/// The kind of a JSON value, as far as type checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number written without fraction or exponent, of any size.
    Integer,
    /// Any other number.
    Float,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Integer => "an integer",
            Self::Float => "a non-integer number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

/// Checks a value against the nesting and string limits and tells its kind.
/// The error is a reason for people, without positions.
pub fn inspect(value: &RawValue, limits: &Limits) -> Result<JsonKind, String> {
    let reason = Cell::new(None);
    let probe = Probe { depth: 1, limits, reason: &reason };
    let mut de = serde_json::Deserializer::from_str(value.get());
    match probe.deserialize(&mut de) {
        Ok(JsonKind::Integer) if !is_integer_text(value.get()) => Ok(JsonKind::Float),
        Ok(JsonKind::Float) if is_integer_text(value.get()) => Ok(JsonKind::Integer),
        Ok(kind) => Ok(kind),
        Err(_) => Err(reason.take().unwrap_or_else(|| "not a valid JSON value".into())),
    }
}

fn is_integer_text(raw: &str) -> bool {
    !raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// Walks a value without building it, failing at the first limit it exceeds.
struct Probe<'a> {
    depth: usize,
    limits: &'a Limits,
    reason: &'a Cell<Option<String>>,
}

impl Probe<'_> {
    fn fail<E: de::Error>(&self, reason: String) -> E {
        let err = E::custom(&reason);
        self.reason.set(Some(reason));
        err
    }

    fn nested(&self) -> Self {
        Probe { depth: self.depth + 1, limits: self.limits, reason: self.reason }
    }

    fn check_nesting<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.limits.max_depth {
            Err(self.fail(format!("nested deeper than {} levels", self.limits.max_depth)))
        } else {
            Ok(())
        }
    }

    fn check_string<E: de::Error>(&self, s: &str) -> Result<(), E> {
        if s.len() > self.limits.max_string_bytes {
            Err(self.fail(format!("string longer than {} bytes", self.limits.max_string_bytes)))
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = JsonKind;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<JsonKind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = JsonKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<JsonKind, E> {
        Ok(JsonKind::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<JsonKind, E> {
        Ok(JsonKind::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<JsonKind, E> {
        Ok(JsonKind::Integer)
    }
    fn visit_u64<E>(self, _: u64) -> Result<JsonKind, E> {
        Ok(JsonKind::Integer)
    }
    fn visit_f64<E>(self, _: f64) -> Result<JsonKind, E> {
        Ok(JsonKind::Float)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<JsonKind, E> {
        self.check_string(s)?;
        Ok(JsonKind::String)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonKind, A::Error> {
        self.check_nesting()?;
        while seq.next_element_seed(self.nested())?.is_some() {}
        Ok(JsonKind::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonKind, A::Error> {
        self.check_nesting()?;
        while let Some(key) = map.next_key::<KeyLen>()? {
            if key.0 > self.limits.max_string_bytes {
                return Err(self.fail(format!("key longer than {} bytes", self.limits.max_string_bytes)));
            }
            map.next_value_seed(self.nested())?;
        }
        Ok(JsonKind::Object)
    }
}

/// The length of an object key, read without keeping it.
struct KeyLen(usize);

impl<'de> Deserialize<'de> for KeyLen {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyLen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, s: &str) -> Result<KeyLen, E> {
                Ok(KeyLen(s.len()))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn kind(s: &str) -> Result<JsonKind, String> {
        inspect(&raw(s), &Limits::default())
    }

    #[test]
    fn kinds_follow_the_written_number() {
        assert_eq!(kind("1"), Ok(JsonKind::Integer));
        assert_eq!(kind("-7"), Ok(JsonKind::Integer));
        assert_eq!(kind("123456789012345678901234567890"), Ok(JsonKind::Integer));
        assert_eq!(kind("1.0"), Ok(JsonKind::Float));
        assert_eq!(kind("1e3"), Ok(JsonKind::Float));
        assert_eq!(kind("\"a\\u0000b\""), Ok(JsonKind::String));
        assert_eq!(kind("null"), Ok(JsonKind::Null));
        assert_eq!(kind("[1,[2]]"), Ok(JsonKind::Array));
        assert_eq!(kind("{\"a\":{}}"), Ok(JsonKind::Object));
    }

    #[test]
    fn nesting_and_string_limits_are_enforced() {
        let limits = Limits { max_depth: 2, max_string_bytes: 4, ..Limits::default() };
        assert!(inspect(&raw("[1,2]"), &limits).is_ok());
        let err = inspect(&raw("[[1]]"), &limits).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
        assert!(inspect(&raw("\"abcd\""), &limits).is_ok());
        let err = inspect(&raw("\"abcde\""), &limits).unwrap_err();
        assert!(err.contains("longer than 4"), "{err}");
        assert!(inspect(&raw("[\"abcde\"]"), &limits).is_err());
        assert!(inspect(&raw("{\"abcde\":1}"), &limits).is_err());
    }

    #[test]
    fn declared_types_accept_their_values_and_null() {
        let schema = EntitySchema {
            fields: [
                ("t", FieldType::Text),
                ("i", FieldType::Int),
                ("r", FieldType::Real),
                ("b", FieldType::Bool),
                ("d", FieldType::Date),
                ("j", FieldType::Json),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        let check = |f: &str, v: &str| {
            let r = raw(v);
            schema.check(f, &r, inspect(&r, &Limits::default()).unwrap())
        };
        for (f, v) in [
            ("t", "\"x\""),
            ("t", "null"),
            ("i", "3"),
            ("r", "3"),
            ("r", "2.5"),
            ("b", "true"),
            ("b", "1"),
            ("b", "0"),
            ("d", "1279888110"),
            ("j", "{\"a\":[1]}"),
        ] {
            assert!(check(f, v).is_ok(), "{f}={v} refused");
        }
        for (f, v) in
            [("t", "1"), ("i", "2.5"), ("i", "\"3\""), ("b", "2"), ("b", "\"true\""), ("d", "1.5"), ("zz", "1")]
        {
            assert!(check(f, v).is_err(), "{f}={v} accepted");
        }
    }

    #[test]
    fn type_names_accept_persistence_js_spellings() {
        assert_eq!("VARCHAR(255)".parse::<FieldType>(), Ok(FieldType::Text));
        assert_eq!("boolean".parse::<FieldType>(), Ok(FieldType::Bool));
        assert_eq!("INTEGER".parse::<FieldType>(), Ok(FieldType::Int));
        assert!("BLOB".parse::<FieldType>().is_err());
    }
}
