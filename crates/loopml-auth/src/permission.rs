//! MLflow's permission levels (`mlflow/server/auth/permissions.py`): what each allows and how
//! grants combine.

use std::fmt;
use std::str::FromStr;

/// A permission on a resource, lowest to highest priority except `Deny`, which vetoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// An explicit veto: wins over every positive grant and the default.
    Deny,
    /// Nothing (no longer grantable on a resource, as in MLflow 3.x; still a valid default).
    NoPermissions,
    /// Read.
    Read,
    /// Read and use (gateway calls, a workspace member).
    Use,
    /// Read, use and update.
    Edit,
    /// Everything, including delete and managing permissions.
    Manage,
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read it.
    Read,
    /// Use it (gateway calls).
    Use,
    /// Change it (log to a run of the experiment, update a model).
    Update,
    /// Delete or restore it.
    Delete,
    /// Grant or revoke permissions on it.
    Manage,
}

impl Permission {
    /// Every level, as MLflow names them.
    pub const ALL: [Permission; 6] = [
        Permission::Deny,
        Permission::NoPermissions,
        Permission::Read,
        Permission::Use,
        Permission::Edit,
        Permission::Manage,
    ];

    /// MLflow's name (`READ`, `MANAGE`, …).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Deny => "DENY",
            Permission::NoPermissions => "NO_PERMISSIONS",
            Permission::Read => "READ",
            Permission::Use => "USE",
            Permission::Edit => "EDIT",
            Permission::Manage => "MANAGE",
        }
    }

    /// MLflow's priority: a grant below the default is floored at it (only DENY restricts).
    pub fn priority(self) -> i32 {
        match self {
            Permission::Deny => -1,
            Permission::NoPermissions => 0,
            Permission::Read => 1,
            Permission::Use => 2,
            Permission::Edit => 3,
            Permission::Manage => 4,
        }
    }

    /// Whether this level allows `action`.
    pub fn allows(self, action: Action) -> bool {
        let needed = match action {
            Action::Read => 1,
            Action::Use => 2,
            Action::Update => 3,
            Action::Delete | Action::Manage => 4,
        };
        self.priority() >= needed
    }

    /// The effective level of a user's grant (if any) under the server's default: DENY wins,
    /// a positive grant is floored at the default, no grant is the default.
    pub fn effective(grant: Option<Permission>, default: Permission) -> Permission {
        match grant {
            Some(Permission::Deny) => Permission::Deny,
            Some(g) if g.priority() >= default.priority() => g,
            _ => default,
        }
    }

    /// Several grants that apply to one resource, folded: a DENY among them vetoes, else the
    /// highest wins; `None` when there are none.
    pub fn fold(grants: impl IntoIterator<Item = Permission>) -> Option<Permission> {
        let mut out: Option<Permission> = None;
        for g in grants {
            if g == Permission::Deny {
                return Some(Permission::Deny);
            }
            if out.is_none_or(|o| g.priority() > o.priority()) {
                out = Some(g);
            }
        }
        out
    }

    /// Whether it can be granted on one resource (MLflow 3.x refuses NO_PERMISSIONS there).
    pub fn grantable(self) -> bool {
        self != Permission::NoPermissions
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "Invalid permission '{s}': valid permissions are DENY, NO_PERMISSIONS, \
                     READ, USE, EDIT, MANAGE"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_allow_what_mlflow_allows() {
        use Action::*;
        let table = [
            (Permission::Deny, [false, false, false, false, false]),
            (
                Permission::NoPermissions,
                [false, false, false, false, false],
            ),
            (Permission::Read, [true, false, false, false, false]),
            (Permission::Use, [true, true, false, false, false]),
            (Permission::Edit, [true, true, true, false, false]),
            (Permission::Manage, [true, true, true, true, true]),
        ];
        for (p, row) in table {
            for (a, want) in [Read, Use, Update, Delete, Manage].into_iter().zip(row) {
                assert_eq!(p.allows(a), want, "{p} {a:?}");
            }
            assert_eq!(p.name().parse::<Permission>(), Ok(p));
        }
        assert!("WRITE".parse::<Permission>().is_err());
    }

    #[test]
    fn grants_are_floored_at_the_default_and_deny_vetoes() {
        use Permission::*;
        assert_eq!(Permission::effective(None, Read), Read);
        assert_eq!(Permission::effective(Some(Manage), Read), Manage);
        // A grant below the default does not restrict: only DENY does.
        assert_eq!(Permission::effective(Some(Read), Edit), Edit);
        assert_eq!(Permission::effective(Some(Deny), Manage), Deny);
        assert_eq!(Permission::effective(None, NoPermissions), NoPermissions);
        assert!(!NoPermissions.grantable());
    }
}
