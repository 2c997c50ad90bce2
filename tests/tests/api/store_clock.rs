//! Store-level guarantees that HTTP cannot provoke: timestamps stay unique and increasing when
//! the wall clock steps back, and stay close to the wall clock otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::helpers::{Backend, TestDb, backend_tests};
use sync_proto::{Change, Cursor, FieldsJson, ObjectId, PullQuery};
use sync_server::clock::Clock;
use sync_server::store::{Push, Scope, Store};

/// A wall clock the test sets by hand.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `ms` (epoch milliseconds) until it is set again.
    pub fn at(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Sets the time it reads.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn upsert(id: &str) -> Change {
    Change::Upsert { id: ObjectId::new(id, 64).unwrap(), fields: FieldsJson::empty(), based_on: None }
}

async fn push(store: &Arc<dyn Store>, entity: &Scope, changes: Vec<Change>) -> i64 {
    store.push(entity, Push::new(changes)).await.unwrap().now.millis()
}

async fn timestamps_never_go_backwards_when_the_wall_clock_does(backend: Backend) {
    let db = TestDb::create(backend).await;
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let store = db.open_store_with_clock(clock.clone()).await;
    let task = backend.scope("Task");

    let a = push(&store, &task, vec![upsert("a")]).await;
    assert_eq!(a, 1_700_000_000_000, "timestamps are the wall clock when it moves forward");
    let b = push(&store, &task, vec![upsert("b")]).await;
    assert_eq!(b, a + 1, "two pushes in one millisecond still get distinct timestamps");

    clock.0.store(1_600_000_000_000, Ordering::SeqCst); // the clock steps back a long way
    let c = push(&store, &task, vec![upsert("c")]).await;
    assert_eq!(c, b + 1);
    let d = push(&store, &task, vec![]).await;
    assert_eq!(d, c + 1);

    clock.0.store(1_800_000_000_000, Ordering::SeqCst);
    assert_eq!(push(&store, &task, vec![upsert("e")]).await, 1_800_000_000_000);

    let page = store.pull(&task, PullQuery { since: Cursor::from_millis(b), ..PullQuery::default() }).await.unwrap();
    let ids: Vec<_> = page.objects.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["c", "e"], "a reader past b sees the changes made while the clock was behind");

    // Each entity has its own clock.
    let other = backend.scope("Other");
    assert_eq!(push(&store, &other, vec![]).await, 1_800_000_000_000);
}

backend_tests!(timestamps_never_go_backwards_when_the_wall_clock_does);
