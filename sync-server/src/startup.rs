//! Building and running the server: open the store, bind, serve until a signal.
//!
//! [`serve`] takes an already-bound listener, so tests start the real server on port 0 and read
//! the port back. Shutdown on SIGTERM/SIGINT is graceful: the listener closes, in-flight requests
//! get [`Config::shutdown_timeout_secs`] to finish.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::Condition;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::budget::BodyBudget;
use crate::config::{Config, ConfigError, DbUrl, Validated};
use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};
use crate::telemetry;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Opens the store a configuration names, applying migrations.
pub async fn open_store(db: &DbUrl, config: &Config) -> Result<Arc<dyn Store>, StartError> {
    match db {
        DbUrl::Sqlite(path) => {
            let (path, options) = (path.clone(), config.sqlite);
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(path, options))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))??;
            Ok(Arc::new(store))
        }
        DbUrl::Postgres(url) => Ok(Arc::new(PostgresStore::connect(url, config.postgres).await?)),
    }
}

/// Starts serving on `listener`. The returned server runs when awaited (or spawned) and stops
/// gracefully on SIGTERM/SIGINT or through its handle.
pub fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: &Config,
    validated: &Validated,
) -> std::io::Result<Server> {
    let state = web::Data::new(AppState {
        store,
        entities: validated.entities.clone(),
        limits: config.limits,
        bodies: BodyBudget::new(config.limits.max_inflight_body_bytes),
        metrics: Metrics::new(),
        body_timeout: Duration::from_secs(config.body_timeout_secs),
        origins: config.cors_origins.clone(),
    });
    let origins = config.cors_origins.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap_fn(telemetry::log_request)
            .wrap(TracingLogger::default())
            .app_data(state.clone())
            .service(web::resource("/healthz").get(routes::healthz).default_service(web::to(routes::get_only)))
            .service(web::resource("/metrics").get(routes::metrics).default_service(web::to(routes::get_only)))
            .default_service(web::to(routes::changes))
    })
    .shutdown_timeout(config.shutdown_timeout_secs)
    .client_request_timeout(Duration::from_secs(30));
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    Ok(server.listen(listener)?.run())
}

/// Lets pages of the given origins (or any, for `*`) pull and push from a browser.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers([header::CONTENT_TYPE, header::HeaderName::from_static("idempotency-key")])
        .expose_headers([telemetry::REQUEST_ID_HEADER, "idempotency-replayed"])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin()
    } else {
        origins.iter().fold(cors, |cors, origin| cors.allowed_origin(origin))
    }
}

/// Validates the configuration, opens the store, binds, logs where it listens, and serves until
/// a shutdown signal.
pub async fn run(config: Config) -> Result<(), anyhow::Error> {
    let validated = config.validate()?;
    let store = open_store(&validated.db, &config).await?;
    let listener =
        TcpListener::bind(&config.bind).map_err(|source| StartError::Bind { addr: config.bind.clone(), source })?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        store = %store.describe(),
        entities = if validated.entities.is_declared() { "declared" } else { "schemaless" },
        "listening on http://{addr}"
    );
    serve(listener, store, &config, &validated)?.await?;
    tracing::info!("stopped");
    Ok(())
}
