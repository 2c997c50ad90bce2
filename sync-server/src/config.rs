//! Server configuration: a typed TOML tree with defaults that work on a laptop, overridden by
//! environment variables and flags (see the binary), validated once after loading.
//!
//! ```toml
//! bind = "127.0.0.1:8080"
//! db = "sqlite://./sync.db"
//!
//! [limits]
//! max_items = 10000
//!
//! [postgres]                     # checked only when db is postgres://...
//! pool_size = 10
//!
//! [[entity]]
//! name = "Task"
//! path = "/taskUpdates"          # default: /taskChanges
//! fields = { name = "TEXT", done = "BOOL", due = "DATE" }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sync_proto::{EntityName, EntitySchema, FieldType, Limits};

use crate::admin::{AdminConfig, Admins};
use crate::auth::scope::Access;
use crate::auth::{AuthConfig, Authenticator, EntityScope};
use crate::live::LongPollConfig;
use crate::outbox::{AmqpConfig, OutboxConfig, WebhookConfig};
use crate::store::{PostgresOptions, Routes, SqliteOptions};
use crate::validation::{HttpValidator, PushValidator, ValidationConfig};

/// Everything the server can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free port).
    pub bind: String,
    /// The store: a file path or `sqlite://PATH` for SQLite, `postgres://...` for PostgreSQL.
    pub db: String,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// On SIGTERM or SIGINT, how long in-flight requests get to finish.
    pub shutdown_timeout_secs: u64,
    /// How long an idle keep-alive connection stays open; 0 closes each connection after its
    /// answer. Clients that keep idle connections should close them sooner, so that a request
    /// never races the server's close.
    pub keep_alive_secs: u64,
    /// How long a client may take to send a request's headers before the connection is closed
    /// with `408` (a client that opens connections and sends nothing must not hold them).
    pub head_timeout_secs: u64,
    /// How long a push may take to send its whole body before it is answered `408` (a slow or
    /// stalled upload must not hold its connection and its share of memory forever).
    pub body_timeout_secs: u64,
    /// How long an answer may wait for its client to take any of it before the connection is
    /// dropped (on Linux, as `TCP_USER_TIMEOUT`: unacknowledged data or a closed receive window
    /// for this long). A client that asks for a large pull and never reads it must not hold its
    /// connection, and the answer's buffers, forever.
    pub send_timeout_secs: u64,
    /// How long an `Idempotency-Key` (and the answer it replays) is remembered.
    pub idempotency_ttl_secs: u64,
    /// How long tombstones (removed objects) are kept, in days; 0 keeps them for ever. A client
    /// whose cursor is older than the newest purged tombstone of its scope gets the whole scope
    /// again (a reset).
    pub tombstone_retention_days: u64,
    /// Web origins allowed to call the server from a browser (CORS), such as
    /// `https://app.example.com`, or `*` for any. Empty (the default): no origin is checked and no
    /// CORS header is sent (see [`crate::origin`]).
    pub cors_origins: Vec<String>,
    /// A directory of web app files served at every path that is neither an entity's nor
    /// reserved (`/` serves its `index.html`); `None` (the default): off. Served to anyone, also
    /// with authentication on: a login page must load before its user has logged in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,
    /// Bounds on requests.
    pub limits: Limits,
    /// Tuning of the SQLite store.
    pub sqlite: SqliteOptions,
    /// Tuning of the PostgreSQL store.
    pub postgres: PostgresOptions,
    /// Authentication and per-user data; off unless a scheme is configured.
    pub auth: AuthConfig,
    /// Declared entities. When any is declared, only they are served, at their paths, with
    /// their field types checked; otherwise every `/<name>Changes` path is served, schemaless.
    #[serde(rename = "entity")]
    pub entities: Vec<EntityConfig>,
    /// Webhook subscriptions: every change of their entities is sent to them, signed, at least
    /// once (see [`crate::outbox`]).
    #[serde(rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    /// AMQP subscriptions: every change of their entities is published to a broker.
    pub amqp: Vec<AmqpConfig>,
    /// How delivery workers share the outbox.
    pub outbox: OutboxConfig,
    /// The operators of the admin API; off while none is configured.
    pub admin: AdminConfig,
    /// Hooks of other systems that accept or reject pushes before they are applied.
    #[serde(rename = "validation")]
    pub validations: Vec<ValidationConfig>,
    /// Pulls that wait for changes (`wait=`): how long, and how many at once.
    pub long_poll: LongPollConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            db: "./sync.db".into(),
            workers: 0,
            shutdown_timeout_secs: 30,
            keep_alive_secs: 5,
            head_timeout_secs: 30,
            body_timeout_secs: 60,
            send_timeout_secs: 60,
            idempotency_ttl_secs: 24 * 3600,
            tombstone_retention_days: 0,
            cors_origins: Vec::new(),
            static_dir: None,
            limits: Limits::default(),
            sqlite: SqliteOptions::default(),
            postgres: PostgresOptions::default(),
            auth: AuthConfig::default(),
            entities: Vec::new(),
            webhooks: Vec::new(),
            amqp: Vec::new(),
            outbox: OutboxConfig::default(),
            admin: AdminConfig::default(),
            validations: Vec::new(),
            long_poll: LongPollConfig::default(),
        }
    }
}

