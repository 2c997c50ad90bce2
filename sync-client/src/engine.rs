//! The sync engine: one run per entity resends an unacknowledged push, pulls every change since
//! the stored cursor (page by page when the server pages), merges each object three-way into the
//! local store (asking the conflict handler where both sides conflict), pushes the local changes,
//! and returns a report.
//!
//! What makes it lose nothing:
//! - Each pulled page is merged and its cursor stored in one local transaction: a crash between
//!   pages resumes from the last stored page.
//! - A push is recorded (body and idempotency key) in the local database before it is sent. Until
//!   the server acknowledges it, every run starts by sending that same push again under the same
//!   key; a server with idempotent push applies it once.
//! - A push is built from objects whose last local write is at most the change counter read when
//!   the push was built. When it is acknowledged, an object is marked clean only if it was not
//!   written since: an edit made while the push was in flight stays dirty and goes in the next push.
//! - The base version of each pushed object becomes what the server now holds, so the server's echo
//!   of a push in the next pull merges as "no change".
//!
//! Pushes carry only the fields that differ from the base version (all fields of an object the
//! server does not have live): the server merges fields, so an edit on another device to another
//! field is never overwritten.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sync_proto::{Cursor, IdempotencyKey};

use crate::conflict::{Conflict, ConflictHandler, ConflictKind, Resolution};
use crate::error::{StoreError, SyncError};
use crate::merge::{self, Merge, Version};
use crate::notify::{Cause, Changes};
use crate::schema::{EntityDef, Fields};
use crate::status::{Activity, Board};
use crate::store::{SetAside, Store, Tx};
use crate::tracking::{self, Base, PendingPush, RowState};
use crate::transport::{PullPage, RemoteObject, Transport};

/// How a [`Syncer`] uses the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOptions {
    /// Asks for pages of about this many objects (`limit=`); `None` pulls the whole delta in one
    /// answer. A server without paging answers the whole delta either way.
    pub page_size: Option<usize>,
    /// Most objects in one push.
    pub push_batch: usize,
    /// Sends each push with an `Idempotency-Key` header. A server without the extension ignores
    /// it; turn it off only for a server that refuses unknown headers.
    pub idempotency: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self { page_size: Some(500), push_batch: 500, idempotency: true }
    }
}

/// A conflict met during a sync and how it was resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConflict {
    /// The object's id.
    pub id: String,
    /// What kind of conflict.
    pub kind: ConflictKind,
    /// The conflicting fields (see [`Conflict::fields`]).
    pub fields: Vec<String>,
    /// What the handler decided.
    pub resolution: Resolution,
}

/// What a sync of one entity did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntityReport {
    /// The entity.
    pub entity: String,
    /// Objects received from the server (after collapsing an id sent twice in one answer).
    pub pulled: usize,
    /// Objects pushed and acknowledged (removals included).
    pub pushed: usize,
    /// Pushes the server answered from an earlier application of the same idempotency key.
    pub replayed_pushes: usize,
    /// Pushes the server refused (`409`, preconditions) because another device had changed an
    /// object since this one's copy: each time the sync pulled again, merged (asking the handler
    /// about fields changed on both sides) and pushed the result.
    pub conflicted_pushes: usize,
    /// Objects received that could not be applied (unreadable, or with values that do not fit
    /// the declared types): set aside as received (see [`crate::Store::set_aside`]). The rest of
    /// the answer was applied and the cursor moved on.
    pub set_aside: Vec<SetAside>,
    /// The conflicts met, in order, with their resolutions.
    pub conflicts: Vec<ResolvedConflict>,
    /// The server answered with the whole entity (a reset: this device's cursor was older than
    /// the server's tombstone retention).
    pub reset: bool,
    /// Objects dropped locally after a reset, because the server no longer has them (objects with
    /// local changes are kept and pushed).
    pub dropped: usize,
    /// How long the sync took.
    pub duration: Duration,
}

/// What a sync of every entity did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncReport {
    /// One report per entity, in schema order.
    pub entities: Vec<EntityReport>,
    /// How long the whole sync took.
    pub duration: Duration,
}

impl SyncReport {
    /// Objects received, over all entities.
    pub fn pulled(&self) -> usize {
        self.entities.iter().map(|e| e.pulled).sum()
    }

    /// Objects pushed and acknowledged, over all entities.
    pub fn pushed(&self) -> usize {
        self.entities.iter().map(|e| e.pushed).sum()
    }

