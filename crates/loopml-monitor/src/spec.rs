//! Monitor specs, written as YAML or JSON:
//!
//! ```yaml
//! name: churn-health
//! deployment: churn                 # the deployment whose inference log is watched
//! reference: churn-train@1          # dataset version to compare against (NAME or NAME@N)
//! target: churned                   # the reference's label column (not drift-checked)
//! window: {rows: 500}               # the latest 500 predictions; or {duration: 1h}
//! interval: 30s                     # evaluate every 30 s (absent: only on demand)
//! min_rows: 100                     # fewer rows: checks report "insufficient"
//! checks:
//!   - feature_drift: {drift_share: 0.5}            # dataset drift over the reference's columns
//!   - prediction_drift: {column: out_label}         # against the reference column or the first window
//!   - data_quality: {suite: suite.yaml}             # an expectation suite must pass
//!   - performance: {metric: roc_auc, score: out_probabilities_1, min: 0.75}
//! alerts:
//!   webhooks: [http://hooks.example/alert]
//!   cooldown: 10m
//!   error_after: 3                  # a check that errors 3 times in a row alerts (0: never)
//!   pipeline: {file: pipeline.yaml, params: {rows: "5000"}}
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A monitor: checks over a deployment's inference log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Deployment (or model endpoint) whose inference log is watched.
    pub deployment: String,
    /// Reference dataset version, `NAME` (latest) or `NAME@N`.
    pub reference: String,
    /// The reference's label column, left out of drift checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Feature columns to check (default: every reference column found in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Which predictions form the window.
    #[serde(default)]
    pub window: Window,
    /// How often the server evaluates it (`30s`, `5m`, `1h`; absent: on demand only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Fewer rows in the window than this: checks report `insufficient`.
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// The checks.
    pub checks: Vec<Check>,
    /// Where alerts go.
    #[serde(default)]
    pub alerts: AlertSpec,
}

fn default_min_rows() -> usize {
    30
}

/// The window: the latest `rows` predictions, or those of the last `duration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The latest N predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    /// Predictions of the last `duration` (`15m`, `1h`, `2d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            rows: Some(1000),
            duration: None,
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// Per-column drift of the features; breached on dataset drift.
    FeatureDrift(FeatureDrift),
    /// Drift of one prediction column.
    PredictionDrift(PredictionDrift),
    /// An expectation suite over the window.
    DataQuality(DataQuality),
    /// Model performance from labels sent as feedback.
    Performance(Performance),
}

/// Feature drift settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDrift {
    /// Check name (default `feature_drift`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Drift method for every column (default: Evidently's choice per column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Threshold for every column (default: the method's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Share of drifted columns that is dataset drift (default 0.5).
    #[serde(default = "half")]
    pub drift_share: f64,
}

fn half() -> f64 {
    0.5
}

/// Prediction drift settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionDrift {
    /// Check name (default `prediction_drift`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The log's prediction column (`out_label`, `out_probabilities_1`, `out_variable`, …).
    pub column: String,
    /// Drift method (default: Evidently's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Threshold (default: the method's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// Data-quality settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataQuality {
    /// Check name (default `data_quality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The expectation suite: its YAML text (a file path in a monitor file is read in when the
    /// file is loaded).
    pub suite: String,
}

/// Performance settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    /// Check name (default `performance_<metric>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The metric.
    pub metric: Metric,
    /// Predicted label (classification) or value (regression) column; default `out_label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// Score column for ROC AUC (probability of the positive class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    /// The positive class for precision, recall, F1 and ROC AUC (default `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<String>,
    /// Breached below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Breached above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Fewer labelled rows: `insufficient` (default 20).
    #[serde(default = "default_min_labels")]
    pub min_labels: usize,
}

fn default_min_labels() -> usize {
    20
}

/// A performance metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of correct labels.
    Accuracy,
    /// Precision of the positive class.
    Precision,
    /// Recall of the positive class.
    Recall,
    /// F1 of the positive class.
    F1,
    /// Area under the ROC curve (needs a score column).
    RocAuc,
    /// Root mean squared error.
    Rmse,
    /// Mean absolute error.
    Mae,
}

impl Metric {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1 => "f1",
            Metric::RocAuc => "roc_auc",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
        }
    }
}

