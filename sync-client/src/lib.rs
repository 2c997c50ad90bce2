//! An offline-first local store that syncs with a persistence.js-compatible server.
//!
//! The app reads and writes its own SQLite file through a [`Store`], online or not; a [`Syncer`]
//! reconciles it with the server when asked: it pulls what changed since the last sync, merges
//! each object three-way per field against the version both sides started from, lets a
//! [`ConflictHandler`] decide what truly conflicts, and pushes the local changes.
//!
//! ```no_run
//! use serde_json::json;
//! use sync_client::{Entity, FieldType, HttpTransport, PreferRemote, Query, Store, Syncer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("app.db", [Entity::new("Todo").field("text", FieldType::Text).field("done", FieldType::Bool)])?;
//! let id = store.insert("Todo", json!({"text": "buy milk", "done": false}))?;
//! store.update("Todo", &id, json!({"done": true}))?;
//! let open = store.query(&Query::new("Todo").filter("done", false))?;
//!
//! let syncer = Syncer::new(store.clone(), HttpTransport::new("http://127.0.0.1:8080")?);
//! let report = syncer.sync_all(&PreferRemote)?;
//! println!("pulled {}, pushed {}, {} conflicts", report.pulled(), report.pushed(), report.conflicts());
//! # let _ = open;
//! # Ok(())
//! # }
//! ```
//!
//! # Typed records, change notifications, status
//! An app's own structs can be its entities ([`TypedEntity`], checked against the declared
//! fields when the store opens); subscriptions ([`Store::subscribe`], [`Store::watch`]) are told
//! what a local write or a sync changed in an entity or a query's result; [`Syncer::status`] and
//! [`Syncer::watch_status`] tell a UI what syncing is doing and how far it got.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use sync_client::{FieldType, HttpTransport, PreferRemote, Store, Syncer, TypedEntity};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Todo {
//!     text: String,
//!     done: bool,
//! }
//!
//! impl TypedEntity for Todo {
//!     const NAME: &'static str = "Todo";
//!     const FIELDS: &'static [(&'static str, FieldType)] = &[("text", FieldType::Text), ("done", FieldType::Bool)];
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("app.db", [Todo::entity()])?;
//! let todos = store.typed::<Todo>()?;
//! let open = store.watch(Todo::query().filter("done", false))?;
//! todos.insert(&Todo { text: "buy milk".into(), done: false })?;
//! let change = open.recv()?;
//! println!("{} changed by a {:?} write", change.ids.join(", "), change.cause);
//!
//! let syncer = Syncer::new(store.clone(), HttpTransport::new("http://127.0.0.1:8080")?);
//! let statuses = syncer.watch_status();
//! syncer.sync_all(&PreferRemote)?;
//! for status in statuses.try_iter() {
//!     println!("{:?} {:?}", status.activity, status.progress);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Relations
//! A one-to-one reference ([`Entity::reference`]) is a field holding the other object's id,
//! followed with [`Store::follow`]; a many-to-many relation is a join entity ([`Entity::join`])
//! whose links, each with an id derived from its two ends ([`link_id`]), are added with
//! [`Store::link`], removed with [`Store::unlink`] (a tombstone) and read with
//! [`Store::related`]. Both sync as ordinary objects, as persistence.js stores them.
//!
//! # Guarantees
//! - Every local write is tracked in the same SQLite transaction as the write, by a local change
//!   counter (never the wall clock).
//! - No lost edits: an edit made while a sync is in flight is never marked clean by that sync; a
//!   push is recorded with its idempotency key before it is sent, and re-sent unchanged until the
//!   server acknowledges it, so a crash or a lost answer ends as a clean run would (the server
//!   applies it once when it supports idempotent push).
//! - It works with any server of the base protocol (no paging, no idempotency, an id sent twice)
//!   and uses paging and idempotent push when the server offers them.
//!
//! - No silent overwrite: with a server that offers preconditions, a push states the version each
//!   object was based on; if another device changed one since, the server applies nothing
//!   (`409`), and the sync pulls, asks the conflict handler, and pushes again. A base server
//!   offers none: there, as in persistence.js, a change another device pushes between this
//!   device's pull and its push of the same field is overwritten by that push.
//!
//! # Threads and async
//! [`Store`] and [`Syncer`] are `Send + Sync`; share them with `Arc` or clone the store. The
//! methods block: call them from plain threads as they are. From async code (tokio), use the
//! async API of the `tokio` feature (`AsyncSyncer`, `AsyncStore` in `async_api`), which runs
//! the same calls on tokio's blocking pool so that they never stall the runtime's workers; or
//! run a sync there yourself:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sync_client::{PreferLocal, Syncer};
//! # async fn run(syncer: Arc<Syncer>) -> Result<(), Box<dyn std::error::Error>> {
//! let s = Arc::clone(&syncer);
//! let report = tokio::task::spawn_blocking(move || s.sync_all(&PreferLocal)).await??;
//! # let _ = report;
//! # Ok(())
//! # }
//! ```
//!
//! Store reads and writes are short local transactions; async apps may call them directly or
//! through `spawn_blocking` as for any file I/O. [`HttpTransport`] may be created and dropped on
//! any thread, async or not (it does the parts of `reqwest::blocking` that must not run inside a
//! runtime on a helper thread).
//!
//! # Layout
//! - [`schema`]: entities, typed fields, their tables, and value conversion.
//! - [`store`]: the local store: CRUD, queries, transactions.
//! - [`typed`]: the app's own structs as entities, checked against the declared fields.
//! - [`relations`]: one-to-one references and many-to-many relations as join entities.
//! - [`notify`]: subscriptions to an entity or a query, told after local writes and syncs.
//! - [`status`]: the sync status and progress a UI shows, and the last sync's kept outcome.
//! - `tracking` (internal): the change counter, base versions, tombstones, cursors, pending pushes.
//! - [`merge`]: the pure three-way merge of one object.
//! - [`conflict`]: conflicts, resolutions, and the handlers that decide them.
//! - [`engine`]: the sync run and its report.
//! - [`live`]: live sync, on the server's changes (long-poll) and on local ones.
//! - [`transport`]: the [`Transport`] trait and the HTTP implementation with timeouts and retries.
//! - `async_api` (feature `tokio`): the async API beside the blocking one.
//! - [`error`]: the error types.
//!
//! # Features
//! - `tokio`: the async API (`async_api`: `AsyncStore`, `AsyncSyncer`), whose calls run on
//!   tokio's blocking pool.
//! - `rustls`: HTTPS through rustls. Off by default, so that the default build stays small (plain
//!   HTTP, for a server behind a TLS-terminating proxy on the same host or network).

