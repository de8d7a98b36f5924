//! One lifecycle for every loopml process: [`App`] is built from the configuration (`loopml
//! server`: every part; `loopml serve`: serving alone), serves on a listener, runs its background
//! work on one task tracker under one cancellation token, and shuts down in order:
//! readiness fails first (for `--shutdown-delay`), the listener closes, in-flight requests
//! finish, background work stops, deployment counters, deployments and the inference log are
//! flushed, leases are given up and SQLite's WAL is checkpointed. `main.rs`, the end-to-end
//! tests and the in-process tests below all go through it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use loopml_serving::routes::ServingApi;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{
    AlertPipelines, ServerConfig, ServingApp, build_app, build_serving_app, start_serving,
};

/// How long background work gets to stop once cancelled before the shutdown goes on without it.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// The background work of one app: every task on one tracker, all stopped by one token.
#[derive(Debug, Clone, Default)]
pub struct Background {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// Runs `work` until it ends or the app stops (it is dropped at its next await then).
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Whether the app has begun stopping its background work.
    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every task and waits for them, at most `grace`; false when some did not stop.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Where an app is in its life: whether it is draining (readiness answers 503 from then on)
/// and its background work.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Background work, stopped at shutdown.
    pub background: Background,
    draining: Arc<AtomicBool>,
}

impl Lifecycle {
    /// Starts draining: `/ready` answers 503 so load balancers stop sending requests here.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the app is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// A composed loopml process: its routes, its services and its background work.
pub struct App {
    router: Router,
    lifecycle: Lifecycle,
    /// Models and deployments (absent for the gateway alone).
    serving: Option<ServingApi>,
    /// The LLM gateway, when configured: its spend log is written at shutdown.
    gateway: Option<loopml_gateway::Gateway>,
    /// The database of the gateway running alone (its WAL is checkpointed at shutdown).
    gateway_db: Option<loopml_store::Database>,
    /// What the start-up log line calls it.
    what: &'static str,
    /// Work that needs the address the listener got (the alert pipelines' server URL).
    on_bound: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("what", &self.what)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl App {
    /// `loopml server`: tracking, registry, datasets, serving and monitors on one store, with
    /// the saved deployments restored and the configured models loaded; background work (monitor
    /// schedule, registry followers, deployment sync and counters) started.
    pub async fn server(config: &ServerConfig) -> anyhow::Result<Self> {
        let lifecycle = Lifecycle::default();
        if config.auth.is_some() {
            crate::check_admin_password()?;
        }
        let (router, handle) = build_app(config, &lifecycle)?;
        let router = match &config.auth {
            Some(a) => crate::with_auth(router, &handle, a).await?,
            None => router,
        };
        handle
            .tracking
            .artifacts()
            .check()
            .await
            .context("the artifact store does not answer")?;
        start_serving(&handle.serving, config).await?;
        let bg = &lifecycle.background;
        bg.spawn(follow_registry(
            handle.registry.clone(),
            handle.serving.clone(),
        ));
        spawn_deployment_work(bg, &handle.serving);
        let monitors = handle.monitors.clone();
        let db = handle.tracking.database().clone();
        let pipelines = bg.clone();
        let on_bound = move |addr: SocketAddr| {
            if let Some(m) = monitors {
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    addr.ip().to_string()
                };
                m.set_alert_handler(Arc::new(AlertPipelines {
                    server: format!("http://{host}:{}", addr.port()),
                    db,
                    running: Arc::default(),
                    background: pipelines,
                    monitors: m.clone(),
                }));
            }
        };
        Ok(Self {
            router,
            lifecycle,
            serving: Some(handle.serving),
            gateway: handle.gateway,
            gateway_db: None,
            what: "loopml server listening",
            on_bound: Some(Box::new(on_bound)),
        })
    }

