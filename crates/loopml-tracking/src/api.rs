//! MLflow REST wire format: request messages (parsed as `mlflow server` parses them: int64 as
//! number or string, single values for repeated fields, enums by name or number, GET messages
//! as query parameters; a wrongly typed field is refused in MLflow's words, naming it) and
//! response bodies built from the domain types.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::Error;
use crate::model::{
    DatasetInput, Experiment, KeyValue, LoggedModel, Metric, ModelMetric, Run, RunInfo,
};

/// Largest JSON request body accepted (dataset profiles may be up to 16 MiB).
pub const MAX_JSON_BODY: usize = 32 * 1024 * 1024;

/// Lenient field deserializers for protobuf-JSON style input.
pub mod de {
    use serde::{Deserialize, Deserializer, de::Error as _};
    use serde_json::Value;

    fn to_i64(v: &Value) -> Option<i64> {
        match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// An optional int64 given as a number or a string.
    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let v = Value::deserialize(d)?;
        if v.is_null() {
            return Ok(None);
        }
        to_i64(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}")))
    }

    /// An optional bool given as a bool or "true"/"false".
    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            v => Err(D::Error::custom(format!(
                "expected 'true' or 'false', got {v}"
            ))),
        }
    }

    /// An optional string. A number or a bool is refused, as `mlflow server` refuses it
    /// (`Invalid value 123 for parameter 'name' supplied`): the field was misused, and
    /// turning it into text would hide that (a run id 31 would become "not found").
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            v => Err(D::Error::custom(format!("expected a string, got {v}"))),
        }
    }

    /// An optional enum given by name or number, kept as text.
    fn opt_name_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            v => Err(D::Error::custom(format!(
                "expected a name or a number, got {v}"
            ))),
        }
    }

    /// A repeated field given as an array, a single value or nothing.
    pub fn vec_or_one<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: serde::de::DeserializeOwned,
    {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|i| serde_json::from_value(i).map_err(D::Error::custom))
                .collect(),
            one => Ok(vec![serde_json::from_value(one).map_err(D::Error::custom)?]),
        }
    }

    /// An enum given by name or number, kept as text.
    pub fn opt_enum<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        opt_name_or_number(d)
    }
}

/// A parsed MLflow request message: from the JSON body, or from the query string for GET.
#[derive(Debug)]
pub struct Mlflow<T>(pub T);

/// A query string as the JSON object the request parsers read (a repeated key becomes a list).
pub fn query_to_json(query: Option<&str>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = serde_json::Value::String(v.into_owned());
            match map.get_mut(k.as_ref()) {
                Some(serde_json::Value::Array(arr)) => arr.push(v),
                Some(existing) => {
                    let first = existing.take();
                    *existing = serde_json::Value::Array(vec![first, v]);
                }
                None => {
                    map.insert(k.into_owned(), v);
                }
            }
        }
    }
    serde_json::Value::Object(map)
}

fn bad_request(e: impl std::fmt::Display) -> Error {
    Error::InvalidParameter(format!("Invalid request: {e}"))
}

/// A field of the wrong type, in `mlflow server`'s words: the top-level parameter the error's
/// path starts with and the value given for it (`Invalid value "5" for parameter 'tags'
/// supplied.`). `json` re-reads the request only on this error path.
fn invalid_field(
    e: serde_path_to_error::Error<serde_json::Error>,
    json: impl FnOnce() -> Option<serde_json::Value>,
) -> Error {
    let field = match e.path().iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
        _ => None,
    };
    let inner = e.into_inner();
    if inner.is_data()
        && let Some(field) = field
        && let Some(value) = json().and_then(|v| v.get(&field).cloned())
    {
        return Error::InvalidParameter(format!(
            "Invalid value {value} for parameter '{field}' supplied:  Hint: Value was of type \
             '{}'. See the API docs for more information about request parameters.",
            python_type(&value)
        ));
    }
    bad_request(inner)
}

/// The Python type name mlflow server's messages give a JSON value (`str`, `int`, …).
fn python_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "NoneType",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        serde_json::Value::Number(_) => "float",
        serde_json::Value::String(_) => "str",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "dict",
    }
}

