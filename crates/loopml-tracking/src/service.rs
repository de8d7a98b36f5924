//! [`TrackingService`]: the tracking operations as plain async methods. Input is validated
//! before any write, and every write is one transaction, so a rejected request changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use loopml_store::{ArtifactStore, Conn, Database, StoreError, Value};

use crate::error::{Error, Result};
use crate::filter::{parse_filter, parse_order_by};
use crate::model::{
    Dataset, DatasetSummary, Experiment, KeyValue, LifecycleStage, LoggedMetric, LoggedModel,
    LoggedModelStatus, Metric, Page, Run, RunInfo, RunStatus, ViewType,
};
use crate::sql::{self, ModelOrder};
use crate::validation::{self as v, decode_page_token, encode_page_token};

mod experiments;
mod logged_models;

/// Tag that carries a run's name.
pub const RUN_NAME_TAG: &str = "mlflow.runName";
/// Tag that carries a run's user.
pub const USER_TAG: &str = "mlflow.user";
/// The run tag listing the models logged to it (MLflow 2's `log_model` record).
pub const LOG_MODEL_HISTORY_TAG: &str = "mlflow.log-model.history";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Parses a view type given by name or number.
pub fn parse_view_type(raw: Option<&str>) -> Result<ViewType> {
    match raw.map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(ViewType::ActiveOnly),
        Some("DELETED_ONLY") | Some("2") => Ok(ViewType::DeletedOnly),
        Some("ALL") | Some("3") => Ok(ViewType::All),
        Some(other) => Err(Error::InvalidParameter(format!(
            "Invalid view type '{other}'. Valid values are ACTIVE_ONLY, DELETED_ONLY and ALL."
        ))),
    }
}

/// Parses a metric value: a number, or "NaN" / "Infinity" / "-Infinity" (also as strings).
pub fn parse_metric_value(key: &str, raw: Option<&serde_json::Value>) -> Result<f64> {
    let raw = raw.ok_or_else(|| Error::missing("value"))?;
    let parsed = match raw {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.parse::<f64>().ok(),
        },
        _ => None,
    };
    parsed.ok_or_else(|| {
        Error::InvalidParameter(format!(
            "Got invalid value {raw} for metric '{key}'. Please specify value as a valid double \
             (64-bit floating point)"
        ))
    })
}

/// Upper bound on a GET of metric history when the client does not page.
const MAX_HISTORY_UNPAGED: i64 = 10_000_000;
/// Most runs one bulk metric-history request may name.
const MAX_BULK_RUNS: usize = 100;
/// Most points `get-history-bulk` returns in all.
const MAX_BULK_HISTORY: i64 = 25_000;
/// Most points per run `get-history-bulk-interval` returns (and its default).
const MAX_SAMPLED_POINTS: i64 = 2_500;
/// Most experiments one dataset search may name.
const MAX_DATASET_SEARCH_EXPERIMENTS: usize = 20;
/// Most dataset summaries one search returns.
const MAX_DATASET_SUMMARIES: i64 = 1_000;

/// The tracking service: experiments, runs, metrics, inputs, logged models and artifacts.
#[derive(Clone, Debug)]
pub struct TrackingService {
    db: Database,
    artifacts: ArtifactStore,
    series: Arc<SeriesCache>,
}

/// Committed metric series ids by run, then key, so a log-batch to a series already seen skips
/// two statements (series ids never change once committed). Bounded; cleared when full.
#[derive(Debug, Default)]
struct SeriesCache(std::sync::Mutex<SeriesMap>);

#[derive(Debug, Default)]
struct SeriesMap {
    by_run: HashMap<String, HashMap<String, i64>>,
    entries: usize,
}

impl SeriesCache {
    /// Most (run, key) pairs kept (about 100 bytes each).
    const MAX: usize = 200_000;

    fn known(&self, run_id: &str, batch: &Batch) -> HashMap<String, i64> {
        let Ok(map) = self.0.lock() else {
            return HashMap::new();
        };
        let Some(keys) = map.by_run.get(run_id) else {
            return HashMap::new();
        };
        batch
            .metrics
            .iter()
            .filter_map(|m| {
                keys.get(&m.metric.key)
                    .map(|id| (m.metric.key.clone(), *id))
            })
            .collect()
    }