    /// `loopml serve`: models and deployments alone (a stateless serving replica when given the
    /// server's database).
    pub async fn serving(config: &ServerConfig) -> anyhow::Result<Self> {
        if config.auth.is_some() {
            anyhow::bail!(
                "--auth is not supported by `loopml serve` yet: serve models from `loopml server \
                 --auth` (its /v2 and /invocations routes are admin-only under auth) or put the \
                 serving replicas behind a proxy that authenticates"
            );
        }
        let lifecycle = Lifecycle::default();
        let ServingApp {
            router,
            serving,
            registry,
            artifacts,
        } = build_serving_app(config, &lifecycle)?;
        artifacts
            .check()
            .await
            .context("the artifact store does not answer")?;
        start_serving(&serving, config).await?;
        if let Some(r) = registry {
            lifecycle
                .background
                .spawn(follow_registry(r, serving.clone()));
        }
        spawn_deployment_work(&lifecycle.background, &serving);
        Ok(Self {
            router,
            lifecycle,
            serving: Some(serving),
            gateway: None,
            gateway_db: None,
            what: "loopml serving",
            on_bound: None,
        })
    }

    /// `loopml gateway`: the LLM gateway alone, on LiteLLM's proxy config (`config.gateway_config`).
    pub fn gateway(config: &ServerConfig) -> anyhow::Result<Self> {
        let file = config
            .gateway_config
            .as_deref()
            .context("the gateway needs its config file: loopml gateway --config config.yaml")?;
        let lifecycle = Lifecycle::default();
        let (router, g, db) = crate::gateway_app(config, file, &lifecycle)?;
        Ok(Self {
            router,
            lifecycle,
            serving: None,
            gateway: Some(g),
            gateway_db: Some(db),
            what: "loopml gateway listening",
            on_bound: None,
        })
    }

