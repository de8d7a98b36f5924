//! HTTP for monitors, under `/api/2.0/loopml/`: `monitors` (list, create or replace),
//! `monitors/{name}` (get with latest results and recent alerts, delete), `monitors/{name}/evaluate`
//! (now), `monitors/{name}/results?check&since&limit`, and `alerts?monitor&status&limit`.
//! Errors are MLflow-shaped: `{"error_code", "message"}`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::service::MonitorService;
use crate::spec::MonitorSpec;

/// An error answered in MLflow's shape.
#[derive(Debug)]
pub struct ApiError(pub(crate) Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            Error::Evaluation(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
            Error::Store(e) => {
                let (code, status) = e.mlflow_code_and_status();
                (status, code)
            }
        };
        (
            status,
            axum::Json(json!({"error_code": code, "message": self.0.to_string()})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

async fn list(State(s): State<MonitorService>) -> ApiResult {
    let mut out = Vec::new();
    for m in s.list().await? {
        let latest = s.latest(&m.name).await.unwrap_or_default();
        out.push(json!({"monitor": m, "latest": latest}));
    }
    ok(json!({"monitors": out}))
}

async fn create(State(s): State<MonitorService>, body: axum::body::Bytes) -> ApiResult {
    let text =
        std::str::from_utf8(&body).map_err(|_| Error::Invalid("the body is not UTF-8".into()))?;
    let spec = MonitorSpec::parse(text)?;
    let spec = s.apply(spec).await?;
    ok(json!({"monitor": spec}))
}

async fn show(State(s): State<MonitorService>, Path(name): Path<String>) -> ApiResult {
    let spec = s.get(&name).await?;
    let latest = s.latest(&name).await?;
    let alerts = s.alerts(Some(name), None, 20).await?;
    ok(json!({"monitor": spec, "latest": latest, "alerts": alerts}))
}

async fn delete(State(s): State<MonitorService>, Path(name): Path<String>) -> ApiResult {
    s.delete(&name).await?;
    ok(json!({}))
}

async fn evaluate(State(s): State<MonitorService>, Path(name): Path<String>) -> ApiResult {
    let (evaluation, alerts) = s.evaluate(&name).await?;
    ok(json!({"evaluation": evaluation, "alerts": alerts}))
}

#[derive(Debug, Deserialize)]
struct ResultsQuery {
    check: Option<String>,
    since: Option<i64>,
    limit: Option<usize>,
}

async fn results(
    State(s): State<MonitorService>,
    Path(name): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> ApiResult {
    s.get(&name).await?;
    let r = s
        .results(&name, q.check, q.since, q.limit.unwrap_or(100))
        .await?;
    ok(json!({"results": r}))
}

#[derive(Debug, Deserialize)]
struct AlertsQuery {
    monitor: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn alerts(State(s): State<MonitorService>, Query(q): Query<AlertsQuery>) -> ApiResult {
    if let Some(st) = &q.status
        && !matches!(st.as_str(), "pending" | "delivered" | "failed")
    {
        return Err(Error::Invalid(format!(
            "status '{st}' is not one of pending, delivered, failed"
        ))
        .into());
    }
    let a = s
        .alerts(q.monitor, q.status, q.limit.unwrap_or(100))
        .await?;
    ok(json!({"alerts": a}))
}

/// The monitor API's routes.
pub fn router(service: MonitorService) -> Router {
    Router::new()
        .route("/api/2.0/loopml/monitors", get(list).post(create))
        .route("/api/2.0/loopml/monitors/{name}", get(show).delete(delete))
        .route("/api/2.0/loopml/monitors/{name}/evaluate", post(evaluate))
        .route("/api/2.0/loopml/monitors/{name}/results", get(results))
        .route("/api/2.0/loopml/alerts", get(alerts))
        .with_state(service)
}
