//! The async API end to end: a sync awaited inside a current-thread tokio runtime, whose other
//! tasks (a timer, the server itself) keep running while the sync waits on the network; and live
//! sync as a stream of reports that ends when stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sync_client::{
    AsyncSyncer, Cursor, HttpTransport, IdempotencyKey, LiveOptions, LiveReports, PreferRemote, PullPage, PushAck,
    Query, SyncReport, Syncer, Transport, TransportError,
};

use crate::client_support::{fast_transport, todo_entity};
use crate::helpers::TestServer;

/// How many ticks the timer must make while a pull is under way.
const TICKS: usize = 5;

/// The HTTP transport, whose every pull first waits (up to a deadline) for the timer to tick
/// [`TICKS`] more times: were the sync run on the runtime's only thread, the timer could not
/// tick, and the pull would fail at the deadline.
struct WaitsForTicks {
    inner: HttpTransport,
    ticks: Arc<AtomicUsize>,
}

impl Transport for WaitsForTicks {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        let until = self.ticks.load(Ordering::SeqCst) + TICKS;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ticks.load(Ordering::SeqCst) < until {
            if Instant::now() > deadline {
                return Err(TransportError::Config("the runtime's timer stopped ticking during the sync".into()));
            }
            std::thread::yield_now();
        }
        self.inner.pull(path, since, limit)
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        self.inner.push(path, body, key)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_sync_awaited_in_a_current_thread_runtime_leaves_its_timer_ticking() {
    let server = TestServer::start().await;
    let items: Vec<_> = (0..2_000).map(|i| json!({"id": format!("{i:04}"), "text": "from the server"})).collect();
    server.api().push("/todoChanges", json!(items)).await;

    let ticks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ticks);
    let timer = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(5));
        loop {
            every.tick().await;
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let store = sync_client::Store::open(dir.path().join("async.db"), [todo_entity()]).unwrap();
    let transport = WaitsForTicks { inner: fast_transport(&server.endpoint(), 0), ticks: Arc::clone(&ticks) };
    let syncer = AsyncSyncer::new(Syncer::new(store, transport));
    let local = syncer.store();
    local.insert_with_id("Todo", "mine", json!({"text": "written from async code"})).await.unwrap();

    let before = ticks.load(Ordering::SeqCst);
    let mut statuses = syncer.watch_status();
    let report = syncer.sync_all(PreferRemote).await.unwrap();
    assert_eq!((report.pulled(), report.pushed()), (2_000, 1));
    assert!(ticks.load(Ordering::SeqCst) >= before + TICKS, "the timer ticked during the sync");
    assert!(statuses.recv().await.is_some(), "the status was told to async code");

    assert_eq!(local.query(Query::new("Todo")).await.unwrap().len(), 2_001);
    assert_eq!(local.pending_changes("Todo").await.unwrap(), 0);
    assert_eq!(syncer.status().await.unwrap().last_error, None);
    timer.abort();
    server.stop().await;
}

/// The next outcome of live sync that satisfies `wanted`, failing the test after a deadline.
async fn next_report(live: &mut LiveReports, wanted: impl Fn(&SyncReport) -> bool) -> SyncReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, live.next()).await.expect("a report in time");
        match next.expect("live sync goes on") {
            Ok(report) if wanted(&report) => return report,
            Ok(_) => {}
            Err(e) => panic!("a live sync failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn live_sync_is_a_stream_of_reports_that_ends_when_stopped() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = sync_client::Store::open(dir.path().join("live.db"), [todo_entity()]).unwrap();
    let syncer = AsyncSyncer::new(Syncer::new(store, fast_transport(&server.endpoint(), 0)));
    let options = LiveOptions { local_check: Duration::from_millis(50), ..LiveOptions::default() };
    let mut live = syncer.live(PreferRemote, options);
    next_report(&mut live, |_| true).await;

    // Another device's push arrives through the long-poll; a local write is pushed.
    server.api().push("/todoChanges", json!([{"id": "remote", "text": "from the server"}])).await;
    next_report(&mut live, |r| r.pulled() == 1).await;
    syncer.store().insert_with_id("Todo", "local", json!({"text": "written here"})).await.unwrap();
    next_report(&mut live, |r| r.pushed() == 1).await;
    assert_eq!(syncer.store().query(Query::new("Todo")).await.unwrap().len(), 2);

    tokio::time::timeout(Duration::from_secs(10), live.stop()).await.expect("live sync ended when stopped");
    server.stop().await;
}
