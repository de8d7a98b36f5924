//! HTTP routes: MLflow's tracking REST API (`/api/2.0/mlflow/...`, also under `/ajax-api`),
//! the artifact proxy (`/api/2.0/mlflow-artifacts/...`) and `/api/3.0/mlflow/server-info`.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use futures::TryStreamExt;
use loopml_store::ArtifactPath;
use serde::Serialize;

use crate::api::{self, Mlflow, WireKeyValue};
use crate::error::{Error, Result};
use crate::model::{
    Dataset, KeyValue, LifecycleStage, LoggedMetric, LoggedModelStatus, Metric, RunStatus,
};
use crate::service::{
    Batch, ModelSearch, NewDatasetInput, TrackingService, now_ms, parse_metric_value,
    parse_view_type,
};
use crate::sql::ModelOrder;
use crate::validation::parse_experiment_id;

/// A JSON response body (`application/json`).
pub fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            Error::InvalidParameter(format!("could not encode response: {e}")).into_response()
        }
    }
}

/// The empty MLflow answer `{}`.
pub fn empty() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// A required, non-empty string parameter, or MLflow's "missing value" error.
pub fn required(v: Option<String>, name: &str) -> Result<String> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| Error::missing(name))
}

fn run_id(run_id: Option<String>, run_uuid: Option<String>) -> Result<String> {
    run_id
        .filter(|s| !s.is_empty())
        .or(run_uuid.filter(|s| !s.is_empty()))
        .ok_or_else(|| Error::missing("run_id"))
}

fn experiment_id(v: Option<String>) -> Result<i64> {
    parse_experiment_id(&required(v, "experiment_id")?)
}

/// Wire `{key, value}` pairs into domain pairs (a missing key is an error).
pub fn key_values(items: Vec<WireKeyValue>) -> Result<Vec<KeyValue>> {
    key_values_of(items, None)
}

/// Like [`key_values`], naming a missing key by its place in the request (`params[2].key`),
/// as mlflow server does for log-batch.
fn key_values_of(items: Vec<WireKeyValue>, field: Option<&str>) -> Result<Vec<KeyValue>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, kv)| {
            Ok(KeyValue {
                key: kv.key.ok_or_else(|| match field {
                    Some(f) => Error::missing(&format!("{f}[{i}].key")),
                    None => Error::missing("key"),
                })?,
                value: kv.value.unwrap_or_default(),
            })
        })
        .collect()
}

// ------------------------------------------------------------------ experiments

async fn create_experiment(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::CreateExperiment>,
) -> Result<Response> {
    let name = required(r.name, "name")?;
    let id = s
        .create_experiment(name, r.artifact_location, key_values(r.tags)?)
        .await?;
    Ok(json(
        &serde_json::json!({ "experiment_id": id.to_string() }),
    ))
}

#[derive(Serialize)]
struct ExperimentResponse<'a> {
    experiment: api::ExperimentJson<'a>,
}

async fn get_experiment(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ExperimentRef>,
) -> Result<Response> {
    let e = s.get_experiment(experiment_id(r.experiment_id)?).await?;
    Ok(json(&ExperimentResponse {
        experiment: (&e).into(),
    }))
}

async fn get_experiment_by_name(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ExperimentByName>,
) -> Result<Response> {
    let e = s
        .get_experiment_by_name(required(r.experiment_name, "experiment_name")?)
        .await?;
    Ok(json(&ExperimentResponse {
        experiment: (&e).into(),
    }))
}

#[derive(Serialize)]
struct ExperimentsPage<'a> {
    experiments: Vec<api::ExperimentJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<&'a str>,
}

async fn search_experiments(
    State(s): State<TrackingService>,
    readable: Option<axum::Extension<loopml_store::ReadableExperiments>>,
    Mlflow(r): Mlflow<api::SearchExperiments>,
) -> Result<Response> {
    let view = parse_view_type(r.view_type.as_deref())?;
    let readable = readable.map(|axum::Extension(r)| r.0);
    let page = s
        .search_experiments(
            r.filter,
            r.order_by,
            r.max_results,
            r.page_token,
            view,
            readable,
        )
        .await?;
    Ok(json(&ExperimentsPage {
        experiments: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_page_token.as_deref(),
    }))
}