    /// Conflicts resolved, over all entities.
    pub fn conflicts(&self) -> usize {
        self.entities.iter().map(|e| e.conflicts.len()).sum()
    }
}

/// Syncs a [`Store`] with a server through a [`Transport`].
///
/// Its methods block until the sync is done; only one sync runs on a database at a time (a second
/// caller waits). The app may keep reading and writing the store meanwhile, from other threads:
/// the store is locked only while a page is merged or a push is built or acknowledged.
///
/// Each sync tells the store's subscriptions once, at its end, what it changed (see
/// [`crate::notify`]), and its status and progress as it goes (see [`crate::status`]).
pub struct Syncer {
    store: Store,
    transport: Arc<dyn Transport>,
    options: SyncOptions,
    board: Board,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("store", &self.store).field("options", &self.options).finish_non_exhaustive()
    }
}

impl Syncer {
    /// A syncer of `store` through `transport` with the default options.
    pub fn new(store: Store, transport: impl Transport + 'static) -> Self {
        Self::with_options(store, transport, SyncOptions::default())
    }

    /// A syncer with these options.
    pub fn with_options(store: Store, transport: impl Transport + 'static, options: SyncOptions) -> Self {
        Self { store, transport: Arc::new(transport), options, board: Board::default() }
    }

    /// The store this syncer syncs.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    pub(crate) fn board(&self) -> &Board {
        &self.board
    }

    /// Syncs every entity of the schema, in order, resolving conflicts with `handler`. Stops at
    /// the first entity that fails; what was synced before stays synced.
    pub fn sync_all<H: ConflictHandler + ?Sized>(&self, handler: &H) -> Result<SyncReport, SyncError> {
        self.locked(|changes| {
            let start = Instant::now();
            let mut report = SyncReport::default();
            for def in self.store.schema().entities() {
                report.entities.push(self.run(def, handler, changes)?);
            }
            report.duration = start.elapsed();
            Ok(report)
        })
    }

    /// Syncs one entity, resolving conflicts with `handler`.
    pub fn sync_entity<H: ConflictHandler + ?Sized>(
        &self,
        entity: &str,
        handler: &H,
    ) -> Result<EntityReport, SyncError> {
        let def = self.store.schema().entity(entity)?;
        self.locked(|changes| self.run(def, handler, changes))
    }

    /// Runs `sync` holding the database's sync lock, keeps its outcome for the status, then,
    /// with the lock released, tells the subscriptions what it changed and the status watchers
    /// that it ended.
    fn locked<T>(&self, sync: impl FnOnce(&mut Changes) -> Result<T, SyncError>) -> Result<T, SyncError> {
        /// Ends the board's running sync however the sync ends, a panic (of a conflict handler)
        /// included, so that the status never says "pulling" for a sync that is gone.
        struct Ending<'a>(&'a Board);
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                self.0.end();
            }
        }
        let mut changes = Changes::default();
        let outcome = {
            let _running = self.store.lock_sync()?;
            let _ending = Ending(&self.board);
            let outcome = sync(&mut changes);
            if let Err(e) = self.store.record_sync_outcome(outcome.as_ref().map(drop)) {
                tracing::warn!(error = %e, "cannot record the outcome of the sync");
            }
            outcome
        };
        self.store.notify(changes, Cause::Sync);
        self.board.publish(&self.store);
        outcome
    }

    #[tracing::instrument(skip_all, fields(entity = %def.name))]
    fn run<H: ConflictHandler + ?Sized>(
        &self,
        def: &EntityDef,
        handler: &H,
        changes: &mut Changes,
    ) -> Result<EntityReport, SyncError> {
        let start = Instant::now();
        let entity = def.name.as_str();
        let mut report = EntityReport { entity: entity.to_owned(), ..EntityReport::default() };
        self.board.begin(entity);

        if let Some(pending) = self.store.transaction(|tx| tracking::pending(tx.conn(), entity))? {
            tracing::info!(key = %pending.key, "sending again a push that was not acknowledged");
            // Recorded by an earlier run: whether it was built with bases is in its body.
            self.send(def, &pending, has_bases(&pending.body), &mut report)?;
        }
        // A push refused for a conflict is merged and pushed again, a bounded number of times:
        // another device that keeps changing the same objects must not hold this sync forever.
        loop {
            self.pull(def, handler, &mut report, changes)?;
            let checked = self.transport.preconditions();
            let upto = self.store.transaction(|tx| tracking::current_seq(tx.conn()))?;
            let mut conflicted = false;
            while let Some(pending) =
                self.store.transaction(|tx| build_push(tx, def, upto, self.options.push_batch, checked))?
            {
                if self.send(def, &pending, checked, &mut report)? == Sent::Conflicted {
                    conflicted = true;
                    break;
                }
            }
            if !conflicted {
                break;
            }
            if report.conflicted_pushes >= MAX_CONFLICTED_PUSHES {
                return Err(SyncError::Protocol {
                    entity: entity.to_owned(),
                    reason: format!(
                        "the server refused {MAX_CONFLICTED_PUSHES} pushes of this sync as conflicting; \
                         the next sync tries again"
                    ),
                });
            }
        }

        report.duration = start.elapsed();
        tracing::debug!(pulled = report.pulled, pushed = report.pushed, conflicts = report.conflicts.len(), "synced");
        Ok(report)
    }

    /// Pulls every change since the stored cursor, page by page, merging each page and storing
    /// its cursor in one local transaction. The next page is fetched while one is merged, so the
    /// network and the local database work at the same time; a page's transaction does not wait
    /// for the disk (a page lost to a power cut is pulled again, since its cursor goes with it).
    fn pull<H: ConflictHandler + ?Sized>(
        &self,
        def: &EntityDef,
        handler: &H,
        report: &mut EntityReport,
        changes: &mut Changes,
    ) -> Result<(), SyncError> {
        let entity = def.name.as_str();
        let since = self.store.transaction(|tx| tracking::cursor(tx.conn(), entity))?;
        self.board.update(Activity::Pulling, |p| p.total = None);
        self.board.publish(&self.store);
        let (pages, fetched) = std::sync::mpsc::sync_channel(1);
        std::thread::scope(|scope| {
            scope.spawn(move || self.fetch_pages(def, since, &pages));
            for page in fetched {
                let page = page?;
                self.store.transaction_unsynced(changes, |tx| {
                    apply_page(tx, def, &page, handler, report)?;
                    if page.reset {
                        forget_missing(tx, def, &page, report)?;
                    }
                    tracking::set_cursor(tx.conn(), entity, page.now.millis()).map_err(SyncError::from)
                })?;
                self.board.update(Activity::Pulling, |p| {
                    p.pulled = report.pulled;
                    p.pages += 1;
                    p.total = (!page.more).then_some(report.pulled);
                });
                self.board.publish(&self.store);
            }
            Ok(())
        })
    }

    /// Fetches the pages after `since` in order into `pages`, until the last one, an error (sent
    /// as the last item), or the receiver is gone.
    fn fetch_pages(
        &self,
        def: &EntityDef,
        mut since: i64,
        pages: &std::sync::mpsc::SyncSender<Result<PullPage, SyncError>>,
    ) {
        let entity = def.name.as_str();
        loop {
            let page = self
                .transport
                .pull(&def.path, Cursor::from_millis(since), self.options.page_size)
                .map_err(|source| SyncError::Transport { entity: entity.to_owned(), source })
                .and_then(|page| {
                    if page.more && page.now.millis() <= since {
                        return Err(SyncError::Protocol {
                            entity: entity.to_owned(),
                            reason: format!("a page with more to come did not advance the cursor past {since}"),
                        });
                    }
                    Ok(page)
                });
            let next = match &page {
                Ok(page) if page.more => Some(page.now.millis()),
                _ => None,
            };
            if pages.send(page).is_err() {
                return;
            }
            match next {
                Some(now) => since = now,
                None => return,
            }
        }
    }
    /// Sends a recorded push and, once acknowledged, updates the base versions and marks clean
    /// what was not written since the push was built. A push built `with_bases` (`_lastChange` in
    /// its items) asks the server to check them; refused for a conflict, it is forgotten (the
    /// server applied nothing; its objects are still dirty) and [`Sent::Conflicted`] is returned.
    fn send(
        &self,
        def: &EntityDef,
        pending: &PendingPush,
        with_bases: bool,
        report: &mut EntityReport,
    ) -> Result<Sent, SyncError> {
        let entity = def.name.as_str();
        let key = IdempotencyKey::new(pending.key.clone())
            .map_err(|e| StoreError::Corrupt(format!("pending push of {entity}: {e}")))?;
        let key = self.options.idempotency.then_some(&key);
        self.board.update(Activity::Pushing, |_| {});
        self.board.publish(&self.store);
        let sent = if with_bases {
            self.transport.push_checked(&def.path, &pending.body, key)
        } else {
            self.transport.push(&def.path, &pending.body, key)
        };
        match sent {
            Ok(ack) => {
                let pushed = self.store.transaction(|tx| acknowledge(tx, def, pending, ack.now.millis()))?;
                report.pushed += pushed;
                report.replayed_pushes += usize::from(ack.replayed);
                self.board.update(Activity::Pushing, |p| p.pushed = report.pushed);
                self.board.publish(&self.store);
                Ok(Sent::Acknowledged)
            }
            Err(source) if source.is_conflict() => {
                tracing::info!(entity, "the server refused a push for a conflict; pulling, merging and pushing again");
                self.store.transaction(|tx| tracking::clear_pending(tx.conn(), entity))?;
                report.conflicted_pushes += 1;
                Ok(Sent::Conflicted)
            }
            Err(source) => {
                if source.is_rejected_body() {
                    // The server applied nothing and never will: forget this push. Its objects
                    // are still dirty, so the next run builds a new one from them.
                    self.store.transaction(|tx| tracking::clear_pending(tx.conn(), entity))?;
                }
                Err(SyncError::Transport { entity: entity.to_owned(), source })
            }
        }
    }
}

