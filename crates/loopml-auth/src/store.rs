//! The auth tables: users, permission grants, bearer tokens and the audit log.

use loopml_store::{Conn, Database};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::password;
use crate::permission::Permission;

/// A user as MLflow's auth API shows one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Its name (unique).
    pub username: String,
    /// Whether it is an admin (every check passes).
    pub is_admin: bool,
}

/// A user with its stored password hash (never leaves the crate).
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub user: User,
    pub password_hash: String,
}

/// One grant: a user's permission on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The grant's id.
    pub id: i64,
    /// Who.
    pub username: String,
    /// `experiment`, `registered_model` or `prompt`.
    pub resource_type: String,
    /// The experiment id or model name (or `*`).
    pub resource_id: String,
    /// The level.
    pub permission: String,
}

/// A bearer token's description (its secret is shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Whose.
    pub username: String,
    /// What it is for.
    pub name: String,
    /// A read-only token may only read.
    pub read_only: bool,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch; none = never.
    pub expires_at: Option<i64>,
    /// ms since the epoch, when revoked.
    pub revoked_at: Option<i64>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Its id (increasing).
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who did it.
    pub username: String,
    /// What (`create_user`, `grant`, `delete_experiment`, …).
    pub action: String,
    /// On what (`experiment:3`, `user:alice`, …).
    pub resource: String,
    /// Details (never a secret).
    pub detail: String,
}

/// Resource types a grant may name.
pub const RESOURCE_TYPES: &[&str] = &["experiment", "registered_model", "prompt"];

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn user_row(r: &loopml_store::Row<'_>) -> std::result::Result<User, loopml_store::StoreError> {
    Ok(User {
        id: r.i64(0)?,
        username: r.string(1)?,
        is_admin: r.i64(2)? != 0,
    })
}

/// Validates a username: non-empty, at most 255 bytes, no control characters.
pub fn validate_username(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidParameter("Username cannot be empty.".into()));
    }
    if name.len() > 255 || name.chars().any(char::is_control) || name.contains(':') {
        return Err(Error::InvalidParameter(
            "Username must be at most 255 bytes, without ':' or control characters.".into(),
        ));
    }
    Ok(())
}

pub(crate) fn credential(c: &Conn<'_>, username: &str) -> Result<Option<Credential>> {
    Ok(c.query_opt(
        "SELECT id, username, is_admin, password_hash FROM auth_users WHERE username = ?1",
        &[username.into()],
        |r| {
            Ok(Credential {
                user: user_row(r)?,
                password_hash: r.string(3)?,
            })
        },
    )?)
}

pub(crate) fn user(c: &Conn<'_>, username: &str) -> Result<User> {
    credential(c, username)?
        .map(|c| c.user)
        .ok_or_else(|| Error::NotFound(format!("User with username={username} not found")))
}

pub(crate) fn insert_user(c: &Conn<'_>, username: &str, hash: &str, admin: bool) -> Result<User> {
    validate_username(username)?;
    if credential(c, username)?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "User (username={username}) already exists."
        )));
    }
    c.query_opt(
        "INSERT INTO auth_users (username, password_hash, is_admin, created_at) \
         VALUES (?1, ?2, ?3, ?4) RETURNING id, username, is_admin",
        &[
            username.into(),
            hash.into(),
            i64::from(admin).into(),
            now_ms().into(),
        ],
        user_row,
    )?
    .ok_or_else(|| Error::Internal("inserting a user returned nothing".into()))
}

pub(crate) fn list_users(c: &Conn<'_>) -> Result<Vec<User>> {
    Ok(c.query(
        "SELECT id, username, is_admin FROM auth_users ORDER BY id",
        &[],
        user_row,
    )?)
}

/// The grants that apply to a user on resources of one type, as `(id or *, permission)`:
/// their own and their roles' (`only`: just rows for that id and `*`).
pub(crate) fn applicable(
    c: &Conn<'_>,
    user_id: i64,
    resource_type: &str,
    only: Option<&str>,
) -> Result<Vec<(String, Permission)>> {
    let row = |r: &loopml_store::Row<'_>| Ok((r.string(0)?, r.string(1)?));
    let rows = match only {
        Some(id) => c.query(
            "SELECT resource_id, permission FROM auth_permissions WHERE user_id = ?1 \
             AND resource_type = ?2 AND (resource_id = ?3 OR resource_id = '*') \
             UNION ALL SELECT p.resource_pattern, p.permission FROM auth_role_permissions p \
             JOIN auth_role_users u ON u.role_id = p.role_id WHERE u.user_id = ?1 \
             AND p.resource_type = ?2 AND (p.resource_pattern = ?3 OR p.resource_pattern = '*')",
            &[user_id.into(), resource_type.into(), id.into()],
            row,
        )?,
        None => c.query(
            "SELECT resource_id, permission FROM auth_permissions WHERE user_id = ?1 \
             AND resource_type = ?2 \
             UNION ALL SELECT p.resource_pattern, p.permission FROM auth_role_permissions p \
             JOIN auth_role_users u ON u.role_id = p.role_id WHERE u.user_id = ?1 \
             AND p.resource_type = ?2",
            &[user_id.into(), resource_type.into()],
            row,
        )?,
    };
    Ok(rows
        .into_iter()
        .filter_map(|(id, p)| p.parse::<Permission>().ok().map(|p| (id, p)))
        .collect())
}

