//! What the client tests share: a [`Device`] (a `sync-client` store in a temp file and its
//! syncer, driven from async tests through `spawn_blocking`), a [`BaseServer`] that speaks only
//! the base protocol, and a [`LossyProxy`] that forwards requests to a server and can drop the
//! answers of pushes after the server has handled them.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Map, Value, json};
use sync_client::{
    ConflictHandler, Entity, FieldType, HttpTransport, Query, RetryPolicy, Store, SyncError, SyncOptions, SyncReport,
    Syncer, Transport,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::Endpoint;

/// The to-do entity of the examples: `Todo` at `/todoChanges`.
pub fn todo_entity() -> Entity {
    Entity::new("Todo").field("text", FieldType::Text).field("done", FieldType::Bool)
}

/// A transport to `endpoint`, with its token if it has one, whose retries do not sleep, so
/// tests stay fast.
pub fn fast_transport(endpoint: &Endpoint, max_retries: u32) -> HttpTransport {
    let mut builder = HttpTransport::builder(&endpoint.base_url)
        .timeout(Duration::from_secs(20))
        .retry(RetryPolicy { max_retries, ..RetryPolicy::default() })
        .sleep_with(Arc::new(|_| {}));
    if let Some(token) = endpoint.token.clone() {
        builder = builder.token_provider(move |_refresh| Ok(token.clone()));
    }
    builder.build().expect("transport builds")
}

/// One device: a local database in its own temp dir and a syncer to one server.
pub struct Device {
    /// A name for messages.
    pub name: String,
    /// The local store.
    pub store: Store,
    /// The syncer.
    pub syncer: Arc<Syncer>,
    /// The database file.
    pub path: std::path::PathBuf,
    _dir: TempDir,
}

impl Device {
    /// A device with the `Todo` entity, syncing with `endpoint` with the default options.
    pub fn new(name: &str, endpoint: &Endpoint) -> Self {
        Self::with(name, [todo_entity()], fast_transport(endpoint, 3), SyncOptions::default())
    }

    /// A device with these entities, transport and options.
    pub fn with(
        name: &str,
        entities: impl IntoIterator<Item = Entity>,
        transport: impl Transport + 'static,
        options: SyncOptions,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(format!("{name}.db"));
        let store = Store::open(&path, entities).expect("store opens");
        let syncer = Arc::new(Syncer::with_options(store.clone(), transport, options));
        Self { name: name.to_owned(), store, syncer, path, _dir: dir }
    }

    /// A device sharing this one's database but syncing through another transport.
    pub fn through(&self, transport: impl Transport + 'static, options: SyncOptions) -> Arc<Syncer> {
        Arc::new(Syncer::with_options(self.store.clone(), transport, options))
    }

    /// Syncs every entity on the blocking pool, as an async app does.
    pub async fn try_sync<H: ConflictHandler + Send + 'static>(&self, handler: H) -> Result<SyncReport, SyncError> {
        run_sync(Arc::clone(&self.syncer), handler).await
    }

    /// Syncs every entity; panics on failure.
    pub async fn sync<H: ConflictHandler + Send + 'static>(&self, handler: H) -> SyncReport {
        match self.try_sync(handler).await {
            Ok(report) => report,
            Err(e) => panic!("{} failed to sync: {e}", self.name),
        }
    }

    /// Adds a to-do with this id.
    pub fn add(&self, id: &str, text: &str) {
        self.store.insert_with_id("Todo", id, json!({"text": text, "done": false})).expect("insert");
    }

    /// Every to-do as `id → fields`.
    pub fn todos(&self) -> BTreeMap<String, Value> {
        self.all("Todo")
    }

    /// Every object of `entity` as `id → fields`.
    pub fn all(&self, entity: &str) -> BTreeMap<String, Value> {
        let records = self.store.query(&Query::new(entity)).expect("query");
        records.into_iter().map(|r| (r.id, Value::Object(r.fields))).collect()
    }

    /// The `text` of one to-do, if it exists.
    pub fn text(&self, id: &str) -> Option<String> {
        self.store.get("Todo", id).expect("get").and_then(|r| r.get_str("text").map(str::to_owned))
    }
}