/// The most pushes one sync sends again after a conflict, per entity.
const MAX_CONFLICTED_PUSHES: usize = 10;

/// How a push ended, when the server did not fail it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Acknowledged,
    /// Refused for a conflict: nothing was applied.
    Conflicted,
}

/// Whether a recorded push body was built with each item's base version (`_lastChange`): read
/// only for a push recorded by an earlier run, since a run knows how it builds its own.
fn has_bases(body: &str) -> bool {
    serde_json::from_str::<Vec<Fields>>(body)
        .is_ok_and(|items| items.first().is_some_and(|item| item.contains_key(BASE_KEY)))
}

/// The key of an item's base version in a push body.
const BASE_KEY: &str = "_lastChange";

/// After a reset answer (the whole scope): drops each local object the server no longer has,
/// unless it has local changes; those are kept, and pushed as new objects (their base is
/// forgotten: the server holds no version of them).
fn forget_missing(tx: &Tx<'_>, def: &EntityDef, page: &PullPage, report: &mut EntityReport) -> Result<(), SyncError> {
    let entity = def.name.as_str();
    report.reset = true;
    let present: HashSet<&str> = page.updates.iter().map(|u| u.id.as_str()).collect();
    let local: Vec<String> = tx.query(&crate::store::Query::new(entity))?.into_iter().map(|r| r.id).collect();
    let dirty = tracking::dirty_rows(tx.conn(), entity, i64::MAX, usize::MAX)?;
    for id in local.iter().chain(&dirty) {
        if present.contains(id.as_str()) {
            continue;
        }
        match tracking::row_state(tx.conn(), def, id)? {
            Some(state) if state.dirty_seq.is_some() => {
                tracking::set_row_state(tx.conn(), entity, id, &RowState { base: Base::Unknown, ..state })?;
            }
            _ => {
                if tx.delete_local(def, id)? {
                    report.dropped += 1;
                }
                tracking::delete_row_state(tx.conn(), entity, id)?;
            }
        }
    }
    tracing::info!(entity, dropped = report.dropped, "the server answered in full (a reset)");
    Ok(())
}

