//! Properties of the three-way merge, from the rules in the module's documentation: a change is a
//! difference from the base; a field changed on one side only takes that side's value; changed
//! on both sides to one value, it takes that value; to different values, it is a conflict; a
//! removal against a change is a conflict, against no change it is not.
//!
//! Failures are not persisted to files: a real one is kept as a named unit test instead, which
//! stays meaningful when a strategy changes (a stored seed silently stops reproducing then).

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

use super::*;

const DECLARED: &[&str] = &["a", "b", "c"];
/// A field the entity does not declare, which a stored row or a server answer may still carry.
const UNDECLARED: &str = "zz";

fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}

/// Few values, so that independent edits often agree.
fn value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![Value::Null, json!(0), json!(1), json!("x"), json!("y"), json!(true)])
}

fn live() -> impl Strategy<Value = Version> {
    (prop::collection::vec(value(), DECLARED.len()), prop::option::of(value())).prop_map(|(values, extra)| {
        let mut fields: Fields = DECLARED.iter().map(|n| (n.to_string(), Value::Null)).collect();
        for (name, v) in DECLARED.iter().zip(values) {
            fields.insert(name.to_string(), v);
        }
        if let Some(v) = extra {
            fields.insert(UNDECLARED.to_owned(), v);
        }
        Version::Live(fields)
    })
}

/// `from` edited on some fields (an edit may set the value it already had), or removed, or, from
/// a removed or unknown object, a live one.
fn edited(from: Option<Version>) -> impl Strategy<Value = Version> {
    let edits = (prop::collection::vec(prop::option::of(value()), DECLARED.len()), prop::option::of(value()));
    prop_oneof![
        1 => Just(Version::Removed),
        1 => live(),
        4 => edits.prop_map(move |(edits, extra)| match &from {
            Some(Version::Live(fields)) => {
                let mut fields = fields.clone();
                for (name, edit) in DECLARED.iter().zip(edits) {
                    if let Some(v) = edit {
                        fields.insert(name.to_string(), v);
                    }
                }
                if let Some(v) = extra {
                    fields.insert(UNDECLARED.to_owned(), v);
                }
                Version::Live(fields)
            }
            Some(Version::Removed) | None => Version::Removed,
        }),
    ]
}

/// A base (mostly live, sometimes removed or unknown) with a local and a remote version
/// descending from it.
fn triple() -> impl Strategy<Value = (Option<Version>, Version, Version)> {
    prop_oneof![6 => live().prop_map(Some), 1 => Just(Some(Version::Removed)), 1 => Just(None)]
        .prop_flat_map(|base| (Just(base.clone()), edited(base.clone()), edited(base)))
}

fn get<'a>(fields: Option<&'a Fields>, name: &str) -> &'a Value {
    fields.and_then(|f| f.get(name)).unwrap_or(&Value::Null)
}

/// The same object as far as the declared fields tell.
fn same(a: &Version, b: &Version) -> bool {
    match (a, b) {
        (Version::Removed, Version::Removed) => true,
        (Version::Live(a), Version::Live(b)) => !differs(DECLARED, a, b),
        _ => false,
    }
}

fn run(base: &Option<Version>, local: &Version, remote: &Version) -> Merge {
    merge(DECLARED, base.as_ref(), local, remote)
}

