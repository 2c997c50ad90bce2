//! Conflict handlers: what decides an object changed on both sides in ways the three-way merge
//! cannot reconcile (see [`crate::merge`]).
//!
//! A handler sees each [`Conflict`] (entity, id, the local, remote and base versions, and the
//! conflicting fields) and returns a [`Resolution`]. [`PreferLocal`] and [`PreferRemote`] are the
//! two fixed policies; any `Fn(&Conflict) -> Resolution` closure, or a type implementing
//! [`ConflictHandler`], can decide case by case.
//!
//! Fields that do not conflict are merged before the handler is asked, whatever it answers: a
//! resolution decides the conflicting fields (or, for an update against a removal, whether the
//! object lives). Handlers run during a sync while the local database is locked, so they must
//! not call the [`crate::Store`]; everything they need is in the [`Conflict`].

use crate::schema::Fields;

/// What kind of conflict an object is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The same fields were changed on both sides to different values.
    Fields,
    /// The object was removed locally and changed on the server.
    LocalRemoved,
    /// The object was changed locally and removed on the server.
    RemoteRemoved,
}

/// One object in conflict, as a handler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The entity (`Todo`).
    pub entity: String,
    /// The object's id.
    pub id: String,
    /// What kind of conflict.
    pub kind: ConflictKind,
    /// The local version; `None` when it was removed locally.
    pub local: Option<Fields>,
    /// The server's version; `None` when it was removed on the server.
    pub remote: Option<Fields>,
    /// The version this device last synced; `None` when it never saw the object live on the
    /// server.
    pub base: Option<Fields>,
    /// For [`ConflictKind::Fields`], the fields changed on both sides to different values; for a
    /// removal conflict, the fields the live side changed since the base.
    pub fields: Vec<String>,
}

/// How a handler resolves a conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The local side wins: its values of the conflicting fields, or its removal, or its live
    /// object against a remote removal. Pushed at the end of the sync.
    KeepLocal,
    /// The server's side wins: its values of the conflicting fields, or its removal, or its live
    /// object against a local removal. Local changes to other fields are kept.
    TakeRemote,
    /// The object becomes live with these field values (checked against the schema); fields not
    /// given keep the merged value (the automatic merge, or the live side of a removal conflict).
    /// Pushed at the end of the sync.
    Merged(Fields),
}

/// Decides conflicts. Called once per conflicting object, in the order the server sent them.
pub trait ConflictHandler {
    /// The resolution of one conflict.
    fn resolve(&self, conflict: &Conflict) -> Resolution;
}

/// Every conflict is resolved for the local side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreferLocal;

impl ConflictHandler for PreferLocal {
    fn resolve(&self, _: &Conflict) -> Resolution {
        Resolution::KeepLocal
    }
}

/// Every conflict is resolved for the server's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreferRemote;

impl ConflictHandler for PreferRemote {
    fn resolve(&self, _: &Conflict) -> Resolution {
        Resolution::TakeRemote
    }
}

impl<F> ConflictHandler for F
where
    F: Fn(&Conflict) -> Resolution,
{
    fn resolve(&self, conflict: &Conflict) -> Resolution {
        self(conflict)
    }
}
