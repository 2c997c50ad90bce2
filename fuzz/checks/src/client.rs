//! The client's reading of the server's answers (`sync_client::transport`).
//!
//! Pull answers: whatever the client reads, written again as an answer, reads back the same
//! (objects, tombstones, cursor, `more`, `reset`, and the updates it set aside, kept verbatim);
//! every answer in the protocol's shape is read, and the objects it read, written by the server's
//! own answer writer ([`sync_proto::PullWriter`]), read back the same too. Push answers: the
//! client reads the `now` of every answer the server's type [`sync_proto::PushAnswer`] reads, and
//! what it reads, written again, reads the same.

use serde_json::{Map, Value};

use sync_client::transport::{PullPage, parse_pull_answer, parse_push_answer};
use sync_proto::{Cursor, FieldsJson, PullWriter, PushAnswer};

/// Checks the client's reading of one pull answer (the input's bytes, if UTF-8).
pub fn pull_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let read = parse_pull_answer(text);
    if in_protocol_shape(text) {
        assert!(read.is_ok(), "an answer in the protocol's shape was refused: {read:?}");
    }
    let page = match read {
        Ok(page) => page,
        Err(why) => {
            assert!(!why.is_empty(), "a refusal without a reason");
            return;
        }
    };
    for update in &page.updates {
        assert!(!update.id.is_empty(), "an update without an id was read");
        for reserved in ["id", "_lastChange", "_removed"] {
            assert!(!update.fields.contains_key(reserved), "{reserved} was read as a field");
        }
    }

    let written = write_back(&page);
    let again = parse_pull_answer(&written).unwrap_or_else(|e| panic!("a written answer is refused ({e}): {written}"));
    assert_eq!(again, page, "read → write → read changed the answer");

    // The server's writer and the client's reader agree on every object the client could read.
    let mut writer = PullWriter::new();
    let mut expected = Vec::new();
    for update in page.updates.iter().filter(|u| u.last_change.is_some_and(|at| at >= 0)) {
        let at = Cursor::from_millis(update.last_change.unwrap_or_default());
        if update.removed {
            writer.tombstone(&update.id, at);
        } else {
            writer.object(&update.id, &FieldsJson::from_stored(Value::Object(update.fields.clone()).to_string()), at);
        }
        let mut kept = update.clone();
        if kept.removed {
            kept.fields = Map::new();
        }
        expected.push(kept);
    }
    let server_answer = writer.finish(page.now, Some(page.more));
    let read_back = parse_pull_answer(&server_answer).expect("the client reads the server's writer");
    assert_eq!(read_back.updates, expected, "the client reads the server's writer otherwise: {server_answer}");
    assert_eq!((read_back.now, read_back.more), (page.now, page.more));
    assert!(read_back.unreadable.is_empty());
}

/// Whether `text` is a pull answer as the protocol writes one: an object with an `updates`
/// array and an integer `now`, `more` and `reset` booleans when present, no member twice.
fn in_protocol_shape(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        updates: Vec<Value>,
        now: i64,
        more: Option<bool>,
        reset: Option<bool>,
    }
    serde_json::from_str::<Answer>(text).is_ok_and(|a| {
        let _ = (a.updates, a.now, a.more, a.reset);
        true
    })
}

fn write_back(page: &PullPage) -> String {
    let mut updates: Vec<String> = page.updates.iter().map(|u| u.to_json()).collect();
    updates.extend(page.unreadable.iter().map(|u| u.raw.clone()));
    format!(
        r#"{{"updates":[{}],"now":{},"more":{},"reset":{}}}"#,
        updates.join(","),
        page.now.millis(),
        page.more,
        page.reset
    )
}

/// Checks the client's reading of one push answer (the input's bytes, if UTF-8).
pub fn push_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let read = parse_push_answer(text);
    // Serde also reads a struct from an array (`["ok", 5]`); answers are objects, and only those
    // must be read alike.
    let object = serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object());
    if let Ok(answer) = serde_json::from_str::<PushAnswer>(text)
        && object
    {
        assert_eq!(read, Ok(Cursor::from_millis(answer.now)), "the client reads {text} otherwise than the server");
    }
    match read {
        Ok(now) => {
            assert!(now.millis() >= 0);
            let written = serde_json::to_string(&PushAnswer::new(now)).expect("an answer serializes");
            assert_eq!(parse_push_answer(&written), Ok(now), "read → write → read changed {text}");
        }
        Err(why) => assert!(!why.is_empty(), "a refusal without a reason"),
    }
}
