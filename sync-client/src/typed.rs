//! Typed records: an app's own `#[derive(Serialize, Deserialize)]` structs as entities, beside
//! the [`serde_json::Value`] API of [`Store`].
//!
//! A struct implements [`TypedEntity`] with its entity's name and declared fields;
//! [`TypedEntity::entity`] is what [`Store::open`] takes. When the store opens, the struct's
//! fields are checked against the declared ones: a struct field that is not declared, or whose
//! Rust type cannot hold the declared type's values, fails the open with an error naming the
//! field. The check reads the struct's shape through serde (the names and the kind of value each
//! field asks for), so it needs no macro of its own and follows `#[serde(rename)]`.
//!
//! The object's id is not a field of the struct: reads return it beside the value
//! ([`TypedRecord`]), and writes take it as an argument. Declared fields the struct leaves out are
//! kept as they are by [`Typed::update`] and are `null` after [`Typed::insert`].

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::Value;
use sync_proto::FieldType;

use crate::error::StoreError;
use crate::schema::{Entity, FieldDef, Fields};
use crate::store::{Query, Record, Store};

/// A struct stored as the objects of one entity.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sync_client::{FieldType, TypedEntity};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Task {
///     title: String,
///     done: bool,
///     due: Option<i64>,
/// }
///
/// impl TypedEntity for Task {
///     const NAME: &'static str = "Task";
///     const FIELDS: &'static [(&'static str, FieldType)] =
///         &[("title", FieldType::Text), ("done", FieldType::Bool), ("due", FieldType::Date)];
/// }
/// # let _ = Task::entity();
/// ```
pub trait TypedEntity: Serialize + DeserializeOwned {
    /// The entity's name: its table, and its sync path `/<name, first letter lower-case>Changes`
    /// unless [`TypedEntity::PATH`] says otherwise.
    const NAME: &'static str;
    /// The declared fields with their protocol types, as the server and other clients know them.
    const FIELDS: &'static [(&'static str, FieldType)];
    /// The sync path on the server, when it is not the conventional one.
    const PATH: Option<&'static str> = None;

    /// The entity to give [`Store::open`]: the declared fields, and the struct's shape, which the
    /// open checks against them.
    fn entity() -> Entity {
        let mut entity = Entity::new(Self::NAME);
        for (name, ty) in Self::FIELDS {
            entity = entity.field(*name, *ty);
        }
        if let Some(path) = Self::PATH {
            entity = entity.path(path);
        }
        entity.with_shape(shape_of::<Self>())
    }

    /// A query over every object of this entity, to refine with [`Query::filter`] and the rest.
    fn query() -> Query {
        Query::new(Self::NAME)
    }
}

/// One object read through the typed API: its id and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedRecord<T> {
    /// The object's id.
    pub id: String,
    /// Its fields, as the app's struct.
    pub value: T,
}

impl<T: TypedEntity> TypedRecord<T> {
    /// Reads a [`Record`] of `T`'s entity as `T`. A `null` field reads as a missing one, so an
    /// `Option` field is `None` and a `#[serde(default)]` field its default; any other field
    /// that is `null` (unset, or set to `null` by another client) is an error naming it.
    pub fn from_record(record: &Record) -> Result<Self, StoreError> {
        let fields: Fields =
            record.fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let value = serde_json::from_value(Value::Object(fields)).map_err(|e| StoreError::Decode {
            entity: T::NAME.to_owned(),
            id: record.id.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { id: record.id.clone(), value })
    }
}

/// The typed API of one entity of a store; see [`Store::typed`]. Cheap to clone; every call is
/// the [`Store`] call of the same name, with `T` converted to and from its fields.
pub struct Typed<T> {
    store: Store,
    _entity: PhantomData<fn() -> T>,
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), _entity: PhantomData }
    }
}

impl<T> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed").field("entity", &std::any::type_name::<T>()).finish_non_exhaustive()
    }
}

