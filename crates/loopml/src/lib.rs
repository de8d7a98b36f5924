//! The `loopml` binary's library half: configuration (flags > `LOOPML_*` env > `loopml.toml` >
//! defaults) and [`build_app`], which opens the store, builds the domain services and merges
//! their routers. `main.rs`, the end-to-end tests and embedded uses all go through it.

pub mod app;
pub mod client;
mod request_id;
pub mod serve;

pub use app::{App, Background, Lifecycle, serve, serve_gateway, serve_models};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use loopml_store::{ArtifactStore, Database, DatabaseConfig, Durability};
use serde::Deserialize;

/// Settings of `loopml server`, as they may appear in `loopml.toml` under `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFileConfig {
    /// Address to bind.
    pub host: Option<String>,
    /// Port to bind.
    pub port: Option<u16>,
    /// Folder holding the metadata database and artifacts.
    pub data_dir: Option<PathBuf>,
    /// Metadata database URL (`postgres://…` or `sqlite:///…`); default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Most database connections (PostgreSQL) / idle readers (SQLite).
    pub database_pool_size: Option<usize>,
    /// Commit durability: "normal" or "full".
    pub durability: Option<Durability>,
    /// Log filter (e.g. "info", "loopml=debug").
    pub log_level: Option<String>,
    /// Seconds `/ready` answers 503 on SIGTERM before the listener closes.
    pub shutdown_delay: Option<f64>,
    /// Seconds a client may take to send a request's headers, or between two body chunks.
    pub client_timeout: Option<f64>,
    /// Where artifacts live: a folder, or `s3://bucket/prefix`, `gs://…`, `az://…`.
    pub artifacts_destination: Option<String>,
    /// Hand clients download URLs signed for the bucket itself.
    pub artifacts_direct_downloads: Option<bool>,
    /// Redis for change notes between replicas (`redis://host:port`).
    pub redis_url: Option<String>,
    /// The LLM gateway's config (LiteLLM's proxy `config.yaml`); set: `/v1/…` is served.
    pub gateway_config: Option<PathBuf>,
    /// Require a login (MLflow's basic-auth app); the admin's password comes from
    /// `MLFLOW_AUTH_ADMIN_PASSWORD`.
    pub auth: Option<bool>,
    /// What users may do where no grant says otherwise: READ (MLflow's default), USE, EDIT,
    /// MANAGE or NO_PERMISSIONS.
    pub auth_default_permission: Option<String>,
    /// Host names served besides localhost and private addresses (`*.example.com`, `*` for
    /// any): the DNS-rebinding check.
    pub allowed_hosts: Option<String>,
    /// Addresses webhooks and alert receivers may reach although loopback, link-local or
    /// metadata (`127.0.0.1`, `10.0.0.0/8`, `hooks.internal`, `*.localhost`, `*`).
    pub outbound_allow: Option<String>,
}

/// The whole `loopml.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]` table.
    #[serde(default)]
    pub server: ServerFileConfig,
}

impl FileConfig {
    /// Reads a config file; a missing default file is an empty config.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("loopml.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display())),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }
}

/// Resolved settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Metadata database URL; `None` is the SQLite file under the data dir.
    pub database_url: Option<String>,
    /// Database pool size; `None` is the backend's default.
    pub database_pool_size: Option<usize>,
    /// Commit durability.
    pub durability: Durability,
    /// Log filter.
    pub log_level: String,
    /// ONNX models to serve from the start (`--model NAME=PATH`).
    pub models: Vec<ModelSpec>,
    /// ONNX Runtime library (`--ort-lib`; else `LOOPML_ORT_LIB` or scripts/setup-ort.sh's copy).
    pub ort_lib: Option<PathBuf>,
    /// Dynamic batching of the models given with `--model`.
    pub batching: loopml_serving::batcher::BatchConfig,
    /// Deployment files to serve (`--deployment FILE.yaml`).
    pub deployments: Vec<PathBuf>,
    /// Whether requests go to the inference log (`--no-inference-log` turns it off).
    pub inference_log: bool,
    /// On SIGTERM, how long `/ready` answers 503 while requests are still served, before the
    /// listener closes (lets a load balancer without a preStop hook stop routing here first).
    pub shutdown_delay: std::time::Duration,
    /// How long a client may take to send a request's headers (an idle keep-alive connection
    /// is closed after it too), or between two chunks of a body; slower clients are cut off.
    pub client_timeout: std::time::Duration,
    /// Artifact destination; `None` is the `artifacts/` folder under the data dir.
    pub artifacts_destination: Option<String>,
    /// Whether presigned download URLs point straight at the bucket (else at this server).
    pub artifacts_direct_downloads: bool,
    /// Redis that carries change notes between replicas; `None`: replicas re-read the
    /// database on a timer instead.
    pub redis_url: Option<String>,
    /// The LLM gateway's config (LiteLLM's proxy `config.yaml`); `None`: no gateway.
    pub gateway_config: Option<PathBuf>,
    /// Authentication (`--app-name basic-auth` or `--auth`); `None`: off (the embedded,
    /// single-user default).
    pub auth: Option<AuthSettings>,
    /// `Host` names served besides localhost and private addresses (`--allowed-hosts`).
    pub allowed_hosts: Option<String>,
    /// Which refused outbound addresses webhooks may reach anyway (`--outbound-allow`).
    pub outbound_allow: Option<String>,
}

/// How authentication is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The admin's name (`admin`).
    pub admin_username: String,
    /// The default permission.
    pub default_permission: loopml_auth::Permission,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            admin_username: "admin".into(),
            default_permission: loopml_auth::Permission::Read,
        }
    }
}

/// A model to serve: an endpoint name and an ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Endpoint name (`/v2/models/{name}`).
    pub name: String,
    /// The ONNX file, or an MLflow model directory holding one.
    pub path: PathBuf,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(ModelSpec {
                name: name.to_string(),
                path: PathBuf::from(path),
            }),
            _ => Err(format!("expected NAME=PATH, got '{s}'")),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5000,
            data_dir: PathBuf::from("./loopml-data"),
            database_url: None,
            database_pool_size: None,
            durability: Durability::Normal,
            log_level: "info".into(),
            models: Vec::new(),
            ort_lib: None,
            batching: loopml_serving::batcher::BatchConfig::default(),
            deployments: Vec::new(),
            inference_log: true,
            shutdown_delay: std::time::Duration::ZERO,
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            artifacts_destination: None,
            artifacts_direct_downloads: false,
            redis_url: None,
            gateway_config: None,
            auth: None,
            allowed_hosts: None,
            outbound_allow: None,
        }
    }
}

