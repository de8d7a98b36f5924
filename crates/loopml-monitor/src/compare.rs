//! `POST /api/2.0/loopml/models/compare`: registered model versions scored on one dataset
//! version — the same rows, the same ONNX path as serving, the performance check's metrics — so
//! a gate compares like with like. With two versions it adds a paired bootstrap of the
//! difference (second minus first), so a gate on a few rows does not promote on noise.
//!
//! Request: `{model, versions: ["3", "champion", …], dataset: "holdout@2", label, metric,
//! features?, prediction?, score?, positive?, resamples?, confidence?, seed?}`. Answer:
//! `{dataset (the exact version, `NAME@N`), rows, labelled_rows, metric, columns: {prediction | score}, versions: [{version,
//! requested, value}], difference?: {value, lower, upper, confidence, resamples}}` where `lower`
//! and `upper` are one-sided bounds at `confidence` (the share of resamples below `lower` is
//! `1 − confidence`).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::eval::{as_numbers, as_strings, normalise_label, roc_auc};
use crate::routes::ApiError;
use crate::spec::Metric;

/// Most versions one comparison scores.
const MAX_VERSIONS: usize = 8;
/// Most bootstrap resamples.
const MAX_RESAMPLES: usize = 20_000;

/// What the comparison route needs: the datasets (through the monitors' evaluator, which
/// caches downloaded versions) and the models.
#[derive(Clone)]
pub struct CompareApi {
    /// Dataset versions.
    pub datasets: loopml_data::versions::DatasetStore,
    /// Where downloaded versions are kept (shared with the monitors' references).
    pub work_dir: std::path::PathBuf,
    /// Loads registry versions for scoring.
    pub serving: loopml_serving::routes::ServingApi,
}

/// A comparison request (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// Registered model.
    pub model: String,
    /// Versions (numbers) or aliases, in the order answered.
    pub versions: Vec<String>,
    /// Dataset version, `NAME@N` (or `NAME` for its latest).
    pub dataset: String,
    /// The dataset's truth column.
    pub label: String,
    /// Metric: accuracy, precision, recall, f1, roc_auc, rmse, mae.
    pub metric: Metric,
    /// Columns given to the model (default: every column but `label`, in file order).
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// Output column holding the predicted label or value (default: `out_label`, else
    /// skl2onnx's `out_output_label`, else the only output).
    #[serde(default)]
    pub prediction: Option<String>,
    /// Output column holding the positive class's score, for roc_auc (default:
    /// `out_probabilities_{positive}`, else `out_output_probability_{positive}`).
    #[serde(default)]
    pub score: Option<String>,
    /// The positive class (default `1`).
    #[serde(default)]
    pub positive: Option<String>,
    /// Bootstrap resamples for the difference (default 1000; 0: none).
    #[serde(default)]
    pub resamples: Option<usize>,
    /// Confidence of the bounds (default 0.95).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Seed of the resampling (default 0: the same request gives the same bounds).
    #[serde(default)]
    pub seed: Option<u64>,
}

/// One column of values, as labels and as numbers.
struct Col {
    labels: Vec<Option<String>>,
    numbers: Vec<Option<f64>>,
}

impl Col {
    fn from_json(values: &[Value]) -> Self {
        let labels = values
            .iter()
            .map(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(normalise_label(s)),
                other => Some(normalise_label(&other.to_string())),
            })
            .collect();
        let numbers = values
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                _ => None,
            })
            .collect();
        Col { labels, numbers }
    }

    fn from_arrow(a: &ArrayRef) -> Result<Self> {
        Ok(Col {
            labels: as_strings(a)?,
            numbers: as_numbers(a)?,
        })
    }
}