    /// The composed routes (to drive the app in-process, or serve them elsewhere).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Its lifecycle (draining flag, background work).
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Serves on the configured address until `stop` resolves (a signal, in `main`), then
    /// drains and shuts down.
    pub async fn run(
        mut self,
        config: &ServerConfig,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = config.addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let database = config
            .database_config()
            .map(|d| d.backend.describe())
            .unwrap_or_default();
        let local = listener.local_addr()?;
        // One machine-readable line on stdout (the log goes to stderr), so a script that starts
        // the server with `--port 0` learns where it listens.
        {
            use std::io::Write;
            let host = if local.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else if local.is_ipv6() {
                format!("[{}]", local.ip())
            } else {
                local.ip().to_string()
            };
            let line = serde_json::json!({
                "event": "listening",
                "address": local.to_string(),
                "url": format!("http://{host}:{}", local.port()),
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        tracing::info!(
            address = %local,
            data_dir = %config.data_dir.display(),
            database = %database,
            artifacts = %config.artifacts_location(),
            "{}; set MLFLOW_TRACKING_URI=http://{local}",
            self.what
        );
        // Host/Origin checks and security headers in front of everything (not on the in-process
        // router tests drive).
        self.router = self.router.layer(axum::middleware::from_fn_with_state(
            Arc::new(config.allowed_hosts()),
            loopml_auth::harden,
        ));
        let limits = crate::serve::Limits {
            header_read: config.client_timeout,
            body_idle: config.client_timeout,
        };
        self.run_on(listener, config.shutdown_delay, limits, stop)
            .await
    }

    /// Serves on `listener` until `stop` resolves; then readiness fails for `delay` (requests
    /// are still served, so a load balancer can stop routing here), the listener closes,
    /// in-flight requests finish and the app shuts down ([`Self::shutdown`]).
    pub async fn run_on(
        mut self,
        listener: tokio::net::TcpListener,
        delay: Duration,
        limits: crate::serve::Limits,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if let Some(f) = self.on_bound.take() {
            f(listener.local_addr()?);
        }
        let lifecycle = self.lifecycle.clone();
        crate::serve::serve(listener, self.router.clone(), limits, async move {
            stop.await;
            lifecycle.drain();
            if !delay.is_zero() {
                tracing::info!(
                    delay_s = delay.as_secs_f64(),
                    "draining: /ready answers 503"
                );
                tokio::time::sleep(delay).await;
            }
            tracing::info!("stopping: finishing in-flight requests");
        })
        .await;
        self.shutdown().await;
        Ok(())
    }

    /// Stops the app in order: draining, background work stopped (at most a few seconds),
    /// deployment counters shared and deployments saved, the inference log written, leases given
    /// up (another replica takes over at once, not when they expire), SQLite's WAL
    /// checkpointed.
    pub async fn shutdown(self) {
        self.lifecycle.drain();
        if !self.lifecycle.background.stop(BACKGROUND_GRACE).await {
            tracing::warn!(
                still_running = self.lifecycle.background.running(),
                "background work did not stop in time"
            );
        }
        if let Some(g) = &self.gateway {
            g.flush().await;
        }
        if let Some(db) = self.gateway_db.clone()
            && let Ok(Err(e)) = tokio::task::spawn_blocking(move || db.checkpoint_truncate()).await
        {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
        let Some(serving) = &self.serving else {
            tracing::info!("{} stopped", self.what.trim_end_matches(" listening"));
            return;
        };
        serving.persist_all().await;
        if let Some(log) = serving.log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
        if let Some(db) = serving.db.clone() {
            if let Err(e) = db.release_all_leases().await {
                tracing::warn!(error = %e, "cannot release this process's leases");
            }
            match tokio::task::spawn_blocking(move || db.checkpoint_truncate()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "final WAL checkpoint failed"),
                Err(e) => tracing::warn!(error = %e, "final WAL checkpoint stopped"),
            }
        }
        tracing::info!("{} stopped", self.what.trim_end_matches(" listening"));
    }
}

/// Serves the whole app (`loopml server`) until Ctrl-C or SIGTERM.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    App::server(&config)
        .await?
        .run(&config, shutdown_signal())
        .await
}

/// Serves the LLM gateway alone (`loopml gateway`) until Ctrl-C or SIGTERM.
pub async fn serve_gateway(config: ServerConfig) -> anyhow::Result<()> {
    App::gateway(&config)?.run(&config, shutdown_signal()).await
}

/// Serves models and deployments alone (`loopml serve`) until Ctrl-C or SIGTERM.
pub async fn serve_models(config: ServerConfig) -> anyhow::Result<()> {
    App::serving(&config)
        .await?
        .run(&config, shutdown_signal())
        .await
}

/// The deployment sync, when other replicas share the database, and the sharing of deployment
/// counters, when deployments are saved.
fn spawn_deployment_work(bg: &Background, serving: &ServingApi) {
    if let Some(bus) = serving.bus.get() {
        bg.spawn(sync_deployments(serving.clone(), bus.clone()));
    }
    if serving.db.is_some() {
        bg.spawn(share_deployment_counters(serving.clone()));
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Adds this replica's deployment counters and outcomes to the shared ones about once a second
/// and takes everybody's back (canaries are judged on every replica's requests). Runs until
/// cancelled; a failed share keeps its counts for the next one.
pub async fn share_deployment_counters(serving: ServingApi) {
    let mut failing = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match serving.share_counters().await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot share the deployment counters; keeping them for the next try");
            }
            Err(_) => {}
        }
    }
}

/// Keeps endpoints that follow a moving registry URI (`models:/churn@champion`) on the version it
/// names: long-polls the registry's change feed and, on any event for a followed model,
/// re-resolves and swaps (in-flight requests finish on the old version). Runs until dropped.
pub async fn follow_registry(
    registry: loopml_registry::RegistryService,
    serving: loopml_serving::routes::ServingApi,
) {
    let registry = &registry;
    let mut after = match registry.events(i64::MAX, 1, None, Duration::ZERO).await {
        Ok((_, last)) => last,
        Err(_) => 0,
    };
    loop {
        let (events, last) = match registry
            .events(after, 1000, None, Duration::from_secs(30))
            .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "registry feed unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        after = events.last().map_or(last, |e| e.seq);
        if events.is_empty() {
            continue;
        }
        let touched: std::collections::HashSet<&str> =
            events.iter().map(|e| e.name.as_str()).collect();
        for f in serving.followed() {
            let Some((model, _)) = loopml_serving::routes::registry_target(&f.uri) else {
                continue;
            };
            if !touched.contains(model) {
                continue;
            }
            match serving.refresh(&f).await {
                Ok(Some(v)) => {
                    tracing::info!(endpoint = %f.endpoint, uri = %f.uri, version = %v, "swapped to the version the registry names")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(endpoint = %f.endpoint, uri = %f.uri, error = %e, "could not follow the registry; still serving the previous version")
                }
            }
        }
    }
}

/// Keeps this replica's deployments in line with the shared database: re-reads them when
/// another replica announces a change on the bus, and on a timer (every second without Redis,
/// every ten seconds with it, in case a note was lost). Runs until dropped.
pub async fn sync_deployments(
    serving: loopml_serving::routes::ServingApi,
    bus: loopml_store::ChangeBus,
) {
    let mut rx = bus.watch("deployments");
    let period = if bus.is_shared() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(1)
    };
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = tokio::time::sleep(period) => {}
        }
        match serving.sync_deployments().await {
            Ok(changes) => {
                for c in changes {
                    tracing::info!(change = %c, "deployment changed on another replica");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot re-read the stored deployments"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn call(
        app: &App,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = app.router().oneshot(req).await.expect("answer");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json)
    }

    /// The composed `loopml server` app, driven in-process without a listener: every part's
    /// routes answer, readiness fails once it drains, and shutdown stops the background work
    /// and leaves a store the next app opens with everything in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_composed_app_answers_in_process_and_shuts_down_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        let app = App::server(&config).await.expect("app");
        assert_eq!(call(&app, "GET", "/health", "").await.0, StatusCode::OK);
        assert_eq!(call(&app, "GET", "/ready", "").await.0, StatusCode::OK);
        // `/version` answers like `mlflow server` (the client gates tracing on it); loopml's
        // own version has a route of its own.
        let (s, v) = call(&app, "GET", "/version", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            v,
            serde_json::json!(loopml_tracking::MLFLOW_COMPATIBLE_VERSION)
        );
        let (s, v) = call(&app, "GET", "/api/2.0/loopml/version", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["mlflow_version"], "3.17.2");
        let (s, created) = call(
            &app,
            "POST",
            "/api/2.0/mlflow/experiments/create",
            r#"{"name": "in-process"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{created}");
        let id = created["experiment_id"].as_str().expect("id").to_string();
        let (s, models) = call(
            &app,
            "POST",
            "/api/2.0/mlflow/registered-models/create",
            r#"{"name": "m"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{models}");
        let (s, deps) = call(&app, "GET", "/api/2.0/loopml/deployments", "").await;
        assert_eq!(s, StatusCode::OK, "{deps}");
        let (s, missing) = call(&app, "GET", "/api/2.0/nope", "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(missing["error_code"], "ENDPOINT_NOT_FOUND");
        // Background work runs on the app's tracker (registry follower, counters, monitors).
        let background = app.lifecycle().background.clone();
        assert!(background.running() >= 2, "{}", background.running());
        app.lifecycle().drain();
        let (s, why) = call(&app, "GET", "/ready", "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{why}");
        app.shutdown().await;
        assert!(background.is_stopping());
        assert_eq!(background.running(), 0);
        // The next process on the same folder finds what the first one wrote.
        let again = App::server(&config).await.expect("app again");
        let (s, got) = call(
            &again,
            "GET",
            &format!("/api/2.0/mlflow/experiments/get?experiment_id={id}"),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{got}");
        assert_eq!(got["experiment"]["name"], "in-process");
        assert_eq!(call(&again, "GET", "/ready", "").await.0, StatusCode::OK);
        again.shutdown().await;
    }

    #[tokio::test]
    async fn background_work_stops_when_cancelled() {
        let bg = Background::default();
        bg.spawn(std::future::pending());
        bg.spawn(async {});
        assert!(bg.stop(Duration::from_secs(2)).await);
        assert_eq!(bg.running(), 0);
    }
}

#[cfg(test)]
mod inventory {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    /// Every path template the router holds (read from its `Debug` form: axum lists them).
    pub(crate) fn templates(router: &Router) -> Vec<String> {
        let debug = format!("{router:?}");
        let mut out = Vec::new();
        let mut rest = debug.as_str();
        while let Some(i) = rest.find("RouteId(") {
            rest = &rest[i + 8..];
            let Some(close) = rest.find("): \"") else {
                continue;
            };
            if !rest[..close].chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let s = &rest[close + 4..];
            let Some(end) = s.find('"') else { break };
            out.push(s[..end].to_string());
            rest = &s[end..];
        }
        out.sort();
        out.dedup();
        out
    }

    /// A concrete path for a template (`{name}` → `p1`, `{*rest}` → `1/a/b`).
    pub(crate) fn concrete(template: &str) -> String {
        template
            .split('/')
            .map(|seg| {
                if seg.starts_with("{*") {
                    "1/a/b".to_string()
                } else if seg.starts_with('{') {
                    "p1".to_string()
                } else {
                    seg.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The methods a path answers (axum's 405 names them in `Allow`).
    pub(crate) async fn methods(router: &Router, path: &str) -> Vec<Method> {
        let req = Request::builder()
            .method(Method::from_bytes(b"PROBE").expect("method"))
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("answer");
        match resp.status() {
            // The fallback: no route here.
            StatusCode::NOT_FOUND => return Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED => {}
            // A route taking any method.
            _ => return vec![Method::GET, Method::POST, Method::PUT, Method::DELETE],
        }
        resp.headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .filter_map(|m| Method::from_bytes(m.trim().as_bytes()).ok())
            .filter(|m| *m != Method::HEAD)
            .collect()
    }

    /// Every route `loopml server` serves (with the gateway, monitors and auth on) has a
    /// permission declared in `loopml_auth::policy`; a new route without one fails here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_route_has_a_declared_permission() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = dir.path().join("gateway.yaml");
        std::fs::write(
            &gw,
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n      \
             api_key: sk-test\n      api_base: http://127.0.0.1:9/v1\n",
        )
        .expect("write");
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            gateway_config: Some(gw),
            ..ServerConfig::default()
        };
        let app = App::server(&config).await.expect("app");
        let db = loopml_store::Database::open(loopml_store::DatabaseConfig::sqlite(
            dir.path().join("auth.db"),
        ))
        .expect("db");
        let auth = loopml_auth::AuthService::new(
            db,
            loopml_auth::AuthConfig {
                admin_username: "admin".into(),
                admin_password: "a-long-test-password-1".into(),
                default_permission: loopml_auth::Permission::Read,
            },
        )
        .await
        .expect("auth");
        let router = app.router().merge(loopml_auth::router(auth));
        let all = templates(&router);
        // The Debug form must still list routes (an axum upgrade could change it).
        assert!(all.len() > 150, "found only {} routes: {all:?}", all.len());
        let mut undeclared = Vec::new();
        let mut checked = 0;
        for t in all.iter().filter(|t| !t.contains("__private__axum")) {
            let path = concrete(t);
            for m in methods(&router, &path).await {
                checked += 1;
                if loopml_auth::policy::declared(&m, &path).is_none() {
                    undeclared.push(format!("{m} {t}"));
                }
            }
        }
        assert!(checked > 250, "{checked}");
        assert!(
            undeclared.is_empty(),
            "routes with no permission declared in loopml_auth::policy: {undeclared:#?}"
        );
        app.shutdown().await;
    }
}
