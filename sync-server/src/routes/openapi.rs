//! `GET /_sync/openapi.yaml`: the OpenAPI description of this HTTP API, `docs/openapi.yaml` as
//! built into the binary, so that what a server describes is what that build serves.

use actix_web::HttpResponse;

/// The description, embedded at compile time.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// Open to every caller, like the capabilities: it tells the protocol, not the data.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/yaml").body(OPENAPI_YAML)
}
