//! The request path shared by every protocol — pick the deployment's variant, run it, record
//! metrics, the deployment's outcome, the inference log and shadow copies — and the deployment
//! API (`/api/2.0/loopml/deployments…`: apply, status, traffic, switch, promote, rollback,
//! feedback, log) plus `/metrics`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde_json::{Value, json};

use crate::deployments::{
    Deployment, DeploymentSpec, DeploymentState, LogSettings, Pending, Verdict,
};
use crate::error::{Error, Result};
use crate::infer_log::{Feedback, LogQuery, Record, now_us};
use crate::metrics::VariantLabels;
use crate::model::Outputs;
use crate::repository::Loaded;
use crate::routes::ServingApi;
use crate::tensor::Tensor;

/// Turns the request into a model's inputs (and DataFrame column names), per variant: each
/// variant may expect other input names or types.
pub type InputsFn =
    Arc<dyn Fn(&Loaded) -> Result<(Vec<Tensor>, Option<Vec<String>>)> + Send + Sync>;

/// Request ids answered lately → (deployment, variant), so feedback finds the variant.
#[derive(Debug, Default)]
pub struct Recent {
    map: HashMap<String, (String, String)>,
    order: VecDeque<String>,
}

/// Request ids remembered for feedback.
const RECENT_CAPACITY: usize = 200_000;

