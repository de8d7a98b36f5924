//! The OpenAI-compatible endpoints over the configured deployments: `GET /v1/models`,
//! `GET /v1/models/{id}`, `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.
//! A request names a model group; one
//! of its deployments is picked (simple-shuffle: weighted by `weight`, else `rpm`, else `tpm`),
//! the body is sent on with the upstream model name, and the answer — a JSON body or an SSE
//! stream, relayed as it arrives — comes back with `x-request-id`, the deployment that served
//! it and the gateway's own time (`x-loopml-overhead-ms`). Connection errors, 429s and 5xx are
//! retried on another deployment of the group (`num_retries`, with exponential backoff), then
//! the group's `fallbacks` are tried in order; other errors come back as the upstream sent
//! them. A deployment with more than `allowed_fails` such failures within a minute (default 3)
//! is skipped for `cooldown_time` seconds (default 5); when every one is cooling down the answer
//! is a 429 with `retry-after`. Errors of the gateway itself are OpenAI-shaped (`{"error": {message, type, code}}`).
//! This step serves OpenAI and OpenAI-compatible upstreams and Azure OpenAI; Anthropic, Gemini
//! and Bedrock deployments are refused with a clear error until their adapters land.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::TryStreamExt;
use rand::Rng;
use serde_json::{Value, json};

use crate::config::{Deployment, GatewayConfig, Provider};

/// The gateway: its config and a pooled, keep-alive upstream client.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

struct Inner {
    config: GatewayConfig,
    client: reqwest::Client,
    /// Per deployment id: its recent failures and, when cooling down, until when.
    health: std::sync::Mutex<std::collections::HashMap<String, Health>>,
    /// Per deployment id: requests it is answering now (for least-busy).
    in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Counts a request in flight on a deployment until dropped.
struct InFlight<'a> {
    gateway: &'a Gateway,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.gateway.0.in_flight.lock()
            && let Some(n) = m.get_mut(&self.id)
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// A deployment's recent retryable failures and cooldown.
#[derive(Default)]
struct Health {
    fails: std::collections::VecDeque<Instant>,
    until: Option<Instant>,
}

/// LiteLLM's defaults: a deployment that fails more than 3 times within a minute cools down
/// for 5 seconds.
const DEFAULT_ALLOWED_FAILS: u32 = 3;
const DEFAULT_COOLDOWN_S: f64 = 5.0;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("deployments", &self.0.config.deployments.len())
            .finish_non_exhaustive()
    }
}

/// An error answered in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
        }
    }

    /// Its status and message (for answers in another protocol's shape).
    pub(crate) fn parts(self) -> (StatusCode, String) {
        (self.status, self.message)
    }

    fn bad(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": null, "code": self.code,
        }});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Why an upstream attempt did not answer usefully.
enum Failure {
    /// Worth another deployment: no connection, a timeout, a 429 or a 5xx (its answer, if any).
    Retryable(String, Option<Response>),
    /// The upstream's own answer to a bad request: passed back as it is.
    Final(Response),
}

