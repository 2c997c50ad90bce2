//! The declared entities: their names, sync paths and typed fields; the table each one is stored
//! in; and the conversion of field values between JSON (the API and the wire) and SQLite.
//!
//! Each entity is a table named after it (`Todo`), with a `TEXT` primary key `id` and one typed
//! column per field, so the file stays readable by other SQLite tools. Opening a database with a
//! field that its table lacks adds the column (existing rows get `NULL`) and pulls the entity
//! again from the start, so the new field is filled from the server. Changing the type of an
//! existing field is refused: values already stored would be reinterpreted silently.

use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Number, Value};
use sync_proto::{EntityName, FieldType};

use crate::error::StoreError;
use crate::typed::{Shape, check_shape};

/// The fields of one object, by name. Every declared field is present; `null` is a value.
pub type Fields = Map<String, Value>;

/// The longest object id the client accepts, in bytes (the server's default limit).
pub const MAX_ID_BYTES: usize = 256;

/// A number above this is a `DATE` in milliseconds rather than seconds (PROTOCOL.md).
const DATE_MILLIS_ABOVE: i64 = 1_000_000_000_000;

/// An entity to sync: its name, its path on the server and its typed fields.
///
/// Built with [`Entity::new`] and [`Entity::field`]; checked when the store opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    name: String,
    path: Option<String>,
    fields: Vec<(String, FieldType)>,
    /// The app's struct for this entity, checked against the fields when the schema is built.
    shape: Option<Shape>,
    /// Field → the entity whose ids it holds.
    references: Vec<(String, String)>,
    /// The two ends, when this entity is the join entity of a many-to-many relation.
    join: Option<[End; 2]>,
}

/// One end of a many-to-many relation: the join entity's field that holds an id, and the entity
/// that id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The field of the join entity, a `TEXT` field holding an id.
    pub field: String,
    /// The entity the id belongs to.
    pub entity: String,
}

impl Entity {
    /// An entity named `name` (`Todo`), synced through `/<name with a lower-case first letter>Changes`
    /// (`/todoChanges`) unless [`Entity::path`] says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), path: None, fields: Vec::new(), shape: None, references: Vec::new(), join: None }
    }

    /// Declares a one-to-one reference: a `TEXT` field holding the id of an object of `target`,
    /// as persistence.js sends a `hasOne` relation. It syncs as the id string it is; the store
    /// opens only if `target` is declared too, and [`crate::Store::follow`] reads the object.
    pub fn reference(mut self, field: impl Into<String>, target: impl Into<String>) -> Self {
        let field = field.into();
        self.fields.push((field.clone(), FieldType::Text));
        self.references.push((field, target.into()));
        self
    }

    /// The join entity of a many-to-many relation between `left_entity` and `right_entity`: an
    /// entity like any other, named `name`, whose objects are the links, with two `TEXT` fields
    /// holding the ids of the two ends. Each link's id is derived from its two ends
    /// ([`crate::relations::link_id`]), so two devices adding the same link make the same object;
    /// a removed link is a removed object (a tombstone), and adding it again re-creates it.
    ///
    /// ```
    /// # use sync_client::{Entity, FieldType, Store};
    /// let store = Store::open_in_memory([
    ///     Entity::new("Task").field("title", FieldType::Text),
    ///     Entity::new("Tag").field("name", FieldType::Text),
    ///     Entity::join("TaskTag", "task", "Task", "tag", "Tag"),
    /// ])?;
    /// store.link("TaskTag", "t1", "urgent")?;
    /// assert_eq!(store.related_ids("TaskTag", "task", "t1")?, ["urgent"]);
    /// # Ok::<(), sync_client::StoreError>(())
    /// ```
    pub fn join(
        name: impl Into<String>,
        left_field: impl Into<String>,
        left_entity: impl Into<String>,
        right_field: impl Into<String>,
        right_entity: impl Into<String>,
    ) -> Self {
        let left = End { field: left_field.into(), entity: left_entity.into() };
        let right = End { field: right_field.into(), entity: right_entity.into() };
        let mut entity =
            Self::new(name).field(left.field.clone(), FieldType::Text).field(right.field.clone(), FieldType::Text);
        entity.join = Some([left, right]);
        entity
    }

    /// Declares a field. Names are letters, digits and `_`, not starting with a digit or `_`
    /// (the names `id`, `_lastChange` and `_removed` belong to the protocol).
    pub fn field(mut self, name: impl Into<String>, ty: FieldType) -> Self {
        self.fields.push((name.into(), ty));
        self
    }

    /// Syncs through this path on the server instead of the conventional one.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Has the schema check the fields of the app's struct against the declared ones.
    pub(crate) fn with_shape(mut self, shape: Shape) -> Self {
        self.shape = Some(shape);
        self
    }
}