impl Recent {
    fn insert(&mut self, id: String, deployment: String, variant: String) {
        if self.map.insert(id.clone(), (deployment, variant)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// What answered a request.
#[derive(Debug)]
pub struct Served {
    /// Request id.
    pub request_id: String,
    /// Deployment (the model name for a plain model).
    pub deployment: String,
    /// Variant (`default` for a plain model).
    pub variant: String,
    /// The model version that answered.
    pub loaded: Arc<Loaded>,
    /// Its outputs.
    pub outputs: Arc<Outputs>,
}

/// A request's routing inputs.
#[derive(Debug, Default, Clone)]
pub struct Call {
    /// Endpoint: a deployment or a model.
    pub endpoint: String,
    /// A model version named in the path (bypasses deployments).
    pub version: Option<String>,
    /// The caller's request id.
    pub request_id: Option<String>,
    /// Sticky key (A/B).
    pub key: Option<String>,
    /// A variant forced by the `x-loopml-variant` header.
    pub variant: Option<String>,
    /// The deployment the endpoint names (looked up once per request), unless a version is
    /// named in the path.
    pub deployment: Option<Arc<Deployment>>,
}

impl Call {
    /// Reads the request id, A/B key and forced variant from headers.
    pub fn from_headers(
        api: &ServingApi,
        endpoint: &str,
        version: Option<String>,
        headers: &HeaderMap,
    ) -> Self {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let deployment = if version.is_none() {
            api.deployment(endpoint)
        } else {
            None
        };
        let key = deployment.as_ref().and_then(|d| match &d.spec().policy {
            crate::deployments::Policy::Ab { key_header, .. } => h(key_header),
            _ => None,
        });
        Self {
            endpoint: endpoint.to_string(),
            version,
            request_id: h("x-request-id").filter(|s| !s.is_empty() && s.len() <= 256),
            key,
            variant: h("x-loopml-variant"),
            deployment,
        }
    }
}

fn status_label(e: &Error) -> (&'static str, u16) {
    (e.outcome_label(), e.status().as_u16())
}

fn sampled(log: &LogSettings) -> bool {
    log.enabled && (log.sample >= 1.0 || rand::rng().random::<f64>() < log.sample)
}

async fn run_variant(
    loaded: &Arc<Loaded>,
    inputs: &InputsFn,
) -> (Result<Arc<Outputs>>, Arc<Vec<Tensor>>, Option<Vec<String>>) {
    let (raw, columns) = match inputs(loaded) {
        Ok(x) => x,
        Err(e) => return (Err(e), Arc::default(), None),
    };
    let prepared = match loaded.model.prepare(raw) {
        Ok(p) => Arc::new(p),
        Err(e) => return (Err(e), Arc::default(), columns),
    };
    let result = loaded.infer(Arc::clone(&prepared)).await.map(Arc::new);
    (result, prepared, columns)
}

impl ServingApi {
    /// The deployment called `name`, if any.
    pub fn deployment(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.read().ok()?.get(name).cloned()
    }

    /// Every deployment.
    pub fn deployment_list(&self) -> Vec<Arc<Deployment>> {
        self.deployments
            .read()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs one request through its deployment (or plain model) and records it everywhere.
    pub async fn dispatch(&self, call: Call, inputs: InputsFn) -> Result<Served> {
        let started = Instant::now();
        let request_id = call
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let dep = call.deployment.clone();
        let mut routed_spec = None;
        let (variant, mirrors, loaded, log_settings) = match &dep {
            Some(d) => {
                let route = d.route(call.key.as_deref(), call.variant.as_deref())?;
                let spec = d.spec();
                let loaded = self
                    .repository
                    .get(&spec.model_name(&route.variant), None)?;
                let log = spec.log.clone();
                routed_spec = Some(spec);
                (route.variant, route.mirrors, loaded, log)
            }
            None => {
                let loaded = self
                    .repository
                    .get(&call.endpoint, call.version.as_deref())?;
                (
                    "default".to_string(),
                    Vec::new(),
                    loaded,
                    LogSettings::default(),
                )
            }
        };
        let log = self.log.as_ref().filter(|_| sampled(&log_settings));
        let (result, logged_inputs, columns) = run_variant(&loaded, &inputs).await;
        let latency = started.elapsed();
        let (status, code) = match &result {
            Ok(_) => ("ok", 200),
            Err(e) => status_label(e),
        };
        if result.is_ok() {
            self.metrics.answered(
                &call.endpoint,
                &variant,
                &loaded.version,
                latency.as_secs_f64(),
            );
        } else {
            let labels = VariantLabels {
                deployment: call.endpoint.clone(),
                variant: variant.clone(),
                model_version: loaded.version.clone(),
            };
            self.metrics.request(&labels, status, None);
        }
        if let Some(d) = &dep
            && status != "overloaded"
        {
            let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            if let Verdict::RolledBack(_) = d.outcome(&variant, false, result.is_ok(), latency_us)
                && let Some(before) = routed_spec
            {
                self.save_rollback(d, before).await;
            }
        }
        // Feedback goes to deployments only: plain models need no memory of their requests.
        if dep.is_some()
            && let Ok(mut r) = self.recent.lock()
        {
            r.insert(request_id.clone(), call.endpoint.clone(), variant.clone());
        }
        if let Some(log) = log {
            log.log(Record {
                request_id: request_id.clone(),
                timestamp_us: now_us(),
                deployment: call.endpoint.clone(),
                variant: variant.clone(),
                model_version: loaded.version.clone(),
                shadow: false,
                status: code,
                latency_us: i64::try_from(latency.as_micros()).unwrap_or(i64::MAX),
                error: result.as_ref().err().map(ToString::to_string),
                inputs: logged_inputs,
                columns,
                outputs: result.as_ref().ok().map(Arc::clone),
            });
        }
        if let Some(d) = &dep {
            for m in mirrors {
                self.mirror(Arc::clone(d), m, request_id.clone(), Arc::clone(&inputs));
            }
        }
        let outputs = result?;
        Ok(Served {
            request_id,
            deployment: call.endpoint,
            variant,
            loaded,
            outputs,
        })
    }

    /// Runs a shadow copy in the background: its answer is logged and counted, never returned.
    fn mirror(&self, d: Arc<Deployment>, variant: String, request_id: String, inputs: InputsFn) {
        let api = self.clone();
        let task = async move {
            let spec = d.spec();
            let Ok(loaded) = api.repository.get(&spec.model_name(&variant), None) else {
                return;
            };
            let started = Instant::now();
            let log = api.log.as_ref().filter(|_| spec.log.enabled);
            let (result, logged_inputs, columns) = run_variant(&loaded, &inputs).await;
            let latency = started.elapsed();
            let labels = VariantLabels {
                deployment: spec.name.clone(),
                variant: variant.clone(),
                model_version: loaded.version.clone(),
            };
            api.metrics.shadow(&labels);
            let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            d.outcome(&variant, true, result.is_ok(), latency_us);
            if let Some(log) = log {
                log.log(Record {
                    request_id,
                    timestamp_us: now_us(),
                    deployment: spec.name.clone(),
                    variant,
                    model_version: loaded.version.clone(),
                    shadow: true,
                    status: result.as_ref().map_or_else(|e| status_label(e).1, |_| 200),
                    latency_us: i64::try_from(latency_us).unwrap_or(i64::MAX),
                    error: result.as_ref().err().map(ToString::to_string),
                    inputs: logged_inputs,
                    columns,
                    outputs: result.ok(),
                });
            }
        };
        // Shadow copies are fire-and-forget by design: the caller has its answer already.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(task);
    }

    /// Loads each variant's model (reusing ones already loaded from the same source), then
    /// swaps the spec in: requests never see a half-applied deployment. `base` resolves relative
    /// file paths of a file-defined deployment.
    pub async fn apply(
        &self,
        spec: DeploymentSpec,
        from_file: bool,
        base: Option<&Path>,
    ) -> Result<Arc<Deployment>> {
        let d = self.apply_spec(spec, from_file, base).await?;
        self.persist(&d).await;
        if !from_file {
            self.announce_deployments();
        }
        Ok(d)
    }

    /// [`Self::apply`] without saving it.
    pub(crate) async fn apply_spec(
        &self,
        spec: DeploymentSpec,
        from_file: bool,
        base: Option<&Path>,
    ) -> Result<Arc<Deployment>> {
        spec.check()?;
        if self.repository.get(&spec.name, None).is_ok() {
            return Err(Error::Conflict(format!(
                "a model called '{}' is already loaded: a deployment needs its own endpoint name",
                spec.name
            )));
        }
        let existing = self.deployment(&spec.name);
        if let Some(e) = &existing
            && e.from_file
            && !from_file
        {
            return Err(Error::Conflict(format!(
                "deployment '{}' is defined by a file on the server's command line; change the file",
                spec.name
            )));
        }
        let old_spec = existing.as_ref().map(|e| e.spec());
        let mut loaded_now: Vec<String> = Vec::new();
        let result = self
            .load_variants(&spec, old_spec.as_deref(), from_file, base, &mut loaded_now)
            .await;
        if let Err(e) = result {
            // Leave nothing behind from a deployment that did not come up.
            let kept: Vec<String> = old_spec
                .iter()
                .flat_map(|o| o.variants.iter().map(|v| o.model_name(&v.name)))
                .collect();
            for name in loaded_now.iter().filter(|n| !kept.contains(n)) {
                self.unload_model(name);
            }
            return Err(e);
        }
        let d = match &existing {
            Some(e) => {
                let state = e.state();
                Arc::new(Deployment::new(
                    spec.clone(),
                    Some(DeploymentState {
                        previous: old_spec.as_deref().cloned(),
                        pending: Pending::default(),
                        ..state
                    }),
                    from_file,
                ))
            }
            None => Arc::new(Deployment::new(spec.clone(), None, from_file)),
        };
        {
            let mut all = self
                .deployments
                .write()
                .map_err(|_| Error::Model("deployment table lock poisoned".into()))?;
            all.insert(spec.name.clone(), Arc::clone(&d));
        }
        // What the replaced one counted and has not shared yet goes with it.
        if let Some(e) = &existing {
            d.restore_pending(e.take_pending());
        }
        if let Some(old) = old_spec {
            for v in old
                .variants
                .iter()
                .filter(|v| !spec.variants.iter().any(|w| w.name == v.name))
            {
                self.unload_model(&old.model_name(&v.name));
            }
            d.note(format!(
                "applied ({} → {})",
                old.policy.strategy(),
                spec.policy.strategy()
            ));
        } else {
            d.note(format!("created ({})", spec.policy.strategy()));
        }
        Ok(d)
    }

    /// Loads the variants that are new or changed; records what it loaded in `loaded`.
    async fn load_variants(
        &self,
        spec: &DeploymentSpec,
        old_spec: Option<&DeploymentSpec>,
        from_file: bool,
        base: Option<&Path>,
        loaded: &mut Vec<String>,
    ) -> Result<()> {
        for v in &spec.variants {
            let name = spec.model_name(&v.name);
            let same = old_spec.is_some_and(|o| {
                o.batching == spec.batching
                    && o.variants
                        .iter()
                        .any(|w| w.name == v.name && w.model == v.model)
            }) && self.repository.get(&name, None).is_ok();
            if same {
                continue;
            }
            if v.model.starts_with("models:/") {
                self.load_uri(&name, &v.model, &spec.batching)
                    .await
                    .map_err(|e| relabel(e, &v.name))?;
                loaded.push(name);
            } else if from_file {
                let path = match base {
                    Some(b) if Path::new(&v.model).is_relative() => b.join(&v.model),
                    _ => PathBuf::from(&v.model),
                };
                let file = crate::model::onnx_file(&path).map_err(|e| relabel(e, &v.name))?;
                let (repo, sessions, batching) = (
                    self.repository.clone(),
                    self.sessions,
                    spec.batching.clone(),
                );
                let model_name = name.clone();
                tokio::task::spawn_blocking(move || {
                    repo.load(&model_name, "1", file, sessions, &batching)
                })
                .await
                .map_err(|e| Error::Model(format!("loading stopped: {e}")))?
                .map_err(|e| relabel(e, &v.name))?;
                loaded.push(name);
            } else {
                return Err(Error::InvalidInput(format!(
                    "variant '{}': '{}' is not a registry URI; deployments made over HTTP serve \
                     models:/NAME/VERSION or models:/NAME@ALIAS (files only from the server's \
                     command line)",
                    v.name, v.model
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn unload_model(&self, name: &str) {
        let _ = self.repository.unload(name, None);
        if let Ok(mut f) = self.follows.lock() {
            f.retain(|x| x.endpoint != name);
        }
    }

    /// Removes a deployment and unloads its variants.
    pub async fn delete_deployment(&self, name: &str) -> Result<()> {
        let d = self
            .deployments
            .write()
            .map_err(|_| Error::Model("deployment table lock poisoned".into()))?
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("no deployment '{name}'")))?;
        let spec = d.spec();
        for v in &spec.variants {
            self.unload_model(&spec.model_name(&v.name));
        }
        self.forget_deployment(name).await?;
        self.announce_deployments();
        Ok(())
    }

    /// Records feedback on answered requests; rewards update the variant's bandit arm. Returns
    /// how many were accepted and the request ids this server does not recognise (not among the
    /// last answered here: older ones and other replicas' are still joined when the log is
    /// read, but an id that was never answered never is).
    pub async fn feedback(&self, endpoint: &str, items: &[Value]) -> Result<(usize, Vec<String>)> {
        let dep = self.deployment(endpoint);
        if dep.is_none() && self.repository.get(endpoint, None).is_err() {
            return Err(Error::NotFound(format!(
                "no deployment or model '{endpoint}'"
            )));
        }
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("this server keeps no inference log".into()))?;
        let mut parsed = Vec::with_capacity(items.len());
        let mut unmatched = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let at = |m: String| Error::InvalidInput(format!("feedback {i}: {m}"));
            let id = it["request_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| at("needs \"request_id\"".into()))?;
            let reward = match &it["reward"] {
                Value::Null => None,
                v => Some(
                    v.as_f64()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| {
                            at(format!("reward must be a number between 0 and 1, got {v}"))
                        })?,
                ),
            };
            let truth = match &it["truth"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
                v => {
                    return Err(at(format!(
                        "truth must be a string, number or boolean, got {v}"
                    )));
                }
            };
            if reward.is_none() && truth.is_none() {
                return Err(at("needs \"reward\" and/or \"truth\"".into()));
            }
            let known = self.recent.lock().ok().and_then(|r| r.map.get(id).cloned());
            if known.is_none() {
                unmatched.push(id.to_string());
            }
            let variant = match (known, it["variant"].as_str()) {
                (Some((d, _)), _) if d != endpoint => {
                    return Err(at(format!(
                        "request '{id}' was answered by '{d}', not '{endpoint}'"
                    )));
                }
                (Some((_, v)), _) => Some(v),
                (None, Some(v)) => Some(v.to_string()),
                (None, None) if reward.is_some() => {
                    return Err(Error::NotFound(format!(
                        "feedback {i}: request '{id}' is not among the last {RECENT_CAPACITY} \
                         answered; send \"variant\" with its reward"
                    )));
                }
                (None, None) => None,
            };
            if let (Some(d), Some(v)) = (&dep, &variant)
                && !d.spec().variants.iter().any(|x| &x.name == v)
            {
                return Err(at(format!("deployment '{endpoint}' has no variant '{v}'")));
            }
            parsed.push(Feedback {
                request_id: id.to_string(),
                timestamp_us: now_us(),
                deployment: endpoint.to_string(),
                variant,
                truth,
                reward,
            });
        }
        for f in &parsed {
            if let (Some(r), Some(v)) = (f.reward, &f.variant) {
                if let Some(d) = &dep {
                    d.reward(v, r);
                }
                self.metrics.reward(endpoint, v, r);
            }
        }
        let n = parsed.len();
        for f in parsed {
            log.feedback(f)?;
        }
        // Rewards reach the shared counters (and the other replicas' bandits) with the next
        // share, within a second.
        Ok((n, unmatched))
    }

    fn versions_of(&self, d: &Deployment) -> HashMap<String, String> {
        let spec = d.spec();
        spec.variants
            .iter()
            .filter_map(|v| {
                self.repository
                    .get(&spec.model_name(&v.name), None)
                    .ok()
                    .map(|l| (v.name.clone(), l.version.clone()))
            })
            .collect()
    }

    /// A deployment's status JSON.
    pub fn deployment_status(&self, name: &str) -> Result<Value> {
        let d = self
            .deployment(name)
            .ok_or_else(|| Error::NotFound(format!("no deployment '{name}'")))?;
        Ok(d.status_json(&self.versions_of(&d)))
    }
}

fn relabel(e: Error, variant: &str) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("variant '{variant}': {m}")),
        Error::NotFound(m) => Error::NotFound(format!("variant '{variant}': {m}")),
        Error::Model(m) => Error::Model(format!("variant '{variant}': {m}")),
        other => other,
    }
}

// ---------------------------------------------------------------- HTTP

/// A loopml API error: `{"error_code", "message"}` (MLflow's shape, like the rest of
/// `/api/2.0/loopml`).
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = (self.0.status(), self.0.rest_code());
        if status.is_server_error() {
            tracing::error!(error = %self.0, "deployment request failed");
        }
        (
            status,
            axum::Json(json!({"error_code": code, "message": self.0.to_string()})),
        )
            .into_response()
    }
}