async fn update_experiment(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::UpdateExperiment>,
) -> Result<Response> {
    let id = experiment_id(r.experiment_id)?;
    s.rename_experiment(id, required(r.new_name, "new_name")?)
        .await?;
    Ok(empty())
}

async fn delete_experiment(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ExperimentRef>,
) -> Result<Response> {
    s.set_experiment_lifecycle(experiment_id(r.experiment_id)?, LifecycleStage::Deleted)
        .await?;
    Ok(empty())
}

async fn restore_experiment(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ExperimentRef>,
) -> Result<Response> {
    s.set_experiment_lifecycle(experiment_id(r.experiment_id)?, LifecycleStage::Active)
        .await?;
    Ok(empty())
}

async fn set_experiment_tag(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ExperimentTag>,
) -> Result<Response> {
    let id = experiment_id(r.experiment_id)?;
    let tag = KeyValue {
        key: required(r.key, "key")?,
        value: r.value.unwrap_or_default(),
    };
    s.set_experiment_tag(id, tag).await?;
    Ok(empty())
}

async fn delete_experiment_tag(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ExperimentTag>,
) -> Result<Response> {
    let id = experiment_id(r.experiment_id)?;
    s.delete_experiment_tag(id, required(r.key, "key")?).await?;
    Ok(empty())
}

// ------------------------------------------------------------------ runs

#[derive(Serialize)]
struct RunResponse<'a> {
    run: api::RunJson<'a>,
}

async fn create_run(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::CreateRun>,
) -> Result<Response> {
    let exp = match r.experiment_id.filter(|e| !e.is_empty()) {
        Some(e) => parse_experiment_id(&e)?,
        None => 0,
    };
    let run = s
        .create_run(
            exp,
            r.user_id,
            r.run_name,
            r.start_time,
            key_values(r.tags)?,
        )
        .await?;
    Ok(json(&RunResponse { run: (&run).into() }))
}

async fn get_run(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::RunRef>,
) -> Result<Response> {
    let run = s.get_run(run_id(r.run_id, r.run_uuid)?).await?;
    Ok(json(&RunResponse { run: (&run).into() }))
}

#[derive(Serialize)]
struct RunInfoResponse<'a> {
    run_info: api::RunInfoJson<'a>,
}

async fn update_run(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::UpdateRun>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    // MLflow ignores a status it cannot parse; so do we.
    let status = r.status.as_deref().and_then(RunStatus::parse);
    let info = s.update_run(id, status, r.end_time, r.run_name).await?;
    Ok(json(&RunInfoResponse {
        run_info: (&info).into(),
    }))
}

async fn delete_run(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::RunRef>,
) -> Result<Response> {
    s.set_run_lifecycle(run_id(r.run_id, r.run_uuid)?, LifecycleStage::Deleted)
        .await?;
    Ok(empty())
}

async fn restore_run(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::RunRef>,
) -> Result<Response> {
    s.set_run_lifecycle(run_id(r.run_id, r.run_uuid)?, LifecycleStage::Active)
        .await?;
    Ok(empty())
}

#[derive(Serialize)]
struct RunsPage<'a> {
    runs: Vec<api::RunJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<&'a str>,
}

async fn search_runs(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::SearchRuns>,
) -> Result<Response> {
    let view = parse_view_type(r.run_view_type.as_deref())?;
    let page = s
        .search_runs(
            r.experiment_ids,
            r.filter,
            view,
            r.max_results,
            r.order_by,
            r.page_token,
        )
        .await?;
    if page.items.is_empty() && page.next_page_token.is_none() {
        return Ok(empty());
    }
    Ok(json(&RunsPage {
        runs: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_page_token.as_deref(),
    }))
}

