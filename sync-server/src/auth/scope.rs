//! Which partition of an entity a caller reads and writes, by the entity's scope and roles.
//!
//! Partitions are named so that no two scopes can meet: `user:<subject>`, `<claim>:<value>`, and
//! `shared`. Objects stored while authentication was off are outside every partition.

use serde::{Deserialize, Serialize};

use super::{AuthError, Identity};

/// The partitions of an entity (`scope` of an `[[entity]]`, or `auth.default_scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EntityScope {
    /// `"user"`: each subject has its own objects; `"shared"`: one partition for everyone
    /// authenticated.
    Named(NamedScope),
    /// `{ claim = "team" }`: objects shared by everyone whose token has the same value of the claim.
    Claim {
        /// The claim's name.
        claim: String,
    },
}

/// The scopes named by a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedScope {
    /// Per subject.
    User,
    /// One for everyone.
    Shared,
}

impl Default for EntityScope {
    fn default() -> Self {
        Self::Named(NamedScope::User)
    }
}

/// Who may read and write an entity, and where.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// The entity's partitions.
    pub scope: EntityScope,
    /// Roles of which a caller needs one to pull; empty: anyone authenticated.
    pub read_roles: Vec<String>,
    /// Roles of which a caller needs one to push; empty: anyone authenticated.
    pub write_roles: Vec<String>,
}

impl Access {
    /// The partition `who` pulls from (or pushes to, when `write`), or `403` without the right.
    pub fn partition(&self, who: &Identity, write: bool) -> Result<String, AuthError> {
        let (needed, what) = if write { (&self.write_roles, "write") } else { (&self.read_roles, "read") };
        if !needed.is_empty() && !who.roles.iter().any(|role| needed.contains(role)) {
            return Err(AuthError::Forbidden(format!("{what} access needs one of the roles {}", needed.join(", "))));
        }
        match &self.scope {
            EntityScope::Named(NamedScope::User) => Ok(format!("user:{}", who.subject)),
            EntityScope::Named(NamedScope::Shared) => Ok("shared".into()),
            EntityScope::Claim { claim } => match who.claims.get(claim) {
                Some(serde_json::Value::String(value)) if !value.is_empty() => Ok(format!("{claim}:{value}")),
                Some(value @ serde_json::Value::Number(_)) => Ok(format!("{claim}:{value}")),
                _ => Err(AuthError::Forbidden(format!(
                    "this entity is shared by {claim}, and the credentials name none"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(subject: &str, roles: &[&str], claims: serde_json::Value) -> Identity {
        Identity {
            subject: subject.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            claims: claims.as_object().cloned().unwrap_or_default(),
            from_cookie: false,
        }
    }

    #[test]
    fn scopes_name_partitions_that_cannot_meet() {
        let user = Access::default();
        assert_eq!(user.partition(&who("shared", &[], serde_json::json!({})), true).unwrap(), "user:shared");
        let team = Access { scope: EntityScope::Claim { claim: "team".into() }, ..Access::default() };
        assert_eq!(team.partition(&who("a", &[], serde_json::json!({"team": "red"})), false).unwrap(), "team:red");
        assert_eq!(team.partition(&who("a", &[], serde_json::json!({"team": 7})), false).unwrap(), "team:7");
        assert!(matches!(team.partition(&who("a", &[], serde_json::json!({})), false), Err(AuthError::Forbidden(_))));
    }

    #[test]
    fn roles_guard_reads_and_writes_apart() {
        let catalog = Access {
            scope: EntityScope::Named(NamedScope::Shared),
            read_roles: vec![],
            write_roles: vec!["editor".into()],
        };
        let reader = who("r", &["viewer"], serde_json::json!({}));
        assert_eq!(catalog.partition(&reader, false).unwrap(), "shared");
        assert!(matches!(catalog.partition(&reader, true), Err(AuthError::Forbidden(_))));
        assert_eq!(catalog.partition(&who("e", &["editor"], serde_json::json!({})), true).unwrap(), "shared");
    }

    #[test]
    fn scopes_read_from_toml() {
        #[derive(Deserialize)]
        struct T {
            scope: EntityScope,
        }
        let parse = |s: &str| toml::from_str::<T>(s).map(|t| t.scope);
        assert_eq!(parse("scope = \"user\"").unwrap(), EntityScope::Named(NamedScope::User));
        assert_eq!(parse("scope = \"shared\"").unwrap(), EntityScope::Named(NamedScope::Shared));
        assert_eq!(parse("scope = { claim = \"org\" }").unwrap(), EntityScope::Claim { claim: "org".into() });
        assert!(parse("scope = \"everyone\"").is_err());
    }
}