/// How a user's applicable grants combine on one resource: a DENY on it or on `*` vetoes;
/// otherwise grants naming it win over `*` grants; among several, the highest.
pub(crate) fn combine(rows: &[(String, Permission)], resource_id: &str) -> Option<Permission> {
    let pick = |exact: bool| {
        Permission::fold(
            rows.iter()
                .filter(|(id, _)| if exact { id == resource_id } else { id == "*" })
                .map(|(_, p)| *p),
        )
    };
    match (pick(true), pick(false)) {
        (Some(Permission::Deny), _) | (_, Some(Permission::Deny)) => Some(Permission::Deny),
        (Some(p), _) => Some(p),
        (None, w) => w,
    }
}

/// The user's grant on one resource (their own and their roles'; exact id, else `*`).
pub(crate) fn grant_of(
    c: &Conn<'_>,
    user_id: i64,
    resource_type: &str,
    resource_id: &str,
) -> Result<Option<Permission>> {
    let rows = applicable(c, user_id, resource_type, Some(resource_id))?;
    Ok(combine(&rows, resource_id))
}

pub(crate) fn grants_of(c: &Conn<'_>, username: &str) -> Result<Vec<Grant>> {
    Ok(c.query(
        "SELECT p.id, u.username, p.resource_type, p.resource_id, p.permission \
         FROM auth_permissions p JOIN auth_users u ON u.id = p.user_id \
         WHERE u.username = ?1 ORDER BY p.id",
        &[username.into()],
        grant_row,
    )?)
}

fn grant_row(r: &loopml_store::Row<'_>) -> std::result::Result<Grant, loopml_store::StoreError> {
    Ok(Grant {
        id: r.i64(0)?,
        username: r.string(1)?,
        resource_type: r.string(2)?,
        resource_id: r.string(3)?,
        permission: r.string(4)?,
    })
}

pub(crate) fn find_grant(
    c: &Conn<'_>,
    user_id: i64,
    resource_type: &str,
    resource_id: &str,
) -> Result<Option<Grant>> {
    Ok(c.query_opt(
        "SELECT p.id, u.username, p.resource_type, p.resource_id, p.permission \
         FROM auth_permissions p JOIN auth_users u ON u.id = p.user_id \
         WHERE p.user_id = ?1 AND p.resource_type = ?2 AND p.resource_id = ?3",
        &[user_id.into(), resource_type.into(), resource_id.into()],
        grant_row,
    )?)
}

pub(crate) fn put_grant(
    c: &Conn<'_>,
    user_id: i64,
    resource_type: &str,
    resource_id: &str,
    p: Permission,
) -> Result<()> {
    c.execute(
        "INSERT INTO auth_permissions (user_id, resource_type, resource_id, permission) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, resource_type, resource_id) \
         DO UPDATE SET permission = excluded.permission",
        &[
            user_id.into(),
            resource_type.into(),
            resource_id.into(),
            p.name().into(),
        ],
    )?;
    Ok(())
}

pub(crate) fn audit(
    c: &Conn<'_>,
    who: &str,
    action: &str,
    resource: &str,
    detail: &str,
) -> Result<()> {
    c.execute(
        "INSERT INTO auth_audit (at_ms, username, action, resource, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        &[
            now_ms().into(),
            who.into(),
            action.into(),
            resource.into(),
            detail.into(),
        ],
    )?;
    Ok(())
}

pub(crate) fn token_row(
    r: &loopml_store::Row<'_>,
) -> std::result::Result<TokenInfo, loopml_store::StoreError> {
    Ok(TokenInfo {
        id: r.string(0)?,
        username: r.string(1)?,
        name: r.string(2)?,
        read_only: r.i64(3)? != 0,
        created_at: r.i64(4)?,
        expires_at: r.opt_i64(5)?,
        revoked_at: r.opt_i64(6)?,
    })
}

pub(crate) const TOKEN_COLUMNS: &str = "t.id, u.username, t.name, t.read_only, t.created_at, \
     t.expires_at, t.revoked_at";

/// Creates the admin on a store without one (MLflow's bootstrap); an existing admin whose
/// password is a known default gets the configured one.
pub(crate) async fn bootstrap_admin(db: &Database, username: &str, pw: &str) -> Result<()> {
    let hash = password::hash_password(pw)?;
    let (name, pw) = (username.to_string(), pw.to_string());
    db.write(move |c| -> Result<()> {
        match credential(c, &name)? {
            None => {
                insert_user(c, &name, &hash, true)?;
                audit(
                    c,
                    "system",
                    "create_user",
                    &format!("user:{name}"),
                    "admin bootstrap",
                )?;
            }
            Some(cred) => {
                // A configured password replaces a known default (MLflow does this on upgrade).
                let weak = password::verify_password("password1234", &cred.password_hash);
                if weak && !password::verify_password(&pw, &cred.password_hash) {
                    c.execute(
                        "UPDATE auth_users SET password_hash = ?1, is_admin = 1 WHERE id = ?2",
                        &[hash.as_str().into(), cred.user.id.into()],
                    )?;
                    audit(
                        c,
                        "system",
                        "update_password",
                        &format!("user:{name}"),
                        "replaced a default password",
                    )?;
                }
            }
        }
        Ok(())
    })
    .await
}