impl Store {
    /// The typed API of `T`'s entity. Fails when the store does not declare the entity, or when
    /// `T`'s fields do not fit the declared ones (the same check as [`Store::open`] makes for an
    /// entity given as [`TypedEntity::entity`]).
    pub fn typed<T: TypedEntity>(&self) -> Result<Typed<T>, StoreError> {
        let def = self.schema().entity(T::NAME)?;
        check_shape(T::NAME, &def.fields, &shape_of::<T>())?;
        Ok(Typed { store: self.clone(), _entity: PhantomData })
    }
}

impl<T: TypedEntity> Typed<T> {
    /// The store these calls go to.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Creates an object from `value` with a fresh id, and returns the id.
    pub fn insert(&self, value: &T) -> Result<String, StoreError> {
        self.store.insert(T::NAME, to_fields::<T>(value)?)
    }

    /// Creates an object from `value` with this id; fails if a live object has it.
    pub fn insert_with_id(&self, id: &str, value: &T) -> Result<(), StoreError> {
        self.store.insert_with_id(T::NAME, id, to_fields::<T>(value)?)
    }

    /// Sets every field `value` serializes (an `Option` that is `None` sets `null`); declared
    /// fields the struct does not have keep their values.
    pub fn update(&self, id: &str, value: &T) -> Result<(), StoreError> {
        self.store.update(T::NAME, id, to_fields::<T>(value)?)
    }

    /// Removes an object; the removal is pushed at the next sync.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.store.remove(T::NAME, id)
    }

    /// The object with this id, if it exists locally.
    pub fn get(&self, id: &str) -> Result<Option<T>, StoreError> {
        match self.store.get(T::NAME, id)? {
            Some(record) => Ok(Some(TypedRecord::<T>::from_record(&record)?.value)),
            None => Ok(None),
        }
    }

    /// The objects a query of this entity selects, in its order.
    pub fn query(&self, query: &Query) -> Result<Vec<TypedRecord<T>>, StoreError> {
        if query.entity() != T::NAME {
            return Err(StoreError::Schema(format!(
                "a query of {} cannot be read as {}",
                query.entity(),
                std::any::type_name::<T>()
            )));
        }
        self.store.query(query)?.iter().map(TypedRecord::from_record).collect()
    }

    /// Every object of this entity, by id.
    pub fn all(&self) -> Result<Vec<TypedRecord<T>>, StoreError> {
        self.query(&T::query())
    }
}

fn to_fields<T: TypedEntity>(value: &T) -> Result<Value, StoreError> {
    match serde_json::to_value(value) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(StoreError::NotAnObject { entity: T::NAME.to_owned() }),
        Err(e) => Err(StoreError::Encode { entity: T::NAME.to_owned(), reason: e.to_string() }),
    }
}

/// The fields of a struct as serde sees them, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape(Result<Vec<FieldShape>, String>);

/// One field of a struct: its serialized name and the kind of value it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldShape {
    name: String,
    kind: Kind,
    optional: bool,
}

/// The kind of value a field's type asks serde for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    Float,
    Text,
    /// An enum: its unit variants are strings, its other variants objects.
    Enum,
    /// Anything else (sequences, maps, nested structs, `serde_json::Value`): only `JSON` holds it.
    Json,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Bool => "a bool",
            Kind::Integer => "an integer",
            Kind::Float => "a float",
            Kind::Text => "a string",
            Kind::Enum => "an enum",
            Kind::Json => "a structured value",
        }
    }

    fn fits(self, ty: FieldType) -> bool {
        match ty {
            FieldType::Json => true,
            FieldType::Text => matches!(self, Kind::Text | Kind::Enum),
            FieldType::Int | FieldType::BigInt | FieldType::Date => self == Kind::Integer,
            FieldType::Real => self == Kind::Float,
            FieldType::Bool => self == Kind::Bool,
        }
    }
}