/// Merges one pulled page into the local store.
fn apply_page<H: ConflictHandler + ?Sized>(
    tx: &Tx<'_>,
    def: &EntityDef,
    page: &PullPage,
    handler: &H,
    report: &mut EntityReport,
) -> Result<(), SyncError> {
    let entity = def.name.as_str();
    let declared: Vec<&str> = def.field_names().collect();
    let mut set_aside = |aside: SetAside| {
        tracing::warn!(entity, id = aside.id, reason = %aside.reason, "a pulled object was set aside");
        tracking::set_aside(tx.conn(), entity, aside.id.as_deref(), &aside.raw, &aside.reason)?;
        report.set_aside.push(aside);
        Ok::<_, StoreError>(())
    };
    for bad in &page.unreadable {
        set_aside(bad.clone())?;
    }
    let any_aside = tracking::any_aside(tx.conn(), entity)?;
    for remote in collapse_duplicates(&page.updates) {
        report.pulled += 1;
        let remote_version = if remote.removed {
            Version::Removed
        } else {
            match def.read_remote(&remote.fields) {
                Ok(fields) => Version::Live(fields),
                Err(reason) => {
                    set_aside(SetAside { id: Some(remote.id.clone()), raw: remote.to_json(), reason })?;
                    continue;
                }
            }
        };
        // New to this device (the common case of a first sync): its bookkeeping is written at
        // once, and the checks below find nothing to compare with.
        let inserted = matches!(remote_version, Version::Live(_))
            && tracking::insert_synced(tx.conn(), entity, &remote.id, remote.last_change)?;
        let head = if inserted { None } else { tracking::row_head(tx.conn(), entity, &remote.id)? };
        let known = head.and_then(|h| h.last_change);
        if matches!((remote.last_change, known), (Some(seen), Some(known)) if seen < known) {
            // An older version than the one this device already knows (from its own push).
            continue;
        }
        if any_aside {
            tracking::clear_aside(tx.conn(), entity, &remote.id)?;
        }
        let Some(dirty_seq) = head.and_then(|h| h.dirty_seq) else {
            // No local change: the server's version is taken as it is, and is the new base.
            write_version(tx, def, &remote.id, &remote_version)?;
            match remote_version {
                Version::Live(_) if inserted => {}
                Version::Live(_) => tracking::set_synced(tx.conn(), entity, &remote.id, remote.last_change)?,
                Version::Removed => tracking::delete_row_state(tx.conn(), entity, &remote.id)?,
            }
            continue;
        };
        let new_base = match &remote_version {
            Version::Live(fields) => Base::Live { last_change: remote.last_change, fields: fields.clone() },
            Version::Removed => Base::Removed { last_change: remote.last_change },
        };
        let state = tracking::row_state(tx.conn(), def, &remote.id)?;
        let (old_base, local_removed) = state.map_or((Base::Unknown, false), |s| (s.base, s.local_removed));
        let local = match tx.read_local(def, &remote.id)? {
            Some(fields) if !local_removed => Version::Live(fields),
            _ => Version::Removed,
        };
        let base = match &old_base {
            Base::Unknown => None,
            Base::Live { fields, .. } => Some(Version::Live(fields.clone())),
            Base::Removed { .. } => Some(Version::Removed),
        };
        let (result, dirty) = match merge::merge(&declared, base.as_ref(), &local, &remote_version) {
            Merge::Clean { result, dirty } => (result, dirty),
            Merge::Conflict(pending) => {
                let conflict = Conflict {
                    entity: entity.to_owned(),
                    id: remote.id.clone(),
                    kind: pending.kind,
                    local: local.fields().cloned(),
                    remote: remote_version.fields().cloned(),
                    base: old_base.fields().cloned(),
                    fields: pending.fields.clone(),
                };
                let resolution = match handler.resolve(&conflict) {
                    Resolution::Merged(given) => Resolution::Merged(def.check_partial(&given).map_err(|source| {
                        SyncError::InvalidResolution {
                            entity: entity.to_owned(),
                            id: remote.id.clone(),
                            source: Box::new(source),
                        }
                    })?),
                    other => other,
                };
                tracing::debug!(id = %remote.id, kind = ?pending.kind, ?resolution, "conflict resolved");
                let outcome = merge::resolve(&declared, &pending, &local, &remote_version, &resolution);
                report.conflicts.push(ResolvedConflict {
                    id: remote.id.clone(),
                    kind: pending.kind,
                    fields: pending.fields,
                    resolution,
                });
                outcome
            }
        };
        write_version(tx, def, &remote.id, &result)?;
        let removed = result == Version::Removed;
        if dirty {
            let state = RowState { dirty_seq: Some(dirty_seq), local_removed: removed, base: new_base };
            tracking::set_row_state(tx.conn(), entity, &remote.id, &state)?;
        } else if removed {
            tracking::delete_row_state(tx.conn(), entity, &remote.id)?;
        } else {
            let state = RowState { dirty_seq: None, local_removed: false, base: new_base };
            tracking::set_row_state(tx.conn(), entity, &remote.id, &state)?;
        }
    }
    Ok(())
}