    fn remember(&self, run_id: &str, ids: HashMap<String, i64>) {
        if ids.is_empty() {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            if map.entries + ids.len() > Self::MAX {
                *map = SeriesMap::default();
            }
            let added = ids.len();
            map.by_run
                .entry(run_id.to_string())
                .or_default()
                .extend(ids);
            map.entries += added;
        }
    }
}

/// A validated log-batch request.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Metrics to log.
    pub metrics: Vec<LoggedMetric>,
    /// Params to log.
    pub params: Vec<KeyValue>,
    /// Tags to set.
    pub tags: Vec<KeyValue>,
}

impl Batch {
    /// Checks MLflow's batch limits and key rules, truncating long values as MLflow does.
    pub fn validate(mut self) -> Result<Self> {
        let (m, p, t) = (self.metrics.len(), self.params.len(), self.tags.len());
        if m > v::MAX_BATCH_METRICS {
            return Err(Error::InvalidParameter(format!(
                "A batch logging request can contain at most {} metrics. Got {m} metrics. Please \
                 split up metrics across multiple requests and try again.",
                v::MAX_BATCH_METRICS
            )));
        }
        if p > v::MAX_BATCH_PARAMS {
            return Err(Error::InvalidParameter(format!(
                "A batch logging request can contain at most {} params. Got {p} params. Please \
                 split up params across multiple requests and try again.",
                v::MAX_BATCH_PARAMS
            )));
        }
        if t > v::MAX_BATCH_TAGS {
            return Err(Error::InvalidParameter(format!(
                "A batch logging request can contain at most {} tags. Got {t} tags. Please split \
                 up tags across multiple requests and try again.",
                v::MAX_BATCH_TAGS
            )));
        }
        if m + p + t > v::MAX_BATCH_TOTAL {
            return Err(Error::InvalidParameter(format!(
                "A batch logging request can contain at most {} metrics, params and tags in \
                 total. Got {} entities.",
                v::MAX_BATCH_TOTAL,
                m + p + t
            )));
        }
        for metric in &self.metrics {
            v::validate_key(&metric.metric.key, "key")?;
            if metric.metric.timestamp < 0 {
                return Err(Error::InvalidParameter(format!(
                    "Invalid timestamp {} for metric '{}': timestamps are non-negative \
                     milliseconds since the epoch.",
                    metric.metric.timestamp, metric.metric.key
                )));
            }
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        let mut dups = Vec::new();
        for p in &mut self.params {
            v::validate_key(&p.key, "key")?;
            p.value = v::truncate(std::mem::take(&mut p.value), v::MAX_PARAM_VALUE_LEN);
        }
        for p in &self.params {
            if seen.insert(&p.key, &p.value).is_some() {
                dups.push(p.key.clone());
            }
        }
        if !dups.is_empty() {
            return Err(Error::InvalidParameter(format!(
                "Duplicate parameter keys have been submitted: {dups:?}. Please ensure the \
                 request contains only one param value per param key."
            )));
        }
        for t in &mut self.tags {
            v::validate_key(&t.key, "key")?;
            t.value = v::truncate(std::mem::take(&mut t.value), v::MAX_TAG_VALUE_LEN);
        }
        Ok(self)
    }
}

/// A dataset input of a `log-inputs` request.
#[derive(Debug, Clone)]
pub struct NewDatasetInput {
    /// The dataset.
    pub dataset: Dataset,
    /// Input tags.
    pub tags: Vec<KeyValue>,
}

/// A logged-model search request.
#[derive(Debug, Clone, Default)]
pub struct ModelSearch {
    /// Experiments.
    pub experiment_ids: Vec<String>,
    /// Filter string.
    pub filter: String,
    /// Dataset scope: (name, digest).
    pub datasets: Vec<(String, Option<String>)>,
    /// Order.
    pub order_by: Vec<ModelOrder>,
    /// Page size.
    pub max_results: Option<i64>,
    /// Page token.
    pub page_token: Option<String>,
}

/// Writes a validated batch; returns the metric series ids it had to look up (to be cached
/// once the transaction commits).
fn write_batch(
    c: &Conn<'_>,
    run_id: &str,
    batch: &Batch,
    known: &HashMap<String, i64>,
) -> Result<HashMap<String, i64>> {
    sql::require_active_run(c, run_id)?;
    for p in &batch.params {
        let inserted = c.execute(
            "INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?) \
             ON CONFLICT (run_uuid, key) DO NOTHING",
            &[run_id.into(), (&p.key).into(), (&p.value).into()],
        )?;
        if inserted == 0 {
            let old = c.query_opt(
                "SELECT value FROM params WHERE run_uuid = ? AND key = ?",
                &[run_id.into(), (&p.key).into()],
                |r| r.string(0),
            )?;
            if let Some(old) = old
                && old != p.value
            {
                return Err(Error::InvalidParameter(format!(
                    "Changing param values is not allowed. Param with key='{}' was already \
                     logged with value='{old}' for run ID='{run_id}'. Attempted logging new \
                     value '{}'.",
                    p.key, p.value
                )));
            }
        }
    }
    for t in &batch.tags {
        set_run_tag(c, run_id, &t.key, &t.value)?;
    }
    if batch.metrics.is_empty() {
        return Ok(HashMap::new());
    }
    let points: Vec<&Metric> = batch.metrics.iter().map(|lm| &lm.metric).collect();
    let looked_up = sql::insert_metric_points(c, run_id, &points, known)?;
    for lm in &batch.metrics {
        let Some(model_id) = &lm.model_id else {
            continue;
        };
        let m = &lm.metric;
        let nan = m.value.is_nan();
        let value = if nan { 0.0 } else { m.value };
        c.execute(
            "INSERT INTO logged_model_metrics (model_id, key, timestamp, step, value, is_nan, \
             run_uuid, dataset_name, dataset_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
            &[
                model_id.into(),
                m.key.as_str().into(),
                m.timestamp.into(),
                m.step.into(),
                value.into(),
                nan.into(),
                run_id.into(),
                lm.dataset_name.as_deref().unwrap_or("").into(),
                lm.dataset_digest.as_deref().unwrap_or("").into(),
            ],
        )?;
    }
    Ok(looked_up)
}

fn set_run_tag(c: &Conn<'_>, run_id: &str, key: &str, value: &str) -> Result<()> {
    c.execute(
        "INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) \
         ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value",
        &[run_id.into(), key.into(), value.into()],
    )?;
    if key == RUN_NAME_TAG {
        c.execute(
            "UPDATE runs SET name = ? WHERE run_uuid = ?",
            &[value.into(), run_id.into()],
        )?;
    }
    Ok(())
}

fn validate_experiment_tag(t: &KeyValue) -> Result<()> {
    v::validate_key(&t.key, "key")?;
    if t.value.chars().count() > v::MAX_EXPERIMENT_TAG_VALUE_LEN {
        return Err(Error::InvalidParameter(format!(
            "'value' exceeds the maximum length of {} characters",
            v::MAX_EXPERIMENT_TAG_VALUE_LEN
        )));
    }
    Ok(())
}

fn check_max_results(max: Option<i64>, default: i64, limit: i64, what: &str) -> Result<i64> {
    let m = max.unwrap_or(default);
    if m <= 0 || m > limit {
        return Err(Error::InvalidParameter(format!(
            "Invalid value {m} for parameter 'max_results' supplied. It must be at most {limit} \
             and at least 1 for {what}."
        )));
    }
    Ok(m)
}

fn artifact_base(location: &str) -> String {
    location.trim_end_matches('/').to_string()
}

impl TrackingService {
    /// Builds the service and applies the tracking migrations.
    pub fn new(db: Database, artifacts: ArtifactStore) -> Result<Self> {
        db.migrate("tracking", crate::MIGRATIONS)?;
        Ok(Self {
            db,
            artifacts,
            series: Arc::default(),
        })
    }