/// One metric of a request; `at` places it in the request for "missing value" messages
/// (`""` for log-metric, `metrics[3].` for log-batch).
#[allow(clippy::too_many_arguments)] // the wire fields of two request messages, side by side
fn logged_metric(
    at: &str,
    key: Option<String>,
    value: Option<&serde_json::Value>,
    timestamp: Option<i64>,
    step: Option<i64>,
    model_id: Option<String>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
) -> Result<LoggedMetric> {
    let key = key.ok_or_else(|| Error::missing(&format!("{at}key")))?;
    if value.is_none() {
        return Err(Error::missing(&format!("{at}value")));
    }
    let value = parse_metric_value(&key, value)?;
    let timestamp = timestamp.ok_or_else(|| Error::missing(&format!("{at}timestamp")))?;
    Ok(LoggedMetric {
        metric: Metric {
            key,
            value,
            timestamp,
            step: step.unwrap_or(0),
        },
        model_id: model_id.filter(|m| !m.is_empty()),
        dataset_name: dataset_name.filter(|m| !m.is_empty()),
        dataset_digest: dataset_digest.filter(|m| !m.is_empty()),
    })
}

async fn log_metric(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::LogMetric>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let m = logged_metric(
        "",
        r.key,
        r.value.as_ref(),
        r.timestamp,
        r.step,
        r.model_id,
        r.dataset_name,
        r.dataset_digest,
    )?;
    s.log_batch(
        id,
        Batch {
            metrics: vec![m],
            ..Batch::default()
        },
    )
    .await?;
    Ok(empty())
}

async fn log_param(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::RunKeyValue>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let p = KeyValue {
        key: required(r.key, "key")?,
        value: r.value.unwrap_or_default(),
    };
    s.log_batch(
        id,
        Batch {
            params: vec![p],
            ..Batch::default()
        },
    )
    .await?;
    Ok(empty())
}

async fn set_tag(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::RunKeyValue>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let t = KeyValue {
        key: required(r.key, "key")?,
        value: r.value.unwrap_or_default(),
    };
    s.log_batch(
        id,
        Batch {
            tags: vec![t],
            ..Batch::default()
        },
    )
    .await?;
    Ok(empty())
}

async fn delete_tag(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::RunKeyValue>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    s.delete_tag(id, required(r.key, "key")?).await?;
    Ok(empty())
}

