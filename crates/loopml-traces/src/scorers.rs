//! The scorer registry (`Scorer.register`, `list_scorers`, `get_scorer`, `delete_scorer`):
//! versioned serialized scorers per experiment. Scorers written as Python code (`@scorer`,
//! MLflow's `call_source`) are refused, as `mlflow server` refuses them unless told otherwise:
//! loading one executes its code. Built-in judges and instruction judges are data and are kept.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use loopml_store::Conn;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::service::TraceService;

fn ok(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidParameter(m.into())
}

/// Request fields from the JSON body (POST, DELETE) or the query string (GET).
fn fields(raw: Option<String>, body: &[u8]) -> Result<Value> {
    let mut v: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| invalid(format!("The request body is not JSON: {e}")))?
    };
    for (k, vals) in crate::routes::query(raw) {
        if v.get(&k).is_none()
            && let Some(first) = vals.into_iter().next()
        {
            v[k] = json!(first);
        }
    }
    Ok(v)
}

fn experiment(v: &Value) -> Result<i64> {
    let e = &v["experiment_id"];
    e.as_str()
        .and_then(|s| s.parse().ok())
        .or(e.as_i64())
        .ok_or_else(|| invalid("'experiment_id' is required"))
}

fn version(v: &Value) -> Result<Option<i64>> {
    match &v["version"] {
        Value::Null => Ok(None),
        Value::String(s) if s == "all" || s.is_empty() => Ok(None),
        x => x
            .as_i64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| invalid("'version' must be a number")),
    }
}

fn name(v: &Value) -> Result<String> {
    v["name"]
        .as_str()
        .filter(|n| !n.is_empty() && n.len() <= 256)
        .map(str::to_string)
        .ok_or_else(|| invalid("'name' is required (at most 256 characters)"))
}

/// Whether a serialized scorer holds Python code (a decorator scorer), at any depth.
fn has_code(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("call_source").is_some_and(|c| !c.is_null()) || m.values().any(has_code)
        }
        Value::Array(a) => a.iter().any(has_code),
        Value::String(s) if s.contains("call_source") => {
            serde_json::from_str::<Value>(s).is_ok_and(|inner| has_code(&inner))
        }
        _ => false,
    }
}

fn scorer_json(r: &loopml_store::Row<'_>) -> std::result::Result<Value, loopml_store::StoreError> {
    Ok(json!({
        "experiment_id": r.i64(0)?, "scorer_name": r.string(1)?, "scorer_version": r.i64(2)?,
        "serialized_scorer": r.string(3)?, "creation_time": r.i64(4)?, "scorer_id": r.string(5)?,
    }))
}

const COLUMNS: &str = "experiment_id, name, version, serialized, creation_time, scorer_id";

async fn register(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = fields(None, &body)?;
    let exp = experiment(&v)?;
    let name = name(&v)?;
    let serialized = v["serialized_scorer"]
        .as_str()
        .filter(|x| !x.is_empty())
        .ok_or_else(|| invalid("'serialized_scorer' is required"))?
        .to_string();
    let parsed: Value = serde_json::from_str(&serialized)
        .map_err(|e| invalid(format!("'serialized_scorer' is not JSON: {e}")))?;
    if has_code(&parsed) {
        return Err(invalid(
            "Custom code scorers (@scorer functions) cannot be registered on this server: \
             loading one executes its Python code. Register built-in or instruction judges, or \
             run code scorers in mlflow.genai.evaluate.",
        ));
    }
    s.tracking().get_experiment(exp).await?;
    let now = crate::now_ms();
    let out = s
        .db()
        .write(move |c| -> Result<Value> {
            let next = c
                .query_opt(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM scorers \
                     WHERE experiment_id = ?1 AND name = ?2",
                    &[exp.into(), name.as_str().into()],
                    |r| r.i64(0),
                )?
                .unwrap_or(1);
            let id = uuid::Uuid::new_v4().to_string();
            c.execute(
                "INSERT INTO scorers (scorer_id, experiment_id, name, version, serialized, \
                 creation_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    id.as_str().into(),
                    exp.into(),
                    name.as_str().into(),
                    next.into(),
                    serialized.as_str().into(),
                    now.into(),
                ],
            )?;
            Ok(
                json!({"version": next, "scorer_id": id, "experiment_id": exp.to_string(),
                "name": name, "serialized_scorer": serialized, "creation_time": now}),
            )
        })
        .await?;
    Ok(ok(out))
}