/// One declared entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// The entity name (`Task`).
    pub name: String,
    /// The URI path; default `/<name with a lower-case first letter>Changes`.
    #[serde(default)]
    pub path: Option<String>,
    /// Field name to type (`TEXT`, `INT`, `BIGINT`, `REAL`, `BOOL`, `DATE`, `JSON`); none: any
    /// field is accepted.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldType>,
    /// Its partitions when authentication is on; `auth.default_scope` (`user`) unless set.
    #[serde(default)]
    pub scope: Option<EntityScope>,
    /// Roles of which a caller needs one to pull; empty: anyone authenticated.
    #[serde(default)]
    pub read_roles: Vec<String>,
    /// Roles of which a caller needs one to push; empty: anyone authenticated.
    #[serde(default)]
    pub write_roles: Vec<String>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its domain.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; absent keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// Checks every value and builds what the server serves from it.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let l = &self.limits;
        for (name, value) in [
            ("max_body_bytes", l.max_body_bytes),
            ("max_items", l.max_items),
            ("max_id_bytes", l.max_id_bytes),
            ("max_fields", l.max_fields),
            ("max_field_name_bytes", l.max_field_name_bytes),
            ("max_string_bytes", l.max_string_bytes),
            ("max_depth", l.max_depth),
            ("max_page", l.max_page),
        ] {
            if value == 0 {
                return invalid(format!("limits.{name} must be at least 1"));
            }
        }
        for origin in &self.cors_origins {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://")) && !origin.ends_with('/'));
            if !valid {
                return invalid(format!("cors_origins: {origin:?} is not an origin like https://app.example.com or *"));
            }
        }
        if l.max_inflight_body_bytes < l.max_body_bytes {
            return invalid("limits.max_inflight_body_bytes must be at least limits.max_body_bytes".into());
        }
        for (name, value) in [
            ("body_timeout_secs", self.body_timeout_secs),
            ("head_timeout_secs", self.head_timeout_secs),
            ("send_timeout_secs", self.send_timeout_secs),
            ("idempotency_ttl_secs", self.idempotency_ttl_secs),
            ("long_poll.max_waiting", self.long_poll.max_waiting as u64),
            ("long_poll.poll_ms", self.long_poll.poll_ms),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        check_bind(&self.bind)?;
        let db = DbUrl::parse(&self.db)?;
        // Each store's section is checked only when that store is used.
        match db {
            DbUrl::Sqlite(_) => {
                if self.sqlite.readers == 0 || self.sqlite.stream_readers == 0 {
                    return invalid("sqlite.readers and sqlite.stream_readers must be at least 1".into());
                }
            }
            DbUrl::Postgres(_) => {
                let pg = &self.postgres;
                for (name, value) in [
                    ("pool_size", u64::from(pg.pool_size)),
                    ("connect_timeout_ms", pg.connect_timeout_ms),
                    ("wait_timeout_ms", pg.wait_timeout_ms),
                ] {
                    if value == 0 {
                        return invalid(format!("postgres.{name} must be at least 1"));
                    }
                }
            }
        }
        let auth = Authenticator::from_config(&self.auth)?;
        if auth.is_none()
            && let Some(e) = self
                .entities
                .iter()
                .find(|e| e.scope.is_some() || !e.read_roles.is_empty() || !e.write_roles.is_empty())
        {
            return invalid(format!("entity {}: scope and roles need authentication ([auth])", e.name));
        }
        let default_access = Access { scope: self.auth.default_scope.clone().unwrap_or_default(), ..Access::default() };
        let routes = crate::outbox::config::routes(&self.webhooks, &self.amqp, &self.outbox)?;
        Ok(Validated {
            db,
            entities: Entities::from_config(&self.entities, default_access)?,
            auth: auth.map(Arc::new),
            routes,
            admins: Admins::from_config(&self.admin)?,
            validators: HttpValidator::all(&self.validations)?,
        })
    }
}