/// Checks each field of a struct against the declared fields of `entity`.
pub(crate) fn check_shape(entity: &str, declared: &[FieldDef], shape: &Shape) -> Result<(), StoreError> {
    let fields = shape.0.as_ref().map_err(|reason| StoreError::Schema(format!("{entity}: {reason}")))?;
    for field in fields {
        if field.name == "id" {
            return Err(StoreError::Schema(format!(
                "{entity}.id: the id is not a field of the struct (typed reads return it beside the value)"
            )));
        }
        let Some(def) = declared.iter().find(|d| d.name == field.name) else {
            return Err(StoreError::Schema(format!(
                "{entity}.{}: the struct has this field but the entity does not declare it",
                field.name
            )));
        };
        if !field.kind.fits(def.ty) {
            return Err(StoreError::Schema(format!(
                "{entity}.{}: declared {} but the struct's field is {}{}",
                field.name,
                def.ty,
                field.kind.describe(),
                if field.optional { " (in an Option)" } else { "" }
            )));
        }
    }
    Ok(())
}

/// Reads the fields of `T` by deserializing it from a probe that answers every request with a
/// placeholder and notes what each field asked for. A field whose type refuses its placeholder
/// (`NonZeroU32` refuses 0, `Uuid` refuses "") is probed again with the next one of its kind (see
/// [`placeholder`]), the other fields keeping theirs; when every one is refused, the first refusal
/// is the reason.
pub(crate) fn shape_of<T: DeserializeOwned>() -> Shape {
    let mut variants = Vec::new();
    let mut first_refusal = None;
    loop {
        let mut fields = Vec::new();
        match T::deserialize(StructProbe { fields: &mut fields, variants: &variants }) {
            Ok(_) => return Shape(Ok(fields)),
            Err(ProbeError { reason, field }) => {
                let reason = first_refusal.get_or_insert(reason).clone();
                // Only a top-level field's refusal is retried, with its next placeholder.
                let Some(field) = field else { return Shape(Err(reason)) };
                if variants.len() <= field {
                    variants.resize(field + 1, 0);
                }
                variants[field] += 1;
                if variants[field] >= PLACEHOLDERS {
                    return Shape(Err(reason));
                }
            }
        }
    }
}

/// How many placeholders there are of each kind (the last one repeats for kinds with fewer).
const PLACEHOLDERS: usize = 5;

/// The placeholder number `variant` among one kind's `options` (the last one past their end).
fn placeholder<T: Copy>(options: &[T], variant: usize) -> T {
    options[variant.min(options.len() - 1)]
}

/// Integers: zero, then one (for types that refuse zero).
const INTEGERS: [u8; 2] = [0, 1];
/// Floats, likewise.
const FLOATS: [f64; 2] = [0.0, 1.0];
/// Strings: empty, then what a UUID, an RFC 3339 time, a non-empty string and a URL accept.
const STRINGS: [&str; PLACEHOLDERS] =
    ["", "00000000-0000-0000-0000-000000000000", "1970-01-01T00:00:00Z", "a", "http://localhost/"];

/// Why a probe failed, and which of the entity's own fields (by position) refused its
/// placeholder, if one did.
#[derive(Debug)]
struct ProbeError {
    reason: String,
    field: Option<usize>,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        ProbeError { reason: msg.to_string(), field: None }
    }
}

/// The top level: only a struct with named fields is an entity.
struct StructProbe<'a> {
    fields: &'a mut Vec<FieldShape>,
    /// The placeholder variant of each field, by position (0 past the end).
    variants: &'a [usize],
}

impl<'de> de::Deserializer<'de> for StructProbe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom("a typed entity must be a struct with named fields"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        let top = TopLevel { fields: self.fields, variants: self.variants };
        visitor.visit_map(FieldsProbe { names, next: 0, top: Some(top), variant: 0 })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The fields of a struct, in order; records their shapes at the top level, and only fills them
/// with placeholders (of `variant`) in a nested struct.
struct FieldsProbe<'a> {
    names: &'static [&'static str],
    next: usize,
    top: Option<TopLevel<'a>>,
    variant: usize,
}

