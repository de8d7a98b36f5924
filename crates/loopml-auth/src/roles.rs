//! MLflow 3's roles (RBAC, `/api/3.0/mlflow/roles/…`): a role is a named set of permissions on
//! resource patterns (an experiment id, a model or prompt name, or `*`) in a workspace, assigned
//! to users. A user's effective permission folds their own grants with every assigned role's
//! (a DENY vetoes, a grant naming the resource beats a `*` one, the highest wins among several;
//! see [`crate::store::combine`]). Roles are managed by admins; loopml has one workspace,
//! `default`, and stores any other name a client sends as given.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::permission::Permission;
use crate::service::AuthService;
use crate::store::{self, RESOURCE_TYPES};
use loopml_store::Conn;

/// The workspace roles live in when a request names none (MLflow's default workspace).
pub const DEFAULT_WORKSPACE: &str = "default";

/// A role, as MLflow's `Role.to_json` shows one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Its id.
    pub id: i64,
    /// Its name (unique in its workspace).
    pub name: String,
    /// Its workspace.
    pub workspace: String,
    /// What it is for.
    pub description: Option<String>,
    /// What it grants.
    pub permissions: Vec<RolePermission>,
}

/// One permission of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolePermission {
    /// Its id.
    pub id: i64,
    /// The role.
    pub role_id: i64,
    /// `experiment`, `registered_model` or `prompt`.
    pub resource_type: String,
    /// A resource id or name, or `*`.
    pub resource_pattern: String,
    /// The level (`READ`, `USE`, `EDIT`, `MANAGE`, `DENY`).
    pub permission: String,
}

/// A user holding a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// Its id.
    pub id: i64,
    /// The user.
    pub user_id: i64,
    /// The role.
    pub role_id: i64,
}

fn check_name(name: &str, what: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Error::InvalidParameter(format!(
            "'{what}' must be 1 to 255 printable characters"
        )));
    }
    Ok(())
}

fn check_grant(resource_type: &str, pattern: &str, p: Permission) -> Result<()> {
    if !RESOURCE_TYPES.contains(&resource_type) {
        return Err(Error::InvalidParameter(format!(
            "Invalid resource_type '{resource_type}': valid types are {}",
            RESOURCE_TYPES.join(", ")
        )));
    }
    check_name(pattern, "resource_pattern")?;
    if !p.grantable() {
        return Err(Error::InvalidParameter(
            "Invalid permission NO_PERMISSIONS: roles accept only: ('DENY', 'EDIT', 'MANAGE', \
             'READ', 'USE'); remove the permission instead"
                .into(),
        ));
    }
    Ok(())
}

fn permissions_of(c: &Conn<'_>, role_id: i64) -> Result<Vec<RolePermission>> {
    Ok(c.query(
        "SELECT id, role_id, resource_type, resource_pattern, permission \
         FROM auth_role_permissions WHERE role_id = ?1 ORDER BY id",
        &[role_id.into()],
        permission_row,
    )?)
}

fn permission_row(
    r: &loopml_store::Row<'_>,
) -> std::result::Result<RolePermission, loopml_store::StoreError> {
    Ok(RolePermission {
        id: r.i64(0)?,
        role_id: r.i64(1)?,
        resource_type: r.string(2)?,
        resource_pattern: r.string(3)?,
        permission: r.string(4)?,
    })
}

fn role_by_id(c: &Conn<'_>, id: i64) -> Result<Role> {
    let found = c.query_opt(
        "SELECT id, name, workspace, description FROM auth_roles WHERE id = ?1",
        &[id.into()],
        |r| Ok((r.i64(0)?, r.string(1)?, r.string(2)?, r.opt_string(3)?)),
    )?;
    let (id, name, workspace, description) =
        found.ok_or_else(|| Error::NotFound(format!("Role with id={id} not found")))?;
    Ok(Role {
        id,
        name,
        workspace,
        description,
        permissions: permissions_of(c, id)?,
    })
}

fn roles_where(c: &Conn<'_>, sql: &str, params: &[loopml_store::Value<'_>]) -> Result<Vec<Role>> {
    let ids = c.query(sql, params, |r| r.i64(0))?;
    ids.into_iter().map(|id| role_by_id(c, id)).collect()
}

fn permission_by_id(c: &Conn<'_>, id: i64) -> Result<RolePermission> {
    c.query_opt(
        "SELECT id, role_id, resource_type, resource_pattern, permission \
         FROM auth_role_permissions WHERE id = ?1",
        &[id.into()],
        permission_row,
    )?
    .ok_or_else(|| Error::NotFound(format!("Role permission with id={id} not found")))
}