impl ServerConfig {
    /// The `Host` names this server answers (localhost, private addresses, the bound name and
    /// `--allowed-hosts`).
    pub fn allowed_hosts(&self) -> loopml_auth::AllowedHosts {
        loopml_auth::AllowedHosts::parse(self.allowed_hosts.as_deref().unwrap_or(""))
            .with(&self.host)
    }

    /// What server-side requests to user-supplied URLs (webhooks, alert receivers) may
    /// reach: loopback, link-local and metadata addresses are refused unless
    /// `--outbound-allow` names them.
    pub fn outbound_policy(&self) -> anyhow::Result<loopml_store::outbound::OutboundPolicy> {
        loopml_store::outbound::OutboundPolicy::parse(&[self
            .outbound_allow
            .as_deref()
            .unwrap_or("")])
        .context("--outbound-allow")
    }

    /// Path of the SQLite metadata file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("loopml.db")
    }
    /// The metadata database settings: `database_url` when set, else the SQLite file.
    pub fn database_config(&self) -> anyhow::Result<DatabaseConfig> {
        let backend = match &self.database_url {
            Some(url) => loopml_store::Backend::from_url(url)
                .map_err(|e| anyhow::anyhow!("invalid --database-url: {e}"))?,
            None => loopml_store::Backend::Sqlite {
                path: self.database_path(),
            },
        };
        let mut db = DatabaseConfig::new(backend);
        db.durability = self.durability;
        if let Some(n) = self.database_pool_size {
            anyhow::ensure!(n > 0, "--database-pool-size must be at least 1");
            db.max_readers = n;
        }
        Ok(db)
    }
    /// Folder of the local artifact store (when no destination is configured).
    pub fn artifacts_path(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
    /// Where artifacts live, as configured: the destination URL or the local folder.
    pub fn artifacts_location(&self) -> String {
        match &self.artifacts_destination {
            Some(d) => d.clone(),
            None => self.artifacts_path().display().to_string(),
        }
    }
    /// True when the metadata database may be shared with other processes (PostgreSQL).
    pub fn database_is_shared(&self) -> bool {
        self.database_url
            .as_deref()
            .is_some_and(|u| !u.trim_start().to_ascii_lowercase().starts_with("sqlite:"))
    }
    /// The change bus: over Redis when `redis_url` is set, else local only. Must be called
    /// inside the Tokio runtime.
    pub fn change_bus(&self) -> anyhow::Result<loopml_store::ChangeBus> {
        match &self.redis_url {
            Some(url) => Ok(loopml_store::ChangeBus::redis(url)?),
            None => Ok(loopml_store::ChangeBus::local()),
        }
    }
    /// Local copies of registered models read from a remote artifact store, for serving.
    pub fn model_cache_path(&self) -> PathBuf {
        self.data_dir.join("model-cache")
    }
    /// Address to bind.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        let host = if self.host == "localhost" {
            "127.0.0.1"
        } else {
            &self.host
        };
        let ip: std::net::IpAddr = host
            .parse()
            .with_context(|| format!("invalid --host '{}': expected an IP address", self.host))?;
        Ok(SocketAddr::new(ip, self.port))
    }
}

async fn health() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], "OK")
}

/// Readiness: answers 200 only while the metadata database answers and the app is not
/// draining (liveness, `/health`, stays 200 so an orchestrator does not restart a replica whose
/// database is away).
fn ready_route(db: Database, lifecycle: &Lifecycle) -> Router {
    let lifecycle = lifecycle.clone();
    Router::new().route(
        "/ready",
        get(move || {
            let db = db.clone();
            let draining = lifecycle.is_draining();
            async move {
                if draining {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: shutting down".to_string(),
                    );
                }
                match db.ping().await {
                    Ok(()) => (StatusCode::OK, "OK".to_string()),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")),
                }
            }
        }),
    )
}

/// `/version`, as `mlflow server` answers it: the MLflow version whose API this server speaks
/// (plain text). loopml's own version is at `/api/2.0/loopml/version`.
async fn version() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        loopml_tracking::MLFLOW_COMPATIBLE_VERSION,
    )
}

/// `/openapi.json`: the OpenAPI document of the server's REST API (MLflow's, generated from
/// MLflow's protocol buffers by scripts/gen-openapi.py, and loopml's own routes).
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
}

/// `/api/2.0/loopml/version`: loopml's own version and the MLflow version it is compatible with.
async fn loopml_version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mlflow_version": loopml_tracking::MLFLOW_COMPATIBLE_VERSION,
    }))
}

/// No route: a path with repeated slashes (`//model-versions/get-artifact`) is sent on to its
/// merged form with a 308, as mlflow server's router (werkzeug) does; anything else is
/// `ENDPOINT_NOT_FOUND`.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let path = uri.path();
    if path.contains("//") {
        let mut merged = String::with_capacity(path.len());
        for ch in path.chars() {
            if !(ch == '/' && merged.ends_with('/')) {
                merged.push(ch);
            }
        }
        if let Some(q) = uri.query() {
            merged.push('?');
            merged.push_str(q);
        }
        if let Ok(location) = header::HeaderValue::from_str(&merged) {
            return (
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({
            "error_code": "ENDPOINT_NOT_FOUND",
            "message": format!("No endpoint {} on this server", uri.path()),
        })
        .to_string(),
    )
        .into_response()
}

/// What [`build_app`] returns besides the router: the services, for embedding and tests.
#[derive(Debug, Clone)]
pub struct AppHandle {
    /// Tracking service.
    pub tracking: loopml_tracking::TrackingService,
    /// Model registry service.
    pub registry: loopml_registry::RegistryService,
    /// Model serving.
    pub serving: loopml_serving::routes::ServingApi,
    /// Monitors (absent when the inference log is off: they read it).
    pub monitors: Option<loopml_monitor::MonitorService>,
    /// The LLM gateway (with `--gateway-config`).
    pub gateway: Option<loopml_gateway::Gateway>,
    /// Traces.
    pub traces: loopml_traces::TraceService,
}

fn is_registry_uri(p: &std::path::Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("models:/"))
}