fn latest(c: &Conn<'_>, exp: i64) -> Result<Vec<Value>> {
    Ok(c.query(
        &format!(
            "SELECT {COLUMNS} FROM scorers s WHERE experiment_id = ?1 AND version = \
             (SELECT MAX(version) FROM scorers x WHERE x.experiment_id = s.experiment_id \
             AND x.name = s.name) ORDER BY name"
        ),
        &[exp.into()],
        scorer_json,
    )?)
}

async fn list(
    State(s): State<TraceService>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let v = fields(q, &body)?;
    let exp = experiment(&v)?;
    let out = s.db().read(move |c| latest(c, exp)).await?;
    Ok(ok(json!({"scorers": out})))
}

async fn versions(
    State(s): State<TraceService>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let v = fields(q, &body)?;
    let (exp, name) = (experiment(&v)?, name(&v)?);
    let out = s
        .db()
        .read(move |c| -> Result<Vec<Value>> {
            Ok(c.query(
                &format!(
                    "SELECT {COLUMNS} FROM scorers WHERE experiment_id = ?1 AND name = ?2 \
                     ORDER BY version"
                ),
                &[exp.into(), name.as_str().into()],
                scorer_json,
            )?)
        })
        .await?;
    Ok(ok(json!({"scorers": out})))
}

async fn get_one(
    State(s): State<TraceService>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let v = fields(q, &body)?;
    let (exp, name, version) = (experiment(&v)?, name(&v)?, version(&v)?);
    let out = s
        .db()
        .read(move |c| -> Result<Value> {
            c.query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM scorers WHERE experiment_id = ?1 AND name = ?2 \
                     AND version <= ?3 ORDER BY version DESC LIMIT 1"
                ),
                &[
                    exp.into(),
                    name.as_str().into(),
                    version.unwrap_or(i64::MAX).into(),
                ],
                scorer_json,
            )?
            .filter(|v| version.is_none_or(|want| v["scorer_version"] == want))
            .ok_or_else(|| {
                Error::NotFound(format!("Scorer '{name}' not found in experiment {exp}"))
            })
        })
        .await?;
    Ok(ok(json!({"scorer": out})))
}

async fn delete(
    State(s): State<TraceService>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let v = fields(q, &body)?;
    let (exp, name, version) = (experiment(&v)?, name(&v)?, version(&v)?);
    s.db()
        .write(move |c| -> Result<()> {
            let n = match version {
                Some(ver) => c.execute(
                    "DELETE FROM scorers WHERE experiment_id = ?1 AND name = ?2 AND version = ?3",
                    &[exp.into(), name.as_str().into(), ver.into()],
                )?,
                None => c.execute(
                    "DELETE FROM scorers WHERE experiment_id = ?1 AND name = ?2",
                    &[exp.into(), name.as_str().into()],
                )?,
            };
            if n == 0 {
                return Err(Error::NotFound(format!(
                    "Scorer '{name}' not found in experiment {exp}"
                )));
            }
            Ok(())
        })
        .await?;
    Ok(ok(json!({})))
}

/// No scorer runs online here: the list of online configs is empty.
async fn online_configs() -> Response {
    ok(json!({"configs": []}))
}

/// Online scoring (judges run by the server on live traces) is not run by loopml yet.
async fn set_online_config() -> Result<Response> {
    Err(invalid(
        "Online scoring is not run by this server: score traces with mlflow.genai.evaluate \
         (data=mlflow.search_traces(...)) instead",
    ))
}

/// The scorer-registry routes.
pub fn router(s: TraceService) -> Router {
    let b = "/api/3.0/mlflow/scorers";
    Router::new()
        .route(&format!("{b}/register"), post(register))
        .route(&format!("{b}/list"), get(list))
        .route(&format!("{b}/versions"), get(versions))
        .route(&format!("{b}/get"), get(get_one))
        .route(
            &format!("{b}/delete"),
            axum::routing::delete(delete).post(delete),
        )
        .route(&format!("{b}/online-configs"), get(online_configs))
        .route(
            &format!("{b}/online-config"),
            axum::routing::put(set_online_config),
        )
        .with_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_scorers_are_found_at_any_depth() {
        assert!(has_code(&json!({"call_source": "return 1", "name": "x"})));
        assert!(has_code(
            &json!({"aggregations": [{"inner": {"call_source": "x"}}]})
        ));
        assert!(!has_code(
            &json!({"builtin_scorer_class": "Guidelines", "call_source": null})
        ));
    }
}
