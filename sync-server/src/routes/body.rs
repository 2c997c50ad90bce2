//! Reading a push body within the body limit and the server's budget of bodies in memory.

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use bytes::BytesMut;
use futures_util::StreamExt;

use crate::budget::Reservation;
use crate::error::ApiError;
use crate::state::AppState;

/// Reads the whole body, refusing at once (from `Content-Length`) or as soon as it passes the body
/// limit, and reserving its size in the server's body budget (refused at once when spent).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    reservation: &mut Reservation,
) -> Result<bytes::Bytes, ApiError> {
    let limit = state.limits.max_body_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => return Err(ApiError::BodyTooLarge { limit }),
        Some(n) => state.bodies.reserve(reservation, n)?,
        None => {}
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            PayloadError::Overflow => ApiError::BodyTooLarge { limit },
            other => ApiError::BodyRead(other.to_string()),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        if declared.is_none() {
            state.bodies.reserve(reservation, chunk.len())?;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
