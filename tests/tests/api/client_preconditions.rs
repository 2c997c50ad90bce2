//! The client with a server that offers preconditions: two devices edit the same field between
//! one device's pull and its push. Without preconditions that push would overwrite the other
//! device's edit silently (the server merges fields, and both changed the same one); with them
//! the server refuses it (`409`), the client pulls, asks its conflict handler, and pushes what the
//! handler decided. The handler is always asked; nothing is overwritten unseen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sync_client::{
    Conflict, Cursor, HttpTransport, IdempotencyKey, PreferRemote, PullPage, PushAck, Resolution, SyncOptions,
    Transport, TransportError,
};

use crate::client_support::{Device, fast_transport, server_objects, todo_entity};
use crate::helpers::{Backend, TestServer, backend_tests};

type Hook = Box<dyn FnOnce() + Send>;

/// A transport that runs a hook (another device's sync) just before its next push is sent:
/// between this device's pull and its push.
struct Interleaved {
    inner: HttpTransport,
    before_push: Mutex<Option<Hook>>,
}

impl Interleaved {
    fn arm(&self, hook: impl FnOnce() + Send + 'static) {
        *self.before_push.lock().unwrap() = Some(Box::new(hook));
    }

    fn run_hook(&self) {
        let hook = self.before_push.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl Transport for Interleaved {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        self.inner.pull(path, since, limit)
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        self.run_hook();
        self.inner.push(path, body, key)
    }

    fn preconditions(&self) -> bool {
        self.inner.preconditions()
    }

    fn push_checked(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        self.run_hook();
        self.inner.push_checked(path, body, key)
    }
}

/// Both devices change `t1`'s text; the other device's sync runs between this one's pull and
/// push. Returns the server's final text, how often the handler was asked, and this device's
/// report of refused pushes.
async fn same_field_between_pull_and_push(backend: Backend, keep_local: bool) -> (String, usize, usize) {
    let server = TestServer::start_on(backend).await;
    let endpoint = server.endpoint();
    let transport = Arc::new(Interleaved { inner: fast_transport(&endpoint, 3), before_push: Mutex::new(None) });
    let this = Device::with("this", [todo_entity()], Arc::clone(&transport), SyncOptions::default());
    let other = Arc::new(Device::new("other", &endpoint));
    this.add("t1", "original");
    this.sync(PreferRemote).await;
    other.sync(PreferRemote).await;

    this.store.update("Todo", "t1", json!({"text": "this device's"})).unwrap();
    other.store.update("Todo", "t1", json!({"text": "the other device's"})).unwrap();
    let syncing = Arc::clone(&other);
    transport.arm(move || {
        syncing.syncer.sync_all(&PreferRemote).expect("the other device syncs");
    });
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    let report = this
        .sync(move |conflict: &Conflict| {
            assert_eq!(conflict.fields, ["text"], "{conflict:?}");
            counted.fetch_add(1, Ordering::SeqCst);
            if keep_local { Resolution::KeepLocal } else { Resolution::TakeRemote }
        })
        .await;
    let on_server = server_objects(&endpoint, "/todoChanges").await["t1"]["text"].as_str().unwrap().to_owned();
    other.sync(PreferRemote).await;
    assert_eq!(other.text("t1").as_deref(), Some(on_server.as_str()), "the devices converge");
    assert_eq!(this.text("t1").as_deref(), Some(on_server.as_str()), "the devices converge");
    server.stop().await;
    (on_server, asked.load(Ordering::SeqCst), report.entities[0].conflicted_pushes)
}

async fn an_edit_between_pull_and_push_asks_the_handler_and_takes_remote(backend: Backend) {
    let (text, asked, refused) = same_field_between_pull_and_push(backend, false).await;
    assert_eq!((asked, refused), (1, 1), "the server refused the stale push once, and the handler was asked");
    assert_eq!(text, "the other device's");
}

async fn an_edit_between_pull_and_push_asks_the_handler_and_keeps_local(backend: Backend) {
    let (text, asked, refused) = same_field_between_pull_and_push(backend, true).await;
    assert_eq!((asked, refused), (1, 1));
    assert_eq!(text, "this device's", "kept by the handler's decision, not by a silent overwrite");
}

/// An object removed and re-created under the same id (an undo) is pushed as new, and accepted:
/// the client forgot the tombstone, and the server's tombstone is no one's data.
async fn a_removed_object_created_again_is_pushed(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let endpoint = server.endpoint();
    let device = Device::new("undo", &endpoint);
    device.add("t1", "first");
    device.sync(PreferRemote).await;
    device.store.remove("Todo", "t1").unwrap();
    device.sync(PreferRemote).await;
    device.sync(PreferRemote).await; // pulls the echo of its own removal
    assert!(!server_objects(&endpoint, "/todoChanges").await.contains_key("t1"));
    device.add("t1", "again");
    let report = device.sync(PreferRemote).await;
    assert_eq!((report.pushed(), report.entities[0].conflicted_pushes), (1, 0), "{report:?}");
    assert_eq!(server_objects(&endpoint, "/todoChanges").await["t1"]["text"], "again");
    server.stop().await;
}

backend_tests!(
    a_removed_object_created_again_is_pushed,
    an_edit_between_pull_and_push_asks_the_handler_and_takes_remote,
    an_edit_between_pull_and_push_asks_the_handler_and_keeps_local,
);
