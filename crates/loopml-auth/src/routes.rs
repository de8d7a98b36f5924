//! MLflow's auth REST API (users, the 3.x per-user permission routes and the legacy 2.0
//! experiment and registered-model permission routes) plus loopml's tokens and audit log,
//! under both `/api` and `/ajax-api`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Router, http::HeaderMap};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::permission::{Action, Permission};
use crate::service::{AuthService, Principal};

fn ok(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// A JSON body (MLflow refuses other content types for the auth API).
fn body(headers: &HeaderMap, b: &Bytes) -> Result<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !b.is_empty() && !ct.starts_with("application/json") {
        return Err(Error::InvalidParameter(
            "Invalid content type. Must be application/json".into(),
        ));
    }
    if b.is_empty() {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(b)
        .map_err(|e| Error::InvalidParameter(format!("Malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(Error::InvalidParameter(
            "The body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

fn text<'a>(v: &'a Value, k: &str) -> Result<&'a str> {
    v[k].as_str().ok_or_else(|| {
        Error::InvalidParameter(format!("Missing value for required parameter '{k}'"))
    })
}

fn id_text(v: &Value, k: &str) -> Result<String> {
    match &v[k] {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::InvalidParameter(format!(
            "Missing value for required parameter '{k}'"
        ))),
    }
}

fn q<'a>(q: &'a std::collections::HashMap<String, String>, k: &str) -> Result<&'a str> {
    q.get(k)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::InvalidParameter(format!("Missing value for required parameter '{k}'"))
        })
}

fn admin(p: &Principal) -> Result<()> {
    if p.user.is_admin {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "Permission denied: admins only".into(),
        ))
    }
}

fn self_or_admin(p: &Principal, username: &str) -> Result<()> {
    if p.user.is_admin || p.user.username == username {
        Ok(())
    } else {
        Err(Error::PermissionDenied("Permission denied".into()))
    }
}

fn writable(p: &Principal) -> Result<()> {
    if p.read_only {
        Err(Error::read_only())
    } else {
        Ok(())
    }
}

/// MANAGE on the resource (to grant or revoke on it).
async fn manages(s: &AuthService, p: &Principal, t: &str, id: &str) -> Result<()> {
    writable(p)?;
    s.check(p, t, id, Action::Manage).await
}

fn user_json(u: &crate::store::User) -> Value {
    json!({"id": u.id, "username": u.username, "is_admin": u.is_admin})
}

fn grant_json(g: &crate::store::Grant) -> Value {
    json!({"permission": g.permission, "resource_type": g.resource_type,
        "resource_pattern": g.resource_id, "role_id": g.id,
        "role_name": format!("__user_{}__", g.username), "workspace": "default"})
}

type Q = Query<std::collections::HashMap<String, String>>;

async fn create_user(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    admin(&p)?;
    writable(&p)?;
    let v = body(&headers, &b)?;
    let u = s
        .create_user(
            &p.user.username,
            text(&v, "username")?,
            text(&v, "password")?,
        )
        .await?;
    Ok(ok(json!({"user": user_json(&u)})))
}

async fn get_user(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    let name = q(&qs, "username")?;
    self_or_admin(&p, name)?;
    let u = s.get_user(name).await?;
    Ok(ok(json!({"user": user_json(&u)})))
}

async fn current_user(Extension(p): Extension<Principal>) -> Response {
    ok(json!({"is_basic_auth": p.scheme == "basic", "user": user_json(&p.user)}))
}

/// Every user: admins only (MLflow shows the list to anyone).
async fn list_users(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
) -> Result<Response> {
    admin(&p)?;
    let users: Vec<Value> = s
        .list_users()
        .await?
        .iter()
        .map(|u| {
            let mut j = user_json(u);
            j["roles"] = json!([]);
            j
        })
        .collect();
    Ok(ok(json!({"users": users})))
}

