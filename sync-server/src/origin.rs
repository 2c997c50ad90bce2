//! Which web pages may call the server: the one origin policy, the refusal of pages of other
//! origins, and the CORS headers for the allowed ones.
//!
//! With `cors_origins` empty (the default) nothing is checked and no CORS header is sent:
//! browsers let only same-origin pages read the answers, and hybrid apps (which send `file://`
//! or `null` origins) work. With `cors_origins` set, a request carrying an `Origin` header must
//! come from this server's own host or a listed origin (or any, for `*`); every other one,
//! preflights included, is refused with `403 forbidden_origin` before it reaches a handler, so
//! that pages of other sites cannot write through their users' browsers.

use std::future::Future;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{Error, ResponseError, web};
use futures_util::future::{Either, FutureExt, ready};

use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry::REQUEST_ID_HEADER;

/// How long a browser may cache the answer to a preflight request.
pub const CORS_MAX_AGE_SECS: usize = 3600;

/// The origins allowed to call the server from a browser.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    origins: Arc<[String]>,
}

impl OriginPolicy {
    /// The policy of `cors_origins` (validated by the configuration).
    pub fn new(origins: &[String]) -> Self {
        Self { origins: origins.into() }
    }

    /// Whether origins are checked at all.
    pub fn is_checked(&self) -> bool {
        !self.origins.is_empty()
    }

    /// Whether a request with this `Origin` header, sent to `host`, may be served: any, when no
    /// origin is configured; else a page of this server's own host or of a listed origin.
    pub fn allows(&self, origin: &str, host: &str) -> bool {
        !self.is_checked()
            || self.origins.iter().any(|o| o == "*" || o == origin)
            || origin.split_once("://").is_some_and(|(_, origin_host)| origin_host == host)
    }

    /// Whether a push authenticated by a cookie may come from this request: its `Origin` (or,
    /// without one, its `Sec-Fetch-Site`) must be this server's own host or a listed origin (`*`
    /// does not count), whatever else is configured, so that pages of other sites cannot write
    /// with their users' cookies. A request with neither header is no browser's.
    pub fn allows_cookie_push(&self, origin: Option<&str>, fetch_site: Option<&str>, host: &str) -> bool {
        match origin {
            Some(origin) => {
                self.origins.iter().any(|o| o == origin)
                    || origin.split_once("://").is_some_and(|(_, origin_host)| origin_host == host)
            }
            None => !matches!(fetch_site, Some("cross-site" | "same-site")),
        }
    }

    /// Refuses a change that carries ambient credentials (a cookie, Basic credentials a browser
    /// remembers) unless [`OriginPolicy::allows_cookie_push`] allows where it came from.
    pub fn check_ambient(&self, req: &actix_web::HttpRequest) -> Result<(), ApiError> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let (origin, fetch_site) = (header("origin"), header("sec-fetch-site"));
        if self.allows_cookie_push(origin, fetch_site, req.connection_info().host()) {
            return Ok(());
        }
        Err(ApiError::ForbiddenOrigin(match origin {
            Some(origin) => format!("Origin: {}", origin.chars().take(200).collect::<String>()),
            None => format!("Sec-Fetch-Site: {}", fetch_site.unwrap_or_default()),
        }))
    }

    /// The CORS middleware for the allowed origins. Only allowed origins reach it (see
    /// [`refuse_foreign`]), so it echoes the origin of every request it sees.
    pub fn cors(&self) -> Cors {
        Cors::default()
            .allowed_origin_fn(|_, _| true)
            .allowed_methods(["GET", "POST"])
            .allowed_headers([
                header::CONTENT_TYPE,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("sync-preconditions"),
            ])
            .expose_headers([REQUEST_ID_HEADER, "idempotency-replayed"])
            .max_age(CORS_MAX_AGE_SECS)
    }
}

/// Middleware: answers `403 forbidden_origin` to a request from a page the policy does not allow,
/// preflights included; passes every other request on.
pub fn refuse_foreign<S, B>(
    req: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let refused = req.headers().get(header::ORIGIN).and_then(|origin| {
        let policy = &req.app_data::<web::Data<AppState>>()?.origins;
        let origin = origin.to_str().unwrap_or_default();
        (!policy.allows(origin, req.connection_info().host())).then(|| origin.chars().take(200).collect::<String>())
    });
    match refused {
        Some(origin) => {
            let answer = ApiError::ForbiddenOrigin(format!("Origin: {origin}")).error_response();
            Either::Left(ready(Ok(req.into_response(answer).map_into_right_body())))
        }
        None => Either::Right(service.call(req).map(|res| res.map(ServiceResponse::map_into_left_body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_host_and_listed_origins_are_allowed() {
        let policy = OriginPolicy::new(&["https://app.example.com".into()]);
        assert!(policy.allows("https://app.example.com", "sync.example.com"));
        assert!(policy.allows("http://sync.example.com", "sync.example.com"));
        assert!(!policy.allows("https://evil.example", "sync.example.com"));
        assert!(!policy.allows("null", "sync.example.com"));
        assert!(OriginPolicy::new(&[]).allows("null", "x"));
        assert!(OriginPolicy::new(&["*".into()]).allows("https://any.example", "x"));
        let any = OriginPolicy::new(&["*".into()]);
        assert!(!any.allows_cookie_push(Some("https://any.example"), None, "x"), "* never lets cookies write");
        assert!(any.allows_cookie_push(Some("http://x"), None, "x"));
        assert!(!any.allows_cookie_push(None, Some("cross-site"), "x"));
        assert!(any.allows_cookie_push(None, None, "x"));
        assert!(policy.allows_cookie_push(Some("https://app.example.com"), None, "sync.example.com"));
    }
}
