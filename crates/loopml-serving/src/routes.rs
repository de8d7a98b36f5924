//! HTTP for serving: Open Inference Protocol v2 REST (`/v2/...`, JSON tensors; errors as
//! `{"error": "..."}`) and MLflow's scoring protocol (`/invocations`, `/ping`, `/health`,
//! `/version`, the last two served by the binary; errors as `{"error_code", "message"}`). Inference runs on each model's queue workers (`batcher`), off the executor.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::Error;
use crate::repository::{Loaded, Repository};
use crate::tensor::{DataType, Tensor, TensorData};

/// Serving routes' state: one shared [`ServingState`] (a clone per request is one reference
/// count, not one per field).
#[derive(Clone)]
pub struct ServingApi(Arc<ServingState>);

impl std::ops::Deref for ServingApi {
    type Target = ServingState;
    fn deref(&self) -> &ServingState {
        &self.0
    }
}

/// What serving holds: models, deployments, metrics, the inference log.
pub struct ServingState {
    /// Loaded models.
    pub repository: Repository,
    /// Resolves `models:/…` URIs for loads over HTTP (absent: such loads are refused).
    pub resolver: Option<Arc<dyn crate::repository::ModelResolver>>,
    /// Sessions per loaded model.
    pub sessions: usize,
    /// Endpoints that follow a moving registry URI (an alias, a stage, `latest`).
    pub follows: Arc<std::sync::Mutex<Vec<Follow>>>,
    /// Deployments by name.
    pub deployments: Arc<
        std::sync::RwLock<std::collections::BTreeMap<String, Arc<crate::deployments::Deployment>>>,
    >,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The inference log (absent: nothing is logged).
    pub log: Option<crate::infer_log::InferenceLog>,
    /// Where API-made deployments are saved (absent: they live in memory).
    pub db: Option<loopml_store::Database>,
    /// Request ids answered lately, for feedback.
    pub recent: Arc<std::sync::Mutex<crate::endpoints::Recent>>,
    /// Tells other replicas a deployment changed (set with `--redis-url`).
    pub bus: std::sync::OnceLock<loopml_store::ChangeBus>,
    /// This process's name among the replicas sharing deployment outcomes.
    pub replica: String,
}

impl ServingApi {
    /// A serving API over `repository` (whose batchers report to `metrics`); `db` saves
    /// deployments (its migrations are applied here), `log` keeps the inference log.
    pub fn new(
        repository: Repository,
        resolver: Option<Arc<dyn crate::repository::ModelResolver>>,
        sessions: usize,
        metrics: Arc<crate::metrics::Metrics>,
        db: Option<loopml_store::Database>,
        log: Option<crate::infer_log::InferenceLog>,
    ) -> Result<Self, Error> {
        if let Some(db) = &db {
            db.migrate("serving", crate::deployment_store::MIGRATIONS)?;
        }
        Ok(Self(Arc::new(ServingState {
            repository,
            resolver,
            sessions,
            follows: Arc::default(),
            deployments: Arc::default(),
            metrics,
            log,
            db,
            recent: Arc::default(),
            bus: std::sync::OnceLock::new(),
            replica: uuid::Uuid::new_v4().simple().to_string(),
        })))
    }
}

/// An endpoint serving whatever version a registry URI currently names.
#[derive(Debug, Clone, PartialEq)]
pub struct Follow {
    /// Endpoint (model) name.
    pub endpoint: String,
    /// The URI it follows (`models:/churn@champion`).
    pub uri: String,
    /// Its batching settings, kept across swaps.
    pub batching: crate::batcher::BatchConfig,
}

/// The registered model a `models:/` URI names, and whether the URI moves (an alias, a stage or
/// `latest`, as opposed to a version number).
pub fn registry_target(uri: &str) -> Option<(&str, bool)> {
    let rest = uri.strip_prefix("models:/")?;
    if let Some((name, _alias)) = rest.split_once('@') {
        return Some((name, true));
    }
    let (name, selector) = rest.split_once('/')?;
    Some((name, selector.parse::<u64>().is_err()))
}

