//! The auth layer in front of every router: authenticates each request (HTTP Basic or a
//! bearer token), applies the route's [`Rule`], and does MLflow's after-request work (the
//! creator becomes owner, a deleted model's grants go, searches see only readable rows).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::audit;
use crate::error::Error;
use crate::permission::Action;
use crate::policy::{self, Rule, Subject};
use crate::service::{AuthService, Principal, Visibility};

/// Largest request body the layer reads to find a resource (a JSON request).
pub const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// Largest answer the layer reads to filter or to find a created resource.
const MAX_FILTERED_ANSWER: usize = 64 * 1024 * 1024;

/// Finds which experiment a run, trace or logged model belongs to, and experiments by name
/// (implemented by the binary over the tracking and trace stores).
pub trait Resolver: Send + Sync {
    /// The experiment id of a run.
    fn run_experiment(&self, run_id: String) -> BoxFuture<'static, Option<String>>;
    /// The id of an experiment by name.
    fn experiment_by_name(&self, name: String) -> BoxFuture<'static, Option<String>>;
    /// The experiment id of a trace.
    fn trace_experiment(&self, trace_id: String) -> BoxFuture<'static, Option<String>>;
    /// The experiment id of a logged model.
    fn logged_model_experiment(&self, model_id: String) -> BoxFuture<'static, Option<String>>;
    /// The experiments an evaluation dataset is linked to (empty when none or unknown).
    fn eval_dataset_experiments(&self, dataset_id: String) -> BoxFuture<'static, Vec<String>>;
    /// The `models:/` URIs a deployment's variants serve; `None` when there is no such
    /// deployment.
    fn deployment_models(&self, name: &str) -> Option<Vec<String>>;
    /// The `models:/` URIs a deployment body (JSON or YAML) names; `None` when it cannot be
    /// read.
    fn deployment_body_models(&self, body: &[u8]) -> Option<Vec<String>>;
    /// The `models:/` URIs behind an inference endpoint (`None`: the one `/invocations`
    /// serves); `None` when it is not a deployment (a model loaded from a file) or unknown.
    fn endpoint_models(&self, endpoint: Option<&str>) -> Option<Vec<String>>;
    /// The deployment a monitor watches; `None` when there is no such monitor.
    fn monitor_deployment(&self, name: String) -> BoxFuture<'static, Option<String>>;
    /// The deployment a monitor body (JSON or YAML) names.
    fn monitor_body_deployment(&self, body: &[u8]) -> Option<String>;
}

/// The registered model a `models:/name/3`, `models:/name@alias` or `models:/name/Stage` URI
/// names; `None` for anything else (a file: only admins may serve one).
pub fn registered_model_of(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("models:/")?;
    let name = rest.split(['/', '@']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The registered models behind some `models:/` URIs; `None` when one is not a registry URI.
fn models_of(uris: &[String]) -> Option<Vec<(&'static str, String)>> {
    uris.iter()
        .map(|u| registered_model_of(u).map(|m| ("registered_model", m)))
        .collect()
}

/// The name segment after `/<collection>/` in a path (`/deployments/{name}/…`).
fn name_after<'p>(path: &'p str, collection: &str) -> Option<&'p str> {
    path.split_once(collection)
        .and_then(|(_, r)| r.split('/').next())
        .filter(|n| !n.is_empty())
}

/// The layer's state.
#[derive(Clone)]
pub struct Guard {
    /// Users, grants, tokens.
    pub auth: AuthService,
    /// Resource lookups.
    pub resolver: Arc<dyn Resolver>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// Reads the caller from the `Authorization` header.
async fn authenticate(auth: &AuthService, headers: &HeaderMap) -> Result<Principal, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Error::Unauthenticated(
            "You are not authenticated. Set MLFLOW_TRACKING_USERNAME and \
             MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
                .into(),
        ));
    };
    let bad = || Error::Unauthenticated("Malformed Authorization header".into());
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, pw) = text.split_once(':').ok_or_else(bad)?;
        auth.basic(user, pw).await
    } else if scheme.eq_ignore_ascii_case("bearer") {
        auth.bearer(rest).await
    } else {
        Err(bad())
    }
}

/// A request's parameters as the handlers read them (MLflow's extractor): the query string for
/// a GET or an empty body, else the JSON body. A repeated query key becomes a list.
fn params(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> Value {
    if *method != Method::GET && !body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(body).unwrap_or(Value::Null);
    }
    loopml_tracking::api::query_to_json(uri.query())
}