async fn update_password(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    writable(&p)?;
    let v = body(&headers, &b)?;
    let name = text(&v, "username")?;
    let pw = text(&v, "password")?;
    self_or_admin(&p, name)?;
    if !p.user.is_admin {
        // Self-service: the current password, and a different new one.
        let current = v["current_password"].as_str().ok_or_else(|| {
            Error::InvalidParameter(
                "'current_password' is required to change your own password".into(),
            )
        })?;
        if !s.password_matches(name, current).await? {
            return Err(Error::PermissionDenied(
                "The current password is wrong".into(),
            ));
        }
        if current == pw {
            return Err(Error::InvalidParameter(
                "The new password must differ from the current one".into(),
            ));
        }
    }
    s.update_password(&p.user.username, name, pw).await?;
    Ok(ok(json!({})))
}

async fn update_admin(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    admin(&p)?;
    writable(&p)?;
    let v = body(&headers, &b)?;
    let is_admin = v["is_admin"]
        .as_bool()
        .or_else(|| {
            v["is_admin"]
                .as_str()
                .map(|s| s.eq_ignore_ascii_case("true"))
        })
        .ok_or_else(|| Error::InvalidParameter("'is_admin' must be true or false".into()))?;
    s.update_admin(&p.user.username, text(&v, "username")?, is_admin)
        .await?;
    Ok(ok(json!({})))
}

async fn delete_user(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    Query(qs): Q,
    b: Bytes,
) -> Result<Response> {
    admin(&p)?;
    writable(&p)?;
    let v = body(&headers, &b)?;
    let name = match v["username"].as_str() {
        Some(n) => n.to_string(),
        None => q(&qs, "username")?.to_string(),
    };
    if name == p.user.username {
        return Err(Error::InvalidParameter("You cannot delete yourself".into()));
    }
    s.delete_user(&p.user.username, &name).await?;
    Ok(ok(json!({})))
}

async fn current_permissions(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
) -> Result<Response> {
    let grants = s.grants(&p.user.username).await?;
    Ok(ok(json!({"is_admin": p.user.is_admin,
        "permissions": grants.iter().map(grant_json).collect::<Vec<_>>()})))
}

async fn list_permissions(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    let name = q(&qs, "username")?;
    self_or_admin(&p, name)?;
    let u = s.get_user(name).await?;
    let grants = s.grants(name).await?;
    Ok(ok(json!({"is_admin": u.is_admin,
        "permissions": grants.iter().map(grant_json).collect::<Vec<_>>()})))
}

async fn grant(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = body(&headers, &b)?;
    let (t, id) = (text(&v, "resource_type")?, id_text(&v, "resource_id")?);
    let perm: Permission = text(&v, "permission")?
        .parse()
        .map_err(Error::InvalidParameter)?;
    manages(&s, &p, t, &id).await?;
    s.grant(&p.user.username, text(&v, "username")?, t, &id, perm, true)
        .await?;
    Ok(ok(json!({})))
}

async fn revoke(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = body(&headers, &b)?;
    let (t, id) = (text(&v, "resource_type")?, id_text(&v, "resource_id")?);
    manages(&s, &p, t, &id).await?;
    s.revoke(&p.user.username, text(&v, "username")?, t, &id)
        .await?;
    Ok(ok(json!({})))
}

async fn get_permission(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    let name = q(&qs, "username")?;
    let (t, id) = (q(&qs, "resource_type")?, q(&qs, "resource_id")?);
    // Self, an admin, or whoever manages the resource (MLflow refuses the owner: it could
    // grant but not look).
    if self_or_admin(&p, name).is_err() {
        s.check(&p, t, id, Action::Manage).await?;
    }
    let u = s.get_user(name).await?;
    let level = s.permission(&u, t, id).await?;
    Ok(ok(
        json!({"allowed": level.allows(Action::Use), "permission": level.name()}),
    ))
}

/// The legacy 2.0 routes: `experiments/permissions/*` and `registered-models/permissions/*`.
#[derive(Clone, Copy)]
enum Legacy {
    Experiment,
    Model,
}