/// Loads the configured model files (one session per core each) into a serving repository;
/// `models:/` entries and deployments wait for [`start_serving`]. ONNX Runtime is loaded only
/// when there is a model, so a server without models needs no library. Must run inside the Tokio
/// runtime (the inference log's writer uses it).
pub fn serving_api(
    config: &ServerConfig,
    resolver: Option<std::sync::Arc<dyn loopml_serving::repository::ModelResolver>>,
    db: Database,
    artifacts: ArtifactStore,
) -> anyhow::Result<loopml_serving::routes::ServingApi> {
    let metrics = std::sync::Arc::new(loopml_serving::metrics::Metrics::new());
    let repository =
        loopml_serving::repository::Repository::with_metrics(std::sync::Arc::clone(&metrics));
    if !config.models.is_empty() || !config.deployments.is_empty() || config.ort_lib.is_some() {
        loopml_serving::runtime::environment(config.ort_lib.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let sessions = std::thread::available_parallelism().map_or(1, |n| n.get());
    for m in config.models.iter().filter(|m| !is_registry_uri(&m.path)) {
        let path = loopml_serving::model::onnx_file(&m.path).map_err(|e| anyhow::anyhow!("{e}"))?;
        repository
            .load(&m.name, "1", path, sessions, &config.batching)
            .map_err(|e| anyhow::anyhow!("model '{}': {e}", m.name))?;
        tracing::info!(model = %m.name, path = %m.path.display(), "model loaded");
    }
    let log = if config.inference_log {
        Some(
            loopml_serving::infer_log::InferenceLog::start(
                artifacts,
                loopml_serving::infer_log::LogConfig::default(),
                Some(std::sync::Arc::clone(&metrics)),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        )
    } else {
        None
    };
    loopml_serving::routes::ServingApi::new(repository, resolver, sessions, metrics, Some(db), log)
        .map_err(|e| anyhow::anyhow!("cannot initialise serving: {e}"))
}

/// Loads the configured `models:/…` entries from the registry, the deployments saved in the
/// database and the `--deployment` files (after the app is built).
pub async fn start_serving(
    serving: &loopml_serving::routes::ServingApi,
    config: &ServerConfig,
) -> anyhow::Result<()> {
    for m in config.models.iter().filter(|m| is_registry_uri(&m.path)) {
        let uri = m.path.to_string_lossy();
        let l = serving
            .load_uri(&m.name, &uri, &config.batching)
            .await
            .map_err(|e| anyhow::anyhow!("model '{}' ({uri}): {e}", m.name))?;
        tracing::info!(model = %m.name, %uri, version = %l.version, "model loaded from the registry");
    }
    for problem in serving.restore_deployments().await {
        tracing::warn!(%problem, "a saved deployment could not be restored");
    }
    for file in &config.deployments {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read deployment file {}", file.display()))?;
        let spec = loopml_serving::deployments::DeploymentSpec::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let name = spec.name.clone();
        serving
            .apply(spec, true, file.parent())
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        tracing::info!(deployment = %name, file = %file.display(), "deployment live");
    }
    Ok(())
}

/// Resolves registry URIs to model folders for serving: the folder itself on a local artifact
/// store, else a copy downloaded once into the model cache (a version's files never change).
struct RegistryModels {
    registry: loopml_registry::RegistryService,
    cache: PathBuf,
}

/// Model copies the cache keeps (the most recently used; a replica following an alias fetches
/// a new version each time it moves, and the disk must not fill with the old ones).
const MODEL_CACHE_KEEP: usize = 16;

/// How old an unfinished fetch (a `.name-uuid` folder) must be before it is taken for a crashed
/// one and removed.
const MODEL_CACHE_STALE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes all but the `keep` most recently used model copies under `cache`, and unfinished
/// fetches older than `stale`. A served model is in memory already (ONNX Runtime read its file
/// at load), so removing its copy only means a later reload fetches it again. Returns how many
/// folders went.
fn prune_model_cache(cache: &Path, keep: usize, stale: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut copies = Vec::new();
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        let used = meta.modified().unwrap_or(now);
        if e.file_name().to_string_lossy().starts_with('.') {
            if now.duration_since(used).is_ok_and(|age| age > stale)
                && std::fs::remove_dir_all(&path).is_ok()
            {
                removed += 1;
            }
            continue;
        }
        copies.push((used, path));
    }
    copies.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, path) in copies.into_iter().skip(keep) {
        if std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(folder = %path.display(), "old model copy removed from the cache");
            removed += 1;
        }
    }
    removed
}

/// The cache folder name of a model folder: its path, made one safe file name.
fn cache_name(dir: &loopml_store::ArtifactPath) -> String {
    let name: String = dir
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.len() <= 180 {
        return name;
    }
    // Too long for one file name: keep the tail and a digest of the whole path.
    // FNV-1a: stable across builds, so the cache survives an upgrade.
    let digest = dir
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let digest = format!("{digest:016x}");
    format!("{}-{digest}", &name[name.len() - 140..])
}

impl RegistryModels {
    async fn local_folder(
        &self,
        uri: &str,
        dir: &loopml_store::ArtifactPath,
    ) -> loopml_serving::Result<PathBuf> {
        use loopml_serving::Error as E;
        let artifacts = self.registry.tracking().artifacts();
        if artifacts.is_local() {
            let mlmodel = dir.join(
                &loopml_store::ArtifactPath::parse("MLmodel")
                    .map_err(|e| E::Model(e.to_string()))?,
            );
            let file = artifacts
                .local_file(&mlmodel)
                .map_err(|e| E::Model(format!("{uri}: {e}")))?
                .ok_or_else(|| E::Model(format!("{uri}: the artifact store is not local")))?;
            return file
                .parent()
                .map(std::path::Path::to_path_buf)
                .ok_or_else(|| E::Model(format!("{uri}: no model folder")));
        }
        let target = self.cache.join(cache_name(dir));
        if target.join("MLmodel").is_file() {
            // Used now: the pruning below keeps the most recently used copies.
            let _ = std::fs::File::open(&target)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(target);
        }
        let tmp = self.cache.join(format!(
            ".{}-{}",
            cache_name(dir),
            uuid::Uuid::new_v4().simple()
        ));
        let fetched = artifacts.download_dir(dir, &tmp).await;
        let fetched = match fetched {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return Err(E::Model(format!(
                    "{uri}: cannot fetch the model from {}: {e}",
                    artifacts.describe()
                )));
            }
        };
        if !tmp.join("MLmodel").is_file() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(E::Model(format!(
                "{uri}: the model folder {dir} has no MLmodel file"
            )));
        }
        // Another request may have fetched the same version meanwhile; either copy is whole.
        match tokio::fs::rename(&tmp, &target).await {
            Ok(()) => {
                tracing::info!(%uri, bytes = fetched, folder = %target.display(), "model fetched from the artifact store");
                let cache = self.cache.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    prune_model_cache(&cache, MODEL_CACHE_KEEP, MODEL_CACHE_STALE)
                })
                .await;
            }
            Err(_) if target.join("MLmodel").is_file() => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return Err(E::Model(format!(
                    "{uri}: cannot cache the model in {}: {e}",
                    target.display()
                )));
            }
        }
        Ok(target)
    }
}

