//! Typed records end to end: an app's own structs written on one device, synced through a real
//! server, and read back on another as the same values, for every field type.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sync_client::{FieldType, PreferRemote, Store, StoreError, SyncOptions, TypedEntity};

use crate::client_support::{Device, fast_transport, server_objects};
use crate::helpers::{Backend, TestServer, backend_tests};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unit {
    symbol: String,
    scale: u8,
}

/// A record with a field of every declared type, `null` among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reading {
    label: String,
    count: i32,
    big_count: i64,
    ratio: f64,
    valid: bool,
    taken_at: i64,
    note: Option<String>,
    unit: Unit,
    tags: Vec<String>,
    extra: Value,
}

impl TypedEntity for Reading {
    const NAME: &'static str = "Reading";
    const FIELDS: &'static [(&'static str, FieldType)] = &[
        ("label", FieldType::Text),
        ("count", FieldType::Int),
        ("bigCount", FieldType::BigInt),
        ("ratio", FieldType::Real),
        ("valid", FieldType::Bool),
        ("takenAt", FieldType::Date),
        ("note", FieldType::Text),
        ("unit", FieldType::Json),
        ("tags", FieldType::Json),
        ("extra", FieldType::Json),
    ];
}

fn readings() -> [(&'static str, Reading); 2] {
    [
        (
            "r1",
            Reading {
                label: "température «ext» \u{1F321}\n\"quoted\"".into(),
                count: -2_147_483_648,
                // Above 2^53: exact only if no side reads it as a float.
                big_count: 9_007_199_254_740_993,
                ratio: 0.1,
                valid: true,
                taken_at: 1_700_000_000,
                note: Some("calibrated".into()),
                unit: Unit { symbol: "°C".into(), scale: 255 },
                tags: vec!["outdoor".into(), "".into()],
                extra: json!({"nested": {"list": [1, 2.5, "x", null, true]}, "empty": {}}),
            },
        ),
        (
            "r2",
            Reading {
                label: String::new(),
                count: 0,
                big_count: i64::MIN,
                ratio: -1.5e-300,
                valid: false,
                taken_at: 0,
                note: None,
                unit: Unit { symbol: String::new(), scale: 0 },
                tags: Vec::new(),
                extra: json!([[], [null], 1e300]),
            },
        ),
    ]
}

fn device(name: &str, server: &TestServer) -> Device {
    Device::with(name, [Reading::entity()], fast_transport(&server.endpoint(), 0), SyncOptions::default())
}

async fn typed_records_round_trip_every_field_type_through_the_server(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (a, b) = (device("a", &server), device("b", &server));
    let on_a = a.store.typed::<Reading>().unwrap();
    for (id, reading) in readings() {
        on_a.insert_with_id(id, &reading).unwrap();
    }
    assert_eq!(a.sync(PreferRemote).await.pushed(), 2);

    // What the server holds is the protocol's JSON, field by field.
    let held = server_objects(&server.endpoint(), "/readingChanges").await;
    assert_eq!(held["r1"]["bigCount"], json!(9_007_199_254_740_993_i64));
    assert_eq!(held["r1"]["unit"], json!({"symbol": "°C", "scale": 255}));
    assert_eq!(held["r2"]["note"], Value::Null);

    assert_eq!(b.sync(PreferRemote).await.pulled(), 2);
    let on_b = b.store.typed::<Reading>().unwrap();
    let got: Vec<(String, Reading)> = on_b.all().unwrap().into_iter().map(|r| (r.id, r.value)).collect();
    let sent: Vec<(String, Reading)> = readings().into_iter().map(|(id, r)| (id.to_owned(), r)).collect();
    assert_eq!(got, sent);

    // An update of the typed value on b reaches a, with the Option now set and the other unset.
    let mut changed = readings()[1].1.clone();
    changed.note = Some("set on b".into());
    changed.tags = vec!["a".into(), "b".into()];
    on_b.update("r2", &changed).unwrap();
    let mut cleared = readings()[0].1.clone();
    cleared.note = None;
    on_b.update("r1", &cleared).unwrap();
    b.sync(PreferRemote).await;
    a.sync(PreferRemote).await;
    assert_eq!(on_a.get("r2").unwrap(), Some(changed));
    assert_eq!(on_a.get("r1").unwrap(), Some(cleared));
    server.stop().await;
}

/// A struct whose field has another type than the one the entity declares.
#[derive(Debug, Serialize, Deserialize)]
struct MistypedReading {
    label: String,
    count: String,
}

impl TypedEntity for MistypedReading {
    const NAME: &'static str = "Reading";
    const FIELDS: &'static [(&'static str, FieldType)] = &[("label", FieldType::Text), ("count", FieldType::Int)];
}

#[test]
fn opening_a_file_with_a_struct_that_disagrees_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path().join("app.db"), [MistypedReading::entity()]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Schema(m) if m == "Reading.count: declared INT but the struct's field is a string"),
        "{err}"
    );
}

backend_tests!(multi_thread: typed_records_round_trip_every_field_type_through_the_server);