/// `metric` of predictions `pred` against `truth` over the rows `idx` (None: not computable,
/// e.g. ROC AUC with one class).
fn metric_on(
    metric: Metric,
    positive: &str,
    truth: &Col,
    pred: &Col,
    idx: &[usize],
) -> Option<f64> {
    if idx.is_empty() {
        return None;
    }
    match metric {
        Metric::Rmse | Metric::Mae => {
            let mut sum = 0.0;
            for &i in idx {
                let d = truth.numbers[i]? - pred.numbers[i]?;
                sum += if metric == Metric::Rmse {
                    d * d
                } else {
                    d.abs()
                };
            }
            let mean = sum / idx.len() as f64;
            Some(if metric == Metric::Rmse {
                mean.sqrt()
            } else {
                mean
            })
        }
        Metric::RocAuc => {
            let pairs: Vec<(bool, f64)> = idx
                .iter()
                .map(|&i| Some((truth.labels[i].as_deref()? == positive, pred.numbers[i]?)))
                .collect::<Option<_>>()?;
            let pos = pairs.iter().filter(|p| p.0).count();
            (pos > 0 && pos < pairs.len()).then(|| roc_auc(&pairs))
        }
        Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::F1 => {
            let (mut tp, mut fp, mut fneg, mut correct) = (0u64, 0u64, 0u64, 0u64);
            for &i in idx {
                let (a, b) = (truth.labels[i].as_deref()?, pred.labels[i].as_deref()?);
                correct += u64::from(a == b);
                match (a == positive, b == positive) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => fneg += 1,
                    (false, false) => {}
                }
            }
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fneg));
            Some(match metric {
                Metric::Accuracy => ratio(correct, idx.len() as u64),
                Metric::Precision => precision,
                Metric::Recall => recall,
                _ if precision + recall == 0.0 => 0.0,
                _ => 2.0 * precision * recall / (precision + recall),
            })
        }
    }
}

/// One version's predictions on the labelled rows, prepared so that a metric over any
/// weighting of those rows (a bootstrap resample is one: each row's draw count) costs one pass:
/// labels compared once, scores sorted once.
enum Prepared {
    /// Label metrics: per row, truth is positive, prediction is positive, prediction is right.
    Labels {
        truth_pos: Vec<bool>,
        pred_pos: Vec<bool>,
        correct: Vec<bool>,
    },
    /// ROC AUC: rows in score order, with their class, and where runs of tied scores end.
    Ranked {
        order: Vec<usize>,
        pos: Vec<bool>,
        tie_end: Vec<bool>,
    },
    /// Errors of a regression.
    Errors { diff: Vec<f64> },
}

impl Prepared {
    fn new(metric: Metric, positive: &str, truth: &Col, pred: &Col, rows: &[usize]) -> Self {
        match metric {
            Metric::Rmse | Metric::Mae => Prepared::Errors {
                diff: rows
                    .iter()
                    .map(|&i| truth.numbers[i].unwrap_or(0.0) - pred.numbers[i].unwrap_or(0.0))
                    .collect(),
            },
            Metric::RocAuc => {
                let score: Vec<f64> = rows
                    .iter()
                    .map(|&i| pred.numbers[i].unwrap_or(0.0))
                    .collect();
                let pos: Vec<bool> = rows
                    .iter()
                    .map(|&i| truth.labels[i].as_deref() == Some(positive))
                    .collect();
                let mut order: Vec<usize> = (0..rows.len()).collect();
                order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
                let tie_end = (0..order.len())
                    .map(|k| k + 1 == order.len() || score[order[k + 1]] != score[order[k]])
                    .collect();
                Prepared::Ranked {
                    order,
                    pos,
                    tie_end,
                }
            }
            _ => {
                let label = |c: &Col, i: usize| c.labels[i].clone().unwrap_or_default();
                Prepared::Labels {
                    truth_pos: rows.iter().map(|&i| label(truth, i) == positive).collect(),
                    pred_pos: rows.iter().map(|&i| label(pred, i) == positive).collect(),
                    correct: rows
                        .iter()
                        .map(|&i| label(truth, i) == label(pred, i))
                        .collect(),
                }
            }
        }
    }

