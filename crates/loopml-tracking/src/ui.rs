//! Routes `mlflow server` serves for its web UI and the client's older helpers, beside the
//! REST API proper: `/get-artifact`, `upload-artifact`, `experiments/search-datasets`,
//! `metrics/get-history-bulk`, `runs/create-promptlab-run`, `gateway-proxy` and a logged
//! model's `artifacts/files` and `artifacts/directories`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use loopml_store::{ArtifactPath, ArtifactStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{self, Mlflow, de};
use crate::error::{Error, Result};
use crate::model::{KeyValue, RunStatus};
use crate::pyjson;
use crate::routes::{empty, json as json_response, proxied_artifact_path};
use crate::service::{Batch, TrackingService, now_ms};

/// Largest body `upload-artifact` takes, as in mlflow server (the UI uploads small files).
const MAX_UI_UPLOAD: usize = 10 * 1024 * 1024;

/// A relative artifact path from a UI route's query, refused in mlflow server's exact words
/// (`Invalid path`) when it is absolute, climbs with `..` (also percent-encoded), holds a
/// backslash, a NUL byte or a `#`.
pub fn ui_artifact_path(raw: &str) -> Result<ArtifactPath> {
    let invalid = || Error::InvalidParameter("Invalid path".into());
    let mut decoded = raw.to_string();
    // Decode until stable, so `..%252f` cannot hide a `..` behind a second encoding.
    for _ in 0..4 {
        let next: String =
            form_urlencoded::parse(format!("p={}", decoded.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    if raw.contains('#') || decoded.contains('#') {
        return Err(invalid());
    }
    ArtifactPath::parse(&decoded).map_err(|_| invalid())?;
    ArtifactPath::parse(raw).map_err(|_| invalid())
}

/// The media type the UI's previews get for a file name: text for anything a browser could run
/// (HTML, SVG, scripts are sent as `text/plain`), images and PDFs as themselves, else bytes.
fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "txt" | "log" | "md" | "yaml" | "yml" | "csv" | "tsv" | "py" | "html" | "htm" | "svg"
        | "js" | "xml" | "toml" | "ini" | "cfg" | "sh" | "ipynb" => "text/plain",
        "" if name.eq_ignore_ascii_case("MLmodel") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Sends one stored artifact as an attachment with a sniff-proof media type, as mlflow
/// server's `/get-artifact` does (a preview must not run in the server's origin).
pub async fn send_artifact(store: &ArtifactStore, path: &ArtifactPath) -> Result<Response> {
    let read = store.get_range(path, None).await?;
    let name = path.file_name();
    let filename = name.replace(['"', '\\', '\r', '\n'], "_");
    let len = read.span.end - read.span.start;
    Ok((
        [
            (header::CONTENT_TYPE, media_type(name).to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        Body::from_stream(read.body),
    )
        .into_response())
}

/// The store path of a run's artifact, from its `mlflow-artifacts:` root.
fn run_artifact(artifact_uri: &str, rel: &ArtifactPath) -> Result<ArtifactPath> {
    let root = proxied_artifact_path(artifact_uri).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "The run's artifact root '{artifact_uri}' is not served by this server"
        ))
    })?;
    Ok(root.join(rel))
}

#[derive(Debug, Deserialize)]
struct RunArtifactQuery {
    #[serde(default, deserialize_with = "de::opt_string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    path: Option<String>,
}

async fn get_artifact(
    State(s): State<TrackingService>,
    Mlflow(q): Mlflow<RunArtifactQuery>,
) -> Result<Response> {
    let path = q.path.ok_or_else(|| Error::missing("path"))?;
    let rel = ui_artifact_path(&path)?;
    let id = q
        .run_id
        .filter(|r| !r.is_empty())
        .or(q.run_uuid)
        .ok_or_else(|| Error::missing("run_id"))?;
    let run = s.get_run(id).await?;
    send_artifact(s.artifacts(), &run_artifact(&run.info.artifact_uri, &rel)?).await
}

async fn upload_artifact(
    State(s): State<TrackingService>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let q: RunArtifactQuery = api::from_query(query.as_deref())?;
    let id = q
        .run_uuid
        .filter(|r| !r.is_empty())
        .or(q.run_id)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::InvalidParameter("Request must specify run_uuid.".into()))?;
    let path = q
        .path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::InvalidParameter("Request must specify path.".into()))?;
    let rel = ui_artifact_path(&path)?;
    if body.len() > MAX_UI_UPLOAD {
        return Err(Error::InvalidParameter(
            "Artifact size is too large. Max size is 10MB.".into(),
        ));
    }
    if body.is_empty() {
        return Err(Error::InvalidParameter("Request must specify data.".into()));
    }
    let run = s.get_run(id).await?;
    if rel.is_root() {
        return Err(Error::InvalidParameter("Invalid path".into()));
    }
    let target = run_artifact(&run.info.artifact_uri, &rel)?;
    let chunk = futures::stream::once(async move { Ok::<_, String>(body) });
    s.artifacts().put(&target, Box::pin(chunk)).await?;
    Ok(empty())
}

