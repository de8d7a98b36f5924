//! A trace's info (MLflow's `TraceInfoV3`) and how it reads from and writes to the wire.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Tag: where the trace's artifacts would be (always set, as `mlflow server` does).
pub const ARTIFACT_LOCATION: &str = "mlflow.artifactLocation";
/// Tag: where the spans are; `TRACKING_STORE` tells the client not to upload `traces.json`.
pub const SPANS_LOCATION: &str = "mlflow.trace.spansLocation";
/// Tag: the trace's name.
pub const TRACE_NAME: &str = "mlflow.traceName";
/// Metadata: the run the trace was made in.
pub const SOURCE_RUN: &str = "mlflow.sourceRun";
/// Metadata: token usage of the trace (JSON).
pub const TOKEN_USAGE: &str = "mlflow.trace.tokenUsage";
/// Metadata: cost of the trace (JSON).
pub const TRACE_COST: &str = "mlflow.trace.cost";

/// One trace's info.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceInfo {
    /// `tr-<32 hex>` (the client's id, kept).
    pub trace_id: String,
    /// The experiment it belongs to.
    pub experiment_id: i64,
    /// Start, ms since the epoch.
    pub request_time: i64,
    /// Duration in ms (none while in progress).
    pub execution_ms: Option<i64>,
    /// `OK`, `ERROR`, `IN_PROGRESS` or `STATE_UNSPECIFIED`.
    pub state: String,
    /// The client's own request id.
    pub client_request_id: Option<String>,
    /// The request, shortened.
    pub request_preview: Option<String>,
    /// The response, shortened.
    pub response_preview: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Request metadata.
    pub metadata: BTreeMap<String, String>,
    /// Assessments (MLflow's JSON).
    pub assessments: Vec<Value>,
    /// Input tokens over its LLM spans.
    pub input_tokens: Option<i64>,
    /// Output tokens over its LLM spans.
    pub output_tokens: Option<i64>,
    /// Cost over its LLM spans (USD).
    pub cost: Option<f64>,
}

/// RFC 3339 with milliseconds (`2026-12-01T18:52:14.649Z`), protobuf's Timestamp in JSON.
pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A protobuf Timestamp in JSON (RFC 3339), or ms as a number, as ms.
pub fn parse_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// A protobuf Duration in JSON (`"0.063s"`) as ms.
pub fn parse_duration(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    Some((secs * 1000.0).round() as i64)
}

fn string_map(v: &Value, at: &str) -> Result<BTreeMap<String, String>> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Null => Ok((k.clone(), String::new())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect(),
        // The v2 messages' `[{key, value}]` lists.
        Value::Array(a) => Ok(a
            .iter()
            .filter_map(|kv| {
                Some((
                    kv["key"].as_str()?.to_string(),
                    kv["value"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect()),
        _ => Err(Error::InvalidParameter(format!(
            "'{at}' must be a map of strings"
        ))),
    }
}

impl TraceInfo {
    /// A `trace_info` from StartTraceV3's body.
    pub fn from_json(v: &Value) -> Result<Self> {
        let trace_id = v["trace_id"]
            .as_str()
            .or(v["request_id"].as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::InvalidParameter("'trace_info.trace_id' is required".into()))?
            .to_string();
        crate::validate_trace_id(&trace_id)?;
        let loc = &v["trace_location"];
        let experiment = loc["mlflow_experiment"]["experiment_id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                loc["mlflow_experiment"]["experiment_id"]
                    .as_i64()
                    .map(|n| n.to_string())
            })
            .or_else(|| v["experiment_id"].as_str().map(str::to_string))
            .ok_or_else(|| {
                Error::InvalidParameter(
                    "'trace_info.trace_location.mlflow_experiment.experiment_id' is required"
                        .into(),
                )
            })?;
        let experiment_id = experiment.parse::<i64>().map_err(|_| {
            Error::InvalidParameter(format!("'{experiment}' is not an experiment id"))
        })?;
        let state = v["state"]
            .as_str()
            .unwrap_or("STATE_UNSPECIFIED")
            .to_string();
        if !matches!(
            state.as_str(),
            "OK" | "ERROR" | "IN_PROGRESS" | "STATE_UNSPECIFIED"
        ) {
            return Err(Error::InvalidParameter(format!(
                "'state' must be OK, ERROR, IN_PROGRESS or STATE_UNSPECIFIED, not '{state}'"
            )));
        }
        let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        Ok(TraceInfo {
            trace_id,
            experiment_id,
            request_time: parse_timestamp(&v["request_time"]).unwrap_or_else(crate::now_ms),
            execution_ms: parse_duration(&v["execution_duration"]),
            state,
            client_request_id: text("client_request_id"),
            request_preview: text("request_preview"),
            response_preview: text("response_preview"),
            tags: string_map(&v["tags"], "tags")?,
            metadata: string_map(&v["trace_metadata"], "trace_metadata")?,
            ..TraceInfo::default()
        })
    }

    /// As `TraceInfoV3` JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "<id>"}}`.
struct Location(i64);

impl serde::Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Experiment(i64);
        impl serde::Serialize for Experiment {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("experiment_id", &self.0.to_string())?;
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", "MLFLOW_EXPERIMENT")?;
        m.serialize_entry("mlflow_experiment", &Experiment(self.0))?;
        m.end()
    }
}

/// Protobuf's Duration in JSON (`"0.063s"`).
struct Seconds(i64);

impl serde::Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}s", self.0 as f64 / 1000.0))
    }
}