/// What the probe of the entity's own fields records (see [`StructProbe`]).
struct TopLevel<'a> {
    fields: &'a mut Vec<FieldShape>,
    variants: &'a [usize],
}

impl<'de> de::MapAccess<'de> for FieldsProbe<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ProbeError> {
        let Some(name) = self.names.get(self.next) else { return Ok(None) };
        seed.deserialize((*name).into_deserializer()).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, ProbeError> {
        let (position, name) = (self.next, self.names[self.next]);
        self.next += 1;
        let variant = match &self.top {
            Some(top) => top.variants.get(position).copied().unwrap_or(0),
            None => self.variant,
        };
        let (mut kind, mut optional) = (Kind::Json, false);
        let value = seed.deserialize(ValueProbe { kind: &mut kind, optional: &mut optional, variant });
        let Some(top) = &mut self.top else { return value };
        let value = value.map_err(|e| ProbeError {
            reason: format!("cannot tell the type of field {name}: {e}"),
            field: Some(position),
        })?;
        top.fields.push(FieldShape { name: name.to_owned(), kind, optional });
        Ok(value)
    }
}

/// One value: answers with a placeholder (number `variant`) of the kind asked for, and notes that
/// kind.
struct ValueProbe<'a> {
    kind: &'a mut Kind,
    optional: &'a mut bool,
    variant: usize,
}

impl ValueProbe<'_> {
    fn note(&mut self, kind: Kind) {
        *self.kind = kind;
    }
}

/// A placeholder value of any kind (number `variant`), whose kind is not recorded.
fn unrecorded<'de, S: DeserializeSeed<'de>>(seed: S, variant: usize) -> Result<S::Value, ProbeError> {
    let (mut kind, mut optional) = (Kind::Json, false);
    seed.deserialize(ValueProbe { kind: &mut kind, optional: &mut optional, variant })
}

macro_rules! probe_as {
    ($($method:ident => $kind:expr, |$v:ident| $visit:ident($($value:expr)?);)+) => {
        $(
            fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
                self.note($kind);
                let $v = self.variant;
                visitor.$visit($($value)?)
            }
        )+
    };
}

