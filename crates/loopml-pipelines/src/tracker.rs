//! A small blocking client of the MLflow REST API 2.0 (tracking and registry): just the calls a
//! pipeline run makes. Callers run it on the blocking pool (`spawn_blocking`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{Error, Result};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An error answer: the HTTP status, MLflow's `error_code` and message.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// The tracking server of one pipeline run.
pub(crate) struct Tracker {
    base: String,
    agent: ureq::Agent,
}

/// A created run: its id and artifact root.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub run_id: String,
    pub artifact_uri: String,
}

/// Where a model version comes from, as `model-versions/create` takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelSource {
    /// `runs:/<run>/<path>` or `models:/<model_id>`.
    pub uri: String,
    /// The logged model's id, for a logged model.
    pub model_id: Option<String>,
}

/// A model version: its number and source run.
#[derive(Debug, Clone)]
pub(crate) struct VersionInfo {
    pub version: String,
    pub run_id: Option<String>,
}

/// A dataset input logged on a run.
pub(crate) struct DatasetInput {
    pub name: String,
    pub digest: String,
    /// A local path, or a loopml dataset URL.
    pub source: String,
    /// `local` (a file in the pipeline's folder) or `loopml` (a stored dataset version).
    pub source_type: &'static str,
    /// Its `mlflow.data.context` tag (`input`, `window`, …).
    pub context: &'static str,
}

