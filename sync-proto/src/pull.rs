//! The pull (`GET`) side of the wire: the query, and the writer of the answer
//! `{"now": N, "updates": [...]}`, which splices each stored object's JSON text instead of
//! re-serializing it.

use serde::{Deserialize, Serialize};

use crate::push::write_json_string;
use crate::{Cursor, FieldsJson, Limits, NameError};

/// The query of a pull: `since` (default 0), the optional page size `limit`, and the optional
/// long-poll `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullQuery {
    /// Return changes with `_lastChange > since`.
    pub since: Cursor,
    /// At most about this many updates (never splitting one `_lastChange`); `None` for all.
    pub limit: Option<usize>,
    /// When nothing changed after `since`, hold the answer up to this many seconds (the server
    /// lowers it to its own maximum) until something does. Read by the HTTP layer; stores ignore it.
    pub wait: Option<u64>,
    /// The client understands reset answers (`reset=1`): a pull from before the scope's purge
    /// horizon is answered in full and marked `"reset": true`. Without it the same full answer
    /// comes unmarked.
    pub resets: bool,
}

impl PullQuery {
    /// Parses a query string (`since=123&limit=500`, percent-encoding allowed). A missing `since`
    /// means 0; unknown parameters are ignored, as persistence.js clients may add their own.
    /// `limit` is clamped to 1..=[`Limits::max_page`]; `wait` is a whole number of seconds.
    pub fn parse(query: &str, limits: &Limits) -> Result<Self, NameError> {
        let mut parsed = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "since" => parsed.since = Cursor::parse(&value)?,
                "limit" => {
                    let n = whole_number(&value).ok_or_else(|| NameError::Limit(excerpt(&value)))?;
                    parsed.limit = Some(usize::try_from(n).unwrap_or(usize::MAX).clamp(1, limits.max_page));
                }
                "wait" => parsed.wait = Some(whole_number(&value).ok_or_else(|| NameError::Wait(excerpt(&value)))?),
                "reset" => {
                    parsed.resets = match &*value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(NameError::Reset(excerpt(&value))),
                    }
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// A non-empty string of ASCII digits as a number, saturating when too large for one.
fn whole_number(value: &str) -> Option<u64> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| value.parse::<u64>().unwrap_or(u64::MAX))
}

fn excerpt(value: &str) -> String {
    value.chars().take(64).collect()
}

/// Writes a pull answer incrementally: [`PullWriter::object`] and [`PullWriter::tombstone`] per
/// update, then [`PullWriter::finish`] with the cursor. Produces
/// `{"updates":[...],"now":N}` (plus `"more":bool` for a paged pull).
#[derive(Debug)]
pub struct PullWriter {
    buf: String,
    first: bool,
    reset: bool,
}

impl Default for PullWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PullWriter {
    /// Starts an answer.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty answer whose buffer holds `bytes` before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = String::with_capacity(bytes);
        buf.push_str("{\"updates\":[");
        Self { buf, first: true, reset: false }
    }

    fn begin(&mut self, id: &str) {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        self.buf.push_str("{\"id\":");
        write_json_string(&mut self.buf, id);
    }

    /// Appends a live object: its id, its stored fields verbatim, and `_lastChange`.
    pub fn object(&mut self, id: &str, fields: &FieldsJson, last_change: Cursor) {
        self.object_json(id, fields.as_json(), last_change);
    }

    /// As [`PullWriter::object`], from the fields' JSON object text as a store keeps it (the text of
    /// a [`FieldsJson`]), without copying it first.
    pub fn object_json(&mut self, id: &str, fields_json: &str, last_change: Cursor) {
        self.begin(id);
        let members = crate::push::members_of(fields_json);
        if !members.is_empty() {
            self.buf.push(',');
            self.buf.push_str(members);
        }
        self.end(last_change);
    }

    /// Appends a tombstone: `{"id", "_removed": true, "_lastChange"}`.
    pub fn tombstone(&mut self, id: &str, last_change: Cursor) {
        self.begin(id);
        self.buf.push_str(",\"_removed\":true");
        self.end(last_change);
    }

    fn end(&mut self, last_change: Cursor) {
        self.buf.push_str(",\"_lastChange\":");
        push_int(&mut self.buf, last_change.millis());
        self.buf.push('}');
    }

    /// Bytes written so far; a streaming server flushes them with [`PullWriter::take`].
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes what has been written so far, leaving the writer ready to continue (with a buffer as
    /// large as the one taken, since the next chunk will likely fill as much).
    pub fn take(&mut self) -> String {
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, String::with_capacity(capacity))
    }

    /// Marks the answer as a reset: the whole scope, for a client whose cursor was older than the
    /// purge horizon (`"reset": true`).
    pub fn mark_reset(&mut self) {
        self.reset = true;
    }

    /// Closes the answer with its cursor; `more` is written only for a paged pull.
    pub fn finish(mut self, now: Cursor, more: Option<bool>) -> String {
        self.buf.push_str("],\"now\":");
        push_int(&mut self.buf, now.millis());
        if let Some(more) = more {
            self.buf.push_str(if more { ",\"more\":true" } else { ",\"more\":false" });
        }
        if self.reset {
            self.buf.push_str(",\"reset\":true");
        }
        self.buf.push('}');
        self.buf
    }
}

