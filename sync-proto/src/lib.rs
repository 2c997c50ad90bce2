//! The wire contract of the persistence.js sync protocol, with no I/O.
//!
//! # Layout
//! - [`names`]: validated newtypes for entity names, object ids and cursors (timestamps).
//! - [`limits`]: the bounds every push body is checked against.
//! - [`field`]: field types of a declared entity and the check of one JSON value against them.
//! - [`push`]: parsing and validation of a `POST` body into typed [`push::Change`]s.
//! - [`pull`]: the `GET` query and the writer of the pull answer, which splices stored JSON.
//! - [`error`]: the JSON error body every failed request answers with.
//!
//! Values keep the exact JSON text the client sent: an integer stays an integer, `1` never becomes
//! `1.0` or `true`, 64-bit integers keep every digit. Field values are carried as
//! [`serde_json::value::RawValue`] and never re-serialized.

pub mod capabilities;
pub mod error;
pub mod field;
pub mod limits;
pub mod names;
pub mod pull;
pub mod push;
pub mod webhook;

pub use capabilities::{CAPABILITIES_PATH, Capabilities, OPENAPI_PATH};
pub use error::{ConflictItem, ErrorBody, ErrorCode, ItemError};
pub use field::{EntitySchema, FieldType};
pub use limits::Limits;
pub use names::{Cursor, EntityName, IdempotencyKey, NameError, ObjectId};
pub use pull::{PullQuery, PullWriter, PushAnswer};
pub use push::{Change, FieldsJson, PRECONDITIONS_HEADER, PushError, parse_push};