impl loopml_serving::repository::ModelResolver for RegistryModels {
    fn resolve<'a>(
        &'a self,
        uri: &'a str,
    ) -> futures::future::BoxFuture<
        'a,
        loopml_serving::Result<loopml_serving::repository::ResolvedModel>,
    > {
        use loopml_serving::Error as E;
        Box::pin(async move {
            let mv = self.registry.resolve_uri(uri).await.map_err(|e| match e {
                loopml_registry::Error::NotFound(m) => E::NotFound(m),
                other => E::InvalidInput(other.to_string()),
            })?;
            let dir = self
                .registry
                .artifact_dir(&mv.storage_location)
                .await
                .map_err(E::Model)?;
            let path = self.local_folder(uri, &dir).await?;
            Ok(loopml_serving::repository::ResolvedModel {
                version: mv.version.to_string(),
                path,
            })
        })
    }
}

/// Every domain's migrations, in the order a server applies them.
pub fn all_migrations() -> [(&'static str, &'static [loopml_store::Migration]); 6] {
    [
        ("store", loopml_store::STORE_MIGRATIONS),
        ("data", loopml_data::versions::MIGRATIONS),
        ("tracking", loopml_tracking::MIGRATIONS),
        ("registry", loopml_registry::MIGRATIONS),
        ("serving", loopml_serving::deployment_store::MIGRATIONS),
        ("monitor", loopml_monitor::service::MIGRATIONS),
    ]
}

/// Applies every domain's pending migrations to `db` (what a server does at start).
pub fn migrate_all(db: &Database) -> anyhow::Result<()> {
    for (domain, migrations) in all_migrations() {
        db.migrate(domain, migrations)
            .with_context(|| format!("cannot migrate the {domain} tables"))?;
    }
    Ok(())
}

fn open_store(config: &ServerConfig) -> anyhow::Result<(Database, ArtifactStore)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let db =
        Database::open(config.database_config()?).context("cannot open the metadata database")?;
    let artifacts = match &config.artifacts_destination {
        Some(dest) => ArtifactStore::open(dest)
            .with_context(|| format!("cannot open the artifact store {dest}"))?,
        None => ArtifactStore::local(config.artifacts_path())
            .context("cannot open the artifact store")?,
    }
    .with_direct_downloads(config.artifacts_direct_downloads);
    Ok((db, artifacts))
}

/// The serving-only app (`loopml serve`): models, deployments, `/v2/...`, `/invocations`,
/// `/ping`, `/health`, `/version`, `/metrics`. On the embedded default the database under the
/// data dir keeps only deployments and the artifact folder the inference log; given the
/// server's `--database-url` (and `--artifacts-destination`), a serving replica also resolves
/// `models:/name@alias` from that registry, fetches the model from the artifact store and
/// follows the alias as it moves (the returned registry, for [`follow_registry`]).
pub fn build_serving_app(
    config: &ServerConfig,
    lifecycle: &Lifecycle,
) -> anyhow::Result<ServingApp> {
    let (db, artifacts) = open_store(config)?;
    let registry = match &config.database_url {
        Some(_) => {
            let tracking = loopml_tracking::TrackingService::new(db.clone(), artifacts.clone())
                .context("cannot initialise tracking")?;
            Some({
                let r = loopml_registry::RegistryService::new(db.clone(), tracking)
                    .context("cannot initialise the model registry")?;
                r.set_outbound_policy(config.outbound_policy()?);
                r
            })
        }
        None => None,
    };
    let resolver = registry.as_ref().map(|r| {
        std::sync::Arc::new(RegistryModels {
            registry: r.clone(),
            cache: config.model_cache_path(),
        }) as std::sync::Arc<dyn loopml_serving::repository::ModelResolver>
    });
    let serving = serving_api(config, resolver, db.clone(), artifacts.clone())?;
    // A --redis-url is checked (and used) even on SQLite, so a typo is never silently ignored.
    if config.database_is_shared() || config.redis_url.is_some() {
        let bus = config.change_bus()?;
        if let Some(r) = &registry {
            r.set_change_bus(bus.clone());
        }
        let _ = serving.bus.set(bus);
    }
    let router = Router::new()
        .route("/health", get(health))
        .merge(ready_route(db, lifecycle))
        .route("/version", get(version))
        .route("/api/2.0/loopml/version", get(loopml_version))
        .merge(loopml_serving::routes::router(serving.clone()))
        .fallback(not_found)
        .layer(request_id::RequestIdLayer);
    Ok(ServingApp {
        router,
        serving,
        registry,
        artifacts,
    })
}

/// What [`build_serving_app`] returns.
pub struct ServingApp {
    /// The serving routes.
    pub router: Router,
    /// Models and deployments.
    pub serving: loopml_serving::routes::ServingApi,
    /// The shared registry, when serving on the server's database.
    pub registry: Option<loopml_registry::RegistryService>,
    /// Where the inference log (and, with a registry, the models) live.
    pub artifacts: ArtifactStore,
}