/// Makes the local table hold `version` of an object (untracked: this is the server's state, or
/// a merge whose tracking the caller writes).
fn write_version(tx: &Tx<'_>, def: &EntityDef, id: &str, version: &Version) -> Result<(), StoreError> {
    match version {
        Version::Live(fields) => tx.write_local(def, id, fields).map(drop),
        Version::Removed => tx.delete_local(def, id).map(drop),
    }
}

/// One entry per id, in the order ids first appear. When an answer lists an id twice (base
/// servers send a tombstone without `_lastChange` and the re-created object), the live object
/// wins over a tombstone without `_lastChange`; otherwise the larger `_lastChange` wins, and the
/// later entry on a tie.
fn collapse_duplicates(updates: &[RemoteObject]) -> Vec<&RemoteObject> {
    let mut out: Vec<&RemoteObject> = Vec::with_capacity(updates.len());
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(updates.len());
    for update in updates {
        match index.get(update.id.as_str()) {
            None => {
                index.insert(&update.id, out.len());
                out.push(update);
            }
            Some(&at) => {
                if supersedes(update, out[at]) {
                    out[at] = update;
                }
            }
        }
    }
    out
}

fn supersedes(new: &RemoteObject, old: &RemoteObject) -> bool {
    match (new.removed, new.last_change, old.removed, old.last_change) {
        (false, _, true, None) => true,
        (true, None, false, _) => false,
        (_, new_lc, _, old_lc) => new_lc >= old_lc,
    }
}

