//! The client's error types, one per boundary: [`StoreError`] for the local database,
//! [`TransportError`] for the HTTP exchange with the server, and [`SyncError`] for a sync run,
//! which wraps either with the entity it was working on.
//!
//! Retry decisions ask [`TransportError::is_retryable`] / [`SyncError::is_retryable`], never an
//! error's message.

use sync_proto::ErrorCode;

/// Why an operation on the local database failed. Whatever the error, the transaction it
/// happened in was rolled back: nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error (I/O, a full disk, a locked database, a corrupt file).
    #[error("local database error while {context}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The lock file that keeps two processes from syncing one database at once failed.
    #[error("cannot lock {path} for a sync")]
    SyncLock {
        /// The lock file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The schema given to [`crate::Store::open`] is invalid, or contradicts the database.
    #[error("invalid schema: {0}")]
    Schema(String),
    /// The entity is not declared in the schema.
    #[error("unknown entity {0:?}")]
    UnknownEntity(String),
    /// The field is not declared for the entity.
    #[error("entity {entity} has no field {field:?}")]
    UnknownField {
        /// The entity.
        entity: String,
        /// The undeclared field.
        field: String,
    },
    /// A value does not fit the declared type of its field.
    #[error("invalid value for {entity}.{field}: {reason}")]
    InvalidValue {
        /// The entity.
        entity: String,
        /// The field.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The fields of a write were not given as a JSON object.
    #[error("the fields of a {entity} must be a JSON object")]
    NotAnObject {
        /// The entity.
        entity: String,
    },
    /// An object id is empty or too long.
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The refused id (cut to 64 characters).
        id: String,
        /// Why it was refused.
        reason: String,
    },
    /// No live object with this id exists locally.
    #[error("no {entity} with id {id:?}")]
    NotFound {
        /// The entity.
        entity: String,
        /// The id.
        id: String,
    },
    /// An object with this id already exists locally.
    #[error("a {entity} with id {id:?} already exists")]
    AlreadyExists {
        /// The entity.
        entity: String,
        /// The id.
        id: String,
    },
    /// A stored object cannot be read as the app's struct (see [`crate::TypedEntity`]): a field
    /// the struct requires is `null`, or holds a value the struct's type cannot take.
    #[error("the {entity} {id:?} cannot be read as the app's struct: {reason}")]
    Decode {
        /// The entity.
        entity: String,
        /// The object's id.
        id: String,
        /// What serde said.
        reason: String,
    },
    /// The app's struct cannot be written as an object's fields (its `Serialize` failed, or it
    /// does not serialize as a map of fields).
    #[error("a {entity} cannot be written from the app's struct: {reason}")]
    Encode {
        /// The entity.
        entity: String,
        /// What serde said.
        reason: String,
    },
    /// Data in the local database cannot be read back as this client wrote it.
    #[error("local database holds unreadable sync data: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite { context, source }
    }

    /// Whether the same operation may succeed later unchanged (the database was busy or locked).
    pub fn is_retryable(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match self {
            Self::Sqlite { source, .. } => matches!(source.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked)),
            _ => false,
        }
    }
}