/// Opens the store under `config.data_dir`, builds every service and merges their routes.
pub fn build_app(
    config: &ServerConfig,
    lifecycle: &Lifecycle,
) -> anyhow::Result<(Router, AppHandle)> {
    let (db, artifacts) = open_store(config)?;
    let datasets = loopml_data::versions::DatasetStore::new(db.clone(), artifacts.clone())
        .context("cannot initialise datasets")?;
    let tracking = loopml_tracking::TrackingService::new(db.clone(), artifacts.clone())
        .context("cannot initialise tracking")?;
    let registry = loopml_registry::RegistryService::new(db.clone(), tracking.clone())
        .context("cannot initialise the model registry")?;
    let outbound = config.outbound_policy()?;
    registry.set_outbound_policy(outbound.clone());
    registry.set_dataset_linker(std::sync::Arc::new(StoredDatasets(datasets.clone())));
    let serving = serving_api(
        config,
        Some(std::sync::Arc::new(RegistryModels {
            registry: registry.clone(),
            cache: config.model_cache_path(),
        })),
        db.clone(),
        artifacts,
    )?;
    let monitors = match &serving.log {
        Some(log) => {
            let m = loopml_monitor::MonitorService::new(
                db,
                loopml_monitor::Evaluator {
                    log: log.clone(),
                    datasets: datasets.clone(),
                    work_dir: config.data_dir.join("monitor"),
                },
            )
            .context("cannot initialise monitors")?;
            m.set_outbound_policy(outbound);
            let source = m.clone();
            serving
                .metrics
                .add_source(std::sync::Arc::new(move || source.encode_metrics()));
            // Scheduled evaluations and alert delivery, until the app stops.
            lifecycle.background.spawn(m.clone().run_background());
            Some(m)
        }
        None => None,
    };
    registry.set_deployment_finder(std::sync::Arc::new(ServedVersions(serving.clone())));
    // A --redis-url is checked (and used) even on SQLite, so a typo is never silently ignored.
    if config.database_is_shared() || config.redis_url.is_some() {
        let bus = config.change_bus()?;
        registry.set_change_bus(bus.clone());
        let _ = serving.bus.set(bus);
    }
    registry
        .start_webhook_delivery()
        .context("cannot start webhook delivery")?;
    let compare_datasets = datasets.clone();
    let retrieval_datasets = datasets.clone();
    let traces =
        loopml_traces::TraceService::new(tracking.clone()).context("cannot initialise traces")?;
    // LLM spans without a cost of their own are priced from the gateway's table.
    traces.set_pricer(std::sync::Arc::new(
        |model: &str, input: u64, output: u64| {
            loopml_gateway::prices::bundled(model)
                .map(|p| input as f64 * p.input + output as f64 * p.output)
        },
    ));
    let router = Router::new()
        .route("/health", get(health))
        .merge(ready_route(tracking.database().clone(), lifecycle))
        .route("/version", get(version))
        .route("/api/2.0/loopml/version", get(loopml_version))
        .route("/openapi.json", get(openapi))
        .merge(loopml_tracking::router(tracking.clone()))
        .merge(loopml_traces::router(traces.clone()))
        .merge(loopml_registry::router(registry.clone()))
        .merge(loopml_data::routes::router(loopml_data::routes::DataApi {
            store: datasets,
            staging: config.data_dir.join("staging"),
        }))
        .merge(loopml_serving::routes::router(serving.clone()))
        .merge(loopml_monitor::compare::router(
            loopml_monitor::compare::CompareApi {
                datasets: compare_datasets,
                work_dir: config.data_dir.join("monitor"),
                serving: serving.clone(),
            },
        ));
    let router = match &monitors {
        Some(m) => router.merge(loopml_monitor::routes::router(m.clone())),
        None => router,
    };
    let gateway = match &config.gateway_config {
        Some(file) => {
            let bus = (config.database_is_shared() || config.redis_url.is_some())
                .then(|| config.change_bus())
                .transpose()?;
            let g = gateway(
                file,
                loopml_gateway::Storage {
                    database: Some(tracking.database().clone()),
                    redis_url: config.redis_url.clone(),
                    bus,
                },
            )?;
            let source = g.clone();
            serving
                .metrics
                .add_source(std::sync::Arc::new(move || source.encode_metrics()));
            g.set_prompts(std::sync::Arc::new(RegistryPrompts(registry.clone())));
            lifecycle.background.spawn(g.clone().run_background());
            Some(g)
        }
        None => None,
    };
    // Retrieval indexes read dataset versions and embed with the gateway's models.
    let router = router.merge(loopml_traces::retrieval::router(
        loopml_traces::retrieval::Retrieval::new(
            std::sync::Arc::new(GatewayEmbedder(gateway.clone())),
            std::sync::Arc::new(DatasetCorpus {
                store: retrieval_datasets,
                staging: config.data_dir.join("staging"),
            }),
            tracking.clone(),
        ),
    ));
    let router = match &gateway {
        Some(g) => router.merge(loopml_gateway::router(g.clone())),
        None => router,
    }
    .fallback(not_found)
    .layer(request_id::RequestIdLayer);
    Ok((
        router,
        AppHandle {
            tracking,
            registry,
            serving,
            monitors,
            gateway,
            traces,
        },
    ))
}

/// Which experiment a run, trace or logged model belongs to, for the auth layer.
struct AuthResources {
    tracking: loopml_tracking::TrackingService,
    traces: loopml_traces::TraceService,
    serving: loopml_serving::routes::ServingApi,
    monitors: Option<loopml_monitor::MonitorService>,
    /// run id → experiment id: a run never changes experiment, so a run's lookup is a table
    /// read once, not on every logged batch (bounded; only runs that exist are kept).
    runs: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

/// Runs whose experiment [`AuthResources`] remembers at most.
const AUTH_RUN_CACHE: usize = 100_000;

impl loopml_auth::Resolver for AuthResources {
    fn run_experiment(
        &self,
        run_id: String,
    ) -> futures::future::BoxFuture<'static, Option<String>> {
        let known = self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&run_id)
            .cloned();
        let t = self.tracking.clone();
        let runs = self.runs.clone();
        Box::pin(async move {
            if known.is_some() {
                return known;
            }
            let e = t.run_experiment_id(run_id.clone()).await.ok()?.to_string();
            let mut m = runs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if m.len() >= AUTH_RUN_CACHE {
                m.clear();
            }
            m.insert(run_id, e.clone());
            Some(e)
        })
    }

    fn experiment_by_name(
        &self,
        name: String,
    ) -> futures::future::BoxFuture<'static, Option<String>> {
        let t = self.tracking.clone();
        Box::pin(async move {
            t.get_experiment_by_name(name)
                .await
                .ok()
                .map(|e| e.id.to_string())
        })
    }

    fn trace_experiment(
        &self,
        trace_id: String,
    ) -> futures::future::BoxFuture<'static, Option<String>> {
        let t = self.traces.clone();
        Box::pin(async move { t.experiment_of(&trace_id).await.ok().map(|e| e.to_string()) })
    }

    fn logged_model_experiment(
        &self,
        model_id: String,
    ) -> futures::future::BoxFuture<'static, Option<String>> {
        let t = self.tracking.clone();
        Box::pin(async move {
            t.get_logged_model(model_id, true)
                .await
                .ok()
                .map(|m| m.experiment_id.to_string())
        })
    }

    fn eval_dataset_experiments(
        &self,
        dataset_id: String,
    ) -> futures::future::BoxFuture<'static, Vec<String>> {
        let t = self.traces.clone();
        Box::pin(async move {
            t.eval_dataset_experiments(dataset_id)
                .await
                .unwrap_or_default()
        })
    }

    fn deployment_models(&self, name: &str) -> Option<Vec<String>> {
        let d = self.serving.deployment(name)?;
        Some(d.spec().variants.iter().map(|v| v.model.clone()).collect())
    }

    fn endpoint_models(&self, endpoint: Option<&str>) -> Option<Vec<String>> {
        let name = match endpoint {
            Some(n) => n.to_string(),
            None => self.serving.single_endpoint().ok()?,
        };
        self.deployment_models(&name)
    }

    fn deployment_body_models(&self, body: &[u8]) -> Option<Vec<String>> {
        let text = std::str::from_utf8(body).ok()?;
        let spec = loopml_serving::deployments::DeploymentSpec::parse(text).ok()?;
        Some(spec.variants.into_iter().map(|v| v.model).collect())
    }

    fn monitor_deployment(
        &self,
        name: String,
    ) -> futures::future::BoxFuture<'static, Option<String>> {
        let m = self.monitors.clone();
        Box::pin(async move { m?.get(&name).await.ok().map(|s| s.deployment) })
    }

    fn monitor_body_deployment(&self, body: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(body).ok()?;
        loopml_monitor::spec::MonitorSpec::parse(text)
            .ok()
            .map(|s| s.deployment)
    }
}

