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
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};

use crate::config::{Deployment, GatewayConfig, RoutingStrategy};
use crate::keys::{Directory, Key, Lookup, hash_key, now_ms};
use crate::ledger::{Grant, Ledger, Refusal};
use crate::metrics::{Metrics, label};
use crate::prices::{Price, Usage};
use crate::spend::{LogEntry, SpendLog};
use loopml_store::Database;

/// The gateway: its config, a pooled keep-alive upstream client, the key directory, the
/// admission ledger, the spend log and the metrics.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

struct Inner {
    config: GatewayConfig,
    client: reqwest::Client,
    /// Per deployment id: its recent failures and, when cooling down, until when.
    health: std::sync::Mutex<std::collections::HashMap<String, Health>>,
    /// Per deployment id: in flight, latency and this minute's use (for routing).
    stats: std::sync::Mutex<std::collections::HashMap<String, Stats>>,
    /// Per deployment id: its prices.
    prices: std::collections::HashMap<String, Option<Price>>,
    directory: Arc<Directory>,
    ledger: Ledger,
    spend: SpendLog,
    metrics: Metrics,
    /// Work a finished call leaves behind (settling in Redis, draining an abandoned stream).
    tasks: tokio_util::task::TaskTracker,
    /// Where `prompt_id` references are resolved (the model registry, in `loopml server`).
    prompts: std::sync::OnceLock<crate::prompts::PromptSource>,
    /// Set when loopml's authentication is on: every caller must authenticate (a loopml
    /// user, the master key or a virtual key) and the auth layer's principal header is trusted.
    require_auth: std::sync::atomic::AtomicBool,
}

/// A deployment's live figures for routing.
#[derive(Default, Clone)]
struct Stats {
    in_flight: usize,
    /// Exponentially weighted time to the upstream's answer (ms); `None`: never called.
    latency_ms: Option<f64>,
    minute: i64,
    requests: u64,
    tokens: u64,
}

/// Counts a request in flight on a deployment until dropped.
struct InFlight<'a> {
    gateway: &'a Gateway,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.gateway.0.stats.lock()
            && let Some(s) = m.get_mut(&self.id)
        {
            s.in_flight = s.in_flight.saturating_sub(1);
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
/// Default cap on one model group's time before its fallbacks (`fallback_after`).
const DEFAULT_FALLBACK_AFTER_S: f64 = 10.0;

/// Where the gateway keeps its state beyond memory.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    /// The database for keys, teams, users and the spend log (none: memory only).
    pub database: Option<Database>,
    /// Redis for the admission counters shared by replicas (none: this process's memory).
    pub redis_url: Option<String>,
    /// The change bus replicas announce key changes on.
    pub bus: Option<loopml_store::ChangeBus>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// No master key is configured: no authentication.
    Open,
    /// A loopml user (authenticated by loopml's auth layer), by name.
    User(String),
    /// The master key.
    Master,
    /// A virtual key.
    Key(Arc<Key>),
}

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
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            headers: Vec::new(),
        }
    }

    /// Its status and message (for answers in another protocol's shape).
    pub(crate) fn parts(self) -> (StatusCode, String) {
        (self.status, self.message)
    }

    /// Its extra headers (`retry-after`, `x-ratelimit-*`).
    pub(crate) fn header_list(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
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
        let resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        let mut resp = resp;
        for (k, v) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                resp.headers_mut().insert(*k, v);
            }
        }
        resp
    }
}

/// Why an upstream attempt did not answer usefully.
enum Failure {
    /// Worth another deployment: no connection, a timeout, a 429 or a 5xx (its answer, if any).
    Retryable(String, Option<Response>),
    /// The upstream's own answer to a bad request: passed back as it is.
    Final(Response),
}

/// An upstream's successful answer.
enum Answer {
    /// A whole JSON body.
    Json(StatusCode, Bytes),
    /// An SSE stream, relayed as it arrives.
    Stream(crate::providers::ByteStream),
}

/// How long a stream the client abandoned is read on, to bill what the upstream really used.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

impl Gateway {
    /// A gateway over `config` with its state in memory only (keys made through the API last
    /// as long as the process).
    pub fn new(config: GatewayConfig) -> crate::Result<Self> {
        Self::build(
            config,
            Arc::new(Directory::new(None, None)?),
            Ledger::local(),
            None,
        )
    }

    /// A gateway over `config` keeping keys and the spend log in `storage.database` and its
    /// admission counters in Redis when `storage.redis_url` is set; keys are loaded now.
    pub async fn open(config: GatewayConfig, storage: Storage) -> crate::Result<Self> {
        let g = Self::with_storage(config, storage)?;
        g.0.directory.reload().await?;
        Ok(g)
    }

    /// [`Self::open`] without loading the keys now: [`Self::run_background`] loads them, and
    /// until then a key is looked up in the database when first seen.
    pub fn with_storage(config: GatewayConfig, storage: Storage) -> crate::Result<Self> {
        let ledger = match &storage.redis_url {
            Some(url) => Ledger::redis(url).map_err(crate::Error::Config)?,
            None => Ledger::local(),
        };
        let directory = Arc::new(Directory::new(storage.database.clone(), storage.bus)?);
        Self::build(config, directory, ledger, storage.database)
    }