impl<'de> de::Deserializer<'de> for ValueProbe<'_> {
    type Error = ProbeError;

    probe_as! {
        deserialize_bool => Kind::Bool, |_v| visit_bool(false);
        deserialize_i8 => Kind::Integer, |v| visit_i64(placeholder(&INTEGERS, v).into());
        deserialize_i16 => Kind::Integer, |v| visit_i64(placeholder(&INTEGERS, v).into());
        deserialize_i32 => Kind::Integer, |v| visit_i64(placeholder(&INTEGERS, v).into());
        deserialize_i64 => Kind::Integer, |v| visit_i64(placeholder(&INTEGERS, v).into());
        deserialize_i128 => Kind::Integer, |v| visit_i64(placeholder(&INTEGERS, v).into());
        deserialize_u8 => Kind::Integer, |v| visit_u64(placeholder(&INTEGERS, v).into());
        deserialize_u16 => Kind::Integer, |v| visit_u64(placeholder(&INTEGERS, v).into());
        deserialize_u32 => Kind::Integer, |v| visit_u64(placeholder(&INTEGERS, v).into());
        deserialize_u64 => Kind::Integer, |v| visit_u64(placeholder(&INTEGERS, v).into());
        deserialize_u128 => Kind::Integer, |v| visit_u64(placeholder(&INTEGERS, v).into());
        deserialize_f32 => Kind::Float, |v| visit_f64(placeholder(&FLOATS, v));
        deserialize_f64 => Kind::Float, |v| visit_f64(placeholder(&FLOATS, v));
        deserialize_char => Kind::Text, |_v| visit_char('a');
        deserialize_str => Kind::Text, |v| visit_str(placeholder(&STRINGS, v));
        deserialize_string => Kind::Text, |v| visit_str(placeholder(&STRINGS, v));
        deserialize_bytes => Kind::Json, |_v| visit_bytes(&[]);
        deserialize_byte_buf => Kind::Json, |_v| visit_bytes(&[]);
        deserialize_unit => Kind::Json, |_v| visit_unit();
        deserialize_any => Kind::Json, |_v| visit_unit();
        deserialize_ignored_any => Kind::Json, |_v| visit_unit();
        deserialize_identifier => Kind::Text, |_v| visit_str("");
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.optional = true;
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(mut self, _: &'static str, visitor: V) -> Result<V::Value, ProbeError> {
        self.note(Kind::Json);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ProbeError> {
        // A newtype is stored as what it wraps.
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
        self.note(Kind::Json);
        visitor.visit_seq(SeqProbe { left: 0, variant: self.variant })
    }

    fn deserialize_tuple<V: Visitor<'de>>(mut self, len: usize, visitor: V) -> Result<V::Value, ProbeError> {
        self.note(Kind::Json);
        visitor.visit_seq(SeqProbe { left: len, variant: self.variant })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.note(Kind::Json);
        visitor.visit_seq(SeqProbe { left: len, variant: self.variant })
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
        self.note(Kind::Json);
        visitor.visit_map(FieldsProbe { names: &[], next: 0, top: None, variant: self.variant })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.note(Kind::Json);
        visitor.visit_map(FieldsProbe { names, next: 0, top: None, variant: self.variant })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.note(Kind::Enum);
        let variant = variants.first().ok_or_else(|| de::Error::custom("an enum without variants"))?;
        visitor.visit_enum(EnumProbe { name: variant, placeholders: self.variant })
    }
}

/// A sequence of `left` placeholders (number `variant`).
struct SeqProbe {
    left: usize,
    variant: usize,
}

impl<'de> de::SeqAccess<'de> for SeqProbe {
    type Error = ProbeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, ProbeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        unrecorded(seed, self.variant).map(Some)
    }
}

/// The first variant of an enum (`name`), with placeholder contents (number `placeholders`).
struct EnumProbe {
    name: &'static str,
    placeholders: usize,
}

