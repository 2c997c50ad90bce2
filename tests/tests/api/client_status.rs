//! Sync status and progress end to end: the progress of a long paged first sync, the activity
//! through a sync, and an unreachable server recorded as offline with its error.

use serde_json::json;
use sync_client::{Activity, PreferRemote, SyncOptions, SyncStatus};

use crate::client_support::{Device, fast_transport, todo_entity};
use crate::helpers::{Backend, Endpoint, TestServer, backend_tests};

const OBJECTS: usize = 100_000;
/// Objects per push while seeding: a page never splits one push, so each page is one of them.
const PER_PUSH: usize = 1_000;

async fn progress_is_told_page_by_page_during_a_long_first_sync(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let api = server.api();
    for push in 0..OBJECTS / PER_PUSH {
        let items: Vec<_> = (0..PER_PUSH)
            .map(|i| json!({"id": format!("{push:03}-{i:04}"), "text": format!("item {i}"), "done": false}))
            .collect();
        api.push("/todoChanges", json!(items)).await;
    }
    let options = SyncOptions { page_size: Some(PER_PUSH), ..SyncOptions::default() };
    let device = Device::with("phone", [todo_entity()], fast_transport(&server.endpoint(), 0), options);
    let statuses = device.syncer.watch_status();
    let report = device.sync(PreferRemote).await;
    assert_eq!(report.pulled(), OBJECTS);

    let seen: Vec<SyncStatus> = statuses.try_iter().collect();
    let pages: Vec<(usize, usize, Option<usize>)> = seen
        .iter()
        .filter(|s| s.activity == Activity::Pulling)
        .filter_map(|s| s.progress.as_ref().map(|p| (p.pages, p.pulled, p.total)))
        .collect();
    // Told before the first page, then after each: the page count goes up one at a time, the
    // objects with it, and the total is known with the last page and is every object.
    assert!(pages.len() > OBJECTS / PER_PUSH, "told {} times", pages.len());
    let last_page = pages.len() - 1;
    for (i, (page, pulled, total)) in pages.iter().enumerate() {
        assert_eq!(*page, i, "pages increase one by one");
        assert_eq!(*pulled, (i * PER_PUSH).min(OBJECTS), "page {i}");
        assert_eq!(*total, (i == last_page).then_some(OBJECTS), "page {i}");
    }
    let last = seen.last().unwrap();
    assert_eq!((last.activity, last.pending_changes, last.progress.as_ref()), (Activity::Idle, 0, None));
    assert!(last.last_synced.is_some() && last.last_error.is_none());
    assert_eq!(device.todos().len(), OBJECTS);
    server.stop().await;
}

/// The activities a sync went through, each once in a row.
fn activities(statuses: &std::sync::mpsc::Receiver<SyncStatus>) -> Vec<Activity> {
    let mut out: Vec<Activity> = statuses.try_iter().map(|s| s.activity).collect();
    out.dedup();
    out
}

async fn status_goes_from_pulling_to_idle_and_keeps_the_error_of_an_unreachable_server(backend: Backend) {
    let (_refusing, port) = crate::helpers::refusing_port();
    let unreachable = Endpoint::open(&format!("http://127.0.0.1:{port}"));
    let device = Device::with("laptop", [todo_entity()], fast_transport(&unreachable, 0), SyncOptions::default());
    device.add("1", "written offline");
    let before = device.syncer.status().unwrap();
    assert_eq!((before.activity, before.pending_changes, before.last_synced), (Activity::Idle, 1, None));

    let statuses = device.syncer.watch_status();
    let err = device.try_sync(PreferRemote).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert_eq!(activities(&statuses), [Activity::Pulling, Activity::Offline]);
    let offline = device.syncer.status().unwrap();
    assert_eq!((offline.activity, offline.pending_changes, offline.last_synced), (Activity::Offline, 1, None));
    let error = offline.last_error.clone().expect("the error is kept");
    assert!(error.retryable && error.unreachable, "{error:?}");
    assert!(error.message.contains("cannot sync Todo") && error.message.contains("cannot reach"), "{}", error.message);
    assert_eq!(device.store.sync_status().unwrap(), offline, "the database keeps it for a later process");

    // The same database, the server back: pulling, pushing the offline write, then idle.
    let server = TestServer::start_on(backend).await;
    let online = device.through(fast_transport(&server.endpoint(), 0), SyncOptions::default());
    let statuses = online.watch_status();
    let report = crate::client_support::run_sync(std::sync::Arc::clone(&online), PreferRemote).await.unwrap();
    assert_eq!(report.pushed(), 1);
    assert_eq!(activities(&statuses), [Activity::Pulling, Activity::Pushing, Activity::Idle]);
    let synced = online.status().unwrap();
    assert_eq!((synced.activity, synced.pending_changes, synced.last_error.clone()), (Activity::Idle, 0, None));
    assert!(synced.last_synced.is_some(), "a successful sync is recorded");
    assert_eq!(device.store.sync_status().unwrap(), synced, "the database keeps the success too");
    server.stop().await;
}

backend_tests!(
    per_database:
    progress_is_told_page_by_page_during_a_long_first_sync,
    status_goes_from_pulling_to_idle_and_keeps_the_error_of_an_unreachable_server,
);
