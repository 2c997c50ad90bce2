//! A device: the real client (`Store`, `Syncer`, `HttpTransport`) behind its own proxy, making
//! random edits of a shared set of objects and syncing, with a log of every edit it made and of
//! every push its transport had acknowledged.
//!
//! Every value written is unique (`d3-17` is device 3's edit 17), so a value in a push or on the
//! server names the edit it came from.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sync_client::{
    Cursor, Entity, FieldType, HttpTransport, IdempotencyKey, PreferLocal, PullPage, PushAck, Query, Record, Store,
    SyncOptions, Syncer, Transport, TransportError, Waited,
};

/// The entity every device edits.
pub const ENTITY: &str = "Item";
/// Its path on the server.
pub const PATH: &str = "/itemChanges";
/// Its fields.
pub const FIELDS: [&str; 3] = ["title", "body", "rank"];

/// The schema of every device.
pub fn entity() -> Entity {
    Entity::new(ENTITY).field("title", FieldType::Text).field("body", FieldType::Text).field("rank", FieldType::Int)
}

/// One local edit.
#[derive(Debug, Clone)]
pub enum Edit {
    /// A field set (an insert is one per field).
    Set {
        /// The object.
        id: String,
        /// The field.
        field: &'static str,
        /// The unique value written.
        value: Value,
    },
    /// The object removed.
    Remove {
        /// The object.
        id: String,
    },
}

impl Edit {
    /// The object it concerns.
    pub fn id(&self) -> &str {
        match self {
            Self::Set { id, .. } | Self::Remove { id } => id,
        }
    }
}

/// A push the server acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The device that sent it.
    pub device: usize,
    /// Its idempotency key.
    pub key: String,
    /// Its items.
    pub items: Vec<serde_json::Map<String, Value>>,
    /// The `now` of the answer.
    pub now: i64,
    /// Answered as a replay of an earlier application.
    pub replayed: bool,
}

/// What a device did, in order.
#[derive(Debug, Default)]
pub struct Log {
    /// Every local edit.
    pub edits: Vec<Edit>,
    /// Every acknowledged push.
    pub acks: Vec<Ack>,
    /// Pull requests answered.
    pub pulls: u64,
    /// Push requests that failed (after the transport's own retries), conflicts aside.
    pub failed_pushes: u64,
    /// Syncs that completed.
    pub syncs: u64,
    /// Syncs that failed (a fault outlasted the transport's retries); the next one goes on.
    pub failed_syncs: u64,
    /// Pushes refused as conflicting (`409`) and merged again.
    pub conflicted_pushes: u64,
    /// Conflicts the handler resolved.
    pub conflicts: u64,
}

/// The transport of a device: the HTTP transport, with every push and pull recorded.
struct Recorded {
    inner: HttpTransport,
    device: usize,
    log: Arc<Mutex<Log>>,
}

impl Recorded {
    fn record(&self, body: &str, key: Option<&IdempotencyKey>, sent: &Result<PushAck, TransportError>) {
        let mut log = self.log.lock().expect("device log");
        match sent {
            Ok(ack) => {
                let items = serde_json::from_str(body).unwrap_or_default();
                let key = key.map(|k| k.as_str().to_owned()).unwrap_or_default();
                let (device, now, replayed) = (self.device, ack.now.millis(), ack.replayed);
                log.acks.push(Ack { device, key, items, now, replayed });
            }
            // A conflict is the preconditions at work, counted by the sync report; not a fault.
            Err(e) if e.is_conflict() => {}
            Err(_) => log.failed_pushes += 1,
        }
    }
}

impl Transport for Recorded {
    fn pull(&self, path: &str, since: Cursor, limit: Option<usize>) -> Result<PullPage, TransportError> {
        let page = self.inner.pull(path, since, limit);
        if page.is_ok() {
            self.log.lock().expect("device log").pulls += 1;
        }
        page
    }

    fn push(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        let sent = self.inner.push(path, body, key);
        self.record(body, key, &sent);
        sent
    }

    fn preconditions(&self) -> bool {
        self.inner.preconditions()
    }

    fn push_checked(&self, path: &str, body: &str, key: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
        let sent = self.inner.push_checked(path, body, key);
        self.record(body, key, &sent);
        sent
    }