impl<'de> de::EnumAccess<'de> for EnumProbe {
    type Error = ProbeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), ProbeError> {
        let value = seed.deserialize(IntoDeserializer::<ProbeError>::into_deserializer(self.name))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumProbe {
    type Error = ProbeError;

    fn unit_variant(self) -> Result<(), ProbeError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, ProbeError> {
        unrecorded(seed, self.placeholders)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_seq(SeqProbe { left: len, variant: self.placeholders })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_map(FieldsProbe { names, next: 0, top: None, variant: self.placeholders })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Priority {
        Low,
        High,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Nested {
        a: u8,
        b: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Task {
        title: String,
        #[serde(rename = "isDone")]
        done: bool,
        count: i32,
        weight: f64,
        due: Option<i64>,
        priority: Priority,
        tags: Vec<String>,
        extra: BTreeMap<String, u32>,
        nested: Nested,
        pair: (u8, String),
        any: Value,
        note: Option<String>,
    }

    impl TypedEntity for Task {
        const NAME: &'static str = "Task";
        const FIELDS: &'static [(&'static str, FieldType)] = &[
            ("title", FieldType::Text),
            ("isDone", FieldType::Bool),
            ("count", FieldType::Int),
            ("weight", FieldType::Real),
            ("due", FieldType::Date),
            ("priority", FieldType::Text),
            ("tags", FieldType::Json),
            ("extra", FieldType::Json),
            ("nested", FieldType::Json),
            ("pair", FieldType::Json),
            ("any", FieldType::Json),
            ("note", FieldType::Text),
            ("onlyDeclared", FieldType::Int),
        ];
    }

    fn task() -> Task {
        Task {
            title: "write".into(),
            done: true,
            count: -3,
            weight: 0.1,
            due: Some(1_700_000_000),
            priority: Priority::High,
            tags: vec!["a".into(), "b".into()],
            extra: [("x".to_owned(), 1)].into(),
            nested: Nested { a: 7, b: vec!["c".into()] },
            pair: (2, "two".into()),
            any: json!({"deep": [1, {"x": null}]}),
            note: None,
        }
    }

    #[test]
    fn the_shape_names_each_serialized_field_and_its_kind() {
        let Shape(Ok(fields)) = shape_of::<Task>() else { panic!("Task has a shape") };
        let kinds: Vec<(&str, Kind, bool)> = fields.iter().map(|f| (f.name.as_str(), f.kind, f.optional)).collect();
        assert_eq!(
            kinds,
            [
                ("title", Kind::Text, false),
                ("isDone", Kind::Bool, false),
                ("count", Kind::Integer, false),
                ("weight", Kind::Float, false),
                ("due", Kind::Integer, true),
                ("priority", Kind::Enum, false),
                ("tags", Kind::Json, false),
                ("extra", Kind::Json, false),
                ("nested", Kind::Json, false),
                ("pair", Kind::Json, false),
                ("any", Kind::Json, false),
                ("note", Kind::Text, true),
            ]
        );
        assert!(shape_of::<Vec<u8>>().0.is_err(), "only a struct is an entity");
    }

    /// Types that refuse the first placeholder of their kind.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Picky {
        count: std::num::NonZeroU32,
        project: uuid::Uuid,
        title: String,
        due: Option<std::num::NonZeroI64>,
        weight: Positive,
    }

    /// A float that must be above zero.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize)]
    struct Positive(f64);

    impl<'de> Deserialize<'de> for Positive {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let value = f64::deserialize(deserializer)?;
            if value > 0.0 { Ok(Self(value)) } else { Err(de::Error::custom("not above zero")) }
        }
    }

    impl TypedEntity for Picky {
        const NAME: &'static str = "Task";
        const FIELDS: &'static [(&'static str, FieldType)] = &[
            ("count", FieldType::Int),
            ("project", FieldType::Text),
            ("title", FieldType::Text),
            ("due", FieldType::Date),
            ("weight", FieldType::Real),
        ];
    }

    #[test]
    fn a_field_that_refuses_a_placeholder_is_probed_with_the_next_one() {
        let Shape(Ok(fields)) = shape_of::<Picky>() else { panic!("Picky has a shape: {:?}", shape_of::<Picky>()) };
        let kinds: Vec<(&str, Kind, bool)> = fields.iter().map(|f| (f.name.as_str(), f.kind, f.optional)).collect();
        assert_eq!(
            kinds,
            [
                ("count", Kind::Integer, false),
                ("project", Kind::Text, false),
                ("title", Kind::Text, false),
                ("due", Kind::Integer, true),
                ("weight", Kind::Float, false),
            ]
        );
        let store = Store::open_in_memory([Picky::entity()]).unwrap();
        let picky = store.typed::<Picky>().unwrap();
        let value = Picky {
            count: std::num::NonZeroU32::new(3).unwrap(),
            project: uuid::Uuid::from_u128(0x1234),
            title: "t".into(),
            due: None,
            weight: Positive(0.5),
        };
        let id = picky.insert(&value).unwrap();
        assert_eq!(picky.get(&id).unwrap(), Some(value));
    }

    /// A type that refuses every value.
    #[derive(Debug, Serialize)]
    struct Never;

    impl<'de> Deserialize<'de> for Never {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            Err(de::Error::custom(format!("refuses {text:?}")))
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Refusing {
        title: String,
        never: Never,
    }

    #[test]
    fn a_field_that_refuses_every_placeholder_fails_with_the_first_refusal() {
        assert_eq!(shape_of::<Refusing>().0, Err(r#"cannot tell the type of field never: refuses """#.to_owned()));
    }

    #[test]
    fn typed_records_round_trip_through_the_store() {
        let store = Store::open_in_memory([Task::entity()]).unwrap();
        let tasks = store.typed::<Task>().unwrap();
        let id = tasks.insert(&task()).unwrap();
        assert_eq!(tasks.get(&id).unwrap(), Some(task()));
        assert_eq!(store.get("Task", &id).unwrap().unwrap().get("onlyDeclared"), Some(&Value::Null));
        store.update("Task", &id, json!({"onlyDeclared": 5})).unwrap();
        let changed = Task { note: Some("n".into()), priority: Priority::Low, ..task() };
        tasks.update(&id, &changed).unwrap();
        assert_eq!(tasks.get(&id).unwrap(), Some(changed.clone()));
        assert_eq!(store.get("Task", &id).unwrap().unwrap().get_i64("onlyDeclared"), Some(5), "left as it was");
        let found = tasks.query(&Task::query().filter("title", "write")).unwrap();
        assert_eq!(found, [TypedRecord { id: id.clone(), value: changed }]);
        assert!(tasks.query(&Query::new("Other")).is_err());
        tasks.remove(&id).unwrap();
        assert!(tasks.all().unwrap().is_empty());
    }

    #[test]
    fn a_null_in_a_field_the_struct_requires_is_an_error_naming_it() {
        let store = Store::open_in_memory([Task::entity()]).unwrap();
        store.insert_with_id("Task", "t", json!({"title": "only a title"})).unwrap();
        let err = store.typed::<Task>().unwrap().get("t").unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { id, reason, .. } if id == "t" && reason.contains("isDone")),
            "{err}"
        );
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Undeclared {
        title: String,
        owner: String,
    }

    impl TypedEntity for Undeclared {
        const NAME: &'static str = "Task";
        const FIELDS: &'static [(&'static str, FieldType)] = &[("title", FieldType::Text)];
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Mistyped {
        title: String,
        count: f64,
    }

    impl TypedEntity for Mistyped {
        const NAME: &'static str = "Task";
        const FIELDS: &'static [(&'static str, FieldType)] = &[("title", FieldType::Text), ("count", FieldType::Int)];
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct WithId {
        id: String,
        title: String,
    }

    impl TypedEntity for WithId {
        const NAME: &'static str = "Task";
        const FIELDS: &'static [(&'static str, FieldType)] = &[("title", FieldType::Text)];
    }

    fn schema_error(result: Result<Store, StoreError>) -> String {
        match result {
            Err(StoreError::Schema(message)) => message,
            other => panic!("expected a schema error, got {other:?}"),
        }
    }

    #[test]
    fn opening_refuses_a_struct_that_does_not_fit_its_declared_fields() {
        let message = schema_error(Store::open_in_memory([Undeclared::entity()]));
        assert_eq!(message, "Task.owner: the struct has this field but the entity does not declare it");
        let message = schema_error(Store::open_in_memory([Mistyped::entity()]));
        assert_eq!(message, "Task.count: declared INT but the struct's field is a float");
        let message = schema_error(Store::open_in_memory([WithId::entity()]));
        assert!(message.starts_with("Task.id: the id is not a field"), "{message}");
    }

    #[test]
    fn the_typed_api_checks_a_struct_against_an_entity_declared_by_hand() {
        let store = Store::open_in_memory([Entity::new("Task").field("title", FieldType::Text)]).unwrap();
        assert!(matches!(store.typed::<Mistyped>(), Err(StoreError::Schema(m)) if m.starts_with("Task.count")));
        assert!(matches!(store.typed::<Task>(), Err(StoreError::Schema(m)) if m.starts_with("Task.isDone")));
        let store = Store::open_in_memory([Entity::new("Other")]).unwrap();
        assert!(matches!(store.typed::<Task>(), Err(StoreError::UnknownEntity(_))));
    }
}