/// The refusal of a NUL character in a request (PostgreSQL cannot store one in text, SQLite
/// would store it and hand it to paths, logs and terminals).
fn nul_refused() -> Error {
    Error::InvalidParameter(
        "Invalid request: a string contains a NUL character (\\u0000), which names, keys and \
         values may not contain."
            .into(),
    )
}

/// Whether JSON text holds an escaped NUL (`\u0000` not preceded by an escaping backslash);
/// a raw NUL byte in a string is already invalid JSON.
pub fn has_escaped_nul(body: &[u8]) -> bool {
    memchr::memmem::find_iter(body, b"\\u0000").any(|at| {
        // Escaped only when an even number of backslashes precede this one.
        let before = body[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        before % 2 == 0
    })
}

/// Whether any string (or key) in a JSON value holds a NUL.
fn value_has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(value_has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

/// Parses a request message from JSON text.
fn from_json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    if has_escaped_nul(body) {
        return Err(nul_refused());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| invalid_field(e, || serde_json::from_slice(body).ok()))?;
    de.end().map_err(bad_request)?;
    Ok(v)
}

/// Parses a request message from a JSON value (a GET's query parameters).
fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    if value_has_nul(&value) {
        return Err(nul_refused());
    }
    let copy = value.clone();
    serde_path_to_error::deserialize(value).map_err(|e| invalid_field(e, || Some(copy)))
}

/// Parses a request message from a query string alone (for routes whose body is data).
pub fn from_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, Error> {
    from_json_value(query_to_json(query))
}

/// Whether a `Content-Type` is JSON (`application/json`, any parameters, any case).
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Mlflow<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        if method == Method::GET {
            return from_json_value(query_to_json(query.as_deref())).map(Mlflow);
        }
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        if method == Method::POST && content_type.is_none() {
            return Err(Error::InvalidParameter(
                "Bad Request. Content-Type header is missing.".into(),
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge(format!(
                    "The request body is over the limit of {MAX_JSON_BODY} bytes"
                ))
            } else {
                Error::InvalidParameter(format!("Could not read request body: {e}"))
            }
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return from_json_value(query_to_json(query.as_deref())).map(Mlflow);
        }
        // A body is JSON and says so: a `text/plain` or form POST is what a cross-site page
        // can send without a preflight (CVE-2023-43472), so it is refused as MLflow does.
        match content_type.as_ref().map(|v| v.to_str().unwrap_or("")) {
            Some(ct) if is_json(ct) => {}
            Some(_) => {
                return Err(Error::InvalidParameter(
                    "Bad Request. Content-Type must be application/json.".into(),
                ));
            }
            None => {
                return Err(Error::InvalidParameter(
                    "Bad Request. Content-Type header is missing.".into(),
                ));
            }
        }
        from_json_body(&body).map(Mlflow)
    }
}

/// A `{key, value}` pair as sent on the wire.
#[derive(Debug, Clone, Deserialize)]
pub struct WireKeyValue {
    /// Key.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub key: Option<String>,
    /// Value.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub value: Option<String>,
}

/// A metric as sent on the wire.
#[derive(Debug, Clone, Deserialize)]
pub struct WireMetric {
    /// Key.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub key: Option<String>,
    /// Value: number or "NaN"/"Infinity"/"-Infinity".
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Timestamp, ms.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub timestamp: Option<i64>,
    /// Step.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub step: Option<i64>,
    /// Logged model the metric belongs to.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model_id: Option<String>,
    /// Dataset name.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub dataset_name: Option<String>,
    /// Dataset digest.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub dataset_digest: Option<String>,
}

/// Declares an MLflow request message: a struct whose every field is optional on the wire
/// and parsed by the named lenient deserializer (`"path::to::fn"`, resolved where the macro is
/// used). Shared by every crate that speaks MLflow's REST protocol.
#[macro_export]
macro_rules! mlflow_message {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $de:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, ::serde::Deserialize)]
        pub struct $name {
            $(
                $(#[$fdoc])*
                #[serde(default, deserialize_with = $de)]
                pub $field: $ty,
            )*
        }
    };
}