async fn log_batch(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::LogBatch>,
) -> Result<Response> {
    let id = required(r.run_id, "run_id")?;
    let metrics = r
        .metrics
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            logged_metric(
                &format!("metrics[{i}]."),
                m.key,
                m.value.as_ref(),
                m.timestamp,
                m.step,
                m.model_id,
                m.dataset_name,
                m.dataset_digest,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = Batch {
        metrics,
        params: key_values_of(r.params, Some("params"))?,
        tags: key_values_of(r.tags, Some("tags"))?,
    };
    s.log_batch(id, batch).await?;
    Ok(empty())
}

async fn log_inputs(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::LogInputs>,
) -> Result<Response> {
    let id = required(r.run_id, "run_id")?;
    let mut datasets = Vec::with_capacity(r.datasets.len());
    for d in r.datasets {
        let ds = d.dataset.ok_or_else(|| Error::missing("dataset"))?;
        datasets.push(NewDatasetInput {
            dataset: Dataset {
                name: ds.name.unwrap_or_default(),
                digest: ds.digest.unwrap_or_default(),
                source_type: ds.source_type.unwrap_or_default(),
                source: ds.source.unwrap_or_default(),
                schema: ds.schema,
                profile: ds.profile,
            },
            tags: key_values(d.tags)?,
        });
    }
    let models = r
        .models
        .into_iter()
        .map(|m| m.model_id.ok_or_else(|| Error::missing("model_id")))
        .collect::<Result<Vec<_>>>()?;
    s.log_inputs(id, datasets, models).await?;
    Ok(empty())
}

async fn log_outputs(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::LogOutputs>,
) -> Result<Response> {
    let id = required(r.run_id, "run_id")?;
    let models = r
        .models
        .into_iter()
        .map(|m| {
            Ok((
                m.model_id.ok_or_else(|| Error::missing("model_id"))?,
                m.step.unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    s.log_outputs(id, models).await?;
    Ok(empty())
}

async fn log_model(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::LogModel>,
) -> Result<Response> {
    // MLflow 2's record of a logged model (the client still sends it from log_model): kept in
    // the run's `mlflow.log-model.history` tag, which the UI and older tools read.
    let id = required(r.run_id, "run_id")?;
    let body = required(r.model_json, "model_json")?;
    let model = serde_json::from_str::<serde_json::Value>(&body).map_err(|_| {
        Error::InvalidParameter(format!(
            "Malformed model info. \n {body} \n is not a valid JSON."
        ))
    })?;
    s.record_logged_model(id, model).await?;
    Ok(empty())
}

#[derive(Serialize)]
struct HistoryPage<'a> {
    metrics: Vec<api::MetricJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<&'a str>,
}

async fn get_metric_history(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::GetHistory>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let key = required(r.metric_key, "metric_key")?;
    let page = s
        .metric_history(id, key, r.max_results, r.page_token)
        .await?;
    if page.items.is_empty() && page.next_page_token.is_none() {
        return Ok(empty());
    }
    Ok(json(&HistoryPage {
        metrics: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_page_token.as_deref(),
    }))
}

#[derive(Serialize)]
struct BulkHistory<'a> {
    metrics: Vec<api::RunMetricJson<'a>>,
}

async fn get_metric_history_bulk_interval(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::GetHistoryBulk>,
) -> Result<Response> {
    let points = s
        .metric_history_bulk_interval(
            r.run_ids,
            r.metric_key,
            r.start_step,
            r.end_step,
            r.max_results,
        )
        .await?;
    Ok(json(&BulkHistory {
        metrics: points
            .iter()
            .map(|(id, m)| api::RunMetricJson::new(id, m))
            .collect(),
    }))
}

// ------------------------------------------------------------------ logged models

#[derive(Serialize)]
struct ModelResponse<'a> {
    model: api::LoggedModelJson<'a>,
}

async fn create_logged_model(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::CreateLoggedModel>,
) -> Result<Response> {
    let exp = experiment_id(r.experiment_id)?;
    let m = s
        .create_logged_model(
            exp,
            r.name,
            r.model_type,
            r.source_run_id.filter(|s| !s.is_empty()),
            key_values(r.params)?,
            key_values(r.tags)?,
        )
        .await?;
    Ok(json(&ModelResponse { model: (&m).into() }))
}

async fn get_logged_model(
    State(s): State<TrackingService>,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<api::GetLoggedModel>,
) -> Result<Response> {
    let m = s
        .get_logged_model(id, r.allow_deleted.unwrap_or(false))
        .await?;
    Ok(json(&ModelResponse { model: (&m).into() }))
}

async fn finalize_logged_model(
    State(s): State<TrackingService>,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<api::FinalizeLoggedModel>,
) -> Result<Response> {
    let raw = required(r.status, "status")?;
    let status = LoggedModelStatus::parse(&raw).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "Invalid logged model status '{raw}'. Expected LOGGED_MODEL_READY or \
             LOGGED_MODEL_UPLOAD_FAILED."
        ))
    })?;
    let m = s.finalize_logged_model(id, status).await?;
    Ok(json(&ModelResponse { model: (&m).into() }))
}

async fn delete_logged_model(
    State(s): State<TrackingService>,
    Path(id): Path<String>,
) -> Result<Response> {
    s.delete_logged_model(id).await?;
    Ok(empty())
}

async fn set_logged_model_tags(
    State(s): State<TrackingService>,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<api::LoggedModelKeyValues>,
) -> Result<Response> {
    s.set_logged_model_kvs(id, key_values(r.tags)?, Vec::new())
        .await?;
    Ok(empty())
}

async fn log_logged_model_params(
    State(s): State<TrackingService>,
    Path(id): Path<String>,
    Mlflow(r): Mlflow<api::LoggedModelKeyValues>,
) -> Result<Response> {
    s.set_logged_model_kvs(id, Vec::new(), key_values(r.params)?)
        .await?;
    Ok(empty())
}

