//! The one place where errors become HTTP answers: every failure is an error body of
//! `docs/PROTOCOL.md` with the status its code implies. Server faults are logged with their whole
//! cause chain; their answers never carry a database's own text, which may name tables, roles or
//! hosts.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use sync_proto::{ConflictItem, ErrorBody, ErrorCode, NameError, PushError};

use crate::auth::AuthError;
use crate::budget::BudgetSpent;
use crate::store::StoreError;

/// The `Retry-After` of every `503`, in seconds: the failures it answers (a busy store, a full body
/// budget) usually pass within a second, and clients back off further on their own.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The push body is malformed, too large in items, or has invalid items.
    #[error(transparent)]
    Push(#[from] PushError),
    /// A query parameter is invalid.
    #[error("{0}")]
    Query(NameError),
    /// A header is invalid.
    #[error("{0}")]
    Header(NameError),
    /// The request is not authenticated, or not allowed (see [`AuthError`]); `challenge` is the
    /// `WWW-Authenticate` of a `401`.
    #[error("{why}")]
    Auth {
        /// Why.
        why: AuthError,
        /// The schemes the server accepts.
        challenge: String,
    },
    /// A web page of another origin, not in `cors_origins`, sent this request.
    #[error(
        "a page of another site sent this request ({0}); only this server's own pages and the origins in cors_origins may"
    )]
    ForbiddenOrigin(String),
    /// No entity is served at this path.
    #[error("no entity is served at {0}")]
    UnknownEntity(String),
    /// A path of the static files is malformed or tries to leave their directory.
    #[error("{0}")]
    InvalidPath(String),
    /// No such resource (of the admin API, or no static file there).
    #[error("{0}")]
    NotFound(String),
    /// A request of the admin API is invalid: a parameter or its JSON body (the code says which).
    #[error("{1}")]
    Invalid(ErrorCode, String),
    /// A validator did not accept the push; nothing was applied.
    #[error(transparent)]
    Verdict(#[from] crate::validation::Verdict),
    /// The path does not serve this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods served at this path, as the `Allow` header lists them.
        allow: &'static str,
    },
    /// The body is larger than the configured limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body did not arrive in time; nothing was applied.
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// Request bodies in memory are at their configured maximum; this one was not read.
    #[error(transparent)]
    Busy(#[from] BudgetSpent),
    /// The most long-polls allowed (`[long_poll] max_waiting`) are waiting already.
    #[error("{0} pulls are waiting for changes already, the most this server holds; retry shortly")]
    TooManyWaiting(usize),
    /// The body could not be read from the connection (it broke, or its encoding is corrupt).
    #[error("the request body could not be read whole: {0}")]
    BodyRead(String),
    /// A fault of the server itself; nothing was applied.
    #[error("{0}")]
    Internal(String),
    /// The instance cannot serve (`/healthz`): a background task died or the store does not answer.
    #[error("{0}")]
    Unhealthy(String),
    /// The store failed, or refused the push.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Push(e) => e.code(),
            Self::Query(_) => ErrorCode::InvalidQuery,
            Self::Header(_) => ErrorCode::InvalidHeader,
            Self::Auth { why: AuthError::Missing { .. } | AuthError::Refused(_), .. } => ErrorCode::Unauthorized,
            Self::Auth { why: AuthError::Forbidden(_), .. } => ErrorCode::Forbidden,
            Self::Auth { why: AuthError::TooManyFailures { .. }, .. } => ErrorCode::TooManyAttempts,
            Self::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            Self::UnknownEntity(_) => ErrorCode::UnknownEntity,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::InvalidPath(_) => ErrorCode::InvalidPath,
            Self::Invalid(code, _) => *code,
            Self::Verdict(crate::validation::Verdict::Rejected(_)) => ErrorCode::Rejected,
            Self::Verdict(crate::validation::Verdict::Unavailable(_)) => ErrorCode::Unavailable,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::BodyRead(_) => ErrorCode::IncompleteBody,
            Self::Busy(_) | Self::TooManyWaiting(_) | Self::Unhealthy(_) => ErrorCode::Unavailable,
            Self::BodyTimeout(_) => ErrorCode::RequestTimeout,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Store(StoreError::Unavailable { .. }) => ErrorCode::Unavailable,
            Self::Store(StoreError::IdempotencyKeyReused(_)) => ErrorCode::IdempotencyKeyReused,
            Self::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            Self::Store(StoreError::Internal { .. }) => ErrorCode::Internal,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        match self {
            Self::Push(e) => e.to_body(),
            // A fault's cause is logged, not shown: it may name files, hosts, roles or tables.
            Self::Store(StoreError::Internal { .. }) | Self::Internal(_) => {
                ErrorBody::new(ErrorCode::Internal, "the server failed to process the request; nothing was applied")
            }
            Self::Store(StoreError::Unavailable { .. }) => ErrorBody::new(
                ErrorCode::Unavailable,
                "the store is unavailable or busy; retry shortly (an Idempotency-Key makes a retried push safe)",
            ),
            Self::Store(StoreError::Conflict(conflicts)) => ErrorBody {
                conflicts: conflicts.iter().map(conflict_item).collect(),
                ..ErrorBody::new(ErrorCode::Conflict, self.to_string())
            },
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }
}

/// A conflict as the `409` body lists it: the current version as a pull writes it (the stored
/// fields spliced verbatim, so that every number keeps its digits).
fn conflict_item(conflict: &crate::store::Conflict) -> ConflictItem {
    let current = conflict.current.as_ref().and_then(|object| {
        let mut writer = sync_proto::PullWriter::new();
        writer.take(); // the answer's opening: only the object is wanted
        match &object.fields {
            Some(fields) => writer.object(&object.id, fields, object.last_change),
            None => writer.tombstone(&object.id, object.last_change),
        }
        serde_json::value::RawValue::from_string(writer.take()).ok()
    });
    ConflictItem { id: conflict.id.clone(), based_on: conflict.based_on.millis(), current }
}

/// An error with every cause after it (`a: b: c`), as logs show it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        self.answer().json(self.body())
    }
}

impl ApiError {
    /// The status and headers of this error's answer, without its body, and the log line: the
    /// JSON error bodies and the admin console's error pages are the same answers.
    pub fn answer(&self) -> HttpResponseBuilder {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %chain(self), "request failed");
        } else {
            tracing::info!(error = %self, "request refused");
        }
        let mut answer = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            answer.insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()));
        }
        match self {
            Self::MethodNotAllowed { allow, .. } => {
                answer.insert_header(("Allow", *allow));
            }
            Self::Auth { why: AuthError::TooManyFailures { retry_after_secs }, .. } => {
                answer.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            Self::Auth { challenge, .. } if status == StatusCode::UNAUTHORIZED => {
                answer.insert_header(("WWW-Authenticate", challenge.as_str()));
            }
            _ => {}
        }
        answer
    }
}