fn kv(items: &[(String, String)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

impl Tracker {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:5000`).
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn fail(&self, call: &str, message: String) -> Error {
        Error::Tracking {
            uri: self.base.clone(),
            call: call.to_string(),
            message,
        }
    }

    /// One call; the answer's JSON, or the server's error.
    fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<std::result::Result<Value, ApiError>> {
        // A path from the root (`/api/2.0/loopml/…`) is loopml's own API; others are MLflow's.
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/2.0/mlflow/{path}", self.base)
        };
        let resp = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(&url);
                for (k, v) in query {
                    req = req.query(*k, *v);
                }
                req.call()
            }
            (_, b) => {
                let text = b.map(Value::to_string).unwrap_or_else(|| "{}".into());
                self.agent
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .send(text.as_bytes())
            }
        };
        let mut resp =
            resp.map_err(|e| self.fail(path, format!("cannot reach the server: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.fail(path, format!("reading the answer: {e}")))?;
        let v: Value = if text.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) if status >= 400 => Value::Null,
                Err(e) => return Err(self.fail(path, format!("the answer is not JSON: {e}"))),
            }
        };
        if (200..300).contains(&status) {
            return Ok(Ok(v));
        }
        let code = v["error_code"].as_str().unwrap_or("").to_string();
        let message = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(300).collect());
        Ok(Err(ApiError {
            status,
            code,
            message,
        }))
    }

    /// A call whose error answer is an error.
    fn ok(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value> {
        self.call(method, path, query, body)?.map_err(|e| {
            let code = if e.code.is_empty() {
                format!("HTTP {}", e.status)
            } else {
                e.code
            };
            self.fail(path, format!("{code}: {}", e.message))
        })
    }

    /// The id of experiment `name`, created when missing.
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        for _ in 0..2 {
            match self.call(
                "GET",
                "experiments/get-by-name",
                &[("experiment_name", name)],
                None,
            )? {
                Ok(v) => {
                    return v["experiment"]["experiment_id"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| {
                            self.fail(
                                "experiments/get-by-name",
                                "no experiment_id in the answer".into(),
                            )
                        });
                }
                Err(e) if e.code == "RESOURCE_DOES_NOT_EXIST" || e.status == 404 => {}
                Err(e) => {
                    return Err(self.fail(
                        "experiments/get-by-name",
                        format!("{}: {}", e.code, e.message),
                    ));
                }
            }
            match self.call(
                "POST",
                "experiments/create",
                &[],
                Some(&json!({"name": name})),
            )? {
                Ok(v) => {
                    if let Some(id) = v["experiment_id"].as_str() {
                        return Ok(id.to_string());
                    }
                }
                // Created meanwhile by someone else: read it again.
                Err(e) if e.code == "RESOURCE_ALREADY_EXISTS" => {}
                Err(e) => {
                    return Err(
                        self.fail("experiments/create", format!("{}: {}", e.code, e.message))
                    );
                }
            }
        }
        Err(self.fail(
            "experiments/create",
            format!("experiment `{name}` could not be created or found"),
        ))
    }

    /// Creates a run.
    pub fn create_run(
        &self,
        experiment_id: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<RunInfo> {
        let v = self.ok(
            "POST",
            "runs/create",
            &[],
            Some(&json!({
                "experiment_id": experiment_id,
                "run_name": name,
                "start_time": now_ms(),
                "tags": kv(tags),
            })),
        )?;
        let info = &v["run"]["info"];
        let run_id = info["run_id"]
            .as_str()
            .ok_or_else(|| self.fail("runs/create", "no run_id in the answer".into()))?;
        Ok(RunInfo {
            run_id: run_id.to_string(),
            artifact_uri: info["artifact_uri"].as_str().unwrap_or("").to_string(),
        })
    }

    /// Logs params, tags and metrics (in batches within the server's limits).
    pub fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        tags: &[(String, String)],
        metrics: &[(String, f64)],
    ) -> Result<()> {
        let ts = now_ms();
        for chunk in params.chunks(100) {
            self.ok(
                "POST",
                "runs/log-batch",
                &[],
                Some(&json!({"run_id": run_id, "params": kv(chunk)})),
            )?;
        }
        for chunk in tags.chunks(100) {
            self.ok(
                "POST",
                "runs/log-batch",
                &[],
                Some(&json!({"run_id": run_id, "tags": kv(chunk)})),
            )?;
        }
        if !metrics.is_empty() {
            let m: Vec<Value> = metrics
                .iter()
                .map(|(k, v)| {
                    let value = if v.is_finite() {
                        json!(v)
                    } else {
                        json!(v.to_string())
                    };
                    json!({"key": k, "value": value, "timestamp": ts, "step": 0})
                })
                .collect();
            self.ok(
                "POST",
                "runs/log-batch",
                &[],
                Some(&json!({"run_id": run_id, "metrics": m})),
            )?;
        }
        Ok(())
    }

    /// Logs files as dataset inputs of a run.
    pub fn log_inputs(&self, run_id: &str, inputs: &[DatasetInput]) -> Result<()> {
        if inputs.is_empty() {
            return Ok(());
        }
        let datasets: Vec<Value> = inputs
            .iter()
            .map(|d| {
                json!({
                    "tags": [{"key": "mlflow.data.context", "value": d.context}],
                    "dataset": {
                        "name": d.name,
                        "digest": d.digest,
                        "source_type": d.source_type,
                        "source": json!({"uri": d.source}).to_string(),
                    }
                })
            })
            .collect();
        self.ok(
            "POST",
            "runs/log-inputs",
            &[],
            Some(&json!({"run_id": run_id, "datasets": datasets})),
        )?;
        Ok(())
    }

    /// Ends a run with `status` (FINISHED, FAILED, KILLED).
    pub fn end_run(&self, run_id: &str, status: &str) -> Result<()> {
        self.ok(
            "POST",
            "runs/update",
            &[],
            Some(&json!({"run_id": run_id, "run_uuid": run_id, "status": status, "end_time": now_ms()})),
        )?;
        Ok(())
    }

    /// Uploads `bytes` as `rel` under a run's artifact root (`mlflow-artifacts:` roots only;
    /// false when the root is elsewhere).
    pub fn upload(&self, artifact_uri: &str, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Ok(false);
        };
        // `mlflow-artifacts://host:port/path` points at another server: not ours to write.
        if rest.starts_with("//") {
            return Ok(false);
        }
        let root = rest.trim_start_matches('/').trim_end_matches('/');
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{root}/{rel}",
            self.base
        );
        let call = "mlflow-artifacts/artifacts";
        let mut resp = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|e| self.fail(call, format!("cannot reach the server: {e}")))?;
        if !resp.status().is_success() {
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            return Err(self.fail(call, format!("HTTP {}: {body}", resp.status().as_u16())));
        }
        Ok(true)
    }

    /// The latest value of metric `key` in a run.
    pub fn latest_metric(&self, run_id: &str, key: &str) -> Result<Option<f64>> {
        let v = self.ok(
            "GET",
            "runs/get",
            &[("run_id", run_id), ("run_uuid", run_id)],
            None,
        )?;
        let metrics = v["run"]["data"]["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(metrics
            .iter()
            .filter(|m| m["key"].as_str() == Some(key))
            .max_by_key(|m| {
                (
                    m["step"].as_i64().unwrap_or(0),
                    m["timestamp"].as_i64().unwrap_or(0),
                )
            })
            .and_then(|m| match &m["value"] {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }))
    }

    fn version_info(&self, v: &Value, call: &str) -> Result<VersionInfo> {
        let mv = &v["model_version"];
        let version = match &mv["version"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(self.fail(call, "no version in the answer".into())),
        };
        Ok(VersionInfo {
            version,
            run_id: mv["run_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    /// The version behind `alias`, or `None` when the alias (or the model) does not exist.
    pub fn version_by_alias(&self, model: &str, alias: &str) -> Result<Option<VersionInfo>> {
        let call = "registered-models/alias";
        match self.call("GET", call, &[("name", model), ("alias", alias)], None)? {
            Ok(v) => Ok(Some(self.version_info(&v, call)?)),
            // MLflow answers an unknown alias with INVALID_PARAMETER_VALUE "… alias … not found".
            Err(e)
                if e.code == "RESOURCE_DOES_NOT_EXIST"
                    || (e.code == "INVALID_PARAMETER_VALUE" && e.message.contains("not found")) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail(call, format!("{}: {}", e.code, e.message))),
        }
    }

    /// Scores registered versions on one dataset version (`POST /api/2.0/loopml/models/compare`;
    /// see `loopml_monitor::compare` for the request and answer).
    pub fn compare_versions(&self, request: &Value) -> Result<Value> {
        self.ok("POST", "/api/2.0/loopml/models/compare", &[], Some(request))
    }

    /// A stored dataset version (`NAME@N`) as a run input: its name, digest and URL.
    pub fn dataset_version(&self, reference: &str, context: &'static str) -> Result<DatasetInput> {
        let path = format!("/api/2.0/loopml/datasets/{reference}");
        let v = self.ok("GET", &path, &[], None)?;
        let digest = v["digest"].as_str().unwrap_or("");
        Ok(DatasetInput {
            name: v["name"].as_str().unwrap_or(reference).to_string(),
            digest: digest.chars().take(12).collect(),
            source: format!("{}{path}", self.base),
            source_type: "loopml",
            context,
        })
    }

    /// A model version.
    pub fn model_version(&self, model: &str, version: &str) -> Result<VersionInfo> {
        let call = "model-versions/get";
        let v = self.ok("GET", call, &[("name", model), ("version", version)], None)?;
        self.version_info(&v, call)
    }

    /// Creates registered model `name` unless it exists.
    pub fn ensure_registered_model(&self, name: &str) -> Result<()> {
        let call = "registered-models/create";
        match self.call("POST", call, &[], Some(&json!({"name": name})))? {
            Ok(_) => Ok(()),
            Err(e) if e.code == "RESOURCE_ALREADY_EXISTS" => Ok(()),
            Err(e) => Err(self.fail(call, format!("{}: {}", e.code, e.message))),
        }
    }

    /// Creates a model version from `source` (`runs:/<run>/<path>`, or `models:/<model_id>`
    /// with `model_id` for a logged model).
    pub fn create_model_version(
        &self,
        name: &str,
        source: &ModelSource,
        run_id: &str,
    ) -> Result<VersionInfo> {
        let call = "model-versions/create";
        let mut body = json!({"name": name, "source": source.uri, "run_id": run_id});
        if let Some(id) = &source.model_id {
            body["model_id"] = json!(id);
        }
        let v = self.ok("POST", call, &[], Some(&body))?;
        self.version_info(&v, call)
    }

    /// What `runs:/<run>/<path>` names, resolved as MLflow 3's `register_model` does: the run's
    /// artifacts under `path` when an `MLmodel` file is there; else the model named `path` that
    /// the run logged (`log_model(name=…)` keeps it outside the run's artifacts, as
    /// `models:/<model_id>`), the newest when there are several.
    pub fn model_source(&self, run_id: &str, path: &str) -> Result<ModelSource> {
        let path = path.trim_matches('/');
        let runs_uri = format!("runs:/{run_id}/{path}");
        let call = "artifacts/list";
        let listed = self.ok("GET", call, &[("run_id", run_id), ("path", path)], None)?;
        let has_mlmodel = listed["files"].as_array().is_some_and(|files| {
            files.iter().any(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.rsplit('/').next() == Some("MLmodel"))
                    && f["is_dir"].as_bool() != Some(true)
            })
        });
        if has_mlmodel {
            return Ok(ModelSource {
                uri: runs_uri,
                model_id: None,
            });
        }
        let run = self.ok(
            "GET",
            "runs/get",
            &[("run_id", run_id), ("run_uuid", run_id)],
            None,
        )?;
        let experiment = run["run"]["info"]["experiment_id"]
            .as_str()
            .ok_or_else(|| self.fail("runs/get", format!("run {run_id} has no experiment")))?;
        let found = if path.contains(['\'', '/']) {
            // Not a valid logged-model name: nothing to look for.
            Value::Null
        } else {
            self.ok(
                "POST",
                "logged-models/search",
                &[],
                Some(&json!({
                    "experiment_ids": [experiment],
                    "filter": format!("source_run_id = '{run_id}' AND name = '{path}'"),
                    "order_by": [{"field_name": "creation_timestamp", "ascending": false}],
                    "max_results": 1,
                })),
            )?
        };
        match found["models"][0]["info"]["model_id"].as_str() {
            Some(id) => Ok(ModelSource {
                uri: format!("models:/{id}"),
                model_id: Some(id.to_string()),
            }),
            None => Err(self.fail(
                "logged-models/search",
                format!(
                    "{runs_uri} is not a model: the run has no MLmodel file under `{path}` and \
                     logged no model named `{path}`"
                ),
            )),
        }
    }

    /// Points `alias` of `model` at `version`.
    pub fn set_alias(&self, model: &str, alias: &str, version: &str) -> Result<()> {
        self.ok(
            "POST",
            "registered-models/alias",
            &[],
            Some(&json!({"name": model, "alias": alias, "version": version})),
        )?;
        Ok(())
    }
}