/// A checked entity, as the store and the sync engine use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityDef {
    /// The entity's name, also the name of its table.
    pub name: EntityName,
    /// Its path on the server, starting with `/`.
    pub path: String,
    /// Its fields, in declaration order.
    pub fields: Vec<FieldDef>,
    /// Its one-to-one references: field → the entity whose ids it holds.
    pub references: Vec<(String, String)>,
    /// Its two ends, when it is the join entity of a many-to-many relation.
    pub join: Option<[End; 2]>,
    /// The statements that read and write its table, written once.
    pub(crate) sql: TableSql,
}

/// The SQL of the statements on an entity's table that every object read or write runs, built
/// once per schema rather than once per object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableSql {
    /// `"id"` then every field's column, quoted: what a read selects.
    pub(crate) columns: String,
    /// The row with `id = ?1`.
    pub(crate) select: String,
    /// Writes every column (`?1` the id, then the fields in order), creating the row if needed;
    /// a row that already holds these values is left alone, so the count of changed rows says
    /// whether anything changed.
    pub(crate) upsert: String,
    /// Creates the row from every column, or does nothing when one with that id exists.
    pub(crate) insert: String,
    /// Deletes the row with `id = ?1`.
    pub(crate) delete: String,
}

impl TableSql {
    fn new(table: &str, fields: &[FieldDef]) -> Self {
        let table = quoted(table);
        let names: Vec<String> = fields.iter().map(|f| quoted(&f.name)).collect();
        let columns = std::iter::once("\"id\"".to_owned()).chain(names.iter().cloned()).collect::<Vec<_>>().join(", ");
        let params = (1..=names.len() + 1).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let on_conflict = if names.is_empty() {
            "NOTHING".to_owned()
        } else {
            let sets: Vec<String> = names.iter().map(|n| format!("{n} = excluded.{n}")).collect();
            let differs: Vec<String> = names.iter().map(|n| format!("{n} IS NOT excluded.{n}")).collect();
            format!("UPDATE SET {} WHERE {}", sets.join(", "), differs.join(" OR "))
        };
        Self {
            select: format!("SELECT {columns} FROM {table} WHERE \"id\" = ?1"),
            upsert: format!("INSERT INTO {table} ({columns}) VALUES ({params}) ON CONFLICT (\"id\") DO {on_conflict}"),
            insert: format!("INSERT INTO {table} ({columns}) VALUES ({params}) ON CONFLICT (\"id\") DO NOTHING"),
            delete: format!("DELETE FROM {table} WHERE \"id\" = ?1"),
            columns,
        }
    }
}

/// One checked field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    /// The field's name, also its column's name.
    pub name: String,
    /// Its declared type.
    pub ty: FieldType,
}

impl EntityDef {
    /// The declared field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks and normalizes a partial set of field values given by the app or a handler: every
    /// name must be declared and every value fit its type. Unlisted fields are not added.
    pub fn check_partial(&self, values: &Fields) -> Result<Fields, StoreError> {
        let mut out = Fields::new();
        for (name, value) in values {
            let def = self
                .field(name)
                .ok_or_else(|| StoreError::UnknownField { entity: self.name.to_string(), field: name.clone() })?;
            let normalized = normalize(def.ty, value).map_err(|reason| StoreError::InvalidValue {
                entity: self.name.to_string(),
                field: name.clone(),
                reason,
            })?;
            out.insert(name.clone(), normalized);
        }
        Ok(out)
    }