/// Runs `syncer.sync_all(handler)` on the blocking pool.
pub async fn run_sync<H: ConflictHandler + Send + 'static>(
    syncer: Arc<Syncer>,
    handler: H,
) -> Result<SyncReport, SyncError> {
    tokio::task::spawn_blocking(move || syncer.sync_all(&handler)).await.expect("sync task")
}

/// The live objects a server holds for `path`, as `id → fields` (without `_lastChange`), read
/// with a pull from 0.
pub async fn server_objects(endpoint: &Endpoint, path: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for update in server_updates(endpoint, path).await {
        let mut fields = update.as_object().cloned().unwrap_or_default();
        let Some(Value::String(id)) = fields.remove("id") else { panic!("update without id: {update}") };
        fields.remove("_lastChange");
        if fields.remove("_removed") == Some(Value::Bool(true)) {
            out.remove(&id);
        } else {
            out.insert(id, Value::Object(fields));
        }
    }
    out
}

/// Every update a pull from 0 returns for `path`.
pub async fn server_updates(endpoint: &Endpoint, path: &str) -> Vec<Value> {
    endpoint.api().pull(path, 0).await.updates
}

/// Projects `objects` on the declared fields of `Todo`, for comparing devices with a server
/// that may hold more fields.
pub fn project(objects: &BTreeMap<String, Value>, fields: &[&str]) -> BTreeMap<String, Value> {
    objects
        .iter()
        .map(|(id, v)| {
            let kept: Map<String, Value> =
                fields.iter().map(|f| ((*f).to_owned(), v.get(*f).cloned().unwrap_or(Value::Null))).collect();
            (id.clone(), Value::Object(kept))
        })
        .collect()
}

/// A server of the base protocol only, as persistence.js's reference servers behave: no paging
/// (`limit` ignored, no `more`), no idempotency (the header ignored), timestamps from the wall
/// clock made unique, and an object re-created after a removal listed twice in a pull (a
/// tombstone without `_lastChange`, then the live object). Kept in memory.
pub struct BaseServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// How many pushes it applied.
    pub pushes: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Default)]
struct BaseState {
    clock: i64,
    /// Path → id → object.
    entities: HashMap<String, BTreeMap<String, BaseObject>>,
}

struct BaseObject {
    fields: Map<String, Value>,
    removed: bool,
    recreated: bool,
    last_change: i64,
}

