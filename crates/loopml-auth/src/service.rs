//! The auth service: who a request is (HTTP Basic or a bearer token), what they may do to a
//! resource, and the user, grant and token operations behind MLflow's auth API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopml_store::Database;
use sha2::Digest;

use crate::cache::{Cache, TokenEntry};
use crate::error::{Error, Result};
use crate::password;
use crate::permission::{Action, Permission};
use crate::store::{self, AuditEntry, Grant, TokenInfo, User};

/// How auth is configured.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The admin's name (`admin`, as MLflow's `basic_auth.ini`).
    pub admin_username: String,
    /// The admin's password (`MLFLOW_AUTH_ADMIN_PASSWORD`); checked against the policy.
    pub admin_password: String,
    /// What a user may do where no grant says otherwise (MLflow's `default_permission`, READ).
    pub default_permission: Permission,
}

/// Who is calling, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// Whether the credential only allows reading (a read-only token).
    pub read_only: bool,
    /// `basic` or `token`.
    pub scheme: &'static str,
}

/// Failed logins per user: after [`FREE_FAILURES`] a wait that doubles, capped.
#[derive(Debug, Default)]
struct Throttle {
    users: HashMap<String, (u32, Instant)>,
}

/// Failures allowed before a user's logins are slowed down.
const FREE_FAILURES: u32 = 5;
/// The longest wait between two login attempts of one user.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a verified password is remembered (keyed by user, password and stored hash).
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// The auth service; cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    default_permission: Permission,
    throttle: Mutex<Throttle>,
    /// sha256(user, password, stored hash) → when verified: a password check costs an Argon2
    /// hash once, not on every request (MLflow runs scrypt per request). Keyed on the stored
    /// hash, so a password change on any replica invalidates it at once.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Credentials, tokens, grants and visibility read on every request (see [`crate::cache`]).
    cache: Cache,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("default_permission", &self.inner.default_permission)
            .finish_non_exhaustive()
    }
}

fn verified_key(username: &str, pw: &str, hash: &str) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for part in [username, pw, hash] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

impl AuthService {
    /// Opens the auth tables on `db` (migrated) and creates the admin when missing. Refuses a
    /// missing or weak admin password, naming the setting.
    pub async fn new(db: Database, config: AuthConfig) -> Result<Self> {
        if config.admin_password.is_empty() {
            return Err(Error::InvalidParameter(
                "authentication needs the admin's password: set MLFLOW_AUTH_ADMIN_PASSWORD \
                 (at least 12 characters; loopml ships no default)"
                    .into(),
            ));
        }
        password::check_policy(&config.admin_password).map_err(|e| {
            Error::InvalidParameter(format!("MLFLOW_AUTH_ADMIN_PASSWORD is refused: {e}"))
        })?;
        db.migrate("auth", crate::MIGRATIONS)?;
        store::bootstrap_admin(&db, &config.admin_username, &config.admin_password).await?;
        Ok(AuthService {
            inner: Arc::new(Inner {
                db,
                default_permission: config.default_permission,
                throttle: Mutex::default(),
                verified: Mutex::default(),
                cache: Cache::new(),
            }),
        })
    }

    /// Announces this replica's auth changes on `bus` and follows the other replicas' (so a
    /// revoked token or grant holds everywhere in milliseconds, not [`crate::cache::TTL`]).
    pub fn set_change_bus(&self, bus: loopml_store::ChangeBus) {
        self.inner.cache.set_bus(bus);
    }