impl std::fmt::Debug for ServingApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingApi")
            .field("repository", &self.repository)
            .field("resolver", &self.resolver.is_some())
            .field("follows", &self.follows)
            .finish()
    }
}

impl ServingApi {
    /// Loads the model a registry URI names as `name` (its registry version as the label).
    pub async fn load_uri(
        &self,
        name: &str,
        uri: &str,
        batching: &crate::batcher::BatchConfig,
    ) -> Result<Arc<Loaded>, Error> {
        crate::repository::validate_model_name(name)?;
        if !uri.starts_with("models:/") {
            return Err(bad(format!(
                "'{uri}' is not a registry URI: load models:/NAME/VERSION or models:/NAME@ALIAS \
                 (files on the server's disk are served only from the command line)"
            )));
        }
        let resolver = self
            .resolver
            .as_ref()
            .ok_or_else(|| bad("this server has no model registry to load models:/ URIs from"))?;
        let found = resolver.resolve(uri).await?;
        // The version's model is what the caller chose: a model that is not ONNX, or does not
        // load, is their input's fault (400), named by its URI, never by the server's paths.
        let local = found.path.display().to_string();
        let theirs = |e: Error| match e {
            Error::Model(m) => Error::InvalidInput(m.replace(&local, uri)),
            other => other,
        };
        let file = crate::model::onnx_file(&found.path).map_err(theirs)?;
        let (repo, name, sessions) = (self.repository.clone(), name.to_string(), self.sessions);
        let batching_kept = batching.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            repo.load(&name, &found.version, file, sessions, &batching_kept)
        })
        .await
        .map_err(|e| Error::Model(format!("loading stopped: {e}")))?
        .map_err(theirs)?;
        // The new version takes over the endpoint; requests in flight finish on the old one.
        self.repository.keep_only(&loaded.name, &loaded.version);
        if let Ok(mut follows) = self.follows.lock() {
            follows.retain(|f| f.endpoint != loaded.name);
            if registry_target(uri).is_some_and(|(_, moves)| moves) {
                follows.push(Follow {
                    endpoint: loaded.name.clone(),
                    uri: uri.to_string(),
                    batching: batching.clone(),
                });
            }
        }
        Ok(loaded)
    }

    /// Re-resolves a followed endpoint's URI and swaps in the version it now names, if another.
    /// Returns the new version when it swapped.
    pub async fn refresh(&self, follow: &Follow) -> Result<Option<String>, Error> {
        let resolver = self
            .resolver
            .as_ref()
            .ok_or_else(|| bad("this server has no model registry"))?;
        let found = resolver.resolve(&follow.uri).await?;
        let current = self.repository.get(&follow.endpoint, None).ok();
        if current.is_some_and(|c| c.version == found.version) {
            return Ok(None);
        }
        let l = self
            .load_uri(&follow.endpoint, &follow.uri, &follow.batching)
            .await?;
        Ok(Some(l.version.clone()))
    }

    /// The followed endpoints.
    pub fn followed(&self) -> Vec<Follow> {
        self.follows.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

fn status_of(e: &Error) -> StatusCode {
    e.status()
}

/// An Open Inference Protocol error: `{"error": message}`.
struct OipError(Error);

impl From<Error> for OipError {
    fn from(e: Error) -> Self {
        OipError(e)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        (
            status_of(&self.0),
            axum::Json(json!({"error": self.0.to_string()})),
        )
            .into_response()
    }
}

/// An MLflow scoring error: `{"error_code", "message"}`.
struct MlflowError(Error);

impl From<Error> for MlflowError {
    fn from(e: Error) -> Self {
        MlflowError(e)
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        let code = self.0.scoring_code();
        (
            status_of(&self.0),
            axum::Json(json!({"error_code": code, "message": self.0.to_string()})),
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidInput(msg.into())
}

/// Response headers naming what answered: request id, variant and model version.
fn served_headers(id: &str, variant: &str, version: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-loopml-request-id", id),
        ("x-loopml-variant", variant),
        ("x-loopml-model-version", version),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(v) {
            h.insert(header::HeaderName::from_static(k), v);
        }
    }
    h
}

// ---------------------------------------------------------------- Open Inference Protocol v2

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "loopml",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository"],
    }))
    .into_response()
}