/// Wraps the body limit around `upload-artifact` (the default 2 MB would cut the UI's uploads).
fn upload_route() -> axum::routing::MethodRouter<TrackingService> {
    post(upload_artifact).layer(axum::extract::DefaultBodyLimit::max(MAX_UI_UPLOAD + 1))
}

/// experiments/search-datasets
#[derive(Debug, Deserialize)]
struct SearchDatasets {
    #[serde(default, deserialize_with = "de::vec_or_one")]
    experiment_ids: Vec<String>,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    experiment_id: String,
    name: &'a str,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

async fn search_datasets(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<SearchDatasets>,
) -> Result<Response> {
    let summaries = s.search_dataset_summaries(r.experiment_ids).await?;
    if summaries.is_empty() {
        return Ok(empty());
    }
    let items: Vec<SummaryJson<'_>> = summaries
        .iter()
        .map(|d| SummaryJson {
            experiment_id: d.experiment_id.to_string(),
            name: &d.name,
            digest: &d.digest,
            context: d.context.as_deref(),
        })
        .collect();
    Ok(json_response(&json!({ "dataset_summaries": items })))
}

#[derive(Serialize)]
struct BulkHistory<'a> {
    metrics: Vec<api::RunMetricJson<'a>>,
}

async fn get_metric_history_bulk(
    State(s): State<TrackingService>,
    Mlflow(r): Mlflow<api::GetHistoryBulk>,
) -> Result<Response> {
    let mut ids = r.run_id;
    ids.extend(r.run_ids);
    let points = s
        .metric_history_bulk(ids, r.metric_key, r.max_results)
        .await?;
    Ok(json_response(&BulkHistory {
        metrics: points
            .iter()
            .map(|(id, m)| api::RunMetricJson::new(id, m))
            .collect(),
    }))
}

/// `runs/create-promptlab-run`: the prompt-engineering page's "create run". Takes JSON only.
#[derive(Debug, Deserialize)]
struct PromptlabRun {
    #[serde(default)]
    experiment_id: Option<Value>,
    #[serde(default, deserialize_with = "de::opt_string")]
    run_name: Option<String>,
    #[serde(default)]
    tags: Vec<api::WireKeyValue>,
    #[serde(default, deserialize_with = "de::opt_string")]
    prompt_template: Option<String>,
    #[serde(default)]
    prompt_parameters: Vec<LooseKeyValue>,
    #[serde(default, deserialize_with = "de::opt_string")]
    model_route: Option<String>,
    #[serde(default)]
    model_parameters: Vec<LooseKeyValue>,
    #[serde(default, deserialize_with = "de::opt_string")]
    model_input: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    model_output: Option<String>,
    #[serde(default)]
    model_output_parameters: Vec<LooseKeyValue>,
    #[serde(default, deserialize_with = "de::opt_string")]
    mlflow_version: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    start_time: Option<i64>,
}