/// One scalar parameter. A list (a repeated key) is ambiguous: none, so the check fails.
fn field(params: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match &params[*k] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A list parameter (or a single value) of strings.
fn list(params: &Value, key: &str) -> Vec<String> {
    match &params[key] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The request's body, read (bounded: 413 beyond [`MAX_JSON_BODY`]).
async fn read_body(req: Request) -> Result<(axum::http::request::Parts, Bytes), Error> {
    let (parts, body) = req.into_parts();
    axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map(|b| (parts, b))
        .map_err(|_| Error::TooLarge(format!("The request body is over {MAX_JSON_BODY} bytes")))
}

fn json_of(b: &[u8]) -> Value {
    if b.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(b).unwrap_or(Value::Null)
    }
}

/// The trace ids a trace route names: the one in its path, else the request's.
fn trace_ids_of(path: &str, params: &Value) -> Vec<String> {
    if let Some(after) = path.split("/traces/").nth(1)
        && let Some(id) = after.split('/').next()
        && !matches!(
            id,
            "" | "get" | "search" | "batchGet" | "delete-traces" | "link-to-run" | "link-prompts"
        )
    {
        return vec![id.to_string()];
    }
    let mut ids: Vec<String> = ["trace_id", "request_id"]
        .iter()
        .filter_map(|k| field(params, &[k]))
        .collect();
    ids.extend(list(params, "trace_ids"));
    ids.extend(list(params, "request_ids"));
    ids
}

/// The resources a request names, `(resource type, id)`; empty when none can be found (then
/// a non-admin is refused).
async fn subjects(
    g: &Guard,
    s: Subject,
    parts: &axum::http::request::Parts,
    params: &Value,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let path = parts.uri.path();
    let exp = |id: Option<String>| {
        id.map(|i| ("experiment", i))
            .into_iter()
            .collect::<Vec<_>>()
    };
    match s {
        Subject::Experiment => exp(field(params, &["experiment_id"]).or_else(|| {
            // StartTraceV3: trace.trace_info.trace_location.mlflow_experiment.experiment_id.
            let info = &params["trace"]["trace_info"];
            let info = if info.is_null() {
                &params["trace_info"]
            } else {
                info
            };
            let e = &info["trace_location"]["mlflow_experiment"]["experiment_id"];
            e.as_str()
                .map(str::to_string)
                .or_else(|| e.as_i64().map(|n| n.to_string()))
        })),
        Subject::ExperimentName => match field(params, &["experiment_name"]) {
            Some(name) => exp(g.resolver.experiment_by_name(name).await),
            None => Vec::new(),
        },
        Subject::Run => match field(params, &["run_id", "run_uuid"]) {
            Some(run) => exp(g.resolver.run_experiment(run).await),
            None => Vec::new(),
        },
        Subject::Trace => {
            let ids = trace_ids_of(path, params);
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match g.resolver.trace_experiment(id).await {
                    Some(e) => out.push(("experiment", e)),
                    // One unknown trace fails the whole request.
                    None => return Vec::new(),
                }
            }
            out
        }
        Subject::LoggedModel => {
            let in_path = path
                .split("/logged-models/")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .filter(|id| !id.is_empty())
                .map(str::to_string);
            match in_path.or_else(|| field(params, &["model_id"])) {
                Some(id) => exp(g.resolver.logged_model_experiment(id).await),
                None => Vec::new(),
            }
        }
        Subject::Model => field(params, &["name"])
            .map(|n| ("registered_model", n))
            .into_iter()
            .collect(),
        Subject::ArtifactPath => {
            // `mlflow-artifacts/artifacts/<exp>/…`, `…/mpu/<op>/<exp>/…`, `…/presigned/<exp>/…`,
            // or a listing's `?path=<exp>/…`: the first segment is the experiment.
            let in_path = path.split_once("/mlflow-artifacts/").and_then(|(_, r)| {
                r.strip_prefix("artifacts/")
                    .or_else(|| r.strip_prefix("presigned/"))
                    .or_else(|| {
                        r.strip_prefix("mpu/")
                            .and_then(|m| m.split_once('/').map(|x| x.1))
                    })
                    .map(str::to_string)
            });
            in_path
                .or_else(|| field(params, &["path"]))
                .and_then(|a| {
                    a.trim_start_matches('/')
                        .split('/')
                        .next()
                        .map(str::to_string)
                })
                .filter(|first| first.parse::<i64>().is_ok())
                .map(|first| ("experiment", first))
                .into_iter()
                .collect()
        }
        Subject::ExperimentHeader => exp(parts
            .headers
            .get("x-mlflow-experiment-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)),
        Subject::ModelUri => {
            // The handler reads `uri` or `name`: when both are sent, both must pass.
            let mut out: Vec<_> = field(params, &["name"])
                .map(|n| ("registered_model", n))
                .into_iter()
                .collect();
            if let Some(u) = field(params, &["uri"]) {
                match registered_model_of(&u) {
                    Some(m) => out.push(("registered_model", m)),
                    None => return Vec::new(),
                }
            }
            out
        }
        Subject::ModelField => field(params, &["model"])
            .map(|n| ("registered_model", n))
            .into_iter()
            .collect(),
        Subject::ExperimentIds => experiment_list(params),
        Subject::EvalDataset | Subject::EvalDatasetLink => {
            let Some(id) = name_after(path, "/datasets/") else {
                return Vec::new();
            };
            let linked = g.resolver.eval_dataset_experiments(id.to_string()).await;
            if linked.is_empty() {
                // Linked to no experiment: nobody but an admin may touch it (as MLflow).
                return Vec::new();
            }
            let mut out: Vec<_> = linked.into_iter().map(|e| ("experiment", e)).collect();
            if s == Subject::EvalDatasetLink {
                let named = experiment_list(params);
                if named.is_empty() {
                    return Vec::new();
                }
                out.extend(named);
            }
            out
        }
        Subject::Deployment => {
            let mut uris = Vec::new();
            let in_path = name_after(path, "/deployments/");
            if let Some(name) = in_path {
                match g.resolver.deployment_models(name) {
                    Some(u) => uris.extend(u),
                    // Replacing (PUT) may create it: the body's models decide then.
                    None if parts.method == Method::PUT => {}
                    None => return Vec::new(),
                }
            }
            if matches!(parts.method, Method::POST | Method::PUT)
                && (in_path.is_none() || parts.method == Method::PUT)
            {
                match g.resolver.deployment_body_models(body) {
                    Some(u) => uris.extend(u),
                    None => return Vec::new(),
                }
            }
            if uris.is_empty() {
                return Vec::new();
            }
            models_of(&uris).unwrap_or_default()
        }
        Subject::Monitor => {
            let deployment = match name_after(path, "/monitors/") {
                Some(name) => g.resolver.monitor_deployment(name.to_string()).await,
                None => g.resolver.monitor_body_deployment(body),
            };
            deployment
                .and_then(|d| g.resolver.deployment_models(&d))
                .filter(|u| !u.is_empty())
                .and_then(|u| models_of(&u))
                .unwrap_or_default()
        }
    }
}

/// The experiments a request's `experiment_ids` names (strings or numbers).
fn experiment_list(params: &Value) -> Vec<(&'static str, String)> {
    match &params["experiment_ids"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
            .map(|e| ("experiment", e))
            .collect(),
        Value::String(e) => vec![("experiment", e.clone())],
        _ => Vec::new(),
    }
}

fn rebuild(parts: axum::http::request::Parts, body: Bytes) -> Request {
    Request::from_parts(parts, Body::from(body))
}

/// Reads an answer's body (bounded) to inspect it; gives back an equal response.
async fn read_answer(resp: Response) -> (axum::http::response::Parts, Option<Bytes>) {
    let (parts, body) = resp.into_parts();
    (
        parts,
        axum::body::to_bytes(body, MAX_FILTERED_ANSWER).await.ok(),
    )
}

fn json_response(mut parts: axum::http::response::Parts, v: &Value) -> Response {
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(v.to_string()))
}

/// Keeps the experiment ids of a search request the user may read.
fn filter_ids(ids: &mut Value, vis: &Visibility) {
    if let Some(a) = ids.as_array_mut() {
        a.retain(|v| {
            let id = v
                .as_str()
                .map(str::to_string)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
                .unwrap_or_default();
            vis.allows(&id)
        });
    }
}

/// The layer (for `axum::middleware::from_fn_with_state`).
pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    // Only this layer says who a gateway caller is: a client's own copy is dropped.
    req.headers_mut().remove(loopml_store::PRINCIPAL_HEADER);
    // Inference clients (tritonclient, KServe's) read the Open Inference Protocol's errors,
    // OpenAI's SDKs the gateway's.
    let path = req.uri().path();
    let oip = path.starts_with("/v2/");
    // The route's rule, looked up once per request.
    let rule = policy::rule(req.method(), path);
    let gateway = rule == Rule::Gateway;
    let fail = |e: Error| {
        if oip {
            e.into_oip_response()
        } else if gateway {
            e.into_openai_response()
        } else {
            e.into_response()
        }
    };
    let Some(action) = audit::action(req.method(), path) else {
        return run(&g, rule, req, next).await.unwrap_or_else(fail);
    };
    // Only an audited request keeps its path past the handler.
    let path = path.to_string();
    // An audited request: its parameters are kept to say what it acted on, and who sent it
    // is noted once authenticated.
    let (parts, body) = match read_body(req).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let asked = params(&parts.method, &parts.uri, &body);
    let mut req = rebuild(parts, body);
    let who = Caller::default();
    req.extensions_mut().insert(who.clone());
    let resp = match run(&g, rule, req, next).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let Some(username) = who.get().filter(|_| resp.status().is_success()) else {
        return resp;
    };
    let (rparts, rbody) = read_answer(resp).await;
    let rbody = rbody.unwrap_or_default();
    let (resource, detail) = audit::describe(&path, &asked, &json_of(&rbody));
    if let Err(e) = g.auth.audit(&username, action, &resource, &detail).await {
        tracing::warn!(error = %e, action, %resource, "cannot write the audit entry");
    }
    Response::from_parts(rparts, Body::from(rbody))
}