fn body_json(body: &Bytes) -> Result<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::InvalidInput(format!("the request body is not valid JSON: {e}")))
}

fn spec_from_body(body: &Bytes) -> Result<DeploymentSpec> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::InvalidInput("the deployment is not UTF-8 text".into()))?;
    DeploymentSpec::parse(text)
}

async fn list(State(api): State<ServingApi>) -> Response {
    let items: Vec<Value> = api
        .deployment_list()
        .iter()
        .map(|d| d.status_json(&api.versions_of(d)))
        .collect();
    axum::Json(json!({"deployments": items})).into_response()
}

async fn create(State(api): State<ServingApi>, body: Bytes) -> Result<Response, ApiError> {
    let spec = spec_from_body(&body)?;
    if api.deployment(&spec.name).is_some() {
        return Err(Error::Conflict(format!(
            "deployment '{}' already exists (PUT /api/2.0/loopml/deployments/{0} replaces it)",
            spec.name
        ))
        .into());
    }
    let name = spec.name.clone();
    api.apply(spec, false, None).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api.deployment_status(&name)?),
    )
        .into_response())
}

async fn put(
    State(api): State<ServingApi>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = spec_from_body(&body)?;
    if spec.name != name {
        return Err(Error::InvalidInput(format!(
            "the body names deployment '{}' but the path says '{name}'",
            spec.name
        ))
        .into());
    }
    api.apply(spec, false, None).await?;
    Ok(axum::Json(api.deployment_status(&name)?).into_response())
}

