//! The three-way merge of one object: its local version, the version the server sent, and the
//! base version both descend from (the one this device last synced). Pure functions, no I/O.
//!
//! Per field: a field changed on one side only takes that side's value; changed on both sides to
//! the same value, it takes that value; changed on both sides to different values, it is a
//! conflict. A removal on one side and a change on the other is a conflict too. A change is a
//! difference from the base, so a value set and set back before a sync is no change.

use serde_json::Value;

use crate::conflict::{ConflictKind, Resolution};
use crate::schema::Fields;

/// One side of an object: live with its fields, or removed.
#[derive(Debug, Clone, PartialEq)]
pub enum Version {
    /// A live object; every declared field is present.
    Live(Fields),
    /// A removed object.
    Removed,
}

impl Version {
    /// The fields of a live version.
    pub fn fields(&self) -> Option<&Fields> {
        match self {
            Self::Live(fields) => Some(fields),
            Self::Removed => None,
        }
    }
}

/// What merging one object gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// No conflict: the object becomes `result`; `dirty` is true when it differs from the remote
    /// version, so it has to be pushed.
    Clean {
        /// The merged object.
        result: Version,
        /// Whether the result has to be pushed.
        dirty: bool,
    },
    /// A conflict for a handler to resolve.
    Conflict(Pending),
}

/// A conflict found by [`merge`], with what [`resolve`] needs to apply a resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// What kind of conflict.
    pub kind: ConflictKind,
    /// The fields changed on both sides to different values ([`ConflictKind::Fields`]), or the
    /// fields the live side changed from the base (removal conflicts).
    pub fields: Vec<String>,
    /// For [`ConflictKind::Fields`]: the merge of every field that does not conflict, with the
    /// local value in each conflicting field.
    pub merged: Fields,
}

/// Merges the local and remote versions of one object against `base`, the version this device
/// last synced (`None` when it never saw the object on the server: every field then counts as
/// changed on a side where it is not `null`). Only `declared` fields are compared.
pub fn merge(declared: &[&str], base: Option<&Version>, local: &Version, remote: &Version) -> Merge {
    let base_fields = base.and_then(Version::fields);
    match (local, remote) {
        (Version::Removed, Version::Removed) => Merge::Clean { result: Version::Removed, dirty: false },
        (Version::Removed, Version::Live(_)) if base == Some(&Version::Removed) => {
            // The removal this device already merged is no local change: the server's re-created
            // object is taken.
            Merge::Clean { result: remote.clone(), dirty: false }
        }
        (Version::Removed, Version::Live(r)) => {
            let changed = changed_fields(declared, base_fields, r);
            if base_fields.is_some() && changed.is_empty() {
                Merge::Clean { result: Version::Removed, dirty: true }
            } else {
                Merge::Conflict(Pending { kind: ConflictKind::LocalRemoved, fields: changed, merged: r.clone() })
            }
        }
        (Version::Live(l), Version::Removed) => {
            if base == Some(&Version::Removed) {
                // The server still has the removal this device already merged: nothing new there.
                Merge::Clean { result: local.clone(), dirty: true }
            } else {
                let changed = changed_fields(declared, base_fields, l);
                if base_fields.is_some() && changed.is_empty() {
                    // Set and set back since the last sync: no local change to keep against the
                    // removal, which a conflict handler preferring the local side would undo.
                    Merge::Clean { result: Version::Removed, dirty: false }
                } else {
                    Merge::Conflict(Pending { kind: ConflictKind::RemoteRemoved, fields: changed, merged: l.clone() })
                }
            }
        }
        (Version::Live(l), Version::Live(r)) => {
            let mut merged = Fields::new();
            let mut conflicts = Vec::new();
            for &name in declared {
                let (lv, rv, bv) = (value(Some(l), name), value(Some(r), name), value(base_fields, name));
                let pick = if lv == rv || rv == bv {
                    lv
                } else if lv == bv {
                    rv
                } else {
                    conflicts.push(name.to_owned());
                    lv
                };
                merged.insert(name.to_owned(), pick.clone());
            }
            if conflicts.is_empty() {
                let dirty = differs(declared, &merged, r);
                Merge::Clean { result: Version::Live(merged), dirty }
            } else {
                Merge::Conflict(Pending { kind: ConflictKind::Fields, fields: conflicts, merged })
            }
        }
    }
}

