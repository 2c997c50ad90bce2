//! The local store: the app's SQLite file, its CRUD and queries, and multi-object transactions.
//!
//! Every write records itself for sync (in the bookkeeping tables) in the same SQLite transaction
//! as the write, so a write is either stored and tracked, or neither. A [`Store`] is a cheap
//! handle (clone it freely, share it between threads); writes and reads are serialized on one
//! connection, each a short transaction, so the app keeps writing while a sync waits on the
//! network.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};
use serde_json::Value;
use sync_proto::ObjectId;

use crate::error::StoreError;
use crate::notify::{Cause, Changes, Notifier};
use crate::schema::{self, Entity, EntityDef, Fields, MAX_ID_BYTES, Schema, quoted};
use crate::tracking;

/// How long a write waits for another connection's lock on the file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One object read from the local store.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The object's id.
    pub id: String,
    /// Every declared field, `null` where unset.
    pub fields: Fields,
}

impl Record {
    /// The value of a field (`None` for an undeclared field; `Some(Null)` for an unset one).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// The value of a `TEXT` field, when set.
    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }

    /// The value of a `BOOL` field, when set.
    pub fn get_bool(&self, field: &str) -> Option<bool> {
        self.get(field).and_then(Value::as_bool)
    }

    /// The value of an `INT`, `BIGINT` or `DATE` field, when set.
    pub fn get_i64(&self, field: &str) -> Option<i64> {
        self.get(field).and_then(Value::as_i64)
    }

    /// The value of a `REAL` field, when set.
    pub fn get_f64(&self, field: &str) -> Option<f64> {
        self.get(field).and_then(Value::as_f64)
    }
}

/// Sort direction of [`Query::order_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest first (`NULL` first).
    Asc,
    /// Largest first.
    Desc,
}

/// A simple query over one entity: equality filters, an order, a limit.
///
/// ```
/// # use sync_client::{Query, Order};
/// let open_by_text = Query::new("Todo").filter("done", false).order_by("text", Order::Asc).limit(50);
/// # let _ = open_by_text;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    entity: String,
    filters: Vec<(String, Value)>,
    order: Vec<(String, Order)>,
    limit: Option<usize>,
}

impl Query {
    /// Every object of `entity`, in no particular order.
    pub fn new(entity: impl Into<String>) -> Self {
        Self { entity: entity.into(), filters: Vec::new(), order: Vec::new(), limit: None }
    }

    /// Keeps objects whose `field` (or `id`) equals `value`; `null` matches unset fields.
    pub fn filter(mut self, field: impl Into<String>, value: impl Into<Value>) -> Self {
        self.filters.push((field.into(), value.into()));
        self
    }

    /// Sorts by `field` (or `id`); later calls break ties of earlier ones. Ties left over are
    /// broken by id, so the order is always the same.
    pub fn order_by(mut self, field: impl Into<String>, order: Order) -> Self {
        self.order.push((field.into(), order));
        self
    }

    /// Returns at most `n` objects.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// The entity this query selects from.
    pub fn entity(&self) -> &str {
        &self.entity
    }
}

/// A pulled object the client could not apply, kept as it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Its id, when it could be read.
    pub id: Option<String>,
    /// The update's JSON text, as received.
    pub raw: String,
    /// Why it was not applied.
    pub reason: String,
}

/// A handle on the local database. Cloning it is cheap; clones share one connection.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Mutex<Connection>,
    schema: Schema,
    /// Held for the whole of a sync run, so that two runs on one database never interleave
    /// (each relies on the pending push and the base versions it wrote staying as it left them).
    sync_lock: Mutex<()>,
    /// `<database>-sync.lock`, locked for the whole of a sync run as well: two processes on one
    /// database (two runs of a CLI) must not both send the pending push, or a server without
    /// idempotent push would apply it twice, the second time over newer edits. `None` in memory.
    sync_lock_file: Option<(std::path::PathBuf, std::fs::File)>,
    /// The subscriptions to changes (see [`crate::notify`]).
    notifier: Arc<Notifier>,
}