mlflow_message!(
    /// experiments/create
    CreateExperiment {
        /// Name.
        name: Option<String> = "de::opt_string",
        /// Explicit artifact location.
        artifact_location: Option<String> = "de::opt_string",
        /// Tags.
        tags: Vec<WireKeyValue> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// experiments/get, delete, restore
    ExperimentRef {
        /// Id.
        experiment_id: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// experiments/get-by-name
    ExperimentByName {
        /// Name.
        experiment_name: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// experiments/search
    SearchExperiments {
        /// Page size.
        max_results: Option<i64> = "de::opt_i64",
        /// Page token.
        page_token: Option<String> = "de::opt_string",
        /// Filter.
        filter: Option<String> = "de::opt_string",
        /// Order.
        order_by: Vec<String> = "de::vec_or_one",
        /// ACTIVE_ONLY | DELETED_ONLY | ALL.
        view_type: Option<String> = "de::opt_enum",
    }
);
mlflow_message!(
    /// experiments/update
    UpdateExperiment {
        /// Id.
        experiment_id: Option<String> = "de::opt_string",
        /// New name.
        new_name: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// experiments/set-experiment-tag and delete-experiment-tag
    ExperimentTag {
        /// Id.
        experiment_id: Option<String> = "de::opt_string",
        /// Key.
        key: Option<String> = "de::opt_string",
        /// Value.
        value: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// runs/create
    CreateRun {
        /// Experiment.
        experiment_id: Option<String> = "de::opt_string",
        /// User.
        user_id: Option<String> = "de::opt_string",
        /// Name.
        run_name: Option<String> = "de::opt_string",
        /// Start time, ms.
        start_time: Option<i64> = "de::opt_i64",
        /// Tags.
        tags: Vec<WireKeyValue> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// Any message that names a run.
    RunRef {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Deprecated run id.
        run_uuid: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// runs/update
    UpdateRun {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Deprecated run id.
        run_uuid: Option<String> = "de::opt_string",
        /// New status.
        status: Option<String> = "de::opt_enum",
        /// End time, ms.
        end_time: Option<i64> = "de::opt_i64",
        /// New name.
        run_name: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// runs/search
    SearchRuns {
        /// Experiments to search.
        experiment_ids: Vec<String> = "de::vec_or_one",
        /// Filter.
        filter: Option<String> = "de::opt_string",
        /// ACTIVE_ONLY | DELETED_ONLY | ALL.
        run_view_type: Option<String> = "de::opt_enum",
        /// Page size.
        max_results: Option<i64> = "de::opt_i64",
        /// Order.
        order_by: Vec<String> = "de::vec_or_one",
        /// Page token.
        page_token: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// runs/log-metric
    LogMetric {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Deprecated run id.
        run_uuid: Option<String> = "de::opt_string",
        /// Key.
        key: Option<String> = "de::opt_string",
        /// Value.
        value: Option<serde_json::Value> = "Option::deserialize",
        /// Timestamp.
        timestamp: Option<i64> = "de::opt_i64",
        /// Step.
        step: Option<i64> = "de::opt_i64",
        /// Logged model.
        model_id: Option<String> = "de::opt_string",
        /// Dataset name.
        dataset_name: Option<String> = "de::opt_string",
        /// Dataset digest.
        dataset_digest: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// runs/log-parameter, runs/set-tag, runs/delete-tag
    RunKeyValue {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Deprecated run id.
        run_uuid: Option<String> = "de::opt_string",
        /// Key.
        key: Option<String> = "de::opt_string",
        /// Value.
        value: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// runs/log-batch
    LogBatch {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Metrics.
        metrics: Vec<WireMetric> = "de::vec_or_one",
        /// Params.
        params: Vec<WireKeyValue> = "de::vec_or_one",
        /// Tags.
        tags: Vec<WireKeyValue> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// metrics/get-history
    GetHistory {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Deprecated run id.
        run_uuid: Option<String> = "de::opt_string",
        /// Metric key.
        metric_key: Option<String> = "de::opt_string",
        /// Page size.
        max_results: Option<i64> = "de::opt_i64",
        /// Page token.
        page_token: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// metrics/get-history-bulk-interval
    GetHistoryBulk {
        /// Runs.
        run_ids: Vec<String> = "de::vec_or_one",
        /// Deprecated single run id (get-history-bulk).
        run_id: Vec<String> = "de::vec_or_one",
        /// Metric key.
        metric_key: Option<String> = "de::opt_string",
        /// First step (inclusive).
        start_step: Option<i64> = "de::opt_i64",
        /// Last step (inclusive).
        end_step: Option<i64> = "de::opt_i64",
        /// Maximum points per run.
        max_results: Option<i64> = "de::opt_i64",
    }
);

/// A dataset as sent by `log-inputs`.
#[derive(Debug, Clone, Deserialize)]
pub struct WireDataset {
    /// Name.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    /// Digest.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub digest: Option<String>,
    /// Source type.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub source_type: Option<String>,
    /// Source.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub source: Option<String>,
    /// Schema.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub schema: Option<String>,
    /// Profile.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub profile: Option<String>,
}

/// A dataset input as sent by `log-inputs`.
#[derive(Debug, Clone, Deserialize)]
pub struct WireDatasetInput {
    /// Input tags.
    #[serde(default, deserialize_with = "de::vec_or_one")]
    pub tags: Vec<WireKeyValue>,
    /// The dataset.
    pub dataset: Option<WireDataset>,
}

/// A model reference in `log-inputs` / `outputs`.
#[derive(Debug, Clone, Deserialize)]
pub struct WireModelRef {
    /// Logged model id.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model_id: Option<String>,
    /// Step (outputs only).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub step: Option<i64>,
}

mlflow_message!(
    /// runs/log-inputs
    LogInputs {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Datasets.
        datasets: Vec<WireDatasetInput> = "de::vec_or_one",
        /// Models.
        models: Vec<WireModelRef> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// runs/outputs
    LogOutputs {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Models.
        models: Vec<WireModelRef> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// runs/log-model (legacy)
    LogModel {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// MLmodel as JSON.
        model_json: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// POST logged-models
    CreateLoggedModel {
        /// Experiment.
        experiment_id: Option<String> = "de::opt_string",
        /// Name.
        name: Option<String> = "de::opt_string",
        /// Type.
        model_type: Option<String> = "de::opt_string",
        /// Source run.
        source_run_id: Option<String> = "de::opt_string",
        /// Params.
        params: Vec<WireKeyValue> = "de::vec_or_one",
        /// Tags.
        tags: Vec<WireKeyValue> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// PATCH logged-models/{id}
    FinalizeLoggedModel {
        /// New status.
        status: Option<String> = "de::opt_enum",
    }
);
mlflow_message!(
    /// PATCH logged-models/{id}/tags, POST logged-models/{id}/params
    LoggedModelKeyValues {
        /// Tags.
        tags: Vec<WireKeyValue> = "de::vec_or_one",
        /// Params.
        params: Vec<WireKeyValue> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// GET logged-models/{id}
    GetLoggedModel {
        /// Include deleted models.
        allow_deleted: Option<bool> = "de::opt_bool",
    }
);

/// One structured order-by of a logged-model search.
#[derive(Debug, Clone, Deserialize)]
pub struct WireModelOrderBy {
    /// Field, e.g. `metrics.acc` or `creation_timestamp`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub field_name: Option<String>,
    /// Ascending (default true).
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub ascending: Option<bool>,
    /// Metric dataset scope.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub dataset_name: Option<String>,
    /// Metric dataset scope.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub dataset_digest: Option<String>,
}

/// Dataset scope of a logged-model search.
#[derive(Debug, Clone, Deserialize)]
pub struct WireDatasetFilter {
    /// Dataset name.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub dataset_name: Option<String>,
    /// Dataset digest.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub dataset_digest: Option<String>,
}

mlflow_message!(
    /// POST logged-models/search
    SearchLoggedModels {
        /// Experiments.
        experiment_ids: Vec<String> = "de::vec_or_one",
        /// Filter.
        filter: Option<String> = "de::opt_string",
        /// Dataset scope for metric filters.
        datasets: Vec<WireDatasetFilter> = "de::vec_or_one",
        /// Page size.
        max_results: Option<i64> = "de::opt_i64",
        /// Order.
        order_by: Vec<WireModelOrderBy> = "de::vec_or_one",
        /// Page token.
        page_token: Option<String> = "de::opt_string",
    }
);
mlflow_message!(
    /// GET mlflow-artifacts/artifacts?path=
    ListArtifacts {
        /// Directory relative to the artifact root.
        path: Option<String> = "de::opt_string",
    }
);
/// One finished part named by `mpu/complete`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WireUploadPart {
    /// 1-based part number.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub part_number: Option<i64>,
    /// The ETag the part upload answered with.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub etag: Option<String>,
}
mlflow_message!(
    /// mlflow-artifacts/mpu/create/{dir}: `path` is the client's local file (its base name is
    /// the artifact's name).
    CreateUpload {
        /// Local file the client uploads.
        path: Option<String> = "de::opt_string",
        /// How many parts it will send.
        num_parts: Option<i64> = "de::opt_i64",
    }
);
mlflow_message!(
    /// mlflow-artifacts/mpu/complete/{dir} and mpu/abort/{dir}
    FinishUpload {
        /// Local file the client uploads.
        path: Option<String> = "de::opt_string",
        /// Id from mpu/create.
        upload_id: Option<String> = "de::opt_string",
        /// Parts, for complete.
        parts: Vec<WireUploadPart> = "de::vec_or_one",
    }
);
mlflow_message!(
    /// GET mlflow/artifacts/list?run_id=&path=
    ListRunArtifacts {
        /// Run id.
        run_id: Option<String> = "de::opt_string",
        /// Deprecated run id.
        run_uuid: Option<String> = "de::opt_string",
        /// Directory relative to the run's artifact root.
        path: Option<String> = "de::opt_string",
        /// Page token (ignored: listings are complete).
        page_token: Option<String> = "de::opt_string",
    }
);

// ------------------------------------------------------------------------------------------
// Responses

fn ser_double<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}

/// `{key, value}` on the wire.
#[derive(Serialize)]
pub struct KeyValueJson<'a> {
    key: &'a str,
    value: &'a str,
}

fn kvs(v: &[KeyValue]) -> Vec<KeyValueJson<'_>> {
    v.iter()
        .map(|kv| KeyValueJson {
            key: &kv.key,
            value: &kv.value,
        })
        .collect()
}

/// Experiment on the wire.
#[derive(Serialize)]
pub struct ExperimentJson<'a> {
    experiment_id: String,
    name: &'a str,
    artifact_location: &'a str,
    lifecycle_stage: &'static str,
    creation_time: i64,
    last_update_time: i64,
    tags: Vec<KeyValueJson<'a>>,
}

impl<'a> From<&'a Experiment> for ExperimentJson<'a> {
    fn from(e: &'a Experiment) -> Self {
        Self {
            experiment_id: e.id.to_string(),
            name: &e.name,
            artifact_location: &e.artifact_location,
            lifecycle_stage: e.lifecycle_stage.as_str(),
            creation_time: e.creation_time,
            last_update_time: e.last_update_time,
            tags: kvs(&e.tags),
        }
    }
}

/// Metric on the wire.
#[derive(Serialize)]
pub struct MetricJson<'a> {
    key: &'a str,
    #[serde(serialize_with = "ser_double")]
    value: f64,
    timestamp: i64,
    step: i64,
}

impl<'a> From<&'a Metric> for MetricJson<'a> {
    fn from(m: &'a Metric) -> Self {
        Self {
            key: &m.key,
            value: m.value,
            timestamp: m.timestamp,
            step: m.step,
        }
    }
}

/// Run info on the wire.
#[derive(Serialize)]
pub struct RunInfoJson<'a> {
    run_uuid: &'a str,
    run_id: &'a str,
    run_name: &'a str,
    experiment_id: String,
    user_id: &'a str,
    status: &'static str,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    artifact_uri: &'a str,
    lifecycle_stage: &'static str,
}

impl<'a> From<&'a RunInfo> for RunInfoJson<'a> {
    fn from(i: &'a RunInfo) -> Self {
        Self {
            run_uuid: &i.run_id,
            run_id: &i.run_id,
            run_name: &i.run_name,
            experiment_id: i.experiment_id.to_string(),
            user_id: &i.user_id,
            status: i.status.as_str(),
            start_time: i.start_time,
            end_time: i.end_time,
            artifact_uri: &i.artifact_uri,
            lifecycle_stage: i.lifecycle_stage.as_str(),
        }
    }
}

#[derive(Serialize)]
struct RunDataJson<'a> {
    metrics: Vec<MetricJson<'a>>,
    params: Vec<KeyValueJson<'a>>,
    tags: Vec<KeyValueJson<'a>>,
}

#[derive(Serialize)]
struct DatasetJson<'a> {
    name: &'a str,
    digest: &'a str,
    source_type: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'a str>,
}

#[derive(Serialize)]
struct DatasetInputJson<'a> {
    tags: Vec<KeyValueJson<'a>>,
    dataset: DatasetJson<'a>,
}

impl<'a> From<&'a DatasetInput> for DatasetInputJson<'a> {
    fn from(d: &'a DatasetInput) -> Self {
        Self {
            tags: kvs(&d.tags),
            dataset: DatasetJson {
                name: &d.dataset.name,
                digest: &d.dataset.digest,
                source_type: &d.dataset.source_type,
                source: &d.dataset.source,
                schema: d.dataset.schema.as_deref(),
                profile: d.dataset.profile.as_deref(),
            },
        }
    }
}

#[derive(Serialize)]
struct ModelInputJson<'a> {
    model_id: &'a str,
}

#[derive(Serialize)]
struct ModelOutputJson<'a> {
    model_id: &'a str,
    step: i64,
}

#[derive(Serialize)]
struct RunInputsJson<'a> {
    dataset_inputs: Vec<DatasetInputJson<'a>>,
    model_inputs: Vec<ModelInputJson<'a>>,
}

#[derive(Serialize)]
struct RunOutputsJson<'a> {
    model_outputs: Vec<ModelOutputJson<'a>>,
}

