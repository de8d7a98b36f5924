//! The monitor service: stored monitors, evaluations recorded as time series, Prometheus
//! gauges, and alerts delivered from an outbox (webhooks with retries, pipeline triggers).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use loopml_store::outbound::OutboundPolicy;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::eval::{CheckResult, Evaluation, Evaluator};
use crate::spec::{MonitorSpec, PipelineTrigger};

/// The crate's tables.
pub const MIGRATIONS: &[loopml_store::Migration] = &[
    loopml_store::Migration {
        name: "0001_monitors",
        sqlite: include_str!("../migrations/sqlite/0001_monitors.sql"),
        postgres: include_str!("../migrations/postgres/0001_monitors.sql"),
    },
    loopml_store::Migration {
        name: "0002_alert_outcome",
        sqlite: include_str!("../migrations/sqlite/0002_alert_outcome.sql"),
        postgres: include_str!("../migrations/postgres/0002_alert_outcome.sql"),
    },
];

/// Whether `monitor`'s `check` raised an alert less than `cooldown_ms` before `at`.
fn in_cooldown(
    c: &loopml_store::Conn<'_>,
    monitor: &str,
    check: &str,
    at: i64,
    cooldown_ms: i64,
) -> std::result::Result<bool, loopml_store::StoreError> {
    let recent = c.query_opt(
        "SELECT MAX(created_at) FROM monitor_alerts WHERE monitor = ?1 AND check_name = ?2",
        &[monitor.into(), check.into()],
        |r| r.opt_i64(0),
    )?;
    Ok(recent.flatten().is_some_and(|t| at - t < cooldown_ms))
}

/// Delivery attempts before an alert is marked `failed` (about two hours of backoff).
pub const MAX_ATTEMPTS: i64 = 30;

/// A stored alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Id.
    pub id: i64,
    /// Monitor.
    pub monitor: String,
    /// Check.
    pub check: String,
    /// Created (ms).
    pub created_at: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// Delivered (ms).
    pub delivered_at: Option<i64>,
    /// What was sent: monitor, deployment, check, value, threshold, message, window.
    pub payload: Value,
    /// Webhooks that took it.
    pub delivered_to: Vec<String>,
    /// What became of its pipeline trigger.
    pub pipeline: Option<String>,
    /// The pipeline run it started, once that run has ended.
    pub pipeline_run: Option<String>,
    /// How that run ended: `succeeded`, `failed at step …: why`, `rejected by the gate: …`.
    pub pipeline_outcome: Option<String>,
}

/// One stored check result.
#[derive(Debug, Clone, Serialize)]
pub struct StoredResult {
    /// Check.
    pub check: String,
    /// Kind.
    pub kind: String,
    /// Evaluated (ms).
    pub evaluated_at: i64,
    /// Window start (ms).
    pub window_start: Option<i64>,
    /// Window end (ms).
    pub window_end: Option<i64>,
    /// Rows in the window.
    pub rows: i64,
    /// Status.
    pub status: String,
    /// Value.
    pub value: Option<f64>,
    /// Threshold.
    pub threshold: Option<f64>,
    /// Message.
    pub message: String,
    /// Details.
    pub details: Value,
}

/// A future returned by an [`AlertHandler`].
pub type HandlerFuture = Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send>>;

/// Starts the pipeline of an alert (the binary runs it with `loopml-pipelines`).
pub trait AlertHandler: Send + Sync {
    /// Starts `trigger` for `alert`; answers what it started, or why it could not.
    fn start_pipeline(&self, alert: &Alert, trigger: &PipelineTrigger) -> HandlerFuture;
}

#[derive(Default)]
struct MonitorMetrics {
    registry: Registry,
    value: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    breached: Family<Vec<(String, String)>, Gauge>,
    rows: Family<Vec<(String, String)>, Gauge>,
    alerts: Family<Vec<(String, String)>, Counter>,
    evaluations: Family<Vec<(String, String)>, Counter>,
    duration: Option<Histogram>,
}