async fn live() -> Response {
    axum::Json(json!({"live": true})).into_response()
}

async fn ready() -> Response {
    axum::Json(json!({"ready": true})).into_response()
}

fn model_metadata(api: &ServingApi, l: &Loaded) -> Value {
    let spec = |s: &crate::tensor::TensorSpec| json!({"name": s.name, "datatype": s.datatype.name(), "shape": s.shape});
    json!({
        "name": l.name,
        "versions": api.repository.versions(&l.name),
        "platform": "onnxruntime_onnx",
        "inputs": l.model.inputs().iter().map(spec).collect::<Vec<_>>(),
        "outputs": l.model.outputs().iter().map(spec).collect::<Vec<_>>(),
    })
}

/// `/v2/models/{name}[/versions/{version}]/…`: the loaded version the path names.
#[derive(serde::Deserialize)]
struct ModelRef {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

type ModelPath = Path<ModelRef>;

fn target(api: &ServingApi, p: &ModelRef) -> Result<Arc<Loaded>, Error> {
    api.endpoint_model(&p.name, p.version.as_deref())
}

impl ServingApi {
    /// The model behind an endpoint: a deployment's primary variant (the stable, primary or
    /// active one), or a loaded model (a given version, else the latest).
    pub fn endpoint_model(&self, name: &str, version: Option<&str>) -> Result<Arc<Loaded>, Error> {
        if version.is_none()
            && let Some(d) = self.deployment(name)
        {
            let spec = d.spec();
            return self.repository.get(&spec.model_name(&d.primary()), None);
        }
        self.repository.get(name, version)
    }
}

async fn metadata(State(api): State<ServingApi>, Path(p): ModelPath) -> Result<Response, OipError> {
    let l = target(&api, &p)?;
    Ok(axum::Json(model_metadata(&api, &l)).into_response())
}

/// Triton's model configuration: the batching settings in force.
async fn model_config(
    State(api): State<ServingApi>,
    Path(name): Path<String>,
) -> Result<Response, OipError> {
    let l = api.endpoint_model(&name, None)?;
    let b = l.queue.config();
    Ok(axum::Json(json!({
        "name": l.name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": b.max_batch_size,
        "dynamic_batching": l.queue.batching().then(|| json!({
            "max_queue_delay_microseconds": b.max_queue_delay_us,
            "preferred_batch_size": b.preferred_batch_sizes,
            "default_queue_policy": {"max_queue_size": b.max_queue_size},
        })),
    }))
    .into_response())
}

async fn model_ready(
    State(api): State<ServingApi>,
    Path(p): ModelPath,
) -> Result<Response, OipError> {
    let l = target(&api, &p)?;
    Ok(axum::Json(json!({"name": l.name, "ready": true})).into_response())
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// JSON scalars as elements of `datatype`.
fn json_values(flat: &[&Value], datatype: DataType, name: &str) -> Result<TensorData, Error> {
    let wrong = |v: &Value| {
        bad(format!(
            "input '{name}': {v} is not a {} value",
            datatype.name()
        ))
    };
    let nums = || -> Result<Vec<f64>, Error> {
        flat.iter()
            .map(|v| v.as_f64().ok_or_else(|| wrong(v)))
            .collect()
    };
    let ints = || -> Result<Vec<i64>, Error> {
        flat.iter()
            .map(|v| v.as_i64().ok_or_else(|| wrong(v)))
            .collect()
    };
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(
            flat.iter()
                .map(|v| v.as_bool().ok_or_else(|| wrong(v)))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Bytes => TensorData::Bytes(
            flat.iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| wrong(v)))
                .collect::<Result<_, _>>()?,
        ),
        DataType::F32 => TensorData::F32(nums()?.into_iter().map(|x| x as f32).collect()),
        DataType::F64 => TensorData::F64(nums()?),
        DataType::I64 => TensorData::I64(ints()?),
        DataType::I32 | DataType::U8 => TensorData::I64(ints()?).cast(datatype, name)?,
    })
}