/// Builds the next push of `entity` from objects last written at or before `upto`, records it as
/// pending, and returns it; `None` when nothing is left to push. Objects whose local version
/// equals their base (changed and changed back) are marked clean instead. `with_bases` puts each
/// object's base version in its item (`_lastChange`, 0 for one the server never sent), for a
/// server that checks them.
fn build_push(
    tx: &Tx<'_>,
    def: &EntityDef,
    upto: i64,
    batch: usize,
    with_bases: bool,
) -> Result<Option<PendingPush>, SyncError> {
    let entity = def.name.as_str();
    let conn = tx.conn();
    loop {
        let ids = tracking::dirty_rows(conn, entity, upto, batch.max(1))?;
        if ids.is_empty() {
            return Ok(None);
        }
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(state) = tracking::row_state(conn, def, &id)? else { continue };
            let local = if state.local_removed { None } else { tx.read_local(def, &id)? };
            let mut item = Map::new();
            item.insert("id".into(), Value::String(id.clone()));
            if with_bases {
                item.insert(BASE_KEY.into(), Value::from(state.base.last_change().unwrap_or(0)));
            }
            match (local, state.base.fields()) {
                (None, _) => {
                    item.insert("_removed".into(), Value::Bool(true));
                }
                (Some(local), Some(base)) => {
                    let changed = merge::changed_fields(&def.field_names().collect::<Vec<_>>(), Some(base), &local);
                    if changed.is_empty() {
                        let clean = RowState { dirty_seq: None, ..state };
                        tracking::set_row_state(conn, entity, &id, &clean)?;
                        continue;
                    }
                    for name in changed {
                        let value = local.get(&name).cloned().unwrap_or(Value::Null);
                        item.insert(name, value);
                    }
                }
                (Some(local), None) => item.extend(local),
            }
            items.push(Value::Object(item));
        }
        if items.is_empty() {
            continue;
        }
        let pending = PendingPush {
            key: uuid::Uuid::new_v4().simple().to_string(),
            body: Value::Array(items).to_string(),
            captured: tracking::current_seq(conn)?,
        };
        tracking::set_pending(conn, entity, &pending)?;
        return Ok(Some(pending));
    }
}