/// A `{key, value}` whose value may be any JSON scalar (the page sends numbers), kept as text
/// the way Python's `str()` writes it.
#[derive(Debug, Deserialize)]
struct LooseKeyValue {
    #[serde(default, deserialize_with = "de::opt_string")]
    key: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

impl LooseKeyValue {
    fn into_kv(self) -> Result<KeyValue> {
        let value = match self.value {
            None | Some(Value::Null) => "None".to_string(),
            Some(Value::String(s)) => s,
            Some(Value::Bool(b)) => if b { "True" } else { "False" }.to_string(),
            Some(v) => v.to_string(),
        };
        Ok(KeyValue {
            key: self.key.ok_or_else(|| Error::missing("key"))?,
            value,
        })
    }
}

fn promptlab_missing(what: &str) -> Error {
    Error::InvalidParameter(format!("CreatePromptlabRun request must specify {what}."))
}

async fn create_promptlab_run(
    State(s): State<TrackingService>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        return Err(Error::InvalidParameter(
            "Bad Request. Content-Type must be one of ['application/json'].".into(),
        ));
    }
    let r: PromptlabRun = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidParameter(format!("Invalid request: {e}")))?;
    let experiment_id = match r.experiment_id {
        Some(Value::String(e)) if !e.is_empty() => e,
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(promptlab_missing("experiment_id")),
    };
    let prompt_template = r
        .prompt_template
        .filter(|t| !t.is_empty())
        .ok_or_else(|| promptlab_missing("prompt_template"))?;
    if r.prompt_parameters.is_empty() {
        return Err(promptlab_missing("prompt_parameters"));
    }
    let model_route = r
        .model_route
        .filter(|t| !t.is_empty())
        .ok_or_else(|| promptlab_missing("model_route"))?;
    let model_input = r
        .model_input
        .filter(|t| !t.is_empty())
        .ok_or_else(|| promptlab_missing("model_input"))?;
    let mlflow_version = r
        .mlflow_version
        .filter(|t| !t.is_empty())
        .ok_or_else(|| promptlab_missing("mlflow_version"))?;
    let prompt_parameters = collect_kvs(r.prompt_parameters)?;
    let model_parameters = collect_kvs(r.model_parameters)?;
    let output_parameters = collect_kvs(r.model_output_parameters)?;
    let exp = crate::validation::parse_experiment_id(&experiment_id)?;

    let run = s
        .create_run(
            exp,
            Some(r.user_id.unwrap_or_else(|| "unknown".into())),
            r.run_name.clone(),
            Some(r.start_time.unwrap_or_else(now_ms)),
            crate::routes::key_values(r.tags)?,
        )
        .await?;
    let run_id = run.info.run_id.clone();
    let mut params = model_parameters.clone();
    params.push(KeyValue {
        key: "model_route".into(),
        value: model_route.clone(),
    });
    params.push(KeyValue {
        key: "prompt_template".into(),
        value: prompt_template.clone(),
    });
    let logged_artifacts =
        pyjson::dumps(&json!([{"path": "eval_results_table.json", "type": "table"}]));
    let created = chrono_like_utc();
    let model_meta = pyjson::dumps(&Value::Array(vec![
        serde_json::from_str(&pyjson::dumps_object(&[
            ("run_id", json!(run_id)),
            ("artifact_path", json!("model")),
            ("utc_time_created", json!(created)),
            (
                "model_uuid",
                json!(uuid::Uuid::new_v4().simple().to_string()),
            ),
            (
                "flavors",
                json!({"python_function": {
                    "loader_module": "mlflow.prompt.promptlab_model",
                    "parameters_path": "parameters.yaml",
                    "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                    "python_version": "3"
                }}),
            ),
        ]))
        .map_err(|e| Error::InvalidParameter(e.to_string()))?,
    ]));
    let outcome = async {
        s.log_batch(
            run_id.clone(),
            Batch {
                metrics: Vec::new(),
                params,
                tags: vec![
                    KeyValue {
                        key: "mlflow.loggedArtifacts".into(),
                        value: logged_artifacts,
                    },
                    KeyValue {
                        key: "mlflow.runSourceType".into(),
                        value: "PROMPT_ENGINEERING".into(),
                    },
                    KeyValue {
                        key: "mlflow.log-model.history".into(),
                        value: model_meta,
                    },
                ],
            },
        )
        .await?;
        let files = promptlab_files(
            &run_id,
            &created,
            &prompt_template,
            &prompt_parameters,
            &model_parameters,
            &output_parameters,
            &model_route,
            &model_input,
            r.model_output.as_deref(),
            &mlflow_version,
        );
        for (name, text) in files {
            let rel = ArtifactPath::parse(name)?;
            let target = run_artifact(&run.info.artifact_uri, &rel)?;
            let bytes = Bytes::from(text);
            let chunk = futures::stream::once(async move { Ok::<_, String>(bytes) });
            s.artifacts().put(&target, Box::pin(chunk)).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    let status = if outcome.is_ok() {
        RunStatus::Finished
    } else {
        RunStatus::Failed
    };
    if let Err(e) = &outcome {
        tracing::warn!(run_id, error = %e, "promptlab run could not be completed");
    }
    s.update_run(run_id.clone(), Some(status), Some(now_ms()), None)
        .await?;
    let run = s.get_run(run_id).await?;
    Ok(json_response(&json!({ "run": api::RunJson::from(&run) })))
}

fn collect_kvs(items: Vec<LooseKeyValue>) -> Result<Vec<KeyValue>> {
    items.into_iter().map(LooseKeyValue::into_kv).collect()
}

/// Now as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), MLflow's `utc_time_created` format.
fn chrono_like_utc() -> String {
    let ms = now_ms();
    let secs = ms.div_euclid(1000);
    let micros = ms.rem_euclid(1000) * 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{micros:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A YAML scalar: JSON's quoting is valid YAML and keeps any text intact.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

/// The files of a promptlab run: the evaluation table and a `model/` directory in the layout
/// of MLflow's promptlab flavor (MLmodel, parameters.yaml, environment files, input example).
#[allow(clippy::too_many_arguments)]
fn promptlab_files(
    run_id: &str,
    created: &str,
    prompt_template: &str,
    prompt_parameters: &[KeyValue],
    model_parameters: &[KeyValue],
    output_parameters: &[KeyValue],
    model_route: &str,
    model_input: &str,
    model_output: Option<&str>,
    mlflow_version: &str,
) -> Vec<(&'static str, String)> {
    let mut columns: Vec<Value> = prompt_parameters.iter().map(|p| json!(p.key)).collect();
    columns.push(json!("prompt"));
    columns.push(json!("output"));
    columns.extend(output_parameters.iter().map(|p| json!(p.key)));
    let mut row: Vec<Value> = prompt_parameters.iter().map(|p| json!(p.value)).collect();
    row.push(json!(model_input));
    row.push(model_output.map_or(Value::Null, |o| json!(o)));
    row.extend(output_parameters.iter().map(|p| json!(p.value)));
    let table = pyjson::dumps_object(&[("columns", Value::Array(columns)), ("data", json!([row]))]);
    let map = |kvs: &[KeyValue]| {
        if kvs.is_empty() {
            " {}\n".to_string()
        } else {
            let mut s = String::from("\n");
            for kv in kvs {
                s.push_str(&format!(
                    "  {}: {}\n",
                    yaml_str(&kv.key),
                    yaml_str(&kv.value)
                ));
            }
            s
        }
    };
    let parameters = format!(
        "model_parameters:{}model_route: {}\nprompt_parameters:{}prompt_template: {}\n",
        map(model_parameters),
        yaml_str(model_route),
        map(prompt_parameters),
        yaml_str(prompt_template)
    );
    let inputs: Vec<Value> = prompt_parameters
        .iter()
        .map(|p| json!({"name": p.key, "type": "string", "required": true}))
        .collect();
    let signature_inputs = pyjson::dumps(&Value::Array(inputs));
    let mlmodel = format!(
        "artifact_path: model\nflavors:\n  python_function:\n    env:\n      conda: conda.yaml\n      \
         virtualenv: python_env.yaml\n    loader_module: mlflow.prompt.promptlab_model\n    \
         parameters_path: parameters.yaml\n    python_version: '3'\nmlflow_version: {}\n\
         run_id: {run_id}\nsaved_input_example_info:\n  artifact_path: input_example.json\n  \
         type: json_object\nsignature:\n  inputs: {}\n  outputs: {}\n\
         utc_time_created: '{created}'\n",
        yaml_str(mlflow_version),
        yaml_str(&signature_inputs),
        yaml_str(r#"[{"type": "string", "name": "output", "required": true}]"#),
    );
    let example = pyjson::dumps(&json!({
        "inputs": prompt_parameters.iter().map(|p| json!(p.value)).collect::<Vec<_>>()
    }));
    let requirement = format!("mlflow[gateway]=={mlflow_version}");
    vec![
        ("eval_results_table.json", table),
        ("model/MLmodel", mlmodel),
        ("model/parameters.yaml", parameters),
        ("model/input_example.json", example),
        ("model/requirements.txt", format!("{requirement}\n")),
        (
            "model/python_env.yaml",
            "python: '3'\ndependencies:\n- -r requirements.txt\n".to_string(),
        ),
        (
            "model/conda.yaml",
            format!(
                "channels:\n- conda-forge\ndependencies:\n- python=3\n- pip\n- pip:\n  - {}\nname: mlflow-env\n",
                yaml_str(&requirement)
            ),
        ),
    ]
}

#[derive(Debug, Deserialize)]
struct ModelFileQuery {
    #[serde(default, deserialize_with = "de::opt_string")]
    artifact_file_path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ModelDirQuery {
    #[serde(default, deserialize_with = "de::opt_string")]
    artifact_directory_path: Option<String>,
}

/// `logged-models/{id}/artifacts/files?artifact_file_path=`: one file of a logged model, as
/// the UI previews it.
async fn get_logged_model_artifact(
    State(s): State<TrackingService>,
    Path(model_id): Path<String>,
    Mlflow(q): Mlflow<ModelFileQuery>,
) -> Result<Response> {
    let path = q
        .artifact_file_path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Error::InvalidParameter(
                "Request must include the \"artifact_file_path\" query parameter.".into(),
            )
        })?;
    let rel = ui_artifact_path(&path)?;
    let model = s.get_logged_model(model_id, false).await?;
    send_artifact(s.artifacts(), &run_artifact(&model.artifact_uri, &rel)?).await
}

/// `logged-models/{id}/artifacts/directories?artifact_directory_path=`: one level of a logged
/// model's files, `{root_uri, files: [{path, is_dir, file_size}]}` with paths from its root.
async fn list_logged_model_artifacts(
    State(s): State<TrackingService>,
    Path(model_id): Path<String>,
    Mlflow(q): Mlflow<ModelDirQuery>,
) -> Result<Response> {
    let rel = ui_artifact_path(q.artifact_directory_path.as_deref().unwrap_or(""))?;
    let model = s.get_logged_model(model_id, false).await?;
    let mut files = Vec::new();
    if let Some(root) = proxied_artifact_path(&model.artifact_uri) {
        for e in s.artifacts().list(&root.join(&rel)).await? {
            let path = if rel.is_root() {
                e.name
            } else {
                format!("{rel}/{}", e.name)
            };
            let mut f = json!({ "path": path, "is_dir": e.is_dir });
            if let Some(size) = e.size {
                f["file_size"] = json!(size);
            }
            files.push(f);
        }
    }
    Ok(json_response(
        &json!({ "root_uri": model.artifact_uri, "files": files }),
    ))
}

/// `gateway-proxy`: with no deployments server configured (`MLFLOW_DEPLOYMENTS_TARGET`),
/// mlflow server answers an empty endpoint list, and so does loopml.
async fn gateway_proxy() -> Response {
    json_response(&json!({ "endpoints": [] }))
}

/// The UI routes under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow`.
pub fn api_routes() -> Router<TrackingService> {
    Router::new()
        .route("/metrics/get-history-bulk", get(get_metric_history_bulk))
        .route("/experiments/search-datasets", post(search_datasets))
        .route("/runs/create-promptlab-run", post(create_promptlab_run))
        .route("/upload-artifact", upload_route())
        .route("/gateway-proxy", get(gateway_proxy).post(gateway_proxy))
        .route(
            "/logged-models/{id}/artifacts/files",
            get(get_logged_model_artifact),
        )
        .route(
            "/logged-models/{id}/artifacts/directories",
            get(list_logged_model_artifacts),
        )
}

/// The UI routes at the server's root (`/get-artifact`).
pub fn root_routes() -> Router<TrackingService> {
    Router::new().route("/get-artifact", get(get_artifact))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_paths_refuse_what_mlflow_refuses() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "..%2f..%2fetc",
            "..%252f..%252fetc",
            "a#b",
            "a\\b",
            "C:/x",
        ] {
            let e = ui_artifact_path(bad).expect_err(bad);
            assert_eq!(e.to_string(), "Invalid path", "{bad}");
        }
        assert_eq!(
            ui_artifact_path("dir/my.file").unwrap().as_str(),
            "dir/my.file"
        );
        assert!(ui_artifact_path("").unwrap().is_root());
    }

    #[test]
    fn utc_time_format() {
        let t = chrono_like_utc();
        assert_eq!(t.len(), 26, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
        assert_eq!(&t[19..20], ".");
    }

    #[test]
    fn media_types_never_run_in_the_browser() {
        assert_eq!(media_type("a.html"), "text/plain");
        assert_eq!(media_type("a.SVG"), "text/plain");
        assert_eq!(media_type("plot.png"), "image/png");
        assert_eq!(media_type("MLmodel"), "text/plain");
        assert_eq!(media_type("model.onnx"), "application/octet-stream");
    }
}