/// Applies a handler's resolution of `conflict`, found by [`merge`] between `local` and `remote`.
/// `merged_value` of [`Resolution::Merged`] must already be checked against the schema; fields it
/// does not give keep the value the resolution starts from (the automatic merge, or the live
/// side of a removal conflict). Returns the object's new version and whether it must be pushed.
pub fn resolve(
    declared: &[&str],
    conflict: &Pending,
    local: &Version,
    remote: &Version,
    resolution: &Resolution,
) -> (Version, bool) {
    let result = match (conflict.kind, resolution) {
        (ConflictKind::Fields, Resolution::KeepLocal) => Version::Live(conflict.merged.clone()),
        (ConflictKind::Fields, Resolution::TakeRemote) => {
            let mut merged = conflict.merged.clone();
            if let Some(r) = remote.fields() {
                for name in &conflict.fields {
                    merged.insert(name.clone(), value(Some(r), name).clone());
                }
            }
            Version::Live(merged)
        }
        (_, Resolution::KeepLocal) => local.clone(),
        (_, Resolution::TakeRemote) => remote.clone(),
        (_, Resolution::Merged(given)) => {
            let mut merged = conflict.merged.clone();
            for &name in declared {
                if let Some(v) = given.get(name) {
                    merged.insert(name.to_owned(), v.clone());
                }
            }
            Version::Live(merged)
        }
    };
    let dirty = match (&result, remote) {
        (Version::Removed, Version::Removed) => false,
        (Version::Live(a), Version::Live(b)) => differs(declared, a, b),
        _ => true,
    };
    (result, dirty)
}

/// The declared fields whose value in `version` differs from `base` (all non-null ones without a base).
pub fn changed_fields(declared: &[&str], base: Option<&Fields>, version: &Fields) -> Vec<String> {
    declared.iter().filter(|&&name| value(base, name) != value(Some(version), name)).map(|&n| n.to_owned()).collect()
}

/// Whether two versions differ in any declared field.
pub fn differs(declared: &[&str], a: &Fields, b: &Fields) -> bool {
    declared.iter().any(|&name| value(Some(a), name) != value(Some(b), name))
}