    /// The artifact store behind the proxy.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The metadata database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    // ---------------------------------------------------------------- experiments

    /// Creates a run.
    pub async fn create_run(
        &self,
        experiment_id: i64,
        user_id: Option<String>,
        run_name: Option<String>,
        start_time: Option<i64>,
        mut tags: Vec<KeyValue>,
    ) -> Result<Run> {
        for t in &mut tags {
            v::validate_key(&t.key, "key")?;
            t.value = v::truncate(std::mem::take(&mut t.value), v::MAX_TAG_VALUE_LEN);
        }
        let tag_name = tags
            .iter()
            .rev()
            .find(|t| t.key == RUN_NAME_TAG)
            .map(|t| t.value.clone());
        let run_name = run_name.filter(|n| !n.is_empty());
        if let (Some(a), Some(b)) = (&run_name, &tag_name)
            && a != b
        {
            return Err(Error::InvalidParameter(format!(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with \
                 different values (run_name='{a}', mlflow.runName='{b}')."
            )));
        }
        let name = run_name
            .or(tag_name)
            .unwrap_or_else(crate::names::random_name);
        if tag_names_missing(&tags, RUN_NAME_TAG) {
            tags.push(KeyValue {
                key: RUN_NAME_TAG.into(),
                value: name.clone(),
            });
        }
        let user = user_id
            .or_else(|| {
                tags.iter()
                    .find(|t| t.key == USER_TAG)
                    .map(|t| t.value.clone())
            })
            .unwrap_or_default();
        let run_id = new_id();
        let start = start_time.unwrap_or_else(now_ms);
        let rid = run_id.clone();
        self.db
            .write(move |c| {
                let e = sql::require_experiment(c, experiment_id)?;
                if e.lifecycle_stage != LifecycleStage::Active {
                    return Err(Error::InvalidParameter(format!(
                        "The experiment {experiment_id} must be in the 'active' state. Current \
                         state is deleted."
                    )));
                }
                let artifact_uri =
                    format!("{}/{rid}/artifacts", artifact_base(&e.artifact_location));
                c.execute(
                    "INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time, \
                     end_time, artifact_uri, lifecycle_stage) \
                     VALUES (?, ?, ?, ?, 'RUNNING', ?, NULL, ?, 'active')",
                    &[
                        (&rid).into(),
                        experiment_id.into(),
                        (&name).into(),
                        (&user).into(),
                        start.into(),
                        (&artifact_uri).into(),
                    ],
                )?;
                for t in &tags {
                    set_run_tag(c, &rid, &t.key, &t.value)?;
                }
                Ok::<(), Error>(())
            })
            .await?;
        self.get_run(run_id).await
    }

