//! Structured logs through `tracing`: human-readable text or one JSON object per line, filtered by
//! `RUST_LOG` (default `info`). Every request runs in a span carrying its request id.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage, web};
use tracing_actix_web::RequestId;
use tracing_subscriber::EnvFilter;

use crate::state::AppState;

/// The response header that tells a client the id its request was logged under.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber, writing to standard error. Call once, at start.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        // The current span's fields once: the span list would repeat them on every request's
        // line (requests run in one span), doubling what each line costs to format and write.
        LogFormat::Json => builder.json().with_span_list(false).init(),
    }
}

/// Middleware (inside the request's span): logs one line per request with its method, path,
/// status and duration, counts it in the [`crate::metrics::Metrics`], and returns the request id in the
/// `x-request-id` header.
pub fn log_request<S, B>(
    req: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let request_id = req.extensions().get::<RequestId>().map(|id| id.to_string());
    let metrics = req.app_data::<web::Data<AppState>>().map(|state| state.metrics.clone());
    let response = service.call(req);
    async move {
        let mut response = response.await?;
        let status = response.status().as_u16();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(%method, %path, status, ms = format_args!("{ms:.2}"), "request");
        if let Some(metrics) = metrics {
            metrics.request(method.as_str(), status, ms / 1000.0);
        }
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            response.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
        }
        Ok(response)
    }
}

/// The address in the line the server logs once it listens, when logs are JSON
/// (`--log-format json`): for programs that start the server on port 0 and must learn its port.
pub fn listening_address(json_log_line: &str) -> Option<String> {
    let line: serde_json::Value = serde_json::from_str(json_log_line).ok()?;
    let fields = line.get("fields")?;
    let listening = fields.get("message")?.as_str()?.starts_with("listening on");
    listening.then(|| fields.get("addr")?.as_str().map(str::to_owned))?
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line =
            r#"{"level":"INFO","fields":{"message":"listening on http://127.0.0.1:4242","addr":"127.0.0.1:4242"}}"#;
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:4242"));
        assert_eq!(listening_address(r#"{"fields":{"message":"stopped"}}"#), None);
        assert_eq!(listening_address("listening on plain text"), None);
    }
}
