//! Evaluating a monitor: read the window from the inference log, then run each check against
//! the reference dataset version (drift, quality) or the labels sent as feedback (performance).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::spec::{Check, Metric, MonitorSpec, Performance};

/// Columns every inference-log row has; never features.
pub const LOG_COLUMNS: &[&str] = &[
    "request_id",
    "row",
    "timestamp",
    "deployment",
    "variant",
    "model_version",
    "shadow",
    "status",
    "latency_us",
    "error",
    "truth",
    "reward",
    "feedback_at",
];

/// The outcome of one check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckResult {
    /// Check name.
    pub check: String,
    /// Check kind.
    pub kind: &'static str,
    /// `ok`, `breach`, `insufficient` (too few rows or labels) or `error`.
    pub status: &'static str,
    /// The measured value: drifted share, drift score, passed share of expectations, metric.
    pub value: Option<f64>,
    /// The bound it is compared with.
    pub threshold: Option<f64>,
    /// One line for people.
    pub message: String,
    /// Per-column scores, failed expectations, confusion counts, …
    pub details: Value,
}

/// One evaluation of a monitor.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Monitor.
    pub monitor: String,
    /// When (ms since the epoch).
    pub evaluated_at: i64,
    /// First and last prediction of the window (ms), when it has any.
    pub window_start: Option<i64>,
    /// Last prediction of the window (ms).
    pub window_end: Option<i64>,
    /// Predictions in the window.
    pub rows: usize,
    /// Labelled predictions in the window.
    pub labelled_rows: usize,
    /// Check results, in spec order.
    pub results: Vec<CheckResult>,
    /// Time the evaluation took.
    pub seconds: f64,
    /// The window as a Parquet file (kept until the next evaluation).
    #[serde(skip)]
    pub window_file: Option<PathBuf>,
    /// The window as training data — features, predictions and the label (the feedback's
    /// `truth`, named as the monitor's `target`, null where no label came) — written when an
    /// alert may start a pipeline.
    #[serde(skip)]
    pub training_file: Option<PathBuf>,
    /// The label column of `training_file`.
    #[serde(skip)]
    pub label_column: Option<String>,
}

impl Evaluation {
    /// Whether any check is breached.
    pub fn breached(&self) -> bool {
        self.results.iter().any(|r| r.status == "breach")
    }
}

/// Runs monitors' checks.
#[derive(Clone)]
pub struct Evaluator {
    /// The inference log the windows come from.
    pub log: loopml_serving::infer_log::InferenceLog,
    /// Dataset versions (the references).
    pub datasets: loopml_data::versions::DatasetStore,
    /// Scratch folder: windows, downloaded references, prediction baselines.
    pub work_dir: PathBuf,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

/// A local copy of the dataset version `reference` (`NAME@N` or `NAME`), downloaded once into
/// `work_dir/references` and kept by digest, with the exact version's reference (`NAME@N`).
pub async fn local_copy(
    datasets: &loopml_data::versions::DatasetStore,
    work_dir: &Path,
    reference: &str,
) -> Result<(PathBuf, String)> {
    let (name, version) = loopml_data::versions::parse_reference(reference)
        .map_err(|e| Error::Invalid(format!("dataset {reference}: {e}")))?;
    let v = datasets.get(&name, version).await.map_err(|e| match e {
        loopml_data::Error::NotFound(m) => Error::NotFound(format!(
            "dataset {reference}: {m} (add it with `loopml data add`)"
        )),
        other => Error::from(other),
    })?;
    let dir = work_dir.join("references");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::Evaluation(format!("{}: {e}", dir.display())))?;
    let file = dir.join(format!("{}.{}", v.digest, v.format));
    if !file.exists() {
        let tmp = dir.join(format!(".{}.{}.{}.part", v.digest, v.format, uuid_like()));
        datasets.download(&v, &tmp).await?;
        tokio::fs::rename(&tmp, &file)
            .await
            .map_err(|e| Error::Evaluation(format!("{}: {e}", file.display())))?;
    }
    Ok((file, v.reference()))
}

