//! The PostgreSQL schema and its migrations, applied at start-up.
//!
//! The schema is versioned: [`MIGRATIONS`] are embedded in the binary, and
//! `sync_schema_migrations` records which versions a database has. A start-up that finds the
//! schema current runs no DDL at all, so a role with only the rights on the `sync_*` tables listed
//! in the README can run the server once an owner has started it. Pending migrations are applied
//! in one transaction under an advisory lock, so that instances starting together apply each
//! exactly once and a crash midway applies nothing.

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::connection::{DbError, classify, is_transient};
use crate::store::StoreError;

/// One version of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version it brings the schema to; versions start at 1 and have no gaps.
    pub version: i32,
    /// What it does, recorded in `sync_schema_migrations`.
    pub description: &'static str,
    /// The statements, run in the migration transaction.
    pub sql: &'static str,
}

/// The schema, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "objects, per-entity clocks, idempotency keys",
        sql: r#"
        CREATE TABLE sync_objects (
            entity      TEXT    NOT NULL,
            id          BYTEA   NOT NULL,   -- the id's UTF-8 bytes
            last_change BIGINT  NOT NULL,
            removed     BOOLEAN NOT NULL,
            fields      TEXT    NOT NULL,   -- the JSON object text of the fields, '{}' for a tombstone
            PRIMARY KEY (entity, id)
        );
        CREATE INDEX sync_objects_by_change ON sync_objects (entity, last_change, id);
        CREATE TABLE sync_clocks (
            entity TEXT   PRIMARY KEY,
            last   BIGINT NOT NULL          -- the last timestamp given to a push to this entity
        );
        CREATE TABLE sync_idempotency (
            entity      TEXT   NOT NULL,
            key         TEXT   NOT NULL,
            now         BIGINT NOT NULL,
            fingerprint TEXT   NOT NULL,
            created_ms  BIGINT NOT NULL,
            PRIMARY KEY (entity, key)
        );
        CREATE INDEX sync_idempotency_by_age ON sync_idempotency (created_ms);
    "#,
    },
    Migration {
        version: 2,
        description: "partitions: every key also holds the partition ('' outside any)",
        sql: r#"
        ALTER TABLE sync_objects ADD COLUMN partition TEXT NOT NULL DEFAULT '';
        ALTER TABLE sync_objects DROP CONSTRAINT sync_objects_pkey;
        ALTER TABLE sync_objects ADD PRIMARY KEY (entity, partition, id);
        DROP INDEX sync_objects_by_change;
        CREATE INDEX sync_objects_by_change ON sync_objects (entity, partition, last_change, id);
        ALTER TABLE sync_clocks ADD COLUMN partition TEXT NOT NULL DEFAULT '';
        ALTER TABLE sync_clocks DROP CONSTRAINT sync_clocks_pkey;
        ALTER TABLE sync_clocks ADD PRIMARY KEY (entity, partition);
        ALTER TABLE sync_idempotency ADD COLUMN partition TEXT NOT NULL DEFAULT '';
        ALTER TABLE sync_idempotency DROP CONSTRAINT sync_idempotency_pkey;
        ALTER TABLE sync_idempotency ADD PRIMARY KEY (entity, partition, key);
    "#,
    },
    Migration {
        version: 3,
        description: "the transactional outbox: events per subscription, attempts, subscriptions, audit log",
        sql: r#"
        CREATE TABLE sync_outbox (
            seq             BIGSERIAL PRIMARY KEY,
            subscription    TEXT    NOT NULL,
            event_id        TEXT    NOT NULL,
            entity          TEXT    NOT NULL,
            partition       TEXT    NOT NULL,
            object_id       BYTEA   NOT NULL,
            operation       TEXT    NOT NULL,   -- 'upsert' or 'remove'
            object          TEXT,               -- the fields after the change; NULL for a removal
            last_change     BIGINT  NOT NULL,
            request_id      TEXT,
            created_ms      BIGINT  NOT NULL,
            state           TEXT    NOT NULL DEFAULT 'pending',
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms BIGINT,
            lease_token     BIGINT,
            lease_until_ms  BIGINT,
            last_status     INTEGER,
            last_error      TEXT,
            finished_ms     BIGINT
        );
        CREATE INDEX sync_outbox_due ON sync_outbox (subscription, state, seq);
        CREATE INDEX sync_outbox_by_object ON sync_outbox (subscription, entity, partition, object_id, seq);
        CREATE TABLE sync_outbox_attempts (
            id          BIGSERIAL PRIMARY KEY,
            seq         BIGINT  NOT NULL,
            at_ms       BIGINT  NOT NULL,
            duration_ms BIGINT  NOT NULL,
            status      INTEGER,
            error       TEXT
        );
        CREATE INDEX sync_outbox_attempts_of ON sync_outbox_attempts (seq, id);
        CREATE TABLE sync_outbox_subscriptions (
            name       TEXT    PRIMARY KEY,
            enabled    BOOLEAN NOT NULL,
            reason     TEXT,
            changed_ms BIGINT  NOT NULL
        );
        CREATE TABLE sync_admin_audit (
            id     BIGSERIAL PRIMARY KEY,
            at_ms  BIGINT NOT NULL,
            "user" TEXT   NOT NULL,
            action TEXT   NOT NULL,
            detail TEXT   NOT NULL
        );
    "#,
    },
    Migration {
        version: 4,
        description: "the outbox log: one row per push and subscription; stream leases",
        sql: r#"
        CREATE TABLE sync_outbox_log (
            seq          BIGSERIAL PRIMARY KEY,
            subscription TEXT   NOT NULL,
            entity       TEXT   NOT NULL,
            partition    TEXT   NOT NULL,
            last_change  BIGINT NOT NULL,
            request_id   TEXT,
            created_ms   BIGINT NOT NULL,
            events_count INTEGER NOT NULL,
            events       BYTEA  NOT NULL    -- LZ4 of the JSON [[event_id, object_id, operation, fields], ...]
        );
        -- Already compressed: kept out of line as they are.
        ALTER TABLE sync_outbox_log ALTER COLUMN events SET STORAGE EXTERNAL;
        CREATE INDEX sync_outbox_log_of ON sync_outbox_log (subscription, seq);
        -- The stream lease: which worker delivers the subscription's log.
        ALTER TABLE sync_outbox_subscriptions ADD COLUMN lease_token BIGINT;
        ALTER TABLE sync_outbox_subscriptions ADD COLUMN lease_until_ms BIGINT;
    "#,
    },
    Migration {
        version: 5,
        description: "tombstone retention: each scope's purge horizon, tombstones by age",
        sql: r#"
        ALTER TABLE sync_clocks ADD COLUMN purged_through BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX sync_objects_tombstones ON sync_objects (last_change) WHERE removed;
    "#,
    },
];