/// Applies the server's acknowledgement of `pending` at `now`: each pushed object's base becomes
/// what the server now holds; objects not written since the push was built are marked clean.
/// Returns how many objects the push held.
fn acknowledge(tx: &Tx<'_>, def: &EntityDef, pending: &PendingPush, now: i64) -> Result<usize, StoreError> {
    let entity = def.name.as_str();
    let conn = tx.conn();
    let corrupt = |what: &str| StoreError::Corrupt(format!("pending push of {entity}: {what}"));
    let items: Vec<Fields> = serde_json::from_str(&pending.body).map_err(|_| corrupt("not an array of objects"))?;
    for mut item in items.iter().cloned() {
        let Some(Value::String(id)) = item.remove("id") else { return Err(corrupt("an item without id")) };
        let removed = item.remove("_removed") == Some(Value::Bool(true));
        item.remove(BASE_KEY);
        let state = tracking::row_state(conn, def, &id)?.unwrap_or(RowState {
            dirty_seq: None,
            local_removed: removed,
            base: Base::Unknown,
        });
        let base = if removed {
            // The server wrote no tombstone if it held none live: the version is not `now`.
            Base::Removed { last_change: None }
        } else {
            let mut fields = def.complete(state.base.fields().unwrap_or(&Fields::new()));
            fields.extend(item);
            Base::Live { last_change: Some(now), fields }
        };
        let written_since = state.dirty_seq.is_some_and(|seq| seq > pending.captured);
        if removed && state.local_removed && !written_since {
            tracking::delete_row_state(conn, entity, &id)?;
        } else {
            let dirty_seq = if written_since { state.dirty_seq } else { None };
            let next = RowState { dirty_seq, local_removed: state.local_removed, base };
            tracking::set_row_state(conn, entity, &id, &next)?;
        }
    }
    tracking::clear_pending(conn, entity)?;
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sync_proto::{ErrorCode, FieldType};

    use super::*;
    use crate::conflict::PreferRemote;
    use crate::error::TransportError;
    use crate::schema::Entity;
    use crate::transport::PushAck;

    /// A server that answers every pull with `more` but never advances, and refuses every push
    /// body as invalid.
    struct Misbehaving;

    impl Transport for Misbehaving {
        fn pull(&self, _: &str, since: Cursor, _: Option<usize>) -> Result<PullPage, TransportError> {
            Ok(PullPage {
                updates: Vec::new(),
                now: since,
                more: since == Cursor::ZERO,
                unreadable: Vec::new(),
                reset: false,
            })
        }

        fn push(&self, _: &str, _: &str, _: Option<&IdempotencyKey>) -> Result<PushAck, TransportError> {
            Err(TransportError::Status {
                url: "/todoChanges".into(),
                status: 400,
                code: Some(ErrorCode::InvalidBody),
                message: "invalid".into(),
            })
        }
    }

    fn store() -> Store {
        Store::open_in_memory([Entity::new("Todo").field("text", FieldType::Text)]).unwrap()
    }

    #[test]
    fn paging_that_does_not_advance_is_a_protocol_error_not_a_loop() {
        let err = Syncer::new(store(), Misbehaving).sync_all(&PreferRemote).unwrap_err();
        assert!(matches!(err, SyncError::Protocol { .. }), "{err}");
    }

    #[test]
    fn push_refused_as_invalid_is_forgotten_and_its_rows_stay_dirty() {
        let store = store();
        store.insert_with_id("Todo", "a", json!({"text": "x"})).unwrap();
        store.transaction(|tx| tracking::set_cursor(tx.conn(), "Todo", 5)).unwrap();
        let err = Syncer::new(store.clone(), Misbehaving).sync_all(&PreferRemote).unwrap_err();
        assert!(matches!(err, SyncError::Transport { .. }) && !err.is_retryable(), "{err}");
        assert_eq!(store.transaction(|tx| tracking::pending(tx.conn(), "Todo")).unwrap(), None);
        assert_eq!(store.pending_changes("Todo").unwrap(), 1);
    }

    fn obj(id: &str, removed: bool, last_change: Option<i64>) -> RemoteObject {
        RemoteObject { id: id.into(), last_change, removed, fields: Fields::new() }
    }

    #[test]
    fn live_object_wins_over_tombstone_without_last_change() {
        let updates = [obj("A", true, None), obj("B", false, Some(3)), obj("A", false, Some(5))];
        let out = collapse_duplicates(&updates);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].id.as_str(), out[0].removed), ("A", false));
        let reversed = [obj("A", false, Some(5)), obj("A", true, None)];
        assert!(!collapse_duplicates(&reversed)[0].removed);
    }

    #[test]
    fn larger_last_change_wins_otherwise() {
        let updates = [obj("A", false, Some(9)), obj("A", true, Some(7))];
        assert!(!collapse_duplicates(&updates)[0].removed);
        let updates = [obj("A", false, Some(7)), obj("A", true, Some(9))];
        assert!(collapse_duplicates(&updates)[0].removed);
    }
}