    /// The metric with row `k` counted `w[k]` times (None when it is not computable).
    fn value(&self, metric: Metric, w: &[u32]) -> Option<f64> {
        match self {
            Prepared::Errors { diff } => {
                let (mut sum, mut n) = (0.0, 0.0);
                for (d, &c) in diff.iter().zip(w) {
                    let c = f64::from(c);
                    sum += c * if metric == Metric::Rmse {
                        d * d
                    } else {
                        d.abs()
                    };
                    n += c;
                }
                (n > 0.0).then(|| {
                    let mean = sum / n;
                    if metric == Metric::Rmse {
                        mean.sqrt()
                    } else {
                        mean
                    }
                })
            }
            Prepared::Ranked {
                order,
                pos,
                tie_end,
            } => {
                // Mann–Whitney with weights: each positive counts the negatives below it, and
                // half of those tied with it.
                let (mut below, mut num, mut p, mut n) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                let (mut gp, mut gn) = (0.0f64, 0.0f64);
                for (k, &r) in order.iter().enumerate() {
                    let c = f64::from(w[r]);
                    if pos[r] {
                        gp += c
                    } else {
                        gn += c
                    }
                    if tie_end[k] {
                        num += gp * (below + gn / 2.0);
                        below += gn;
                        p += gp;
                        n += gn;
                        gp = 0.0;
                        gn = 0.0;
                    }
                }
                (p > 0.0 && n > 0.0).then(|| num / (p * n))
            }
            Prepared::Labels {
                truth_pos,
                pred_pos,
                correct,
            } => {
                let (mut tp, mut fp, mut fneg, mut right, mut all) = (0u64, 0u64, 0u64, 0u64, 0u64);
                for k in 0..w.len() {
                    let c = u64::from(w[k]);
                    all += c;
                    right += c * u64::from(correct[k]);
                    match (truth_pos[k], pred_pos[k]) {
                        (true, true) => tp += c,
                        (false, true) => fp += c,
                        (true, false) => fneg += c,
                        (false, false) => {}
                    }
                }
                if all == 0 {
                    return None;
                }
                let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fneg));
                Some(match metric {
                    Metric::Accuracy => ratio(right, all),
                    Metric::Precision => precision,
                    Metric::Recall => recall,
                    _ if precision + recall == 0.0 => 0.0,
                    _ => 2.0 * precision * recall / (precision + recall),
                })
            }
        }
    }
}

/// The output column a metric reads, from the request or the defaults, or an error naming the
/// outputs the model has.
fn pick_column(
    outputs: &[(String, Vec<Value>)],
    given: Option<&str>,
    defaults: &[String],
    what: &str,
) -> Result<usize> {
    let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
    let find = |n: &str| names.iter().position(|x| *x == n);
    if let Some(g) = given {
        return find(g).ok_or_else(|| {
            Error::Invalid(format!(
                "the model has no output column '{g}' for the {what}; its outputs are {}",
                names.join(", ")
            ))
        });
    }
    defaults
        .iter()
        .find_map(|d| find(d))
        .or_else(|| (names.len() == 1).then_some(0))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no output column for the {what} (tried {}); the model's outputs are {}: name \
                 one with `{}`",
                defaults.join(", "),
                names.join(", "),
                if what == "score" {
                    "score"
                } else {
                    "prediction"
                }
            ))
        })
}

