//! An entity's path: `GET` pulls, `POST` pushes; any other path is `404`.
//!
//! Entity paths are resolved per request by [`crate::config::Entities`], so the same handler
//! serves the schemaless `/<name>Changes` convention and declared, custom paths.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{pull, push};
use crate::config::ResolvedEntity;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Scope;

/// Resolves the entity, dispatches on the method, and counts store failures.
pub async fn changes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(entity) = state.entities.resolve(req.path()) else {
        // Reserved paths stay the server's even when the app's directory has such a file.
        return match &state.files {
            Some(files) if !super::is_reserved(req.path()) => super::files::serve(&req, files).await,
            _ => Err(ApiError::UnknownEntity(req.path().to_owned())),
        };
    };
    let answer = dispatch(&req, payload, &entity, &state).await;
    if let Err(ApiError::Store(e)) = &answer
        && let Some(kind) = e.failure_kind()
    {
        state.metrics.store_error(kind);
    }
    answer
}

async fn dispatch(
    req: &HttpRequest,
    payload: web::Payload,
    entity: &ResolvedEntity,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    match *req.method() {
        Method::GET => pull::pull(req, entity, &scope_of(req, entity, state, false).await?, state).await,
        Method::POST => push::push(req, payload, entity, &scope_of(req, entity, state, true).await?, state).await,
        ref other => Err(ApiError::MethodNotAllowed { method: other.to_string(), allow: "GET, POST" }),
    }
}

/// The objects a request reads (or, when `write`, writes): outside any partition while
/// authentication is off; else the caller's partition of the entity, once the caller is
/// authenticated and allowed, and a push authenticated by a cookie comes from an allowed page.
async fn scope_of(
    req: &HttpRequest,
    entity: &ResolvedEntity,
    state: &AppState,
    write: bool,
) -> Result<Scope, ApiError> {
    let Some(auth) = &state.auth else {
        return Ok(Scope::entity(entity.name.clone()));
    };
    let refuse = |why| ApiError::Auth { why, challenge: auth.challenges().to_owned() };
    let who = auth.authenticate(req).await.map_err(refuse)?;
    if write && who.from_cookie {
        state.origins.check_ambient(req)?;
    }
    let partition = entity.access.partition(&who, write).map_err(refuse)?;
    Ok(Scope::partitioned(entity.name.clone(), partition))
}

/// A `200` JSON answer that no cache keeps.
pub(super) fn json_answer() -> actix_web::HttpResponseBuilder {
    let mut answer = HttpResponse::Ok();
    answer
        .content_type(actix_web::http::header::ContentType::json())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    answer
}
