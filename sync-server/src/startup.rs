//! The application: everything one server instance runs, built in one place and stopped in order.
//!
//! [`Application::build`] validates the configuration, opens the store (applying migrations),
//! binds the listener and starts the background tasks; [`Application::port`] tells which port it
//! got (bind to port 0 in tests). [`Application::run_until_stopped`] serves until its shutdown
//! future fires, then stops, in this order: the listener closes, waiting long-polls are answered,
//! and in-flight requests get `shutdown_timeout_secs` to finish; the background tasks stop; the store closes once the last
//! request holding it is gone. The binary, the tests and the benchmark all start servers this way.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::Condition;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::budget::BodyBudget;
use crate::clock;
use crate::config::{Config, ConfigError, DbUrl};
use crate::live::LongPolls;
use crate::metrics::Metrics;
use crate::origin::{self, OriginPolicy};
use crate::routes;
use crate::state::AppState;
use crate::store::{PostgresOptions, PostgresStore, Routes, SqliteOptions, SqliteStore, Store, StoreError};
use crate::tasks::Tasks;
use crate::validation::PushValidator;
use crate::{janitor, outbox, telemetry};

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
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One server instance, built and not yet serving.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    store: Arc<dyn Store>,
    tasks: Tasks,
    live: Arc<LongPolls>,
}

impl Application {
    /// Validates `config`, opens its store, binds its address and starts the background tasks.
    /// Requests are accepted (queued by the kernel) from here on, and served once
    /// [`Application::run_until_stopped`] runs.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with(config, Vec::new()).await
    }

    /// As [`Application::build`], with `validators` of the embedding application judging every
    /// push (after the configuration's `[[validation]]` hooks; see [`crate::validation`]).
    pub async fn build_with(config: Config, validators: Vec<Arc<dyn PushValidator>>) -> Result<Self, StartError> {
        let validated = config.validate()?;
        let store = open_store(&validated.db, &config, validated.routes.clone()).await?;
        let listener =
            TcpListener::bind(&config.bind).map_err(|source| StartError::Bind { addr: config.bind.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.bind.clone(), source })?;

        let mut tasks = Tasks::new();
        let ttl = Duration::from_secs(config.idempotency_ttl_secs);
        let retention = (config.tombstone_retention_days > 0)
            .then(|| Duration::from_secs(config.tombstone_retention_days.saturating_mul(24 * 3600)));
        janitor::start(&mut tasks, Arc::clone(&store), ttl, retention, clock::system());
        let metrics = Metrics::new();
        let outbox = outbox::worker::Context {
            store: Arc::clone(&store),
            outbox: config.outbox,
            metrics: metrics.clone(),
            clock: clock::system(),
        };
        let outbox_wake =
            outbox::worker::start(&mut tasks, outbox, &config.webhooks, &config.amqp).map_err(ConfigError::Invalid)?;
        let live = LongPolls::new(config.long_poll, metrics.clone());
        live.start(&mut tasks, Arc::clone(&store));

        let files = match &config.static_dir {
            Some(dir) => Some(Arc::new(routes::files::StaticFiles::open(dir).map_err(ConfigError::Invalid)?)),
            None => None,
        };
        let state = web::Data::new(AppState {
            files,
            store: Arc::clone(&store),
            entities: validated.entities.clone(),
            limits: config.limits,
            bodies: BodyBudget::new(config.limits.max_inflight_body_bytes),
            metrics,
            outbox_wake,
            subscriptions: Arc::new(
                config
                    .webhooks
                    .iter()
                    .map(|w| w.name.clone())
                    .chain(config.amqp.iter().map(|a| a.name.clone()))
                    .collect(),
            ),
            admins: validated.admins.clone(),
            validators: Arc::new(validated.validators.iter().cloned().chain(validators).collect()),
            clock: clock::system(),
            body_timeout: Duration::from_secs(config.body_timeout_secs),
            idempotency_ttl: ttl,
            origins: OriginPolicy::new(&config.cors_origins),
            tasks: tasks.health(),
            auth: validated.auth.clone(),
            live: Arc::clone(&live),
            tombstone_retention_days: config.tombstone_retention_days,
        });
        let policy = state.origins.clone();
        let send_timeout = Duration::from_secs(config.send_timeout_secs);
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(Condition::new(policy.is_checked(), policy.cors()))
                .wrap_fn(origin::refuse_foreign)
                .wrap_fn(telemetry::log_request)
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .configure(routes::configure)
        })
        // Answers leave in several writes (streamed pulls always do); with Nagle's algorithm the
        // last, small one waits for the client's delayed ACK, some 40 ms on every such answer.
        .on_connect(move |connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
                limit_send_stall(tcp, send_timeout);
            }
        })
        .disable_signals()
        .keep_alive(match config.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .shutdown_timeout(config.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_secs(config.head_timeout_secs));
        if config.workers > 0 {
            server = server.workers(config.workers);
        }
        let server =
            server.listen(listener).map_err(|source| StartError::Bind { addr: addr.to_string(), source })?.run();
        // Read back, not assumed: what a `200` rests on is what the open database says.
        let durability = store.durability().await.map_err(StartError::Store)?;
        tracing::info!(
            %addr,
            store = %store.describe(),
            %durability,
            entities = if validated.entities.is_declared() { "declared" } else { "schemaless" },
            auth = if validated.auth.is_some() { "on" } else { "off" },
            "listening on http://{addr}"
        );
        if validated.auth.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "authentication is off on a non-loopback address: anyone who reaches it reads and writes every object ([auth] turns it on)");
        }
        Ok(Self { addr, server, store, tasks, live })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The store, shared with the server (for checks and tools that bypass HTTP).
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The background tasks. An application embedding the server may add its own: they run under
    /// the same supervision (a dead one makes `/healthz` answer `503`) and stop with the server.
    pub fn tasks(&mut self) -> &mut Tasks {
        &mut self.tasks
    }

    /// Serves until `shutdown` resolves, then stops gracefully, in order (see the module doc).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Self { server, tasks, live, .. } = self;
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        tokio::select! {
            served = &mut server => served?,
            () = shutdown => {
                tracing::info!("shutting down: no new connections; in-flight requests finish");
                // Waiting pulls are answered now rather than held until the shutdown timeout.
                live.close();
                // The server future carries out the stop command: it must be polled meanwhile.
                let ((), served) = tokio::join!(handle.stop(true), &mut server);
                served?;
            }
        }
        tasks.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Has the kernel drop `tcp` once an answer has waited `timeout` for its client to take any of