impl BaseServer {
    /// Starts the server on an ephemeral port.
    pub async fn start() -> Self {
        let state = web::Data::new(Mutex::new(BaseState::default()));
        let pushes = Arc::new(AtomicUsize::new(0));
        let counter = web::Data::new(Arc::clone(&pushes));
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(counter.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(base_changes))
        })
        .workers(1)
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { base_url: format!("http://127.0.0.1:{port}"), pushes, handle }
    }

    /// Where clients reach it (it does not authenticate).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::open(&self.base_url)
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn base_changes(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<BaseState>>,
    pushes: web::Data<Arc<AtomicUsize>>,
) -> HttpResponse {
    let path = req.path().to_owned();
    if !path.ends_with("Changes") {
        // Like persistence.js's reference servers, which route only the entities' paths.
        return HttpResponse::NotFound().body("Cannot GET");
    }
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    if req.method() == actix_web::http::Method::GET {
        let since =
            req.query_string().split('&').find_map(|p| p.strip_prefix("since=")).map_or(Ok(0), str::parse::<i64>);
        let Ok(since) = since else { return HttpResponse::BadRequest().json(json!({"error": "bad since"})) };
        let now = state.clock;
        let mut updates = Vec::new();
        for (id, object) in state.entities.get(&path).into_iter().flatten() {
            if object.last_change <= since {
                continue;
            }
            if object.removed {
                updates.push(json!({"id": id, "_removed": true, "_lastChange": object.last_change}));
                continue;
            }
            if object.recreated {
                updates.push(json!({"id": id, "_removed": true}));
            }
            let mut item = object.fields.clone();
            item.insert("id".into(), json!(id));
            item.insert("_lastChange".into(), json!(object.last_change));
            updates.push(Value::Object(item));
        }
        return HttpResponse::Ok().json(json!({"now": now, "updates": updates}));
    }
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({"error": "expected an array"}));
    };
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let now = wall.max(state.clock + 1);
    state.clock = now;
    let objects = state.entities.entry(path).or_default();
    for item in items {
        let Value::Object(mut item) = item else { continue };
        let Some(Value::String(id)) = item.remove("id") else { continue };
        item.remove("_lastChange");
        let removed = item.remove("_removed") == Some(Value::Bool(true));
        match objects.get_mut(&id) {
            None if removed => {}
            None => {
                objects.insert(id, BaseObject { fields: item, removed: false, recreated: false, last_change: now });
            }
            Some(object) if removed => {
                if !object.removed {
                    object.removed = true;
                    object.recreated = false;
                    object.fields.clear();
                    object.last_change = now;
                }
            }
            Some(object) => {
                if object.removed {
                    object.removed = false;
                    object.recreated = true;
                    object.fields = item;
                } else {
                    object.fields.extend(item);
                }
                object.last_change = now;
            }
        }
    }
    pushes.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(json!({"status": "ok", "now": now}))
}

/// A TCP proxy to a server that relays each request whole and, while armed, drops the answer of
/// a push after the server has handled it: it reads the whole answer from the server, then closes
/// the client's connection without sending a byte of it. The client sees a broken connection
/// although the push was applied.
pub struct LossyProxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub base_url: String,
    /// How many more push answers to drop.
    pub drop_push_answers: Arc<AtomicUsize>,
    /// How many push answers were dropped so far.
    pub dropped: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Starts a proxy to the server at `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.strip_prefix("http://").expect("http upstream").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let drop_push_answers = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (arm, count) = (Arc::clone(&drop_push_answers), Arc::clone(&dropped));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, arm, count) = (upstream.clone(), Arc::clone(&arm), Arc::clone(&count));
                tokio::spawn(async move {
                    // A failed relay only ends this connection; the client sees it broken.
                    let _ = relay(client, &upstream, &arm, &count).await;
                });
            }
        });
        Self { base_url: format!("http://127.0.0.1:{port}"), drop_push_answers, dropped, task }
    }

    /// Drops the answers of the next `n` pushes.
    pub fn drop_next_push_answers(&self, n: usize) {
        self.drop_push_answers.store(n, Ordering::SeqCst);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: &str, arm: &AtomicUsize, count: &AtomicUsize) -> std::io::Result<()> {
    let mut buffered = Vec::new();
    loop {
        let Some(request) = read_message(&mut client, &mut buffered).await? else { return Ok(()) };
        let mut server = TcpStream::connect(upstream).await?;
        server.write_all(&request).await?;
        let mut server_buffer = Vec::new();
        let Some(answer) = read_message(&mut server, &mut server_buffer).await? else { return Ok(()) };
        let is_push = request.starts_with(b"POST ");
        if is_push && arm.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
            return Ok(()); // `client` is dropped: the connection closes with no answer.
        }
        client.write_all(&answer).await?;
    }
}

/// Reads one HTTP/1.1 message (head and a `Content-Length` body) from `stream`, keeping bytes of
/// the next message in `buffered`. `None` when the stream ends before a message starts.
async fn read_message(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffered.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffered.extend_from_slice(&chunk[..n]);
    }
    let rest = buffered.split_off(head_end + length);
    Ok(Some(std::mem::replace(buffered, rest)))
}