    /// A write to the auth tables; the cache is emptied (and the change announced) after it.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&loopml_store::Conn<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let out = self.inner.db.write(f).await;
        // Even a failed write may have been half-seen by a concurrent reader: forget anyway.
        self.inner.cache.changed();
        out
    }

    /// The auth tables' database (reads; writes go through [`Self::write`]).
    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The default permission.
    pub fn default_permission(&self) -> Permission {
        self.inner.default_permission
    }

    fn throttled(&self, username: &str) -> Option<Duration> {
        let t = self.inner.throttle.lock().ok()?;
        let (n, last) = t.users.get(username)?;
        if *n < FREE_FAILURES {
            return None;
        }
        let wait = Duration::from_secs(1u64 << (n - FREE_FAILURES).min(6)).min(MAX_WAIT);
        let left = wait.checked_sub(last.elapsed())?;
        (!left.is_zero()).then_some(left)
    }

    fn record(&self, username: &str, ok: bool) {
        if let Ok(mut t) = self.inner.throttle.lock() {
            if ok {
                t.users.remove(username);
            } else {
                let e = t
                    .users
                    .entry(username.to_string())
                    .or_insert((0, Instant::now()));
                e.0 = e.0.saturating_add(1);
                e.1 = Instant::now();
                // Bounded memory under a spray of made-up names.
                if t.users.len() > 100_000 {
                    t.users.retain(|_, (_, at)| at.elapsed() < MAX_WAIT);
                }
            }
        }
    }

    /// HTTP Basic: the user when the password matches. Unknown users cost the same as known
    /// ones; a user with too many recent failures waits (429), others are not affected.
    pub async fn basic(&self, username: &str, pw: &str) -> Result<Principal> {
        if username.contains('\0') || pw.contains('\0') {
            // No stored user has one, and PostgreSQL cannot even be asked (found by fuzzing).
            return Err(Error::Unauthenticated(
                "You are not authenticated: wrong username or password".into(),
            ));
        }
        if let Some(wait) = self.throttled(username) {
            return Err(Error::Throttled(format!(
                "Too many failed logins for this user; retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        let cred = match self.inner.cache.credential(username) {
            Some(c) => Some(c),
            None => {
                let name = username.to_string();
                let found = self
                    .inner
                    .db
                    .read(move |c| store::credential(c, &name))
                    .await?;
                // Only known users are remembered: unknown names cannot fill memory.
                if let Some(c) = &found {
                    self.inner.cache.put_credential(username, c.clone());
                }
                found
            }
        };
        let ok = match &cred {
            Some(cred) => {
                let key = verified_key(username, pw, &cred.password_hash);
                let cached = self
                    .inner
                    .verified
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).copied())
                    .is_some_and(|at| at.elapsed() < VERIFIED_TTL);
                if cached {
                    true
                } else {
                    let (p, h) = (pw.to_string(), cred.password_hash.clone());
                    let ok = tokio::task::spawn_blocking(move || password::verify_password(&p, &h))
                        .await
                        .unwrap_or(false);
                    // The shipped default of old MLflow releases never logs in.
                    let ok = ok && pw != "password1234";
                    if ok && let Ok(mut m) = self.inner.verified.lock() {
                        if m.len() > 10_000 {
                            m.retain(|_, at| at.elapsed() < VERIFIED_TTL);
                        }
                        m.insert(key, Instant::now());
                    }
                    ok
                }
            }
            None => {
                let p = pw.to_string();
                let _ = tokio::task::spawn_blocking(move || password::dummy_verify(&p)).await;
                false
            }
        };
        self.record(username, ok);
        match cred {
            Some(c) if ok => Ok(Principal {
                user: c.user,
                read_only: false,
                scheme: "basic",
            }),
            _ => Err(Error::Unauthenticated(
                "You are not authenticated: wrong username or password".into(),
            )),
        }
    }

    /// A bearer token: its user when it exists, is not revoked and has not expired.
    pub async fn bearer(&self, token: &str) -> Result<Principal> {
        let hash = password::token_hash(token);
        let now = store::now_ms();
        let entry = match self.inner.cache.token(&hash) {
            Some(e) => Some(e),
            None => {
                let h = hash.clone();
                let found = self
                    .inner
                    .db
                    .read(move |c| -> Result<_> {
                        Ok(c.query_opt(
                            "SELECT u.id, u.username, u.is_admin, t.read_only, t.expires_at \
                             FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id \
                             WHERE t.token_hash = ?1 AND t.revoked_at IS NULL",
                            &[h.into()],
                            |r| {
                                Ok(TokenEntry {
                                    user: User {
                                        id: r.i64(0)?,
                                        username: r.string(1)?,
                                        is_admin: r.i64(2)? != 0,
                                    },
                                    read_only: r.i64(3)? != 0,
                                    expires_at: r.opt_i64(4)?,
                                })
                            },
                        )?)
                    })
                    .await?;
                if let Some(e) = &found {
                    self.inner.cache.put_token(&hash, e.clone());
                }
                found
            }
        };
        // Expiry is checked on every use, cached or not.
        let entry = entry
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
            .ok_or_else(|| {
                Error::Unauthenticated("The token is unknown, revoked or expired".into())
            })?;
        Ok(Principal {
            user: entry.user,
            read_only: entry.read_only,
            scheme: "token",
        })
    }

    /// The user's effective permission on a resource (admins: MANAGE).
    pub async fn permission(
        &self,
        user: &User,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Permission> {
        if user.is_admin {
            return Ok(Permission::Manage);
        }
        if resource_id.contains('\0') {
            // No resource has such an id (MLflow REST refuses NUL), and PostgreSQL cannot
            // compare with it: nothing is granted on it.
            return Ok(Permission::effective(None, self.inner.default_permission));
        }
        let grant = match self.inner.cache.grant(user.id, resource_type, resource_id) {
            Some(g) => g,
            None => {
                let (id, t, r) = (user.id, resource_type.to_string(), resource_id.to_string());
                let g = self
                    .inner
                    .db
                    .read(move |c| store::grant_of(c, id, &t, &r))
                    .await?;
                self.inner
                    .cache
                    .put_grant(user.id, resource_type, resource_id, g);
                g
            }
        };
        Ok(Permission::effective(grant, self.inner.default_permission))
    }

    /// Whether `p` may do `action` on a resource: `Ok` or PERMISSION_DENIED.
    pub async fn check(
        &self,
        p: &Principal,
        resource_type: &str,
        resource_id: &str,
        action: Action,
    ) -> Result<()> {
        if p.read_only && action != Action::Read {
            return Err(Error::read_only());
        }
        let level = self.permission(&p.user, resource_type, resource_id).await?;
        if level.allows(action) {
            Ok(())
        } else {
            Err(Error::PermissionDenied("Permission denied".into()))
        }
    }

    /// The ids of resources of a type the user may not read (DENY, or every id without a
    /// grant when the default is below READ: then `Err(readable)` lists what it may read).
    pub async fn visibility(&self, user: &User, resource_type: &str) -> Result<Visibility> {
        if user.is_admin {
            return Ok(Visibility::All);
        }
        if let Some(v) = self.inner.cache.visibility(user.id, resource_type) {
            return Ok(v);
        }
        let v = self.read_visibility(user, resource_type).await?;
        self.inner
            .cache
            .put_visibility(user.id, resource_type, v.clone());
        Ok(v)
    }

    async fn read_visibility(&self, user: &User, resource_type: &str) -> Result<Visibility> {
        let (id, t) = (user.id, resource_type.to_string());
        let rows = self
            .inner
            .db
            .read(move |c| store::applicable(c, id, &t, None))
            .await?;
        let default = self.inner.default_permission;
        // As `grant_of` (own and roles' grants folded, DENY vetoes, exact beats `*`), floored
        // at the default.
        let base = Permission::effective(store::combine(&rows, "*"), default);
        let mut listed: Vec<String> = Vec::new();
        for (r, _) in rows.iter().filter(|(r, _)| r != "*") {
            if listed.contains(r) {
                continue;
            }
            let level = Permission::effective(store::combine(&rows, r), default);
            if level.allows(Action::Read) != base.allows(Action::Read) {
                listed.push(r.clone());
            }
        }
        Ok(if base.allows(Action::Read) {
            Visibility::AllBut(listed)
        } else {
            Visibility::Only(listed)
        })
    }

    /// Creates a user (MLflow's policy on the password).
    pub async fn create_user(&self, by: &str, username: &str, pw: &str) -> Result<User> {
        store::validate_username(username)?;
        password::check_policy(pw)?;
        let p = pw.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash_password(&p))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let (name, by) = (username.to_string(), by.to_string());
        self.write(move |c| -> Result<User> {
            let u = store::insert_user(c, &name, &hash, false)?;
            store::audit(c, &by, "create_user", &format!("user:{name}"), "")?;
            Ok(u)
        })
        .await
    }

    /// A user by name.
    pub async fn get_user(&self, username: &str) -> Result<User> {
        let name = username.to_string();
        self.inner.db.read(move |c| store::user(c, &name)).await
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.inner.db.read(store::list_users).await
    }

    /// Sets a user's password (the caller checked who may).
    pub async fn update_password(&self, by: &str, username: &str, pw: &str) -> Result<()> {
        password::check_policy(pw)?;
        let p = pw.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash_password(&p))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let (name, by) = (username.to_string(), by.to_string());
        self.write(move |c| -> Result<()> {
            let u = store::user(c, &name)?;
            c.execute(
                "UPDATE auth_users SET password_hash = ?1 WHERE id = ?2",
                &[hash.as_str().into(), u.id.into()],
            )?;
            store::audit(c, &by, "update_password", &format!("user:{name}"), "")?;
            Ok(())
        })
        .await
    }

    /// Whether `pw` is the user's current password (for a self-service change).
    pub async fn password_matches(&self, username: &str, pw: &str) -> Result<bool> {
        let name = username.to_string();
        let cred = self
            .inner
            .db
            .read(move |c| store::credential(c, &name))
            .await?;
        let Some(cred) = cred else {
            return Ok(false);
        };
        let p = pw.to_string();
        Ok(
            tokio::task::spawn_blocking(move || password::verify_password(&p, &cred.password_hash))
                .await
                .unwrap_or(false),
        )
    }

    /// Makes a user an admin or not.
    pub async fn update_admin(&self, by: &str, username: &str, admin: bool) -> Result<()> {
        let (name, by) = (username.to_string(), by.to_string());
        self.write(move |c| -> Result<()> {
            let u = store::user(c, &name)?;
            c.execute(
                "UPDATE auth_users SET is_admin = ?1 WHERE id = ?2",
                &[i64::from(admin).into(), u.id.into()],
            )?;
            store::audit(
                c,
                &by,
                "update_admin",
                &format!("user:{name}"),
                &format!("is_admin={admin}"),
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a user, their grants and tokens.
    pub async fn delete_user(&self, by: &str, username: &str) -> Result<()> {
        let (name, by) = (username.to_string(), by.to_string());
        self.write(move |c| -> Result<()> {
            let u = store::user(c, &name)?;
            for t in ["auth_permissions", "auth_tokens", "auth_role_users"] {
                c.execute(
                    &format!("DELETE FROM {t} WHERE user_id = ?1"),
                    &[u.id.into()],
                )?;
            }
            c.execute("DELETE FROM auth_users WHERE id = ?1", &[u.id.into()])?;
            store::audit(c, &by, "delete_user", &format!("user:{name}"), "")?;
            Ok(())
        })
        .await
    }

    /// Grants (or changes) a user's permission on a resource; `create` refuses an existing one.
    pub async fn grant(
        &self,
        by: &str,
        username: &str,
        resource_type: &str,
        resource_id: &str,
        p: Permission,
        create: bool,
    ) -> Result<()> {
        if !store::RESOURCE_TYPES.contains(&resource_type) {
            return Err(Error::InvalidParameter(format!(
                "Invalid resource_type '{resource_type}': valid types are {}",
                store::RESOURCE_TYPES.join(", ")
            )));
        }
        if !p.grantable() {
            return Err(Error::InvalidParameter(
                "Invalid permission NO_PERMISSIONS: grants accept only: ('DENY', 'EDIT', \
                 'MANAGE', 'READ', 'USE'); revoke the grant instead"
                    .into(),
            ));
        }
        if resource_id.is_empty() {
            return Err(Error::InvalidParameter("'resource_id' is required".into()));
        }
        let (name, by, t, r) = (
            username.to_string(),
            by.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.write(move |c| -> Result<()> {
            let u = store::user(c, &name)?;
            let existing = store::find_grant(c, u.id, &t, &r)?;
            if create && existing.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "Permission on {t} '{r}' for user {name} already exists"
                )));
            }
            if !create && existing.is_none() {
                return Err(Error::NotFound(format!(
                    "No permission on {t} '{r}' for user {name}"
                )));
            }
            store::put_grant(c, u.id, &t, &r, p)?;
            store::audit(c, &by, "grant", &format!("{t}:{r}"), &format!("{name}={p}"))?;
            Ok(())
        })
        .await
    }

    /// Gives the creator MANAGE on what it just created (MLflow's after-request hook).
    pub async fn make_owner(
        &self,
        user: &User,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<()> {
        if user.is_admin {
            return Ok(());
        }
        let (id, name, t, r) = (
            user.id,
            user.username.clone(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.write(move |c| -> Result<()> {
            store::put_grant(c, id, &t, &r, Permission::Manage)?;
            store::audit(c, &name, "create", &format!("{t}:{r}"), "owner: MANAGE")?;
            Ok(())
        })
        .await
    }

    /// Removes a user's grant on a resource.
    pub async fn revoke(
        &self,
        by: &str,
        username: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<()> {
        let (name, by, t, r) = (
            username.to_string(),
            by.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.write(move |c| -> Result<()> {
            let u = store::user(c, &name)?;
            let n = c.execute(
                "DELETE FROM auth_permissions WHERE user_id = ?1 AND resource_type = ?2 \
                     AND resource_id = ?3",
                &[u.id.into(), t.as_str().into(), r.as_str().into()],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!(
                    "No permission on {t} '{r}' for user {name}"
                )));
            }
            store::audit(c, &by, "revoke", &format!("{t}:{r}"), &name)?;
            Ok(())
        })
        .await
    }

    /// Drops every grant on a resource (it was deleted; names get reused).
    pub async fn forget_resource(
        &self,
        by: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<()> {
        let (by, t, r) = (
            by.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.write(move |c| -> Result<()> {
            c.execute(
                "DELETE FROM auth_permissions WHERE resource_type = ?1 AND resource_id = ?2",
                &[t.as_str().into(), r.as_str().into()],
            )?;
            // A role naming it would grant a later resource of the same name: gone too.
            c.execute(
                "DELETE FROM auth_role_permissions WHERE resource_type = ?1 \
                 AND resource_pattern = ?2",
                &[t.as_str().into(), r.as_str().into()],
            )?;
            store::audit(c, &by, "delete", &format!("{t}:{r}"), "grants removed")?;
            Ok(())
        })
        .await
    }

    /// The stored grant of a user on a resource.
    pub async fn stored_grant(
        &self,
        username: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Option<Grant>> {
        let (name, t, r) = (
            username.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.inner
            .db
            .read(move |c| -> Result<_> {
                let u = store::user(c, &name)?;
                store::find_grant(c, u.id, &t, &r)
            })
            .await
    }

    /// Every grant of a user.
    pub async fn grants(&self, username: &str) -> Result<Vec<Grant>> {
        let name = username.to_string();
        self.inner
            .db
            .read(move |c| -> Result<_> {
                store::user(c, &name)?;
                store::grants_of(c, &name)
            })
            .await
    }

    /// Issues a bearer token for a user: its secret (shown once) and its description.
    pub async fn create_token(
        &self,
        by: &str,
        username: &str,
        name: &str,
        ttl: Option<Duration>,
        read_only: bool,
    ) -> Result<(String, TokenInfo)> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidParameter(
                "A token needs a name of at most 255 bytes, without control characters".into(),
            ));
        }
        let secret = password::new_token();
        let hash = password::token_hash(&secret);
        let id = format!("tok-{}", uuid::Uuid::new_v4().simple());
        let now = store::now_ms();
        let expires = ttl.map(|d| now.saturating_add(d.as_millis() as i64));
        let (user, by, label) = (username.to_string(), by.to_string(), name.to_string());
        let info = self
            .write(move |c| -> Result<TokenInfo> {
                let u = store::user(c, &user)?;
                c.execute(
                    "INSERT INTO auth_tokens (id, user_id, name, token_hash, read_only, \
                     created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &[
                        id.as_str().into(),
                        u.id.into(),
                        label.as_str().into(),
                        hash.as_str().into(),
                        i64::from(read_only).into(),
                        now.into(),
                        expires.into(),
                    ],
                )?;
                store::audit(
                    c,
                    &by,
                    "create_token",
                    &format!("user:{user}"),
                    &format!("token {id} '{label}'"),
                )?;
                Ok(TokenInfo {
                    id,
                    username: user,
                    name: label,
                    read_only,
                    created_at: now,
                    expires_at: expires,
                    revoked_at: None,
                })
            })
            .await?;
        Ok((secret, info))
    }

    /// A user's tokens (or everyone's, for `None`).
    pub async fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenInfo>> {
        let name = username.map(str::to_string);
        self.inner
            .db
            .read(move |c| -> Result<_> {
                let sql = format!(
                    "SELECT {} FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id \
                     WHERE (CAST(?1 AS TEXT) IS NULL OR u.username = ?1) ORDER BY t.created_at, t.id",
                    store::TOKEN_COLUMNS
                );
                Ok(c.query(&sql, &[name.as_deref().into()], store::token_row)?)
            })
            .await
    }

    /// A token's description.
    pub async fn token(&self, id: &str) -> Result<TokenInfo> {
        let id = id.to_string();
        self.inner
            .db
            .read(move |c| -> Result<_> {
                let sql = format!(
                    "SELECT {} FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id \
                     WHERE t.id = ?1",
                    store::TOKEN_COLUMNS
                );
                c.query_opt(&sql, &[id.as_str().into()], store::token_row)?
                    .ok_or_else(|| Error::NotFound(format!("Token '{id}' not found")))
            })
            .await
    }

    /// Revokes a token (it stops working at once, on every replica).
    pub async fn revoke_token(&self, by: &str, id: &str) -> Result<()> {
        let (id, by) = (id.to_string(), by.to_string());
        let now = store::now_ms();
        self.write(move |c| -> Result<()> {
            let n = c.execute(
                "UPDATE auth_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                &[now.into(), id.as_str().into()],
            )?;
            if n == 0 {
                return Err(Error::NotFound(format!(
                    "Token '{id}' not found or already revoked"
                )));
            }
            store::audit(c, &by, "revoke_token", &format!("token:{id}"), "")?;
            Ok(())
        })
        .await
    }

    /// Records an action in the audit log.
    pub async fn audit(&self, who: &str, action: &str, resource: &str, detail: &str) -> Result<()> {
        let (w, a, r, d) = (
            who.to_string(),
            action.to_string(),
            resource.to_string(),
            detail.to_string(),
        );
        self.inner
            .db
            .write(move |c| store::audit(c, &w, &a, &r, &d))
            .await
    }

    /// Audit entries after `after` (an id), oldest first, at most `limit`.
    pub async fn audit_log(
        &self,
        after: i64,
        limit: usize,
        username: Option<String>,
    ) -> Result<Vec<AuditEntry>> {
        self.inner
            .db
            .read(move |c| -> Result<_> {
                Ok(c.query(
                    "SELECT id, at_ms, username, action, resource, detail FROM auth_audit \
                     WHERE id > ?1 AND (CAST(?2 AS TEXT) IS NULL OR username = ?2) ORDER BY id LIMIT ?3",
                    &[
                        after.into(),
                        username.as_deref().into(),
                        (limit as i64).into(),
                    ],
                    |r| {
                        Ok(AuditEntry {
                            id: r.i64(0)?,
                            at_ms: r.i64(1)?,
                            username: r.string(2)?,
                            action: r.string(3)?,
                            resource: r.string(4)?,
                            detail: r.string(5)?,
                        })
                    },
                )?)
            })
            .await
    }
}

/// Which resources of one type a user may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Everything (an admin).
    All,
    /// Everything except these ids.
    AllBut(Vec<String>),
    /// Only these ids.
    Only(Vec<String>),
}

impl Visibility {
    /// Whether the id is readable.
    pub fn allows(&self, id: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::AllBut(v) => !v.iter().any(|x| x == id),
            Visibility::Only(v) => v.iter().any(|x| x == id),
        }
    }
}