/// it. The HTTP layer writes an answer only as fast as the client reads (so a stalled client costs
/// bounded memory) but has no timer of its own while it waits: without this, a client that asks
/// for a large pull and never reads would hold its connection, and the answer's buffers, for
/// ever. Idle connections and waiting long-polls have nothing unacknowledged, and are not
/// affected.
fn limit_send_stall(tcp: &actix_web::rt::net::TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a connection");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tcp, timeout);
}

/// Opens the store a configuration names, applying migrations; its pushes append outbox events
/// along `routes`.
pub async fn open_store(db: &DbUrl, config: &Config, routes: Routes) -> Result<Arc<dyn Store>, StoreError> {
    // A streamed answer stops waiting for its client when the server would drop the connection.
    let answer_stall = Duration::from_secs(config.send_timeout_secs);
    match db {
        DbUrl::Sqlite(path) => {
            let (path, options) = (path.clone(), SqliteOptions { answer_stall, ..config.sqlite });
            let store =
                tokio::task::spawn_blocking(move || SqliteStore::open_with(path, options, clock::system(), routes))
                    .await
                    .map_err(|e| StoreError::internal("the task opening the SQLite store failed", e))??;
            Ok(Arc::new(store))
        }
        DbUrl::Postgres(url) => {
            let options = PostgresOptions { answer_stall, ..config.postgres };
            Ok(Arc::new(PostgresStore::connect_with(url, options, clock::system(), routes).await?))
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the shutdown signal of the binary.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Builds the application of `config` and serves until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), anyhow::Error> {
    Application::build(config).await?.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}