async fn show(
    State(api): State<ServingApi>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(api.deployment_status(&name)?).into_response())
}

async fn delete(
    State(api): State<ServingApi>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    api.delete_deployment(&name).await?;
    Ok(axum::Json(json!({})).into_response())
}

fn live(api: &ServingApi, name: &str) -> Result<Arc<Deployment>> {
    let d = api
        .deployment(name)
        .ok_or_else(|| Error::NotFound(format!("no deployment '{name}'")))?;
    Ok(d)
}

/// `POST /{name}/{action}`: `traffic {"percent"}`, `switch {"to"?}`, `promote {"variant"?}`,
/// `rollback`; saves the deployment and answers its status.
async fn action(
    State(api): State<ServingApi>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let d = live(&api, &name)?;
    let v = body_json(&body)?;
    match action.as_str() {
        "traffic" => {
            let p = v["percent"]
                .as_f64()
                .ok_or_else(|| Error::InvalidInput("send {\"percent\": 0-100}".into()))?;
            d.set_percent(p)?;
        }
        "switch" => {
            d.switch(v["to"].as_str())?;
        }
        "promote" => {
            d.promote(v["variant"].as_str())?;
        }
        "rollback" => {
            d.rollback()?;
        }
        other => {
            return Err(Error::NotFound(format!(
                "no deployment action '{other}' (traffic, switch, promote, rollback, feedback, log)"
            ))
            .into());
        }
    }
    api.persist_and_announce(&d).await;
    Ok(axum::Json(api.deployment_status(&name)?).into_response())
}

