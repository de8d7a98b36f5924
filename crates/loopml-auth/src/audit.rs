//! Which requests the audit log records (beyond the auth API's own user, grant and token
//! changes, which [`crate::AuthService`] records itself) and what it says of them: deletions
//! and restorations, renames, model registrations, stage and alias moves, deployment changes
//! (create, replace, traffic, promote, rollback, delete), monitors, webhooks, and the gateway's
//! key, team and user management. A request is recorded once it succeeded, with the caller and
//! the resource; never a secret (a gateway key is named by its alias or its SHA-256 prefix).

use axum::http::Method;
use serde_json::Value;
use sha2::Digest;

/// Longest `detail` kept.
const MAX_DETAIL: usize = 500;

/// The audit action for a request, `None` when it is not audited.
pub fn action(method: &Method, path: &str) -> Option<&'static str> {
    if let Some(a) = gateway_action(path)
        && *method == Method::POST
    {
        return Some(a);
    }
    if let Some(r) = path.strip_prefix("/api/2.0/loopml/") {
        return loopml_action(method, r);
    }
    let p = path
        .strip_prefix("/api/")
        .or_else(|| path.strip_prefix("/ajax-api/"))?;
    let (_, rest) = p.split_once('/')?;
    let r = rest.strip_prefix("mlflow/")?;
    let post_or_delete = matches!(*method, Method::POST | Method::DELETE);
    Some(match (r, method) {
        ("experiments/delete", _) if post_or_delete => "delete_experiment",
        ("experiments/restore", _) if post_or_delete => "restore_experiment",
        ("experiments/update", _) if post_or_delete => "rename_experiment",
        ("runs/delete", _) if post_or_delete => "delete_run",
        ("runs/restore", _) if post_or_delete => "restore_run",
        ("registered-models/delete", _) if post_or_delete => "delete_registered_model",
        ("registered-models/rename", _) if post_or_delete => "rename_registered_model",
        ("registered-models/alias", &Method::POST) => "set_alias",
        ("registered-models/alias", &Method::DELETE) => "delete_alias",
        ("model-versions/create", &Method::POST) => "create_model_version",
        ("model-versions/delete", _) if post_or_delete => "delete_model_version",
        ("model-versions/transition-stage", &Method::POST) => "transition_stage",
        ("traces/delete-traces", &Method::POST) => "delete_traces",
        ("webhooks", &Method::POST) => "create_webhook",
        _ if r.starts_with("webhooks/") && *method == Method::DELETE => "delete_webhook",
        _ if r.starts_with("webhooks/") && *method == Method::PATCH => "update_webhook",
        _ if r.starts_with("logged-models/")
            && *method == Method::DELETE
            && r.matches('/').count() == 1 =>
        {
            "delete_logged_model"
        }
        _ if r.starts_with("datasets/")
            && *method == Method::DELETE
            && r.matches('/').count() == 1 =>
        {
            "delete_dataset"
        }
        _ => return None,
    })
}

fn gateway_action(path: &str) -> Option<&'static str> {
    Some(match path {
        "/key/generate" => "issue_gateway_key",
        "/key/update" => "update_gateway_key",
        "/key/delete" => "delete_gateway_key",
        "/key/block" => "block_gateway_key",
        "/key/unblock" => "unblock_gateway_key",
        "/team/new" => "create_gateway_team",
        "/team/update" => "update_gateway_team",
        "/team/delete" => "delete_gateway_team",
        "/user/new" => "create_gateway_user",
        "/user/update" => "update_gateway_user",
        "/user/delete" => "delete_gateway_user",
        _ => return None,
    })
}

