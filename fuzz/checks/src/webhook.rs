//! Webhook signatures (`sync_proto::webhook`), as receivers check them with `verify`.
//!
//! A signature made by `sign` with the secret over an id, a timestamp and a body verifies iff the
//! receiver's clock is within the tolerance of that timestamp (computed here without overflow);
//! the same request with any one byte of its id, body or signature changed, its timestamp moved,
//! or checked against another secret, does not. Whatever signature header the input holds, it
//! verifies only if one of its `v1,` entries is the HMAC-SHA256, computed here independently, of
//! `id.timestamp.body` with the secret and the timestamp header's exact text, which must be digits only
//! (no sign or space that another parser would read as the same time).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sync_proto::webhook::{VerifyError, sign, verify};

use crate::input::Input;

/// Checks one request drawn from the input; see the module doc.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let key = input.bytes(64);
    let secret = format!("whsec_{}", STANDARD.encode(key));
    let other = format!("whsec_{}", STANDARD.encode([key, b"+"].concat()));
    // Ids are visible ASCII, as servers make them, so that a changed byte is still text.
    let id: String = input.bytes(48).iter().map(|b| char::from(b'!' + b % 94)).collect();
    // Unix seconds as senders write them: never negative.
    let timestamp = input.i64() & i64::MAX;
    let now = input.i64();
    let tolerance = i64::from(input.byte()) * 10;
    let flip = input.byte();
    let header = String::from_utf8_lossy(input.bytes(200)).into_owned();
    let body = input.rest();

    let signature = sign(&[&secret], &id, timestamp, body).expect("a whsec_ secret signs");
    let ts = timestamp.to_string();
    let fresh = (i128::from(now) - i128::from(timestamp)).abs() <= i128::from(tolerance);
    let verdict = verify(&[&secret], &id, &ts, &signature, body, now, tolerance);
    if fresh {
        assert_eq!(verdict, Ok(()), "a fresh signature of the secret was refused");
    } else {
        assert!(matches!(verdict, Err(VerifyError::Stale(_))), "a stale request was {verdict:?}");
    }
    // From here on the receiver's clock is the request's: only the bytes decide.
    let check = |secret: &str, id: &str, ts: &str, signature: &str, body: &[u8]| {
        verify(&[secret], id, ts, signature, body, timestamp, tolerance)
    };
    assert_eq!(check(&secret, &id, &ts, &signature, body), Ok(()));
    let no_match = Err(VerifyError::NoMatch);
    assert_eq!(check(&other, &id, &ts, &signature, body), no_match, "another secret verified");
    if let Some(next) = timestamp.checked_add(1) {
        let moved = verify(&[&secret], &id, &next.to_string(), &signature, body, next, tolerance);
        assert_eq!(moved, no_match, "a moved timestamp verified");
    }
    if !id.is_empty() {
        let mut changed = id.clone().into_bytes();
        let at = usize::from(flip) % changed.len();
        changed[at] = if changed[at] == b'~' { b'!' } else { changed[at] + 1 };
        let changed = String::from_utf8(changed).expect("ASCII");
        assert_eq!(check(&secret, &changed, &ts, &signature, body), no_match, "a changed id verified");
    }
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let at = usize::from(flip) % changed.len();
        changed[at] ^= 1 << (flip % 8);
        assert_eq!(check(&secret, &id, &ts, &signature, &changed), no_match, "a changed body verified");
    }
    let mut changed = signature.clone().into_bytes();
    let at = usize::from(flip) % changed.len();
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("ASCII");
    assert_eq!(check(&secret, &id, &ts, &changed, body), no_match, "a changed signature verified: {changed}");

    // Any header the input holds, checked at its own timestamp.
    let claimed_ts = String::from_utf8_lossy(input_timestamp(data)).into_owned();
    let digits = !claimed_ts.is_empty() && claimed_ts.bytes().all(|b| b.is_ascii_digit());
    let at = claimed_ts.parse::<i64>().unwrap_or(0);
    let claimed = verify(&[&secret], &id, &claimed_ts, &header, body, at, 0);
    if !digits || claimed_ts.parse::<i64>().is_err() {
        assert_eq!(claimed, Err(VerifyError::BadTimestamp), "{claimed_ts:?} was taken as a timestamp");
    } else if claimed.is_ok() {
        let expected = hmac_of(key, &id, &claimed_ts, body);
        let matches = header
            .split_ascii_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| STANDARD.decode(s).ok())
            .any(|candidate| candidate == expected);
        assert!(matches, "{header:?} verified without the secret's signature");
    }
    if verify(&[&secret], &id, &ts, &header, body, timestamp, tolerance).is_ok() {
        let expected = STANDARD.encode(hmac_of(key, &id, &ts, body));
        assert!(header.split_ascii_whitespace().any(|s| s == format!("v1,{expected}")), "{header:?} verified");
    }
}

/// The last 24 bytes of the input, as a timestamp header in its own words ("+12", " 7", ...).
fn input_timestamp(data: &[u8]) -> &[u8] {
    &data[data.len().saturating_sub(24)..]
}

fn hmac_of(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}
