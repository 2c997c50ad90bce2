//! An entity's path: `GET` pulls, `POST` pushes; any other path is `404`.
//!
//! Entity paths are resolved per request by [`crate::config::Entities`], so the same handler
//! serves the schemaless `/<name>Changes` convention and declared, custom paths.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{pull, push};
use crate::error::ApiError;
use crate::state::AppState;

/// Resolves the entity, dispatches on the method, and counts store failures.
pub async fn changes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let entity = state.entities.resolve(req.path()).ok_or_else(|| ApiError::UnknownEntity(req.path().to_owned()))?;
    let answer = match *req.method() {
        Method::GET => pull::pull(&req, &entity, &state).await,
        Method::POST => push::push(&req, payload, &entity, &state).await,
        ref other => Err(ApiError::MethodNotAllowed { method: other.to_string(), allow: "GET, POST" }),
    };
    if let Err(ApiError::Store(e)) = &answer
        && let Some(kind) = e.failure_kind()
    {
        state.metrics.store_error(kind);
    }
    answer
}

/// A `200` JSON answer that no cache keeps.
pub(super) fn json_answer() -> actix_web::HttpResponseBuilder {
    let mut answer = HttpResponse::Ok();
    answer
        .content_type(actix_web::http::header::ContentType::json())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    answer
}