/// The advisory lock that serializes migrations between instances ("sync-mig" in ASCII).
const MIGRATION_LOCK: i64 = 0x7379_6e63_2d6d_6967;

/// The latest version this server knows.
fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Checks the database a store opens (encoding, a schema to work in) and brings its schema to
/// the latest version. `db` names the database in errors (without the password).
pub(super) async fn prepare(client: &mut Object, db: &str) -> Result<(), StoreError> {
    let step = |what: &str| format!("{db}: {what}");
    let row = client
        .query_one("SELECT current_setting('server_encoding'), current_schema(), current_setting('search_path')", &[])
        .await
        .map_err(|e| at_step(step("cannot read the database's settings"), e))?;
    let (encoding, schema, search_path): (String, Option<String>, String) = (row.get(0), row.get(1), row.get(2));
    if encoding != "UTF8" {
        return Err(StoreError::internal_because(step(&format!(
            "the database encoding is {encoding}; the sync store needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')"
        ))));
    }
    if schema.is_none() {
        return Err(StoreError::internal_because(step(&format!(
            "no schema of the search_path ({search_path}) exists; create it (CREATE SCHEMA ...) or set \
             search_path in the connection string (options=-c%20search_path%3D...)"
        ))));
    }
    if applied_version(client, db).await? == Some(latest()) {
        return Ok(());
    }
    migrate(client, db).await
}

/// The version recorded in `sync_schema_migrations`, `None` when the table does not exist yet.
/// Refuses a schema newer than this server.
async fn applied_version(client: &Object, db: &str) -> Result<Option<i32>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('sync_schema_migrations') IS NOT NULL", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| at_step(format!("{db}: cannot look for sync_schema_migrations"), e))?;
    if !exists {
        return Ok(None);
    }
    let applied: i32 = client
        .query_one("SELECT COALESCE(max(version), 0) FROM sync_schema_migrations", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| at_step(format!("{db}: cannot read sync_schema_migrations"), e))?;
    if applied > latest() {
        return Err(StoreError::internal_because(format!(
            "{db}: the database schema (version {applied}) is newer than this server (version {})",
            latest()
        )));
    }
    Ok(Some(applied))
}

/// Applies pending [`MIGRATIONS`] in one transaction, under an advisory lock held until its end:
/// instances starting together wait for each other.
async fn migrate(client: &mut Object, db: &str) -> Result<(), StoreError> {
    let step = |what: String| format!("{db}: {what}");
    let tx = client.transaction().await.map_err(classify)?;
    // A migration may take longer than requests are allowed to; so may waiting for another
    // instance's migration. Notices such as "already exists, skipping" are not worth a log line.
    tx.batch_execute(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; SET LOCAL client_min_messages = warning",
    )
    .await
    .map_err(classify)?;
    let free: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(classify)?;
    if !free {
        tracing::info!("another instance is migrating {db}; waiting for it");
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(classify)?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sync_schema_migrations (
            version     INTEGER     PRIMARY KEY,
            description TEXT        NOT NULL,
            applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(|e| at_step(step("cannot create sync_schema_migrations".into()), e))?;
    let applied: i32 = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM sync_schema_migrations", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(classify)?;
    if applied > latest() {
        return Err(StoreError::internal_because(step(format!(
            "the database schema (version {applied}) is newer than this server (version {})",
            latest()
        ))));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tracing::info!(version = migration.version, description = migration.description, "applying migration");
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| at_step(step(format!("cannot apply migration {}", migration.version)), e))?;
        tx.execute(
            "INSERT INTO sync_schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)
}

/// A start-up step that failed, named, with the database's error as the cause and, for missing
/// rights, what to do.
fn at_step(what: String, e: tokio_postgres::Error) -> StoreError {
    let transient = is_transient(&e);
    let error = DbError::from(e);
    let what = if error.code == Some(SqlState::INSUFFICIENT_PRIVILEGE) {
        format!(
            "{what}: the role lacks a right it needs; start the server once as the owner of the database \
             (it creates the tables), then grant this role the rights listed in the README"
        )
    } else {
        what
    };
    if transient { StoreError::unavailable(what, error) } else { StoreError::internal(what, error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }
}