/// Why an exchange with the server failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The transport could not be configured (an invalid base URL or header, a TLS backend that
    /// cannot start).
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// The server could not be reached, or the connection broke before an answer arrived.
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// The request URL.
        url: String,
        /// What the network layer said.
        reason: String,
    },
    /// No answer arrived within the configured timeout.
    #[error("no answer from {url} within the timeout")]
    Timeout {
        /// The request URL.
        url: String,
    },
    /// The server answered with a status other than `200`.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The machine-readable code of the error body, when the server sent one.
        code: Option<ErrorCode>,
        /// The message of the error body, or the start of the body.
        message: String,
    },
    /// The token provider gave no token.
    #[error("no token for the server: {0}")]
    Token(String),
    /// The server answered `200` with a body that is not a valid answer of the protocol.
    #[error("invalid answer from {url}: {reason}")]
    InvalidAnswer {
        /// The request URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl TransportError {
    /// Whether sending the same request again may succeed: connection failures, timeouts,
    /// `408`, `429` and `5xx` answers. A `4xx` answer means the request itself is refused.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::Config(_) | Self::Token(_) | Self::InvalidAnswer { .. } => false,
        }
    }

    /// Whether the server could not be reached at all (no connection, or no answer within the
    /// timeout), as when the device is offline; an answer with an error status is not this.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. })
    }

    /// Whether the server refused a push with preconditions because objects changed since the
    /// versions it was based on (`409 conflict`): it applied nothing of it.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Status { code: Some(ErrorCode::Conflict), .. })
    }

    /// Whether the server refused the body of a push as invalid (malformed, too large, an invalid
    /// item, an idempotency key reused for another body): sending it again cannot succeed, and
    /// the server applied nothing of it.
    pub fn is_rejected_body(&self) -> bool {
        match self {
            Self::Status { status, code, .. } => {
                matches!(
                    code,
                    Some(
                        ErrorCode::MalformedJson
                            | ErrorCode::InvalidBody
                            | ErrorCode::BodyTooLarge
                            | ErrorCode::TooManyItems
                            | ErrorCode::IdempotencyKeyReused
                    )
                ) || (code.is_none() && matches!(status, 400 | 413 | 422))
            }
            _ => false,
        }
    }
}

/// Why a sync run stopped. Everything applied before the error is kept: each pulled page and
/// each acknowledged push was committed locally, so the next run continues from there.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The exchange with the server failed.
    #[error("cannot sync {entity}")]
    Transport {
        /// The entity being synced.
        entity: String,
        /// What failed.
        #[source]
        source: TransportError,
    },
    /// The server's answers break the protocol (for example, paging that does not advance).
    #[error("cannot sync {entity}: the server broke the protocol: {reason}")]
    Protocol {
        /// The entity being synced.
        entity: String,
        /// What was wrong.
        reason: String,
    },
    /// A conflict handler returned a merged value that does not fit the schema.
    #[error("the conflict handler's value for {entity} {id:?} is invalid")]
    InvalidResolution {
        /// The entity.
        entity: String,
        /// The object's id.
        id: String,
        /// Why the value was refused.
        #[source]
        source: Box<StoreError>,
    },
}

impl SyncError {
    /// Whether running the sync again later may succeed without changing anything locally:
    /// the server was unreachable, busy or failing, or the local database was locked.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Transport { source, .. } => source.is_retryable(),
            Self::Protocol { .. } | Self::InvalidResolution { .. } => false,
        }
    }

    /// Whether the sync stopped because the server could not be reached (see
    /// [`TransportError::is_unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transport { source, .. } if source.is_unreachable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: Option<ErrorCode>) -> TransportError {
        TransportError::Status { url: "u".into(), status, code, message: String::new() }
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(TransportError::Connect { url: "u".into(), reason: "refused".into() }.is_retryable());
        assert!(TransportError::Timeout { url: "u".into() }.is_retryable());
        assert!(status(503, Some(ErrorCode::Unavailable)).is_retryable());
        assert!(status(502, None).is_retryable());
        assert!(status(429, None).is_retryable());
        assert!(!status(400, Some(ErrorCode::InvalidBody)).is_retryable());
        assert!(!status(401, None).is_retryable());
        assert!(!TransportError::InvalidAnswer { url: "u".into(), reason: "x".into() }.is_retryable());
    }

    #[test]
    fn rejected_bodies_are_told_apart_from_refused_requests() {
        assert!(status(400, Some(ErrorCode::InvalidBody)).is_rejected_body());
        assert!(status(422, Some(ErrorCode::IdempotencyKeyReused)).is_rejected_body());
        assert!(status(413, None).is_rejected_body());
        assert!(!status(400, Some(ErrorCode::InvalidHeader)).is_rejected_body());
        assert!(!status(401, None).is_rejected_body());
        assert!(!status(500, None).is_rejected_body());
    }
}