async fn feedback(
    State(api): State<ServingApi>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = body_json(&body)?;
    let items: Vec<Value> = match &v {
        Value::Object(m) if m.contains_key("feedback") => v["feedback"]
            .as_array()
            .cloned()
            .ok_or_else(|| Error::InvalidInput("\"feedback\" must be a list".into()))?,
        Value::Object(_) => vec![v.clone()],
        Value::Array(a) => a.clone(),
        _ => {
            return Err(Error::InvalidInput(
                "send {\"request_id\", \"reward\" and/or \"truth\"} or {\"feedback\": [...]}"
                    .into(),
            )
            .into());
        }
    };
    if items.is_empty() {
        return Err(Error::InvalidInput("no feedback given".into()).into());
    }
    let (n, unmatched) = api.feedback(&name, &items).await?;
    let mut answer = json!({"accepted": n, "unmatched": unmatched.len()});
    if !unmatched.is_empty() {
        answer["unmatched_request_ids"] = json!(unmatched.iter().take(20).collect::<Vec<_>>());
        answer["note"] = json!(format!(
            "{} of the request ids are not among the last {RECENT_CAPACITY} this server \
             answered: they are kept, and joined if the request is in the inference log \
             (answered earlier or by another replica); an id that was never answered is never \
             joined",
            unmatched.len()
        ));
    }
    Ok(axum::Json(answer).into_response())
}