#![warn(missing_docs)]

#[cfg(feature = "tokio")]
pub mod async_api;
pub mod conflict;
pub mod engine;
pub mod error;
pub mod live;
pub mod merge;
pub mod notify;
pub mod relations;
pub mod schema;
pub mod status;
pub mod store;
mod tracking;
pub mod transport;
pub mod typed;

#[cfg(feature = "tokio")]
pub use async_api::{AsyncStore, AsyncSyncer, LiveReports};
pub use conflict::{Conflict, ConflictHandler, ConflictKind, PreferLocal, PreferRemote, Resolution};
pub use engine::{EntityReport, ResolvedConflict, SyncOptions, SyncReport, Syncer};
pub use error::{StoreError, SyncError, TransportError};
pub use live::LiveOptions;
pub use notify::{Cause, Change, ChangeReceiver, Subscription, Watch};
pub use relations::link_id;
pub use schema::{End, Entity, Fields};
pub use status::{Activity, LastError, Progress, SyncStatus};
pub use store::{Order, Query, Record, SetAside, Store, Tx, new_id};
/// Webhook events of the server's outbox and [`webhook::verify`], for the systems that receive
/// them.
pub use sync_proto::webhook;
pub use sync_proto::{Capabilities, Cursor, FieldType, IdempotencyKey};
pub use transport::{
    HttpTransport, HttpTransportBuilder, PullPage, PushAck, RemoteObject, RetryPolicy, TokenProvider, Transport, Waited,
};
pub use typed::{Typed, TypedEntity, TypedRecord};
