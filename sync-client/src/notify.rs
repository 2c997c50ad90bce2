//! Change notifications: subscribe to an entity or a query and be told when what it shows may
//! have changed, after local writes and after syncs, with the ids that changed.
//!
//! - An **entity** subscription ([`Watch::Entity`]) is told the ids of the objects of that entity
//!   that were created, changed or removed, once per local transaction and once per sync. No
//!   query runs for it.
//! - A **query** subscription ([`Watch::Query`]) keeps the query's last result. Only when objects
//!   of its entity changed is the query run again, and it is told only when the new result
//!   differs, with the ids that entered, left or changed in the result, and the result itself.
//!
//! A write that leaves an object as it was (the server's echo of this device's own push, an
//! update to the same values) is no change. With no subscription, writes record nothing.
//!
//! # When and where callbacks run
//! A callback runs on the thread that made the change, after its transaction committed and after
//! the store's lock was released: for a local write, before the write call returns; for a sync,
//! once at its end (after every entity, also when it fails part-way), after the sync's lock was
//! released. So a callback may read and write the store and even start a sync. Writes a callback
//! makes are delivered once it returns (callbacks never nest), and deliveries to one subscription
//! are made one at a time, in the order of the changes. A callback that panics is logged and the
//! others still run.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc};

use crate::error::StoreError;
use crate::schema::Fields;
use crate::store::{Query, Record, Store};
use crate::typed::{TypedEntity, TypedRecord};

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    /// Every object of the named entity.
    Entity(String),
    /// The result of a query.
    Query(Query),
}

impl Watch {
    /// Every object of `entity`.
    pub fn entity(entity: impl Into<String>) -> Self {
        Self::Entity(entity.into())
    }

    fn entity_name(&self) -> &str {
        match self {
            Self::Entity(entity) => entity,
            Self::Query(query) => query.entity(),
        }
    }
}

impl From<Query> for Watch {
    fn from(query: Query) -> Self {
        Self::Query(query)
    }
}

/// What made objects change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A write of this app, through this store.
    Local,
    /// A sync: objects pulled from the server, merged, or dropped after a reset.
    Sync,
}

/// One notification to a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The entity.
    pub entity: String,
    /// The ids that changed, sorted: for an entity subscription every object created, changed
    /// or removed; for a query subscription those that entered, left or changed in its result.
    pub ids: Vec<String>,
    /// What made them change.
    pub cause: Cause,
    /// For a query subscription, its new result; `None` for an entity subscription, and for a
    /// query that failed to run again (the failure is logged, and the change still told).
    pub result: Option<Vec<Record>>,
}

impl Change {
    /// The new result of a query subscription as the app's struct (empty for an entity
    /// subscription).
    pub fn typed<T: TypedEntity>(&self) -> Result<Vec<TypedRecord<T>>, StoreError> {
        self.result.iter().flatten().map(TypedRecord::from_record).collect()
    }
}

/// The ids written in one transaction or one sync, by entity.
#[derive(Debug, Default)]
pub(crate) struct Changes(BTreeMap<String, BTreeSet<String>>);

impl Changes {
    pub(crate) fn record(&mut self, entity: &str, id: &str) {
        if let Some(ids) = self.0.get_mut(entity) {
            ids.insert(id.to_owned());
        } else {
            self.0.insert(entity.to_owned(), BTreeSet::from([id.to_owned()]));
        }
    }

