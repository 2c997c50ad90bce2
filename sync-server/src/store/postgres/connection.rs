//! How the PostgreSQL store holds its connections: the pool, the settings every connection opens
//! with, retrying on another connection when one was lost before anything committed, and what
//! each database error means for the client.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;

use super::PostgresOptions;
use crate::store::StoreError;

/// How many connections a request tries when the ones it gets turn out to be closed before
/// anything was sent on them.
pub(super) const CONNECTION_ATTEMPTS: usize = 3;

/// TCP keepalive idle time on database connections, so that a silently dropped connection is
/// noticed within about a minute rather than the system default of two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Why one attempt at a store operation failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection was lost before anything was committed on it (PostgreSQL rolls back the
    /// transaction of a lost session): the same request may be tried on another connection.
    Lost(tokio_postgres::Error),
    /// The connection was lost while `COMMIT` was under way: the transaction `xid` may or may not
    /// have committed.
    CommitLost { xid: i64, now: i64, error: tokio_postgres::Error },
    /// Anything else; nothing was committed.
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if connection_lost(&e) { Self::Lost(e) } else { Self::Failed(classify(e)) }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

impl Failure {
    /// The error a client gets for this failure when nothing more can be learnt.
    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            Self::Lost(e) | Self::CommitLost { error: e, .. } => classify(e),
            Self::Failed(e) => e,
        }
    }
}

/// The pool of at most `pool_size` connections to `url`, each opened with the store's settings
/// (timeouts, keepalive, application name). Returns it with the URL's description without the
/// password, and the settings its connections are opened with (for connections of its own).
pub(super) fn pool(url: &str, options: &PostgresOptions) -> Result<(Pool, String, tokio_postgres::Config), StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::internal("invalid PostgreSQL connection string", e))?;
    let description = describe(&config);
    if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(StoreError::internal_because(format!(
            "{description}: this build does not support TLS to PostgreSQL; use sslmode=disable or prefer, \
             and secure the network path (a local socket, a private network or a TLS sidecar)"
        )));
    }
    let connect_timeout = Duration::from_millis(options.connect_timeout_ms.max(1));
    config.connect_timeout(connect_timeout).keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    if config.get_application_name().is_none() {
        config.application_name("sync-server");
    }
    // Statements are prepared once per connection, and a generic plan made while the tables were
    // small (a fresh database) would keep scanning them whole as they grow: plan each execution
    // for the table as it is.
    let mut ours = "-c plan_cache_mode=force_custom_plan".to_owned();
    if options.statement_timeout_ms > 0 {
        let ms = options.statement_timeout_ms;
        ours.push_str(&format!(" -c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"));
    }
    let all = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(all);
    // Fast recycling only asks whether the connection was closed; a connection that dies while
    // idle is noticed by its reader task, and one that fails a request is discarded.
    let manager =
        Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(options.pool_size.max(1) as usize)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(options.wait_timeout_ms.max(1))))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .build()
        .map_err(|e| StoreError::internal("cannot build the connection pool", e))?;
    Ok((pool, description, config))
}

/// Runs `op` on a connection of `pool`, and again on a fresh one (up to [`CONNECTION_ATTEMPTS`]
/// in all) when the connection was lost before anything was committed. `op` owns the connection
/// while it runs and hands it back with its result. A connection that failed is discarded rather
/// than given back; on success the connection is returned with the result.
pub(super) async fn with_connection<T, F, Fut>(pool: &Pool, mut op: F) -> Result<(Object, T), Failure>
where
    F: FnMut(Object) -> Fut,
    Fut: Future<Output = (Object, Result<T, Failure>)>,
{
    let mut attempt = 1;
    loop {
        let client = pool.get().await.map_err(pool_error)?;
        match op(client).await {
            (client, Ok(value)) => return Ok((client, value)),
            (client, Err(Failure::Lost(e))) if attempt < CONNECTION_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "connection lost before commit; trying another");
                discard(client);
                attempt += 1;
            }
            (client, Err(failure)) => {
                discard(client);
                return Err(failure);
            }
        }
    }
}

/// `postgres://user@host:port/dbname`: where the store is, without the password.
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let dbname = config.get_dbname().or(config.get_user()).unwrap_or_default();
    format!("postgres://{user}{}/{dbname}", hosts.join(","))
}

/// Removes a connection that failed from the pool instead of returning it. Closing it also stops
/// at once a statement still sending rows, where returning it would first drain them.
pub(super) fn discard(client: Object) {
    drop(Object::take(client));
}

/// Whether `e` means the connection is gone (closed, reset, or its backend terminated): the
/// database may be fine, and a new connection may succeed.
pub(super) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code);
    }
    io_cause(e)
}

fn io_cause(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Failures to reach the database, and those that a retry may not meet again (timeouts, lock
/// and serialization conflicts, overload, a standby that cannot write, a database that does not
/// accept connections now), are `Unavailable`; everything else is a fault. The database's error
/// is kept as the cause, for logs.
pub(super) fn classify(e: tokio_postgres::Error) -> StoreError {
    let transient = is_transient(&e);
    let error = DbError::from(e);
    if transient {
        StoreError::unavailable("the PostgreSQL database failed the request", error)
    } else {
        StoreError::internal("a PostgreSQL statement failed", error)
    }
}

/// Whether the same request may succeed later (see [`classify`]).
pub(super) fn is_transient(e: &tokio_postgres::Error) -> bool {
    connection_lost(e)
        || e.code().is_some_and(|code| {
            let class = &code.code()[..2];
            matches!(class, "53" | "28")
                || [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::QUERY_CANCELED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                    SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                    SqlState::INVALID_CATALOG_NAME,
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                ]
                .contains(code)
        })
}

/// A database error as logs show it: the server's message with its SQLSTATE, or the client
/// library's error with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct DbError {
    message: String,
    /// The SQLSTATE, when the database sent one.
    pub(super) code: Option<SqlState>,
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        };
        Self { message, code: e.code().cloned() }
    }
}

/// What a failure to get a connection from the pool means.
pub(super) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(kind) => {
            StoreError::unavailable_because(format!("no database connection became available in time ({kind:?})"))
        }
        PoolError::Closed => StoreError::unavailable_because("the connection pool is closed"),
        other => StoreError::internal("connection pool failure", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_has_no_password() {
        let config: tokio_postgres::Config = "postgres://app:secret@db.internal:6432/sync".parse().unwrap();
        assert_eq!(describe(&config), "postgres://app@db.internal:6432/sync");
        let config: tokio_postgres::Config = "host=/run/postgresql user=app".parse().unwrap();
        assert_eq!(describe(&config), "postgres://app@/run/postgresql:5432/app");
    }
}