/// A full run on the wire.
#[derive(Serialize)]
pub struct RunJson<'a> {
    info: RunInfoJson<'a>,
    data: RunDataJson<'a>,
    inputs: RunInputsJson<'a>,
    outputs: RunOutputsJson<'a>,
}

impl<'a> From<&'a Run> for RunJson<'a> {
    fn from(r: &'a Run) -> Self {
        Self {
            info: (&r.info).into(),
            data: RunDataJson {
                metrics: r.metrics.iter().map(Into::into).collect(),
                params: kvs(&r.params),
                tags: kvs(&r.tags),
            },
            inputs: RunInputsJson {
                dataset_inputs: r.dataset_inputs.iter().map(Into::into).collect(),
                model_inputs: r
                    .model_inputs
                    .iter()
                    .map(|m| ModelInputJson { model_id: m })
                    .collect(),
            },
            outputs: RunOutputsJson {
                model_outputs: r
                    .model_outputs
                    .iter()
                    .map(|(m, step)| ModelOutputJson {
                        model_id: m,
                        step: *step,
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Serialize)]
struct ModelMetricJson<'a> {
    key: &'a str,
    #[serde(serialize_with = "ser_double")]
    value: f64,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataset_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataset_digest: Option<&'a str>,
    model_id: &'a str,
}

#[derive(Serialize)]
struct LoggedModelInfoJson<'a> {
    model_id: &'a str,
    experiment_id: String,
    name: &'a str,
    creation_timestamp_ms: i64,
    last_updated_timestamp_ms: i64,
    artifact_uri: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_run_id: Option<&'a str>,
    tags: Vec<KeyValueJson<'a>>,
}

#[derive(Serialize)]
struct LoggedModelDataJson<'a> {
    params: Vec<KeyValueJson<'a>>,
    metrics: Vec<ModelMetricJson<'a>>,
}

