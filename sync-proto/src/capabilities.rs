//! What a server offers beyond the base protocol, as `GET /_sync/capabilities` tells it (see
//! docs/PROTOCOL.md, "Capability discovery"). A base server answers that path `404`: it offers
//! nothing beyond the base protocol.

use serde::{Deserialize, Serialize};

/// The path of the capabilities document.
pub const CAPABILITIES_PATH: &str = "/_sync/capabilities";

/// The path of the OpenAPI description of the server's HTTP API (`docs/openapi.yaml`).
pub const OPENAPI_PATH: &str = "/_sync/openapi.yaml";

/// The capabilities document. Readers ignore members they do not know, so that newer servers can
/// announce more.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// The extensions offered; an extension that is absent is not offered.
    pub extensions: Extensions,
}

/// Each extension the server offers, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Extensions {
    /// `limit` on pulls: pages that end with `"more": true` until the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
    /// `Idempotency-Key` on pushes: a retried push is answered from its first application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    /// Authentication, and a partition of the data per user or group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Partitions>,
    /// `wait` on pulls: an answer with no update is held until a change or the wait ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_poll: Option<LongPoll>,
    /// `Sync-Preconditions: on` on pushes: each item's `_lastChange` must be the stored version,
    /// or nothing is applied and the answer is `409 conflict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Preconditions>,
    /// Tombstones are purged after a while; a pull from before a scope's purge horizon is
    /// answered in full, marked `"reset": true` for clients that send `reset=1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<Reset>,
}

/// The reset extension's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reset {
    /// How long tombstones are kept, in days.
    pub tombstone_retention_days: u64,
}

/// The preconditions extension's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Preconditions {
    /// The request header that asks for them.
    pub header: String,
}

/// The long-poll extension's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LongPoll {
    /// The longest `wait` honoured, in seconds; a longer one is lowered to it.
    pub max_wait_secs: u64,
}

/// The paging extension's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Paging {
    /// The largest `limit` honoured; a larger one is lowered to it.
    pub max_limit: usize,
}

/// The idempotency extension's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Idempotency {
    /// How long a key is remembered, in seconds.
    pub retention_secs: u64,
}

/// The partitions extension's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Partitions {
    /// How requests authenticate: `"bearer"` (a JWT in `Authorization`).
    pub authentication: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_extensions_are_not_offered_and_unknown_members_are_ignored() {
        let read: Capabilities =
            serde_json::from_str(r#"{"extensions": {"paging": {"max_limit": 5}, "teleport": {}}, "v": 9}"#).unwrap();
        assert_eq!(read.extensions.paging, Some(Paging { max_limit: 5 }));
        assert_eq!((read.extensions.idempotency, read.extensions.partitions), (None, None));
        let written = serde_json::to_string(&Capabilities::default()).unwrap();
        assert_eq!(written, r#"{"extensions":{}}"#);
    }
}