/// The right to run a sync on a database, in this process and in every other; see
/// [`Store::lock_sync`].
pub(crate) struct SyncGuard<'a> {
    _in_process: MutexGuard<'a, ()>,
    file: Option<&'a std::fs::File>,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.file {
            let _ = file.unlock();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("schema", &self.shared.schema).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` for these entities: creates their
    /// tables and the sync bookkeeping, adds columns for newly declared fields (existing rows
    /// keep their data and are pulled again to fill the new fields), and refuses a field whose
    /// type changed.
    ///
    /// The file is put in WAL mode with `synchronous = FULL`, so that a push recorded before
    /// sending survives a power loss.
    pub fn open(path: impl AsRef<Path>, entities: impl IntoIterator<Item = Entity>) -> Result<Self, StoreError> {
        let conn = Connection::open(path.as_ref()).map_err(StoreError::sqlite("opening the database"))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(StoreError::sqlite("setting up the database"))?;
        let mut lock_path = path.as_ref().as_os_str().to_owned();
        lock_path.push("-sync.lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::SyncLock { path: lock_path.clone(), source })?;
        Self::with_connection(conn, Schema::new(entities)?, Some((lock_path, lock_file)))
    }

    /// A store in memory, gone when the last handle is dropped: for tests and throwaway caches.
    pub fn open_in_memory(entities: impl IntoIterator<Item = Entity>) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(StoreError::sqlite("opening the database"))?;
        Self::with_connection(conn, Schema::new(entities)?, None)
    }

    fn with_connection(
        mut conn: Connection,
        schema: Schema,
        sync_lock_file: Option<(std::path::PathBuf, std::fs::File)>,
    ) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(StoreError::sqlite("setting up the database"))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("migrating the database"))?;
        tracking::init(&tx)?;
        for entity in schema.entities() {
            migrate_entity(&tx, entity)?;
        }
        tx.commit().map_err(StoreError::sqlite("migrating the database"))?;
        Ok(Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                schema,
                sync_lock: Mutex::new(()),
                sync_lock_file,
                notifier: Arc::default(),
            }),
        })
    }

    /// The checked entities of this store.
    pub fn schema(&self) -> &Schema {
        &self.shared.schema
    }

    /// Runs `f` in one transaction: if it returns `Ok`, every write it made is committed
    /// together; if it returns `Err` (or a write fails), none is.
    ///
    /// `f` must not use this store's other methods (they would wait for the transaction it is in).
    /// Subscriptions are told of its writes once it committed and the store's lock is released
    /// (see [`crate::notify`]), before this returns.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut changes = Changes::default();
        let value = self.run_transaction(&mut self.lock(), &mut changes, f)?;
        self.notify(changes, Cause::Local);
        Ok(value)
    }

    /// Like [`Store::transaction`], but its commit does not wait for the disk
    /// (`synchronous = NORMAL` for this transaction alone): for writes that can be made again, as
    /// a pulled page with its cursor is. It is still applied whole or not at all; a power loss
    /// may undo it (and only it and later ones like it, since every ordinary commit after it
    /// reaches the disk with it). The objects it changed are added to `changes` rather than told
    /// to subscriptions: the caller tells them when it holds no lock.
    pub(crate) fn transaction_unsynced<T, E>(
        &self,
        changes: &mut Changes,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let setting = StoreError::sqlite("setting durability");
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(setting)?;
        let result = self.run_transaction(&mut conn, changes, f);
        conn.pragma_update(None, "synchronous", "FULL").map_err(StoreError::sqlite("setting durability"))?;
        result
    }

    /// Runs `f` in one transaction; once it committed, adds the objects it changed to `changes`.
    fn run_transaction<T, E>(
        &self,
        conn: &mut Connection,
        changes: &mut Changes,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("starting a transaction"))?;
        // Read once per transaction: a subscription made while it runs compares its first
        // result, read after this commit, with later changes.
        let recording = self.shared.notifier.is_watched().then(|| RefCell::new(Changes::default()));
        let handle = Tx { conn: &tx, schema: &self.shared.schema, changes: recording };
        let value = f(&handle)?;
        let written = handle.changes.map(RefCell::into_inner);
        tx.commit().map_err(StoreError::sqlite("committing a transaction"))?;
        if let Some(written) = written {
            changes.extend(written);
        }
        Ok(value)
    }

    /// The subscriptions of this store.
    pub(crate) fn notifier(&self) -> &Arc<Notifier> {
        &self.shared.notifier
    }

    /// Creates an object with a fresh id (32 upper-case hex digits, as persistence.js makes) and
    /// returns the id. Fields not given are `null`.
    pub fn insert(&self, entity: &str, fields: Value) -> Result<String, StoreError> {
        self.transaction(|tx| tx.insert(entity, fields))
    }

    /// Creates an object with the given id; fails if a live object has it.
    pub fn insert_with_id(&self, entity: &str, id: &str, fields: Value) -> Result<(), StoreError> {
        self.transaction(|tx| tx.insert_with_id(entity, id, fields))
    }

    /// Sets the given fields of an object, leaving the others as they are.
    pub fn update(&self, entity: &str, id: &str, fields: Value) -> Result<(), StoreError> {
        self.transaction(|tx| tx.update(entity, id, fields))
    }

    /// Removes an object; the removal is pushed at the next sync.
    pub fn remove(&self, entity: &str, id: &str) -> Result<(), StoreError> {
        self.transaction(|tx| tx.remove(entity, id))
    }

    /// The object with this id, if it exists locally.
    pub fn get(&self, entity: &str, id: &str) -> Result<Option<Record>, StoreError> {
        self.transaction(|tx| tx.get(entity, id))
    }

    /// The objects a query selects.
    pub fn query(&self, query: &Query) -> Result<Vec<Record>, StoreError> {
        self.transaction(|tx| tx.query(query))
    }

    /// How many objects of `entity` have local changes (or removals) not pushed yet.
    pub fn pending_changes(&self, entity: &str) -> Result<usize, StoreError> {
        self.transaction(|tx| {
            let def = tx.schema.entity(entity)?;
            tracking::dirty_count(tx.conn, def.name.as_str())
        })
    }

    /// The pulled objects of `entity` that could not be applied (unreadable, or with values that
    /// do not fit the declared types), as received and with the reason, by id. A later version of
    /// the object that fits replaces it and takes it off this list.
    pub fn set_aside(&self, entity: &str) -> Result<Vec<SetAside>, StoreError> {
        self.transaction(|tx| {
            let def = tx.schema.entity(entity)?;
            let rows = tracking::set_aside_of(tx.conn, def.name.as_str())?;
            Ok(rows.into_iter().map(|(id, raw, reason)| SetAside { id, raw, reason }).collect())
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back when the guard unwound, so
        // the connection is in a clean state and can be used again.
        self.shared.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the right to run a sync on this database until the guard is dropped, waiting for a
    /// sync running in this process or in another one to end.
    pub(crate) fn lock_sync(&self) -> Result<SyncGuard<'_>, StoreError> {
        let in_process = self.shared.sync_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let file = match &self.shared.sync_lock_file {
            Some((path, file)) => {
                file.lock().map_err(|source| StoreError::SyncLock { path: path.clone(), source })?;
                Some(file)
            }
            None => None,
        };
        Ok(SyncGuard { _in_process: in_process, file })
    }
}

/// A transaction on the local store; see [`Store::transaction`]. Its methods are those of
/// [`Store`], applied together.
pub struct Tx<'a> {
    conn: &'a Connection,
    schema: &'a Schema,
    /// The objects this transaction created, changed or removed, when a subscription may want
    /// to know.
    changes: Option<RefCell<Changes>>,
}

impl Tx<'_> {
    /// See [`Store::insert`].
    pub fn insert(&self, entity: &str, fields: Value) -> Result<String, StoreError> {
        let id = new_id();
        self.insert_with_id(entity, &id, fields)?;
        Ok(id)
    }

    /// See [`Store::insert_with_id`].
    pub fn insert_with_id(&self, entity: &str, id: &str, fields: Value) -> Result<(), StoreError> {
        let def = self.schema.entity(entity)?;
        check_id(id)?;
        let given = def.check_partial(&as_object(def, fields)?)?;
        if !self.tracked(def, id, false, || self.create_local(def, id, &def.complete(&given)))? {
            return Err(StoreError::AlreadyExists { entity: entity.into(), id: id.into() });
        }
        Ok(())
    }

    /// See [`Store::update`].
    pub fn update(&self, entity: &str, id: &str, fields: Value) -> Result<(), StoreError> {
        let def = self.schema.entity(entity)?;
        let given = def.check_partial(&as_object(def, fields)?)?;
        let Some(mut current) = self.read_local(def, id)? else {
            return Err(StoreError::NotFound { entity: entity.into(), id: id.into() });
        };
        current.extend(given);
        self.tracked(def, id, false, || self.write_local(def, id, &current).map(|_| true)).map(drop)
    }

    /// See [`Store::remove`].
    pub fn remove(&self, entity: &str, id: &str) -> Result<(), StoreError> {
        let def = self.schema.entity(entity)?;
        if !self.tracked(def, id, true, || self.delete_local(def, id))? {
            return Err(StoreError::NotFound { entity: entity.into(), id: id.into() });
        }
        Ok(())
    }

    /// Runs an app's write of one object, tracked: a base kept as the object's row is copied out
    /// first (so the write does not change it), then `write` runs, and the change is recorded
    /// only if it wrote (`write` returns whether it did).
    fn tracked(
        &self,
        def: &EntityDef,
        id: &str,
        removed: bool,
        write: impl FnOnce() -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        tracking::keep_base(self.conn, def, id)?;
        if !write()? {
            return Ok(false);
        }
        tracking::record_local_write(self.conn, def.name.as_str(), id, removed)?;
        Ok(true)
    }

    /// See [`Store::get`].
    pub fn get(&self, entity: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let def = self.schema.entity(entity)?;
        Ok(self.read_local(def, id)?.map(|fields| Record { id: id.to_owned(), fields }))
    }

    /// See [`Store::query`].
    pub fn query(&self, query: &Query) -> Result<Vec<Record>, StoreError> {
        let def = self.schema.entity(&query.entity)?;
        let column = |name: &str| -> Result<Option<&schema::FieldDef>, StoreError> {
            if name == "id" {
                return Ok(None);
            }
            def.field(name)
                .map(Some)
                .ok_or_else(|| StoreError::UnknownField { entity: def.name.to_string(), field: name.into() })
        };
        let mut sql = format!("SELECT {} FROM {}", def.sql.columns, quoted(def.name.as_str()));
        let mut args = Vec::new();
        for (i, (name, value)) in query.filters.iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            match column(name)? {
                None => {
                    let id = value.as_str().ok_or_else(|| StoreError::InvalidValue {
                        entity: def.name.to_string(),
                        field: "id".into(),
                        reason: "an id is a string".into(),
                    })?;
                    args.push(rusqlite::types::Value::Text(id.to_owned()));
                }
                Some(field) => {
                    let value = schema::normalize(field.ty, value).map_err(|reason| StoreError::InvalidValue {
                        entity: def.name.to_string(),
                        field: name.clone(),
                        reason,
                    })?;
                    args.push(schema::to_sql(field.ty, &value));
                }
            }
            sql.push_str(&format!("{} IS ?{}", quoted(name), i + 1));
        }
        sql.push_str(" ORDER BY ");
        for (name, order) in &query.order {
            column(name)?;
            let dir = if *order == Order::Asc { "ASC" } else { "DESC" };
            sql.push_str(&format!("{} {dir}, ", quoted(name)));
        }
        sql.push_str("\"id\"");
        if let Some(limit) = query.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql).map_err(StoreError::sqlite("querying"))?;
        let mut rows = stmt.query(params_from_iter(args)).map_err(StoreError::sqlite("querying"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::sqlite("querying"))? {
            let id: String = row.get(0).map_err(StoreError::sqlite("querying"))?;
            let fields = read_fields(def, row)?;
            out.push(Record { id, fields });
        }
        Ok(out)
    }

    /// The declared fields of a live local object.
    pub(crate) fn read_local(&self, def: &EntityDef, id: &str) -> Result<Option<Fields>, StoreError> {
        read_row(self.conn, def, id)
    }

    /// Writes every declared field of a local object, creating it if needed; returns whether
    /// the row changed (a row that already held these values is left alone). Not tracked.
    pub(crate) fn write_local(&self, def: &EntityDef, id: &str, fields: &Fields) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached(&def.sql.upsert)
            .and_then(|mut stmt| stmt.execute(params_from_iter(row_values(def, id, fields))))
            .map(|n| n > 0)
            .map_err(StoreError::sqlite("writing an object"))?;
        self.changed(def, id, changed);
        Ok(changed)
    }

    /// Creates a local object unless one with this id exists; returns whether it did. Not tracked.
    fn create_local(&self, def: &EntityDef, id: &str, fields: &Fields) -> Result<bool, StoreError> {
        let created = self
            .conn
            .prepare_cached(&def.sql.insert)
            .and_then(|mut stmt| stmt.execute(params_from_iter(row_values(def, id, fields))))
            .map(|created| created == 1)
            .map_err(StoreError::sqlite("writing an object"))?;
        self.changed(def, id, created);
        Ok(created)
    }

    /// Deletes a local object; returns whether it existed. Not tracked.
    pub(crate) fn delete_local(&self, def: &EntityDef, id: &str) -> Result<bool, StoreError> {
        let existed = self
            .conn
            .prepare_cached(&def.sql.delete)
            .and_then(|mut stmt| stmt.execute([id]))
            .map(|n| n > 0)
            .map_err(StoreError::sqlite("removing an object"))?;
        self.changed(def, id, existed);
        Ok(existed)
    }

    /// Notes that the row of `id` changed, for the subscriptions.
    fn changed(&self, def: &EntityDef, id: &str, changed: bool) {
        if let (true, Some(changes)) = (changed, &self.changes) {
            changes.borrow_mut().record(def.name.as_str(), id);
        }
    }

    /// The connection, for the bookkeeping of the sync engine.
    pub(crate) fn conn(&self) -> &Connection {
        self.conn
    }

    /// The store's entities.
    pub(crate) fn schema(&self) -> &Schema {
        self.schema
    }
}

/// The values of a row's columns, in [`schema::TableSql`] order.
fn row_values<'a>(
    def: &'a EntityDef,
    id: &str,
    fields: &'a Fields,
) -> impl Iterator<Item = rusqlite::types::Value> + 'a {
    let values = def.fields.iter().map(|f| schema::to_sql(f.ty, fields.get(&f.name).unwrap_or(&Value::Null)));
    std::iter::once(rusqlite::types::Value::Text(id.to_owned())).chain(values)
}

/// The declared fields of the local row of `id`, if there is one.
pub(crate) fn read_row(conn: &Connection, def: &EntityDef, id: &str) -> Result<Option<Fields>, StoreError> {
    let mut stmt = conn.prepare_cached(&def.sql.select).map_err(StoreError::sqlite("reading an object"))?;
    let mut rows = stmt.query([id]).map_err(StoreError::sqlite("reading an object"))?;
    match rows.next().map_err(StoreError::sqlite("reading an object"))? {
        Some(row) => read_fields(def, row).map(Some),
        None => Ok(None),
    }
}

/// A fresh object id: a UUID v4 as 32 upper-case hex digits, the form persistence.js makes.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase()
}

fn check_id(id: &str) -> Result<(), StoreError> {
    ObjectId::new(id, MAX_ID_BYTES)
        .map(drop)
        .map_err(|e| StoreError::InvalidId { id: id.chars().take(64).collect(), reason: e.to_string() })
}

fn as_object(def: &EntityDef, fields: Value) -> Result<Fields, StoreError> {
    match fields {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Fields::new()),
        _ => Err(StoreError::NotAnObject { entity: def.name.to_string() }),
    }
}

pub(crate) fn read_fields(def: &EntityDef, row: &rusqlite::Row<'_>) -> Result<Fields, StoreError> {
    let mut fields = Fields::new();
    for (i, field) in def.fields.iter().enumerate() {
        let raw = row.get_ref(i + 1).map_err(StoreError::sqlite("reading an object"))?;
        let value = schema::from_sql(field.ty, raw)
            .map_err(|reason| StoreError::Corrupt(format!("{}.{}: {reason}", def.name, field.name)))?;
        fields.insert(field.name.clone(), value);
    }
    Ok(fields)
}

/// Creates the table of `entity`, or adds the columns of newly declared fields to it. When a
/// field is added to a table that existed, the entity's cursor goes back to 0 so that the next
/// sync pulls every object again and fills the new field.
fn migrate_entity(conn: &Connection, entity: &EntityDef) -> Result<(), StoreError> {
    let table = entity.name.as_str();
    let existed: bool = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |_| Ok(()))
        .optional()
        .map_err(StoreError::sqlite("reading the schema"))?
        .is_some();
    if !existed {
        let mut sql = format!("CREATE TABLE {} (\"id\" TEXT PRIMARY KEY NOT NULL", quoted(table));
        for field in &entity.fields {
            sql.push_str(&format!(", {} {}", quoted(&field.name), schema::column_type(field.ty)));
        }
        // Clustered on the id: an object is one B-tree entry, not a row plus an index entry.
        sql.push_str(") WITHOUT ROWID");
        conn.execute_batch(&sql).map_err(StoreError::sqlite("creating a table"))?;
    }
    let columns: Vec<String> = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        .map_err(StoreError::sqlite("reading the schema"))?;
    if !columns.iter().any(|c| c == "id") {
        return Err(StoreError::Schema(format!("table {table} exists without an id column")));
    }
    let mut added = false;
    for field in &entity.fields {
        match tracking::recorded_type(conn, table, &field.name)? {
            Some(recorded) if recorded != field.ty.as_str() => {
                return Err(StoreError::Schema(format!(
                    "{table}.{} was declared {recorded} and is now declared {}; changing a field's type is not supported",
                    field.name, field.ty
                )));
            }
            _ => {}
        }
        if !columns.iter().any(|c| c.eq_ignore_ascii_case(&field.name)) {
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                quoted(table),
                quoted(&field.name),
                schema::column_type(field.ty)
            );
            conn.execute_batch(&sql).map_err(StoreError::sqlite("adding a column"))?;
            added = true;
        }
        tracking::record_type(conn, table, &field.name, field.ty)?;
    }
    if existed && added {
        tracking::set_cursor(conn, table, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sync_proto::FieldType;

    use super::*;

    fn todo() -> Entity {
        Entity::new("Todo").field("text", FieldType::Text).field("done", FieldType::Bool)
    }

    #[test]
    fn a_second_process_waits_for_the_sync_running_on_the_same_database() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        // Two opens of one file stand for two processes: each has its own lock file handle.
        let first = Store::open(&path, [todo()]).unwrap();
        let second = Store::open(&path, [todo()]).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let guard = first.lock_sync().unwrap();
        let waiter = {
            let released = Arc::clone(&released);
            std::thread::spawn(move || {
                let _guard = second.lock_sync().unwrap();
                assert!(released.load(Ordering::SeqCst), "the second sync ran while the first held the lock");
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        released.store(true, Ordering::SeqCst);
        drop(guard);
        waiter.join().unwrap();
    }

    #[test]
    fn only_an_unsynced_transaction_skips_waiting_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("t.db"), [todo()]).unwrap();
        let synchronous = |tx: &Tx<'_>| -> Result<i64, StoreError> {
            Ok(tx.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap())
        };
        // SQLite's codes: 1 NORMAL, 2 FULL.
        assert_eq!(store.transaction_unsynced(&mut Changes::default(), synchronous).unwrap(), 1);
        assert_eq!(store.transaction(synchronous).unwrap(), 2, "the next transaction waits for the disk again");
    }

    #[test]
    fn crud_round_trips_and_tracks_every_write() {
        let store = Store::open_in_memory([todo()]).unwrap();
        let id = store.insert("Todo", json!({"text": "milk"})).unwrap();
        assert_eq!(id.len(), 32);
        let rec = store.get("Todo", &id).unwrap().unwrap();
        assert_eq!(Value::Object(rec.fields.clone()), json!({"text": "milk", "done": null}));
        store.update("Todo", &id, json!({"done": 1})).unwrap();
        assert_eq!(store.get("Todo", &id).unwrap().unwrap().get_bool("done"), Some(true));
        assert_eq!(store.pending_changes("Todo").unwrap(), 1);
        store.remove("Todo", &id).unwrap();
        assert!(store.get("Todo", &id).unwrap().is_none());
        assert_eq!(store.pending_changes("Todo").unwrap(), 1, "the removal is a change to push");
        assert!(matches!(store.remove("Todo", &id), Err(StoreError::NotFound { .. })));
        assert!(matches!(store.update("Todo", &id, json!({})), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn writes_that_do_not_fit_the_schema_change_nothing() {
        let store = Store::open_in_memory([todo()]).unwrap();
        assert!(matches!(store.insert("Todo", json!({"text": 5})), Err(StoreError::InvalidValue { .. })));
        assert!(matches!(store.insert("Todo", json!({"owner": "x"})), Err(StoreError::UnknownField { .. })));
        assert!(matches!(store.insert("Todo", json!([1])), Err(StoreError::NotAnObject { .. })));
        assert!(matches!(store.insert("Nope", json!({})), Err(StoreError::UnknownEntity(_))));
        assert!(matches!(store.insert_with_id("Todo", "", json!({})), Err(StoreError::InvalidId { .. })));
        assert!(store.query(&Query::new("Todo")).unwrap().is_empty());
        assert_eq!(store.pending_changes("Todo").unwrap(), 0);
    }

    #[test]
    fn failed_transaction_leaves_no_write_behind() {
        let store = Store::open_in_memory([todo()]).unwrap();
        let result: Result<(), StoreError> = store.transaction(|tx| {
            tx.insert_with_id("Todo", "a", json!({"text": "a"}))?;
            tx.insert_with_id("Todo", "a", json!({"text": "again"}))
        });
        assert!(matches!(result, Err(StoreError::AlreadyExists { .. })));
        assert!(store.get("Todo", "a").unwrap().is_none());
        assert_eq!(store.pending_changes("Todo").unwrap(), 0);
    }

    #[test]
    fn queries_filter_order_and_limit() {
        let store = Store::open_in_memory([todo()]).unwrap();
        for (id, text, done) in [("1", "b", false), ("2", "a", true), ("3", "c", false), ("4", "a", false)] {
            store.insert_with_id("Todo", id, json!({"text": text, "done": done})).unwrap();
        }
        let ids = |q: Query| store.query(&q).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(Query::new("Todo").order_by("text", Order::Asc)), ["2", "4", "1", "3"]);
        assert_eq!(ids(Query::new("Todo").filter("done", false).order_by("text", Order::Desc).limit(2)), ["3", "1"]);
        assert_eq!(ids(Query::new("Todo").filter("id", "4")), ["4"]);
        assert!(store.query(&Query::new("Todo").order_by("nope", Order::Asc)).is_err());
        assert!(store.query(&Query::new("Todo").filter("id", 4)).is_err());
    }

    #[test]
    fn new_field_adds_a_column_keeps_rows_and_rewinds_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let store = Store::open(&path, [todo()]).unwrap();
        store.insert_with_id("Todo", "a", json!({"text": "kept"})).unwrap();
        store.transaction(|tx| tracking::set_cursor(tx.conn(), "Todo", 42)).unwrap();
        drop(store);

        let store = Store::open(&path, [todo().field("due", FieldType::Date)]).unwrap();
        let rec = store.get("Todo", "a").unwrap().unwrap();
        assert_eq!(Value::Object(rec.fields), json!({"text": "kept", "done": null, "due": null}));
        assert_eq!(store.transaction(|tx| tracking::cursor(tx.conn(), "Todo")).unwrap(), 0);
        drop(store);

        let changed = Store::open(&path, [todo().field("due", FieldType::Text)]);
        assert!(matches!(changed, Err(StoreError::Schema(_))));
    }
}