impl MonitorMetrics {
    fn new() -> Self {
        let mut m = MonitorMetrics {
            duration: Some(Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            ..Default::default()
        };
        m.registry.register(
            "loopml_monitor_value",
            "Latest value of each monitor check (drifted share, drift score, passed share, metric)",
            m.value.clone(),
        );
        m.registry.register(
            "loopml_monitor_breached",
            "1 while a monitor check is breached, else 0",
            m.breached.clone(),
        );
        m.registry.register(
            "loopml_monitor_window_rows",
            "Predictions in a monitor's latest window",
            m.rows.clone(),
        );
        m.registry.register(
            "loopml_monitor_alerts",
            "Alerts raised, by monitor and check",
            m.alerts.clone(),
        );
        m.registry.register(
            "loopml_monitor_evaluations",
            "Monitor evaluations, by monitor and outcome",
            m.evaluations.clone(),
        );
        if let Some(h) = &m.duration {
            m.registry.register(
                "loopml_monitor_evaluation_duration_seconds",
                "Time to evaluate a monitor (window read plus every check)",
                h.clone(),
            );
        }
        m
    }

    fn record(&self, e: &Evaluation) {
        let m = vec![("monitor".to_string(), e.monitor.clone())];
        self.rows
            .get_or_create(&m)
            .set(i64::try_from(e.rows).unwrap_or(i64::MAX));
        if let Some(h) = &self.duration {
            h.observe(e.seconds);
        }
        for r in &e.results {
            let l = vec![
                ("monitor".to_string(), e.monitor.clone()),
                ("check".to_string(), r.check.clone()),
            ];
            if let Some(v) = r.value {
                self.value.get_or_create(&l).set(v);
            }
            self.breached
                .get_or_create(&l)
                .set(i64::from(r.status == "breach"));
        }
    }
}

struct Inner {
    db: loopml_store::Database,
    evaluator: Evaluator,
    metrics: MonitorMetrics,
    handler: RwLock<Option<Arc<dyn AlertHandler>>>,
    wake: tokio::sync::Notify,
    last_eval: Mutex<HashMap<String, Instant>>,
    /// Serialises evaluations of one monitor (a scheduled one and an on-demand one).
    running: tokio::sync::Mutex<()>,
    /// Which addresses alert webhooks may reach (refusing by default).
    outbound: RwLock<OutboundPolicy>,
}

/// Monitors: store, evaluate, alert.
#[derive(Clone)]
pub struct MonitorService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MonitorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorService").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    loopml_serving::infer_log::now_us() / 1000
}

fn parse_json(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or(Value::Null)
}