    fn build(
        config: GatewayConfig,
        directory: Arc<Directory>,
        ledger: Ledger,
        db: Option<Database>,
    ) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| crate::Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let prices = config
            .deployments
            .iter()
            .map(|d| (d.id.clone(), crate::prices::of(d)))
            .collect();
        let spend = SpendLog::new(
            db,
            !config.disable_spend_logs,
            config.spend_logs_retention_ms,
        );
        Ok(Gateway(Arc::new(Inner {
            config,
            client,
            health: std::sync::Mutex::default(),
            stats: std::sync::Mutex::default(),
            prices,
            directory,
            ledger,
            spend,
            metrics: Metrics::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            prompts: std::sync::OnceLock::new(),
            require_auth: std::sync::atomic::AtomicBool::new(false),
        })))
    }

    /// Embeds `texts` with model group `model`, as a call from loopml itself (no key; metered
    /// and logged like any call): for retrieval indexes and their queries.
    pub async fn embed(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let body = json!({"model": model, "input": texts, "user": "loopml-retrieval"});
        let resp = self
            .call_as(Caller::Open, "embeddings", HeaderMap::new(), body)
            .await
            .map_err(|e| e.message)?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 30)
            .await
            .map_err(|e| format!("reading the embeddings failed: {e}"))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the embeddings answer is not JSON: {e}"))?;
        if !status.is_success() {
            return Err(v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the embedding model answered {status}")));
        }
        let mut data: Vec<(u64, Vec<f32>)> = v["data"]
            .as_array()
            .ok_or("the embeddings answer has no data")?
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let e = d["embedding"]
                    .as_array()
                    .ok_or("an embedding is not a list of numbers (ask for encoding_format float)")?
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .map(|f| f as f32)
                            .ok_or("an embedding holds a non-number")
                    })
                    .collect::<Result<Vec<f32>, _>>()?;
                Ok((d["index"].as_u64().unwrap_or(i as u64), e))
            })
            .collect::<Result<_, &str>>()
            .map_err(str::to_string)?;
        data.sort_by_key(|(i, _)| *i);
        Ok(data.into_iter().map(|(_, e)| e).collect())
    }

    /// Lets chat requests name a registered prompt (`prompt_id`, `prompt_variables`).
    pub fn set_prompts(&self, p: crate::prompts::PromptSource) {
        let _ = self.0.prompts.set(p);
    }

    /// Puts the gateway behind loopml's authentication: no caller is let through
    /// unauthenticated (even without a master key), loopml users the auth layer vouched for
    /// ([`loopml_store::PRINCIPAL_HEADER`]) may call models, and loopml admins manage keys as
    /// the master key does.
    pub fn set_require_auth(&self) {
        self.0
            .require_auth
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn requires_auth(&self) -> bool {
        self.0
            .require_auth
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The loopml user the auth layer vouched for: `(role, username)`.
    fn principal<'h>(&self, headers: &'h HeaderMap) -> Option<(&'h str, &'h str)> {
        if !self.requires_auth() {
            return None;
        }
        headers
            .get(loopml_store::PRINCIPAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(':'))
    }

    /// Its config.
    pub fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.0.directory
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.0.ledger
    }

    pub(crate) fn spend_log(&self) -> &SpendLog {
        &self.0.spend
    }

    /// The metrics as Prometheus text (for the server's `/metrics`).
    pub fn encode_metrics(&self) -> String {
        let m = &self.0.metrics;
        m.log_pending.set(self.0.spend.pending_rows() as i64);
        m.log_dropped.set(
            self.0
                .spend
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
        m.counter_fallbacks.set(
            self.0
                .ledger
                .fallbacks
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
        m.encode()
    }

    /// The gateway's background work until the app stops: the spend-log writer and, with a
    /// change bus, following other replicas' key changes.
    pub async fn run_background(self) {
        if let Err(e) = self.0.directory.reload().await {
            tracing::warn!(error = %e, "cannot load the gateway's keys yet; each is looked up when first used");
        }
        let follow = self.0.directory.clone().follow();
        let write = self.0.spend.run();
        futures::future::join(follow, write).await;
    }

    /// At shutdown: waits (a few seconds at most) for settlements still running, then writes
    /// the last spend-log batch.
    pub async fn flush(&self) {
        self.0.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.tasks.wait()).await;
        if let Err(e) = self.0.spend.flush().await {
            tracing::warn!(error = %e, "the gateway's last spend-log batch could not be written");
        }
    }

    fn presented(headers: &HeaderMap) -> &str {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
            .unwrap_or("")
    }

    fn unauthorized(message: String) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message,
        )
    }

    /// Who sent the request: the master key, a valid virtual key, or no one when the gateway
    /// has no master key.
    pub(crate) async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if let Some((role, user)) = self.principal(headers) {
            return Ok(match role {
                "admin" => Caller::Master,
                _ => Caller::User(user.to_string()),
            });
        }
        let master = match &self.0.config.master_key {
            Some(m) => Some(m),
            None if self.requires_auth() => None,
            None => return Ok(Caller::Open),
        };
        let given = Self::presented(headers);
        if let Some(master) = master
            && constant_time_eq(given.as_bytes(), master.as_bytes())
        {
            return Ok(Caller::Master);
        }
        if given.is_empty() {
            self.refused("auth");
            return Err(Self::unauthorized(
                "Authentication Error: no API key (send Authorization: Bearer <key>)".into(),
            ));
        }
        match self.0.directory.key(&hash_key(given)).await {
            Lookup::Found(k) => {
                let now = now_ms();
                if k.blocked {
                    self.refused("auth");
                    return Err(Self::unauthorized(format!(
                        "Authentication Error: key {} is blocked",
                        k.key_name
                    )));
                }
                if let Some(at) = k.expires
                    && at <= now
                {
                    self.refused("auth");
                    return Err(Self::unauthorized(format!(
                        "Authentication Error - Expired Key. Key Expiry time {} and current \
                         time {}",
                        crate::keys::iso(at),
                        crate::keys::iso(now)
                    )));
                }
                if let Some(t) = k.team_id.as_deref().and_then(|t| self.0.directory.team(t))
                    && t.blocked
                {
                    self.refused("auth");
                    return Err(Self::unauthorized(format!(
                        "Authentication Error: team {} is blocked",
                        t.team_id
                    )));
                }
                Ok(Caller::Key(k))
            }
            Lookup::Unknown => {
                self.refused("auth");
                Err(Self::unauthorized(
                    "Authentication Error: invalid API key (send Authorization: Bearer <key>)"
                        .into(),
                ))
            }
            Lookup::Unavailable(why) => {
                if self.0.config.allow_requests_on_db_unavailable {
                    tracing::warn!(error = %why, "key store unreachable: letting an unknown key through (allow_requests_on_db_unavailable)");
                    Ok(Caller::Open)
                } else {
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api_error",
                        "store_unavailable",
                        "the key store cannot be reached to check this key; retry shortly \
                         (general_settings.allow_requests_on_db_unavailable lets unknown keys \
                         through meanwhile)"
                            .into(),
                    ))
                }
            }
        }
    }

    /// Requires the master key (the management API).
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.principal(headers) {
            Some(("admin", _)) => return Ok(()),
            Some((role, user)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    "permission_denied",
                    if role == "reader" {
                        format!("{user}'s token is read-only: this route changes the gateway")
                    } else {
                        format!("{user} is not an admin: this route is for admins")
                    },
                ));
            }
            None => {}
        }
        let Some(master) = &self.0.config.master_key else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "no_master_key",
                "keys, teams, users and spend are managed with the master key: set \
                 general_settings.master_key in the gateway config"
                    .into(),
            ));
        };
        if constant_time_eq(Self::presented(headers).as_bytes(), master.as_bytes()) {
            Ok(())
        } else {
            Err(Self::unauthorized(
                "Authentication Error: this route needs the master key".into(),
            ))
        }
    }

    /// The calling virtual key (`None` for the master key); other callers are refused.
    pub(crate) async fn caller_key(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Key>>, ApiError> {
        match self.authenticate(headers).await? {
            Caller::Key(k) => Ok(Some(k)),
            Caller::Master => Ok(None),
            Caller::Open | Caller::User(_) => self.admin(headers).map(|()| None),
        }
    }

    fn refused(&self, reason: &str) {
        self.0
            .metrics
            .refused
            .get_or_create(&label("reason", reason))
            .inc();
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
        self.0
            .metrics
            .upstream_errors
            .get_or_create(&label("deployment", id))
            .inc();
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
            self.0
                .metrics
                .cooldowns
                .get_or_create(&label("deployment", id))
                .inc();
            tracing::warn!(
                deployment = id,
                seconds = cool,
                "deployment cooling down after repeated failures"
            );
        }
    }

    /// Deployments of `group` in the order they are tried: a weighted draw first, then the
    /// others by weight; the routing strategy then sorts them (stable, so the draw breaks ties).
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
        let strategy = self.0.config.routing_strategy;
        if strategy == RoutingStrategy::SimpleShuffle {
            return out;
        }
        let stats = self.0.stats.lock().map(|m| m.clone()).unwrap_or_default();
        let minute = now_ms().div_euclid(60_000);
        let get = |d: &Deployment| stats.get(&d.id).cloned().unwrap_or_default();
        match strategy {
            RoutingStrategy::LeastBusy => out.sort_by_key(|d| get(d).in_flight),
            RoutingStrategy::LatencyBased => {
                // Never-called deployments first (so each gets measured), then the fastest.
                out.sort_by(|a, b| {
                    let (x, y) = (get(a).latency_ms, get(b).latency_ms);
                    x.unwrap_or(-1.0).total_cmp(&y.unwrap_or(-1.0))
                });
            }
            RoutingStrategy::CostBased => {
                let price = |d: &Deployment| {
                    self.0
                        .prices
                        .get(&d.id)
                        .copied()
                        .flatten()
                        .map_or(0.0, |p| p.input + p.output)
                };
                out.sort_by(|a, b| price(a).total_cmp(&price(b)));
            }
            RoutingStrategy::UsageBased => {
                // The share of its rpm/tpm a deployment used this minute; full ones go last.
                let used = |d: &Deployment| {
                    let s = get(d);
                    let (r, t) = if s.minute == minute {
                        (s.requests, s.tokens)
                    } else {
                        (0, 0)
                    };
                    let share_r = d.rpm.map_or(0.0, |l| r as f64 / l.max(1) as f64);
                    let share_t = d.tpm.map_or(0.0, |l| t as f64 / l.max(1) as f64);
                    share_r.max(share_t)
                };
                out.sort_by(|a, b| used(a).total_cmp(&used(b)));
            }
            RoutingStrategy::SimpleShuffle => {}
        }
        out
    }

    fn enter(&self, id: &str, tokens: u64) -> InFlight<'_> {
        if let Ok(mut m) = self.0.stats.lock() {
            let s = m.entry(id.to_string()).or_default();
            s.in_flight += 1;
            let minute = now_ms().div_euclid(60_000);
            if s.minute != minute {
                s.minute = minute;
                s.requests = 0;
                s.tokens = 0;
            }
            s.requests += 1;
            s.tokens += tokens;
        }
        InFlight {
            gateway: self,
            id: id.to_string(),
        }
    }

    fn observe_latency(&self, id: &str, ms: f64) {
        if let Ok(mut m) = self.0.stats.lock() {
            let s = m.entry(id.to_string()).or_default();
            s.latency_ms = Some(match s.latency_ms {
                Some(l) => 0.7 * l + 0.3 * ms,
                None => ms,
            });
        }
    }

    async fn attempt(
        &self,
        d: &Deployment,
        path: &str,
        mut body: Value,
        stream: bool,
        limit: Option<Duration>,
    ) -> Result<(Answer, f64), Failure> {
        body["model"] = json!(d.model);
        if stream {
            // Usage is always asked for, so a stream is billed even when the client did not
            // ask (the usage chunk is then kept from the client).
            body["stream_options"] = json!({"include_usage": true});
        }
        let adapter = crate::providers::of(&d.provider);
        let out = adapter.prepare(d, path, &body, stream).map_err(
            |crate::providers::Unsupported(m)| {
                Failure::Final(
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "unsupported_by_provider",
                        format!("deployment '{}' ({}): {m}", d.id, d.provider.name()),
                    )
                    .into_response(),
                )
            },
        )?;
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
            .post(&out.url)
            .timeout(Duration::from_secs_f64(timeout))
            .header(header::CONTENT_TYPE, "application/json")
            .body(out.body);
        for (name, value) in out.headers {
            req = req.header(name, value);
        }
        let started = Instant::now();
        // Within a group's `fallback_after`: the answer's headers (a stream's first bytes) and a
        // whole answer's body must arrive in the time left.
        let limit = limit.unwrap_or(Duration::MAX);
        let cut = || Failure::Retryable(format!("{}: fallback_after reached", d.id), None);
        let resp = match tokio::time::timeout(limit, req.send()).await {
            Ok(r) => r.map_err(|e| Failure::Retryable(format!("{}: {e}", d.id), None))?,
            Err(_) => return Err(cut()),
        };
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
        if status.is_success() && adapter.is_stream(&content_type) {
            let upstream_ms = started.elapsed().as_secs_f64() * 1000.0;
            self.observe_latency(&d.id, upstream_ms);
            let raw = resp
                .bytes_stream()
                .map(|r| r.map_err(|e| e.to_string()))
                .boxed();
            return Ok((Answer::Stream(adapter.stream(d, raw)), upstream_ms));
        }
        let left = limit.saturating_sub(started.elapsed());
        let bytes = match tokio::time::timeout(left, resp.bytes()).await {
            Ok(b) => b.map_err(|e| Failure::Retryable(format!("{}: {e}", d.id), None))?,
            Err(_) => return Err(cut()),
        };
        let upstream_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status.is_success() {
            self.observe_latency(&d.id, upstream_ms);
            let bytes = adapter.answer(d, path, &body, bytes).map_err(|why| {
                Failure::Retryable(
                    format!("{}: {why}", d.id),
                    Some(
                        ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "api_error",
                            "bad_upstream_answer",
                            format!("deployment '{}' answered badly: {why}", d.id),
                        )
                        .into_response(),
                    ),
                )
            })?;
            return Ok((Answer::Json(status, bytes), upstream_ms));
        }
        let bytes = adapter.error(status, bytes);
        let mut out = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .unwrap_or_default();
        if let Some(ra) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            out.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        // 529 is Anthropic's "overloaded": a server error like the 5xx it is.
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Failure::Retryable(
                format!("{} answered {}", d.id, status.as_u16()),
                Some(out),
            ));
        }
        Err(Failure::Final(out))
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
        if !body.is_object() {
            return Err(ApiError::bad(
                "the request body must be a JSON object".into(),
            ));
        }
        self.call_json(path, headers, body).await
    }

    /// Puts the registered prompt `uri` into a chat request (see [`crate::prompts`]).
    async fn render_prompt(&self, path: &str, uri: &str, body: &mut Value) -> Result<(), ApiError> {
        if path != "chat/completions" {
            return Err(ApiError::bad(format!(
                "\"prompt_id\" works with /v1/chat/completions, not /v1/{path}"
            )));
        }
        let Some(source) = self.0.prompts.get() else {
            return Err(ApiError::bad(
                "\"prompt_id\" needs the prompt registry: run the gateway in loopml server                  (--gateway-config)"
                    .into(),
            ));
        };
        let p = source.resolve(uri.to_string()).await.map_err(|why| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "prompt_not_found",
                format!("prompt_id '{uri}': {why}"),
            )
        })?;
        crate::prompts::apply(body, &p)
            .map_err(|why| ApiError::bad(format!("prompt_id '{uri}': {why}")))
    }

    /// Whether `caller` may call model group `model`.
    fn may_use(&self, caller: &Caller, model: &str) -> Result<(), ApiError> {
        let Caller::Key(k) = caller else {
            return Ok(());
        };
        let allowed = |models: &[String]| {
            models.is_empty()
                || models
                    .iter()
                    .any(|m| m == model || m == "all-proxy-models" || m == "*")
        };
        let deny = |who: &str, code: &'static str, models: &[String]| {
            self.refused("model");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                code,
                format!(
                    "{who} not allowed to access model. This {} can only access \
                     models={models:?}. Tried to access {model}",
                    who.trim_start_matches("This ").to_lowercase()
                ),
            )
        };
        if !allowed(&k.models) {
            return Err(deny("key", "key_model_access_denied", &k.models));
        }
        if let Some(t) = k.team_id.as_deref().and_then(|t| self.0.directory.team(t))
            && !allowed(&t.models)
        {
            return Err(deny("team", "team_model_access_denied", &t.models));
        }
        if let Some(u) = k.user_id.as_deref().and_then(|u| self.0.directory.user(u))
            && !allowed(&u.models)
        {
            return Err(deny("user", "user_model_access_denied", &u.models));
        }
        Ok(())
    }

    /// The answer to a refused admission, in LiteLLM's and OpenAI's words.
    fn refusal(&self, r: Refusal) -> ApiError {
        let who = |id: &str| {
            let (kind, rest) = id.split_once(':').unwrap_or(("key", id));
            match kind {
                "key" => self
                    .0
                    .directory
                    .keys_name(rest)
                    .map_or_else(|| "key".to_string(), |n| format!("key {n}")),
                other => format!("{other} {rest}"),
            }
        };
        match r {
            Refusal::Budget { id, spend, max } => {
                self.refused("budget");
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "budget_exceeded",
                    "budget_exceeded",
                    format!(
                        "Budget has been exceeded! {}: Current cost: {spend}, Max budget: {max}",
                        who(&id)
                    ),
                )
            }
            Refusal::Rpm {
                id,
                limit,
                reset_ms,
            } => {
                self.refused("rpm");
                let secs = (reset_ms as f64 / 1000.0).ceil().max(1.0) as u64;
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    format!(
                        "Rate limit reached for {}: {limit} requests per minute; retry in {secs} s",
                        who(&id)
                    ),
                )
                .with_header("retry-after", secs.to_string())
                .with_header("x-ratelimit-limit-requests", limit.to_string())
                .with_header("x-ratelimit-remaining-requests", "0".into())
                .with_header("x-ratelimit-reset-requests", format!("{secs}s"))
            }
            Refusal::Tpm {
                id,
                limit,
                reset_ms,
                too_large,
            } => {
                self.refused("tpm");
                let secs = (reset_ms as f64 / 1000.0).ceil().max(1.0) as u64;
                let message = if too_large {
                    format!(
                        "Request too large for {}: it needs more than its limit of {limit} \
                         tokens per minute; send a shorter request or a lower max_tokens",
                        who(&id)
                    )
                } else {
                    format!(
                        "Rate limit reached for {}: {limit} tokens per minute; retry in {secs} s",
                        who(&id)
                    )
                };
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    message,
                )
                .with_header("retry-after", secs.to_string())
                .with_header("x-ratelimit-limit-tokens", limit.to_string())
                .with_header("x-ratelimit-remaining-tokens", "0".into())
                .with_header("x-ratelimit-reset-tokens", format!("{secs}s"))
            }
            Refusal::Parallel { id, limit } => {
                self.refused("parallel");
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    format!(
                        "Max parallel request limit reached for {}: {limit} at once",
                        who(&id)
                    ),
                )
                .with_header("retry-after", "1".into())
            }
        }
    }

    /// [`Gateway::call`] with the OpenAI request already parsed (other inbound protocols
    /// translate into it).
    pub(crate) async fn call_json(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Value,
    ) -> Result<Response, ApiError> {
        let caller = self.authenticate(&headers).await?;
        self.call_as(caller, path, headers, body).await
    }

    /// [`Self::call_json`] for a caller already known.
    pub(crate) async fn call_as(
        &self,
        caller: Caller,
        path: &str,
        headers: HeaderMap,
        mut body: Value,
    ) -> Result<Response, ApiError> {
        let started = Instant::now();
        let start_ms = now_ms();
        if let Some(uri) = body
            .get("prompt_id")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            self.render_prompt(path, &uri, &mut body).await?;
        }
        let model = body["model"]
            .as_str()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad("\"model\" is required".into()))?
            .to_string();
        let stream = body["stream"].as_bool().unwrap_or(false);
        let client_wants_usage = body["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
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
        self.may_use(&caller, &model)?;
        let mut groups = vec![model.clone()];
        if let Some((_, f)) = self.0.config.fallbacks.iter().find(|(g, _)| g == &model) {
            groups.extend(f.iter().cloned());
        }

        // Admission: reserve the estimate on the key, its team and its user.
        let est = self.estimate(path, &body, &groups);
        let key = match &caller {
            Caller::Key(k) => Some(k.clone()),
            _ => None,
        };
        let entities = key
            .as_ref()
            .map(|k| self.0.directory.entities(k))
            .unwrap_or_default();
        let grant = if entities.is_empty() {
            None
        } else {
            let timeout_ms = (self.0.config.timeout.unwrap_or(600.0) * 1000.0) as i64;
            match self
                .0
                .ledger
                .reserve(
                    &entities,
                    est.cost,
                    est.tokens,
                    start_ms,
                    start_ms + timeout_ms + 60_000,
                )
                .await
            {
                Ok(g) => {
                    for (id, at) in &g.resets {
                        self.0.spend.reset(id, *at);
                    }
                    Some(g)
                }
                Err(r) => return Err(self.refusal(r)),
            }
        };
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let store_bodies = self.0.config.store_prompts_in_spend_logs;
        let mut settle = Settlement {
            gateway: self.clone(),
            grant,
            price: None,
            est_prompt: est.prompt,
            entry: Some(LogEntry {
                request_id,
                api_key: key.as_ref().map(|k| k.token.clone()).unwrap_or_default(),
                key_alias: key.as_ref().and_then(|k| k.key_alias.clone()),
                user_id: key
                    .as_ref()
                    .and_then(|k| k.user_id.clone())
                    .or(match &caller {
                        Caller::User(u) => Some(u.clone()),
                        _ => None,
                    }),
                team_id: key.as_ref().and_then(|k| k.team_id.clone()),
                end_user: body["user"].as_str().map(str::to_string),
                call_type: path.to_string(),
                model_group: model.clone(),
                stream,
                start_ms,
                request_body: store_bodies.then(|| crate::spend::redact(&body)),
                status: "failure",
                ..LogEntry::default()
            }),
            started,
            upstream_ms: 0.0,
        };
        self.0.metrics.in_flight.inc();
        let _gauge = Gauge(self);

        let retries = self.0.config.num_retries.unwrap_or(2) as usize;
        let fallback_after = Duration::from_secs_f64(
            self.0
                .config
                .fallback_after
                .unwrap_or(DEFAULT_FALLBACK_AFTER_S),
        );
        let mut last: Option<(String, Option<Response>)> = None;
        let mut soonest: Option<Duration> = None;
        for (gi, g) in groups.iter().enumerate() {
            let now = Instant::now();
            // With a fallback still to try, this group's time is capped.
            let cap = (gi + 1 < groups.len()).then_some(now + fallback_after);
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
                let left = cap.map(|c| c.saturating_duration_since(Instant::now()));
                if left.is_some_and(|l| l.is_zero()) {
                    tracing::warn!(model = %g, "fallback_after reached: trying the fallbacks");
                    break;
                }
                let _busy = self.enter(&d.id, est.tokens);
                match self.attempt(d, path, body.clone(), stream, left).await {
                    Ok((answer, upstream_ms)) => {
                        settle.upstream_ms = upstream_ms;
                        settle.price = self.0.prices.get(&d.id).copied().flatten();
                        if let Some(e) = settle.entry.as_mut() {
                            e.deployment = Some(d.id.clone());
                            e.model = Some(d.model.clone());
                        }
                        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
                        let overhead = (total_ms - upstream_ms).max(0.0);
                        let standing = settle.grant.as_ref().map(|g| g.standing);
                        let mut resp = match answer {
                            Answer::Json(status, bytes) => {
                                let usage = usage_of(&bytes);
                                let cost = settle.finish(
                                    usage,
                                    0,
                                    status.as_u16(),
                                    None,
                                    store_bodies.then(|| {
                                        match serde_json::from_slice::<Value>(&bytes) {
                                            Ok(v) => crate::spend::redact(&v),
                                            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
                                        }
                                    }),
                                );
                                let mut r = Response::builder()
                                    .status(status)
                                    .header(header::CONTENT_TYPE, "application/json")
                                    .body(Body::from(bytes))
                                    .unwrap_or_default();
                                if let Ok(v) = HeaderValue::from_str(&format!("{cost}")) {
                                    r.headers_mut().insert("x-litellm-response-cost", v);
                                }
                                r
                            }
                            Answer::Stream(upstream) => {
                                let metered = Metered {
                                    inner: Some(upstream),
                                    scan: Scanner {
                                        strip_usage: !client_wants_usage,
                                        ..Scanner::default()
                                    },
                                    settle: Some(std::mem::replace(
                                        &mut settle,
                                        Settlement::spent(self),
                                    )),
                                };
                                Response::builder()
                                    .status(StatusCode::OK)
                                    .header(header::CONTENT_TYPE, "text/event-stream")
                                    .header(header::CACHE_CONTROL, "no-cache")
                                    .body(Body::from_stream(metered))
                                    .unwrap_or_default()
                            }
                        };
                        self.0.metrics.overhead.observe(overhead / 1000.0);
                        self.0
                            .metrics
                            .latency
                            .get_or_create(&label("model_group", &model))
                            .observe(total_ms / 1000.0);
                        let h = resp.headers_mut();
                        let mut put = |k: &'static str, v: String| {
                            if let Ok(v) = HeaderValue::from_str(&v) {
                                h.insert(k, v);
                            }
                        };
                        put("x-loopml-deployment", d.id.clone());
                        put("x-loopml-model-group", g.clone());
                        put("x-loopml-overhead-ms", format!("{overhead:.3}"));
                        put("x-litellm-overhead-duration-ms", format!("{overhead:.3}"));
                        if let Some(s) = standing {
                            let reset = format!("{}s", (s.reset_ms as f64 / 1000.0).ceil() as u64);
                            if let Some((limit, left)) = s.requests {
                                put("x-ratelimit-limit-requests", limit.to_string());
                                put("x-ratelimit-remaining-requests", left.to_string());
                                put("x-ratelimit-reset-requests", reset.clone());
                            }
                            if let Some((limit, left)) = s.tokens {
                                put("x-ratelimit-limit-tokens", limit.to_string());
                                put("x-ratelimit-remaining-tokens", left.to_string());
                                put("x-ratelimit-reset-tokens", reset);
                            }
                        }
                        return Ok(resp);
                    }
                    Err(Failure::Final(resp)) => {
                        settle.fail(resp.status().as_u16(), "the upstream refused the request");
                        return Ok(resp);
                    }
                    Err(Failure::Retryable(why, resp)) => {
                        tracing::warn!(model = %g, deployment = %d.id, reason = %why, "upstream attempt failed");
                        self.failed(&d.id);
                        last = Some((why, resp));
                    }
                }
            }
        }
        match last {
            Some((why, Some(resp))) => {
                settle.fail(resp.status().as_u16(), &why);
                Ok(resp)
            }
            Some((why, None)) => {
                settle.fail(502, &why);
                Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "upstream_unavailable",
                    format!("no deployment of `{model}` (or its fallbacks) answered: {why}"),
                ))
            }
            None => {
                // Every deployment is cooling down: a 429 saying when to come back.
                settle.fail(429, "every deployment is cooling down");
                let wait = soonest.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "deployments_cooling_down",
                    format!(
                        "every deployment of `{model}` (and of its fallbacks) is cooling down \
                         after repeated failures; retry in {wait} s"
                    ),
                )
                .with_header("retry-after", wait.to_string()))
            }
        }
    }

    /// What a call is reserved at: its prompt (about four characters a token), its output
    /// limit (`max_completion_tokens`, `max_tokens`, else the model's) times `n`, priced at the
    /// dearest deployment it may reach.
    fn estimate(&self, path: &str, body: &Value, groups: &[String]) -> Estimate {
        let text = match path {
            "embeddings" => text_len(&body["input"]),
            "completions" => text_len(&body["prompt"]),
            _ => text_len(&body["messages"]) + text_len(&body["tools"]) / 2,
        };
        let prompt = (text / 4 + 8) as u64;
        let explicit = body["max_completion_tokens"]
            .as_u64()
            .or(body["max_tokens"].as_u64());
        let n = body["n"].as_u64().unwrap_or(1).clamp(1, 128);
        let mut price = Price::default();
        for g in groups {
            for d in self.group(g) {
                if let Some(p) = self.0.prices.get(&d.id).copied().flatten() {
                    price.input = price.input.max(p.input);
                    price.output = price.output.max(p.output);
                    price.max_output = price.max_output.max(p.max_output);
                }
            }
        }
        let output = if path == "embeddings" {
            0
        } else {
            explicit.unwrap_or(if price.max_output > 0 {
                price.max_output
            } else {
                4096
            }) * n
        };
        Estimate {
            prompt,
            // Tokens per minute count what is known before the call: the prompt and an
            // explicit output limit (a default limit would make every request look huge).
            tokens: prompt + explicit.unwrap_or(0) * n,
            cost: prompt as f64 * price.input + output as f64 * price.output,
        }
    }

    fn model_card(&self, name: &str) -> Value {
        json!({"id": name, "object": "model", "created": 0, "owned_by": "loopml"})
    }
}