/// Query of the log endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct LogParams {
    since: Option<String>,
    until: Option<String>,
    variant: Option<String>,
    shadow: Option<bool>,
    limit: Option<usize>,
    #[serde(default)]
    feedback: bool,
    format: Option<String>,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time bound: epoch milliseconds, RFC 3339 UTC (`2026-11-23T10:00:00Z`), or an age
/// (`30s`, `15m`, `2h`, `7d`: that long ago). Returns µs since the epoch.
pub fn parse_time(s: &str) -> Result<i64> {
    let bad = || {
        Error::InvalidInput(format!(
            "time '{s}': use epoch milliseconds, 2026-11-23T10:00:00Z, or an age like 15m, 2h, 7d"
        ))
    };
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return ms.checked_mul(1000).ok_or_else(bad);
    }
    if let Some(unit) = s.chars().last()
        && let Some(mult) = match unit {
            's' => Some(1_000_000i64),
            'm' => Some(60_000_000),
            'h' => Some(3_600_000_000),
            'd' => Some(86_400_000_000),
            _ => None,
        }
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        return Ok(now_us() - n.checked_mul(mult).ok_or_else(bad)?);
    }
    let t = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let h: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    if d.len() != 3
        || h.len() != 3
        || !(1..=12).contains(&d[1])
        || !(1..=31).contains(&d[2])
        || h[0] > 23
        || h[1] > 59
        || h[2] > 60
    {
        return Err(bad());
    }
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        digits.parse::<i64>().map_err(|_| bad())?
    };
    let secs = days_from_civil(d[0], d[1], d[2]) * 86_400 + h[0] * 3600 + h[1] * 60 + h[2];
    Ok(secs * 1_000_000 + micros)
}