impl Gateway {
    /// A gateway over `config` (its upstream client keeps connections alive and pooled).
    pub fn new(config: GatewayConfig) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| crate::Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Gateway(Arc::new(Inner {
            config,
            client,
            health: std::sync::Mutex::default(),
            in_flight: std::sync::Mutex::default(),
        })))
    }

    /// Its config.
    pub fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(master) = &self.0.config.master_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), master.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                "Authentication Error: invalid or missing API key (send Authorization: Bearer \
                 <key>)"
                    .into(),
            ))
        }
    }

    /// The deployments of a model group, in file order.
    fn group(&self, name: &str) -> Vec<&Deployment> {
        self.0
            .config
            .deployments
            .iter()
            .filter(|d| d.model_name == name)
            .collect()
    }

    /// Whether a deployment is cooling down now, and for how much longer.
    fn cooling(&self, id: &str, now: Instant) -> Option<Duration> {
        let h = self.0.health.lock().ok()?;
        h.get(id)?.until.filter(|u| *u > now).map(|u| u - now)
    }

    /// Counts a retryable failure; past `allowed_fails` within a minute the deployment cools
    /// down for `cooldown_time`.
    fn failed(&self, id: &str) {
        let now = Instant::now();
        let allowed = self.0.config.allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS) as usize;
        let cool = self.0.config.cooldown_time.unwrap_or(DEFAULT_COOLDOWN_S);
        let Ok(mut all) = self.0.health.lock() else {
            return;
        };
        let h = all.entry(id.to_string()).or_default();
        h.fails.push_back(now);
        while h
            .fails
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            h.fails.pop_front();
        }
        if h.fails.len() > allowed && h.until.is_none_or(|u| u <= now) {
            h.until = Some(now + Duration::from_secs_f64(cool));
            h.fails.clear();
            tracing::warn!(
                deployment = id,
                seconds = cool,
                "deployment cooling down after repeated failures"
            );
        }
    }

    /// Deployments of `group` in the order they are tried: a weighted draw first, then the
    /// others by weight.
    fn order<'a>(&self, group: &[&'a Deployment]) -> Vec<&'a Deployment> {
        let weight = |d: &Deployment| {
            d.weight
                .or(d.rpm.map(|r| r as f64))
                .or(d.tpm.map(|t| t as f64))
                .unwrap_or(1.0)
                .max(0.0)
        };
        let mut left: Vec<&Deployment> = group.to_vec();
        let mut out = Vec::with_capacity(left.len());
        let mut rng = rand::rng();
        while !left.is_empty() {
            let total: f64 = left.iter().map(|d| weight(d)).sum();
            let i = if total <= 0.0 {
                0
            } else {
                let mut x = rng.random_range(0.0..total);
                let mut pick = left.len() - 1;
                for (i, d) in left.iter().enumerate() {
                    x -= weight(d);
                    if x < 0.0 {
                        pick = i;
                        break;
                    }
                }
                pick
            };
            out.push(left.remove(i));
        }
        if self.0.config.routing_strategy == crate::config::RoutingStrategy::LeastBusy {
            // Fewest requests in flight first; the weighted draw breaks ties (a stable sort).
            let busy = self
                .0
                .in_flight
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default();
            out.sort_by_key(|d| busy.get(&d.id).copied().unwrap_or(0));
        }
        out
    }

    fn enter(&self, id: &str) -> InFlight<'_> {
        if let Ok(mut m) = self.0.in_flight.lock() {
            *m.entry(id.to_string()).or_default() += 1;
        }
        InFlight {
            gateway: self,
            id: id.to_string(),
        }
    }

    async fn attempt(
        &self,
        d: &Deployment,
        path: &str,
        mut body: Value,
        stream: bool,
    ) -> Result<(Response, f64), Failure> {
        let (url, auth): (String, Option<(&str, String)>) = match &d.provider {
            Provider::OpenAi | Provider::OpenAiCompatible(_) => {
                let base = d
                    .api_base
                    .clone()
                    .unwrap_or_else(|| "https://api.openai.com/v1".to_string());
                let base = base.trim_end_matches('/');
                // Ollama's server answers the OpenAI API under /v1.
                let base = if matches!(d.provider.name(), "ollama" | "ollama_chat")
                    && !base.ends_with("/v1")
                {
                    format!("{base}/v1")
                } else {
                    base.to_string()
                };
                (
                    format!("{base}/{path}"),
                    d.api_key
                        .clone()
                        .map(|k| ("authorization", format!("Bearer {k}"))),
                )
            }
            Provider::Azure => {
                let base = d.api_base.clone().unwrap_or_default();
                (
                    format!(
                        "{}/openai/deployments/{}/{path}?api-version={}",
                        base.trim_end_matches('/'),
                        d.model,
                        d.api_version.clone().unwrap_or_default()
                    ),
                    d.api_key.clone().map(|k| ("api-key", k)),
                )
            }
            other => {
                return Err(Failure::Final(
                    ApiError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        "invalid_request_error",
                        "provider_not_wired",
                        format!(
                            "deployment '{}' uses the {} provider, whose adapter is not in \
                             this build yet; OpenAI, OpenAI-compatible and Azure deployments \
                             are served",
                            d.id,
                            other.name()
                        ),
                    )
                    .into_response(),
                ));
            }
        };
        body["model"] = json!(d.model);
        if stream {
            // Usage is always asked for, so a stream is billed even when the client did not ask.
            if body.get("stream_options").is_none_or(Value::is_null) {
                body["stream_options"] = json!({"include_usage": true});
            }
        }
        let timeout = if stream {
            d.stream_timeout.or(d.timeout)
        } else {
            d.timeout
        }
        .or(self.0.config.timeout)
        .unwrap_or(600.0);
        let mut req = self
            .0
            .client
            .post(&url)
            .timeout(Duration::from_secs_f64(timeout))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Retryable(format!("{}: {e}", d.id), None))?;
        let upstream_ms = started.elapsed().as_secs_f64() * 1000.0;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_stream = content_type.starts_with("text/event-stream");
        let mut out = if status.is_success() && is_stream {
            let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(body)
                .unwrap_or_default()
        } else {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| Failure::Retryable(format!("{}: {e}", d.id), None))?;
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes))
                .unwrap_or_default()
        };
        if let Some(ra) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            out.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Failure::Retryable(
                format!("{} answered {}", d.id, status.as_u16()),
                Some(out),
            ));
        }
        if !status.is_success() {
            return Err(Failure::Final(out));
        }
        Ok((out, upstream_ms))
    }

    /// One client call: the group's deployments with retries, then its fallbacks.
    async fn call(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad(format!("the request body is not JSON: {e}")))?;
        self.call_json(path, headers, body).await
    }

    /// [`Gateway::call`] with the OpenAI request already parsed (other inbound protocols
    /// translate into it).
    pub(crate) async fn call_json(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Value,
    ) -> Result<Response, ApiError> {
        let started = Instant::now();
        self.authorize(&headers)?;
        let model = body["model"]
            .as_str()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad("\"model\" is required".into()))?
            .to_string();
        let stream = body["stream"].as_bool().unwrap_or(false);
        if self.group(&model).is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "The model `{model}` does not exist on this gateway; its models are {}",
                    self.0.config.model_names().join(", ")
                ),
            ));
        }
        let mut groups = vec![model.clone()];
        if let Some((_, f)) = self.0.config.fallbacks.iter().find(|(g, _)| g == &model) {
            groups.extend(f.iter().cloned());
        }
        let retries = self.0.config.num_retries.unwrap_or(2) as usize;
        let mut last: Option<(String, Option<Response>)> = None;
        let mut soonest: Option<Duration> = None;
        for g in &groups {
            let now = Instant::now();
            let group = self.group(g);
            let ready: Vec<&Deployment> = group
                .iter()
                .copied()
                .filter(|d| match self.cooling(&d.id, now) {
                    Some(left) => {
                        soonest = Some(soonest.map_or(left, |s| s.min(left)));
                        false
                    }
                    None => true,
                })
                .collect();
            let order = self.order(&ready);
            for (n, d) in order.iter().take(retries + 1).enumerate() {
                if n > 0 {
                    // Exponential backoff with jitter between attempts of one group.
                    let base = 50u64 << (n - 1).min(6);
                    let jitter = rand::rng().random_range(0..=base / 2);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                let _busy = self.enter(&d.id);
                match self.attempt(d, path, body.clone(), stream).await {
                    Ok((mut resp, upstream_ms)) => {
                        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
                        let h = resp.headers_mut();
                        let mut put = |k: &'static str, v: String| {
                            if let Ok(v) = HeaderValue::from_str(&v) {
                                h.insert(k, v);
                            }
                        };
                        put("x-loopml-deployment", d.id.clone());
                        put("x-loopml-model-group", g.clone());
                        put(
                            "x-loopml-overhead-ms",
                            format!("{:.3}", (total_ms - upstream_ms).max(0.0)),
                        );
                        return Ok(resp);
                    }
                    Err(Failure::Final(resp)) => return Ok(resp),
                    Err(Failure::Retryable(why, resp)) => {
                        tracing::warn!(model = %g, deployment = %d.id, reason = %why, "upstream attempt failed");
                        self.failed(&d.id);
                        last = Some((why, resp));
                    }
                }
            }
        }
        match last {
            Some((_, Some(resp))) => Ok(resp),
            Some((why, None)) => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_unavailable",
                format!("no deployment of `{model}` (or its fallbacks) answered: {why}"),
            )),
            None => {
                // Every deployment is cooling down: a 429 saying when to come back.
                let wait = soonest.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
                let mut resp = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "deployments_cooling_down",
                    format!(
                        "every deployment of `{model}` (and of its fallbacks) is cooling down \
                         after repeated failures; retry in {wait} s"
                    ),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Ok(resp)
            }
        }
    }

    fn model_card(&self, name: &str) -> Value {
        json!({"id": name, "object": "model", "created": 0, "owned_by": "loopml"})
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn models(State(g): State<Gateway>, headers: HeaderMap) -> Result<Response, ApiError> {
    g.authorize(&headers)?;
    let data: Vec<Value> = g
        .config()
        .model_names()
        .iter()
        .map(|m| g.model_card(m))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

async fn model(
    State(g): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    g.authorize(&headers)?;
    if g.group(&id).is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("The model `{id}` does not exist"),
        ));
    }
    Ok(axum::Json(g.model_card(&id)).into_response())
}

async fn chat(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    g.call("chat/completions", headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    g.call("completions", headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn embeddings(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    g.call("embeddings", headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Largest request body taken: long contexts and base64 images exceed axum's 2 MB default.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The gateway's routes, under `/v1`.
pub fn router(g: Gateway) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(crate::anthropic::messages))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(g)
}