/// A call's reservation estimate.
struct Estimate {
    prompt: u64,
    tokens: u64,
    cost: f64,
}

/// Counts a call in flight on the gauge until dropped.
struct Gauge<'a>(&'a Gateway);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.0.metrics.in_flight.dec();
    }
}

/// Characters of text in a JSON value (strings anywhere inside it).
fn text_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_len).sum(),
        Value::Object(o) => o.values().map(text_len).sum(),
        _ => 0,
    }
}

/// The usage of a JSON answer, read from its `usage` object alone (found from the end, so a
/// large answer such as many embeddings is not parsed whole).
fn usage_of(bytes: &[u8]) -> Option<Usage> {
    let at = find_last(bytes, b"\"usage\"")?;
    let rest = &bytes[at + 7..];
    let colon = rest.iter().position(|b| *b == b':')?;
    let mut de = serde_json::Deserializer::from_slice(&rest[colon + 1..]).into_iter::<Value>();
    let v = de.next()?.ok()?;
    Usage::from_json(&v)
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// What a finished call settles: the reservation, the spend log row and the metrics. Dropped
/// unsettled (the client went away mid-call), it bills the prompt's estimate.
struct Settlement {
    gateway: Gateway,
    grant: Option<Grant>,
    price: Option<Price>,
    est_prompt: u64,
    entry: Option<LogEntry>,
    started: Instant,
    upstream_ms: f64,
}

impl Settlement {
    /// One already settled (a placeholder left where a stream took the real one).
    fn spent(g: &Gateway) -> Self {
        Settlement {
            gateway: g.clone(),
            grant: None,
            price: None,
            est_prompt: 0,
            entry: None,
            started: Instant::now(),
            upstream_ms: 0.0,
        }
    }

    fn fail(&mut self, status: u16, why: &str) {
        self.finish(
            Some(Usage::default()),
            0,
            status,
            Some(why.to_string()),
            None,
        );
    }

    /// Settles with the upstream's usage (else an estimate from the prompt and the text
    /// streamed); returns the cost.
    fn finish(
        &mut self,
        usage: Option<Usage>,
        streamed_chars: usize,
        status: u16,
        error: Option<String>,
        response_body: Option<String>,
    ) -> f64 {
        let Some(mut entry) = self.entry.take() else {
            return 0.0;
        };
        let usage = usage.unwrap_or(Usage {
            prompt: self.est_prompt,
            completion: streamed_chars.div_ceil(4) as u64,
            ..Usage::default()
        });
        let cost = usage.cost(self.price.as_ref());
        let g = &self.gateway.0;
        let entities = self
            .grant
            .as_ref()
            .map(|g| g.entities.clone())
            .unwrap_or_default();
        if let Some(grant) = self.grant.take() {
            let tokens = usage.total();
            if grant.shared {
                let gateway = self.gateway.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(h) => {
                        h.spawn(g.tasks.track_future(async move {
                            gateway.0.ledger.settle(&grant, cost, tokens).await;
                        }));
                    }
                    Err(_) => g.ledger.settle_local(&grant, cost, tokens),
                }
            } else {
                g.ledger.settle_local(&grant, cost, tokens);
            }
        }
        let ok = error.is_none() && (200..300).contains(&status);
        let group = label("model_group", &entry.model_group);
        let mut outcome = group.clone();
        outcome.push((
            "status".into(),
            if ok {
                "success".into()
            } else {
                status.to_string()
            },
        ));
        g.metrics.requests.get_or_create(&outcome).inc();
        if usage.total() > 0 {
            for (kind, n) in [
                ("prompt", usage.prompt),
                ("completion", usage.completion),
                ("cached", usage.cached),
            ] {
                let mut l = group.clone();
                l.push(("kind".into(), kind.into()));
                g.metrics.tokens.get_or_create(&l).inc_by(n);
            }
        }
        if cost > 0.0 {
            g.metrics.spend.get_or_create(&group).inc_by(cost);
        }
        let total_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        entry.usage = usage;
        entry.spend = cost;
        entry.end_ms = now_ms();
        entry.latency_ms = total_ms;
        entry.overhead_ms = (total_ms - self.upstream_ms).max(0.0);
        entry.status = if ok { "success" } else { "failure" };
        entry.http_status = status;
        entry.error = error;
        entry.response_body = response_body;
        g.spend.record(entry, &entities);
        cost
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if self.entry.is_some() {
            self.finish(
                None,
                0,
                499,
                Some("the client disconnected before the answer".into()),
                None,
            );
        }
    }
}