/// A name part unique to this call (two downloads of one version never share a temp file).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn now_ms() -> i64 {
    loopml_serving::infer_log::now_us() / 1000
}

impl Evaluator {
    /// The reference dataset version's file, downloaded once per content digest.
    pub async fn reference_file(&self, reference: &str) -> Result<PathBuf> {
        Ok(local_copy(&self.datasets, &self.work_dir, reference)
            .await?
            .0)
    }

    /// Reads the window: answered (non-shadow) predictions, with feedback joined.
    pub async fn window(&self, spec: &MonitorSpec) -> Result<RecordBatch> {
        let since_us = match &spec.window.duration {
            Some(d) => {
                let d = crate::spec::parse_duration(d)?;
                Some(
                    loopml_serving::infer_log::now_us()
                        - i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
                )
            }
            None => None,
        };
        let q = loopml_serving::infer_log::LogQuery {
            deployment: spec.deployment.clone(),
            since_us,
            until_us: None,
            variant: None,
            shadow: Some(false),
            limit: spec.window.rows,
            feedback: true,
        };
        Ok(self.log.query(&q).await?)
    }

    /// Evaluates every check of `spec` now.
    pub async fn evaluate(&self, spec: &MonitorSpec) -> Result<Evaluation> {
        let started = Instant::now();
        let evaluated_at = now_ms();
        let batch = self.window(spec).await?;
        let rows = batch.num_rows();
        let (window_start, window_end) = time_range(&batch);
        let labelled_rows = batch
            .column_by_name("truth")
            .map_or(0, |t| t.len() - t.null_count());
        let mut eval = Evaluation {
            monitor: spec.name.clone(),
            evaluated_at,
            window_start,
            window_end,
            rows,
            labelled_rows,
            results: Vec::new(),
            seconds: 0.0,
            window_file: None,
            training_file: None,
            label_column: None,
        };
        if rows < spec.min_rows.max(1) {
            eval.results = spec
                .checks
                .iter()
                .map(|c| CheckResult {
                    check: c.name(),
                    kind: c.kind(),
                    status: "insufficient",
                    value: None,
                    threshold: None,
                    message: format!(
                        "{rows} predictions in the window; the monitor needs {}",
                        spec.min_rows.max(1)
                    ),
                    details: json!({}),
                })
                .collect();
            eval.seconds = started.elapsed().as_secs_f64();
            return Ok(eval);
        }
        let dir = self.work_dir.join("windows");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::Evaluation(format!("{}: {e}", dir.display())))?;
        let window_file = dir.join(format!("{}.parquet", spec.name));
        let features = feature_batch(&batch)?;
        let bytes = loopml_serving::infer_log::to_parquet(&features)?;
        write_atomic(&window_file, &bytes).await?;
        eval.window_file = Some(window_file.clone());
        if spec.alerts.pipeline.is_some() {
            let label = spec.target.clone().unwrap_or_else(|| "truth".to_string());
            let training = training_batch(&features, &batch, &label)?;
            let file = dir.join(format!("{}.training.parquet", spec.name));
            write_atomic(&file, &loopml_serving::infer_log::to_parquet(&training)?).await?;
            eval.training_file = Some(file);
            eval.label_column = Some(label);
        }
        let reference = match self.reference_file(&spec.reference).await {
            Ok(r) => Ok(r),
            Err(e) => Err(e.to_string()),
        };
        for check in &spec.checks {
            let result = self
                .run_check(spec, check, &batch, &window_file, reference.as_ref())
                .await
                .unwrap_or_else(|e| CheckResult {
                    check: check.name(),
                    kind: check.kind(),
                    status: "error",
                    value: None,
                    threshold: None,
                    message: e.to_string(),
                    details: json!({}),
                });
            eval.results.push(result);
        }
        eval.seconds = started.elapsed().as_secs_f64();
        Ok(eval)
    }

    async fn run_check(
        &self,
        spec: &MonitorSpec,
        check: &Check,
        batch: &RecordBatch,
        window: &Path,
        reference: std::result::Result<&PathBuf, &String>,
    ) -> Result<CheckResult> {
        let name = check.name();
        match check {
            Check::FeatureDrift(f) => {
                let reference = reference.map_err(|e| Error::Evaluation(e.clone()))?.clone();
                let ref_cols = file_columns(&reference)?;
                let wanted: Vec<String> = match &spec.columns {
                    Some(c) => c.clone(),
                    None => ref_cols
                        .iter()
                        .filter(|c| Some(c.as_str()) != spec.target.as_deref())
                        .filter(|c| batch.column_by_name(c).is_some())
                        .cloned()
                        .collect(),
                };
                if wanted.is_empty() {
                    let log_cols: Vec<String> = batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .filter(|n| !LOG_COLUMNS.contains(&n.as_str()))
                        .collect();
                    return Err(Error::Evaluation(format!(
                        "no column of the reference {} ({}) is in the inference log of '{}' \
                         (its feature columns: {}); send requests with column names (MLflow \
                         dataframe_split) or list `columns`",
                        spec.reference,
                        ref_cols.join(", "),
                        spec.deployment,
                        log_cols.join(", ")
                    )));
                }
                let opts = loopml_data::drift::DriftOptions {
                    columns: Some(wanted),
                    method: f.method.as_deref().map(str::parse).transpose()?,
                    threshold: f.threshold,
                    drift_share: f.drift_share,
                    ..Default::default()
                };
                let window = window.to_path_buf();
                let report = tokio::task::spawn_blocking(move || {
                    loopml_data::drift::drift_files(&reference, &window, &opts)
                })
                .await
                .map_err(|e| Error::Evaluation(format!("drift check stopped: {e}")))??;
                let columns: Vec<Value> = report
                    .columns
                    .iter()
                    .map(|c| {
                        json!({"column": c.column, "method": c.method, "score": c.score,
                               "threshold": c.threshold, "drifted": c.drifted})
                    })
                    .collect();
                let drifted: Vec<&str> = report
                    .columns
                    .iter()
                    .filter(|c| c.drifted)
                    .map(|c| c.column.as_str())
                    .collect();
                Ok(CheckResult {
                    check: name,
                    kind: check.kind(),
                    status: if report.dataset_drift { "breach" } else { "ok" },
                    value: Some(report.share),
                    threshold: Some(report.drift_share),
                    message: format!(
                        "{} of {} columns drifted (share {:.2}, dataset drift at {:.2}){}",
                        report.drifted_columns,
                        report.columns.len(),
                        report.share,
                        report.drift_share,
                        if drifted.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", drifted.join(", "))
                        }
                    ),
                    details: json!({"columns": columns, "skipped": report.skipped}),
                })
            }
            Check::PredictionDrift(p) => {
                if batch.column_by_name(&p.column).is_none() {
                    return Err(Error::Evaluation(format!(
                        "the inference log of '{}' has no column '{}'",
                        spec.deployment, p.column
                    )));
                }
                // The baseline: the reference's own column when it has one, else the first
                // full window seen (kept).
                let from_reference = reference
                    .ok()
                    .filter(|r| file_columns(r).is_ok_and(|c| c.contains(&p.column)))
                    .cloned();
                let (baseline, source) = match from_reference {
                    Some(r) => (r, "reference"),
                    None => {
                        let b = self
                            .work_dir
                            .join("baselines")
                            .join(format!("{}.{}.parquet", spec.name, name));
                        if !b.exists() {
                            if let Some(dir) = b.parent() {
                                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                                    Error::Evaluation(format!("{}: {e}", dir.display()))
                                })?;
                            }
                            tokio::fs::copy(window, &b)
                                .await
                                .map_err(|e| Error::Evaluation(format!("{}: {e}", b.display())))?;
                        }
                        (b, "first window")
                    }
                };
                let opts = loopml_data::drift::DriftOptions {
                    columns: Some(vec![p.column.clone()]),
                    method: p.method.as_deref().map(str::parse).transpose()?,
                    threshold: p.threshold,
                    ..Default::default()
                };
                let window = window.to_path_buf();
                let report = tokio::task::spawn_blocking(move || {
                    loopml_data::drift::drift_files(&baseline, &window, &opts)
                })
                .await
                .map_err(|e| Error::Evaluation(format!("drift check stopped: {e}")))??;
                let Some(c) = report.columns.first() else {
                    let why = report
                        .skipped
                        .first()
                        .map_or("not checked".to_string(), |s| s.1.clone());
                    return Err(Error::Evaluation(format!("column '{}': {why}", p.column)));
                };
                Ok(CheckResult {
                    check: name,
                    kind: check.kind(),
                    status: if c.drifted { "breach" } else { "ok" },
                    value: Some(c.score),
                    threshold: Some(c.threshold),
                    message: format!(
                        "{} against the {source}: {} {:.4} (threshold {}){}",
                        p.column,
                        c.method_display,
                        c.score,
                        c.threshold,
                        if c.drifted { ", drifted" } else { "" }
                    ),
                    details: json!({"column": c.column, "method": c.method, "baseline": source,
                                    "plot": c.plot.labels.iter().zip(&c.plot.reference).zip(&c.plot.current)
                                        .map(|((l, r), cur)| json!({"bin": l, "baseline": r, "current": cur}))
                                        .collect::<Vec<_>>()}),
                })
            }
            Check::DataQuality(q) => {
                let suite = loopml_data::validate::Suite::from_yaml(&q.suite, &name)?;
                let window = window.to_path_buf();
                let base = self.work_dir.clone();
                let result = tokio::task::spawn_blocking(move || {
                    loopml_data::validate::validate_file(
                        &window,
                        &suite,
                        &loopml_data::validate::files_in(&base),
                    )
                })
                .await
                .map_err(|e| Error::Evaluation(format!("validation stopped: {e}")))??;
                let total = result.results.len();
                let failed: Vec<Value> = result
                    .results
                    .iter()
                    .filter(|r| !r.success)
                    .map(|r| json!({"expectation_type": r.expectation_type, "kwargs": r.kwargs}))
                    .collect();
                let passed = total - failed.len();
                Ok(CheckResult {
                    check: name,
                    kind: check.kind(),
                    status: if result.success { "ok" } else { "breach" },
                    value: Some(if total == 0 {
                        1.0
                    } else {
                        passed as f64 / total as f64
                    }),
                    threshold: Some(1.0),
                    message: format!(
                        "{passed} of {total} expectations of suite '{}' hold",
                        result.suite_name
                    ),
                    details: json!({"failed": failed}),
                })
            }
            Check::Performance(p) => performance(&name, p, batch),
        }
    }
}

