//! The one place where errors become HTTP answers: every failure is a PROTOCOL.md error body
//! with the status its code implies, and server faults are logged with their cause.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sync_proto::{ErrorBody, ErrorCode, NameError, PushError};

use crate::budget::BudgetSpent;
use crate::store::StoreError;

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
    /// A web page of another origin, not in `cors_origins`, sent this request.
    #[error("requests from pages of {0} are not allowed here")]
    ForbiddenOrigin(String),
    /// No entity is served at this path.
    #[error("no entity is served at {0}")]
    UnknownEntity(String),
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
    /// The body could not be read from the connection.
    #[error("the request body could not be read: {0}")]
    Payload(String),
    /// The store failed; nothing was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Push(e) => e.code(),
            Self::Query(_) => ErrorCode::InvalidQuery,
            Self::Header(_) => ErrorCode::InvalidHeader,
            Self::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            Self::UnknownEntity(_) => ErrorCode::UnknownEntity,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::Payload(_) => ErrorCode::MalformedJson,
            Self::Busy(_) => ErrorCode::Unavailable,
            Self::BodyTimeout(_) => ErrorCode::RequestTimeout,
            Self::Store(StoreError::Unavailable(_)) => ErrorCode::Unavailable,
            Self::Store(StoreError::IdempotencyKeyReused(_)) => ErrorCode::IdempotencyKeyReused,
            Self::Store(StoreError::Internal(_)) => ErrorCode::Internal,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        match self {
            Self::Push(e) => e.to_body(),
            // A fault's cause is logged, not shown: it may name files or hosts.
            Self::Store(StoreError::Internal(_)) => {
                ErrorBody::new(ErrorCode::Internal, "the server failed to process the request; nothing was applied")
            }
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(error = %self, "request refused");
        }
        let mut answer = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            answer.insert_header(("Retry-After", "1"));
        }
        if let Self::MethodNotAllowed { allow, .. } = self {
            answer.insert_header(("Allow", *allow));
        }
        answer.json(self.body())
    }
}