async fn log_query(
    State(api): State<ServingApi>,
    UrlPath(name): UrlPath<String>,
    Query(p): Query<LogParams>,
) -> Result<Response, ApiError> {
    // Logs outlive deployments, so any well-formed name may be asked for.
    crate::repository::validate_model_name(&name)?;
    let log = api
        .log
        .as_ref()
        .ok_or_else(|| Error::InvalidInput("this server keeps no inference log".into()))?;
    let q = LogQuery {
        deployment: name.clone(),
        since_us: p.since.as_deref().map(parse_time).transpose()?,
        until_us: p.until.as_deref().map(parse_time).transpose()?,
        variant: p.variant,
        shadow: p.shadow,
        limit: p.limit,
        feedback: p.feedback,
    };
    let batch = log.query(&q).await?;
    match p.format.as_deref().unwrap_or("parquet") {
        "json" => {
            let rows = crate::infer_log::to_json_rows(&batch);
            Ok(
                axum::Json(json!({"deployment": name, "count": rows.len(), "rows": rows}))
                    .into_response(),
            )
        }
        "parquet" => {
            let bytes = tokio::task::spawn_blocking(move || crate::infer_log::to_parquet(&batch))
                .await
                .map_err(|e| Error::Model(format!("writing Parquet stopped: {e}")))??;
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        "application/vnd.apache.parquet".to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}-log.parquet\""),
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        other => Err(Error::InvalidInput(format!("format '{other}': use parquet or json")).into()),
    }
}

async fn metrics(State(api): State<ServingApi>) -> Response {
    api.metrics.set_models_loaded(api.repository.index().len());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.metrics.encode(),
    )
        .into_response()
}

/// Routes of the deployment API and `/metrics`.
pub fn router(api: ServingApi) -> Router {
    let base = "/api/2.0/loopml/deployments";
    Router::new()
        .route(base, get(list).post(create))
        .route(
            &format!("{base}/{{name}}"),
            get(show).put(put).delete(delete),
        )
        .route(&format!("{base}/{{name}}/{{action}}"), post(action))
        .route(&format!("{base}/{{name}}/feedback"), post(feedback))
        .route(&format!("{base}/{{name}}/log"), get(log_query))
        .route("/metrics", get(metrics))
        .with_state(api)
}
