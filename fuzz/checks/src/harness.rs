//! The server's own route table and handlers over a real SQLite store in a temporary directory,
//! called in-process: no socket, so that one request costs microseconds and a fuzz run can send
//! hundreds of thousands. The middleware of a running server (origin checks, request logs) is left
//! out; every byte of a request's path, query and body goes through the code a server runs.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::App;
use actix_web::rt::SystemRunner;
use actix_web::test::{TestRequest, call_service, init_service, read_body};
use actix_web::web::{self, Bytes};
use sync_server::Config;
use sync_server::budget::BodyBudget;
use sync_server::live::LongPolls;
use sync_server::metrics::Metrics;
use sync_server::origin::OriginPolicy;
use sync_server::outbox::Wake;
use sync_server::state::AppState;
use sync_server::store::{SqliteStore, Store};
use sync_server::tasks::Tasks;

type Call = Box<dyn Fn(TestRequest) -> Pin<Box<dyn Future<Output = (u16, Bytes)>>>>;

/// One in-process server and its store.
pub(crate) struct Harness {
    // Never dropped: a harness lives in a thread-local, dropped as its thread ends, when actix's
    // runtime and service can no longer be (they need the runtime's own thread-locals). What they
    // hold goes with the process; the temporary directory is removed.
    system: ManuallyDrop<SystemRunner>,
    call: ManuallyDrop<Call>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A server configured by `config` (its `db` is replaced by a fresh temporary file). Panics
    /// if it cannot start: the checks need it.
    pub(crate) fn new(mut config: Config) -> Self {
        // A RAM disk where there is one: every push is committed with fsync.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("a temporary dir");
        config.db = dir.path().join("fuzz.db").display().to_string();
        // Pulls answer at once: a wait would only slow the checks down.
        config.long_poll.max_wait_secs = 0;
        let validated = config.validate().expect("the harness's configuration is valid");
        let system = actix_web::rt::System::new();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("fuzz.db"), config.sqlite).expect("a temporary SQLite store"));
        let metrics = Metrics::new();
        let state = web::Data::new(AppState {
            files: None,
            store,
            entities: validated.entities,
            limits: config.limits,
            bodies: BodyBudget::new(config.limits.max_inflight_body_bytes),
            metrics: metrics.clone(),
            body_timeout: Duration::from_secs(config.body_timeout_secs),
            idempotency_ttl: Duration::from_secs(config.idempotency_ttl_secs),
            origins: OriginPolicy::new(&config.cors_origins),
            tasks: Tasks::new().health(),
            auth: validated.auth,
            outbox_wake: Wake::default(),
            subscriptions: Arc::new(Vec::new()),
            admins: validated.admins,
            clock: sync_server::clock::system(),
            validators: Arc::new(validated.validators),
            live: LongPolls::new(config.long_poll, metrics),
            tombstone_retention_days: config.tombstone_retention_days,
        });
        let app = Rc::new(
            system.block_on(init_service(App::new().app_data(state).configure(sync_server::routes::configure))),
        );
        let call: Call = Box::new(move |req| {
            let app = Rc::clone(&app);
            Box::pin(async move {
                let answer = call_service(&*app, req.to_request()).await;
                let status = answer.status().as_u16();
                (status, read_body(answer).await)
            })
        });
        Self { system: ManuallyDrop::new(system), call: ManuallyDrop::new(call), _dir: dir }
    }

    /// Sends `request` and returns the answer's status and whole body.
    pub(crate) fn send(&self, request: TestRequest) -> (u16, Bytes) {
        self.system.block_on((self.call)(request))
    }
}