async fn delete_logged_model_tag(
    State(s): State<TrackingService>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response> {
    s.delete_logged_model_tag(id, key).await?;
    Ok(empty())
}

#[derive(Serialize)]
struct ModelsPage<'a> {
    models: Vec<api::LoggedModelJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<&'a str>,
}

async fn search_logged_models(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::SearchLoggedModels>,
) -> Result<Response> {
    let req = ModelSearch {
        experiment_ids: r.experiment_ids,
        filter: r.filter.unwrap_or_default(),
        datasets: r
            .datasets
            .into_iter()
            .map(|d| {
                Ok((
                    d.dataset_name
                        .ok_or_else(|| Error::missing("dataset_name"))?,
                    d.dataset_digest,
                ))
            })
            .collect::<Result<Vec<_>>>()?,
        order_by: r
            .order_by
            .into_iter()
            .map(|o| {
                Ok(ModelOrder {
                    field: o.field_name.ok_or_else(|| Error::missing("field_name"))?,
                    ascending: o.ascending.unwrap_or(true),
                    dataset_name: o.dataset_name,
                    dataset_digest: o.dataset_digest,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        max_results: r.max_results,
        page_token: r.page_token,
    };
    let page = s.search_logged_models(req).await?;
    Ok(json(&ModelsPage {
        models: page.items.iter().map(Into::into).collect(),
        next_page_token: page.next_page_token.as_deref(),
    }))
}

// ------------------------------------------------------------------ artifacts

/// Maps a `mlflow-artifacts:` URI (ours) to a path in the artifact store.
pub fn proxied_artifact_path(uri: &str) -> Option<ArtifactPath> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = match rest.strip_prefix("//") {
        Some(after_host) => after_host.find('/').map_or("", |i| &after_host[i..]),
        None => rest,
    };
    ArtifactPath::parse(rest.trim_start_matches('/')).ok()
}

#[derive(Serialize)]
struct FileInfoJson {
    path: String,
    is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_size: Option<u64>,
}

#[derive(Serialize)]
struct FilesResponse {
    files: Vec<FileInfoJson>,
}

async fn list_artifacts(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ListArtifacts>,
) -> Result<Response> {
    let dir = ArtifactPath::parse(r.path.as_deref().unwrap_or(""))?;
    let entries = s.artifacts().list(&dir).await?;
    if entries.is_empty() {
        return Ok(empty());
    }
    Ok(json(&FilesResponse {
        files: entries
            .into_iter()
            .map(|e| FileInfoJson {
                path: e.name,
                is_dir: e.is_dir,
                file_size: e.size,
            })
            .collect(),
    }))
}

async fn download_artifact(
    State(s): State<TrackingService>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    let p = ArtifactPath::parse(&path)?;
    // One `bytes=` range is served as 206 (parallel chunked downloads use these); any other
    // form is answered with the whole file, as HTTP allows.
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(loopml_store::ByteRange::parse_header);
    let read = match s.artifacts().get_range(&p, range).await {
        Ok(r) => r,
        Err(loopml_store::StoreError::RangeNotSatisfiable(size)) => {
            let e = Error::Store(loopml_store::StoreError::RangeNotSatisfiable(size));
            let mut resp = e.into_response();
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
        Err(e) => return Err(e.into()),
    };
    let filename = p.file_name().replace(['"', '\\', '\r', '\n'], "_");
    let len = read.span.end - read.span.start;
    let mut resp = (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(read.body),
    )
        .into_response();
    if range.is_some() {
        *resp.status_mut() = axum::http::StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = header::HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            read.span.start,
            read.span.end - 1,
            read.size
        )) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

async fn upload_artifact(
    State(s): State<TrackingService>,
    Path(path): Path<String>,
    req: Request,
) -> Result<Response> {
    let p = ArtifactPath::parse(&path)?;
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(|e| e.to_string());
    s.artifacts().put(&p, body).await?;
    Ok(empty())
}

async fn delete_artifact(
    State(s): State<TrackingService>,
    Path(path): Path<String>,
) -> Result<Response> {
    let p = ArtifactPath::parse(&path)?;
    s.artifacts().delete(&p).await?;
    Ok(empty())
}

/// The scheme and authority clients reached this server at (behind a proxy, from its
/// `X-Forwarded-*` headers), for URLs handed back to them.
fn public_base(headers: &axum::http::HeaderMap) -> String {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let proto = get("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{proto}://{host}")
}

/// Percent-encodes an artifact path for a URL, keeping its `/`s.
fn url_path(p: &ArtifactPath) -> String {
    p.as_str()
        .split('/')
        .map(|seg| {
            form_urlencoded::byte_serialize(seg.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The artifact a multipart call names: the directory in the URL joined with the base name
/// of the client's local file (`path` in the body), as MLflow composes it.
fn upload_target(dir: &str, local_file: Option<String>) -> Result<ArtifactPath> {
    let local_file = required(local_file, "path")?;
    let name = local_file
        .rsplit(['/', '\\'])
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| Error::InvalidParameter(format!("'path' names no file: '{local_file}'")))?;
    let dir = ArtifactPath::parse(dir)?;
    Ok(dir.join(&ArtifactPath::parse(name)?))
}

#[derive(Serialize)]
struct UploadCredential {
    url: String,
    part_number: u32,
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct CreateUploadResponse {
    upload_id: String,
    credentials: Vec<UploadCredential>,
}

/// `mpu/create`: starts a multipart upload and hands out one URL per part. The URLs point back
/// at this server (`mpu/upload`), which passes each part on to the artifact store's own
/// multipart API, so clients never need credentials for, or a route to, the bucket.
async fn create_upload(
    State(s): State<TrackingService>,
    Path(dir): Path<String>,
    headers: axum::http::HeaderMap,
    Mlflow(r): Mlflow<api::CreateUpload>,
) -> Result<Response> {
    let target = upload_target(&dir, r.path)?;
    let parts = r.num_parts.unwrap_or(1);
    let max = i64::from(loopml_store::MAX_UPLOAD_PARTS);
    if !(1..=max).contains(&parts) {
        return Err(Error::InvalidParameter(format!(
            "num_parts must be between 1 and {max}, got {parts}"
        )));
    }
    let id = s.artifacts().create_upload(&target).await?;
    let base = public_base(&headers);
    let encoded_id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let credentials = (1..=parts as u32)
        .map(|n| UploadCredential {
            url: format!(
                "{base}/api/2.0/mlflow-artifacts/mpu/upload/{}?upload_id={encoded_id}&part_number={n}",
                url_path(&target)
            ),
            part_number: n,
            headers: Default::default(),
        })
        .collect();
    Ok(json(&CreateUploadResponse {
        upload_id: id,
        credentials,
    }))
}

/// Largest part `mpu/upload` accepts. A part is held in memory while it goes to the store, so
/// this bounds what one request can make the server hold: MLflow's client sends 10 MiB parts
/// (`MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE`); S3 would allow 5 GiB.
const MAX_PART_BYTES: usize = 256 << 20;

#[derive(serde::Deserialize)]
struct PartQuery {
    upload_id: Option<String>,
    part_number: Option<String>,
}

/// `PUT mpu/upload/{path}?upload_id=&part_number=`: one part of a multipart upload; answers
/// with its `ETag`.
async fn upload_part(
    State(s): State<TrackingService>,
    Path(path): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PartQuery>,
    req: Request,
) -> Result<Response> {
    let target = ArtifactPath::parse(&path)?;
    let id = required(q.upload_id, "upload_id")?;
    let part = required(q.part_number, "part_number")?;
    let part: u32 = part.parse().map_err(|_| {
        Error::InvalidParameter(format!(
            "part_number must be a positive integer, got '{part}'"
        ))
    })?;
    let body = axum::body::to_bytes(req.into_body(), MAX_PART_BYTES)
        .await
        .map_err(|e| {
            Error::InvalidParameter(format!(
                "cannot read part {part} (parts are at most {} MiB; lower \
                 MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE): {e}",
                MAX_PART_BYTES >> 20
            ))
        })?;
    let etag = s
        .artifacts()
        .put_upload_part(&target, &id, part, body)
        .await?;
    let mut resp = empty();
    if let Ok(v) = header::HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// `mpu/complete`: joins the parts into the artifact.
async fn complete_upload(
    State(s): State<TrackingService>,
    Path(dir): Path<String>,
    Mlflow(r): Mlflow<api::FinishUpload>,
) -> Result<Response> {
    let target = upload_target(&dir, r.path)?;
    let id = required(r.upload_id, "upload_id")?;
    let parts = r
        .parts
        .into_iter()
        .map(|p| {
            let n = p.part_number.ok_or_else(|| Error::missing("part_number"))?;
            let n = u32::try_from(n)
                .map_err(|_| Error::InvalidParameter(format!("invalid part_number {n}")))?;
            Ok((n, required(p.etag, "etag")?))
        })
        .collect::<Result<Vec<_>>>()?;
    s.artifacts().complete_upload(&target, &id, parts).await?;
    Ok(empty())
}

/// `mpu/abort`: drops an unfinished upload and its parts.
async fn abort_upload(
    State(s): State<TrackingService>,
    Path(dir): Path<String>,
    Mlflow(r): Mlflow<api::FinishUpload>,
) -> Result<Response> {
    let target = upload_target(&dir, r.path)?;
    let id = required(r.upload_id, "upload_id")?;
    s.artifacts().abort_upload(&target, &id).await?;
    Ok(empty())
}

/// How long a presigned download URL is valid (MLflow's default TTL).
const PRESIGNED_TTL: std::time::Duration = std::time::Duration::from_secs(900);

/// `GET presigned/{path}`: where to read the file with parallel range requests. A URL signed
/// for the bucket when the store is configured to hand them out, else this server's own
/// artifact route (which serves ranges too).
async fn presigned_download(
    State(s): State<TrackingService>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    let p = ArtifactPath::parse(&path)?;
    let size = s.artifacts().size(&p).await?;
    let url = match s.artifacts().direct_get_url(&p, PRESIGNED_TTL).await? {
        Some(url) => url,
        None => format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            public_base(&headers),
            url_path(&p)
        ),
    };
    Ok(json(&serde_json::json!({
        "url": url,
        "headers": {},
        "file_size": size,
    })))
}

#[derive(Serialize)]
struct RunFilesResponse {
    root_uri: String,
    files: Vec<FileInfoJson>,
}

async fn list_run_artifacts(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::ListRunArtifacts>,
) -> Result<Response> {
    let id = run_id(r.run_id, r.run_uuid)?;
    Ok(json(
        &run_artifact_listing(&s, id, r.path.as_deref()).await?,
    ))
}

/// `artifacts/list` of a run as JSON (`{root_uri, files: [{path, is_dir, file_size}]}`, paths
/// relative to the run's root), for the REST route and the UI's GraphQL query.
pub async fn run_artifact_listing(
    s: &TrackingService,
    run_id: String,
    path: Option<&str>,
) -> Result<serde_json::Value> {
    let rel = crate::ui::ui_artifact_path(path.unwrap_or(""))?;
    let run = s.get_run(run_id).await?;
    let mut files = Vec::new();
    if let Some(root) = proxied_artifact_path(&run.info.artifact_uri) {
        for e in s.artifacts().list(&root.join(&rel)).await? {
            let full = if rel.is_root() {
                e.name
            } else {
                format!("{rel}/{}", e.name)
            };
            files.push(FileInfoJson {
                path: full,
                is_dir: e.is_dir,
                file_size: e.size,
            });
        }
    }
    serde_json::to_value(RunFilesResponse {
        root_uri: run.info.artifact_uri.clone(),
        files,
    })
    .map_err(|e| Error::InvalidParameter(format!("could not encode the listing: {e}")))
}

async fn server_info() -> Response {
    json(&serde_json::json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": true,
        "multipart_downloads_enabled": true,
        "artifact_serving_enabled": true,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "model_artifact_presigned_downloads_supported": false,
        "features_enabled": { "gateway": false, "scheduled_issue_detection": false },
        "tracking_auth": false,
        "artifacts_presigned_only": false,
        "server_time_ms": now_ms(),
    }))
}

fn tracking_routes() -> Router<TrackingService> {
    Router::new()
        .route("/experiments/create", post(create_experiment))
        .route("/experiments/get", get(get_experiment))
        .route("/experiments/get-by-name", get(get_experiment_by_name))
        .route(
            "/experiments/search",
            post(search_experiments).get(search_experiments),
        )
        .route("/experiments/update", post(update_experiment))
        .route("/experiments/delete", post(delete_experiment))
        .route("/experiments/restore", post(restore_experiment))
        .route("/experiments/set-experiment-tag", post(set_experiment_tag))
        .route(
            "/experiments/delete-experiment-tag",
            post(delete_experiment_tag),
        )
        .route("/runs/create", post(create_run))
        .route("/runs/get", get(get_run))
        .route("/runs/update", post(update_run))
        .route("/runs/delete", post(delete_run))
        .route("/runs/restore", post(restore_run))
        .route("/runs/search", post(search_runs).get(search_runs))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/log-parameter", post(log_param))
        .route("/runs/set-tag", post(set_tag))
        .route("/runs/delete-tag", post(delete_tag))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-inputs", post(log_inputs))
        .route("/runs/outputs", post(log_outputs))
        .route("/runs/log-model", post(log_model))
        .route("/metrics/get-history", get(get_metric_history))
        .route(
            "/metrics/get-history-bulk-interval",
            get(get_metric_history_bulk_interval),
        )
        .route("/logged-models", post(create_logged_model))
        .route("/logged-models/search", post(search_logged_models))
        .route(
            "/logged-models/{id}",
            get(get_logged_model)
                .patch(finalize_logged_model)
                .delete(delete_logged_model),
        )
        .route("/logged-models/{id}/params", post(log_logged_model_params))
        .route("/logged-models/{id}/tags", patch(set_logged_model_tags))
        .route(
            "/logged-models/{id}/tags/{key}",
            axum::routing::delete(delete_logged_model_tag),
        )
        .route("/artifacts/list", get(list_run_artifacts))
        .layer(DefaultBodyLimit::max(api::MAX_JSON_BODY))
        .merge(crate::ui::api_routes())
}

fn artifact_routes() -> Router<TrackingService> {
    Router::new()
        .route("/artifacts", get(list_artifacts))
        .route(
            "/artifacts/{*path}",
            get(download_artifact)
                .put(upload_artifact)
                .delete(delete_artifact),
        )
        .route("/mpu/create/{*path}", post(create_upload))
        .route("/mpu/upload/{*path}", axum::routing::put(upload_part))
        .route("/mpu/complete/{*path}", post(complete_upload))
        .route("/mpu/abort/{*path}", post(abort_upload))
        .route("/presigned/{*path}", get(presigned_download))
        .layer(DefaultBodyLimit::disable())
}

/// The tracking router: MLflow REST API, artifact proxy and server-info, under both the
/// `/api` and `/ajax-api` prefixes as MLflow serves them.
pub fn router(service: TrackingService) -> Router {
    let mut r = Router::new();
    for prefix in ["/api", "/ajax-api"] {
        r = r
            .nest(&format!("{prefix}/2.0/mlflow"), tracking_routes())
            .nest(&format!("{prefix}/2.0/mlflow-artifacts"), artifact_routes())
            .route(
                &format!("{prefix}/3.0/mlflow/server-info"),
                get(server_info),
            );
    }
    r.merge(crate::ui::root_routes()).with_state(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_paths() {
        assert_eq!(
            proxied_artifact_path("mlflow-artifacts:/1/abc/artifacts")
                .unwrap()
                .as_str(),
            "1/abc/artifacts"
        );
        assert_eq!(
            proxied_artifact_path("mlflow-artifacts://host:5000/1/x")
                .unwrap()
                .as_str(),
            "1/x"
        );
        assert!(proxied_artifact_path("s3://bucket/x").is_none());
        assert!(proxied_artifact_path("mlflow-artifacts:/../etc").is_none());
    }
}