/// Where alerts go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// URLs that get each alert as a JSON POST (retried until delivered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
    /// No new alert for the same check within this time (default `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// A pipeline run on each alert, with the window as a dataset version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineTrigger>,
    /// A check that could not be evaluated this many times in a row raises an alert of its own
    /// (status `error`; it never starts the pipeline). Default 3; 0 turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after: Option<u32>,
}

/// A pipeline to run when an alert fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTrigger {
    /// The pipeline file (absolute, or relative to the monitor file when loaded from one).
    pub file: String,
    /// Parameters passed to the run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Check {
    /// The check's name (its `name`, else a default from its kind).
    pub fn name(&self) -> String {
        match self {
            Check::FeatureDrift(c) => c.name.clone().unwrap_or_else(|| "feature_drift".into()),
            Check::PredictionDrift(c) => {
                c.name.clone().unwrap_or_else(|| "prediction_drift".into())
            }
            Check::DataQuality(c) => c.name.clone().unwrap_or_else(|| "data_quality".into()),
            Check::Performance(c) => c
                .name
                .clone()
                .unwrap_or_else(|| format!("performance_{}", c.metric.name())),
        }
    }

    /// The kind, as written in the spec.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::FeatureDrift(_) => "feature_drift",
            Check::PredictionDrift(_) => "prediction_drift",
            Check::DataQuality(_) => "data_quality",
            Check::Performance(_) => "performance",
        }
    }
}

/// Parses `90`, `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration(raw: &str) -> Result<Duration> {
    let t = raw.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((t, "s"), |i| (&t[..i], t[i..].trim()));
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| bad_duration(raw))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(bad_duration(raw)),
    };
    if secs > 366.0 * 86400.0 {
        return Err(bad_duration(raw));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn bad_duration(raw: &str) -> Error {
    Error::Invalid(format!(
        "'{raw}' is not a duration (examples: 30s, 5m, 2h, 1d)"
    ))
}

/// Names: letters, digits, `.`, `_`, `-`, at most 200 characters, not starting with `.`.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} '{name}' is not valid: use letters, digits, '.', '_' and '-' (not first '.')"
        )))
    }
}

impl MonitorSpec {
    /// Parses YAML or JSON.
    pub fn parse(text: &str) -> Result<Self> {
        let spec: MonitorSpec = serde_saphyr::from_str(text)
            .map_err(|e| Error::Invalid(format!("not a valid monitor: {e}")))?;
        spec.check()?;
        Ok(spec)
    }

