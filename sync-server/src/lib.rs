//! A sync server for the persistence.js protocol: apps written against `persistence.sync.js`
//! point at it unchanged, and get guarantees the reference servers never gave (no missed change
//! under concurrency, unique monotonic timestamps, atomic pushes, durability of every answer).
//! The wire contract and the guarantees are in `docs/PROTOCOL.md`; the data path of a request,
//! file by file, in `ARCHITECTURE.md`.
//!
//! # Layout
//! - [`startup`]: the [`Application`]: build (store, listener, background tasks), serve, stop.
//! - [`config`]: the TOML configuration, the store URL, and which entities are served where.
//! - [`routes`]: the route table and one module per resource (pull, push, body, health, metrics).
//! - [`state`]: what every handler shares.
//! - [`auth`]: who is calling (JWT, cookie, Basic), and which partition of an entity they use.
//! - [`origin`]: which web pages may call the server (CORS, and the refusal of other origins).
//! - [`error`]: the one mapping from errors to HTTP answers.
//! - [`store`]: the [`store::Store`] trait, the push and pull algorithms written once, and the
//!   SQLite and PostgreSQL implementations.
//! - [`tasks`]: supervised background tasks; [`janitor`]: the periodic clean-ups.
//! - [`clock`]: the wall clock timestamps start from, and the rule that keeps them increasing.
//! - [`budget`]: the bound on request bodies held in memory at once.
//! - [`metrics`]: `/metrics` in the Prometheus text format; [`telemetry`]: structured logs.

pub mod admin;
pub mod auth;
pub mod budget;
pub mod clock;
pub mod config;
pub mod error;
pub mod janitor;
pub mod live;
pub mod metrics;
pub mod origin;
pub mod outbox;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod validation;

pub use config::Config;
pub use startup::{Application, run};
