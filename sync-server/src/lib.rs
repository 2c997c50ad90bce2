//! A sync server for the persistence.js protocol: apps written against `persistence.sync.js`
//! point at it unchanged, and get guarantees the reference servers never gave (no missed change
//! under concurrency, unique monotonic timestamps, atomic pushes, durability of every answer).
//!
//! # Layout
//! - [`config`]: the TOML configuration, the store URL, and which entities are served where.
//! - [`store`]: the [`store::Store`] trait, with its SQLite and PostgreSQL implementations.
//! - [`clock`]: the wall clock timestamps start from, and the rule that keeps them increasing.
//! - [`routes`]: the HTTP handlers.
//! - [`budget`]: the bound on request bodies held in memory at once.
//! - [`error`]: the one mapping from errors to HTTP answers.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`startup`]: opening the store, binding, serving, shutting down.
//! - [`telemetry`]: structured logs.

pub mod budget;
pub mod clock;
pub mod config;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use startup::{run, serve};