fn value<'a>(fields: Option<&'a Fields>, name: &str) -> &'a Value {
    fields.and_then(|f| f.get(name)).unwrap_or(&Value::Null)
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DECLARED: &[&str] = &["text", "done"];

    fn live(v: Value) -> Version {
        Version::Live(fields(v))
    }

    fn fields(v: Value) -> Fields {
        v.as_object().cloned().unwrap_or_default()
    }

    fn base() -> Version {
        live(json!({"text": "a", "done": false}))
    }

    #[test]
    fn disjoint_field_edits_merge_without_conflict() {
        let base = base();
        let local = live(json!({"text": "b", "done": false}));
        let remote = live(json!({"text": "a", "done": true}));
        assert_eq!(
            merge(DECLARED, Some(&base), &local, &remote),
            Merge::Clean { result: live(json!({"text": "b", "done": true})), dirty: true }
        );
    }

    #[test]
    fn same_field_edited_to_different_values_conflicts() {
        let base = base();
        let local = live(json!({"text": "b", "done": true}));
        let remote = live(json!({"text": "c", "done": false}));
        let Merge::Conflict(c) = merge(DECLARED, Some(&base), &local, &remote) else { panic!("no conflict") };
        assert_eq!((c.kind, c.fields.as_slice()), (ConflictKind::Fields, ["text".to_owned()].as_slice()));
        let keep = resolve(DECLARED, &c, &local, &remote, &Resolution::KeepLocal);
        assert_eq!(keep, (live(json!({"text": "b", "done": true})), true));
        let take = resolve(DECLARED, &c, &local, &remote, &Resolution::TakeRemote);
        assert_eq!(take, (live(json!({"text": "c", "done": true})), true), "the local-only edit of done survives");
        let merged = resolve(DECLARED, &c, &local, &remote, &Resolution::Merged(fields(json!({"text": "b+c"}))));
        assert_eq!(merged, (live(json!({"text": "b+c", "done": true})), true));
    }

    #[test]
    fn same_value_on_both_sides_is_no_conflict_and_nothing_to_push() {
        let base = base();
        let both = live(json!({"text": "z", "done": false}));
        assert_eq!(merge(DECLARED, Some(&base), &both, &both), Merge::Clean { result: both.clone(), dirty: false });
    }

    #[test]
    fn update_versus_remove_conflicts_both_ways() {
        let base = base();
        let edited = live(json!({"text": "b", "done": false}));
        let Merge::Conflict(c) = merge(DECLARED, Some(&base), &edited, &Version::Removed) else { panic!() };
        assert_eq!((c.kind, c.fields.clone()), (ConflictKind::RemoteRemoved, vec!["text".to_owned()]));
        assert_eq!(resolve(DECLARED, &c, &edited, &Version::Removed, &Resolution::KeepLocal), (edited.clone(), true));
        assert_eq!(
            resolve(DECLARED, &c, &edited, &Version::Removed, &Resolution::TakeRemote),
            (Version::Removed, false)
        );

        let Merge::Conflict(c) = merge(DECLARED, Some(&base), &Version::Removed, &edited) else { panic!() };
        assert_eq!(c.kind, ConflictKind::LocalRemoved);
        assert_eq!(resolve(DECLARED, &c, &Version::Removed, &edited, &Resolution::KeepLocal), (Version::Removed, true));
        assert_eq!(resolve(DECLARED, &c, &Version::Removed, &edited, &Resolution::TakeRemote), (edited.clone(), false));
    }

    #[test]
    fn local_removal_of_an_unchanged_object_is_pushed_without_conflict() {
        let base = base();
        let remote = live(json!({"text": "a", "done": false}));
        assert_eq!(
            merge(DECLARED, Some(&base), &Version::Removed, &remote),
            Merge::Clean { result: Version::Removed, dirty: true }
        );
        assert_eq!(
            merge(DECLARED, None, &Version::Removed, &Version::Removed),
            Merge::Clean { result: Version::Removed, dirty: false }
        );
    }

    #[test]
    fn without_a_base_only_differing_non_null_values_conflict() {
        let local = live(json!({"text": "mine", "done": null}));
        let remote = live(json!({"text": null, "done": true}));
        assert_eq!(
            merge(DECLARED, None, &local, &remote),
            Merge::Clean { result: live(json!({"text": "mine", "done": true})), dirty: true }
        );
        let other = live(json!({"text": "theirs", "done": null}));
        assert!(matches!(merge(DECLARED, None, &local, &other), Merge::Conflict(_)));
    }

    #[test]
    fn a_remote_removal_against_no_local_change_is_taken_without_conflict() {
        // Found by `without_a_local_change_the_result_is_the_remote_version`: a field set and set
        // back leaves the row dirty, but it is no change, so the removal must not be asked about
        // (a handler preferring the local side would have re-created the object on the server).
        let base = live(json!({"text": null, "done": null}));
        assert_eq!(
            merge(DECLARED, Some(&base), &base.clone(), &Version::Removed),
            Merge::Clean { result: Version::Removed, dirty: false }
        );
        // And the other way round: a removal already merged, against an object re-created on the
        // server, is no local change either.
        let remote = live(json!({"text": "again", "done": null}));
        assert_eq!(
            merge(DECLARED, Some(&Version::Removed), &Version::Removed, &remote),
            Merge::Clean { result: remote.clone(), dirty: false }
        );
    }

    #[test]
    fn remote_removal_already_merged_is_not_a_conflict_again() {
        let local = live(json!({"text": "kept", "done": false}));
        assert_eq!(
            merge(DECLARED, Some(&Version::Removed), &local, &Version::Removed),
            Merge::Clean { result: local.clone(), dirty: true }
        );
        assert!(matches!(merge(DECLARED, None, &local, &Version::Removed), Merge::Conflict(_)));
    }
}