/// Runs a comparison (see the module docs).
pub async fn compare(api: &CompareApi, req: CompareRequest) -> Result<Value> {
    if req.versions.is_empty() || req.versions.len() > MAX_VERSIONS {
        return Err(Error::Invalid(format!(
            "`versions` must name 1 to {MAX_VERSIONS} versions or aliases"
        )));
    }
    let confidence = req.confidence.unwrap_or(0.95);
    if !(0.5..1.0).contains(&confidence) {
        return Err(Error::Invalid(format!(
            "`confidence` must be at least 0.5 and below 1, got {confidence}"
        )));
    }
    let resamples = req.resamples.unwrap_or(1000);
    if resamples > MAX_RESAMPLES {
        return Err(Error::Invalid(format!(
            "`resamples` must be at most {MAX_RESAMPLES}, got {resamples}"
        )));
    }
    let positive = normalise_label(req.positive.as_deref().unwrap_or("1"));
    let (file, exact) = crate::eval::local_copy(&api.datasets, &api.work_dir, &req.dataset).await?;
    let (label, features) = (req.label.clone(), req.features.clone());
    let (columns, rows, truth) =
        tokio::task::spawn_blocking(move || read_table(&file, &label, features.as_deref()))
            .await
            .map_err(|e| Error::Evaluation(format!("reading the dataset stopped: {e}")))??;

    let mut scored = Vec::new();
    for requested in &req.versions {
        let uri = if requested.chars().all(|c| c.is_ascii_digit()) {
            format!("models:/{}/{requested}", req.model)
        } else {
            format!("models:/{}@{requested}", req.model)
        };
        let (version, model) = api
            .serving
            .load_for_scoring(&uri)
            .await
            .map_err(|e| match e {
                loopml_serving::Error::NotFound(m) => Error::NotFound(m),
                other => Error::Invalid(format!("{uri}: {other}")),
            })?;
        let (c, r) = (columns.clone(), Arc::clone(&rows));
        let outputs = tokio::task::spawn_blocking(move || {
            loopml_serving::scoring::predict_table(&model, &c, &r)
        })
        .await
        .map_err(|e| Error::Evaluation(format!("scoring stopped: {e}")))?
        .map_err(|e| Error::Invalid(format!("{uri} on {exact}: {e}")))?;
        scored.push((requested.clone(), version, outputs));
    }

    // The column each version is read from: the same rule for every version.
    let (what, given, defaults) = if req.metric == Metric::RocAuc {
        (
            "score",
            req.score.as_deref(),
            vec![
                format!("out_probabilities_{positive}"),
                format!("out_output_probability_{positive}"),
                format!("out_probability_{positive}"),
            ],
        )
    } else {
        (
            "prediction",
            req.prediction.as_deref(),
            vec![
                "out_label".to_string(),
                "out_output_label".to_string(),
                "out_predictions".to_string(),
                "out_variable".to_string(),
            ],
        )
    };
    let mut preds = Vec::new();
    let mut column_names = Vec::new();
    for (_, _, outputs) in &scored {
        let i = pick_column(outputs, given, &defaults, what)?;
        column_names.push(outputs[i].0.clone());
        preds.push(Col::from_json(&outputs[i].1));
    }
    // Rows every version can be scored on: a truth value and a prediction from each.
    let labelled: Vec<usize> = (0..truth.labels.len())
        .filter(|&i| {
            let t = match req.metric {
                Metric::Rmse | Metric::Mae => truth.numbers[i].is_some(),
                _ => truth.labels[i].is_some(),
            };
            t && preds.iter().all(|p| match req.metric {
                Metric::Rmse | Metric::Mae | Metric::RocAuc => {
                    p.numbers[i].is_some_and(f64::is_finite)
                }
                _ => p.labels[i].is_some(),
            })
        })
        .collect();
    let values: Vec<Option<f64>> = preds
        .iter()
        .map(|p| metric_on(req.metric, &positive, &truth, p, &labelled))
        .collect();
    let versions: Vec<Value> = scored
        .iter()
        .zip(&values)
        .zip(&column_names)
        .map(|(((requested, version, _), value), col)| {
            json!({"requested": requested, "version": version, "value": value, "column": col})
        })
        .collect();
    let mut answer = json!({
        "dataset": exact,
        "rows": truth.labels.len(),
        "labelled_rows": labelled.len(),
        "metric": req.metric.name(),
        "positive": positive,
        "versions": versions,
    });
    if let ([Some(a), Some(b)], true) = (&values[..], preds.len() == 2 && resamples > 0) {
        let first = Prepared::new(req.metric, &positive, &truth, &preds[0], &labelled);
        let second = Prepared::new(req.metric, &positive, &truth, &preds[1], &labelled);
        let mut rng = rand::rngs::StdRng::seed_from_u64(req.seed.unwrap_or(0));
        let n = labelled.len();
        let mut diffs = Vec::with_capacity(resamples);
        // A resample of n rows with replacement, as each row's draw count.
        let mut weights = vec![0u32; n];
        for _ in 0..resamples {
            weights.fill(0);
            for _ in 0..n {
                weights[rng.random_range(0..n)] += 1;
            }
            if let (Some(x), Some(y)) = (
                first.value(req.metric, &weights),
                second.value(req.metric, &weights),
            ) {
                diffs.push(y - x);
            }
        }
        diffs.sort_by(f64::total_cmp);
        let q = |p: f64| -> Option<f64> {
            if diffs.is_empty() {
                return None;
            }
            let k = ((diffs.len() - 1) as f64 * p).round() as usize;
            Some(diffs[k.min(diffs.len() - 1)])
        };
        answer["difference"] = json!({
            "value": b - a,
            "lower": q(1.0 - confidence),
            "upper": q(confidence),
            "confidence": confidence,
            "resamples": diffs.len(),
        });
    }
    Ok(answer)
}

