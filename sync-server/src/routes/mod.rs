//! The HTTP surface: the route table, and one module per resource.
//!
//! | path | methods | module |
//! |---|---|---|
//! | `/healthz` | GET | [`health`] |
//! | `/metrics` | GET | [`metrics`] |
//! | `/_sync/capabilities` | GET | [`capabilities`] |
//! | `/_sync/openapi.yaml` | GET | [`openapi`] |
//! | `/admin/api/...` | GET, POST | [`crate::admin::api`] |
//! | `/admin`, `/admin/...` (the console's pages) | GET, POST | [`crate::admin::console`] |
//! | an entity's path (`/<name>Changes`, or a declared one) | GET, POST | [`changes`] → [`pull`], [`push`] |
//! | any other path, with `static_dir` set | GET, HEAD | [`files`] |
//!
//! Paths under a [`RESERVED_PREFIXES`] entry belong to the server itself: no entity may be
//! declared there, so that new server resources can be added without taking an app's path.

pub mod body;
pub mod capabilities;
pub mod changes;
pub mod files;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod pull;
pub mod push;

use actix_web::{HttpRequest, web};

use crate::error::ApiError;

/// Path prefixes kept for the server's own resources, present and future.
pub const RESERVED_PREFIXES: &[&str] = &["/healthz", "/metrics", "/admin", "/_sync"];

/// Whether `path` is a reserved prefix or lies below one.
pub fn is_reserved(path: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|prefix| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The route table.
pub fn configure(routes: &mut web::ServiceConfig) {
    routes
        .service(web::resource("/healthz").get(health::healthz).default_service(web::to(get_only)))
        .service(web::resource("/metrics").get(metrics::metrics).default_service(web::to(get_only)))
        .service(
            web::resource(sync_proto::CAPABILITIES_PATH)
                .get(capabilities::capabilities)
                .default_service(web::to(get_only)),
        )
        .service(web::resource(sync_proto::OPENAPI_PATH).get(openapi::openapi).default_service(web::to(get_only)))
        .configure(crate::admin::api::configure)
        .default_service(web::to(changes::changes));
}

/// Any method but GET on a GET-only resource.
async fn get_only(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET" })
}

#[cfg(test)]
mod tests {
    use super::is_reserved;

    #[test]
    fn reserved_prefixes_cover_their_subpaths_only() {
        assert!(is_reserved("/admin"));
        assert!(is_reserved("/admin/events"));
        assert!(is_reserved("/healthz"));
        assert!(!is_reserved("/adminChanges"));
        assert!(!is_reserved("/taskChanges"));
    }
}