    fn wait_for_changes(&self, path: &str, since: Cursor, wait: Duration) -> Result<Waited, TransportError> {
        self.inner.wait_for_changes(path, since, wait)
    }
}

/// One device.
pub struct Device {
    /// Its number.
    pub index: usize,
    store: Store,
    syncer: Syncer,
    /// What it did.
    pub log: Arc<Mutex<Log>>,
    objects: usize,
    edits: u64,
}

impl Device {
    /// A device with its database in `dir`, talking to `base_url` (its proxy), editing objects
    /// `o00` to `o{objects-1}`.
    pub fn open(index: usize, dir: &Path, base_url: &str, objects: usize) -> anyhow::Result<Self> {
        let store = Store::open(dir.join(format!("device-{index}.db")), [entity()])?;
        // Short timeouts so a delayed or stalled connection costs a retry, not the run; the
        // transport's own retry policy is the one apps get.
        let inner = HttpTransport::builder(base_url)
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let transport = Recorded { inner, device: index, log: Arc::clone(&log) };
        // Small pages and batches: more requests per sync, so more of them meet a fault.
        let options = SyncOptions { page_size: Some(20), push_batch: 8, idempotency: true };
        let syncer = Syncer::with_options(store.clone(), transport, options);
        Ok(Self { index, store, syncer, log, objects, edits: 0 })
    }

    /// Edits and syncs until `stop` is set.
    pub fn run(&mut self, seed: u64, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut rng = StdRng::seed_from_u64(seed);
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..rng.random_range(1..=4) {
                self.edit(&mut rng)?;
            }
            self.sync();
            std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        }
        Ok(())
    }

    /// One sync; returns whether it succeeded and how many objects it pushed.
    pub fn sync(&self) -> (bool, usize) {
        // PreferLocal: every edit of this device wins its conflicts, so every edit is pushed
        // unless this device itself overwrote it first; "never pushed" is then exact.
        let result = self.syncer.sync_all(&PreferLocal);
        let mut log = self.log.lock().expect("device log");
        match result {
            Ok(report) => {
                log.syncs += 1;
                log.conflicted_pushes += report.entities.iter().map(|e| e.conflicted_pushes as u64).sum::<u64>();
                log.conflicts += report.conflicts() as u64;
                (true, report.pushed())
            }
            Err(e) => {
                tracing::debug!(device = self.index, error = %e, "sync failed");
                log.failed_syncs += 1;
                (false, 0)
            }
        }
    }

    /// Objects with local changes not acknowledged yet.
    pub fn pending(&self) -> anyhow::Result<usize> {
        Ok(self.store.pending_changes(ENTITY)?)
    }

    /// Every live local object.
    pub fn objects(&self) -> anyhow::Result<Vec<Record>> {
        Ok(self.store.query(&Query::new(ENTITY))?)
    }

    fn value(&mut self, field: &str) -> Value {
        self.edits += 1;
        match field {
            "rank" => json!(self.index as i64 * 1_000_000_000 + self.edits as i64),
            _ => json!(format!("d{}-{}", self.index, self.edits)),
        }
    }

    fn edit(&mut self, rng: &mut StdRng) -> anyhow::Result<()> {
        let id = format!("o{:02}", rng.random_range(0..self.objects));
        let live = self.store.get(ENTITY, &id)?.is_some();
        let mut edits = Vec::new();
        if !live {
            let mut fields = serde_json::Map::new();
            for field in FIELDS {
                let value = self.value(field);
                fields.insert(field.into(), value.clone());
                edits.push(Edit::Set { id: id.clone(), field, value });
            }
            self.store.insert_with_id(ENTITY, &id, Value::Object(fields))?;
        } else if rng.random_bool(0.15) {
            self.store.remove(ENTITY, &id)?;
            edits.push(Edit::Remove { id });
        } else {
            let mut fields = serde_json::Map::new();
            for field in FIELDS {
                if rng.random_bool(0.5) || fields.is_empty() && field == "rank" {
                    let value = self.value(field);
                    fields.insert(field.into(), value.clone());
                    edits.push(Edit::Set { id: id.clone(), field, value });
                }
            }
            self.store.update(ENTITY, &id, Value::Object(fields))?;
        }
        self.log.lock().expect("device log").edits.extend(edits);
        Ok(())
    }
}
