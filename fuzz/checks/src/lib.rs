//! Properties of every parser that reads outside input, each a function of raw fuzz bytes that
//! panics when its property fails. The cargo-fuzz targets under `fuzz/` call them on generated
//! inputs; `tests/regressions.rs` calls them on the committed inputs of `fuzz/regressions/`, so
//! every input that once broke a property is checked by the ordinary test run.
//!
//! | module | what is read | property |
//! |---|---|---|
//! | [`push`] | a push body, schemaless and against a declared schema | an independent reading of the body agrees with `parse_push`; what parses re-serializes to the same changes; through the server's own handler a refused push answers its documented error body and leaves the store as it was, an accepted one is pulled back exactly as the push rules say |
//! | [`query`] | the query string of a pull | `PullQuery::parse` agrees with the documented grammar, re-serializes to itself, and the handler answers `400 invalid_query` exactly when it refuses |
//! | [`config`] | the TOML configuration | what parses re-serializes to the same configuration; what validates keeps every documented limit and serves each declared entity at its path |
//! | [`client`] | the client's reading of pull and push answers | re-serialized answers read back the same; the server's answer writer and the client's reader agree |
//! | [`tokens`] | JWT bearer tokens, Basic credentials | a token verifies only if it was signed with the secret over exactly its bytes; Basic credentials decode and re-encode to themselves, and verify only with the right password |
//! | [`webhook`] | webhook signatures | a signature verifies iff made with the secret over exactly those bytes, within the tolerance |

pub mod client;
pub mod config;
mod harness;
mod input;
pub mod push;
pub mod query;
pub mod tokens;
pub mod webhook;

use std::path::PathBuf;

use serde_json::Value;
use sync_proto::ErrorBody;

/// The names of the fuzz targets, which are also the directories of their regression inputs.
pub const TARGETS: &[&str] = &[
    "push_schemaless",
    "push_declared",
    "pull_query",
    "config_toml",
    "client_pull_answer",
    "client_push_answer",
    "jwt_bearer",
    "basic_credentials",
    "webhook_signature",
];

/// The check a fuzz target runs, by target name; `None` for an unknown name.
pub fn check_of(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "push_schemaless" => push::schemaless,
        "push_declared" => push::declared,
        "pull_query" => query::check,
        "config_toml" => config::check,
        "client_pull_answer" => client::pull_answer,
        "client_push_answer" => client::push_answer,
        "jwt_bearer" => tokens::jwt,
        // The committed inputs are few: each also goes through the slow password check.
        "basic_credentials" => tokens::basic_thorough,
        "webhook_signature" => webhook::check,
        _ => return None,
    })
}

/// The directory of a target's committed regression inputs (`fuzz/regressions/<target>`).
pub fn regressions_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("regressions").join(target)
}

/// Checks an error answer: its body has the documented shape, and its status is the one of its
/// code. Returns the body.
pub(crate) fn error_body(status: u16, body: &[u8]) -> ErrorBody {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("an error answer ({status}) is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    check_error_shape(&value);
    let parsed = push::parse_error_body(body);
    assert_eq!(status, parsed.error.http_status(), "{:?} answered with status {status}", parsed.error);
    parsed
}

/// The documented shape of an error body: `status` is `"error"`, `error` a code, `message` text
/// for people, and `details`, when present, a non-empty list of faults of at most 100, each with
/// `index` and `reason` and optionally `id` and `field`. Nothing else.
pub(crate) fn check_error_shape(value: &Value) {
    let object = value.as_object().expect("an error body is an object");
    for key in object.keys() {
        assert!(["status", "error", "message", "details", "conflicts"].contains(&key.as_str()), "unknown member {key}");
    }
    assert_eq!(object.get("status"), Some(&Value::from("error")));
    assert!(object.get("error").and_then(Value::as_str).is_some_and(|c| !c.is_empty()), "no code: {value}");
    assert!(object.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "no message: {value}");
    if let Some(details) = object.get("details") {
        let details = details.as_array().expect("details is an array");
        assert!(!details.is_empty() && details.len() <= sync_proto::push::MAX_REPORTED_ITEMS);
        for fault in details {
            let fault = fault.as_object().expect("a fault is an object");
            assert!(fault.get("index").is_some_and(Value::is_u64), "a fault without index");
            assert!(fault.get("reason").and_then(Value::as_str).is_some_and(|r| !r.is_empty()));
            for key in fault.keys() {
                assert!(["index", "id", "field", "reason"].contains(&key.as_str()), "unknown fault member {key}");
            }
            for key in ["id", "field"] {
                assert!(fault.get(key).is_none_or(Value::is_string), "{key} is not a string");
            }
        }
    }
}
