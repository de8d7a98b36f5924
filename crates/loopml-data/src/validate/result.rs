//! GX-shaped validation results, their JSON and a readable text summary.

use serde::Serialize;
use serde_json::Value;

/// The `result` object of one expectation (fields absent when they do not apply).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResultDetails {
    /// Rows looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_count: Option<u64>,
    /// Non-null rows that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unexpected_count: Option<u64>,
    /// `unexpected_count` as a percent of the non-null rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unexpected_percent: Option<f64>,
    /// Null rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_count: Option<u64>,
    /// Null rows as a percent of all rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_percent: Option<f64>,
    /// The first 20 unexpected values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_unexpected_list: Option<Vec<Value>>,
    /// The measured value of aggregate and table expectations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<Value>,
}

/// Why an expectation could not be evaluated (e.g. its column does not exist).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExceptionInfo {
    /// Always true when present.
    pub raised_exception: bool,
    /// What went wrong.
    pub exception_message: String,
}

/// The result of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectationResult {
    /// The expectation type, e.g. `expect_column_values_to_be_between`.
    pub expectation_type: String,
    /// The kwargs as written in the suite.
    pub kwargs: Value,
    /// Whether the expectation held.
    pub success: bool,
    /// Counts and observed value.
    pub result: ResultDetails,
    /// Set when the expectation could not be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_info: Option<ExceptionInfo>,
}

/// Suite-level counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statistics {
    /// Expectations evaluated.
    pub evaluated_expectations: u64,
    /// Expectations that held.
    pub successful_expectations: u64,
    /// Expectations that failed.
    pub unsuccessful_expectations: u64,
    /// Percent that held (100 for an empty suite).
    pub success_percent: f64,
}

/// The result of validating one dataset against a suite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationResult {
    /// The suite's name.
    pub suite_name: String,
    /// Whether every expectation held.
    pub success: bool,
    /// One result per expectation, in suite order.
    pub results: Vec<ExpectationResult>,
    /// Counts.
    pub statistics: Statistics,
}

impl ValidationResult {
    /// Builds the suite result from its expectation results.
    pub fn new(suite_name: String, results: Vec<ExpectationResult>) -> Self {
        let ok = results.iter().filter(|r| r.success).count() as u64;
        let n = results.len() as u64;
        Self {
            suite_name,
            success: ok == n,
            statistics: Statistics {
                evaluated_expectations: n,
                successful_expectations: ok,
                unsuccessful_expectations: n - ok,
                success_percent: if n == 0 {
                    100.0
                } else {
                    100.0 * ok as f64 / n as f64
                },
            },
            results,
        }
    }

    /// The result as GX-shaped JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// One line per expectation (✓/✗, type, column, observed value, unexpected %), then a total.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let mark = if r.success { '✓' } else { '✗' };
            let target = ["column", "column_list", "column_A"]
                .iter()
                .find_map(|k| r.kwargs.get(*k))
                .map(|v| match v {
                    Value::String(s) => format!(" {s}"),
                    other => format!(" {other}"),
                })
                .unwrap_or_default();
            out.push_str(&format!("{mark} {}{target}", r.expectation_type));
            if let Some(v) = &r.result.observed_value {
                out.push_str(&format!(" observed={v}"));
            }
            if let (Some(p), Some(n)) = (r.result.unexpected_percent, r.result.unexpected_count) {
                out.push_str(&format!(" unexpected={n} ({p:.2}%)"));
            }
            if let Some(e) = &r.exception_info {
                out.push_str(&format!(" error: {}", e.exception_message));
            }
            out.push('\n');
        }
        let s = &self.statistics;
        out.push_str(&format!(
            "{} {}: {}/{} expectations passed ({:.1}%)\n",
            if self.success { '✓' } else { '✗' },
            self.suite_name,
            s.successful_expectations,
            s.evaluated_expectations,
            s.success_percent
        ));
        out
    }
}
