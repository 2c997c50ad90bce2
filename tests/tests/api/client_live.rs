//! The client's live mode ([`sync_client::Syncer::sync_live`]): a device that keeps syncing gets
//! other devices' changes as the server commits them (long-poll), pushes its own local changes
//! without being asked, reports every sync, and keeps trying while the server is unreachable.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sync_client::{LiveOptions, PreferRemote};

use crate::client_support::{Device, server_objects};
use crate::helpers::{Backend, Endpoint, TestServer, backend_tests};

/// Far longer than a wake-up takes, far shorter than the live mode's poll (30 s): what arrives
/// within it came by long-poll or by the local check.
const WITHIN: Duration = Duration::from_secs(15);

/// Runs `syncer.sync_live` on a thread of its own; each sync's outcome is sent on the returned
/// channel, and the live mode stops after the first sync once `stop` is set.
fn go_live(device: &Device, stop: Arc<AtomicBool>) -> (Reports<Result<usize, String>>, std::thread::JoinHandle<()>) {
    let (reports, received) = tokio::sync::mpsc::unbounded_channel();
    let syncer = Arc::clone(&device.syncer);
    let running = std::thread::spawn(move || {
        syncer.sync_live(&PreferRemote, LiveOptions::default(), |outcome| {
            let _ = reports.send(outcome.as_ref().map(|r| r.pulled() + r.pushed()).map_err(|e| e.to_string()));
            if stop.load(Ordering::Acquire) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
    });
    (received, running)
}

/// What the live mode's `on_sync` sends, one item per sync.
type Reports<T> = tokio::sync::mpsc::UnboundedReceiver<T>;

/// The next sync's report (the server runs on this test's runtime: never block it).
async fn next<T>(reports: &mut Reports<T>) -> T {
    tokio::time::timeout(WITHIN, reports.recv()).await.expect("a sync within the time").expect("the live mode runs")
}

/// Waits on the blocking pool until `done` holds, checking every 20 ms.
async fn eventually(what: &str, mut done: impl FnMut() -> bool + Send + 'static) {
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < WITHIN, "{what} did not happen within {WITHIN:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
}

async fn a_live_device_gets_other_devices_changes_and_pushes_its_own(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let endpoint = server.endpoint();
    let (live, other) = (Device::new("live", &endpoint), Device::new("other", &endpoint));
    let stop = Arc::new(AtomicBool::new(false));
    let (mut reports, running) = go_live(&live, Arc::clone(&stop));
    assert_eq!(next(&mut reports).await, Ok(0), "the first sync");

    other.add("t1", "from the other device");
    other.sync(PreferRemote).await;
    let store = live.store.clone();
    eventually("the other device's change reaching the live one", move || {
        store.get("Todo", "t1").unwrap().is_some_and(|r| r.get_str("text") == Some("from the other device"))
    })
    .await;

    live.add("t2", "from the live device");
    let endpoint2 = endpoint.clone();
    let started = Instant::now();
    loop {
        if server_objects(&endpoint2, "/todoChanges").await.contains_key("t2") {
            break;
        }
        assert!(started.elapsed() < WITHIN, "the live device's change never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.sync(PreferRemote).await;
    assert_eq!(other.text("t2").as_deref(), Some("from the live device"));

    stop.store(true, Ordering::Release);
    live.add("t3", "one more, to end with a sync");
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().expect("the live mode ends");
    server.stop().await;
}

/// With no server, every sync fails and is reported, and the live mode keeps trying (backing
/// off) instead of giving up.
#[tokio::test]
async fn a_live_device_keeps_trying_while_the_server_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::open(&format!("http://{}", listener.local_addr().unwrap()));
    drop(listener);
    let device = Device::new("offline", &endpoint);
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = Arc::clone(&device.syncer);
    let (reports, mut received) = tokio::sync::mpsc::unbounded_channel();
    let options = LiveOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..LiveOptions::default()
    };
    let stop2 = Arc::clone(&stop);
    let running = std::thread::spawn(move || {
        syncer.sync_live(&PreferRemote, options, |outcome| {
            let _ = reports.send(outcome.is_err());
            if stop2.load(Ordering::Acquire) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
    });
    for _ in 0..3 {
        assert!(next(&mut received).await, "each failed sync is reported, and tried again");
    }
    // The live mode stops at the next report, or at the one it was sending as `stop` was set.
    stop.store(true, Ordering::Release);
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().expect("the live mode ends");
    while let Ok(Some(failed)) = tokio::time::timeout(WITHIN, received.recv()).await {
        assert!(failed, "every sync failed");
    }
}

backend_tests!(a_live_device_gets_other_devices_changes_and_pushes_its_own);
