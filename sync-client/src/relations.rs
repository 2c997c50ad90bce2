//! Relations between objects, synced as plain objects the way persistence.js stores them.
//!
//! - A one-to-one reference ([`crate::Entity::reference`]) is a `TEXT` field holding the other
//!   object's id; [`Store::follow`] reads that object.
//! - A many-to-many relation is a join entity ([`crate::Entity::join`]) whose objects are the
//!   links, each with the ids of its two ends. A link's id is [`link_id`] of its ends, so the
//!   same link added on two devices is one object on the server, not two; removing a link
//!   removes that object (a tombstone, like any removal) and adding it again re-creates it under
//!   the same id. Two devices adding and removing links therefore converge by the ordinary
//!   per-object merge, with nothing specific to relations on the server.

use rusqlite::params;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::schema::{End, EntityDef, quoted};
use crate::store::{Record, Store, Tx, read_fields};
use crate::typed::{Typed, TypedEntity, TypedRecord};

/// The id of the link between `left_id` and `right_id` in the join entity `join`: 32 upper-case
/// hex digits (the form of persistence.js ids), the same on every device and in every version of
/// this library, and different for any other join entity or pair of ids (the ends are not
/// interchangeable: they are ids of two entities, in the order the join declares them).
///
/// It is the first 16 bytes of the SHA-256 of `join`, `left_id` and `right_id`, each preceded
/// by its length in bytes as a big-endian 64-bit integer, so another client (a persistence.js
/// app) can compute it too.
pub fn link_id(join: &str, left_id: &str, right_id: &str) -> String {
    let mut hash = Sha256::new();
    // Each part is length-prefixed so that no two different triples hash the same bytes.
    for part in [join, left_id, right_id] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().take(16).map(|b| format!("{b:02X}")).collect()
}

/// The declared join entity `join` and, of its two ends, the one whose field is `field` and the
/// other one.
fn ends<'a>(tx: &'a Tx<'_>, join: &str, field: &str) -> Result<(&'a EntityDef, &'a End, &'a End), StoreError> {
    let def = tx.schema().entity(join)?;
    let Some([left, right]) = &def.join else {
        return Err(StoreError::Schema(format!("{join} is not declared as a join entity")));
    };
    if left.field == field {
        Ok((def, left, right))
    } else if right.field == field {
        Ok((def, right, left))
    } else {
        Err(StoreError::UnknownField { entity: join.into(), field: field.into() })
    }
}