    /// Reads the declared fields of an object pulled from the server, normalized. Fields it lacks
    /// are `null`; fields it has but this schema does not declare are left out. A value that does
    /// not fit its declared type is never stored as something else: the answer is then why, field
    /// by field, and the object is set aside (see [`crate::Store::set_aside`]).
    pub fn read_remote(&self, values: &Fields) -> Result<Fields, String> {
        let mut out = Fields::new();
        let mut misfits = Vec::new();
        for def in &self.fields {
            let value = match values.get(&def.name) {
                None => Value::Null,
                Some(v) => normalize(def.ty, v).unwrap_or_else(|reason| {
                    misfits.push(format!("field {:?}: {reason}", def.name));
                    Value::Null
                }),
            };
            out.insert(def.name.clone(), value);
        }
        if misfits.is_empty() { Ok(out) } else { Err(misfits.join("; ")) }
    }

    /// `values` with every declared field present (`null` where missing) and nothing else.
    pub fn complete(&self, values: &Fields) -> Fields {
        self.fields
            .iter()
            .map(|def| (def.name.clone(), values.get(&def.name).cloned().unwrap_or(Value::Null)))
            .collect()
    }

    /// The names of the declared fields.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }
}

/// The entities of one database, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    entities: Vec<EntityDef>,
}

impl Schema {
    /// Checks the entities: valid and distinct entity names, paths and field names, and no
    /// reserved field names.
    pub fn new(entities: impl IntoIterator<Item = Entity>) -> Result<Self, StoreError> {
        let mut out: Vec<EntityDef> = Vec::new();
        for entity in entities {
            let name = EntityName::new(entity.name.clone()).map_err(|e| StoreError::Schema(e.to_string()))?;
            if out.iter().any(|e| e.name.as_str().eq_ignore_ascii_case(name.as_str())) {
                return Err(StoreError::Schema(format!("entity {name} is declared twice")));
            }
            let path = entity.path.unwrap_or_else(|| name.default_path());
            check_path(&path)?;
            if out.iter().any(|e| e.path == path) {
                return Err(StoreError::Schema(format!("path {path} is used by two entities")));
            }
            let mut fields: Vec<FieldDef> = Vec::new();
            for (field, ty) in entity.fields {
                check_field_name(&name, &field)?;
                if fields.iter().any(|f| f.name.eq_ignore_ascii_case(&field)) {
                    return Err(StoreError::Schema(format!("field {name}.{field} is declared twice")));
                }
                fields.push(FieldDef { name: field, ty });
            }
            if let Some(shape) = &entity.shape {
                check_shape(name.as_str(), &fields, shape)?;
            }
            let sql = TableSql::new(name.as_str(), &fields);
            out.push(EntityDef { name, path, fields, references: entity.references, join: entity.join, sql });
        }
        // Checked once every entity is known, so a relation may name an entity declared after it.
        for def in &out {
            let ends = def.join.iter().flatten().map(|end| (&end.field, &end.entity));
            for (field, target) in def.references.iter().map(|(f, t)| (f, t)).chain(ends) {
                if !out.iter().any(|e| e.name.as_str() == target) {
                    return Err(StoreError::Schema(format!(
                        "{}.{field} refers to {target}, which is not declared",
                        def.name
                    )));
                }
            }
        }
        Ok(Self { entities: out })
    }

    /// The entity called `name`.
    pub fn entity(&self, name: &str) -> Result<&EntityDef, StoreError> {
        self.entities.iter().find(|e| e.name.as_str() == name).ok_or_else(|| StoreError::UnknownEntity(name.into()))
    }

    /// Every entity, in declaration order.
    pub fn entities(&self) -> &[EntityDef] {
        &self.entities
    }
}