/// The window without the log's bookkeeping columns: the features and predictions only.
fn feature_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !LOG_COLUMNS.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    batch
        .project(&keep)
        .map_err(|e| Error::Evaluation(format!("projecting the window: {e}")))
}

/// The window's features and predictions plus its labels as column `label`, typed as numbers
/// when every label is one (so it matches a numeric target of the training data).
fn training_batch(
    features: &RecordBatch,
    window: &RecordBatch,
    label: &str,
) -> Result<RecordBatch> {
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    let rows = features.num_rows();
    let truth: Vec<Option<String>> = match window.column_by_name("truth") {
        Some(t) => as_strings(t)?,
        None => vec![None; rows],
    };
    let labels: ArrayRef = if truth.iter().flatten().all(|t| t.parse::<i64>().is_ok()) {
        Arc::new(Int64Array::from(
            truth
                .iter()
                .map(|t| t.as_ref().and_then(|v| v.parse().ok()))
                .collect::<Vec<Option<i64>>>(),
        ))
    } else if truth.iter().flatten().all(|t| t.parse::<f64>().is_ok()) {
        Arc::new(Float64Array::from(
            truth
                .iter()
                .map(|t| t.as_ref().and_then(|v| v.parse().ok()))
                .collect::<Vec<Option<f64>>>(),
        ))
    } else {
        Arc::new(StringArray::from(truth))
    };
    let mut fields: Vec<Field> = features
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != label)
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = features
        .schema()
        .fields()
        .iter()
        .zip(features.columns())
        .filter(|(f, _)| f.name() != label)
        .map(|(_, c)| Arc::clone(c))
        .collect();
    fields.push(Field::new(label, labels.data_type().clone(), true));
    cols.push(labels);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| Error::Evaluation(format!("building the labelled window: {e}")))
}