/// Refuses a listening address without a port, with a hint, before the socket layer answers
/// "invalid socket address".
fn check_bind(bind: &str) -> Result<(), ConfigError> {
    let port = bind.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "bind {bind:?} needs a host and a port, like 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
        ))),
    }
}

/// What a valid configuration resolves to.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The store to open.
    pub db: DbUrl,
    /// The entities to serve.
    pub entities: Entities,
    /// The authentication, when `[auth]` turns it on.
    pub auth: Option<Arc<Authenticator>>,
    /// Which subscriptions take the events of which entities.
    pub routes: Routes,
    /// The operators of the admin API, when any is configured.
    pub admins: Option<Arc<Admins>>,
    /// The `[[validation]]` hooks.
    pub validators: Vec<Arc<dyn PushValidator>>,
}

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl DbUrl {
    /// `sqlite://PATH` or a plain path is SQLite; `postgres://` and `postgresql://` are PostgreSQL.
    pub fn parse(db: &str) -> Result<Self, ConfigError> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Ok(Self::Postgres(db.to_owned()))
        } else if let Some(path) = db.strip_prefix("sqlite://") {
            if path.is_empty() {
                Err(ConfigError::Invalid("sqlite:// needs a file path".into()))
            } else {
                Ok(Self::Sqlite(path.into()))
            }
        } else if db.is_empty() || db.contains("://") {
            Err(ConfigError::Invalid(format!(
                "unsupported db {db:?}: use a file path, sqlite://PATH or postgres://..."
            )))
        } else {
            Ok(Self::Sqlite(db.into()))
        }
    }
}

/// An entity a request path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEntity {
    /// Its name, under which its objects are stored.
    pub name: EntityName,
    /// Its declared fields; `None` when it declares none (the server is schemaless, or the
    /// entity is declared only for its path, scope or roles), and any field is accepted.
    pub schema: Option<Arc<EntitySchema>>,
    /// Who may read and write it where, when authentication is on.
    pub access: Access,
}

/// The entities a server serves and the paths they are served at.
#[derive(Debug, Clone, Default)]
pub struct Entities {
    /// Path to entity, when entities are declared; `None` when schemaless.
    declared: Option<HashMap<String, ResolvedEntity>>,
    /// The access rules of schemaless entities.
    default_access: Access,
}

impl Entities {
    /// Serve every `/<name>Changes` path, without field checks.
    pub fn schemaless() -> Self {
        Self::default()
    }