fn check_path(path: &str) -> Result<(), StoreError> {
    let valid = path.starts_with('/')
        && path.len() > 1
        && path.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'));
    if valid { Ok(()) } else { Err(StoreError::Schema(format!("invalid sync path {path:?}"))) }
}

fn check_field_name(entity: &EntityName, field: &str) -> Result<(), StoreError> {
    let mut chars = field.chars();
    let valid = field.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::Schema(format!(
            "invalid field name {entity}.{field:?}: expected a letter then letters, digits or '_'"
        )));
    }
    if field.eq_ignore_ascii_case("id") {
        return Err(StoreError::Schema(format!("{entity}.id is the object id and cannot be declared as a field")));
    }
    Ok(())
}

/// Quotes a checked identifier (entity or field name) for SQL.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// The SQLite column type a field is stored in.
pub(crate) fn column_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text | FieldType::Json => "TEXT",
        FieldType::Int | FieldType::BigInt | FieldType::Bool | FieldType::Date => "INTEGER",
        FieldType::Real => "REAL",
    }
}

/// The one JSON form of a value of type `ty`, or why it does not fit.
///
/// Accepts what the wire carries: `BOOL` as `true`/`false` or `1`/`0`; `DATE` as whole seconds,
/// or milliseconds when above 10^12 (read back as seconds); `REAL` from any number; `INT` and
/// `BIGINT` as 64-bit integers (a number with a zero fraction is read as the integer). `null`
/// fits every type.
pub fn normalize(ty: FieldType, value: &Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let got = || format!("expected {ty}, got {}", describe(value));
    match ty {
        FieldType::Text => value.as_str().map(|_| value.clone()).ok_or_else(got),
        FieldType::Json => Ok(value.clone()),
        FieldType::Int | FieldType::BigInt => integer(value).map(Value::from).ok_or_else(got),
        FieldType::Real => value.as_f64().and_then(Number::from_f64).map(Value::Number).ok_or_else(got),
        FieldType::Bool => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
            _ => Err(got()),
        },
        FieldType::Date => {
            let n = integer(value).ok_or_else(got)?;
            Ok(Value::from(if n.abs() > DATE_MILLIS_ABOVE { n / 1000 } else { n }))
        }
    }
}

fn integer(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // Only an exact integer within the range of i64 is read; the bounds are exact powers of two.
    (f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)).then_some(f as i64)
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The SQLite value a normalized value is stored as.
pub(crate) fn to_sql(ty: FieldType, value: &Value) -> SqlValue {
    match (ty, value) {
        (_, Value::Null) => SqlValue::Null,
        (FieldType::Json, v) => SqlValue::Text(v.to_string()),
        (_, Value::String(s)) => SqlValue::Text(s.clone()),
        (_, Value::Bool(b)) => SqlValue::Integer(i64::from(*b)),
        (FieldType::Real, Value::Number(n)) => n.as_f64().map_or(SqlValue::Null, SqlValue::Real),
        (_, Value::Number(n)) => n.as_i64().map_or(SqlValue::Null, SqlValue::Integer),
        // Arrays and objects are only valid in JSON fields, handled above.
        (_, v) => SqlValue::Text(v.to_string()),
    }
}