impl Legacy {
    fn resource(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Legacy::Experiment => ("experiment", "experiment_id", "experiment_permission"),
            Legacy::Model => ("registered_model", "name", "registered_model_permission"),
        }
    }
}

async fn legacy_write(
    s: &AuthService,
    p: &Principal,
    which: Legacy,
    v: &Value,
    create: bool,
) -> Result<Response> {
    let (t, key, _) = which.resource();
    let id = id_text(v, key)?;
    let perm: Permission = text(v, "permission")?
        .parse()
        .map_err(Error::InvalidParameter)?;
    manages(s, p, t, &id).await?;
    s.grant(&p.user.username, text(v, "username")?, t, &id, perm, create)
        .await?;
    legacy_answer(s, which, text(v, "username")?, &id).await
}

async fn legacy_answer(
    s: &AuthService,
    which: Legacy,
    username: &str,
    id: &str,
) -> Result<Response> {
    let (t, key, wrapper) = which.resource();
    let u = s.get_user(username).await?;
    let g = s.stored_grant(username, t, id).await?.ok_or_else(|| {
        Error::NotFound(format!("No permission on {t} '{id}' for user {username}"))
    })?;
    Ok(ok(
        json!({wrapper: {key: id, "user_id": u.id, "permission": g.permission}}),
    ))
}

async fn legacy(
    s: AuthService,
    p: Principal,
    which: Legacy,
    op: &str,
    headers: HeaderMap,
    qs: std::collections::HashMap<String, String>,
    b: Bytes,
) -> Result<Response> {
    let (t, key, _) = which.resource();
    match op {
        "create" => legacy_write(&s, &p, which, &body(&headers, &b)?, true).await,
        "update" => legacy_write(&s, &p, which, &body(&headers, &b)?, false).await,
        "delete" => {
            let v = body(&headers, &b)?;
            let id = id_text(&v, key)?;
            manages(&s, &p, t, &id).await?;
            s.revoke(&p.user.username, text(&v, "username")?, t, &id)
                .await?;
            Ok(ok(json!({})))
        }
        _ => {
            let name = q(&qs, "username")?;
            let id = q(&qs, key)?;
            if !p.user.is_admin && p.user.username != name {
                s.check(&p, t, id, Action::Manage).await?;
            }
            legacy_answer(&s, which, name, id).await
        }
    }
}

macro_rules! legacy_route {
    ($which:expr, $op:literal) => {
        move |State(s): State<AuthService>,
              Extension(p): Extension<Principal>,
              headers: HeaderMap,
              Query(qs): Q,
              b: Bytes| async move { legacy(s, p, $which, $op, headers, qs, b).await }
    };
}

async fn create_token(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    writable(&p)?;
    let v = body(&headers, &b)?;
    let username = v["username"]
        .as_str()
        .unwrap_or(&p.user.username)
        .to_string();
    self_or_admin(&p, &username)?;
    let ttl = match &v["ttl_seconds"] {
        Value::Null => None,
        t => Some(Duration::from_secs(
            t.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                Error::InvalidParameter("'ttl_seconds' must be a positive integer".into())
            })?,
        )),
    };
    let name = v["name"].as_str().unwrap_or("token");
    let read_only = v["read_only"].as_bool().unwrap_or(false);
    let (secret, info) = s
        .create_token(&p.user.username, &username, name, ttl, read_only)
        .await?;
    Ok(ok(json!({"token": secret, "token_info": info})))
}

async fn list_tokens(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    let who = match qs.get("username") {
        Some(u) => {
            self_or_admin(&p, u)?;
            Some(u.as_str())
        }
        None if p.user.is_admin => None,
        None => Some(p.user.username.as_str()),
    };
    Ok(ok(json!({"tokens": s.tokens(who).await?})))
}

async fn revoke_token(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    writable(&p)?;
    let v = body(&headers, &b)?;
    let id = text(&v, "id")?;
    let t = s.token(id).await?;
    self_or_admin(&p, &t.username)?;
    s.revoke_token(&p.user.username, id).await?;
    Ok(ok(json!({})))
}