impl AuthService {
    /// Creates a role in a workspace.
    pub async fn create_role(
        &self,
        by: &str,
        workspace: &str,
        name: &str,
        description: Option<&str>,
    ) -> Result<Role> {
        check_name(name, "name")?;
        check_name(workspace, "workspace")?;
        let (by, ws, name, d) = (
            by.to_string(),
            workspace.to_string(),
            name.to_string(),
            description.map(str::to_string),
        );
        self.write(move |c| -> Result<Role> {
            let exists = c.query_opt(
                "SELECT id FROM auth_roles WHERE workspace = ?1 AND name = ?2",
                &[ws.as_str().into(), name.as_str().into()],
                |r| r.i64(0),
            )?;
            if exists.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "Role '{name}' already exists in workspace '{ws}'"
                )));
            }
            let id = c
                .query_opt(
                    "INSERT INTO auth_roles (name, workspace, description) VALUES (?1, ?2, ?3) \
                     RETURNING id",
                    &[
                        name.as_str().into(),
                        ws.as_str().into(),
                        d.as_deref().into(),
                    ],
                    |r| r.i64(0),
                )?
                .ok_or_else(|| Error::Internal("inserting a role returned nothing".into()))?;
            store::audit(
                c,
                &by,
                "create_role",
                &format!("role:{id}"),
                &format!("{ws}/{name}"),
            )?;
            role_by_id(c, id)
        })
        .await
    }

    /// One role with its permissions.
    pub async fn role(&self, id: i64) -> Result<Role> {
        self.db().read(move |c| role_by_id(c, id)).await
    }

    /// The roles of a workspace, or of every workspace.
    pub async fn roles(&self, workspace: Option<&str>) -> Result<Vec<Role>> {
        let ws = workspace.map(str::to_string);
        self.db()
            .read(move |c| match ws {
                Some(ws) => roles_where(
                    c,
                    "SELECT id FROM auth_roles WHERE workspace = ?1 ORDER BY id",
                    &[ws.as_str().into()],
                ),
                None => roles_where(c, "SELECT id FROM auth_roles ORDER BY id", &[]),
            })
            .await
    }

    /// Renames a role or changes its description.
    pub async fn update_role(
        &self,
        by: &str,
        id: i64,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<Role> {
        if let Some(n) = name {
            check_name(n, "name")?;
        }
        let (by, name, d) = (
            by.to_string(),
            name.map(str::to_string),
            description.map(str::to_string),
        );
        self.write(move |c| -> Result<Role> {
            let role = role_by_id(c, id)?;
            if let Some(n) = &name
                && *n != role.name
            {
                let taken = c.query_opt(
                    "SELECT id FROM auth_roles WHERE workspace = ?1 AND name = ?2",
                    &[role.workspace.as_str().into(), n.as_str().into()],
                    |r| r.i64(0),
                )?;
                if taken.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "Role '{n}' already exists in workspace '{}'",
                        role.workspace
                    )));
                }
                c.execute(
                    "UPDATE auth_roles SET name = ?1 WHERE id = ?2",
                    &[n.as_str().into(), id.into()],
                )?;
            }
            if let Some(d) = &d {
                c.execute(
                    "UPDATE auth_roles SET description = ?1 WHERE id = ?2",
                    &[d.as_str().into(), id.into()],
                )?;
            }
            store::audit(c, &by, "update_role", &format!("role:{id}"), "")?;
            role_by_id(c, id)
        })
        .await
    }

    /// Deletes a role, its permissions and assignments.
    pub async fn delete_role(&self, by: &str, id: i64) -> Result<()> {
        let by = by.to_string();
        self.write(move |c| -> Result<()> {
            let role = role_by_id(c, id)?;
            for t in ["auth_role_permissions", "auth_role_users"] {
                c.execute(&format!("DELETE FROM {t} WHERE role_id = ?1"), &[id.into()])?;
            }
            c.execute("DELETE FROM auth_roles WHERE id = ?1", &[id.into()])?;
            store::audit(
                c,
                &by,
                "delete_role",
                &format!("role:{id}"),
                &format!("{}/{}", role.workspace, role.name),
            )?;
            Ok(())
        })
        .await
    }

    /// Adds a permission to a role.
    pub async fn add_role_permission(
        &self,
        by: &str,
        role_id: i64,
        resource_type: &str,
        pattern: &str,
        p: Permission,
    ) -> Result<RolePermission> {
        check_grant(resource_type, pattern, p)?;
        let (by, t, pat) = (
            by.to_string(),
            resource_type.to_string(),
            pattern.to_string(),
        );
        self.write(move |c| -> Result<RolePermission> {
            role_by_id(c, role_id)?;
            let exists = c.query_opt(
                "SELECT id FROM auth_role_permissions WHERE role_id = ?1 AND resource_type = ?2 \
                 AND resource_pattern = ?3",
                &[role_id.into(), t.as_str().into(), pat.as_str().into()],
                |r| r.i64(0),
            )?;
            if exists.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "Role {role_id} already has a permission on {t} '{pat}'"
                )));
            }
            let id = c
                .query_opt(
                    "INSERT INTO auth_role_permissions (role_id, resource_type, resource_pattern, \
                     permission) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    &[
                        role_id.into(),
                        t.as_str().into(),
                        pat.as_str().into(),
                        p.name().into(),
                    ],
                    |r| r.i64(0),
                )?
                .ok_or_else(|| Error::Internal("inserting a permission returned nothing".into()))?;
            store::audit(
                c,
                &by,
                "add_role_permission",
                &format!("{t}:{pat}"),
                &format!("role:{role_id}={p}"),
            )?;
            permission_by_id(c, id)
        })
        .await
    }

    /// Changes a role permission's level.
    pub async fn update_role_permission(
        &self,
        by: &str,
        id: i64,
        p: Permission,
    ) -> Result<RolePermission> {
        let by = by.to_string();
        self.write(move |c| -> Result<RolePermission> {
            let old = permission_by_id(c, id)?;
            check_grant(&old.resource_type, &old.resource_pattern, p)?;
            c.execute(
                "UPDATE auth_role_permissions SET permission = ?1 WHERE id = ?2",
                &[p.name().into(), id.into()],
            )?;
            store::audit(
                c,
                &by,
                "update_role_permission",
                &format!("{}:{}", old.resource_type, old.resource_pattern),
                &format!("role:{}={p}", old.role_id),
            )?;
            permission_by_id(c, id)
        })
        .await
    }

    /// Removes a permission from its role.
    pub async fn remove_role_permission(&self, by: &str, id: i64) -> Result<()> {
        let by = by.to_string();
        self.write(move |c| -> Result<()> {
            let old = permission_by_id(c, id)?;
            c.execute(
                "DELETE FROM auth_role_permissions WHERE id = ?1",
                &[id.into()],
            )?;
            store::audit(
                c,
                &by,
                "remove_role_permission",
                &format!("{}:{}", old.resource_type, old.resource_pattern),
                &format!("role:{}", old.role_id),
            )?;
            Ok(())
        })
        .await
    }

    /// Gives a user a role.
    pub async fn assign_role(&self, by: &str, username: &str, role_id: i64) -> Result<Assignment> {
        let (by, name) = (by.to_string(), username.to_string());
        self.write(move |c| -> Result<Assignment> {
            let u = store::user(c, &name)?;
            role_by_id(c, role_id)?;
            let exists = c.query_opt(
                "SELECT id FROM auth_role_users WHERE user_id = ?1 AND role_id = ?2",
                &[u.id.into(), role_id.into()],
                |r| r.i64(0),
            )?;
            if exists.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "User {name} already has role {role_id}"
                )));
            }
            let id = c
                .query_opt(
                    "INSERT INTO auth_role_users (user_id, role_id) VALUES (?1, ?2) RETURNING id",
                    &[u.id.into(), role_id.into()],
                    |r| r.i64(0),
                )?
                .ok_or_else(|| {
                    Error::Internal("inserting an assignment returned nothing".into())
                })?;
            store::audit(
                c,
                &by,
                "assign_role",
                &format!("role:{role_id}"),
                &format!("user:{name}"),
            )?;
            Ok(Assignment {
                id,
                user_id: u.id,
                role_id,
            })
        })
        .await
    }

    /// Takes a role from a user.
    pub async fn unassign_role(&self, by: &str, username: &str, role_id: i64) -> Result<()> {
        let (by, name) = (by.to_string(), username.to_string());
        self.write(move |c| -> Result<()> {
            let u = store::user(c, &name)?;
            let n = c.execute(
                "DELETE FROM auth_role_users WHERE user_id = ?1 AND role_id = ?2",
                &[u.id.into(), role_id.into()],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!(
                    "User {name} does not have role {role_id}"
                )));
            }
            store::audit(
                c,
                &by,
                "unassign_role",
                &format!("role:{role_id}"),
                &format!("user:{name}"),
            )?;
            Ok(())
        })
        .await
    }

    /// The roles a user holds.
    pub async fn user_roles(&self, username: &str) -> Result<Vec<Role>> {
        let name = username.to_string();
        self.db()
            .read(move |c| {
                let u = store::user(c, &name)?;
                roles_where(
                    c,
                    "SELECT role_id FROM auth_role_users WHERE user_id = ?1 ORDER BY role_id",
                    &[u.id.into()],
                )
            })
            .await
    }

    /// Who holds a role.
    pub async fn role_users(&self, role_id: i64) -> Result<Vec<Assignment>> {
        self.db()
            .read(move |c| {
                role_by_id(c, role_id)?;
                Ok(c.query(
                    "SELECT id, user_id, role_id FROM auth_role_users WHERE role_id = ?1 \
                     ORDER BY id",
                    &[role_id.into()],
                    |r| {
                        Ok(Assignment {
                            id: r.i64(0)?,
                            user_id: r.i64(1)?,
                            role_id: r.i64(2)?,
                        })
                    },
                )?)
            })
            .await
    }
}
