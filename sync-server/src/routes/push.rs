//! `POST <path>`: read the body within its limits, parse and validate it, apply it.

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use sync_proto::{IdempotencyKey, NameError, PRECONDITIONS_HEADER, PushAnswer, parse_push};

use super::body::read_body;
use crate::budget::Reservation;
use crate::config::ResolvedEntity;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Idempotency, Push, Scope};
use crate::validation::PushToValidate;

/// Above this size a push body is parsed on a blocking thread, so that one large push does not
/// stall the other requests of its worker.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Answers a push: `200 {"status":"ok","now":N}` once it is durably applied (or replayed, with
/// `Idempotency-Replayed: true`), or an error that applied nothing.
#[tracing::instrument(skip_all, fields(entity = %entity.name))]
pub async fn push(
    req: &HttpRequest,
    payload: web::Payload,
    entity: &ResolvedEntity,
    scope: &Scope,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(req)?;
    let preconditions = preconditions(req)?;
    // Held until the push is answered: the body and what is parsed from it stay in memory until then.
    let mut reservation = Reservation::default();
    let body = tokio::time::timeout(state.body_timeout, read_body(req, payload, state, &mut reservation))
        .await
        .map_err(|_| ApiError::BodyTimeout(state.body_timeout.as_secs()))??;
    let idempotency = key.map(|key| Idempotency::new(key, &body, state.idempotency_ttl));

    let limits = state.limits;
    let schema = entity.schema.clone();
    let changes = if body.len() <= INLINE_PARSE_BYTES {
        parse_push(&body, &limits, schema.as_deref())?
    } else {
        let body = body.clone();
        tokio::task::spawn_blocking(move || parse_push(&body, &limits, schema.as_deref()))
            .await
            .map_err(|e| ApiError::Internal(format!("the parse task failed: {e}")))??
    };
    let items = changes.len();
    let request_id = req.extensions().get::<tracing_actix_web::RequestId>().map(|id| id.to_string());
    // Before the transaction: no lock is held while other systems decide.
    for validator in state.validators.iter() {
        validator.validate(PushToValidate { scope, body: &body, request_id: request_id.as_deref() }).await?;
    }
    let outcome = state.store.push(scope, Push { changes, idempotency, request_id, preconditions }).await?;
    tracing::debug!(items, now = %outcome.now, replayed = outcome.replayed, "pushed");
    state.metrics.push(items, outcome.replayed);
    if !outcome.replayed {
        state.live.committed(scope);
    }
    if !outcome.replayed && state.outbox_wake.is_on() {
        state.outbox_wake.wake();
    }
    let mut answer = HttpResponse::Ok();
    if outcome.replayed {
        answer.insert_header(("Idempotency-Replayed", "true"));
    }
    Ok(answer.insert_header((header::CACHE_CONTROL, "no-store")).json(PushAnswer::new(outcome.now)))
}

/// The `Idempotency-Key` header, if sent once; sent twice, or malformed, it is a `400`.
/// Whether the push asks for preconditions (`Sync-Preconditions: on`, once).
fn preconditions(req: &HttpRequest) -> Result<bool, ApiError> {
    let mut values = req.headers().get_all(PRECONDITIONS_HEADER);
    match (values.next(), values.next()) {
        (None, _) => Ok(false),
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"on") => Ok(true),
        _ => Err(ApiError::Header(NameError::Preconditions)),
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut keys = req.headers().get_all("Idempotency-Key");
    match (keys.next(), keys.next()) {
        (None, _) => Ok(None),
        (Some(key), None) => IdempotencyKey::new(key.to_str().unwrap_or_default()).map(Some).map_err(ApiError::Header),
        (Some(_), Some(_)) => Err(ApiError::Header(NameError::IdempotencyKey)),
    }
}