async fn audit(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    admin(&p)?;
    let after = qs
        .get("after")
        .map(|a| a.parse::<i64>())
        .transpose()
        .map_err(|_| Error::InvalidParameter("'after' must be an audit entry id".into()))?;
    let limit = qs
        .get("max_results")
        .map(|a| a.parse::<usize>())
        .transpose()
        .map_err(|_| Error::InvalidParameter("'max_results' must be a number".into()))?
        .unwrap_or(1000)
        .clamp(1, 10_000);
    let entries = s
        .audit_log(after.unwrap_or(0), limit, qs.get("username").cloned())
        .await?;
    Ok(ok(json!({"entries": entries})))
}

// ---- Roles (MLflow 3's RBAC) ----

fn int(v: &Value, k: &str) -> Result<i64> {
    match &v[k] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        Error::InvalidParameter(format!(
            "Missing or invalid value for required parameter '{k}'"
        ))
    })
}

fn q_int(qs: &std::collections::HashMap<String, String>, k: &str) -> Result<i64> {
    q(qs, k)?
        .parse()
        .map_err(|_| Error::InvalidParameter(format!("'{k}' must be an integer")))
}

fn permission_of(v: &Value) -> Result<Permission> {
    text(v, "permission")?
        .parse()
        .map_err(Error::InvalidParameter)
}

/// The JSON body of a role change, from an admin who may write (roles are managed by
/// admins: loopml has no workspace admins).
fn role_change(p: &Principal, headers: &HeaderMap, b: &Bytes) -> Result<Value> {
    admin(p)?;
    writable(p)?;
    body(headers, b)
}

async fn create_role(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    let ws = v["workspace"]
        .as_str()
        .unwrap_or(crate::roles::DEFAULT_WORKSPACE);
    let role = s
        .create_role(
            &p.user.username,
            ws,
            text(&v, "name")?,
            v["description"].as_str(),
        )
        .await?;
    Ok(ok(json!({ "role": role })))
}

async fn get_role(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    admin(&p)?;
    Ok(ok(json!({ "role": s.role(q_int(&qs, "role_id")?).await? })))
}

async fn list_roles(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    admin(&p)?;
    let roles = s.roles(qs.get("workspace").map(String::as_str)).await?;
    Ok(ok(json!({ "roles": roles })))
}

async fn update_role(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    let role = s
        .update_role(
            &p.user.username,
            int(&v, "role_id")?,
            v["name"].as_str(),
            v["description"].as_str(),
        )
        .await?;
    Ok(ok(json!({ "role": role })))
}

async fn delete_role(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    s.delete_role(&p.user.username, int(&v, "role_id")?).await?;
    Ok(ok(json!({})))
}

async fn add_role_permission(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    let rp = s
        .add_role_permission(
            &p.user.username,
            int(&v, "role_id")?,
            text(&v, "resource_type")?,
            &id_text(&v, "resource_pattern")?,
            permission_of(&v)?,
        )
        .await?;
    Ok(ok(json!({ "role_permission": rp })))
}

async fn remove_role_permission(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    s.remove_role_permission(&p.user.username, int(&v, "role_permission_id")?)
        .await?;
    Ok(ok(json!({})))
}

async fn list_role_permissions(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    admin(&p)?;
    let role = s.role(q_int(&qs, "role_id")?).await?;
    Ok(ok(json!({ "role_permissions": role.permissions })))
}

async fn update_role_permission(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    let rp = s
        .update_role_permission(
            &p.user.username,
            int(&v, "role_permission_id")?,
            permission_of(&v)?,
        )
        .await?;
    Ok(ok(json!({ "role_permission": rp })))
}

async fn assign_role(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    let a = s
        .assign_role(&p.user.username, text(&v, "username")?, int(&v, "role_id")?)
        .await?;
    Ok(ok(json!({ "assignment": a })))
}

