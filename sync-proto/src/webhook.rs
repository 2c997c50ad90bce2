//! Webhook events as the server sends them, and their signatures, per the Standard Webhooks
//! specification: the receiver's side ([`verify`]) and the sender's ([`sign`]).
//!
//! Every request carries three headers: `webhook-id` (the event id: the same on every retry, so
//! it is the receiver's deduplication key), `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 over `id.timestamp.body` (the exact
//! bytes of the body), space-separated when several secrets sign (while a secret is rotated).
//! Secrets are written `whsec_` and the base64 of the key bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

/// The header naming the event.
pub const ID_HEADER: &str = "webhook-id";
/// The header with the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header with the signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The prefix of secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a request's timestamp may be from the receiver's clock, by default (replays older
/// than this are refused).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Created or changed: `object` holds its fields after the change.
    Upsert,
    /// Removed: `object` is `null`.
    Remove,
}

impl Operation {
    /// `upsert` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Remove => "remove",
        }
    }
}

/// One change of one object, as a webhook body carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The event's id, also sent as `webhook-id`: stable across retries and unique.
    pub id: String,
    /// `object.upsert` or `object.remove`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity (`Task`).
    pub entity: String,
    /// The partition (`user:alice`, `team:red`, `shared`), empty outside any.
    pub partition: String,
    /// The object's id.
    pub object_id: String,
    /// What happened.
    pub operation: Operation,
    /// The object's fields after the change (without `id` and `_lastChange`); `null` for a
    /// removal.
    pub object: Option<Box<RawValue>>,
    /// The object's `_lastChange`: the `now` of the push. Later changes of one object have
    /// larger values, so a receiver can ignore an older event that arrives late.
    #[serde(rename = "lastChange")]
    pub last_change: i64,
    /// The `x-request-id` of the push, for tracing it through both systems.
    pub request_id: Option<String>,
}

/// Why a webhook request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A secret is not `whsec_` and base64.
    #[error("a secret is not whsec_ followed by base64")]
    BadSecret,
    /// `webhook-timestamp` is not an integer.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is further from now than the tolerance: a replay, or a wrong clock.
    #[error("webhook-timestamp is {0} s away from now")]
    Stale(i64),
    /// No signature matches any secret.
    #[error("no v1 signature of webhook-signature matches")]
    NoMatch,
}

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(VerifyError::BadSecret)?;
    STANDARD.decode(encoded).map_err(|_| VerifyError::BadSecret)
}

/// The MAC over `id.timestamp.body`, with the timestamp as the header carries it.
fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for `body` sent as event `id` at `timestamp`: one `v1,`
/// signature per secret, space-separated.
pub fn sign(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, VerifyError> {
    let mut signatures = Vec::with_capacity(secrets.len());
    let timestamp = timestamp.to_string();
    for secret in secrets {
        let tag = mac(&secret_key(secret)?, id, &timestamp, body).finalize().into_bytes();
        signatures.push(format!("v1,{}", STANDARD.encode(tag)));
    }
    Ok(signatures.join(" "))
}

/// Checks a webhook request as received: the values of its three headers and its body's exact
/// bytes, against the receiver's secrets (several while one is rotated) and its clock (`now`,
/// Unix seconds), accepting timestamps within `tolerance_secs`. Comparisons run in constant time.
pub fn verify(
    secrets: &[&str],
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    // Digits only, as senders write it: `+123`, ` 123` or `1e3` would parse or be read
    // differently by another verifier, and a signature is over the header's exact text.
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    let sent: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    // Measured in 128 bits: `now - sent` of two far-apart values overflows an i64, and the
    // absolute value of a saturated difference (i64::MIN) does too, which would let a request
    // from the far future pass as fresh.
    let skew = i128::from(now) - i128::from(sent);
    if skew.abs() > i128::from(tolerance_secs) {
        return Err(VerifyError::Stale(i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX })));
    }
    let keys = secrets.iter().map(|s| secret_key(s)).collect::<Result<Vec<_>, _>>()?;
    let candidates: Vec<Vec<u8>> = signature
        .split_ascii_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .collect();
    for key in &keys {
        for candidate in &candidates {
            if mac(key, id, timestamp, body).verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference implementations.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_as_the_specification_example() {
        assert_eq!(sign(&[SECRET], ID, TIMESTAMP, BODY).unwrap(), SIGNATURE);
    }

    #[test]
    fn verifies_the_example_and_refuses_any_change() {
        let check =
            |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| verify(&[SECRET], id, ts, sig, body, now, 300);
        assert_eq!(check(ID, "1614265330", SIGNATURE, BODY, TIMESTAMP + 10), Ok(()));
        assert_eq!(check("msg_other", "1614265330", SIGNATURE, BODY, TIMESTAMP), Err(VerifyError::NoMatch));
        assert_eq!(check(ID, "1614265331", SIGNATURE, BODY, TIMESTAMP), Err(VerifyError::NoMatch));
        assert_eq!(
            check(ID, "1614265330", SIGNATURE, br#"{"test": 2432232315}"#, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(check(ID, "1614265330", SIGNATURE, BODY, TIMESTAMP + 301), Err(VerifyError::Stale(301)));
        assert_eq!(check(ID, "soon", SIGNATURE, BODY, TIMESTAMP), Err(VerifyError::BadTimestamp));
        assert_eq!(check(ID, "1614265330", "v2,abc", BODY, TIMESTAMP), Err(VerifyError::NoMatch));
    }

    #[test]
    fn timestamps_far_from_the_clock_are_stale_without_overflow() {
        // A receiver whose clock reads before 1970 and a request signed at the end of time: their
        // distance does not fit an i64.
        let far = i64::MAX;
        let signature = sign(&[SECRET], ID, far, BODY).unwrap();
        assert_eq!(
            verify(&[SECRET], ID, &far.to_string(), &signature, BODY, -2, 300),
            Err(VerifyError::Stale(i64::MIN))
        );
        let epoch = sign(&[SECRET], ID, 0, BODY).unwrap();
        assert_eq!(verify(&[SECRET], ID, "0", &epoch, BODY, i64::MAX, 300), Err(VerifyError::Stale(i64::MAX)));
    }

    #[test]
    fn only_digits_are_a_timestamp() {
        // Each of these reads as the example's time to some parser, but is not what was signed.
        for ts in ["+1614265330", " 1614265330", "1614265330 ", "01614265330", "-1", "", "1.6e9"] {
            let got = verify(&[SECRET], ID, ts, SIGNATURE, BODY, TIMESTAMP, 300);
            assert!(matches!(got, Err(VerifyError::BadTimestamp | VerifyError::NoMatch)), "{ts:?}: {got:?}");
            assert_ne!(got, Ok(()), "{ts:?}");
        }
        assert_eq!(
            verify(&[SECRET], ID, "+1614265330", SIGNATURE, BODY, TIMESTAMP, 300),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn a_rotated_secret_is_accepted_beside_the_old_one() {
        let new = "whsec_c2Vjb25kIHNlY3JldCBvZiB0aGUgdGVzdHM=";
        let both = sign(&[new, SECRET], ID, TIMESTAMP, BODY).unwrap();
        assert_eq!(both.split(' ').count(), 2);
        assert_eq!(verify(&[SECRET], ID, &TIMESTAMP.to_string(), &both, BODY, TIMESTAMP, 300), Ok(()));
        assert_eq!(verify(&[new], ID, &TIMESTAMP.to_string(), &both, BODY, TIMESTAMP, 300), Ok(()));
        assert_eq!(verify(&["whsec_bad!"], ID, "1", &both, BODY, 1, 300), Err(VerifyError::BadSecret));
    }
}