/// Appends `n` in decimal, without the allocation of `to_string` (this runs once per object).
fn push_int(out: &mut String, n: i64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// The answer to a push: `{"status": "ok", "now": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAnswer {
    /// Always `"ok"`.
    pub status: OkStatus,
    /// The `_lastChange` every object of the push received.
    pub now: i64,
}

impl PushAnswer {
    /// The answer for a push committed at `now`.
    pub fn new(now: Cursor) -> Self {
        Self { status: OkStatus::Ok, now: now.millis() }
    }
}

/// The constant `"ok"` of a successful push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OkStatus {
    /// `"ok"`.
    Ok,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_limits() {
        let l = Limits::default();
        assert_eq!(
            PullQuery::parse("", &l).unwrap(),
            PullQuery { since: Cursor::ZERO, limit: None, wait: None, resets: false }
        );
        assert!(PullQuery::parse("reset=1", &l).unwrap().resets);
        assert!(!PullQuery::parse("reset=0", &l).unwrap().resets);
        assert!(matches!(PullQuery::parse("reset=yes", &l), Err(NameError::Reset(_))));
        let q = PullQuery::parse("since=42&limit=5&_=1", &l).unwrap();
        assert_eq!((q.since.millis(), q.limit), (42, Some(5)));
        assert_eq!(PullQuery::parse("limit=999999999", &l).unwrap().limit, Some(l.max_page));
        assert_eq!(PullQuery::parse("limit=99999999999999999999999", &l).unwrap().limit, Some(l.max_page));
        assert_eq!(PullQuery::parse("since=%34%32", &l).unwrap().since.millis(), 42);
        for bad in ["since=", "since=abc", "since=1.5"] {
            assert!(matches!(PullQuery::parse(bad, &l), Err(NameError::Cursor(_))), "{bad}");
        }
        for bad in ["limit=x", "limit=-1"] {
            assert!(matches!(PullQuery::parse(bad, &l), Err(NameError::Limit(_))), "{bad}");
        }
        assert_eq!(PullQuery::parse("since=3&wait=30", &l).unwrap().wait, Some(30));
        assert_eq!(PullQuery::parse("wait=99999999999999999999999", &l).unwrap().wait, Some(u64::MAX));
        for bad in ["wait=", "wait=-1", "wait=1.5", "wait=soon"] {
            assert!(matches!(PullQuery::parse(bad, &l), Err(NameError::Wait(_))), "{bad}");
        }
    }

    #[test]
    fn answer_splices_stored_fields() {
        let mut w = PullWriter::new();
        w.object("A\"1", &FieldsJson::from_stored(r#"{"n":1,"s":"x"}"#.into()), Cursor::from_millis(7));
        w.object("B", &FieldsJson::empty(), Cursor::from_millis(8));
        w.tombstone("C", Cursor::from_millis(9));
        let text = w.finish(Cursor::from_millis(9), None);
        assert_eq!(
            text,
            r#"{"updates":[{"id":"A\"1","n":1,"s":"x","_lastChange":7},{"id":"B","_lastChange":8},{"id":"C","_removed":true,"_lastChange":9}],"now":9}"#
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["now"], 9);
        assert_eq!(PullWriter::new().finish(Cursor::ZERO, Some(false)), r#"{"updates":[],"now":0,"more":false}"#);
    }

    #[test]
    fn push_answer_shape() {
        let json = serde_json::to_string(&PushAnswer::new(Cursor::from_millis(5))).unwrap();
        assert_eq!(json, r#"{"status":"ok","now":5}"#);
    }
}