/// How long a client may take to send headers or the next body chunk, by default.
pub const DEFAULT_CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The environment variable holding the admin's password (as MLflow 3.17).
pub const ADMIN_PASSWORD_ENV: &str = "MLFLOW_AUTH_ADMIN_PASSWORD";

/// Refuses to start auth without a strong admin password, naming the setting.
pub fn check_admin_password() -> anyhow::Result<()> {
    let pw = std::env::var(ADMIN_PASSWORD_ENV).unwrap_or_default();
    if pw.is_empty() {
        anyhow::bail!(
            "authentication needs the admin's password: set {ADMIN_PASSWORD_ENV} (at least 12 \
             characters; loopml ships no default)"
        );
    }
    loopml_auth::password::check_policy(&pw)
        .map_err(|e| anyhow::anyhow!("{ADMIN_PASSWORD_ENV} is refused: {e}"))
}

/// Puts the auth layer in front of every route of `router` and adds the auth API: users must
/// log in (HTTP Basic or a bearer token) and each route checks its permission.
pub async fn with_auth(
    router: Router,
    handle: &AppHandle,
    settings: &AuthSettings,
) -> anyhow::Result<Router> {
    let password = std::env::var(ADMIN_PASSWORD_ENV).unwrap_or_default();
    let auth = loopml_auth::AuthService::new(
        handle.tracking.database().clone(),
        loopml_auth::AuthConfig {
            admin_username: settings.admin_username.clone(),
            admin_password: password,
            default_permission: settings.default_permission,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("authentication cannot start: {e}"))?;
    let guard = loopml_auth::Guard {
        auth: auth.clone(),
        resolver: std::sync::Arc::new(AuthResources {
            tracking: handle.tracking.clone(),
            traces: handle.traces.clone(),
            serving: handle.serving.clone(),
            monitors: handle.monitors.clone(),
            runs: std::sync::Arc::default(),
        }),
    };
    if let Some(bus) = handle.serving.bus.get() {
        auth.set_change_bus(bus.clone());
    }
    if let Some(g) = &handle.gateway {
        // No anonymous model calls once users must log in, master key or not.
        g.set_require_auth();
    }
    Ok(router
        .merge(loopml_auth::router(auth))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            loopml_auth::guard,
        )))
}

/// Embeddings for retrieval indexes, from the gateway's embedding models.
struct GatewayEmbedder(Option<loopml_gateway::Gateway>);

impl loopml_traces::retrieval::Embedder for GatewayEmbedder {
    fn embed(
        &self,
        model: String,
        texts: Vec<String>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Vec<f32>>, String>> {
        let g = self.0.clone();
        Box::pin(async move {
            match g {
                Some(g) => g.embed(&model, texts).await,
                None => Err("embeddings need the LLM gateway: start the server with \
                             --gateway-config and an embedding model in its model_list"
                    .into()),
            }
        })
    }
}

/// Text columns of dataset versions, for retrieval indexes and labelled queries.
struct DatasetCorpus {
    store: loopml_data::versions::DatasetStore,
    staging: std::path::PathBuf,
}

impl loopml_traces::retrieval::Corpus for DatasetCorpus {
    fn columns(
        &self,
        dataset: String,
        first: String,
        second: String,
    ) -> futures::future::BoxFuture<'static, Result<Vec<(String, String)>, String>> {
        let (store, staging) = (self.store.clone(), self.staging.clone());
        Box::pin(async move {
            let rows = store
                .text_columns(&dataset, vec![first, second], &staging)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|mut r| {
                    let b = r.pop().unwrap_or_default();
                    let a = r.pop().unwrap_or_default();
                    (a, b)
                })
                .collect())
        })
    }
}

/// The gateway's `prompt_id` references, resolved in the model registry.
struct RegistryPrompts(loopml_registry::RegistryService);

impl loopml_gateway::prompts::Prompts for RegistryPrompts {
    fn resolve(
        &self,
        uri: String,
    ) -> futures::future::BoxFuture<'static, Result<loopml_gateway::prompts::PromptTemplate, String>>
    {
        let registry = self.0.clone();
        Box::pin(async move {
            let rest = uri
                .strip_prefix("prompts:/")
                .unwrap_or(&uri)
                .trim_matches('/');
            let (name, selector) = if let Some((n, alias)) = rest.split_once('@') {
                (n.to_string(), format!("@{alias}"))
            } else if let Some((n, v)) = rest.rsplit_once('/') {
                (n.to_string(), v.to_string())
            } else {
                (rest.to_string(), "latest".to_string())
            };
            let v = registry
                .resolve_selector(&name, &selector)
                .await
                .map_err(|e| e.to_string())?;
            let tag = |k: &str| v.tags.iter().find(|t| t.key == k).map(|t| t.value.clone());
            if tag(loopml_registry::PROMPT_TAG).as_deref() != Some("true") {
                return Err(format!("'{name}' is a model, not a prompt"));
            }
            let text = tag(loopml_registry::PROMPT_TEXT_TAG)
                .ok_or_else(|| format!("prompt '{name}' version {} has no template", v.version))?;
            let template = if tag("_mlflow_prompt_type").as_deref() == Some("chat") {
                serde_json::from_str(&text).map_err(|e| format!("bad chat template: {e}"))?
            } else {
                serde_json::Value::String(text)
            };
            let json = |k: &str| tag(k).and_then(|t| serde_json::from_str(&t).ok());
            Ok(loopml_gateway::prompts::PromptTemplate {
                template,
                model_config: json("_mlflow_prompt_model_config"),
                response_format: json("_mlflow_prompt_response_format"),
            })
        })
    }
}

