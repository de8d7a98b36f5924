//! Assessments (feedback and expectations) as MLflow's client sends them: what the store
//! indexes of one, and the fields an update mask may name.

use serde_json::Value;

use crate::error::{Error, Result};

/// Fields `update_assessment` may change (snake_case).
pub const UPDATABLE: &[&str] = &[
    "assessment_name",
    "feedback",
    "expectation",
    "rationale",
    "metadata",
    "valid",
    "source",
    "span_id",
];

/// A FieldMask path (camelCase, as protobuf's JSON writes it) in snake_case.
pub fn snake(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 4);
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The value as a filter compares it: a string as itself, anything else as its JSON text
/// (so `feedback.helpful = 'false'` matches the boolean).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// An assessment's (name, kind, value text); errors name what is missing.
pub fn columns(a: &Value) -> Result<(String, &'static str, Option<String>)> {
    let name = a["assessment_name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::InvalidParameter("'assessment.assessment_name' is required".into()))?
        .to_string();
    if name.chars().count() > 250 {
        return Err(Error::InvalidParameter(
            "'assessment_name' is longer than 250 characters".into(),
        ));
    }
    if a["feedback"].is_object() {
        return Ok((name, "feedback", text(&a["feedback"]["value"])));
    }
    if a["expectation"].is_object() {
        let e = &a["expectation"];
        let value = match &e["serialized_value"]["value"] {
            Value::String(s) => Some(s.clone()),
            _ => text(&e["value"]),
        };
        return Ok((name, "expectation", value));
    }
    Err(Error::InvalidParameter(
        "an assessment needs 'feedback' or 'expectation'".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_and_values_read_as_mlflow_writes_them() {
        assert_eq!(snake("assessmentName"), "assessment_name");
        assert_eq!(snake("feedback"), "feedback");
        let f = json!({"assessment_name": "helpful", "feedback": {"value": false}});
        assert_eq!(
            columns(&f).ok(),
            Some(("helpful".into(), "feedback", Some("false".into())))
        );
        let e = json!({"assessment_name": "facts", "expectation": {"serialized_value":
            {"serialization_format": "JSON_FORMAT", "value": "[\"a\"]"}}});
        assert_eq!(columns(&e).ok().and_then(|c| c.2), Some("[\"a\"]".into()));
        assert!(columns(&json!({"assessment_name": "x"})).is_err());
    }
}