    pub(crate) fn extend(&mut self, other: Changes) {
        for (entity, ids) in other.0 {
            self.0.entry(entity).or_default().extend(ids);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Callback = Box<dyn Fn(&Change) + Send + Sync>;

/// The subscriptions of one store.
#[derive(Default)]
pub(crate) struct Notifier {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    /// Whether any subscription exists: read by every write, so that writes record nothing when
    /// none does.
    any: AtomicBool,
    next_id: AtomicU64,
}

struct Subscriber {
    id: u64,
    entity: String,
    query: Option<Query>,
    /// The query's last result (empty for an entity subscription). Held while a change is
    /// worked out and delivered, so that deliveries to one subscription never overlap.
    seen: Mutex<Vec<Record>>,
    cancelled: AtomicBool,
    callback: Callback,
}

impl Notifier {
    pub(crate) fn is_watched(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn subscribers(&self) -> MutexGuard<'_, Vec<Arc<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove(&self, id: u64) {
        let mut subscribers = self.subscribers();
        if let Some(at) = subscribers.iter().position(|s| s.id == id) {
            subscribers.remove(at).cancelled.store(true, Ordering::Release);
        }
        self.any.store(!subscribers.is_empty(), Ordering::Release);
    }
}

/// A subscription; dropping it ends it (a delivery under way finishes).
#[must_use = "dropping a subscription ends it"]
pub struct Subscription {
    id: u64,
    notifier: Weak<Notifier>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(notifier) = self.notifier.upgrade() {
            notifier.remove(self.id);
        }
    }
}

/// A subscription whose changes arrive on a channel: use it as the [`mpsc::Receiver`] it
/// dereferences to (`recv`, `try_recv`, `recv_timeout`, `try_iter`). Dropping it ends the
/// subscription.
#[derive(Debug)]
pub struct ChangeReceiver {
    receiver: mpsc::Receiver<Change>,
    _subscription: Subscription,
}

impl std::ops::Deref for ChangeReceiver {
    type Target = mpsc::Receiver<Change>;

    fn deref(&self) -> &Self::Target {
        &self.receiver
    }
}

impl Store {
    /// Calls `callback` whenever what `watch` shows may have changed (see the [module
    /// docs](crate::notify) for when and on which thread). Fails for an unknown entity or an
    /// invalid query; a query subscription runs its query once now, for the result to compare
    /// with. Like the store's other methods, it must not be called inside
    /// [`Store::transaction`].
    pub fn subscribe(
        &self,
        watch: impl Into<Watch>,
        callback: impl Fn(&Change) + Send + Sync + 'static,
    ) -> Result<Subscription, StoreError> {
        let watch = watch.into();
        let entity = self.schema().entity(watch.entity_name())?.name.to_string();
        let notifier = self.notifier();
        let subscriber = Arc::new(Subscriber {
            id: notifier.next_id.fetch_add(1, Ordering::Relaxed),
            entity,
            query: match &watch {
                Watch::Query(query) => Some(query.clone()),
                Watch::Entity(_) => None,
            },
            seen: Mutex::new(Vec::new()),
            cancelled: AtomicBool::new(false),
            callback: Box::new(callback),
        });
        // Registered before its first result is read, with that result's lock held: a change
        // committed meanwhile is either in the result or delivered (and compared) after it.
        let mut seen = subscriber.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        {
            let mut subscribers = notifier.subscribers();
            subscribers.push(Arc::clone(&subscriber));
            notifier.any.store(true, Ordering::Release);
        }
        let subscription = Subscription { id: subscriber.id, notifier: Arc::downgrade(notifier) };
        if let Some(query) = &subscriber.query {
            *seen = self.query(query)?;
        }
        drop(seen);
        Ok(subscription)
    }

    /// Like [`Store::subscribe`], with the changes sent to a channel instead of a callback.
    pub fn watch(&self, watch: impl Into<Watch>) -> Result<ChangeReceiver, StoreError> {
        let (sender, receiver) = mpsc::channel();
        // The receiver may be gone before the subscription is dropped; there is nobody to tell.
        let subscription = self.subscribe(watch, move |change| drop(sender.send(change.clone())))?;
        Ok(ChangeReceiver { receiver, _subscription: subscription })
    }

    /// Tells the subscriptions about `changes`, committed by `cause`. The caller holds no lock of
    /// this store.
    pub(crate) fn notify(&self, changes: Changes, cause: Cause) {
        if changes.is_empty() || !self.notifier().is_watched() {
            return;
        }
        let mut first = Some((self.clone(), changes, cause));
        let outermost = QUEUE.with(|queue| {
            let mut queue = queue.borrow_mut();
            match queue.as_mut() {
                Some(queue) => {
                    queue.extend(first.take());
                    false
                }
                None => {
                    *queue = Some(VecDeque::new());
                    true
                }
            }
        });
        if !outermost {
            return;
        }
        let _reset = QueueReset;
        let mut next = first;
        while let Some((store, changes, cause)) = next {
            store.deliver(&changes, cause);
            next = QUEUE.with(|queue| queue.borrow_mut().as_mut().and_then(VecDeque::pop_front));
        }
    }

    fn deliver(&self, changes: &Changes, cause: Cause) {
        let subscribers: Vec<Arc<Subscriber>> =
            self.notifier().subscribers().iter().filter(|s| changes.0.contains_key(&s.entity)).cloned().collect();
        for subscriber in subscribers {
            let ids = &changes.0[&subscriber.entity];
            let mut seen = subscriber.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if subscriber.cancelled.load(Ordering::Acquire) {
                continue;
            }
            let change = match &subscriber.query {
                None => Some(Change {
                    entity: subscriber.entity.clone(),
                    ids: ids.iter().cloned().collect(),
                    cause,
                    result: None,
                }),
                Some(query) => match self.query(query) {
                    Ok(result) if result == *seen => None,
                    Ok(result) => {
                        let ids = differing_ids(&seen, &result);
                        *seen = result.clone();
                        Some(Change { entity: subscriber.entity.clone(), ids, cause, result: Some(result) })
                    }
                    Err(e) => {
                        tracing::warn!(entity = %subscriber.entity, error = %e, "cannot run a watched query again");
                        Some(Change {
                            entity: subscriber.entity.clone(),
                            ids: ids.iter().cloned().collect(),
                            cause,
                            result: None,
                        })
                    }
                },
            };
            if let Some(change) = change
                && catch_unwind(AssertUnwindSafe(|| (subscriber.callback)(&change))).is_err()
            {
                tracing::error!(entity = %subscriber.entity, "a change callback panicked");
            }
        }
    }
}

thread_local! {
    /// While this thread delivers changes, the changes its callbacks commit, delivered after the
    /// callback returns: callbacks never nest, so a thread holds one subscription's lock at a
    /// time and two threads cannot wait on each other's.
    static QUEUE: RefCell<Option<VecDeque<(Store, Changes, Cause)>>> = const { RefCell::new(None) };
}

/// Ends this thread's delivery, also when a delivery unwinds.
struct QueueReset;

impl Drop for QueueReset {
    fn drop(&mut self) {
        QUEUE.with(|queue| *queue.borrow_mut() = None);
    }
}

/// The ids that are in one result and not the other, or in both with other fields.
fn differing_ids(old: &[Record], new: &[Record]) -> Vec<String> {
    let old: HashMap<&str, &Fields> = old.iter().map(|r| (r.id.as_str(), &r.fields)).collect();
    let new: HashMap<&str, &Fields> = new.iter().map(|r| (r.id.as_str(), &r.fields)).collect();
    let mut ids: Vec<String> = old
        .iter()
        .filter(|(id, fields)| new.get(*id) != Some(*fields))
        .map(|(id, _)| id.to_string())
        .chain(new.keys().filter(|id| !old.contains_key(*id)).map(|id| id.to_string()))
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use serde_json::json;
    use sync_proto::FieldType;

    use super::*;
    use crate::schema::Entity;

    fn store() -> Store {
        Store::open_in_memory([
            Entity::new("Todo").field("text", FieldType::Text).field("done", FieldType::Bool),
            Entity::new("Tag").field("name", FieldType::Text),
        ])
        .unwrap()
    }

    #[test]
    fn an_entity_subscription_is_told_each_transaction_with_its_ids() {
        let store = store();
        let changes = store.watch(Watch::entity("Todo")).unwrap();
        store.insert_with_id("Todo", "1", json!({"text": "a"})).unwrap();
        store
            .transaction(|tx| {
                tx.insert_with_id("Todo", "2", json!({"text": "b"}))?;
                tx.update("Todo", "1", json!({"done": true}))?;
                tx.insert_with_id("Tag", "t", json!({"name": "x"}))
            })
            .unwrap();
        store.remove("Todo", "2").unwrap();
        let got: Vec<(Vec<String>, Cause)> = changes.try_iter().map(|c| (c.ids, c.cause)).collect();
        let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(got, [(ids(&["1"]), Cause::Local), (ids(&["1", "2"]), Cause::Local), (ids(&["2"]), Cause::Local)]);
    }

    #[test]
    fn nothing_is_told_for_writes_that_change_nothing_or_fail() {
        let store = store();
        store.insert_with_id("Todo", "1", json!({"text": "a", "done": false})).unwrap();
        let changes = store.watch(Watch::entity("Todo")).unwrap();
        store.update("Todo", "1", json!({"text": "a"})).unwrap();
        store.insert_with_id("Tag", "t", json!({"name": "x"})).unwrap();
        let failed: Result<(), StoreError> = store.transaction(|tx| {
            tx.update("Todo", "1", json!({"text": "rolled back"}))?;
            tx.insert_with_id("Todo", "1", json!({}))
        });
        assert!(failed.is_err());
        assert_eq!(changes.try_recv(), Err(mpsc::TryRecvError::Empty));
        store.update("Todo", "1", json!({"done": true})).unwrap();
        assert_eq!(changes.try_recv().unwrap().ids, ["1"]);
    }

    #[test]
    fn a_query_subscription_is_told_only_when_its_result_differs() {
        let store = store();
        store.insert_with_id("Todo", "1", json!({"text": "a", "done": false})).unwrap();
        let open = store.watch(Query::new("Todo").filter("done", false)).unwrap();
        store.insert_with_id("Todo", "2", json!({"text": "done already", "done": true})).unwrap();
        assert_eq!(open.try_recv(), Err(mpsc::TryRecvError::Empty), "an object outside the result changed");
        store.update("Todo", "2", json!({"done": false})).unwrap();
        let change = open.try_recv().unwrap();
        assert_eq!(change.ids, ["2"]);
        let result: Vec<String> = change.result.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(result, ["1", "2"]);
        store.update("Todo", "1", json!({"done": true})).unwrap();
        assert_eq!(open.try_recv().unwrap().ids, ["1"], "an object that left the result");
        drop(open);
        store.update("Todo", "1", json!({"done": false})).unwrap();
    }

    #[test]
    fn callbacks_may_use_the_store_and_their_writes_are_told_after_them() {
        let store = store();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (reader, written) = (store.clone(), Arc::clone(&log));
        let _todos = store
            .subscribe(Watch::entity("Todo"), move |change| {
                for id in &change.ids {
                    let text = reader.get("Todo", id).unwrap().and_then(|r| r.get_str("text").map(str::to_owned));
                    written.lock().unwrap().push(format!("begin {}", text.unwrap_or_default()));
                }
                if change.ids == ["1"] {
                    reader.insert_with_id("Todo", "2", json!({"text": "written by the callback"})).unwrap();
                }
                written.lock().unwrap().push("end".to_owned());
            })
            .unwrap();
        // On another thread, so that a callback run under the store's lock fails this test
        // within the deadline instead of hanging it.
        let (done, finished) = mpsc::channel();
        let writer = store.clone();
        std::thread::spawn(move || {
            writer.insert_with_id("Todo", "1", json!({"text": "first"})).unwrap();
            done.send(()).unwrap();
        });
        finished.recv_timeout(std::time::Duration::from_secs(10)).expect("the write returned: no deadlock");
        // The callback's own write is told after it returned, not inside it.
        assert_eq!(*log.lock().unwrap(), ["begin first", "end", "begin written by the callback", "end"]);
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_others() {
        let store = store();
        let calls = Arc::new(AtomicUsize::new(0));
        let _panics = store.subscribe(Watch::entity("Todo"), |_| panic!("a faulty callback")).unwrap();
        let counted = Arc::clone(&calls);
        let _counts = store
            .subscribe(Watch::entity("Todo"), move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        store.insert_with_id("Todo", "1", json!({})).unwrap();
        store.insert_with_id("Todo", "2", json!({})).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn subscribing_to_what_the_schema_lacks_fails() {
        let store = store();
        assert!(matches!(store.watch(Watch::entity("Nope")), Err(StoreError::UnknownEntity(_))));
        assert!(matches!(store.watch(Query::new("Todo").filter("nope", 1)), Err(StoreError::UnknownField { .. })));
        assert!(!store.notifier().is_watched(), "a failed subscription leaves nothing behind");
    }
}