    /// Gets a run.
    pub async fn get_run(&self, run_id: String) -> Result<Run> {
        v::validate_run_id(&run_id)?;
        self.db
            .read(move |c| {
                sql::runs_by_ids(c, std::slice::from_ref(&run_id))?
                    .pop()
                    .ok_or_else(|| Error::NotFound(format!("Run with id={run_id} not found")))
            })
            .await
    }

    /// The experiment a run belongs to (one primary-key read: for permission checks, which run
    /// on every write to a run).
    pub async fn run_experiment_id(&self, run_id: String) -> Result<i64> {
        v::validate_run_id(&run_id)?;
        self.db
            .read(move |c| {
                c.query_opt(
                    "SELECT experiment_id FROM runs WHERE run_uuid = ?1",
                    &[run_id.as_str().into()],
                    |r| r.i64(0),
                )?
                .ok_or_else(|| Error::NotFound(format!("Run with id={run_id} not found")))
            })
            .await
    }

    /// Updates status, end time and/or name of a run; returns its info.
    pub async fn update_run(
        &self,
        run_id: String,
        status: Option<RunStatus>,
        end_time: Option<i64>,
        run_name: Option<String>,
    ) -> Result<RunInfo> {
        v::validate_run_id(&run_id)?;
        self.db
            .write(move |c| {
                sql::require_active_run(c, &run_id)?;
                if let Some(s) = status {
                    c.execute(
                        "UPDATE runs SET status = ? WHERE run_uuid = ?",
                        &[s.as_str().into(), (&run_id).into()],
                    )?;
                }
                if let Some(t) = end_time {
                    c.execute(
                        "UPDATE runs SET end_time = ? WHERE run_uuid = ?",
                        &[t.into(), (&run_id).into()],
                    )?;
                }
                if let Some(n) = run_name.filter(|n| !n.is_empty()) {
                    set_run_tag(c, &run_id, RUN_NAME_TAG, &n)?;
                }
                sql::require_run(c, &run_id)
            })
            .await
    }

