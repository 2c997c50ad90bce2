//! What every request handler shares: the store, the served entities, the limits, and the parts
//! of the server that requests report to.

use std::sync::Arc;
use std::time::Duration;

use sync_proto::Limits;

use crate::admin::Admins;
use crate::auth::Authenticator;
use crate::budget::BodyBudget;
use crate::clock::Clock;
use crate::config::Entities;
use crate::live::LongPolls;
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::outbox::Wake;
use crate::store::Store;
use crate::tasks::TaskHealth;
use crate::validation::PushValidator;

/// The state of one server, shared by its workers.
#[derive(Clone)]
pub struct AppState {
    /// The web app's files (`static_dir`), served at paths no entity takes; `None`: off.
    pub files: Option<Arc<crate::routes::files::StaticFiles>>,
    /// Where objects are stored.
    pub store: Arc<dyn Store>,
    /// Which entities are served, at which paths.
    pub entities: Entities,
    /// Bounds on requests.
    pub limits: Limits,
    /// The memory all request bodies may hold at once.
    pub bodies: BodyBudget,
    /// What `/metrics` reports.
    pub metrics: Metrics,
    /// How long a push may take to send its body.
    pub body_timeout: Duration,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// Which web pages may call the server.
    pub origins: OriginPolicy,
    /// Which background tasks have died (`/healthz` answers `503` while any has).
    pub tasks: TaskHealth,
    /// Who may call entity paths, when authentication is on.
    pub auth: Option<Arc<Authenticator>>,
    /// Wakes this instance's outbox workers after a push appended events.
    pub outbox_wake: Wake,
    /// The configured subscriptions' names.
    pub subscriptions: Arc<Vec<String>>,
    /// The operators of the admin API, when any is configured.
    pub admins: Option<Arc<Admins>>,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// What judges pushes before they are applied.
    pub validators: Arc<Vec<Arc<dyn PushValidator>>>,
    /// Pulls waiting for changes, and the wake-ups of pushes.
    pub live: Arc<LongPolls>,
    /// How long tombstones are kept; 0 for ever.
    pub tombstone_retention_days: u64,
}