/// A trace's metadata as sent: the stored pairs, plus token usage and cost when the spans
/// gave them and the client did not.
struct Metadata<'a>(&'a TraceInfo);

impl serde::Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = self.0;
        let usage = match (t.input_tokens, t.output_tokens) {
            (Some(i), Some(o)) if !t.metadata.contains_key(TOKEN_USAGE) => Some(format!(
                "{{\"input_tokens\":{i},\"output_tokens\":{o},\"total_tokens\":{}}}",
                i + o
            )),
            _ => None,
        };
        let cost = t
            .cost
            .filter(|_| !t.metadata.contains_key(TRACE_COST))
            .map(|c| json!({"total_cost": c}).to_string());
        let extra = usize::from(usage.is_some()) + usize::from(cost.is_some());
        let mut m = s.serialize_map(Some(t.metadata.len() + extra))?;
        for (k, v) in &t.metadata {
            m.serialize_entry(k, v)?;
        }
        if let Some(u) = &usage {
            m.serialize_entry(TOKEN_USAGE, u)?;
        }
        if let Some(c) = &cost {
            m.serialize_entry(TRACE_COST, c)?;
        }
        m.end()
    }
}

/// `TraceInfoV3` JSON, written straight to the output (a search page is 100 of them).
impl serde::Serialize for TraceInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let optional = [
            ("client_request_id", &self.client_request_id),
            ("request_preview", &self.request_preview),
            ("response_preview", &self.response_preview),
        ];
        let n = 7
            + usize::from(self.execution_ms.is_some())
            + optional.iter().filter(|(_, v)| v.is_some()).count();
        let mut m = s.serialize_map(Some(n))?;
        m.serialize_entry("trace_id", &self.trace_id)?;
        m.serialize_entry("trace_location", &Location(self.experiment_id))?;
        m.serialize_entry("request_time", &timestamp(self.request_time))?;
        m.serialize_entry("state", &self.state)?;
        m.serialize_entry("trace_metadata", &Metadata(self))?;
        m.serialize_entry("tags", &self.tags)?;
        m.serialize_entry("assessments", &self.assessments)?;
        if let Some(ms) = self.execution_ms {
            m.serialize_entry("execution_duration", &Seconds(ms))?;
        }
        for (k, v) in optional {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_trace_bodies_read_and_write_back() {
        let v = json!({"trace_id": "tr-c09721de5dd29de7247328aa342e0e46", "client_request_id": "req-1",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "2"}},
            "request_time": "2026-12-01T18:52:14.649Z", "execution_duration": "0.063s", "state": "OK",
            "trace_metadata": {"mlflow.user": "root"}, "tags": {"mlflow.traceName": "pipeline"},
            "request_preview": "{\"q\": 1}"});
        let t = TraceInfo::from_json(&v).unwrap_or_default();
        assert_eq!(t.experiment_id, 2);
        assert_eq!(t.execution_ms, Some(63));
        assert_eq!(t.request_time % 1000, 649);
        let back = t.to_json();
        assert_eq!(back["request_time"], "2026-12-01T18:52:14.649Z");
        assert_eq!(back["execution_duration"], "0.063s");
        assert_eq!(
            back["trace_location"]["mlflow_experiment"]["experiment_id"],
            "2"
        );
        assert_eq!(back["tags"]["mlflow.traceName"], "pipeline");
        let bad = json!({"trace_id": "tr-x", "trace_location": {}});
        assert!(TraceInfo::from_json(&bad).is_err());
    }
}