impl Tx<'_> {
    /// See [`Store::link`].
    pub fn link(&self, join: &str, left_id: &str, right_id: &str) -> Result<String, StoreError> {
        let def = self.schema().entity(join)?;
        let Some([left, right]) = &def.join else {
            return Err(StoreError::Schema(format!("{join} is not declared as a join entity")));
        };
        let id = link_id(join, left_id, right_id);
        if self.get(join, &id)?.is_none() {
            let mut fields = Map::new();
            fields.insert(left.field.clone(), Value::from(left_id));
            fields.insert(right.field.clone(), Value::from(right_id));
            self.insert_with_id(join, &id, Value::Object(fields))?;
        }
        Ok(id)
    }

    /// See [`Store::unlink`].
    pub fn unlink(&self, join: &str, left_id: &str, right_id: &str) -> Result<bool, StoreError> {
        let def = self.schema().entity(join)?;
        if def.join.is_none() {
            return Err(StoreError::Schema(format!("{join} is not declared as a join entity")));
        }
        let id = link_id(join, left_id, right_id);
        if self.get(join, &id)?.is_none() {
            return Ok(false);
        }
        self.remove(join, &id)?;
        Ok(true)
    }

    /// See [`Store::related`].
    pub fn related(&self, join: &str, field: &str, id: &str) -> Result<Vec<Record>, StoreError> {
        let (def, known, other) = ends(self, join, field)?;
        let target = self.schema().entity(&other.entity)?;
        // A link whose other end is not (or no longer) here is left out rather than failing:
        // devices pull entities one by one, so a link may arrive before the object it names.
        let sql = format!(
            "SELECT {} FROM {} WHERE \"id\" IN (SELECT {} FROM {} WHERE {} = ?1) ORDER BY \"id\"",
            target.sql.columns,
            quoted(target.name.as_str()),
            quoted(&other.field),
            quoted(def.name.as_str()),
            quoted(&known.field),
        );
        let mut stmt = self.conn().prepare_cached(&sql).map_err(StoreError::sqlite("querying"))?;
        let mut rows = stmt.query(params![id]).map_err(StoreError::sqlite("querying"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::sqlite("querying"))? {
            let id: String = row.get(0).map_err(StoreError::sqlite("querying"))?;
            out.push(Record { id, fields: read_fields(target, row)? });
        }
        Ok(out)
    }

    /// See [`Store::related_ids`].
    pub fn related_ids(&self, join: &str, field: &str, id: &str) -> Result<Vec<String>, StoreError> {
        let (def, known, other) = ends(self, join, field)?;
        let sql = format!(
            "SELECT DISTINCT {other} FROM {} WHERE {} = ?1 AND {other} IS NOT NULL ORDER BY {other}",
            quoted(def.name.as_str()),
            quoted(&known.field),
            other = quoted(&other.field),
        );
        let mut stmt = self.conn().prepare_cached(&sql).map_err(StoreError::sqlite("querying"))?;
        let rows = stmt.query_map(params![id], |r| r.get(0)).map_err(StoreError::sqlite("querying"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite("querying"))
    }

    /// See [`Store::follow`].
    pub fn follow(&self, entity: &str, id: &str, field: &str) -> Result<Option<Record>, StoreError> {
        let def = self.schema().entity(entity)?;
        let Some((_, target)) = def.references.iter().find(|(f, _)| f == field) else {
            return Err(StoreError::Schema(format!("{entity}.{field} is not declared as a reference")));
        };
        let Some(record) = self.get(entity, id)? else { return Ok(None) };
        match record.get_str(field) {
            Some(target_id) => self.get(target, target_id),
            None => Ok(None),
        }
    }
}

impl Store {
    /// Links `left_id` and `right_id` in the join entity `join` (ids in the order the join
    /// declares its ends) and returns the link's id, [`link_id`] of the two. Adding a link that
    /// exists changes nothing; adding one that was removed re-creates it. The ends need not
    /// exist locally (one may not be pulled yet). Tracked and synced as any insert.
    pub fn link(&self, join: &str, left_id: &str, right_id: &str) -> Result<String, StoreError> {
        self.transaction(|tx| tx.link(join, left_id, right_id))
    }

    /// Removes the link between `left_id` and `right_id`, if there is one, and says whether there
    /// was. The removal is pushed at the next sync as any removal (a tombstone on the server).
    pub fn unlink(&self, join: &str, left_id: &str, right_id: &str) -> Result<bool, StoreError> {
        self.transaction(|tx| tx.unlink(join, left_id, right_id))
    }

    /// The objects at the other end of the links of `join` whose `field` is `id`, by id: the
    /// tags of a task with `related("TaskTag", "task", task)`, the tasks of a tag with
    /// `related("TaskTag", "tag", tag)`. Only objects present locally are listed.
    pub fn related(&self, join: &str, field: &str, id: &str) -> Result<Vec<Record>, StoreError> {
        self.transaction(|tx| tx.related(join, field, id))
    }

    /// The ids at the other end of the links of `join` whose `field` is `id`, sorted, whether or
    /// not those objects are present locally.
    pub fn related_ids(&self, join: &str, field: &str, id: &str) -> Result<Vec<String>, StoreError> {
        self.transaction(|tx| tx.related_ids(join, field, id))
    }

    /// The object the reference `field` of object `id` of `entity` names: `None` when the object
    /// or the reference is missing, or the named object is not here (never pulled, or removed).
    /// Fails when `field` is not declared with [`crate::Entity::reference`].
    pub fn follow(&self, entity: &str, id: &str, field: &str) -> Result<Option<Record>, StoreError> {
        self.transaction(|tx| tx.follow(entity, id, field))
    }
}

impl<T: TypedEntity> Typed<T> {
    /// [`Store::follow`] read as `U`, the entity the reference names: `None` when the object,
    /// the reference or the named object is missing. Fails when `U` is not that entity.
    pub fn follow<U: TypedEntity>(&self, id: &str, field: &str) -> Result<Option<TypedRecord<U>>, StoreError> {
        let def = self.store().schema().entity(T::NAME)?;
        if !def.references.iter().any(|(f, target)| f == field && target == U::NAME) {
            return Err(StoreError::Schema(format!("{}.{field} is not a reference to {}", T::NAME, U::NAME)));
        }
        self.store().follow(T::NAME, id, field)?.as_ref().map(TypedRecord::from_record).transpose()
    }

    /// [`Store::related`] read as `T`, the entity at the other end: the tags of a task with
    /// `store.typed::<Tag>()?.related("TaskTag", "task", task)`. Fails when `T` is not the
    /// entity at the other end of `field`.
    pub fn related(&self, join: &str, field: &str, id: &str) -> Result<Vec<TypedRecord<T>>, StoreError> {
        let records = self.store().transaction(|tx| {
            let (_, _, other) = ends(tx, join, field)?;
            if other.entity != T::NAME {
                return Err(StoreError::Schema(format!("the other end of {join}.{field} is {}", other.entity)));
            }
            tx.related(join, field, id)
        })?;
        records.iter().map(TypedRecord::from_record).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use sync_proto::FieldType;

    use super::*;
    use crate::Entity;

    fn store() -> Store {
        Store::open_in_memory([
            Entity::new("Project").field("name", FieldType::Text),
            Entity::new("Task").field("title", FieldType::Text).reference("project", "Project"),
            Entity::new("Tag").field("name", FieldType::Text),
            Entity::join("TaskTag", "task", "Task", "tag", "Tag"),
        ])
        .unwrap()
    }

    #[test]
    fn link_ids_are_fixed_and_depend_on_every_part_in_order() {
        let id = link_id("TaskTag", "A", "x");
        // Pinned: devices running different versions, or other clients computing it as the
        // documentation says, must derive the same id.
        assert_eq!(id, "7C13403010970B768923D588AB6D441F");
        assert_ne!(id, link_id("TaskTag", "x", "A"));
        assert_ne!(id, link_id("TaskLabel", "A", "x"));
        assert_ne!(id, link_id("TaskTag", "A", "y"));
        // Without the length prefixes these two would hash the same bytes.
        assert_ne!(link_id("TaskTag", "ab", "c"), link_id("TaskTag", "a", "bc"));
    }

    #[test]
    fn links_are_idempotent_removable_and_re_addable() {
        let s = store();
        s.insert_with_id("Task", "A", json!({"title": "a"})).unwrap();
        for tag in ["x", "y"] {
            s.insert_with_id("Tag", tag, json!({"name": tag})).unwrap();
        }
        let id = s.link("TaskTag", "A", "x").unwrap();
        assert_eq!(id, link_id("TaskTag", "A", "x"));
        assert_eq!(s.link("TaskTag", "A", "x").unwrap(), id, "adding an existing link changes nothing");
        assert_eq!(s.pending_changes("TaskTag").unwrap(), 1);
        s.link("TaskTag", "A", "y").unwrap();
        let names = |s: &Store| -> Vec<String> {
            s.related("TaskTag", "task", "A").unwrap().iter().map(|r| r.get_str("name").unwrap().to_owned()).collect()
        };
        assert_eq!(names(&s), ["x", "y"]);
        assert_eq!(s.related("TaskTag", "tag", "x").unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["A"]);

        assert!(s.unlink("TaskTag", "A", "x").unwrap());
        assert!(!s.unlink("TaskTag", "A", "x").unwrap(), "a removed link is not removed twice");
        assert_eq!(names(&s), ["y"]);
        assert_eq!(s.link("TaskTag", "A", "x").unwrap(), id, "re-added under the same id");
        assert_eq!(names(&s), ["x", "y"]);

        // A tag not here (not pulled yet, or removed) is linked but not listed.
        s.link("TaskTag", "A", "z").unwrap();
        s.remove("Tag", "y").unwrap();
        assert_eq!(names(&s), ["x"]);
        assert_eq!(s.related_ids("TaskTag", "task", "A").unwrap(), ["x", "y", "z"]);
    }

    #[test]
    fn relation_helpers_refuse_what_was_not_declared() {
        let s = store();
        assert!(s.link("Task", "A", "x").is_err(), "Task is no join entity");
        assert!(s.related("TaskTag", "owner", "A").is_err());
        assert!(s.follow("Task", "A", "title").is_err(), "title is no reference");
        let dangling = Store::open_in_memory([Entity::new("Task").reference("project", "Project")]);
        assert!(matches!(dangling, Err(StoreError::Schema(m)) if m.contains("Project")));
        let half = Store::open_in_memory([Entity::new("Task"), Entity::join("TaskTag", "task", "Task", "tag", "Tag")]);
        assert!(half.is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Project {
        name: String,
    }

    impl TypedEntity for Project {
        const NAME: &'static str = "Project";
        const FIELDS: &'static [(&'static str, FieldType)] = &[("name", FieldType::Text)];
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Task {
        title: String,
        project: Option<String>,
    }

    impl TypedEntity for Task {
        const NAME: &'static str = "Task";
        const FIELDS: &'static [(&'static str, FieldType)] =
            &[("title", FieldType::Text), ("project", FieldType::Text)];
    }

    #[test]
    fn following_a_reference_gives_the_object_or_none() {
        let s = store();
        let tasks = s.typed::<Task>().unwrap();
        s.insert_with_id("Project", "P", json!({"name": "home"})).unwrap();
        tasks.insert_with_id("A", &Task { title: "a".into(), project: Some("P".into()) }).unwrap();
        tasks.insert_with_id("B", &Task { title: "b".into(), project: None }).unwrap();
        let project = tasks.follow::<Project>("A", "project").unwrap().unwrap();
        assert_eq!((project.id.as_str(), project.value), ("P", Project { name: "home".into() }));
        assert!(tasks.follow::<Project>("B", "project").unwrap().is_none(), "no reference");
        assert!(tasks.follow::<Project>("missing", "project").unwrap().is_none(), "no object");
        s.remove("Project", "P").unwrap();
        assert!(s.follow("Task", "A", "project").unwrap().is_none(), "the named object was removed");
        assert!(tasks.follow::<Task>("A", "project").is_err(), "the reference names Project, not Task");
    }
}