/// Who sent an audited request, filled in once the layer has authenticated it.
#[derive(Clone, Default)]
struct Caller(Arc<std::sync::Mutex<Option<String>>>);

impl Caller {
    fn set(&self, name: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Whether a gateway request carries a loopml credential (HTTP Basic, or a bearer token
/// loopml issued) rather than the gateway's master key or a virtual key.
fn loopml_credential(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, rest)| {
            scheme.eq_ignore_ascii_case("basic")
                || (scheme.eq_ignore_ascii_case("bearer")
                    && rest.trim().starts_with(crate::password::TOKEN_PREFIX))
        })
}

/// A gateway request: a loopml credential is checked here and the gateway told who it is
/// (a regular user may call models, an admin also manages keys); any other key is the
/// gateway's to check, and it refuses a request with none.
async fn gateway(g: &Guard, mut req: Request, next: Next) -> Result<Response, Error> {
    if loopml_credential(req.headers()) {
        let who = authenticate(&g.auth, req.headers()).await?;
        let role = if who.read_only {
            "reader"
        } else if who.user.is_admin {
            "admin"
        } else {
            "user"
        };
        let value = format!("{role}:{}", who.user.username);
        let value = axum::http::HeaderValue::from_str(&value)
            .map_err(|_| Error::Unauthenticated("Malformed Authorization header".into()))?;
        let headers = req.headers_mut();
        headers.insert(loopml_store::PRINCIPAL_HEADER, value);
        // The provider must never see the user's loopml password or token.
        headers.remove(header::AUTHORIZATION);
        if let Some(c) = req.extensions().get::<Caller>() {
            c.set(&who.user.username);
        }
        req.extensions_mut().insert(who);
    } else if let Some(c) = req.extensions().get::<Caller>() {
        // The gateway's key routes take only its master key from anyone else.
        c.set("gateway:master_key");
    }
    Ok(next.run(req).await)
}

async fn run(g: &Guard, rule: Rule, req: Request, next: Next) -> Result<Response, Error> {
    if rule == Rule::Public {
        return Ok(next.run(req).await);
    }
    if rule == Rule::Gateway {
        return gateway(g, req, next).await;
    }
    if rule == Rule::ServerInfo {
        let resp = next.run(req).await;
        if !resp.status().is_success() {
            return Ok(resp);
        }
        let (parts, body) = read_answer(resp).await;
        let mut info = json_of(&body.unwrap_or_default());
        for k in ["multipart_uploads_enabled", "multipart_downloads_enabled"] {
            if info.get(k).is_some() {
                info[k] = Value::Bool(false);
            }
        }
        return Ok(json_response(parts, &info));
    }
    let who = authenticate(&g.auth, req.headers()).await?;
    let user = who.user.clone();
    if let Some(c) = req.extensions().get::<Caller>() {
        c.set(&user.username);
    }
    let mut req = req;
    req.extensions_mut().insert(who.clone());
    match rule {
        Rule::Public | Rule::Gateway | Rule::ServerInfo | Rule::AnyUser | Rule::AuthApi => {
            Ok(next.run(req).await)
        }
        Rule::Admin => {
            let write = !matches!(*req.method(), Method::GET | Method::HEAD);
            if who.read_only && write {
                Err(Error::read_only())
            } else if user.is_admin {
                Ok(next.run(req).await)
            } else {
                Err(Error::PermissionDenied(
                    "Permission denied: this route is for admins".into(),
                ))
            }
        }
        Rule::On(s, action) => {
            if who.read_only && action != Action::Read {
                return Err(Error::read_only());
            }
            if user.is_admin {
                // Nothing to look up: the body is not even read.
                return Ok(next.run(req).await);
            }
            // Uploads stream (their resource is in the path or a header) and GETs have no
            // body: only a JSON request's body is read.
            let streamed = matches!(s, Subject::ArtifactPath | Subject::ExperimentHeader)
                || matches!(*req.method(), Method::GET | Method::HEAD);
            let (parts, body, params, raw) = if streamed {
                let (p, b) = req.into_parts();
                let q = params(&p.method, &p.uri, b"");
                (p, b, q, Bytes::new())
            } else {
                let (p, b) = read_body(req).await?;
                let j = params(&p.method, &p.uri, &b);
                (p, Body::from(b.clone()), j, b)
            };
            let found = subjects(g, s, &parts, &params, &raw).await;
            if found.is_empty() {
                // MLflow answers a missing run with 403 too: no existence oracle.
                return Err(Error::PermissionDenied("Permission denied".into()));
            }
            for (t, id) in found {
                g.auth.check(&who, t, &id, action).await?;
            }
            Ok(next.run(Request::from_parts(parts, body)).await)
        }
        Rule::Inference(action) => {
            // A prediction changes nothing the caller owns: read-only tokens may infer.
            if !user.is_admin {
                let endpoint = match name_after(req.uri().path(), "/v2/models/") {
                    Some(n) => Some(n.to_string()),
                    None => field(&params(req.method(), req.uri(), b""), &["model"]),
                };
                if let Some(uris) = g.resolver.endpoint_models(endpoint.as_deref()) {
                    for name in uris.iter().filter_map(|u| registered_model_of(u)) {
                        g.auth
                            .check(&who, "registered_model", &name, action)
                            .await?;
                    }
                }
            }
            Ok(next.run(req).await)
        }
        Rule::CreateExperiment | Rule::CreateModel => {
            if who.read_only {
                return Err(Error::read_only());
            }
            let (parts, body) = read_body(req).await?;
            let json = params(&parts.method, &parts.uri, &body);
            let resp = next.run(rebuild(parts, body)).await;
            if !resp.status().is_success() {
                return Ok(resp);
            }
            let (rparts, rbody) = read_answer(resp).await;
            let rbody = rbody.unwrap_or_default();
            let answer = json_of(&rbody);
            let owned = if rule == Rule::CreateExperiment {
                answer["experiment_id"]
                    .as_str()
                    .map(|e| ("experiment", e.to_string()))
            } else {
                json["name"]
                    .as_str()
                    .map(|n| ("registered_model", n.to_string()))
            };
            if let Some((t, id)) = owned {
                g.auth.make_owner(&user, t, &id).await?;
            }
            Ok(Response::from_parts(rparts, Body::from(rbody)))
        }
        Rule::DeleteModel => {
            if who.read_only {
                return Err(Error::read_only());
            }
            let (parts, body) = read_body(req).await?;
            let name =
                field(&params(&parts.method, &parts.uri, &body), &["name"]).unwrap_or_default();
            if !user.is_admin {
                g.auth
                    .check(&who, "registered_model", &name, Action::Delete)
                    .await?;
            }
            let resp = next.run(rebuild(parts, body)).await;
            if resp.status().is_success() {
                g.auth
                    .forget_resource(&user.username, "registered_model", &name)
                    .await?;
            }
            Ok(resp)
        }
        Rule::SearchRuns | Rule::SearchTraces => {
            let vis = g.auth.visibility(&user, "experiment").await?;
            if vis == Visibility::All {
                return Ok(next.run(req).await);
            }
            if req.method() == Method::GET {
                // A GET search names its experiments in the query: each must be readable.
                let q = params(req.method(), req.uri(), b"");
                if list(&q, "experiment_ids").iter().any(|e| !vis.allows(e)) {
                    return Err(Error::PermissionDenied("Permission denied".into()));
                }
                return Ok(next.run(req).await);
            }
            let (parts, body) = read_body(req).await?;
            let mut json = json_of(&body);
            if !json.is_object() {
                // Not a search request at all (`[null]`, a number): the handler says so (400);
                // indexing into it here would panic (found by schemathesis).
                return Ok(next.run(rebuild(parts, body)).await);
            }
            let count = |j: &Value| {
                j["experiment_ids"].as_array().map_or(0, Vec::len)
                    + j["locations"].as_array().map_or(0, Vec::len)
            };
            let asked = count(&json);
            filter_ids(&mut json["experiment_ids"], &vis);
            if let Some(locs) = json["locations"].as_array_mut() {
                locs.retain(|l| {
                    let e = &l["mlflow_experiment"]["experiment_id"];
                    let id = e
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| e.as_i64().map(|n| n.to_string()))
                        .unwrap_or_default();
                    vis.allows(&id)
                });
            }
            // Nothing readable left: an empty page, as MLflow answers.
            if asked > 0 && count(&json) == 0 {
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    "{}",
                )
                    .into_response());
            }
            Ok(next
                .run(rebuild(parts, Bytes::from(json.to_string())))
                .await)
        }
        Rule::ListDeployments | Rule::ListMonitors => {
            let vis = g.auth.visibility(&user, "registered_model").await?;
            let resp = next.run(req).await;
            if vis == Visibility::All || !resp.status().is_success() {
                return Ok(resp);
            }
            let (parts, body) = read_answer(resp).await;
            let mut answer = json_of(&body.unwrap_or_default());
            let key = if rule == Rule::ListDeployments {
                "deployments"
            } else {
                "monitors"
            };
            if let Some(a) = answer[key].as_array_mut() {
                a.retain(|item| {
                    let deployment = if rule == Rule::ListDeployments {
                        item["name"].as_str()
                    } else {
                        item["monitor"]["deployment"].as_str()
                    };
                    deployment
                        .and_then(|d| g.resolver.deployment_models(d))
                        .filter(|u| !u.is_empty())
                        .and_then(|u| models_of(&u))
                        .is_some_and(|models| models.iter().all(|(_, m)| vis.allows(m)))
                });
            }
            Ok(json_response(parts, &answer))
        }
        Rule::SearchExperiments | Rule::SearchModels => {
            let (kind, lists, key): (&str, &[&str], &str) = if rule == Rule::SearchExperiments {
                ("experiment", &["experiments"], "experiment_id")
            } else {
                (
                    "registered_model",
                    &["registered_models", "model_versions"],
                    "name",
                )
            };
            let vis = g.auth.visibility(&user, kind).await?;
            let mut req = req;
            if rule == Rule::SearchExperiments {
                // The search filters in SQL (full pages, stable tokens); the answer is still
                // filtered below, so a route that ignores the hint leaks nothing.
                let readable = match &vis {
                    Visibility::All => None,
                    Visibility::AllBut(ids) => Some(loopml_store::Readable::AllBut(ids.clone())),
                    Visibility::Only(ids) => Some(loopml_store::Readable::Only(ids.clone())),
                };
                if let Some(r) = readable {
                    req.extensions_mut()
                        .insert(loopml_store::ReadableExperiments(r));
                }
            }
            let resp = next.run(req).await;
            if vis == Visibility::All || !resp.status().is_success() {
                return Ok(resp);
            }
            let (parts, body) = read_answer(resp).await;
            let mut answer = json_of(&body.unwrap_or_default());
            for l in lists {
                if let Some(a) = answer[*l].as_array_mut() {
                    a.retain(|row| row[key].as_str().is_some_and(|id| vis.allows(id)));
                }
            }
            Ok(json_response(parts, &answer))
        }
    }
}
