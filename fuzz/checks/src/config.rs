//! The configuration file: TOML into the server's [`Config`], and its validation.
//!
//! What parses re-serializes to TOML that parses to the same configuration (compared as its TOML
//! text, which holds for `NaN` too), and validates the same way. What validates keeps every
//! limit `docs/PROTOCOL.md` documents (each at least 1, `max_inflight_body_bytes` at least
//! `max_body_bytes`, the timeouts at least 1), a listening address with a host and a port, a store
//! URL the server can open, and serves each declared entity at its path with its declared
//! fields and nothing at a reserved path. A refusal says why.
//!
//! Configurations that name key files (`[auth.jwt]` `secret_file`, `public_key_file`,
//! `jwks_file`) are parsed and round-tripped but not validated: validating reads those files,
//! and a generated path may name a device that never ends.

use sync_server::Config;
use sync_server::config::{ConfigError, DbUrl};

/// Checks one configuration text (the input's bytes, if UTF-8); see the module doc.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = toml::from_str::<Config>(text) else { return };

    // Not every configuration can be written back (TOML has no null inside an array, for
    // example); the server never writes one, so only those that can are compared.
    if let Ok(written) = toml::to_string(&config) {
        let reread: Config = toml::from_str(&written)
            .unwrap_or_else(|e| panic!("a written configuration does not parse: {e}\n{written}"));
        let rewritten = toml::to_string(&reread).expect("a configuration read back is written again");
        assert_eq!(written, rewritten, "parse → serialize → parse changed the configuration");
        if reads_files(&config) {
            return;
        }
        assert_eq!(
            config.validate().is_ok(),
            reread.validate().is_ok(),
            "a configuration and its written form validate differently"
        );
    }
    if reads_files(&config) {
        return;
    }
    match config.validate() {
        Ok(validated) => check_valid(&config, &validated),
        Err(ConfigError::Invalid(why)) => assert!(!why.is_empty(), "a refusal without a reason"),
        Err(other) => panic!("validation of parsed text failed with {other:?}"),
    }
}

fn reads_files(config: &Config) -> bool {
    config
        .auth
        .jwt
        .as_ref()
        .is_some_and(|j| j.secret_file.is_some() || j.public_key_file.is_some() || j.jwks_file.is_some())
}

fn check_valid(config: &Config, validated: &sync_server::config::Validated) {
    let l = &config.limits;
    for (name, value) in [
        ("max_body_bytes", l.max_body_bytes),
        ("max_items", l.max_items),
        ("max_id_bytes", l.max_id_bytes),
        ("max_fields", l.max_fields),
        ("max_field_name_bytes", l.max_field_name_bytes),
        ("max_string_bytes", l.max_string_bytes),
        ("max_depth", l.max_depth),
        ("max_inflight_body_bytes", l.max_inflight_body_bytes),
        ("max_page", l.max_page),
    ] {
        assert!(value >= 1, "limits.{name} = 0 validated");
    }
    assert!(l.max_inflight_body_bytes >= l.max_body_bytes, "max_inflight_body_bytes below max_body_bytes");
    for (name, value) in [
        ("head_timeout_secs", config.head_timeout_secs),
        ("body_timeout_secs", config.body_timeout_secs),
        ("idempotency_ttl_secs", config.idempotency_ttl_secs),
    ] {
        assert!(value >= 1, "{name} = 0 validated");
    }
    let (host, port) = config.bind.rsplit_once(':').expect("a validated bind has a port");
    assert!(!host.is_empty() && port.parse::<u16>().is_ok(), "bind {:?} validated", config.bind);
    match &validated.db {
        DbUrl::Postgres(url) => assert!(url.starts_with("postgres://") || url.starts_with("postgresql://")),
        DbUrl::Sqlite(path) => assert!(!path.as_os_str().is_empty(), "an empty SQLite path validated"),
    }
    for origin in &config.cors_origins {
        assert!(
            origin == "*" || (origin.starts_with("http") && origin.contains("://") && !origin.ends_with('/')),
            "cors origin {origin:?} validated"
        );
    }
    assert_eq!(validated.entities.is_declared(), !config.entities.is_empty());
    for entity in &config.entities {
        let name = sync_proto::EntityName::new(entity.name.clone()).expect("a validated entity name is valid");
        let path = entity.path.clone().unwrap_or_else(|| name.default_path());
        assert!(!sync_server::routes::is_reserved(&path), "entity {name} served at reserved {path}");
        for reserved in ["id", "_removed", "_lastChange"] {
            assert!(!entity.fields.contains_key(reserved), "entity {name} declares {reserved}");
        }
        let resolved = validated.entities.resolve(&path).unwrap_or_else(|| panic!("{name} is not served at {path}"));
        assert_eq!(resolved.name, name, "{path} serves another entity");
        let fields = resolved.schema.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
        assert_eq!(fields, entity.fields, "{name} is not served with its declared fields");
    }
    for prefix in sync_server::routes::RESERVED_PREFIXES {
        assert!(validated.entities.resolve(prefix).is_none(), "an entity is served at {prefix}");
    }
}