/// The normalized value of a stored column, or why it cannot be read as `ty`.
pub(crate) fn from_sql(ty: FieldType, value: ValueRef<'_>) -> Result<Value, String> {
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| e.to_string());
    Ok(match (ty, value) {
        (_, ValueRef::Null) => Value::Null,
        (FieldType::Json, ValueRef::Text(t)) => {
            serde_json::from_str(&text(t)?).map_err(|e| format!("a JSON field holds invalid JSON: {e}"))?
        }
        (FieldType::Text, ValueRef::Text(t)) => Value::String(text(t)?),
        (FieldType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (FieldType::Int | FieldType::BigInt | FieldType::Date, ValueRef::Integer(i)) => Value::from(i),
        (FieldType::Real, ValueRef::Real(f)) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        (FieldType::Real, ValueRef::Integer(i)) => Number::from_f64(i as f64).map_or(Value::Null, Value::Number),
        (ty, other) => return Err(format!("a {ty} column holds a {:?} value", other.data_type())),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wire_variants_normalize_to_one_form() {
        assert_eq!(normalize(FieldType::Bool, &json!(1)), Ok(json!(true)));
        assert_eq!(normalize(FieldType::Bool, &json!(0)), Ok(json!(false)));
        assert!(normalize(FieldType::Bool, &json!(2)).is_err());
        assert_eq!(normalize(FieldType::Date, &json!(1_700_000_000_123_i64)), Ok(json!(1_700_000_000)));
        assert_eq!(normalize(FieldType::Date, &json!(1_700_000_000)), Ok(json!(1_700_000_000)));
        assert_eq!(normalize(FieldType::Real, &json!(3)), Ok(json!(3.0)));
        assert_eq!(normalize(FieldType::Int, &json!(3.0)), Ok(json!(3)));
        assert!(normalize(FieldType::Int, &json!(3.5)).is_err());
        assert!(normalize(FieldType::Text, &json!(3)).is_err());
        assert_eq!(normalize(FieldType::Json, &json!({"a": [1]})), Ok(json!({"a": [1]})));
        for ty in [FieldType::Text, FieldType::Int, FieldType::Bool, FieldType::Json] {
            assert_eq!(normalize(ty, &Value::Null), Ok(Value::Null));
        }
    }

    #[test]
    fn stored_values_read_back_unchanged() {
        let cases = [
            (FieldType::Text, json!("a\u{0}b")),
            (FieldType::Int, json!(-7)),
            (FieldType::BigInt, json!(i64::MAX)),
            (FieldType::Real, json!(2.5)),
            (FieldType::Bool, json!(true)),
            (FieldType::Date, json!(1_700_000_000)),
            (FieldType::Json, json!({"x": [1, "y", null]})),
            (FieldType::Text, Value::Null),
        ];
        for (ty, value) in cases {
            let stored = to_sql(ty, &value);
            let back = from_sql(ty, ValueRef::from(&stored)).unwrap();
            assert_eq!(back, value, "{ty}");
        }
    }

    #[test]
    fn schema_refuses_reserved_duplicate_and_invalid_names() {
        let ok = Schema::new([Entity::new("Todo").field("text", FieldType::Text)]).unwrap();
        assert_eq!(ok.entity("Todo").unwrap().path, "/todoChanges");
        assert!(ok.entity("Nope").is_err());
        let bad = [
            Entity::new("2do"),
            Entity::new("Todo").field("id", FieldType::Text),
            Entity::new("Todo").field("_removed", FieldType::Bool),
            Entity::new("Todo").field("a b", FieldType::Text),
            Entity::new("Todo").field("x", FieldType::Text).field("x", FieldType::Int),
            Entity::new("Todo").path("todoChanges"),
            Entity::new("Todo").path("/todo?x=1"),
            Entity::new("_sync_rows"),
        ];
        for entity in bad {
            assert!(Schema::new([entity.clone()]).is_err(), "{entity:?} accepted");
        }
        assert!(Schema::new([Entity::new("Todo"), Entity::new("todo")]).is_err());
        assert!(Schema::new([Entity::new("A").path("/x"), Entity::new("B").path("/x")]).is_err());
    }

    #[test]
    fn remote_objects_keep_declared_fields_and_refuse_misfits() {
        let schema =
            Schema::new([Entity::new("Todo").field("text", FieldType::Text).field("done", FieldType::Bool)]).unwrap();
        let def = schema.entity("Todo").unwrap();
        let remote = json!({"text": 5, "done": 1, "owner": "x"});
        let refused = def.read_remote(remote.as_object().unwrap()).unwrap_err();
        assert_eq!(refused, "field \"text\": expected TEXT, got an integer");
        let fits = def.read_remote(json!({"text": "a", "done": 1, "owner": "x"}).as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(fits), json!({"text": "a", "done": true}));
    }
}
