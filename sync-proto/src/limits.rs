//! The bounds a push body is checked against, so that no input can make the server allocate
//! without bound. Every one is configurable; the defaults suit a laptop and a busy server alike.

use serde::{Deserialize, Serialize};

/// Limits on one push. Checked while parsing, before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, in bytes (answered `413` from `Content-Length` before reading).
    pub max_body_bytes: usize,
    /// Most objects in one push.
    pub max_items: usize,
    /// Longest object id, in bytes.
    pub max_id_bytes: usize,
    /// Most fields on one object (not counting `id`, `_removed` and `_lastChange`).
    pub max_fields: usize,
    /// Longest field name, in bytes.
    pub max_field_name_bytes: usize,
    /// Longest string value, in bytes (after JSON unescaping).
    pub max_string_bytes: usize,
    /// Deepest nesting of a field value: `1` allows only scalars, `2` an array of scalars, ...
    pub max_depth: usize,
    /// Most bytes of request bodies held in memory at once, over all requests; a push that would
    /// pass it is refused at once with `503` (and may be retried). At least `max_body_bytes`.
    pub max_inflight_body_bytes: usize,
    /// Largest page a paged pull (`limit=`) may ask for; larger requests are clamped to it.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_items: 10_000,
            max_id_bytes: 256,
            max_fields: 256,
            max_field_name_bytes: 256,
            max_string_bytes: 1024 * 1024,
            max_depth: 16,
            max_inflight_body_bytes: 256 * 1024 * 1024,
            max_page: 10_000,
        }
    }
}
