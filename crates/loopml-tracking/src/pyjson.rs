//! JSON text laid out as Python's `json.dumps` writes it (`", "` and `": "` separators,
//! non-ASCII escaped), for tag values MLflow's server and client write and compare as text
//! (`mlflow.modelVersions`, `mlflow.log-model.history`, `mlflow.loggedArtifacts`).

use serde_json::Value;

/// `value` as Python's `json.dumps(value)` writes it. Object keys come in the map's order.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// An object of ordered `(key, value)` pairs as `json.dumps` writes a dict built in that order.
pub fn dumps_object(pairs: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(&mut out, k);
        out.push_str(": ");
        write_value(&mut out, v);
    }
    out.push('}');
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() && f.is_finite() && f.fract() == 0.0 => {
                out.push_str(&format!("{f:.1}"));
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_matches_python_json_dumps() {
        // Expected texts are what CPython 3.11's json.dumps prints for the same values.
        assert_eq!(
            dumps(&json!([{"name": "m", "version": 1}])),
            r#"[{"name": "m", "version": 1}]"#
        );
        assert_eq!(
            dumps(&json!({"a": [1.0, 2.5, "x\"y"], "b": null, "c": true})),
            r#"{"a": [1.0, 2.5, "x\"y"], "b": null, "c": true}"#
        );
        assert_eq!(dumps(&json!("é😀\n")), r#""\u00e9\ud83d\ude00\n""#);
        assert_eq!(
            dumps_object(&[("z", json!(1)), ("a", json!("b"))]),
            r#"{"z": 1, "a": "b"}"#
        );
    }
}