/// Reads an OpenAI SSE stream event by event: notes the usage chunk and the text streamed,
/// and keeps the usage chunk from a client that did not ask for it.
#[derive(Default)]
struct Scanner {
    buf: Vec<u8>,
    usage: Option<Usage>,
    chars: usize,
    strip_usage: bool,
    error: Option<String>,
}

impl Scanner {
    /// The complete events in `chunk` (with what was held from before) to send on.
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buf.len());
        let mut start = 0;
        while let Some((len, sep)) = event_end(&buf[start..]) {
            if self.keep(&buf[start..start + len]) {
                out.extend_from_slice(&buf[start..start + len + sep]);
            }
            start += len + sep;
        }
        buf.drain(..start);
        self.buf = buf;
        Bytes::from(out)
    }

    /// Inspects one event (without its blank line); false: drop it.
    fn keep(&mut self, event: &[u8]) -> bool {
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if !data.starts_with(b"{") {
                continue;
            }
            let has = |n: &[u8]| data.windows(n.len()).any(|w| w == n);
            let usage = has(b"\"usage\"");
            if !(usage || has(b"\"content\"") || has(b"\"error\"")) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            if let Some(m) = v["error"]["message"].as_str() {
                self.error = Some(m.to_string());
            }
            if let Some(choices) = v["choices"].as_array() {
                for c in choices {
                    if let Some(t) = c["delta"]["content"].as_str() {
                        self.chars += t.len();
                    }
                }
            }
            if usage && let Some(u) = Usage::from_json(&v["usage"]) {
                self.usage = Some(u);
                let empty = v["choices"].as_array().is_none_or(Vec::is_empty);
                if self.strip_usage && empty {
                    return false;
                }
            }
        }
        true
    }
}