    /// The entities declared in a configuration (schemaless when none is).
    pub fn from_config(entities: &[EntityConfig], default_access: Access) -> Result<Self, ConfigError> {
        if entities.is_empty() {
            return Ok(Self { declared: None, default_access });
        }
        let mut by_path = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for e in entities {
            let name = EntityName::new(e.name.clone()).map_err(|err| ConfigError::Invalid(err.to_string()))?;
            if !names.insert(name.clone()) {
                return Err(ConfigError::Invalid(format!("entity {name} is declared twice")));
            }
            let path = e.path.clone().unwrap_or_else(|| name.default_path());
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return Err(ConfigError::Invalid(format!("entity {name}: invalid path {path:?}")));
            }
            if crate::routes::is_reserved(&path) {
                return Err(ConfigError::Invalid(format!(
                    "entity {name}: path {path:?} is reserved for the server's own resources ({})",
                    crate::routes::RESERVED_PREFIXES.join(", ")
                )));
            }
            if let Some(reserved) = e.fields.keys().find(|f| ["id", "_removed", "_lastChange"].contains(&f.as_str())) {
                return Err(ConfigError::Invalid(format!(
                    "entity {name}: {reserved:?} belongs to the protocol and cannot be declared as a field"
                )));
            }
            // Declaring an entity only for its path, scope or roles leaves its fields free.
            let schema = (!e.fields.is_empty()).then(|| Arc::new(EntitySchema { fields: e.fields.clone() }));
            let access = Access {
                scope: e.scope.clone().unwrap_or_else(|| default_access.scope.clone()),
                read_roles: e.read_roles.clone(),
                write_roles: e.write_roles.clone(),
            };
            if by_path.insert(path.clone(), ResolvedEntity { name, schema, access }).is_some() {
                return Err(ConfigError::Invalid(format!("path {path} is used by two entities")));
            }
        }
        Ok(Self { declared: Some(by_path), default_access })
    }

    /// The entity served at `path`, if any.
    pub fn resolve(&self, path: &str) -> Option<ResolvedEntity> {
        match &self.declared {
            Some(by_path) => by_path.get(path).cloned(),
            None => {
                let segment = path.strip_prefix('/')?;
                if segment.contains('/') {
                    return None;
                }
                EntityName::from_changes_segment(segment).map(|name| ResolvedEntity {
                    name,
                    schema: None,
                    access: self.default_access.clone(),
                })
            }
        }
    }

    /// Whether only declared entities are served.
    pub fn is_declared(&self) -> bool {
        self.declared.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_a_file() {
        let v = Config::default().validate().unwrap();
        assert_eq!(v.db, DbUrl::Sqlite("./sync.db".into()));
        assert!(!v.entities.is_declared());
        assert_eq!(v.entities.resolve("/feedChanges").unwrap().name.as_str(), "Feed");
        assert!(v.entities.resolve("/feed").is_none());
        assert!(v.entities.resolve("/a/feedChanges").is_none());
    }

    #[test]
    fn db_urls() {
        assert_eq!(DbUrl::parse("sqlite:///tmp/x.db").unwrap(), DbUrl::Sqlite("/tmp/x.db".into()));
        assert_eq!(DbUrl::parse("data.db").unwrap(), DbUrl::Sqlite("data.db".into()));
        assert!(matches!(DbUrl::parse("postgres://u@h/d").unwrap(), DbUrl::Postgres(_)));
        assert!(DbUrl::parse("mysql://x").is_err());
        assert!(DbUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn declared_entities_are_served_only_at_their_paths() {
        let config: Config = toml::from_str(
            r#"
            db = "x.db"
            [limits]
            max_items = 5
            [[entity]]
            name = "Task"
            path = "/taskUpdates"
            fields = { name = "VARCHAR(255)", done = "BOOL" }
            [[entity]]
            name = "Feed"
            "#,
        )
        .unwrap();
        assert_eq!(config.limits.max_items, 5);
        let v = config.validate().unwrap();
        let task = v.entities.resolve("/taskUpdates").unwrap();
        assert_eq!(task.schema.unwrap().fields["done"], FieldType::Bool);
        assert!(v.entities.resolve("/feedChanges").is_some());
        assert!(v.entities.resolve("/taskChanges").is_none());
        assert!(v.entities.resolve("/otherChanges").is_none());
    }

    #[test]
    fn only_the_section_of_the_store_in_use_is_checked() {
        let sqlite: Config = toml::from_str("[postgres]\npool_size = 0").unwrap();
        assert!(sqlite.validate().is_ok(), "an SQLite server ignores [postgres] values");
        let postgres: Config = toml::from_str("db = \"postgres://x@y/z\"\n[sqlite]\nreaders = 0").unwrap();
        assert!(postgres.validate().is_ok(), "a PostgreSQL server ignores [sqlite] values");
    }

    #[test]
    fn bad_configs_are_refused_naming_what_is_wrong() {
        for (text, says) in [
            ("nonsense = 1", "unknown field `nonsense`"),
            ("[[entity]]\nname = \"2x\"", "invalid entity name \"2x\""),
            ("[[entity]]\nname = \"A\"\n[[entity]]\nname = \"A\"", "entity A is declared twice"),
            (
                "[[entity]]\nname = \"A\"\npath = \"/p\"\n[[entity]]\nname = \"B\"\npath = \"/p\"",
                "path /p is used by two entities",
            ),
            ("[[entity]]\nname = \"A\"\nfields = { x = \"BLOB\" }", "unknown field type \"BLOB\""),
            ("[limits]\nmax_items = 0", "limits.max_items must be at least 1"),
            ("cors_origins = [\"app.example.com\"]", "\"app.example.com\" is not an origin"),
            ("[[entity]]\nname = \"A\"\nfields = { id = \"INT\" }", "entity A: \"id\" belongs to the protocol"),
            ("[[entity]]\nname = \"A\"\nfields = { _removed = \"TEXT\" }", "\"_removed\" belongs to the protocol"),
            ("db = \"postgres://x@y/z\"\n[postgres]\npool_size = 0", "postgres.pool_size must be at least 1"),
            ("[postgres]\nunknown = 1", "unknown field `unknown`"),
            ("bind = \"localhost\"", "bind \"localhost\" needs a host and a port"),
            ("bind = \":8080\"", "bind \":8080\" needs a host and a port"),
            ("[[entity]]\nname = \"A\"\npath = \"/admin/a\"", "path \"/admin/a\" is reserved"),
            ("idempotency_ttl_secs = 0", "idempotency_ttl_secs must be at least 1"),
        ] {
            let message = match toml::from_str::<Config>(text) {
                Err(e) => e.to_string(),
                Ok(config) => match config.validate() {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("accepted: {text}"),
                },
            };
            assert!(message.contains(says), "{text:?} was refused for another reason: {message}");
        }
    }
}
