//! Field types of a declared entity, and the check of one JSON value: its nesting depth, its string
//! lengths, and (for a declared entity) its type. Values themselves are never rewritten.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
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

/// Checks a value against the nesting and string limits and tells its kind. The error is a reason
/// for people, without positions.
///
/// `value` was already checked to be valid JSON. Strings are measured as bytes, so a lone
/// surrogate escape (`"\ud83d"`, which `JSON.stringify` writes for a string cut in the middle of
/// an emoji) is accepted and kept as sent, like every other value.
pub fn inspect(value: &RawValue, limits: &Limits) -> Result<JsonKind, String> {
    inspect_at(value, 1, limits)
}

fn inspect_at(value: &RawValue, depth: usize, limits: &Limits) -> Result<JsonKind, String> {
    let text = value.get();
    let nest = || {
        if depth >= limits.max_depth { Err(format!("nested deeper than {} levels", limits.max_depth)) } else { Ok(()) }
    };
    let check_len = |len: usize, what: &str| {
        if len > limits.max_string_bytes {
            Err(format!("{what} longer than {} bytes", limits.max_string_bytes))
        } else {
            Ok(())
        }
    };
    match text.as_bytes().first() {
        Some(b'"') => {
            check_len(string_bytes(text)?, "string")?;
            Ok(JsonKind::String)
        }
        Some(b'[') => {
            nest()?;
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| INVALID.to_owned())?;
            for item in items {
                inspect_at(item, depth + 1, limits)?;
            }
            Ok(JsonKind::Array)
        }
        Some(b'{') => {
            nest()?;
            let mut de = serde_json::Deserializer::from_str(text);
            let members = de.deserialize_map(Members).map_err(|_| INVALID.to_owned())?;
            for (key_len, member) in members {
                check_len(key_len, "key")?;
                inspect_at(member, depth + 1, limits)?;
            }
            Ok(JsonKind::Object)
        }
        Some(b't' | b'f') => Ok(JsonKind::Bool),
        Some(b'n') => Ok(JsonKind::Null),
        Some(_) if is_integer_text(text) => Ok(JsonKind::Integer),
        // JSON readers hold such numbers as 64-bit floats: `1e999` would become Infinity (a
        // JavaScript client) or an error (most others), and could then never be synced again.
        Some(_) if !text.parse::<f64>().is_ok_and(f64::is_finite) => {
            Err("a number too large for a 64-bit float, which JSON readers cannot hold".to_owned())
        }
        Some(_) => Ok(JsonKind::Float),
        None => Err(INVALID.to_owned()),
    }
}

const INVALID: &str = "not a valid JSON value";

fn is_integer_text(raw: &str) -> bool {
    !raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// The unescaped length of a JSON string literal, lone surrogates included (as 3 bytes each).
fn string_bytes(literal: &str) -> Result<usize, String> {
    let mut de = serde_json::Deserializer::from_str(literal);
    de.deserialize_bytes(ByteLen).map_err(|_| INVALID.to_owned())
}

/// The length of a string read as bytes, which unlike `str` admits lone surrogates.
struct ByteLen;

impl<'de> Visitor<'de> for ByteLen {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<usize, E> {
        Ok(bytes.len())
    }
}

impl<'de> DeserializeSeed<'de> for ByteLen {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_bytes(self)
    }
}

/// The members of an object: each key's length and its value, unparsed.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(usize, &'de RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key_len) = map.next_key_seed(ByteLen)? {
            members.push((key_len, map.next_value::<&'de RawValue>()?));
        }
        Ok(members)
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
    fn numbers_beyond_any_float_are_refused_and_long_integers_kept() {
        let limits = Limits::default();
        for text in ["1e999", "-1e999", "1.5E+400", "[1, 2e308]", "{\"a\": -9e99999}"] {
            let err = inspect(&raw(text), &limits).unwrap_err();
            assert!(err.contains("too large"), "{text}: {err}");
        }
        for text in ["1e308", "-1.7976931348623157e308", "1e-999", "0.5"] {
            assert_eq!(inspect(&raw(text), &limits), Ok(JsonKind::Float), "{text}");
        }
        let long = "9".repeat(400);
        assert_eq!(inspect(&raw(&long), &limits), Ok(JsonKind::Integer));
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
    fn lone_surrogates_are_strings_like_any_other() {
        assert_eq!(kind(r#""\ud83d""#), Ok(JsonKind::String));
        assert_eq!(kind(r#"["a\udc00", {"\ud800": 1}]"#), Ok(JsonKind::Array));
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
        for nested in ["[\"abcde\"]", "{\"abcde\":1}"] {
            let err = inspect(&raw(nested), &limits).unwrap_err();
            assert!(err.contains("longer than 4"), "{nested}: {err}");
        }
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