/// The length of the first event in `buf` and of its blank-line separator.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The upstream stream as the client gets it, settling the call when it ends — or, when the
/// client goes away first, after reading the rest of the upstream's answer in the background
/// (at most [`DRAIN_LIMIT`]) so the call is billed what the upstream really used.
struct Metered {
    inner: Option<crate::providers::ByteStream>,
    scan: Scanner,
    settle: Option<Settlement>,
}

impl Metered {
    fn done(&mut self, status: u16) {
        if let Some(mut s) = self.settle.take() {
            let err = self.scan.error.take();
            s.finish(self.scan.usage, self.scan.chars, status, err, None);
        }
    }
}

impl futures::Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.scan.feed(&chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // Headers are sent: the error can only be the stream's last event.
                    self.inner = None;
                    let message = format!("the upstream stream broke off: {e}");
                    self.scan.error = Some(message.clone());
                    self.done(502);
                    let event = format!(
                        "data: {}\n\n",
                        json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_stream_error"}})
                    );
                    return Poll::Ready(Some(Ok(Bytes::from(event))));
                }
                Poll::Ready(None) => {
                    self.inner = None;
                    let rest = std::mem::take(&mut self.scan.buf);
                    let status = if self.scan.error.is_some() { 502 } else { 200 };
                    self.done(status);
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(rest))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let Some(settle) = self.settle.take() else {
            return;
        };
        let inner = self.inner.take();
        let mut scan = std::mem::take(&mut self.scan);
        match (inner, tokio::runtime::Handle::try_current()) {
            (Some(mut inner), Ok(h)) => {
                let tasks = settle.gateway.0.tasks.clone();
                h.spawn(tasks.track_future(async move {
                    let mut settle = settle;
                    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
                        while let Some(Ok(chunk)) = inner.next().await {
                            let _ = scan.feed(&chunk);
                        }
                    })
                    .await;
                    let why = if drained.is_ok() {
                        "the client disconnected mid-stream; billed what the upstream reported"
                    } else {
                        "the client disconnected mid-stream; the upstream did not finish in time"
                    };
                    settle.finish(scan.usage, scan.chars, 499, Some(why.into()), None);
                }));
            }
            (_, _) => {
                let mut settle = settle;
                settle.finish(
                    scan.usage,
                    scan.chars,
                    499,
                    Some("the client disconnected mid-stream".into()),
                    None,
                );
            }
        }
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
    let caller = g.authenticate(&headers).await?;
    let data: Vec<Value> = g
        .config()
        .model_names()
        .iter()
        .filter(|m| g.may_use_quiet(&caller, m))
        .map(|m| g.model_card(m))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