/// The gateway alone: its `/v1` routes, its key and spend API, `/health`, `/metrics`, and
/// OpenAI-shaped 404s elsewhere. Keys and the spend log live in the configured database (the
/// embedded SQLite file by default), admission counters in Redis with `--redis-url`.
pub fn gateway_app(
    config: &ServerConfig,
    file: &std::path::Path,
    lifecycle: &Lifecycle,
) -> anyhow::Result<(Router, loopml_gateway::Gateway, Database)> {
    async fn no_route(uri: axum::http::Uri) -> impl IntoResponse {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": {
                "message": format!("No route {} on this gateway", uri.path()),
                "type": "invalid_request_error", "param": null, "code": "not_found"}})
            .to_string(),
        )
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let db =
        Database::open(config.database_config()?).context("cannot open the metadata database")?;
    let bus = (config.database_is_shared() || config.redis_url.is_some())
        .then(|| config.change_bus())
        .transpose()?;
    let g = gateway(
        file,
        loopml_gateway::Storage {
            database: Some(db.clone()),
            redis_url: config.redis_url.clone(),
            bus,
        },
    )?;
    lifecycle.background.spawn(g.clone().run_background());
    let router = Router::new()
        .route("/health", get(health))
        .merge(ready_route(db.clone(), lifecycle))
        .merge(loopml_gateway::router(g.clone()))
        .merge(loopml_gateway::metrics_router(g.clone()))
        .fallback(no_route)
        .layer(request_id::RequestIdLayer);
    Ok((router, g, db))
}

