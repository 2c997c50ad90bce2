//! `GET /healthz`: whether this instance can serve.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::state::AppState;

/// `200 {"status":"ok"}` when the store answers and every background task runs; else `503`
/// with an error body that says what is wrong.
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some((task, why)) = state.tasks.dead().into_iter().next() {
        return Err(ApiError::Unhealthy(format!("background task {task} has stopped: {why}")));
    }
    state.store.health().await.map_err(|e| {
        tracing::error!(error = %crate::error::chain(&e), "health check failed");
        ApiError::Unhealthy("the store does not answer".into())
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ok"})))
}