impl Gateway {
    fn may_use_quiet(&self, caller: &Caller, model: &str) -> bool {
        let Caller::Key(k) = caller else { return true };
        let ok = |m: &[String]| {
            m.is_empty()
                || m.iter()
                    .any(|x| x == model || x == "all-proxy-models" || x == "*")
        };
        ok(&k.models)
            && k.team_id
                .as_deref()
                .and_then(|t| self.0.directory.team(t))
                .is_none_or(|t| ok(&t.models))
    }
}

async fn model(
    State(g): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = g.authenticate(&headers).await?;
    if g.group(&id).is_empty() || !g.may_use_quiet(&caller, &id) {
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

/// `GET /metrics` of the gateway alone (the server folds these into its own scrape).
async fn metrics(State(g): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        g.encode_metrics(),
    )
        .into_response()
}

/// `POST /gateway/mlflow/v1/chat/completions`: the route MLflow's client calls for a judge or
/// scorer whose model is `gateway:/<endpoint>` (the endpoint is a model group here). It needs
/// no key (the tracking server's own auth guards it); a virtual key sent with it is used and
/// metered as usual. Unknown endpoints answer MLflow's gateway error shape.
async fn mlflow_gateway(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let detail = |status: StatusCode, code: &str, message: String| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"detail": {"error_code": code, "message": message}}).to_string(),
        )
            .into_response()
    };
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return detail(
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETER_VALUE",
                "the body must be an OpenAI chat completion request (a JSON object)".into(),
            );
        }
    };
    let endpoint = v["model"].as_str().unwrap_or("").to_string();
    if g.group(&endpoint).is_empty() {
        return detail(
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
            format!(
                "GatewayEndpoint not found (name='{endpoint}'); the gateway's endpoints are {}",
                g.config().model_names().join(", ")
            ),
        );
    }
    let caller = if Gateway::presented(&headers).is_empty()
        && g.principal(&headers).is_none()
        && !g.requires_auth()
    {
        Caller::Open
    } else {
        match g.authenticate(&headers).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        }
    };
    if v["user"].is_null()
        && let Some(who) = headers
            .get("x-mlflow-gateway-caller")
            .and_then(|h| h.to_str().ok())
    {
        v["user"] = json!(format!("mlflow-{who}"));
    }
    match g.call_as(caller, "chat/completions", headers, v).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Largest request body taken: long contexts and base64 images exceed axum's 2 MB default.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The gateway's routes: `/v1/…`, `/chat/completions`-style aliases without `/v1` (as
/// LiteLLM serves them), and LiteLLM's key, team, user and spend API.
pub fn router(g: Gateway) -> Router {
    use crate::keys::api as k;
    use crate::spend::api as s;
    let mgmt = Router::new()
        .route("/key/generate", post(k::generate))
        .route("/key/update", post(k::update))
        .route("/key/delete", post(k::delete))
        .route("/key/info", get(k::info))
        .route("/key/list", get(k::list))
        .route("/key/block", post(k::block))
        .route("/key/unblock", post(k::unblock))
        .route("/team/new", post(k::team_new))
        .route("/team/update", post(k::team_update))
        .route("/team/delete", post(k::team_delete))
        .route("/team/info", get(k::team_info))
        .route("/team/list", get(k::team_list))
        .route("/user/new", post(k::user_new))
        .route("/user/update", post(k::user_update))
        .route("/user/delete", post(k::user_delete))
        .route("/user/info", get(k::user_info))
        .route("/user/list", get(k::user_list))
        .route("/spend/logs", get(s::logs))
        .route("/global/spend/report", get(s::report))
        .route("/global/spend", get(s::total));
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(crate::anthropic::messages))
        .route("/chat/completions", post(chat))
        .route("/embeddings", post(embeddings))
        .route("/gateway/mlflow/v1/chat/completions", post(mlflow_gateway))
        .merge(mgmt)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(g)
}

/// `/metrics` for the gateway running alone.
pub fn metrics_router(g: Gateway) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(g)
}