async fn infer_inner(
    api: &ServingApi,
    mut call: crate::endpoints::Call,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OipError> {
    let (head, mut binary): (&[u8], &[u8]) = match headers.get(crate::binary::HEADER) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| bad(format!("{} must be a byte count", crate::binary::HEADER)))?;
            if n > body.len() {
                return Err(bad(format!(
                    "{} is {n} but the body has {} bytes",
                    crate::binary::HEADER,
                    body.len()
                ))
                .into());
            }
            body.split_at(n)
        }
        None => (&body[..], &[]),
    };
    let mut req: crate::oip::InferRequest = serde_json::from_slice(head).map_err(|e| {
        bad(if e.is_syntax() || e.is_eof() {
            format!("the request body is not valid JSON: {e}")
        } else {
            format!("not an inference request (\"inputs\": a list of tensors with name, shape, datatype and data): {e}")
        })
    })?;
    let inputs = std::mem::take(&mut req.inputs)
        .into_iter()
        .map(|t| t.into_tensor(&mut binary))
        .collect::<Result<Vec<_>, _>>()?;
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data are left over after the inputs' binary_data_size",
            binary.len()
        ))
        .into());
    }
    if let Some(Value::String(id)) = &req.id
        && !id.is_empty()
        && id.len() <= 256
    {
        call.request_id = Some(id.clone());
    }
    let asked: Option<Arc<Vec<String>>> = req
        .outputs
        .as_ref()
        .map(|o| Arc::new(o.iter().map(|x| x.name.clone()).collect()));
    let wanted = asked.clone();
    let served = api
        .dispatch(
            call,
            Arc::new(move |l: &Loaded| {
                if let Some(w) = &asked
                    && let Some(unknown) = w
                        .iter()
                        .find(|n| !l.model.outputs().iter().any(|s| &s.name == *n))
                {
                    return Err(bad(format!("the model has no output '{unknown}'")));
                }
                Ok((inputs.clone(), None))
            }),
        )
        .await?;
    let l = &served.loaded;
    let out = &served.outputs;
    let mut raw: Vec<u8> = Vec::new();
    let outputs: Vec<crate::oip::OutputTensor<'_>> = out
        .tensors
        .iter()
        .zip(&out.labels)
        .filter(|(t, _)| wanted.as_ref().is_none_or(|w| w.contains(&t.name)))
        .map(|(t, labels)| {
            let mut o = crate::oip::OutputTensor {
                name: &t.name,
                datatype: t.data.datatype().name(),
                shape: &t.shape,
                data: None,
                parameters: crate::oip::OutputTensorParameters {
                    binary_data_size: None,
                    labels: labels.as_deref(),
                },
            };
            if req.binary_output(&t.name) {
                let bytes = crate::binary::encode(&t.data);
                o.parameters.binary_data_size = Some(bytes.len());
                raw.extend_from_slice(&bytes);
            } else {
                o.data = Some(crate::oip::JsonData(&t.data));
            }
            o
        })
        .collect();
    let answer = crate::oip::InferResponse {
        model_name: &l.name,
        model_version: &l.version,
        id: req.id.as_ref(),
        outputs,
    };
    let ids = served_headers(&served.request_id, &served.variant, &l.version);
    let mut body = serde_json::to_vec(&answer)
        .map_err(|e| Error::Inference(format!("cannot encode the answer: {e}")))?;
    if raw.is_empty() {
        return Ok((
            ids,
            [(header::CONTENT_TYPE, "application/json".to_string())],
            body,
        )
            .into_response());
    }
    let head_len = body.len();
    body.extend_from_slice(&raw);
    Ok((
        ids,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("inference-header-content-length"),
                head_len.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

async fn infer(
    State(api): State<ServingApi>,
    Path(p): ModelPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OipError> {
    let call = crate::endpoints::Call::from_headers(&api, &p.name, p.version, &headers);
    infer_inner(&api, call, headers, body).await
}

async fn repository_index(State(api): State<ServingApi>) -> Response {
    axum::Json(api.repository.index()).into_response()
}

async fn repository_load(
    State(api): State<ServingApi>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, OipError> {
    let req: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?
    };
    let mut params = req["parameters"].as_object().cloned().unwrap_or_default();
    let uri = params
        .remove("uri")
        .and_then(|u| u.as_str().map(str::to_string))
        .ok_or_else(|| {
            bad(
                "load needs {\"parameters\": {\"uri\": \"models:/NAME@ALIAS\"}} (and optionally \
                 max_batch_size, max_queue_delay_us, preferred_batch_sizes, max_queue_size)",
            )
        })?;
    let batching: crate::batcher::BatchConfig = serde_json::from_value(Value::Object(params))
        .map_err(|e| bad(format!("invalid batching parameters: {e}")))?;
    let l = api.load_uri(&name, &uri, &batching).await?;
    Ok(axum::Json(json!({"name": l.name, "version": l.version})).into_response())
}

async fn repository_unload(
    State(api): State<ServingApi>,
    Path(name): Path<String>,
) -> Result<Response, OipError> {
    api.repository.unload(&name, None)?;
    if let Ok(mut follows) = api.follows.lock() {
        follows.retain(|f| f.endpoint != name);
    }
    Ok(axum::Json(json!({})).into_response())
}

// ---------------------------------------------------------------- MLflow scoring protocol

/// Query of `/invocations`.
#[derive(Debug, serde::Deserialize)]
pub struct InvocationsQuery {
    /// Which model, when several are loaded.
    #[serde(default)]
    model: Option<String>,
}

/// A table of named columns, as MLflow's DataFrame inputs carry it.
pub(crate) struct Frame {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<Value>>,
}

fn frame_from_split(v: &Value) -> Result<Frame, Error> {
    let rows: Vec<Vec<Value>> = v["data"]
        .as_array()
        .ok_or_else(|| bad("dataframe_split needs \"data\": a list of rows"))?
        .iter()
        .map(|r| {
            r.as_array()
                .cloned()
                .ok_or_else(|| bad("dataframe_split: every row of \"data\" must be a list"))
        })
        .collect::<Result<_, _>>()?;
    let width = rows.first().map_or(0, Vec::len);
    let columns: Vec<String> = match v["columns"].as_array() {
        Some(c) => c
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        None => (0..width).map(|i| i.to_string()).collect(),
    };
    if let Some(r) = rows.iter().position(|r| r.len() != columns.len()) {
        return Err(bad(format!(
            "dataframe_split: row {r} has {} values for {} columns",
            rows[r].len(),
            columns.len()
        )));
    }
    Ok(Frame { columns, rows })
}

fn frame_from_records(v: &Value) -> Result<Frame, Error> {
    let records = v
        .as_array()
        .ok_or_else(|| bad("dataframe_records must be a list of objects"))?;
    let mut columns: Vec<String> = Vec::new();
    for r in records {
        let obj = r
            .as_object()
            .ok_or_else(|| bad("dataframe_records: every record must be an object"))?;
        for k in obj.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let rows = records
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok(Frame { columns, rows })
}

fn frame_from_csv(text: &str) -> Result<Frame, Error> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| bad("the CSV body is empty"))?;
    let columns: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let cells: Vec<Value> = line
            .split(',')
            .map(|c| {
                let c = c.trim();
                c.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| Value::String(c.to_string()), Value::Number)
            })
            .collect();
        if cells.len() != columns.len() {
            return Err(bad(format!(
                "CSV line {}: {} values for {} columns",
                i + 2,
                cells.len(),
                columns.len()
            )));
        }
        rows.push(cells);
    }
    Ok(Frame { columns, rows })
}

