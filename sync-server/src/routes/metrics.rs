//! `GET /metrics`: the server's metrics in the Prometheus text format.

use actix_web::{HttpResponse, web};

use crate::state::AppState;

/// Every metric of [`crate::metrics::Metrics`].
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.push_body_bytes(state.bodies.held_bytes());
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