/// A logged model on the wire.
#[derive(Serialize)]
pub struct LoggedModelJson<'a> {
    info: LoggedModelInfoJson<'a>,
    data: LoggedModelDataJson<'a>,
}

impl<'a> From<&'a LoggedModel> for LoggedModelJson<'a> {
    fn from(m: &'a LoggedModel) -> Self {
        let metric = |mm: &'a ModelMetric| ModelMetricJson {
            key: &mm.metric.key,
            value: mm.metric.value,
            timestamp: mm.metric.timestamp,
            step: mm.metric.step,
            run_id: mm.run_id.as_deref(),
            dataset_name: mm.dataset_name.as_deref(),
            dataset_digest: mm.dataset_digest.as_deref(),
            model_id: &m.model_id,
        };
        Self {
            info: LoggedModelInfoJson {
                model_id: &m.model_id,
                experiment_id: m.experiment_id.to_string(),
                name: &m.name,
                creation_timestamp_ms: m.creation_timestamp_ms,
                last_updated_timestamp_ms: m.last_updated_timestamp_ms,
                artifact_uri: &m.artifact_uri,
                status: m.status.as_str(),
                status_message: m.status_message.as_deref(),
                model_type: m.model_type.as_deref(),
                source_run_id: m.source_run_id.as_deref(),
                tags: kvs(&m.tags),
            },
            data: LoggedModelDataJson {
                params: kvs(&m.params),
                metrics: m.metrics.iter().map(metric).collect(),
            },
        }
    }
}

