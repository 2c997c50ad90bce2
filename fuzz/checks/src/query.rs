//! The query string of a pull (`GET /itemChanges?since=S&limit=N&wait=W&reset=1`).
//!
//! `PullQuery::parse` must agree with the grammar of `docs/PROTOCOL.md`, written here again
//! independently: `since` a decimal integer (negative counts as 0), `limit` and `wait` non-empty
//! strings of decimal digits (`limit` clamped to `1..=max_page`), `reset` one of `1`, `true`,
//! `0`, `false`, the last occurrence of each winning, other parameters ignored, any invalid one
//! refusing the query. What it accepts re-serializes to a query that parses the same. Through
//! the server's handler, a refused query is `400 invalid_query` with the documented body, and an
//! accepted one answers a pull answer the client reads, with `more` exactly when paged, holding
//! the objects after `since` in `_lastChange` order (all of them when unpaged).

use std::cell::RefCell;

use actix_web::http::Uri;
use actix_web::test::TestRequest;
use sync_proto::{Cursor, ErrorCode, NameError, PullQuery};
use sync_server::Config;

use crate::harness::Harness;
use crate::push::LIMITS;

/// Checks one query string (the input's bytes, lossily as UTF-8); see the module doc.
pub fn check(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    check_parse(&query);
    // The handler sees the query of a URI; bytes no URI can carry never reach it.
    let Ok(uri) = format!("/queryChanges?{query}").parse::<Uri>() else { return };
    let sent = uri.query().unwrap_or("").to_owned();
    check_parse(&sent);
    SERVER.with(|server| check_answer(&server.borrow(), &uri.to_string(), &sent));
}

/// Which parameter a query was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Since,
    Limit,
    Wait,
    Reset,
}

fn refused_for(error: &NameError) -> Refused {
    match error {
        NameError::Cursor(_) => Refused::Since,
        NameError::Limit(_) => Refused::Limit,
        NameError::Wait(_) => Refused::Wait,
        NameError::Reset(_) => Refused::Reset,
        other => panic!("a query refused as {other:?}"),
    }
}

fn check_parse(query: &str) {
    let parsed = PullQuery::parse(query, &LIMITS);
    let expected = reference(query);
    match (&parsed, &expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{query:?}"),
        (Err(got), Err(want)) => assert_eq!(refused_for(got), *want, "{query:?}: {got}"),
        _ => panic!("{query:?}: parsed {parsed:?}, the protocol says {expected:?}"),
    }
    if let Ok(q) = parsed {
        assert!(q.since.millis() >= 0);
        assert!(q.limit.is_none_or(|n| (1..=LIMITS.max_page).contains(&n)), "{q:?}");
        let again = serialize(&q);
        assert_eq!(PullQuery::parse(&again, &LIMITS), Ok(q), "{query:?} re-serialized as {again:?}");
    }
}

/// The grammar of the protocol, on its own.
fn reference(query: &str) -> Result<PullQuery, Refused> {
    let mut out = PullQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "since" => out.since = Cursor::from_millis(decimal_integer(&value).ok_or(Refused::Since)?),
            "limit" => {
                let n = digits(&value).ok_or(Refused::Limit)?;
                out.limit = Some(usize::try_from(n).unwrap_or(usize::MAX).clamp(1, LIMITS.max_page));
            }
            "wait" => out.wait = Some(digits(&value).ok_or(Refused::Wait)?),
            "reset" => {
                out.resets = match &*value {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(Refused::Reset),
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// An optionally signed decimal integer that fits 64 bits.
fn decimal_integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        if n > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    i64::try_from(if negative { -n } else { n }).ok()
}

/// A non-empty string of decimal digits, saturating at `u64::MAX`.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

fn serialize(q: &PullQuery) -> String {
    let mut out = format!("since={}", q.since.millis());
    if let Some(limit) = q.limit {
        out.push_str(&format!("&limit={limit}"));
    }
    if let Some(wait) = q.wait {
        out.push_str(&format!("&wait={wait}"));
    }
    out.push_str(if q.resets { "&reset=1" } else { "&reset=0" });
    out
}

thread_local! {
    static SERVER: RefCell<Seeded> = RefCell::new(Seeded::new());
}

/// A server whose entity `Query` holds objects pushed at known timestamps.
struct Seeded {
    server: Harness,
    /// Each object's id and `_lastChange`, in `_lastChange` order.
    objects: Vec<(String, i64)>,
}

impl Seeded {
    fn new() -> Self {
        let server = Harness::new(Config { limits: LIMITS, ..Config::default() });
        let mut objects = Vec::new();
        for push in 0..6 {
            let ids: Vec<String> = (0..=push % 3).map(|i| format!("q{push}-{i}")).collect();
            let body: Vec<String> = ids.iter().map(|id| format!(r#"{{"id":"{id}","n":{push}}}"#)).collect();
            let request = TestRequest::post().uri("/queryChanges").set_payload(format!("[{}]", body.join(",")));
            let (status, answer) = server.send(request);
            assert_eq!(status, 200, "seeding: {}", String::from_utf8_lossy(&answer));
            let now = sync_client::transport::parse_push_answer(std::str::from_utf8(&answer).unwrap()).unwrap();
            objects.extend(ids.into_iter().map(|id| (id, now.millis())));
        }
        Self { server, objects }
    }
}

fn check_answer(seeded: &Seeded, uri: &str, sent: &str) {
    let (status, body) = seeded.server.send(TestRequest::get().uri(uri));
    let query = match PullQuery::parse(sent, &LIMITS) {
        Err(e) => {
            let error = crate::error_body(status, &body);
            assert_eq!(error.error, ErrorCode::InvalidQuery, "{sent:?}: {e}");
            assert!(error.details.is_empty());
            return;
        }
        Ok(query) => query,
    };
    assert_eq!(status, 200, "{sent:?} answered {}", String::from_utf8_lossy(&body));
    let text = std::str::from_utf8(&body).expect("a pull answer is UTF-8");
    let answer: serde_json::Value = serde_json::from_str(text).expect("a pull answer is JSON");
    assert_eq!(answer.get("more").is_some(), query.limit.is_some(), "{sent:?}: more only when paged: {text}");
    let page = sync_client::transport::parse_pull_answer(text).expect("the client reads the answer");
    let clock = seeded.objects.last().map_or(0, |(_, at)| *at);
    let after: Vec<&(String, i64)> = seeded.objects.iter().filter(|(_, at)| *at > query.since.millis()).collect();
    let got: Vec<(String, i64)> = page.updates.iter().map(|u| (u.id.clone(), u.last_change.unwrap_or(-1))).collect();
    // Objects of one push share a timestamp; their order within it is the store's.
    let sorted = |mut v: Vec<(String, i64)>| {
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        v
    };
    let expected: Vec<(String, i64)> = after.iter().take(got.len()).map(|o| (*o).clone()).collect();
    assert_eq!(sorted(got.clone()), sorted(expected), "{sent:?}: not the objects after since, in order");
    let left = after.len() - got.len();
    assert_eq!(page.more, left > 0, "{sent:?}: more does not say whether objects were left");
    if query.limit.is_none() {
        assert_eq!(left, 0, "{sent:?}: an unpaged pull left objects");
    }
    if !page.more {
        assert_eq!(page.now.millis(), clock, "{sent:?}: the last page's now is not the clock");
    } else {
        assert!(got.last().is_some_and(|(_, at)| *at == page.now.millis()), "{sent:?}: now is not the page's last");
    }
}