proptest! {
    #![proptest_config(config())]

    /// No local change (a value set and set back is none): the result is the server's version,
    /// with nothing to push and no conflict to ask about, whatever the server did.
    #[test]
    fn without_a_local_change_the_result_is_the_remote_version(
        (base, _, remote) in triple().prop_filter("a known base", |(b, _, _)| b.is_some()),
    ) {
        let local = base.clone().unwrap();
        match run(&base, &local, &remote) {
            Merge::Clean { result, dirty } => {
                prop_assert!(same(&result, &remote), "result {result:?}");
                prop_assert!(!dirty, "nothing to push");
            }
            Merge::Conflict(pending) => prop_assert!(false, "conflict {pending:?}"),
        }
    }

    /// No remote change: the result is the local version, pushed exactly when it differs from the
    /// server's.
    #[test]
    fn without_a_remote_change_the_result_is_the_local_version(
        (base, local, _) in triple().prop_filter("a known base", |(b, _, _)| b.is_some()),
    ) {
        let remote = base.clone().unwrap();
        match run(&base, &local, &remote) {
            Merge::Clean { result, dirty } => {
                prop_assert!(same(&result, &local), "result {result:?}");
                prop_assert_eq!(dirty, !same(&local, &remote));
            }
            Merge::Conflict(pending) => prop_assert!(false, "conflict {pending:?}"),
        }
    }

    /// Per field of two live sides: one side's change is kept, an agreement is kept, and the
    /// conflicts are exactly the fields changed on both sides to different values, holding the
    /// local value until a handler decides. No change is lost without a conflict naming its
    /// field. Without a live base every field counts as changed from `null`.
    #[test]
    fn every_field_takes_the_changed_side_or_is_reported_as_a_conflict(
        (base, local, remote) in triple(),
    ) {
        let (Version::Live(l), Version::Live(r)) = (&local, &remote) else { return Ok(()) };
        let b = base.as_ref().and_then(Version::fields);
        let (merged, conflicts) = match run(&base, &local, &remote) {
            Merge::Clean { result: Version::Live(m), .. } => (m, Vec::new()),
            Merge::Conflict(Pending { kind: ConflictKind::Fields, fields, merged }) => (merged, fields),
            other => return Err(TestCaseError::fail(format!("two live sides gave {other:?}"))),
        };
        for &name in DECLARED {
            let (lv, rv, bv, mv) = (get(Some(l), name), get(Some(r), name), get(b, name), get(Some(&merged), name));
            let conflicting = lv != bv && rv != bv && lv != rv;
            prop_assert_eq!(conflicts.iter().any(|c| c == name), conflicting, "field {}", name);
            let expected = if rv != bv && lv == bv { rv } else { lv };
            prop_assert_eq!(mv, expected, "field {}", name);
        }
    }

    /// Which side is "local" decides only the value a conflict starts from: swapped, two live
    /// sides give the same conflicting fields, and, without conflict, the same object.
    #[test]
    fn swapping_the_sides_changes_no_agreement((base, local, remote) in triple()) {
        let (Version::Live(_), Version::Live(_)) = (&local, &remote) else { return Ok(()) };
        match (run(&base, &local, &remote), run(&base, &remote, &local)) {
            (Merge::Clean { result: one, .. }, Merge::Clean { result: other, .. }) => prop_assert_eq!(one, other),
            (Merge::Conflict(one), Merge::Conflict(other)) => prop_assert_eq!(one.fields, other.fields),
            (one, other) => prop_assert!(false, "{one:?} but swapped {other:?}"),
        }
    }

    /// A merged object has exactly the declared fields, and a field the entity does not declare
    /// never makes a conflict.
    #[test]
    fn a_merge_holds_and_compares_only_declared_fields((base, local, remote) in triple()) {
        let merged = match run(&base, &local, &remote) {
            Merge::Clean { result: Version::Live(m), .. } if matches!(local, Version::Live(_)) && matches!(remote, Version::Live(_)) => m,
            Merge::Conflict(Pending { kind: ConflictKind::Fields, merged, fields }) => {
                prop_assert!(fields.iter().all(|f| DECLARED.contains(&f.as_str())), "conflicts {:?}", fields);
                merged
            }
            _ => return Ok(()),
        };
        let mut keys: Vec<&str> = merged.keys().map(String::as_str).collect();
        keys.sort_unstable();
        prop_assert_eq!(keys, DECLARED.to_vec());
    }

    /// `dirty` says whether the result differs from what the server holds: a clean merge is pushed
    /// exactly when the server does not already have it.
    #[test]
    fn a_clean_merge_is_pushed_exactly_when_it_differs_from_the_remote((base, local, remote) in triple()) {
        if let Merge::Clean { result, dirty } = run(&base, &local, &remote) {
            prop_assert_eq!(dirty, !same(&result, &remote), "result {:?}", result);
        }
    }

    /// Against a live base, a removal on one side conflicts exactly when the other side changed
    /// something, and the conflict lists what it changed; against no change the removal wins.
    #[test]
    fn a_removal_conflicts_exactly_with_a_change_on_the_other_side(
        base in live(),
        other in live(),
        edit in any::<bool>(),
        local_removed in any::<bool>(),
    ) {
        let live_side = if edit { other } else { base.clone() };
        let changed = changed_fields(DECLARED, base.fields(), live_side.fields().unwrap());
        let (local, remote) =
            if local_removed { (Version::Removed, live_side.clone()) } else { (live_side.clone(), Version::Removed) };
        match run(&Some(base), &local, &remote) {
            Merge::Clean { result, .. } => {
                prop_assert!(changed.is_empty(), "the change to {:?} was lost", changed);
                prop_assert_eq!(result, Version::Removed);
            }
            Merge::Conflict(pending) => {
                prop_assert!(!changed.is_empty(), "a conflict without a change: {:?}", pending);
                let kind = if local_removed { ConflictKind::LocalRemoved } else { ConflictKind::RemoteRemoved };
                prop_assert_eq!(pending.kind, kind);
                prop_assert_eq!(pending.fields, changed);
            }
        }
    }

    /// A handler decides only the conflicting fields: taking the remote side replaces exactly
    /// those, keeping the local side keeps the merge, and either way the local-only edits survive
    /// and `dirty` says whether the server lacks the result.
    #[test]
    fn a_resolution_of_field_conflicts_decides_only_the_conflicting_fields(
        (base, local, remote) in triple(),
        take_remote in any::<bool>(),
    ) {
        let Merge::Conflict(pending) = run(&base, &local, &remote) else { return Ok(()) };
        if pending.kind != ConflictKind::Fields {
            return Ok(());
        }
        let resolution = if take_remote { Resolution::TakeRemote } else { Resolution::KeepLocal };
        let (result, dirty) = resolve(DECLARED, &pending, &local, &remote, &resolution);
        let Version::Live(fields) = &result else { return Err(TestCaseError::fail("a field conflict resolved to a removal")) };
        for &name in DECLARED {
            let conflicting = pending.fields.iter().any(|f| f == name);
            let expected = if conflicting && take_remote {
                get(remote.fields(), name)
            } else {
                get(Some(&pending.merged), name)
            };
            prop_assert_eq!(get(Some(fields), name), expected, "field {}", name);
        }
        prop_assert_eq!(dirty, !same(&result, &remote));
    }
}
