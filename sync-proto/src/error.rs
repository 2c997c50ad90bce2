//! The JSON error body of every failed request:
//! `{"status": "error", "error": "<code>", "message": "<text>", "details": [...]}`.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. Each has exactly one HTTP status, so clients can branch on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON.
    MalformedJson,
    /// The body is JSON but not an array of objects, or items in it are invalid (see `details`).
    InvalidBody,
    /// A query parameter (`since`, `limit`) is not valid.
    InvalidQuery,
    /// No credentials, or credentials the server refused (`WWW-Authenticate` says which schemes).
    Unauthorized,
    /// The caller is authenticated but lacks the right (a role, a claim).
    Forbidden,
    /// The request comes from a web page of an origin the server does not allow.
    ForbiddenOrigin,
    /// The path names no entity this server serves.
    UnknownEntity,
    /// The resource does not exist (an event or a subscription of the admin API, or the admin
    /// API itself while no administrator is configured).
    NotFound,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// The body did not arrive within the configured time.
    RequestTimeout,
    /// The body could not be read whole: the connection broke, or its transfer encoding is corrupt.
    IncompleteBody,
    /// The body is larger than the configured limit.
    BodyTooLarge,
    /// The push has more items than the configured limit.
    TooManyItems,
    /// A header (such as `Idempotency-Key`) is not valid.
    InvalidHeader,
    /// A path of the static files is malformed or tries to leave their directory (`..`, an
    /// encoded `/`, an overlong path).
    InvalidPath,
    /// An idempotency key was reused with a different body.
    IdempotencyKeyReused,
    /// A push with preconditions was based on versions that changed since (see `conflicts`);
    /// nothing was applied.
    Conflict,
    /// A validation rule of another system refused the push (the message is its reason);
    /// nothing was applied.
    Rejected,
    /// Too many failed authentications from this client address; `Retry-After` says when to retry.
    TooManyAttempts,
    /// The store is unreachable or overloaded; nothing was applied and a retry may succeed.
    Unavailable,
    /// A fault of the server; nothing was applied.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MalformedJson
            | Self::InvalidBody
            | Self::InvalidQuery
            | Self::InvalidHeader
            | Self::InvalidPath
            | Self::IncompleteBody => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::ForbiddenOrigin => 403,
            Self::UnknownEntity | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::RequestTimeout => 408,
            Self::BodyTooLarge | Self::TooManyItems => 413,
            Self::IdempotencyKeyReused | Self::Rejected => 422,
            Self::TooManyAttempts => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// Whether the same request may succeed if sent again unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Unavailable | Self::Internal | Self::RequestTimeout | Self::IncompleteBody | Self::TooManyAttempts
        )
    }
}

/// What is wrong with one item of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// Position of the item in the pushed array, from 0.
    pub index: usize,
    /// The item's id, when it has a readable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The field at fault, when the fault is in one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, for people.
    pub reason: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `"error"`.
    pub status: String,
    /// The machine-readable code.
    pub error: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The faulty items of a push, when items are at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ItemError>,
    /// The objects of a `409 conflict`, each with what the server holds now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictItem>,
}

/// An object a push with preconditions was wrong about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictItem {
    /// The object's id.
    pub id: String,
    /// The `_lastChange` the push said its copy was based on (0 for "new").
    pub based_on: i64,
    /// What the server holds now, as a pull would return it (an object or a tombstone, with its
    /// `_lastChange`), its values exactly as stored; `null` when it holds nothing for the id.
    pub current: Option<Box<serde_json::value::RawValue>>,
}

/// Equal when they say the same: the same id, base, and current text.
impl PartialEq for ConflictItem {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.based_on, self.current.as_ref().map(|c| c.get()))
            == (&other.id, other.based_on, other.current.as_ref().map(|c| c.get()))
    }
}

impl Eq for ConflictItem {}

impl ErrorBody {
    /// An error body without item details.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: "error".into(), error, message: message.into(), details: Vec::new(), conflicts: Vec::new() }
    }

    /// An error body listing faulty items.
    pub fn with_details(error: ErrorCode, message: impl Into<String>, details: Vec<ItemError>) -> Self {
        Self { details, ..Self::new(error, message) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ErrorBody::with_details(
            ErrorCode::InvalidBody,
            "1 invalid item",
            vec![ItemError { index: 0, id: None, field: Some("id".into()), reason: "missing".into() }],
        );
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "error", "error": "invalid_body", "message": "1 invalid item",
                "details": [{"index": 0, "field": "id", "reason": "missing"}]})
        );
        let plain = serde_json::to_value(ErrorBody::new(ErrorCode::BodyTooLarge, "x")).unwrap();
        assert!(plain.get("details").is_none());
        assert_eq!(ErrorCode::BodyTooLarge.http_status(), 413);
    }
}