/// The LLM gateway from its config file over `storage`; each key of the file loopml does not
/// act on is reported once, by name.
fn gateway(
    file: &std::path::Path,
    storage: loopml_gateway::Storage,
) -> anyhow::Result<loopml_gateway::Gateway> {
    let config = loopml_gateway::GatewayConfig::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    for key in &config.unsupported {
        tracing::warn!(file = %file.display(), key = %key, "gateway config: this key is not supported and has no effect");
    }
    tracing::info!(
        file = %file.display(),
        models = %config.model_names().join(", "),
        deployments = config.deployments.len(),
        keys = if config.master_key.is_some() { "virtual keys on" } else { "open (no master_key)" },
        counters = if storage.redis_url.is_some() { "redis" } else { "this process" },
        "LLM gateway on /v1"
    );
    loopml_gateway::Gateway::with_storage(config, storage).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Starts the pipeline of a monitor alert: a background `loopml_pipelines::run` tracked on this
/// server over its own HTTP address (pipelines are MLflow clients), with the drifted window's
/// dataset version in `LOOPML_WINDOW_DATASET`.
/// How long a pipeline's lease lasts without renewal (renewed every third of it while running).
const PIPELINE_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

struct AlertPipelines {
    server: String,
    /// Where the per-pipeline lease lives: one run of a pipeline file across every replica.
    db: Database,
    /// Pipeline files running now → the alert that started them: one run per pipeline at a time
    /// (two retrains racing would leave the alias on whichever finished last).
    running: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// Where the pipeline runs go: the app's background work (stopped with the app; the lease
    /// then lapses to another replica).
    background: Background,
    /// Where each run's outcome is recorded on the alert that started it.
    monitors: loopml_monitor::MonitorService,
}

/// How a pipeline run ended, in one line for the alert that started it.
fn pipeline_outcome(r: &loopml_pipelines::RunReport) -> String {
    use loopml_pipelines::{Outcome, StepStatus};
    let first = |status: StepStatus| r.steps.iter().find(|s| s.status == status);
    match r.outcome {
        Outcome::Succeeded => "succeeded".to_string(),
        Outcome::Failed => match first(StepStatus::Failed) {
            Some(s) => format!(
                "failed at step `{}`: {}",
                s.name,
                s.message.as_deref().unwrap_or("no message")
            ),
            None => "failed".to_string(),
        },
        Outcome::Rejected => match first(StepStatus::Rejected) {
            Some(s) => format!(
                "rejected by the gate `{}`: {}",
                s.name,
                s.message.as_deref().unwrap_or("no message")
            ),
            None => "rejected by a gate".to_string(),
        },
    }
}

impl loopml_monitor::AlertHandler for AlertPipelines {
    fn start_pipeline(
        &self,
        alert: &loopml_monitor::Alert,
        trigger: &loopml_monitor::spec::PipelineTrigger,
    ) -> loopml_monitor::service::HandlerFuture {
        let server = self.server.clone();
        let alert = alert.clone();
        let trigger = trigger.clone();
        let running = std::sync::Arc::clone(&self.running);
        let db = self.db.clone();
        let background = self.background.clone();
        let monitors = self.monitors.clone();
        Box::pin(async move {
            {
                let mut r = running
                    .lock()
                    .map_err(|_| "pipeline table poisoned".to_string())?;
                if let Some(by) = r.get(&trigger.file) {
                    return Ok(format!(
                        "not started: {} is still running for alert {by}",
                        trigger.file
                    ));
                }
                r.insert(trigger.file.clone(), alert.id);
            }
            let done = |running: &std::sync::Mutex<std::collections::HashMap<String, i64>>,
                        file: &str| {
                if let Ok(mut r) = running.lock() {
                    r.remove(file);
                }
            };
            // Across replicas: the pipeline's lease, renewed while it runs.
            let lease = format!("pipeline:{}", trigger.file);
            match db.try_lease(&lease, PIPELINE_LEASE_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    done(&running, &trigger.file);
                    return Ok(format!(
                        "not started: {} is running on another replica",
                        trigger.file
                    ));
                }
                Err(e) => {
                    done(&running, &trigger.file);
                    return Err(format!("cannot take the pipeline lease: {e}"));
                }
            }
            let path = std::path::PathBuf::from(&trigger.file);
            let pipeline = match loopml_pipelines::Pipeline::load(&path) {
                Ok(p) => p,
                Err(e) => {
                    done(&running, &trigger.file);
                    let _ = db.release_lease(&lease).await;
                    return Err(e.to_string());
                }
            };
            let mut env = vec![
                ("LOOPML_ALERT_ID".to_string(), alert.id.to_string()),
                ("LOOPML_MONITOR".to_string(), alert.monitor.clone()),
            ];
            if let Some(w) = alert.payload["window_dataset"].as_str() {
                env.push(("LOOPML_WINDOW_DATASET".to_string(), w.to_string()));
            }
            let name = pipeline.name.clone();
            let log_name = name.clone();
            let opts = loopml_pipelines::RunOptions {
                tracking_uri: Some(server),
                params: trigger.params.clone(),
                env,
                log: std::sync::Arc::new(move |step: &str, line: &str| {
                    tracing::info!(pipeline = %log_name, step, "{line}");
                }),
                run_name: Some(format!("{name}-alert-{}", alert.id)),
                datasets: alert.payload["window_dataset"]
                    .as_str()
                    .map(|w| vec![(w.to_string(), "window")])
                    .unwrap_or_default(),
                user: Some(format!("loopml (alert {})", alert.id)),
                tags: [
                    ("loopml.alert_id".to_string(), alert.id.to_string()),
                    ("loopml.monitor".to_string(), alert.monitor.clone()),
                    ("loopml.check".to_string(), alert.check.clone()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            };
            let what = format!("started pipeline {name} ({})", path.display());
            // The run outlives the delivery pass; its outcome is in its tracked runs and the log.
            background.spawn(async move {
                let renew = async {
                    loop {
                        tokio::time::sleep(PIPELINE_LEASE_TTL / 3).await;
                        if let Err(e) = db.try_lease(&lease, PIPELINE_LEASE_TTL).await {
                            tracing::warn!(pipeline = %name, error = %e, "cannot renew the pipeline lease");
                        }
                    }
                };
                let outcome = tokio::select! {
                    r = loopml_pipelines::run(&pipeline, &opts) => Some(r),
                    () = renew => None,
                };
                let recorded = match outcome {
                    Some(Ok(r)) => {
                        let what = pipeline_outcome(&r);
                        if r.outcome == loopml_pipelines::Outcome::Succeeded {
                            tracing::info!(pipeline = %name, alert = alert.id, run_id = ?r.run_id, "alert pipeline succeeded");
                        } else {
                            tracing::warn!(pipeline = %name, alert = alert.id, run_id = ?r.run_id, outcome = %what, "alert pipeline did not promote");
                        }
                        Some((r.run_id.clone(), what))
                    }
                    Some(Err(e)) => {
                        tracing::warn!(pipeline = %name, alert = alert.id, error = %e, "alert pipeline failed");
                        Some((None, format!("failed before any step ran: {e}")))
                    }
                    None => None,
                };
                if let Some((run_id, what)) = recorded
                    && let Err(e) = monitors.set_pipeline_outcome(alert.id, run_id, what).await
                {
                    tracing::warn!(pipeline = %name, alert = alert.id, error = %e, "cannot record the pipeline outcome on the alert");
                }
                // The next alert may start it again (here or on any replica).
                done(&running, &trigger.file);
                if let Err(e) = db.release_lease(&lease).await {
                    tracing::warn!(pipeline = %name, error = %e, "cannot release the pipeline lease");
                }
            });
            Ok(what)
        })
    }
}

/// Links the datasets runs logged (MLflow `log_input`) to stored dataset versions, for lineage:
/// the registry asks through its `DatasetLinker` seam, the data crate answers.
struct StoredDatasets(loopml_data::versions::DatasetStore);

impl loopml_registry::lineage::DatasetLinker for StoredDatasets {
    fn link<'a>(
        &'a self,
        name: &'a str,
        digest: &'a str,
        source: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<loopml_registry::lineage::StoredDataset>> {
        Box::pin(async move {
            let (v, how) = self.0.match_logged(name, digest, source).await.ok()??;
            Some(loopml_registry::lineage::StoredDataset {
                reference: v.reference(),
                content_path: format!("/api/2.0/loopml/datasets/{}/content", v.reference()),
                digest: v.digest,
                matched_by: how.to_string(),
                rows: v.rows,
            })
        })
    }
}

/// Answers lineage's "where is this version served": deployments whose variant comes from the
/// registered model and runs that version now, and endpoints loaded from (or following) it.
struct ServedVersions(loopml_serving::routes::ServingApi);

impl loopml_registry::lineage::DeploymentFinder for ServedVersions {
    fn serving(&self, model: &str, version: i64) -> Vec<serde_json::Value> {
        let serving = &self.0;
        let version = version.to_string();
        let runs = |name: &str| {
            serving
                .repository
                .get(name, None)
                .is_ok_and(|l| l.version == version)
        };
        let from = |uri: &str| {
            loopml_serving::routes::registry_target(uri).is_some_and(|(m, _)| m == model)
        };
        let mut out = Vec::new();
        for d in serving.deployment_list() {
            let spec = d.spec();
            for v in &spec.variants {
                if from(&v.model) && runs(&spec.model_name(&v.name)) {
                    out.push(serde_json::json!({
                        "deployment": spec.name,
                        "variant": v.name,
                        "strategy": spec.policy.strategy(),
                        "uri": v.model,
                        "endpoint": format!("/v2/models/{}/infer", spec.name),
                    }));
                }
            }
        }
        for f in serving.followed() {
            if from(&f.uri) && runs(&f.endpoint) && !f.endpoint.contains('.') {
                out.push(serde_json::json!({
                    "deployment": f.endpoint,
                    "variant": "default",
                    "strategy": "single",
                    "uri": f.uri,
                    "endpoint": format!("/v2/models/{}/infer", f.endpoint),
                }));
            }
        }
        out
    }
}

/// Writes a file the user asked for on the command line (temp file, then rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("loopml-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The cache keeps the most recently used copies and drops crashed fetches, nothing else.
    #[test]
    fn model_cache_keeps_the_latest_copies_and_drops_stale_fetches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::time::SystemTime::now() - Duration::from_secs(10_000);
        let touch = |name: &str, at: std::time::SystemTime| {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("MLmodel"), "x").expect("write");
            std::fs::File::open(&p)
                .and_then(|f| f.set_modified(at))
                .expect("mtime");
        };
        for i in 0..5u64 {
            touch(&format!("models_{i}"), base + Duration::from_secs(i * 100));
        }
        touch(".models_9-crashed", base);
        touch(".models_8-fetching", std::time::SystemTime::now());
        std::fs::write(dir.path().join("stray-file"), "x").expect("file");
        assert_eq!(
            prune_model_cache(dir.path(), 3, Duration::from_secs(3600)),
            3
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".models_8-fetching",
                "models_2",
                "models_3",
                "models_4",
                "stray-file"
            ]
        );
        assert_eq!(
            prune_model_cache(&dir.path().join("missing"), 3, Duration::ZERO),
            0
        );
    }
}