    /// Reads a monitor file: suite paths are read in, a relative pipeline path becomes absolute.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("{}: cannot read: {e}", path.display())))?;
        let mut spec =
            Self::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for c in &mut spec.checks {
            if let Check::DataQuality(q) = c
                && !q.suite.contains('\n')
            {
                let file = base.join(&q.suite);
                q.suite = std::fs::read_to_string(&file).map_err(|e| {
                    Error::Invalid(format!("suite {}: cannot read: {e}", file.display()))
                })?;
            }
        }
        if let Some(p) = &mut spec.alerts.pipeline {
            let file = base.join(&p.file);
            let abs = std::fs::canonicalize(&file)
                .map_err(|e| Error::Invalid(format!("pipeline {}: {e}", file.display())))?;
            p.file = abs.display().to_string();
        }
        Ok(spec)
    }

    /// Checks names, windows, durations, thresholds and suites.
    pub fn check(&self) -> Result<()> {
        validate_name("monitor", &self.name)?;
        validate_name("deployment", &self.deployment)?;
        loopml_data::versions::parse_reference(&self.reference)
            .map_err(|e| Error::Invalid(format!("reference: {e}")))?;
        match (&self.window.rows, &self.window.duration) {
            (Some(0), _) => return Err(Error::Invalid("window rows must be at least 1".into())),
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "window: give rows or duration, not both".into(),
                ));
            }
            (None, None) => return Err(Error::Invalid("window: give rows or duration".into())),
            (None, Some(d)) => {
                parse_duration(d)?;
            }
            (Some(r), None) if *r > 5_000_000 => {
                return Err(Error::Invalid(
                    "window rows must be at most 5,000,000".into(),
                ));
            }
            _ => {}
        }
        if let Some(i) = &self.interval
            && parse_duration(i)? < Duration::from_secs(1)
        {
            return Err(Error::Invalid("interval must be at least 1s".into()));
        }
        if let Some(c) = &self.alerts.cooldown {
            parse_duration(c)?;
        }
        if self.checks.is_empty() {
            return Err(Error::Invalid("a monitor needs at least one check".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &self.checks {
            let name = c.name();
            validate_name("check", &name)?;
            if !names.insert(name.clone()) {
                return Err(Error::Invalid(format!(
                    "two checks are called '{name}': give one a `name`"
                )));
            }
            match c {
                Check::FeatureDrift(f) => {
                    if !(0.0..=1.0).contains(&f.drift_share) {
                        return Err(Error::Invalid(format!(
                            "{name}: drift_share must be between 0 and 1"
                        )));
                    }
                    if let Some(m) = &f.method {
                        m.parse::<loopml_data::stats::DriftMethod>()
                            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
                    }
                }
                Check::PredictionDrift(p) => {
                    if let Some(m) = &p.method {
                        m.parse::<loopml_data::stats::DriftMethod>()
                            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
                    }
                }
                Check::DataQuality(q) => {
                    if q.suite.contains('\n') {
                        loopml_data::validate::Suite::from_yaml(&q.suite, &name)?;
                    }
                }
                Check::Performance(p) => {
                    if p.min.is_none() && p.max.is_none() {
                        return Err(Error::Invalid(format!(
                            "{name}: give `min` and/or `max`: the value that breaches it"
                        )));
                    }
                }
            }
        }
        for w in &self.alerts.webhooks {
            if !(w.starts_with("http://") || w.starts_with("https://")) {
                return Err(Error::Invalid(format!(
                    "webhook '{w}' is not an http(s) URL"
                )));
            }
        }
        Ok(())
    }

    /// The evaluation interval, when scheduled.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
            .as_deref()
            .and_then(|i| parse_duration(i).ok())
    }

    /// How many `error` results of a check in a row raise an alert (0: never).
    pub fn error_after(&self) -> u32 {
        self.alerts.error_after.unwrap_or(3)
    }

    /// No new alert for the same check within this time.
    pub fn cooldown(&self) -> Duration {
        self.alerts
            .cooldown
            .as_deref()
            .and_then(|c| parse_duration(c).ok())
            .unwrap_or(Duration::from_secs(600))
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "
name: churn-health
deployment: churn
reference: churn-train@1
target: churned
window: {rows: 500}
interval: 30s
checks:
  - feature_drift: {drift_share: 0.4}
  - prediction_drift: {column: out_label}
  - performance: {metric: accuracy, min: 0.7}
alerts:
  webhooks: [http://127.0.0.1:9/hook]
";

    #[test]
    fn a_full_spec_parses_with_defaults() {
        let s = MonitorSpec::parse(GOOD).unwrap();
        assert_eq!(s.window.rows, Some(500));
        assert_eq!(s.interval(), Some(Duration::from_secs(30)));
        assert_eq!(s.cooldown(), Duration::from_secs(600));
        assert_eq!(s.min_rows, 30);
        let names: Vec<String> = s.checks.iter().map(Check::name).collect();
        assert_eq!(
            names,
            ["feature_drift", "prediction_drift", "performance_accuracy"]
        );
        let back: MonitorSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            (
                GOOD.replace("name: churn-health", "name: ../x"),
                "not valid",
            ),
            (GOOD.replace("{rows: 500}", "{rows: 0}"), "at least 1"),
            (
                GOOD.replace("{rows: 500}", "{rows: 5, duration: 1h}"),
                "not both",
            ),
            (
                GOOD.replace("interval: 30s", "interval: soon"),
                "not a duration",
            ),
            (
                GOOD.replace("min: 0.7", "positive: '1'"),
                "min` and/or `max",
            ),
            (
                GOOD.replace("drift_share: 0.4", "drift_share: 4"),
                "between 0 and 1",
            ),
            (
                GOOD.replace("http://127.0.0.1:9/hook", "ftp://x"),
                "http(s)",
            ),
            (
                GOOD.replace("feature_drift:", "feature_drifts:"),
                "not a valid monitor",
            ),
            (
                GOOD.replace("reference: churn-train@1", "reference: a@b@c"),
                "reference",
            ),
            (
                GOOD.replace("{column: out_label}", "{column: out_label, method: magic}"),
                "magic",
            ),
        ] {
            let e = MonitorSpec::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
