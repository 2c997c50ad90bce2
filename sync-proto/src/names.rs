//! Validated newtypes: an entity name, an object id and a cursor can only be built through
//! constructors that check them, so the rest of the code never sees an invalid one.

use std::fmt;

/// Why a name, id or cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// An entity name must match `[A-Za-z][A-Za-z0-9_]*` and be at most [`EntityName::MAX_LEN`] bytes.
    #[error("invalid entity name {0:?}: expected a letter then letters, digits or '_', at most 64 characters")]
    Entity(String),
    /// An id must be a non-empty string of at most the configured number of bytes.
    #[error("invalid id: {0}")]
    Id(&'static str),
    /// An idempotency key must be 1 to 255 visible ASCII characters.
    #[error("invalid Idempotency-Key: expected 1 to 255 visible ASCII characters")]
    IdempotencyKey,
    /// A cursor must be a decimal integer.
    #[error("invalid cursor {0:?}: expected an integer number of milliseconds")]
    Cursor(String),
    /// A page size must be a non-negative decimal integer.
    #[error("invalid limit {0:?}: expected a whole number of updates")]
    Limit(String),
    /// `reset` must be `1`, `true`, `0` or `false`.
    #[error("invalid reset {0:?}: expected 1 or 0")]
    Reset(String),
    /// `Sync-Preconditions` must be `on`.
    #[error("invalid Sync-Preconditions: expected on")]
    Preconditions,
    /// A long-poll wait must be a non-negative decimal integer.
    #[error("invalid wait {0:?}: expected a whole number of seconds")]
    Wait(String),
}

/// The name of a synced entity (`Task`, `Feed`): a letter, then letters, digits or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityName(String);

impl EntityName {
    /// The longest entity name accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let mut chars = name.chars();
        let valid = name.len() <= Self::MAX_LEN
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid { Ok(Self(name)) } else { Err(NameError::Entity(name)) }
    }

    /// The entity served by a conventional path segment: `todoChanges` is entity `Todo`
    /// (persistence.js names entities with a capital and their URIs with a lower-case letter).
    /// Returns `None` for a segment that does not end in `Changes` or names no valid entity.
    pub fn from_changes_segment(segment: &str) -> Option<Self> {
        let stem = segment.strip_suffix("Changes")?;
        let mut chars = stem.chars();
        let first = chars.next()?;
        Self::new(format!("{}{}", first.to_ascii_uppercase(), chars.as_str())).ok()
    }

    /// The conventional path of this entity: `Feed` is served at `/feedChanges`.
    pub fn default_path(&self) -> String {
        let mut chars = self.0.chars();
        let first = chars.next().map(|c| c.to_ascii_lowercase()).unwrap_or_default();
        format!("/{first}{}Changes", chars.as_str())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of an object: an opaque, non-empty string, bounded in length by [`crate::Limits`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(String);

impl ObjectId {
    /// Checks that `id` is non-empty and at most `max_len` bytes, and wraps it.
    pub fn new(id: impl Into<String>, max_len: usize) -> Result<Self, NameError> {
        let id = id.into();
        if id.is_empty() {
            Err(NameError::Id("must not be empty"))
        } else if id.len() > max_len {
            Err(NameError::Id("longer than the configured limit"))
        } else {
            Ok(Self(id))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server timestamp in milliseconds since the epoch: the `_lastChange` of an object, the `now`
/// of an answer, the `since` of a pull. Never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Cursor(i64);

impl Cursor {
    /// The cursor before every change: a pull since zero returns everything.
    pub const ZERO: Cursor = Cursor(0);

    /// Wraps a millisecond value; negative values mean "from the beginning" and become zero.
    pub fn from_millis(ms: i64) -> Self {
        Self(ms.max(0))
    }

    /// Parses the `since` of a query: a decimal integer. Anything else (empty, `1.5`, `1e3`,
    /// `abc`, an overflow) is refused.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        text.parse::<i64>().map(Self::from_millis).map_err(|_| NameError::Cursor(text.chars().take(64).collect()))
    }

    /// The value in milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `Idempotency-Key` of a push: a push sent again under the same key is applied once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks that `key` is 1 to 255 visible ASCII characters, and wraps it.
    pub fn new(key: impl Into<String>) -> Result<Self, NameError> {
        let key = key.into();
        let valid = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
        if valid { Ok(Self(key)) } else { Err(NameError::IdempotencyKey) }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_are_checked() {
        assert!(EntityName::new("Task").is_ok());
        assert!(EntityName::new("t_2").is_ok());
        for bad in ["", "2task", "_x", "a-b", "a b", "é", &"a".repeat(65)] {
            assert!(EntityName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn changes_segment_maps_to_capitalised_entity_and_back() {
        let e = EntityName::from_changes_segment("todoChanges").unwrap();
        assert_eq!(e.as_str(), "Todo");
        assert_eq!(e.default_path(), "/todoChanges");
        assert_eq!(EntityName::new("Feed").unwrap().default_path(), "/feedChanges");
        assert!(EntityName::from_changes_segment("Changes").is_none());
        assert!(EntityName::from_changes_segment("todoUpdates").is_none());
        assert!(EntityName::from_changes_segment("to-doChanges").is_none());
    }

    #[test]
    fn ids_are_opaque_but_bounded() {
        assert!(ObjectId::new("F89F99F7B887423FB4B9C961C3883C0A", 256).is_ok());
        assert!(ObjectId::new("any string ☃ \u{0}", 256).is_ok());
        assert!(ObjectId::new("", 256).is_err());
        assert!(ObjectId::new("x".repeat(257), 256).is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::new("3f2a-01").is_ok());
        for bad in ["", "a b", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cursors_parse_integers_only() {
        assert_eq!(Cursor::parse("1279888110421").unwrap().millis(), 1279888110421);
        assert_eq!(Cursor::parse("-5").unwrap(), Cursor::ZERO);
        for bad in ["", "1.5", "1e3", "abc", "null", "99999999999999999999", " 1"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