fn time_range(batch: &RecordBatch) -> (Option<i64>, Option<i64>) {
    let Some(ts) = batch
        .column_by_name("timestamp")
        .and_then(|c| cast(c, &DataType::Int64).ok())
    else {
        return (None, None);
    };
    let ts = ts.as_primitive::<arrow::datatypes::Int64Type>();
    let min = arrow::compute::min(ts).map(|v| v / 1000);
    let max = arrow::compute::max(ts).map(|v| v / 1000);
    (min, max)
}

fn file_columns(path: &Path) -> Result<Vec<String>> {
    let reader = loopml_data::reader::BatchReader::open(path)?;
    Ok(reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("parquet.part");
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| Error::Evaluation(format!("{}: {e}", tmp.display())))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::Evaluation(format!("{}: {e}", path.display())))
}

/// A column's values as labels (`1`, `1.0` and `true` alike).
pub(crate) fn as_strings(col: &ArrayRef) -> Result<Vec<Option<String>>> {
    let s = cast(col, &DataType::Utf8)
        .map_err(|e| Error::Evaluation(format!("reading labels: {e}")))?;
    Ok(s.as_string::<i32>()
        .iter()
        .map(|v| v.map(normalise_label))
        .collect())
}

/// `1`, `1.0` and `true` are the same label.
pub(crate) fn normalise_label(v: &str) -> String {
    let t = v.trim();
    match t.parse::<f64>() {
        Ok(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        _ => match t {
            "true" | "True" => "1".into(),
            "false" | "False" => "0".into(),
            _ => t.to_string(),
        },
    }
}

/// A column's values as numbers (text parsed, other values absent).
pub(crate) fn as_numbers(col: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let f = match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => {
            let s = cast(col, &DataType::Utf8)
                .map_err(|e| Error::Evaluation(format!("reading values: {e}")))?;
            return Ok(s
                .as_string::<i32>()
                .iter()
                .map(|v| v.and_then(|x| x.trim().parse::<f64>().ok()))
                .collect());
        }
        _ => cast(col, &DataType::Float64)
            .map_err(|e| Error::Evaluation(format!("reading values: {e}")))?,
    };
    Ok(f.as_primitive::<Float64Type>().iter().collect())
}

