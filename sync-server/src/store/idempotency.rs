//! The rules of idempotent pushes, for every store.
//!
//! A push sent with an `Idempotency-Key` is remembered with the key, a fingerprint of its body and
//! the `now` it was applied at, in the same transaction as the push. Within the key's time to
//! live:
//! - the same key with the same body is a **replay**: nothing is applied, and the answer repeats
//!   the original `now`;
//! - the same key with another body is refused ([`StoreError::IdempotencyKeyReused`]);
//! - keys are per scope: the same key in another scope is another push.
//!
//! A key older than its time to live counts as unknown at once, whenever the periodic purge of
//! the server's janitor gets to deleting it: the time to live is exact.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sync_proto::{Cursor, IdempotencyKey};

use super::{PushOutcome, StoreError};

/// How long a key is remembered unless configured otherwise (`idempotency_ttl_secs`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The idempotency key of one push, with the fingerprint of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    key: IdempotencyKey,
    fingerprint: String,
    ttl: Duration,
}

/// A push remembered under the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The `now` it was applied at.
    pub now: i64,
    /// The fingerprint of its body.
    pub fingerprint: String,
}

impl Idempotency {
    /// The key of a push whose body is `body`, remembered for `ttl`.
    pub fn new(key: IdempotencyKey, body: &[u8], ttl: Duration) -> Self {
        Self { key, fingerprint: hex::encode(Sha256::digest(body)), ttl }
    }

    /// The key.
    pub fn key(&self) -> &str {
        self.key.as_str()
    }

    /// The fingerprint of the body (hex SHA-256).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Keys remembered before this time (epoch ms) are expired when the wall clock reads `wall_ms`.
    pub fn valid_from_ms(&self, wall_ms: i64) -> i64 {
        expiry_horizon(wall_ms, self.ttl)
    }

    /// What a push with this key answers, given the push remembered under it.
    pub fn replay(&self, earlier: &Remembered) -> Result<PushOutcome, StoreError> {
        if earlier.fingerprint == self.fingerprint {
            Ok(PushOutcome { now: Cursor::from_millis(earlier.now), replayed: true })
        } else {
            Err(StoreError::IdempotencyKeyReused(self.key().to_owned()))
        }
    }
}

/// The time (epoch ms) before which keys of time to live `ttl` are expired, at `wall_ms`.
pub fn expiry_horizon(wall_ms: i64, ttl: Duration) -> i64 {
    wall_ms.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_body_replays_and_another_is_refused() {
        let key = IdempotencyKey::new("k-1").unwrap();
        let first = Idempotency::new(key.clone(), b"[1]", DEFAULT_TTL);
        let remembered = Remembered { now: 42, fingerprint: first.fingerprint().to_owned() };
        assert_eq!(first.replay(&remembered).unwrap(), PushOutcome { now: Cursor::from_millis(42), replayed: true });
        let other = Idempotency::new(key, b"[2]", DEFAULT_TTL);
        assert!(matches!(other.replay(&remembered), Err(StoreError::IdempotencyKeyReused(k)) if k == "k-1"));
    }

    #[test]
    fn keys_expire_exactly_after_their_time_to_live() {
        let key = Idempotency::new(IdempotencyKey::new("k").unwrap(), b"", Duration::from_secs(10));
        assert_eq!(key.valid_from_ms(100_000), 90_000);
        assert_eq!(expiry_horizon(5, Duration::from_secs(u64::MAX)), 5 - i64::MAX);
    }
}