/// A dataset read for scoring: feature names, rows of feature values, the truth column.
type Table = (Vec<String>, Arc<Vec<Vec<Value>>>, Col);

/// The dataset's feature columns as rows of JSON values, and its truth column.
fn read_table(file: &std::path::Path, label: &str, features: Option<&[String]>) -> Result<Table> {
    let reader = loopml_data::reader::BatchReader::open(file)?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Invalid(format!("reading the dataset: {e}")))?;
    let all = concat_batches(&schema, &batches)
        .map_err(|e| Error::Invalid(format!("reading the dataset: {e}")))?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let label_col = all.column_by_name(label).ok_or_else(|| {
        Error::Invalid(format!(
            "the dataset has no label column '{label}'; its columns are {}",
            names.join(", ")
        ))
    })?;
    let truth = Col::from_arrow(label_col)?;
    let columns: Vec<String> = match features {
        Some(f) => {
            for c in f {
                if !names.contains(c) {
                    return Err(Error::Invalid(format!(
                        "the dataset has no feature column '{c}'; its columns are {}",
                        names.join(", ")
                    )));
                }
            }
            f.to_vec()
        }
        None => names.iter().filter(|n| *n != label).cloned().collect(),
    };
    let rows_json = loopml_serving::infer_log::to_json_rows(
        &all.project(
            &columns
                .iter()
                .filter_map(|c| schema.index_of(c).ok())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Error::Invalid(format!("reading the dataset: {e}")))?,
    );
    let rows: Vec<Vec<Value>> = rows_json
        .into_iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok((columns, Arc::new(rows), truth))
}

async fn compare_route(State(api): State<CompareApi>, body: axum::body::Bytes) -> Response {
    let req: CompareRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::from(Error::Invalid(format!("invalid comparison request: {e}")))
                .into_response();
        }
    };
    match compare(&api, req).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The comparison route.