/// Computes a performance metric over the labelled rows of the window.
fn performance(name: &str, p: &Performance, batch: &RecordBatch) -> Result<CheckResult> {
    let truth = batch.column_by_name("truth").ok_or_else(|| {
        Error::Evaluation(
            "the window has no labels yet: send them to the deployment's feedback endpoint".into(),
        )
    })?;
    let positive = normalise_label(p.positive.as_deref().unwrap_or("1"));
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // The output columns the check reads: as named, else the first default the log has —
    // the plain names (`zipmap: False`) or skl2onnx's default ZipMap names.
    let pick = |given: &Option<String>, defaults: &[String]| -> String {
        given.clone().unwrap_or_else(|| {
            defaults
                .iter()
                .find(|d| names.contains(d))
                .unwrap_or(&defaults[0])
                .clone()
        })
    };
    let pred_col = pick(
        &p.prediction,
        &[
            "out_label".to_string(),
            "out_output_label".to_string(),
            "out_predictions".to_string(),
            "out_variable".to_string(),
        ],
    );
    let score_col = pick(
        &p.score,
        &[
            format!("out_probabilities_{positive}"),
            format!("out_output_probability_{positive}"),
            format!("out_probability_{positive}"),
        ],
    );
    let col = |n: &str| {
        batch.column_by_name(n).cloned().ok_or_else(|| {
            Error::Evaluation(format!(
                "the inference log has no column '{n}'; its columns are {}",
                names
                    .iter()
                    .filter(|c| !matches!(
                        c.as_str(),
                        "request_id"
                            | "row"
                            | "timestamp"
                            | "deployment"
                            | "variant"
                            | "model_version"
                            | "shadow"
                            | "status"
                            | "latency_us"
                            | "error"
                    ))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    let insufficient = |n: usize| CheckResult {
        check: name.to_string(),
        kind: "performance",
        status: "insufficient",
        value: None,
        threshold: p.min.or(p.max),
        message: format!(
            "{n} labelled predictions in the window; the check needs {}",
            p.min_labels
        ),
        details: json!({"labelled": n}),
    };
    let (value, details) = match p.metric {
        Metric::Rmse | Metric::Mae => {
            let t = as_numbers(truth)?;
            let y = as_numbers(&col(&pred_col)?)?;
            let pairs: Vec<(f64, f64)> = t
                .iter()
                .zip(&y)
                .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .collect();
            if pairs.len() < p.min_labels.max(1) {
                return Ok(insufficient(pairs.len()));
            }
            let n = pairs.len() as f64;
            let v = if p.metric == Metric::Rmse {
                (pairs.iter().map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n).sqrt()
            } else {
                pairs.iter().map(|(a, b)| (a - b).abs()).sum::<f64>() / n
            };
            (v, json!({"labelled": pairs.len()}))
        }
        Metric::RocAuc => {
            let t = as_strings(truth)?;
            let s = as_numbers(&col(&score_col)?)?;
            let pairs: Vec<(bool, f64)> = t
                .iter()
                .zip(&s)
                .filter_map(|(a, b)| Some((a.as_ref()? == &positive, (*b)?)))
                .filter(|(_, b)| b.is_finite())
                .collect();
            if pairs.len() < p.min_labels.max(1) {
                return Ok(insufficient(pairs.len()));
            }
            let pos = pairs.iter().filter(|x| x.0).count();
            if pos == 0 || pos == pairs.len() {
                return Ok(CheckResult {
                    status: "insufficient",
                    message: "ROC AUC needs both classes among the labels".into(),
                    ..insufficient(pairs.len())
                });
            }
            (
                roc_auc(&pairs),
                json!({"labelled": pairs.len(), "positives": pos}),
            )
        }
        Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::F1 => {
            let t = as_strings(truth)?;
            let y = as_strings(&col(&pred_col)?)?;
            let pairs: Vec<(String, String)> = t
                .into_iter()
                .zip(y)
                .filter_map(|(a, b)| Some((a?, b?)))
                .collect();
            if pairs.len() < p.min_labels.max(1) {
                return Ok(insufficient(pairs.len()));
            }
            let (mut tp, mut fp, mut fneg, mut tn) = (0u64, 0u64, 0u64, 0u64);
            let mut correct = 0u64;
            for (a, b) in &pairs {
                correct += u64::from(a == b);
                match (a == &positive, b == &positive) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => fneg += 1,
                    (false, false) => tn += 1,
                }
            }
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            let precision = ratio(tp, tp + fp);
            let recall = ratio(tp, tp + fneg);
            let v = match p.metric {
                Metric::Accuracy => ratio(correct, pairs.len() as u64),
                Metric::Precision => precision,
                Metric::Recall => recall,
                _ => {
                    if precision + recall == 0.0 {
                        0.0
                    } else {
                        2.0 * precision * recall / (precision + recall)
                    }
                }
            };
            (
                v,
                json!({"labelled": pairs.len(), "tp": tp, "fp": fp, "fn": fneg, "tn": tn,
                       "positive": positive}),
            )
        }
    };
    let low = p.min.is_some_and(|m| value < m);
    let high = p.max.is_some_and(|m| value > m);
    let bound = if p.max.is_some() && p.min.is_none() {
        format!("max {}", p.max.unwrap_or_default())
    } else {
        format!("min {}", p.min.unwrap_or_default())
    };
    Ok(CheckResult {
        check: name.to_string(),
        kind: "performance",
        status: if low || high { "breach" } else { "ok" },
        value: Some(value),
        threshold: if high { p.max } else { p.min.or(p.max) },
        message: format!("{} {:.4} ({bound})", p.metric.name(), value),
        details,
    })
}

/// ROC AUC by ranks (Mann–Whitney U, ties averaged).
pub(crate) fn roc_auc(pairs: &[(bool, f64)]) -> f64 {
    let mut idx: Vec<usize> = (0..pairs.len()).collect();
    idx.sort_by(|&a, &b| pairs[a].1.total_cmp(&pairs[b].1));
    let mut ranks = vec![0.0; pairs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && pairs[idx[j + 1]].1 == pairs[idx[i]].1 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    let pos = pairs.iter().filter(|p| p.0).count() as f64;
    let neg = pairs.len() as f64 - pos;
    let sum: f64 = pairs
        .iter()
        .zip(&ranks)
        .filter(|(p, _)| p.0)
        .map(|(_, r)| r)
        .sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(truth: &[Option<&str>], label: &[i64], score: &[f64]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "truth",
                Arc::new(StringArray::from(truth.to_vec())) as ArrayRef,
            ),
            (
                "out_label",
                Arc::new(Int64Array::from(label.to_vec())) as ArrayRef,
            ),
            (
                "out_p",
                Arc::new(Float64Array::from(score.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn perf(metric: Metric, min: f64) -> Performance {
        Performance {
            name: None,
            metric,
            prediction: None,
            score: Some("out_p".into()),
            positive: None,
            min: Some(min),
            max: None,
            min_labels: 2,
        }
    }

    #[test]
    fn classification_metrics_match_hand_counts() {
        // tp=2 fp=1 fn=1 tn=1, one unlabelled row ignored.
        let b = batch(
            &[
                Some("1"),
                Some("1.0"),
                Some("0"),
                Some("1"),
                Some("0"),
                None,
            ],
            &[1, 1, 1, 0, 0, 1],
            &[0.9, 0.8, 0.7, 0.3, 0.2, 0.5],
        );
        let v = |m| performance("x", &perf(m, 0.0), &b).unwrap().value.unwrap();
        assert!((v(Metric::Accuracy) - 0.6).abs() < 1e-12);
        assert!((v(Metric::Precision) - 2.0 / 3.0).abs() < 1e-12);
        assert!((v(Metric::Recall) - 2.0 / 3.0).abs() < 1e-12);
        assert!((v(Metric::F1) - 2.0 / 3.0).abs() < 1e-12);
        // Scores: positives 0.9, 0.8, 0.3; negatives 0.7, 0.2 → 5 of 6 pairs ordered.
        assert!((v(Metric::RocAuc) - 5.0 / 6.0).abs() < 1e-12);
        let r = performance("x", &perf(Metric::Accuracy, 0.7), &b).unwrap();
        assert_eq!(r.status, "breach");
        let r = performance("x", &perf(Metric::Accuracy, 0.5), &b).unwrap();
        assert_eq!(r.status, "ok");
    }

    #[test]
    fn regression_metrics_and_too_few_labels() {
        let b = RecordBatch::try_from_iter(vec![
            (
                "truth",
                Arc::new(StringArray::from(vec![Some("1"), Some("3"), None])) as ArrayRef,
            ),
            (
                "out_variable",
                Arc::new(Float64Array::from(vec![2.0, 1.0, 5.0])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut p = perf(Metric::Rmse, 0.0);
        p.prediction = Some("out_variable".into());
        p.min = None;
        p.max = Some(1.0);
        let r = performance("x", &p, &b).unwrap();
        assert!((r.value.unwrap() - (2.5f64).sqrt()).abs() < 1e-12);
        assert_eq!(r.status, "breach");
        p.metric = Metric::Mae;
        assert!((performance("x", &p, &b).unwrap().value.unwrap() - 1.5).abs() < 1e-12);
        p.min_labels = 3;
        assert_eq!(performance("x", &p, &b).unwrap().status, "insufficient");
    }

    #[test]
    fn auc_handles_ties() {
        assert!((roc_auc(&[(true, 0.5), (false, 0.5)]) - 0.5).abs() < 1e-12);
        assert!((roc_auc(&[(true, 0.9), (false, 0.1)]) - 1.0).abs() < 1e-12);
    }
}