/// Metric with its run id (bulk history).
#[derive(Serialize)]
pub struct RunMetricJson<'a> {
    key: &'a str,
    #[serde(serialize_with = "ser_double")]
    value: f64,
    timestamp: i64,
    step: i64,
    run_id: &'a str,
}

impl<'a> RunMetricJson<'a> {
    /// Pairs a metric with its run id.
    pub fn new(run_id: &'a str, m: &'a Metric) -> Self {
        Self {
            key: &m.key,
            value: m.value,
            timestamp: m.timestamp,
            step: m.step,
            run_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_become_messages() {
        let v = query_to_json(Some(
            "run_id=a&run_uuid=a&max_results=25000&order_by=x&order_by=y",
        ));
        let h: GetHistory = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(h.max_results, Some(25000));
        let s: SearchRuns = serde_json::from_value(v).unwrap();
        assert_eq!(s.order_by, vec!["x".to_string(), "y".to_string()]);
        let one: SearchRuns =
            serde_json::from_value(query_to_json(Some("experiment_ids=3"))).unwrap();
        assert_eq!(one.experiment_ids, vec!["3".to_string()]);
    }

    #[test]
    fn escaped_nuls_are_found_and_escaped_backslashes_are_not() {
        assert!(has_escaped_nul(br#"{"name": "a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"a\u0000": 1}"#));
        assert!(has_escaped_nul(br#"{"v": "\\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"v": "\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"v": "\u0010 \u1000 u0000"}"#));
        let err = from_json_body::<SearchRuns>(br#"{"filter": "a\u0000"}"#).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let err = from_query::<SearchRuns>(Some("filter=a%00b")).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        // Any other Unicode is data.
        let ok: SearchRuns =
            from_json_body("{\"filter\": \"e\u{301} \u{202e} 𝄞\"}".as_bytes()).unwrap();
        assert_eq!(ok.filter.as_deref(), Some("e\u{301} \u{202e} 𝄞"));
    }

    #[test]
    fn nan_and_infinity_serialize_as_mlflow_strings() {
        let m = Metric {
            key: "k".into(),
            value: f64::NAN,
            timestamp: 1,
            step: 0,
        };
        let s = serde_json::to_string(&MetricJson::from(&m)).unwrap();
        assert!(s.contains("\"NaN\""));
        let m = Metric {
            value: f64::NEG_INFINITY,
            ..m
        };
        assert!(
            serde_json::to_string(&MetricJson::from(&m))
                .unwrap()
                .contains("\"-Infinity\"")
        );
    }
}