    /// Soft-deletes or restores a run.
    pub async fn set_run_lifecycle(&self, run_id: String, stage: LifecycleStage) -> Result<()> {
        v::validate_run_id(&run_id)?;
        self.db
            .write(move |c| {
                sql::require_run(c, &run_id)?;
                let deleted_time: Value<'_> = if stage == LifecycleStage::Deleted {
                    now_ms().into()
                } else {
                    Value::Null
                };
                c.execute(
                    "UPDATE runs SET lifecycle_stage = ?, deleted_time = ? WHERE run_uuid = ?",
                    &[stage.as_str().into(), deleted_time, (&run_id).into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Logs metrics, params and tags atomically.
    pub async fn log_batch(&self, run_id: String, batch: Batch) -> Result<()> {
        v::validate_run_id(&run_id)?;
        let batch = batch.validate()?;
        let known = self.series.known(&run_id, &batch);
        let series = Arc::clone(&self.series);
        self.db
            .write(move |c| {
                let looked_up = write_batch(c, &run_id, &batch, &known)?;
                Ok((run_id, looked_up))
            })
            .await
            .map(|(run_id, looked_up)| series.remember(&run_id, looked_up))
    }

    /// Appends a model's summary to the run's `mlflow.log-model.history` tag, as mlflow
    /// server's `runs/log-model` does: `run_id`, `artifact_path`, `utc_time_created`,
    /// `model_uuid` and each flavor without its `config`, in Python's `json.dumps` layout.
    pub async fn record_logged_model(
        &self,
        run_id: String,
        model: serde_json::Value,
    ) -> Result<()> {
        v::validate_run_id(&run_id)?;
        let serde_json::Value::Object(m) = model else {
            return Err(Error::InvalidParameter(
                "Model json must be a JSON object.".into(),
            ));
        };
        let mut missing: Vec<&str> = ["artifact_path", "flavors", "utc_time_created", "run_id"]
            .into_iter()
            .filter(|k| !m.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            let names: Vec<String> = missing.iter().map(|k| format!("'{k}'")).collect();
            return Err(Error::InvalidParameter(format!(
                "Model json is missing mandatory fields: {{{}}}",
                names.join(", ")
            )));
        }
        let mut pairs: Vec<(&str, serde_json::Value)> = Vec::new();
        for key in ["run_id", "artifact_path", "utc_time_created", "model_uuid"] {
            if let Some(v) = m.get(key) {
                pairs.push((key, v.clone()));
            }
        }
        let flavors = match m.get("flavors") {
            Some(serde_json::Value::Object(f)) => serde_json::Value::Object(
                f.iter()
                    .map(|(name, conf)| {
                        let conf = match conf {
                            serde_json::Value::Object(c) => serde_json::Value::Object(
                                c.iter()
                                    .filter(|(k, _)| k.as_str() != "config")
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            ),
                            other => other.clone(),
                        };
                        (name.clone(), conf)
                    })
                    .collect(),
            ),
            Some(other) => other.clone(),
            None => serde_json::Value::Null,
        };
        pairs.push(("flavors", flavors));
        let entry = crate::pyjson::dumps_object(&pairs);
        self.db
            .write(move |c| {
                sql::require_active_run(c, &run_id)?;
                let previous: Option<String> = c.query_opt(
                    "SELECT value FROM tags WHERE run_uuid = ? AND key = ?",
                    &[(&run_id).into(), LOG_MODEL_HISTORY_TAG.into()],
                    |r| r.string(0),
                )?;
                // The earlier entries are kept as they were written: their text is spliced,
                // not re-encoded, so key order and number forms survive.
                let value = match previous.as_deref().map(str::trim) {
                    Some(p) if p.starts_with('[') && p.ends_with(']') && p.len() > 2 => {
                        format!("{}, {entry}]", &p[..p.len() - 1])
                    }
                    _ => format!("[{entry}]"),
                };
                if value.len() > v::MAX_TAG_VALUE_LEN {
                    return Err(Error::InvalidParameter(format!(
                        "'{LOG_MODEL_HISTORY_TAG}' would exceed the maximum tag value length of \
                         {} characters; the model is logged, its history tag is not extended.",
                        v::MAX_TAG_VALUE_LEN
                    )));
                }
                set_run_tag(c, &run_id, LOG_MODEL_HISTORY_TAG, &value)
            })
            .await
    }

    /// Deletes a run tag.
    pub async fn delete_tag(&self, run_id: String, key: String) -> Result<()> {
        v::validate_run_id(&run_id)?;
        self.db
            .write(move |c| {
                sql::require_active_run(c, &run_id)?;
                let n = c.execute(
                    "DELETE FROM tags WHERE run_uuid = ? AND key = ?",
                    &[(&run_id).into(), (&key).into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound(format!(
                        "No tag with name: {key} in run with id {run_id}"
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Searches runs with MLflow's filter grammar.
    pub async fn search_runs(
        &self,
        experiment_ids: Vec<String>,
        filter: Option<String>,
        view: ViewType,
        max_results: Option<i64>,
        order_by: Vec<String>,
        page_token: Option<String>,
    ) -> Result<Page<Run>> {
        let max = check_max_results(max_results, 1000, v::MAX_RUNS_SEARCH, "run searches")?;
        let exp_ids = experiment_ids
            .iter()
            .map(|e| v::parse_experiment_id(e))
            .collect::<Result<Vec<_>>>()?;
        let clauses = parse_filter(filter.as_deref().unwrap_or(""))?;
        let order = order_by
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| parse_order_by(o))
            .collect::<Result<Vec<_>>>()?;
        let page = v::decode_runs_page_token(page_token.as_deref())?;
        if exp_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        }
        let q = sql::search_runs_sql(&exp_ids, view.stages(), &clauses, &order, max + 1, &page)?;
        let mut rows: Vec<(String, Vec<sql::SortValue>)> = self
            .db
            .read(move |c| {
                Ok::<_, Error>(c.query(&q.sql, &q.params, |r| {
                    Ok((r.string(0)?, sql::sort_values(r, &q.kinds)?))
                })?)
            })
            .await?;
        let more = rows.len() as i64 > max;
        rows.truncate(max as usize);
        let next_page_token = if more {
            rows.last()
                .map(|(_, after)| v::encode_runs_page_token(after))
        } else {
            None
        };
        let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
        // Large pages load params/tags and the rest on two reader connections at once.
        let ids = std::sync::Arc::new(ids);
        let (a, b) = (ids.clone(), ids.clone());
        let (cores, kvs) = tokio::try_join!(
            self.db.read(move |c| sql::run_cores(c, &a)),
            self.db.read(move |c| sql::run_key_values(c, &b)),
        )?;
        Ok(Page {
            items: sql::assemble_runs(&ids, cores, kvs),
            next_page_token,
        })
    }

    /// One page of a metric's history, ordered by timestamp, step, value.
    pub async fn metric_history(
        &self,
        run_id: String,
        key: String,
        max_results: Option<i64>,
        page_token: Option<String>,
    ) -> Result<Page<Metric>> {
        v::validate_run_id(&run_id)?;
        if let Some(m) = max_results
            && m <= 0
        {
            return Err(Error::InvalidParameter(format!(
                "Invalid value {m} for parameter 'max_results' supplied: it must be positive."
            )));
        }
        let paged = max_results.is_some() || page_token.is_some();
        let max = max_results.unwrap_or(MAX_HISTORY_UNPAGED);
        let after = v::decode_history_token(page_token.as_deref())?;
        self.db
            .read(move |c| {
                sql::require_run(c, &run_id)?;
                let Some(series) = sql::metric_series_id(c, &run_id, &key)? else {
                    return Ok(Page {
                        items: Vec::new(),
                        next_page_token: None,
                    });
                };
                let mut rows = sql::metric_history_page(c, series, &key, after, max + 1)?;
                let more = paged && rows.len() as i64 > max;
                rows.truncate(max as usize);
                let next_page_token = if more {
                    rows.last()
                        .map(|(_, cursor)| v::encode_history_token(cursor))
                } else {
                    None
                };
                Ok(Page {
                    items: rows.into_iter().map(|(m, _)| m).collect(),
                    next_page_token,
                })
            })
            .await
    }

    /// Whole histories of one metric for up to 100 runs (`get-history-bulk`, the MLflow UI's
    /// older chart route), ordered by run id, timestamp, step and value, at most `max_results`
    /// points in all (25,000 when absent, as in mlflow server). Runs this server does not hold
    /// contribute no points.
    pub async fn metric_history_bulk(
        &self,
        mut run_ids: Vec<String>,
        key: Option<String>,
        max_results: Option<i64>,
    ) -> Result<Vec<(String, Metric)>> {
        if run_ids.is_empty() {
            return Err(Error::InvalidParameter(
                "GetMetricHistoryBulk request must specify at least one run_id.".into(),
            ));
        }
        if run_ids.len() > MAX_BULK_RUNS {
            return Err(Error::InvalidParameter(format!(
                "GetMetricHistoryBulk request cannot specify more than {MAX_BULK_RUNS} run_ids. \
                 Received {} run_ids.",
                run_ids.len()
            )));
        }
        let key = key.ok_or_else(|| {
            Error::InvalidParameter(
                "GetMetricHistoryBulk request must specify a metric_key.".into(),
            )
        })?;
        let max = max_results
            .unwrap_or(MAX_BULK_HISTORY)
            .min(MAX_BULK_HISTORY);
        if max <= 0 {
            return Ok(Vec::new());
        }
        run_ids.sort();
        run_ids.dedup();
        self.db
            .read(move |c| {
                let mut out = Vec::new();
                for run_id in &run_ids {
                    let left = max - out.len() as i64;
                    if left <= 0 {
                        break;
                    }
                    let Some(series) = sql::metric_series_id(c, run_id, &key)? else {
                        continue;
                    };
                    let mut rows = sql::metric_history_page(c, series, &key, None, left)?;
                    rows.truncate(left as usize);
                    out.extend(rows.into_iter().map(|(m, _)| (run_id.clone(), m)));
                }
                Ok(out)
            })
            .await
    }

    /// Metric history of up to 100 runs for charts (`get-history-bulk-interval`): per run, at
    /// most `max_results` points (2,500 when absent) sampled evenly over the points logged
    /// between `start_step` and `end_step` (both or neither), ordered by step, timestamp and
    /// value, always ending with the run's last point — mlflow server 3.17's sampling, which
    /// stays bounded when many values share one step. Runs this server does not hold
    /// contribute no points, as there.
    pub async fn metric_history_bulk_interval(
        &self,
        run_ids: Vec<String>,
        key: Option<String>,
        start_step: Option<i64>,
        end_step: Option<i64>,
        max_results: Option<i64>,
    ) -> Result<Vec<(String, Metric)>> {
        if run_ids.is_empty() {
            return Err(Error::missing("run_ids"));
        }
        if run_ids.len() > MAX_BULK_RUNS {
            return Err(Error::InvalidParameter(format!(
                "GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} \
                 run_ids. Received {} run_ids.",
                run_ids.len()
            )));
        }
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::missing("metric_key"))?;
        let max = max_results.unwrap_or(MAX_SAMPLED_POINTS);
        if !(1..=MAX_SAMPLED_POINTS).contains(&max) {
            return Err(Error::InvalidParameter(format!(
                "max_results must be between 1 and {MAX_SAMPLED_POINTS}."
            )));
        }
        let (lo, hi) = match (start_step, end_step) {
            (Some(a), Some(b)) if a > b => {
                return Err(Error::InvalidParameter(format!(
                    "end_step must be greater than start_step. Found start_step={a} and \
                     end_step={b}."
                )));
            }
            (Some(a), Some(b)) => (a, b),
            (None, None) => (i64::MIN, i64::MAX),
            _ => {
                return Err(Error::InvalidParameter(
                    "If either start step or end step are specified, both must be specified."
                        .into(),
                ));
            }
        };
        self.db
            .read(move |c| {
                let mut out = Vec::new();
                for run_id in &run_ids {
                    if let Some(series) = sql::metric_series_id(c, run_id, &key)? {
                        let points = sql::metric_points_sampled(c, series, &key, lo, hi, max)?;
                        out.extend(points.into_iter().map(|p| (run_id.clone(), p)));
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Dataset summaries of experiments (`experiments/search-datasets`, the MLflow UI's
    /// dataset filter): each distinct (experiment, name, digest, context) their runs used, the
    /// context being the input's `mlflow.data.context` tag (absent when it has none); at most
    /// 1,000 and 20 experiments at once, as in mlflow server.
    pub async fn search_dataset_summaries(
        &self,
        experiment_ids: Vec<String>,
    ) -> Result<Vec<DatasetSummary>> {
        if experiment_ids.is_empty() {
            return Err(Error::InvalidParameter(
                "SearchDatasets request must specify at least one experiment_id.".into(),
            ));
        }
        if experiment_ids.len() > MAX_DATASET_SEARCH_EXPERIMENTS {
            return Err(Error::InvalidParameter(format!(
                "SearchDatasets request cannot specify more than \
                 {MAX_DATASET_SEARCH_EXPERIMENTS} experiment_ids. Received {} experiment_ids.",
                experiment_ids.len()
            )));
        }
        let ids = experiment_ids
            .iter()
            .map(|e| crate::validation::parse_experiment_id(e))
            .collect::<Result<Vec<i64>>>()?;
        self.db
            .read(move |c| sql::dataset_summaries(c, &ids, MAX_DATASET_SUMMARIES))
            .await
    }
}

fn tag_names_missing(tags: &[KeyValue], key: &str) -> bool {
    !tags.iter().any(|t| t.key == key)
}

fn upsert_model_kvs(c: &Conn<'_>, id: &str, table: &str, kvs: &[KeyValue]) -> Result<()> {
    let sql = format!(
        "INSERT INTO {table} (model_id, key, value) VALUES (?, ?, ?) \
         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value"
    );
    for kv in kvs {
        c.execute(&sql, &[id.into(), (&kv.key).into(), (&kv.value).into()])?;
    }
    Ok(())
}

fn validate_dataset(d: &NewDatasetInput) -> Result<()> {
    let ds = &d.dataset;
    let check = |field: &str, val: &str, max: usize, required: bool| -> Result<()> {
        if required && val.is_empty() {
            return Err(Error::missing(&format!("dataset.{field}")));
        }
        if val.len() > max {
            return Err(Error::InvalidParameter(format!(
                "Dataset {field} '{}…' exceeds the maximum length of {max}",
                val.chars().take(40).collect::<String>()
            )));
        }
        Ok(())
    };
    check("name", &ds.name, 500, true)?;
    check("digest", &ds.digest, 36, true)?;
    check("source_type", &ds.source_type, 36, true)?;
    check("source", &ds.source, 65535, true)?;
    check("schema", ds.schema.as_deref().unwrap_or(""), 1 << 20, false)?;
    check(
        "profile",
        ds.profile.as_deref().unwrap_or(""),
        16 << 20,
        false,
    )?;
    for t in &d.tags {
        if t.key.is_empty() || t.key.len() > 255 {
            return Err(Error::InvalidParameter(format!(
                "Dataset input tag key '{}' must be 1 to 255 characters",
                t.key
            )));
        }
        if t.value.len() > 500 {
            return Err(Error::InvalidParameter(format!(
                "Dataset input tag value for '{}' exceeds the maximum length of 500",
                t.key
            )));
        }
    }
    Ok(())
}