/// MLflow's DataFrame → ONNX mapping, as `mlflow.onnx`'s pyfunc does it: one model input takes
/// the whole table (`[rows, columns]`); several inputs take one column each, by name (shaped
/// `[rows, 1]` when the model's input has rank 2).
pub(crate) fn frame_inputs(
    model: &crate::model::OnnxModel,
    f: &Frame,
) -> Result<Vec<Tensor>, Error> {
    let specs = model.inputs();
    let n = f.rows.len() as i64;
    if specs.len() == 1 {
        let s = &specs[0];
        let flat: Vec<&Value> = f.rows.iter().flatten().collect();
        let data = json_values(&flat, s.datatype, &s.name)?;
        let shape = if s.shape.len() == 1 {
            vec![n * f.columns.len() as i64]
        } else {
            vec![n, f.columns.len() as i64]
        };
        return Ok(vec![Tensor {
            name: s.name.clone(),
            shape,
            data,
        }]);
    }
    specs
        .iter()
        .map(|s| {
            let Some(c) = f.columns.iter().position(|c| c == &s.name) else {
                return Err(bad(format!(
                    "missing column '{}' (the model's inputs are {})",
                    s.name,
                    specs
                        .iter()
                        .map(|x| format!("'{}'", x.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let col: Vec<&Value> = f.rows.iter().map(|r| &r[c]).collect();
            let data = json_values(&col, s.datatype, &s.name)?;
            let shape = if s.shape.len() == 2 {
                vec![n, 1]
            } else {
                vec![n]
            };
            Ok(Tensor {
                name: s.name.clone(),
                shape,
                data,
            })
        })
        .collect()
}

/// `instances` / `inputs`: a list (one tensor input, rows) or an object of named tensors.
fn tensor_inputs(l: &Loaded, v: &Value) -> Result<Vec<Tensor>, Error> {
    let specs = l.model.inputs();
    let one = |name: &str, v: &Value| -> Result<Tensor, Error> {
        let spec = specs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| bad(format!("unknown input '{name}'")))?;
        let mut shape = Vec::new();
        let mut cur = v;
        while let Value::Array(items) = cur {
            shape.push(items.len() as i64);
            match items.first() {
                Some(first) => cur = first,
                None => break,
            }
        }
        let mut flat = Vec::new();
        flatten(v, &mut flat);
        let data = json_values(&flat, spec.datatype, name)?;
        let t = Tensor {
            name: name.to_string(),
            shape,
            data,
        };
        t.check()
            .map_err(|_| bad(format!("input '{name}': rows of different lengths")))?;
        Ok(t)
    };
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| one(k, v)).collect(),
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            // A list of {input: value} rows.
            specs
                .iter()
                .map(|s| {
                    let col: Vec<Value> = items.iter().map(|r| r[&s.name].clone()).collect();
                    one(&s.name, &Value::Array(col))
                })
                .collect()
        }
        Value::Array(_) if specs.len() == 1 => Ok(vec![one(&specs[0].name, v)?]),
        Value::Array(_) => Err(bad(format!(
            "the model has {} inputs: send an object of named tensors",
            specs.len()
        ))),
        _ => Err(bad(
            "\"instances\" / \"inputs\" must be a list or an object",
        )),
    }
}

/// One prediction record per row: `{output: value or row}` (MLflow's DataFrame of outputs).
fn records(out: &crate::model::Outputs) -> Vec<Value> {
    let rows = out
        .tensors
        .first()
        .and_then(|t| t.shape.first())
        .copied()
        .unwrap_or(0)
        .max(0) as usize;
    (0..rows)
        .map(|r| {
            let mut rec = serde_json::Map::new();
            for (t, labels) in out.tensors.iter().zip(&out.labels) {
                let values = t.data.to_json();
                let per_row = values.len() / rows.max(1);
                let slice = &values[r * per_row..(r + 1) * per_row];
                let v = match labels {
                    Some(labels) => {
                        Value::Object(labels.iter().cloned().zip(slice.iter().cloned()).collect())
                    }
                    None if per_row == 1 => slice[0].clone(),
                    None => Value::Array(slice.to_vec()),
                };
                rec.insert(t.name.clone(), v);
            }
            Value::Object(rec)
        })
        .collect()
}

async fn invocations(
    State(api): State<ServingApi>,
    q: Query<InvocationsQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, MlflowError> {
    let endpoint = match &q.model {
        Some(m) => m.clone(),
        None => api.single_endpoint()?,
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let payload = if ct.starts_with("text/csv") {
        let text = std::str::from_utf8(&body).map_err(|_| bad("the CSV body is not UTF-8"))?;
        Payload::Frame(frame_from_csv(text)?)
    } else if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
        let keys = [
            "dataframe_split",
            "dataframe_records",
            "instances",
            "inputs",
        ];
        let present: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| v.get(k).is_some())
            .collect();
        match present.as_slice() {
            ["dataframe_split"] => Payload::Frame(frame_from_split(&v["dataframe_split"])?),
            ["dataframe_records"] => Payload::Frame(frame_from_records(&v["dataframe_records"])?),
            ["instances"] => Payload::Tensors(v["instances"].clone()),
            ["inputs"] => Payload::Tensors(v["inputs"].clone()),
            _ => {
                return Err(bad(
                    "the JSON body needs exactly one of dataframe_split, dataframe_records, \
                     instances or inputs",
                )
                .into());
            }
        }
    } else {
        return Err(MlflowError(bad(format!(
            "content type '{ct}' is not supported: use application/json or text/csv"
        ))));
    };
    let call = crate::endpoints::Call::from_headers(&api, &endpoint, None, &headers);
    let payload = Arc::new(payload);
    let served = api
        .dispatch(
            call,
            Arc::new(move |l: &Loaded| match payload.as_ref() {
                Payload::Frame(f) => Ok((frame_inputs(&l.model, f)?, Some(f.columns.clone()))),
                Payload::Tensors(v) => Ok((tensor_inputs(l, v)?, None)),
            }),
        )
        .await?;
    let ids = served_headers(&served.request_id, &served.variant, &served.loaded.version);
    Ok((
        ids,
        axum::Json(json!({"predictions": records(&served.outputs)})),
    )
        .into_response())
}

/// An `/invocations` body, read once and turned into each variant's inputs.
enum Payload {
    Frame(Frame),
    Tensors(Value),
}

impl ServingApi {
    /// The one endpoint `/invocations` without `?model=` serves: the only deployment, else the
    /// only loaded model.
    pub fn single_endpoint(&self) -> Result<String, Error> {
        let deps = self.deployment_list();
        match deps.as_slice() {
            [one] => return Ok(one.spec().name.clone()),
            [] => {}
            _ => {
                return Err(bad(
                    "several deployments are live: call /invocations?model={name} or \
                     /v2/models/{name}/infer",
                ));
            }
        }
        Ok(self.repository.single()?.name.clone())
    }
}

async fn ping(State(api): State<ServingApi>) -> Response {
    if api.repository.index().is_empty() && api.deployment_list().is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no model loaded\n").into_response()
    } else {
        (StatusCode::OK, "\n").into_response()
    }
}

/// The serving router: `/v2/...`, `/invocations` and `/ping` (the binary's `/health` and
/// `/version` answer MLflow's other two scoring paths).
pub fn router(api: ServingApi) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}", get(metadata))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository_unload),
        )
        .route("/invocations", post(invocations))
        .route("/ping", get(ping))
        .with_state(api.clone())
        .merge(crate::endpoints::router(api))
}