pub fn router(api: CompareApi) -> Router {
    Router::new()
        .route("/api/2.0/loopml/models/compare", post(compare_route))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(v: &[Value]) -> Col {
        Col::from_json(v)
    }

    #[test]
    fn metrics_over_row_subsets() {
        let truth = col(&[json!(1), json!(0), json!(1), json!(0)]);
        let pred = col(&[json!(1), json!(1), json!(1), json!(0)]);
        let all = [0, 1, 2, 3];
        assert_eq!(
            metric_on(Metric::Accuracy, "1", &truth, &pred, &all),
            Some(0.75)
        );
        assert_eq!(
            metric_on(Metric::Recall, "1", &truth, &pred, &all),
            Some(1.0)
        );
        assert!(
            (metric_on(Metric::Precision, "1", &truth, &pred, &all).unwrap() - 2.0 / 3.0).abs()
                < 1e-12
        );
        let score = col(&[json!(0.9), json!(0.2), json!(0.8), json!(0.1)]);
        assert_eq!(
            metric_on(Metric::RocAuc, "1", &truth, &score, &all),
            Some(1.0)
        );
        assert_eq!(
            metric_on(Metric::RocAuc, "1", &truth, &score, &[0, 2]),
            None,
            "one class"
        );
        let t = col(&[json!(1.0), json!(3.0)]);
        let p = col(&[json!(2.0), json!(3.0)]);
        assert!((metric_on(Metric::Mae, "1", &t, &p, &[0, 1]).unwrap() - 0.5).abs() < 1e-12);
        // Labels compare as labels: "1", 1, 1.0 and true are one class.
        let strings = col(&[json!("1"), json!(true), json!(1.0)]);
        let ones = col(&[json!(1), json!(1), json!(1)]);
        assert_eq!(
            metric_on(Metric::Accuracy, "1", &strings, &ones, &[0, 1, 2]),
            Some(1.0)
        );
    }

    #[test]
    fn weighted_metrics_equal_the_metric_on_the_repeated_rows() {
        let truth = col(&[json!(1), json!(0), json!(1), json!(0), json!(1)]);
        let label = col(&[json!(1), json!(1), json!(0), json!(0), json!(1)]);
        let score = col(&[json!(0.9), json!(0.4), json!(0.4), json!(0.1), json!(0.7)]);
        let rows = [0, 1, 2, 3, 4];
        // Weights 2,0,1,3,1 are the rows 0,0,2,3,3,3,4.
        let w = [2, 0, 1, 3, 1];
        let repeated = [0, 0, 2, 3, 3, 3, 4];
        for (metric, pred) in [
            (Metric::Accuracy, &label),
            (Metric::F1, &label),
            (Metric::Precision, &label),
            (Metric::RocAuc, &score),
            (Metric::Mae, &score),
            (Metric::Rmse, &score),
        ] {
            let p = Prepared::new(metric, "1", &truth, pred, &rows);
            let ones = p.value(metric, &[1; 5]).unwrap();
            let direct = metric_on(metric, "1", &truth, pred, &rows).unwrap();
            assert!(
                (ones - direct).abs() < 1e-12,
                "{metric:?}: {ones} vs {direct}"
            );
            let weighted = p.value(metric, &w).unwrap();
            let direct = metric_on(metric, "1", &truth, pred, &repeated).unwrap();
            assert!(
                (weighted - direct).abs() < 1e-12,
                "{metric:?}: {weighted} vs {direct}"
            );
        }
    }

    #[test]
    fn default_columns_cover_zipmap_and_plain_outputs() {
        let plain = vec![
            ("out_label".to_string(), vec![]),
            ("out_probabilities_1".to_string(), vec![]),
        ];
        let zipmap = vec![
            ("out_output_label".to_string(), vec![]),
            ("out_output_probability_0".to_string(), vec![]),
            ("out_output_probability_1".to_string(), vec![]),
        ];
        let score = [
            "out_probabilities_1".to_string(),
            "out_output_probability_1".to_string(),
        ];
        let label = ["out_label".to_string(), "out_output_label".to_string()];
        assert_eq!(pick_column(&plain, None, &score, "score").unwrap(), 1);
        assert_eq!(pick_column(&zipmap, None, &score, "score").unwrap(), 2);
        assert_eq!(pick_column(&zipmap, None, &label, "prediction").unwrap(), 0);
        let e = pick_column(&zipmap, Some("nope"), &label, "prediction")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("out_output_label, out_output_probability_0"),
            "{e}"
        );
    }
}
