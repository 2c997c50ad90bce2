//! The HTTP handlers: pull (`GET <path>?since=`), push (`POST <path>`), `/healthz` and `/metrics`.
//!
//! Entity paths are resolved per request by [`Entities`], so the same handler serves the
//! schemaless `/<name>Changes` convention and declared, custom paths.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sync_proto::{IdempotencyKey, Limits, NameError, PullQuery, PushAnswer, parse_push};

use crate::budget::{BodyBudget, Reservation};
use crate::config::{Entities, ResolvedEntity};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{Push, Store};

/// Above this size a push body is parsed on a blocking thread, so that one large push does not
/// stall the other requests of its worker.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where objects are stored.
    pub store: Arc<dyn Store>,
    /// Which entities are served, at which paths.
    pub entities: Entities,
    /// Bounds on requests.
    pub limits: Limits,
    /// The memory all request bodies may hold at once.
    pub bodies: BodyBudget,
    /// What `/metrics` reports.
    pub metrics: Metrics,
    /// How long a push may take to send its body.
    pub body_timeout: Duration,
    /// `cors_origins`: when not empty, requests from pages of other origins are refused.
    pub origins: Vec<String>,
}

impl AppState {
    /// Whether a request with this `Origin` header may use an entity. Without configured origins
    /// every request may (hybrid apps send `file://` or `null` origins); with them, a browser page
    /// must be of this server's own host or of a listed origin, so that pages of other sites
    /// cannot write through their users' browsers.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        self.origins.is_empty()
            || self.origins.iter().any(|o| o == "*" || o == origin)
            || origin.split_once("://").is_some_and(|(_, origin_host)| origin_host == host)
    }
}

/// `GET /healthz`: `200 {"status":"ok"}` when the store answers, else `503` with an error body.
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.health().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ok"})))
}

/// `GET /metrics`: the server's metrics in the Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// Any method but GET on `/healthz` and `/metrics`.
pub async fn get_only(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET" })
}

/// Every other path: an entity's changes, or `404`.
pub async fn changes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let entity = state.entities.resolve(req.path()).ok_or_else(|| ApiError::UnknownEntity(req.path().to_owned()))?;
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !state.origin_allowed(origin, req.connection_info().host()) {
            return Err(ApiError::ForbiddenOrigin(origin.chars().take(200).collect()));
        }
    }
    let answer = match *req.method() {
        Method::GET => pull(&req, &entity, &state).await,
        Method::POST => push(&req, payload, &entity, &state).await,
        ref other => Err(ApiError::MethodNotAllowed { method: other.to_string(), allow: "GET, POST" }),
    };
    if let Err(ApiError::Store(e)) = &answer
        && let Some(kind) = e.failure_kind()
    {
        state.metrics.store_error(kind);
    }
    answer
}

#[tracing::instrument(skip_all, fields(entity = %entity.name))]
async fn pull(req: &HttpRequest, entity: &ResolvedEntity, state: &AppState) -> Result<HttpResponse, ApiError> {
    let query = PullQuery::parse(req.query_string(), &state.limits).map_err(ApiError::Query)?;
    if query.limit.is_some() {
        let page = state.store.pull(&entity.name, query).await?;
        tracing::debug!(since = %query.since, now = %page.now, updates = page.objects.len(), "pulled a page");
        return Ok(json_answer().body(page.to_json(true)));
    }
    let mut chunks = state.store.pull_stream(&entity.name, query.since).await?;
    // An answer that fits in one chunk goes out with a Content-Length; a larger one is streamed
    // chunk by chunk as the store reads it, so memory stays bounded whatever the answer's size.
    let first = chunks.recv().await.transpose()?.unwrap_or_default();
    let Some(second) = chunks.recv().await else {
        return Ok(json_answer().body(first));
    };
    let head = futures_util::stream::iter([Ok(first), second]);
    let rest = futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx));
    Ok(json_answer().streaming(head.chain(rest)))
}

#[tracing::instrument(skip_all, fields(entity = %entity.name))]
async fn push(
    req: &HttpRequest,
    payload: web::Payload,
    entity: &ResolvedEntity,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let mut keys = req.headers().get_all("Idempotency-Key");
    let key = match (keys.next(), keys.next()) {
        (None, _) => None,
        (Some(key), None) => Some(IdempotencyKey::new(key.to_str().unwrap_or_default()).map_err(ApiError::Header)?),
        (Some(_), Some(_)) => return Err(ApiError::Header(NameError::IdempotencyKey)),
    };
    // Held until the push is answered: the body and what is parsed from it stay in memory until then.
    let mut reservation = Reservation::default();
    let body = tokio::time::timeout(state.body_timeout, read_body(req, payload, state, &mut reservation))
        .await
        .map_err(|_| ApiError::BodyTimeout(state.body_timeout.as_secs()))??;
    let idempotency = key.map(|k| (k, hex::encode(Sha256::digest(&body))));

    let limits = state.limits;
    let schema = entity.schema.clone();
    let changes = if body.len() <= INLINE_PARSE_BYTES {
        parse_push(&body, &limits, schema.as_deref())?
    } else {
        tokio::task::spawn_blocking(move || parse_push(&body, &limits, schema.as_deref()))
            .await
            .map_err(|e| ApiError::Payload(e.to_string()))??
    };
    let items = changes.len();
    let outcome = state.store.push(&entity.name, Push { changes, idempotency }).await?;
    tracing::debug!(items, now = %outcome.now, replayed = outcome.replayed, "pushed");
    state.metrics.push(items, outcome.replayed);
    let mut answer = HttpResponse::Ok();
    if outcome.replayed {
        answer.insert_header(("Idempotency-Replayed", "true"));
    }
    Ok(answer.insert_header((header::CACHE_CONTROL, "no-store")).json(PushAnswer::new(outcome.now)))
}

/// Reads the whole body, refusing at once (from `Content-Length`) or as soon as it passes the body
/// limit, and reserving its size in the server's body budget (refused at once when spent).
async fn read_body(
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
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
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

fn json_answer() -> actix_web::HttpResponseBuilder {
    let mut answer = HttpResponse::Ok();
    answer.content_type(header::ContentType::json()).insert_header((header::CACHE_CONTROL, "no-store"));
    answer
}