impl MonitorService {
    /// A service over `db` (its migrations are applied here).
    pub fn new(db: loopml_store::Database, evaluator: Evaluator) -> Result<Self> {
        db.migrate("store", loopml_store::STORE_MIGRATIONS)?;
        db.migrate("monitor", MIGRATIONS)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                evaluator,
                metrics: MonitorMetrics::new(),
                handler: RwLock::new(None),
                wake: tokio::sync::Notify::new(),
                last_eval: Mutex::new(HashMap::new()),
                running: tokio::sync::Mutex::new(()),
                outbound: RwLock::new(OutboundPolicy::default()),
            }),
        })
    }

    /// Sets which addresses alert webhooks may reach (`--outbound-allow`); without it
    /// loopback, link-local and metadata addresses are refused.
    pub fn set_outbound_policy(&self, policy: OutboundPolicy) {
        if let Ok(mut p) = self.inner.outbound.write() {
            *p = policy;
        }
    }

    fn outbound(&self) -> OutboundPolicy {
        self.inner
            .outbound
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Sets what starts alert pipelines.
    pub fn set_alert_handler(&self, handler: Arc<dyn AlertHandler>) {
        if let Ok(mut h) = self.inner.handler.write() {
            *h = Some(handler);
        }
    }

    /// The monitors' metrics as OpenMetrics text (for `/metrics`).
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.metrics.registry);
        out
    }

    /// Creates or replaces a monitor; its reference must exist.
    pub async fn apply(&self, spec: MonitorSpec) -> Result<MonitorSpec> {
        spec.check()?;
        let policy = self.outbound();
        let hooks = spec.alerts.webhooks.clone();
        tokio::task::spawn_blocking(move || {
            hooks.iter().try_for_each(|w| policy.check_url_resolving(w))
        })
        .await
        .map_err(|e| Error::Invalid(format!("cannot check the alert webhooks: {e}")))?
        .map_err(|e| Error::Invalid(format!("alerts.webhooks: {e}")))?;
        self.inner.evaluator.reference_file(&spec.reference).await?;
        let text = serde_json::to_string(&spec)
            .map_err(|e| Error::Invalid(format!("cannot store the monitor: {e}")))?;
        let name = spec.name.clone();
        let now = now_ms();
        self.inner
            .db
            .write(move |c| {
                c.execute(
                    "INSERT INTO monitors (name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
                     ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
                    &[name.as_str().into(), text.into(), now.into()],
                )
                .map_err(Error::from)
            })
            .await?;
        if let Ok(mut l) = self.inner.last_eval.lock() {
            l.remove(&spec.name);
        }
        self.inner.wake.notify_one();
        Ok(spec)
    }

    /// Every monitor.
    pub async fn list(&self) -> Result<Vec<MonitorSpec>> {
        let raw: Vec<String> = self
            .inner
            .db
            .read(|c| {
                c.query("SELECT spec FROM monitors ORDER BY name", &[], |r| {
                    r.string(0)
                })
                .map_err(Error::from)
            })
            .await?;
        Ok(raw
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// One monitor.
    pub async fn get(&self, name: &str) -> Result<MonitorSpec> {
        let n = name.to_string();
        let raw: Option<String> = self
            .inner
            .db
            .read(move |c| {
                c.query_opt(
                    "SELECT spec FROM monitors WHERE name = ?1",
                    &[n.as_str().into()],
                    |r| r.string(0),
                )
                .map_err(Error::from)
            })
            .await?;
        let raw = raw.ok_or_else(|| Error::NotFound(format!("no monitor called '{name}'")))?;
        serde_json::from_str(&raw)
            .map_err(|e| Error::Evaluation(format!("monitor '{name}' is stored damaged: {e}")))
    }

    /// Deletes a monitor and its results (its alerts stay, for the record).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        let gone = self
            .inner
            .db
            .write(move |c| {
                let k = c.execute("DELETE FROM monitors WHERE name = ?1", &[n.as_str().into()])?;
                c.execute(
                    "DELETE FROM monitor_results WHERE monitor = ?1",
                    &[n.as_str().into()],
                )?;
                Ok::<_, Error>(k)
            })
            .await?;
        if gone == 0 {
            return Err(Error::NotFound(format!("no monitor called '{name}'")));
        }
        Ok(())
    }

    /// Evaluates a monitor now, stores its results and raises alerts for breached checks
    /// (at most one per check per cooldown). Returns the evaluation and the alerts raised.
    pub async fn evaluate(&self, name: &str) -> Result<(Evaluation, Vec<Alert>)> {
        let spec = self.get(name).await?;
        let _one = self.inner.running.lock().await;
        // Across replicas too, one evaluation of a monitor at a time: the alert cooldown is
        // read then written, so two at once could both raise the same alert.
        let lease = format!("monitor-eval:{}", spec.name);
        if !self
            .inner
            .db
            .try_lease(&lease, EVALUATION_LEASE_TTL)
            .await?
        {
            return Err(Error::Store(loopml_store::StoreError::Unavailable(
                format!(
                    "monitor {} is being evaluated by another replica; try again shortly",
                    spec.name
                ),
            )));
        }
        let out = self.evaluate_spec(spec).await;
        if let Err(e) = self.inner.db.release_lease(&lease).await {
            tracing::warn!(error = %e, "cannot release the monitor evaluation lease");
        }
        out
    }

    async fn evaluate_spec(&self, spec: MonitorSpec) -> Result<(Evaluation, Vec<Alert>)> {
        let eval = match self.inner.evaluator.evaluate(&spec).await {
            Ok(e) => e,
            Err(e) => {
                self.inner
                    .metrics
                    .evaluations
                    .get_or_create(&vec![
                        ("monitor".into(), spec.name.clone()),
                        ("outcome".into(), "error".into()),
                    ])
                    .inc();
                return Err(e);
            }
        };
        if let Ok(mut l) = self.inner.last_eval.lock() {
            l.insert(spec.name.clone(), Instant::now());
        }
        let cooldown_ms = i64::try_from(spec.cooldown().as_millis()).unwrap_or(i64::MAX);
        // The window, as a dataset version a pipeline can read, when an alert may start one.
        let mut window_dataset = None;
        let breached: Vec<&CheckResult> = eval
            .results
            .iter()
            .filter(|r| r.status == "breach")
            .collect();
        if !breached.is_empty()
            && spec.alerts.pipeline.is_some()
            && let Some(file) = eval.training_file.as_ref().or(eval.window_file.as_ref())
        {
            let description = match &eval.label_column {
                Some(label) => format!(
                    "monitor {} window: {} predictions, {} labelled (labels in column `{label}`, \
                     empty where no feedback came)",
                    spec.name, eval.rows, eval.labelled_rows
                ),
                None => format!("monitor {} window", spec.name),
            };
            match self
                .inner
                .evaluator
                .datasets
                .add(&format!("{}-window", spec.name), file, Some(description))
                .await
            {
                Ok(v) => window_dataset = Some(v.reference()),
                Err(e) => {
                    tracing::warn!(monitor = %spec.name, error = %e, "could not store the window")
                }
            }
        }
        let errored: Vec<(String, String)> = eval
            .results
            .iter()
            .filter(|r| r.status == "error")
            .map(|r| {
                let p = json!({
                    "monitor": spec.name,
                    "deployment": spec.deployment,
                    "check": r.check,
                    "kind": r.kind,
                    "status": "error",
                    "value": null,
                    "threshold": null,
                    "message": format!(
                        "the check could not be evaluated {} times in a row; last error: {}",
                        spec.error_after(),
                        r.message
                    ),
                    "evaluated_at": eval.evaluated_at,
                    "window_start": eval.window_start,
                    "window_end": eval.window_end,
                    "rows": eval.rows,
                });
                (r.check.clone(), p.to_string())
            })
            .collect();
        let error_after = i64::from(spec.error_after());
        let payloads: Vec<(String, String)> = breached
            .iter()
            .map(|r| {
                let p = json!({
                    "monitor": spec.name,
                    "deployment": spec.deployment,
                    "check": r.check,
                    "kind": r.kind,
                    "status": r.status,
                    "value": r.value,
                    "threshold": r.threshold,
                    "message": r.message,
                    "evaluated_at": eval.evaluated_at,
                    "window_start": eval.window_start,
                    "window_end": eval.window_end,
                    "rows": eval.rows,
                    "window_dataset": window_dataset,
                });
                (r.check.clone(), p.to_string())
            })
            .collect();
        let rows: Vec<(CheckResult, String)> = eval
            .results
            .iter()
            .map(|r| (r.clone(), r.details.to_string()))
            .collect();
        let (monitor, at, ws, we, n) = (
            spec.name.clone(),
            eval.evaluated_at,
            eval.window_start,
            eval.window_end,
            i64::try_from(eval.rows).unwrap_or(i64::MAX),
        );
        let has_pipeline = spec.alerts.pipeline.is_some();
        let new_ids: Vec<i64> = self
            .inner
            .db
            .write(move |c| {
                for (r, details) in &rows {
                    c.execute(
                        "INSERT INTO monitor_results (monitor, check_name, kind, evaluated_at, \
                         window_start, window_end, rows, status, value, threshold, message, details) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        &[
                            monitor.as_str().into(),
                            r.check.as_str().into(),
                            r.kind.into(),
                            at.into(),
                            ws.into(),
                            we.into(),
                            n.into(),
                            r.status.into(),
                            r.value.into(),
                            r.threshold.into(),
                            r.message.as_str().into(),
                            details.as_str().into(),
                        ],
                    )?;
                }
                let mut ids = Vec::new();
                for (check, payload) in &payloads {
                    if in_cooldown(c, &monitor, check, at, cooldown_ms)? {
                        continue;
                    }
                    let id = c.query_opt(
                        "INSERT INTO monitor_alerts (monitor, check_name, created_at, status, next_attempt, payload) \
                         VALUES (?1, ?2, ?3, 'pending', ?3, ?4) RETURNING id",
                        &[monitor.as_str().into(), check.as_str().into(), at.into(), payload.as_str().into()],
                        |r| r.i64(0),
                    )?;
                    ids.extend(id);
                }
                // A check that errored `error_after` times in a row alerts on its own; such an
                // alert never starts the pipeline: retraining does not mend a broken check.
                let mut error_ids = Vec::new();
                if error_after > 0 {
                    for (check, payload) in &errored {
                        let statuses = c.query(
                            "SELECT status FROM monitor_results WHERE monitor = ?1 AND \
                             check_name = ?2 ORDER BY evaluated_at DESC, id DESC LIMIT ?3",
                            &[monitor.as_str().into(), check.as_str().into(), error_after.into()],
                            |r| r.string(0),
                        )?;
                        if (statuses.len() as i64) < error_after
                            || statuses.iter().any(|s| s != "error")
                        {
                            continue;
                        }
                        if in_cooldown(c, &monitor, check, at, cooldown_ms)? {
                            continue;
                        }
                        let id = c.query_opt(
                            "INSERT INTO monitor_alerts (monitor, check_name, created_at, status, \
                             next_attempt, payload, pipeline) VALUES (?1, ?2, ?3, 'pending', ?3, ?4, ?5) \
                             RETURNING id",
                            &[
                                monitor.as_str().into(),
                                check.as_str().into(),
                                at.into(),
                                payload.as_str().into(),
                                "not started: the check could not be evaluated (an error, not a breach)".into(),
                            ],
                            |r| r.i64(0),
                        )?;
                        error_ids.extend(id);
                    }
                }
                // One evaluation starts one pipeline run, however many checks it breached: the
                // first alert carries the trigger, the others say where it went.
                if has_pipeline && let Some((first, rest)) = ids.split_first() {
                    for id in rest {
                        c.execute(
                            "UPDATE monitor_alerts SET pipeline = ?2 WHERE id = ?1",
                            &[
                                (*id).into(),
                                format!("not started: alert {first} of the same evaluation started it").into(),
                            ],
                        )?;
                    }
                }
                ids.extend(error_ids);
                Ok::<_, Error>(ids)
            })
            .await?;
        self.inner.metrics.record(&eval);
        self.inner
            .metrics
            .evaluations
            .get_or_create(&vec![
                ("monitor".into(), spec.name.clone()),
                (
                    "outcome".into(),
                    if eval.breached() { "breach" } else { "ok" }.into(),
                ),
            ])
            .inc();
        let mut alerts = Vec::new();
        for id in new_ids {
            if let Some(a) = self.alert(id).await? {
                self.inner
                    .metrics
                    .alerts
                    .get_or_create(&vec![
                        ("monitor".into(), a.monitor.clone()),
                        ("check".into(), a.check.clone()),
                    ])
                    .inc();
                tracing::warn!(monitor = %a.monitor, check = %a.check, alert = a.id,
                    message = %a.payload["message"].as_str().unwrap_or(""), "monitor alert");
                alerts.push(a);
            }
        }
        if !alerts.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok((eval, alerts))
    }

    /// Stored results, newest first.
    pub async fn results(
        &self,
        name: &str,
        check: Option<String>,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredResult>> {
        let n = name.to_string();
        let limit = i64::try_from(limit.clamp(1, 10_000)).unwrap_or(100);
        self.inner
            .db
            .read(move |c| {
                c.query(
                    "SELECT check_name, kind, evaluated_at, window_start, window_end, rows, status, \
                     value, threshold, message, details FROM monitor_results WHERE monitor = ?1 \
                     AND (CAST(?2 AS TEXT) IS NULL OR check_name = ?2) AND (CAST(?3 AS BIGINT) IS NULL OR evaluated_at >= ?3) \
                     ORDER BY evaluated_at DESC, id DESC LIMIT ?4",
                    &[n.as_str().into(), check.into(), since_ms.into(), limit.into()],
                    |r| {
                        let v = r.f64(7)?;
                        let t = r.f64(8)?;
                        Ok(StoredResult {
                            check: r.string(0)?,
                            kind: r.string(1)?,
                            evaluated_at: r.i64(2)?,
                            window_start: r.opt_i64(3)?,
                            window_end: r.opt_i64(4)?,
                            rows: r.i64(5)?,
                            status: r.string(6)?,
                            value: v.is_finite().then_some(v),
                            threshold: t.is_finite().then_some(t),
                            message: r.string(9)?,
                            details: parse_json(r.str(10)?),
                        })
                    },
                )
                .map_err(Error::from)
            })
            .await
    }

    /// The latest result of each check of a monitor.
    pub async fn latest(&self, name: &str) -> Result<Vec<StoredResult>> {
        let spec = self.get(name).await?;
        let mut out = Vec::new();
        for c in &spec.checks {
            if let Some(r) = self
                .results(name, Some(c.name()), None, 1)
                .await?
                .into_iter()
                .next()
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    const ALERT_COLUMNS: &'static str = "id, monitor, check_name, created_at, status, attempts, \
        last_error, delivered_at, payload, delivered_to, pipeline, pipeline_run, pipeline_outcome";

    fn alert_row(
        r: &loopml_store::Row<'_>,
    ) -> std::result::Result<Alert, loopml_store::StoreError> {
        Ok(Alert {
            id: r.i64(0)?,
            monitor: r.string(1)?,
            check: r.string(2)?,
            created_at: r.i64(3)?,
            status: r.string(4)?,
            attempts: r.i64(5)?,
            last_error: r.opt_string(6)?,
            delivered_at: r.opt_i64(7)?,
            payload: parse_json(r.str(8)?),
            delivered_to: serde_json::from_str(r.str(9)?).unwrap_or_default(),
            pipeline: r.opt_string(10)?,
            pipeline_run: r.opt_string(11)?,
            pipeline_outcome: r.opt_string(12)?,
        })
    }

    /// Records how the pipeline an alert started ended (its run id and outcome).
    pub async fn set_pipeline_outcome(
        &self,
        alert_id: i64,
        run_id: Option<String>,
        outcome: String,
    ) -> Result<()> {
        self.inner
            .db
            .write(move |c| {
                c.execute(
                    "UPDATE monitor_alerts SET pipeline_run = ?2, pipeline_outcome = ?3 WHERE id = ?1",
                    &[alert_id.into(), run_id.into(), outcome.into()],
                )
                .map_err(Error::from)
            })
            .await?;
        Ok(())
    }

    /// One alert.
    pub async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        self.inner
            .db
            .read(move |c| {
                c.query_opt(
                    &format!(
                        "SELECT {} FROM monitor_alerts WHERE id = ?1",
                        Self::ALERT_COLUMNS
                    ),
                    &[id.into()],
                    Self::alert_row,
                )
                .map_err(Error::from)
            })
            .await
    }

    /// Alerts, newest first.
    pub async fn alerts(
        &self,
        monitor: Option<String>,
        status: Option<String>,
        limit: usize,
    ) -> Result<Vec<Alert>> {
        let limit = i64::try_from(limit.clamp(1, 10_000)).unwrap_or(100);
        self.inner
            .db
            .read(move |c| {
                c.query(
                    &format!(
                        "SELECT {} FROM monitor_alerts WHERE (CAST(?1 AS TEXT) IS NULL OR monitor = ?1) AND \
                         (CAST(?2 AS TEXT) IS NULL OR status = ?2) ORDER BY id DESC LIMIT ?3",
                        Self::ALERT_COLUMNS
                    ),
                    &[monitor.into(), status.into(), limit.into()],
                    Self::alert_row,
                )
                .map_err(Error::from)
            })
            .await
    }

    /// Delivers due alerts once: each webhook until it takes the alert, the pipeline once.
    /// Returns how many alerts were handled.
    pub async fn deliver_due(&self) -> Result<usize> {
        let now = now_ms();
        let due: Vec<Alert> = self
            .inner
            .db
            .read(move |c| {
                c.query(
                    &format!(
                        "SELECT {} FROM monitor_alerts WHERE status = 'pending' AND next_attempt <= ?1 \
                         ORDER BY id LIMIT 100",
                        Self::ALERT_COLUMNS
                    ),
                    &[now.into()],
                    Self::alert_row,
                )
                .map_err(Error::from)
            })
            .await?;
        let n = due.len();
        for alert in due {
            self.deliver(alert).await?;
        }
        Ok(n)
    }

    async fn deliver(&self, mut alert: Alert) -> Result<()> {
        let spec = self.get(&alert.monitor).await.ok();
        let webhooks = spec
            .as_ref()
            .map(|s| s.alerts.webhooks.clone())
            .unwrap_or_default();
        let mut errors = Vec::new();
        for url in webhooks {
            if alert.delivered_to.contains(&url) {
                continue;
            }
            let body = json!({"alert_id": alert.id, "created_at": alert.created_at, "alert": alert.payload});
            let u = url.clone();
            let policy = self.outbound();
            let sent = tokio::task::spawn_blocking(move || post_json(&policy, &u, &body))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            match sent {
                Ok(()) => alert.delivered_to.push(url),
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        if alert.pipeline.is_none()
            && let Some(trigger) = spec.as_ref().and_then(|s| s.alerts.pipeline.clone())
        {
            let handler = self.inner.handler.read().ok().and_then(|h| h.clone());
            alert.pipeline = Some(match handler {
                Some(h) => match h.start_pipeline(&alert, &trigger).await {
                    Ok(what) => what,
                    Err(e) => format!("failed to start: {e}"),
                },
                None => "not started: this process runs no pipelines".into(),
            });
        }
        alert.attempts += 1;
        let now = now_ms();
        let (status, next) = if errors.is_empty() {
            ("delivered", now)
        } else if alert.attempts >= MAX_ATTEMPTS {
            ("failed", now)
        } else {
            // 1 s, 2 s, 4 s, … capped at 5 minutes.
            let backoff = 1000i64 << alert.attempts.clamp(0, 9);
            ("pending", now + backoff.min(300_000))
        };
        if !errors.is_empty() {
            tracing::warn!(alert = alert.id, attempts = alert.attempts, errors = %errors.join("; "), "alert delivery failed; will retry");
        }
        let delivered_to =
            serde_json::to_string(&alert.delivered_to).unwrap_or_else(|_| "[]".into());
        let last_error = (!errors.is_empty()).then(|| errors.join("; "));
        let id = alert.id;
        let pipeline = alert.pipeline.clone();
        let attempts = alert.attempts;
        self.inner
            .db
            .write(move |c| {
                c.execute(
                    "UPDATE monitor_alerts SET status = ?2, attempts = ?3, next_attempt = ?4, \
                     last_error = ?5, delivered_at = CASE WHEN ?2 = 'delivered' THEN ?6 ELSE delivered_at END, \
                     delivered_to = ?7, pipeline = ?8 WHERE id = ?1",
                    &[
                        id.into(),
                        status.into(),
                        attempts.into(),
                        next.into(),
                        last_error.into(),
                        now.into(),
                        delivered_to.into(),
                        pipeline.into(),
                    ],
                )
                .map_err(Error::from)
            })
            .await?;
        Ok(())
    }

    /// Runs scheduled evaluations and alert delivery until the process stops.
    pub async fn run_background(self) {
        let mut leader = false;
        loop {
            let _ =
                tokio::time::timeout(Duration::from_millis(500), self.inner.wake.notified()).await;
            // One replica schedules: the holder of the scheduler lease (renewed every pass and
            // before every evaluation); the others stand by and take over when it lapses.
            if !self.hold_scheduler_lease(&mut leader).await {
                continue;
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "alert delivery pass failed");
            }
            let monitors = match self.list().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list monitors");
                    continue;
                }
            };
            for m in monitors {
                let Some(every) = m.interval() else { continue };
                let due = self
                    .inner
                    .last_eval
                    .lock()
                    .map(|l| l.get(&m.name).is_none_or(|t| t.elapsed() >= every))
                    .unwrap_or(false);
                if !due {
                    continue;
                }
                if !self.hold_scheduler_lease(&mut leader).await {
                    break;
                }
                if let Err(e) = self.evaluate(&m.name).await {
                    tracing::warn!(monitor = %m.name, error = %e, "monitor evaluation failed");
                    if let Ok(mut l) = self.inner.last_eval.lock() {
                        l.insert(m.name.clone(), Instant::now());
                    }
                }
            }
        }
    }

    /// Takes or renews the scheduler lease; on becoming the scheduler, learns when each monitor
    /// was last evaluated (by whichever replica) so a takeover does not evaluate everything
    /// again at once.
    async fn hold_scheduler_lease(&self, leader: &mut bool) -> bool {
        match self
            .inner
            .db
            .try_lease(SCHEDULER_LEASE, SCHEDULER_LEASE_TTL)
            .await
        {
            Ok(true) => {
                if !*leader {
                    *leader = true;
                    tracing::info!("this process schedules monitor evaluations");
                    if let Err(e) = self.seed_last_evaluations().await {
                        tracing::warn!(error = %e, "cannot read the last evaluation times");
                    }
                }
                true
            }
            Ok(false) => {
                if *leader {
                    tracing::info!("another process now schedules monitor evaluations");
                }
                *leader = false;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the monitor scheduler lease");
                *leader = false;
                false
            }
        }
    }

    async fn seed_last_evaluations(&self) -> Result<()> {
        let last: Vec<(String, i64)> = self
            .inner
            .db
            .read(|c| {
                c.query(
                    "SELECT monitor, MAX(evaluated_at) FROM monitor_results GROUP BY monitor",
                    &[],
                    |r| Ok((r.string(0)?, r.i64(1)?)),
                )
            })
            .await?;
        let now = now_ms();
        if let Ok(mut l) = self.inner.last_eval.lock() {
            for (monitor, at) in last {
                let ago = Duration::from_millis(now.saturating_sub(at).max(0) as u64);
                let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
                l.entry(monitor).or_insert(at);
            }
        }
        Ok(())
    }
}

/// The most one evaluation of one monitor may hold its lease without finishing.
const EVALUATION_LEASE_TTL: Duration = Duration::from_secs(300);

/// The lease that makes one process the monitor scheduler.
const SCHEDULER_LEASE: &str = "monitor-scheduler";
/// How long the scheduler lease lasts without renewal (a dead scheduler is replaced after this).
const SCHEDULER_LEASE_TTL: Duration = Duration::from_secs(30);

/// POSTs JSON; any 2xx is delivered.
fn post_json(policy: &OutboundPolicy, url: &str, body: &Value) -> std::result::Result<(), String> {
    policy.check_url(url).map_err(|e| e.0)?;
    let agent = policy.agent(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false),
    );
    let resp = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}