fn loopml_action(method: &Method, r: &str) -> Option<&'static str> {
    let mut parts = r.split('/');
    let collection = parts.next()?;
    let name = parts.next().filter(|n| !n.is_empty());
    let tail = parts.next();
    Some(match (collection, name, tail, method) {
        ("deployments", None, None, &Method::POST) => "create_deployment",
        ("deployments", Some(_), None, &Method::PUT) => "replace_deployment",
        ("deployments", Some(_), None, &Method::DELETE) => "delete_deployment",
        ("deployments", Some(_), Some("promote"), &Method::POST) => "promote_deployment",
        ("deployments", Some(_), Some("rollback"), &Method::POST) => "rollback_deployment",
        ("deployments", Some(_), Some("traffic"), &Method::POST) => "set_deployment_traffic",
        ("deployments", Some(_), Some("switch"), &Method::POST) => "switch_deployment",
        ("monitors", None, None, &Method::POST) => "create_monitor",
        ("monitors", Some(_), None, &Method::PUT) => "replace_monitor",
        ("monitors", Some(_), None, &Method::DELETE) => "delete_monitor",
        _ => return None,
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A gateway key named without its secret.
fn key_name(key: &str) -> String {
    let h = sha2::Sha256::digest(key.as_bytes());
    let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("gateway_key:{hex}…")
}

/// `(resource, detail)` for an audited request: what it acted on, from its path and its
/// parameters (the JSON body or the query).
pub fn describe(path: &str, params: &Value, answer: &Value) -> (String, String) {
    let field = |k: &str| text(&params[k]);
    let mut detail = Vec::new();
    for k in [
        "version",
        "stage",
        "alias",
        "new_name",
        "archive_existing_versions",
        "percent",
        "to",
        "variant",
    ] {
        if let Some(v) = field(k) {
            detail.push(format!("{k}={v}"));
        }
    }
    let resource = if let Some(r) = path.strip_prefix("/api/2.0/loopml/") {
        let mut parts = r.split('/');
        let collection = parts.next().unwrap_or_default();
        let name = parts
            .next()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .or_else(|| field("name"))
            .or_else(|| text(&answer["name"]))
            .unwrap_or_default();
        format!("{}:{name}", collection.trim_end_matches('s'))
    } else if path.starts_with("/key/") {
        if let Some(a) = field("key_alias") {
            format!("gateway_key:{a}")
        } else if let Some(k) = field("key") {
            key_name(&k)
        } else if let Some(keys) = params["keys"].as_array() {
            keys.iter()
                .filter_map(Value::as_str)
                .map(key_name)
                .collect::<Vec<_>>()
                .join(",")
        } else if let Some(a) = text(&answer["key_alias"]) {
            format!("gateway_key:{a}")
        } else if let Some(t) = text(&answer["token"]) {
            format!("gateway_key:{}…", t.chars().take(12).collect::<String>())
        } else {
            "gateway_key:".into()
        }
    } else if let Some(kind) = ["team", "user"]
        .into_iter()
        .find(|k| path.starts_with(&format!("/{k}/")))
    {
        // `/team/…` and `/user/…`: one id (`team_id`), or several (`team_ids`) on delete.
        let id = format!("{kind}_id");
        let ids = params[format!("{id}s").as_str()]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect::<Vec<_>>().join(","));
        let named = field(&id).or_else(|| text(&answer[id.as_str()])).or(ids);
        format!("gateway_{kind}:{}", named.unwrap_or_default())
    } else if let Some(id) = field("experiment_id").filter(|_| path.contains("/experiments/")) {
        format!("experiment:{id}")
    } else if path.contains("/model-versions/") {
        let version = text(&answer["model_version"]["version"])
            .or_else(|| field("version"))
            .unwrap_or_default();
        format!(
            "model_version:{}/{version}",
            field("name").unwrap_or_default()
        )
    } else if let Some(id) = field("run_id").or_else(|| field("run_uuid")) {
        format!("run:{id}")
    } else if let Some(n) = field("name") {
        format!("registered_model:{n}")
    } else if path.contains("/traces/") {
        let ids: Vec<String> = params["trace_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default();
        if let Some(e) = field("experiment_id") {
            detail.push(format!("experiment_id={e}"));
        }
        format!("traces:{}", ids.join(","))
    } else {
        // `…/webhooks/{id}`, `…/logged-models/{id}`, `…/datasets/{id}`.
        let mut seg = path.rsplit('/');
        let id = seg.next().unwrap_or_default();
        let kind = seg.next().unwrap_or_default();
        format!("{}:{id}", kind.trim_end_matches('s').replace('-', "_"))
    };
    let mut detail = detail.join(" ");
    if detail.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
    }
    (resource, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_operations_an_auditor_asks_about_are_recorded() {
        let post = Method::POST;
        let del = Method::DELETE;
        let cases = [
            (
                &post,
                "/api/2.0/mlflow/experiments/delete",
                "delete_experiment",
            ),
            (&post, "/ajax-api/2.0/mlflow/runs/delete", "delete_run"),
            (
                &del,
                "/api/2.0/mlflow/registered-models/delete",
                "delete_registered_model",
            ),
            (
                &del,
                "/api/2.0/mlflow/registered-models/alias",
                "delete_alias",
            ),
            (
                &post,
                "/api/2.0/mlflow/model-versions/transition-stage",
                "transition_stage",
            ),
            (
                &post,
                "/api/2.0/loopml/deployments/churn/promote",
                "promote_deployment",
            ),
            (
                &post,
                "/api/2.0/loopml/deployments/churn/rollback",
                "rollback_deployment",
            ),
            (
                &del,
                "/api/2.0/loopml/deployments/churn",
                "delete_deployment",
            ),
            (&post, "/key/generate", "issue_gateway_key"),
            (&del, "/api/3.0/mlflow/datasets/d-1", "delete_dataset"),
        ];
        for (m, p, want) in cases {
            assert_eq!(action(m, p), Some(want), "{m} {p}");
        }
        // Reads and logging are not audited.
        assert_eq!(
            action(&Method::GET, "/api/2.0/loopml/deployments/churn"),
            None
        );
        assert_eq!(action(&post, "/api/2.0/mlflow/runs/log-batch"), None);
        assert_eq!(action(&Method::GET, "/key/generate"), None);
        assert_eq!(
            action(&del, "/api/2.0/mlflow/logged-models/m-1/tags/x"),
            None
        );
    }

    #[test]
    fn resources_are_named_and_secrets_never_are() {
        let (r, d) = describe(
            "/api/2.0/mlflow/model-versions/transition-stage",
            &json!({"name": "churn", "version": "3", "stage": "Production"}),
            &Value::Null,
        );
        assert_eq!(r, "model_version:churn/3");
        assert_eq!(d, "version=3 stage=Production");
        let (r, _) = describe(
            "/api/2.0/loopml/deployments/churn/promote",
            &Value::Null,
            &Value::Null,
        );
        assert_eq!(r, "deployment:churn");
        let secret = "sk-very-secret-key-value";
        let (r, d) = describe("/key/delete", &json!({"keys": [secret]}), &Value::Null);
        assert!(r.starts_with("gateway_key:") && !r.contains(secret), "{r}");
        assert!(!d.contains(secret));
        let (r, _) = describe(
            "/key/generate",
            &json!({}),
            &json!({"key": secret, "token": "abcdef0123456789abcdef"}),
        );
        assert!(
            !r.contains(secret) && r.starts_with("gateway_key:abcdef"),
            "{r}"
        );
        let (r, _) = describe(
            "/api/2.0/mlflow/experiments/delete",
            &json!({"experiment_id": "7"}),
            &Value::Null,
        );
        assert_eq!(r, "experiment:7");
        let (r, _) = describe(
            "/team/delete",
            &json!({"team_ids": ["a", "b"]}),
            &Value::Null,
        );
        assert_eq!(r, "gateway_team:a,b");
        let (r, _) = describe("/user/new", &json!({}), &json!({"user_id": "u1"}));
        assert_eq!(r, "gateway_user:u1");
        let (r, _) = describe("/api/3.0/mlflow/datasets/d-1", &Value::Null, &Value::Null);
        assert_eq!(r, "dataset:d-1");
    }
}