async fn unassign_role(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response> {
    let v = role_change(&p, &headers, &b)?;
    s.unassign_role(&p.user.username, text(&v, "username")?, int(&v, "role_id")?)
        .await?;
    Ok(ok(json!({})))
}

async fn list_role_users(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    admin(&p)?;
    let a = s.role_users(q_int(&qs, "role_id")?).await?;
    Ok(ok(json!({ "assignments": a })))
}

async fn list_user_roles(
    State(s): State<AuthService>,
    Extension(p): Extension<Principal>,
    Query(qs): Q,
) -> Result<Response> {
    let name = q(&qs, "username")?;
    self_or_admin(&p, name)?;
    Ok(ok(json!({ "roles": s.user_roles(name).await? })))
}

/// The auth API's routes (behind the auth layer, which puts the [`Principal`] in).
pub fn router(s: AuthService) -> Router {
    let mut r = Router::new();
    for prefix in ["/api", "/ajax-api"] {
        let v2 = format!("{prefix}/2.0/mlflow");
        let v3 = format!("{prefix}/3.0/mlflow");
        r = r
            .route(&format!("{v2}/users/create"), post(create_user))
            .route(&format!("{v2}/users/get"), get(get_user))
            .route(&format!("{v2}/users/current"), get(current_user))
            .route(&format!("{v2}/users/list"), get(list_users))
            .route(
                &format!("{v2}/users/update-password"),
                patch(update_password),
            )
            .route(&format!("{v2}/users/update-admin"), patch(update_admin))
            .route(&format!("{v2}/users/delete"), delete(delete_user))
            .route(
                &format!("{v3}/users/current/permissions"),
                get(current_permissions),
            )
            .route(
                &format!("{v3}/users/permissions/list"),
                get(list_permissions),
            )
            .route(&format!("{v3}/users/permissions/grant"), post(grant))
            .route(&format!("{v3}/users/permissions/revoke"), post(revoke))
            .route(&format!("{v3}/users/permissions/get"), get(get_permission))
            .route(&format!("{v2}/tokens/create"), post(create_token))
            .route(&format!("{v2}/tokens/list"), get(list_tokens))
            .route(&format!("{v2}/tokens/revoke"), post(revoke_token))
            .route(&format!("{v2}/audit"), get(audit))
            .route(&format!("{v3}/roles/create"), post(create_role))
            .route(&format!("{v3}/roles/get"), get(get_role))
            .route(&format!("{v3}/roles/list"), get(list_roles))
            .route(&format!("{v3}/roles/update"), patch(update_role))
            .route(&format!("{v3}/roles/delete"), delete(delete_role))
            .route(
                &format!("{v3}/roles/permissions/add"),
                post(add_role_permission),
            )
            .route(
                &format!("{v3}/roles/permissions/remove"),
                delete(remove_role_permission),
            )
            .route(
                &format!("{v3}/roles/permissions/list"),
                get(list_role_permissions),
            )
            .route(
                &format!("{v3}/roles/permissions/update"),
                patch(update_role_permission),
            )
            .route(&format!("{v3}/roles/assign"), post(assign_role))
            .route(&format!("{v3}/roles/unassign"), delete(unassign_role))
            .route(&format!("{v3}/roles/users/list"), get(list_role_users))
            .route(&format!("{v3}/users/roles/list"), get(list_user_roles));
        for (base, which) in [
            ("experiments", Legacy::Experiment),
            ("registered-models", Legacy::Model),
        ] {
            let p = format!("{v2}/{base}/permissions");
            r = r
                .route(&format!("{p}/create"), post(legacy_route!(which, "create")))
                .route(&format!("{p}/get"), get(legacy_route!(which, "get")))
                .route(
                    &format!("{p}/update"),
                    patch(legacy_route!(which, "update")),
                )
                .route(
                    &format!("{p}/delete"),
                    delete(legacy_route!(which, "delete")),
                );
        }
    }
    r.with_state(s)
}
