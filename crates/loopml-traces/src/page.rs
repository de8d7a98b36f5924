//! A search page's trace infos written as JSON straight from the rows: the same document
//! [`TraceInfo`](crate::TraceInfo)'s `Serialize` writes, without building the structs (a page is
//! 100 infos and ~1,400 tag and metadata pairs; their strings were most of a search's cost).

use std::collections::HashMap;

use loopml_store::{Conn, Value as Sql};

use crate::error::Result;
use crate::model::{TOKEN_USAGE, TRACE_COST, timestamp};

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{b:04x}")),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// What one trace's JSON is built from.
#[derive(Default)]
struct Parts {
    head: String,
    tail: String,
    tags: String,
    metadata: String,
    assessments: String,
    has_usage: bool,
    has_cost: bool,
    tokens: Option<(i64, i64)>,
    cost: Option<f64>,
}

fn push_pair(buf: &mut String, k: &str, v: &str) {
    buf.push(if buf.is_empty() { '{' } else { ',' });
    push_json_str(buf, k);
    buf.push(':');
    push_json_str(buf, v);
}

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends `[info, …]` for `ids` (in that order; missing ones left out).
pub fn write_infos(c: &Conn<'_>, ids: &[String], out: &mut String) -> Result<()> {
    out.push('[');
    let mut first = true;
    for chunk in ids.chunks(500) {
        let params: Vec<Sql<'_>> = chunk.iter().map(|s| s.as_str().into()).collect();
        let list = placeholders(chunk.len());
        let mut found: HashMap<String, Parts> = HashMap::with_capacity(chunk.len());
        c.query(
            &format!(
                "SELECT {} FROM traces WHERE trace_id IN ({list})",
                crate::service::INFO_COLUMNS
            ),
            &params,
            |r| {
                let id = r.str(0)?;
                let mut p = Parts::default();
                p.head.push_str("{\"trace_id\":");
                push_json_str(&mut p.head, id);
                p.head.push_str(
                    ",\"trace_location\":{\"type\":\"MLFLOW_EXPERIMENT\",\"mlflow_experiment\":\
                     {\"experiment_id\":\"",
                );
                p.head.push_str(&r.i64(1)?.to_string());
                p.head.push_str("\"}},\"request_time\":");
                push_json_str(&mut p.head, &timestamp(r.i64(2)?));
                p.head.push_str(",\"state\":");
                push_json_str(&mut p.head, r.str(4)?);
                if let Some(ms) = r.opt_i64(3)? {
                    p.tail.push_str(",\"execution_duration\":");
                    push_json_str(&mut p.tail, &format!("{}s", ms as f64 / 1000.0));
                }
                for (i, k) in [
                    (5, "client_request_id"),
                    (6, "request_preview"),
                    (7, "response_preview"),
                ] {
                    if let Some(v) = r.opt_string(i)? {
                        p.tail.push_str(",\"");
                        p.tail.push_str(k);
                        p.tail.push_str("\":");
                        push_json_str(&mut p.tail, &v);
                    }
                }
                if let (Some(i), Some(o)) = (r.opt_i64(8)?, r.opt_i64(9)?) {
                    p.tokens = Some((i, o));
                }
                p.cost = r.opt_f64(10)?;
                found.insert(id.to_string(), p);
                Ok(())
            },
        )?;
        for (table, is_tag) in [("trace_tags", true), ("trace_metadata", false)] {
            c.query(
                &format!("SELECT trace_id, key, value FROM {table} WHERE trace_id IN ({list})"),
                &params,
                |r| {
                    if let Some(p) = found.get_mut(r.str(0)?) {
                        let (k, v) = (r.str(1)?, r.str(2)?);
                        if is_tag {
                            push_pair(&mut p.tags, k, v);
                        } else {
                            p.has_usage |= k == TOKEN_USAGE;
                            p.has_cost |= k == TRACE_COST;
                            push_pair(&mut p.metadata, k, v);
                        }
                    }
                    Ok(())
                },
            )?;
        }
        c.query(
            &format!(
                "SELECT trace_id, body, valid FROM assessments WHERE trace_id IN ({list}) \
                 ORDER BY create_time, assessment_id"
            ),
            &params,
            |r| {
                if let Some(p) = found.get_mut(r.str(0)?) {
                    let mut v: serde_json::Value =
                        serde_json::from_str(r.str(1)?).unwrap_or(serde_json::Value::Null);
                    v["valid"] = serde_json::Value::Bool(r.i64(2)? != 0);
                    p.assessments
                        .push(if p.assessments.is_empty() { '[' } else { ',' });
                    p.assessments.push_str(&v.to_string());
                }
                Ok(())
            },
        )?;
        for id in chunk {
            let Some(mut p) = found.remove(id) else {
                continue;
            };
            if let Some((i, o)) = p.tokens.filter(|_| !p.has_usage) {
                let usage = format!(
                    "{{\"input_tokens\":{i},\"output_tokens\":{o},\"total_tokens\":{}}}",
                    i + o
                );
                push_pair(&mut p.metadata, TOKEN_USAGE, &usage);
            }
            if let Some(cost) = p.cost.filter(|_| !p.has_cost) {
                let cost = serde_json::json!({"total_cost": cost}).to_string();
                push_pair(&mut p.metadata, TRACE_COST, &cost);
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&p.head);
            out.push_str(",\"trace_metadata\":");
            out.push_str(if p.metadata.is_empty() {
                "{"
            } else {
                &p.metadata
            });
            out.push_str("},\"tags\":");
            out.push_str(if p.tags.is_empty() { "{" } else { &p.tags });
            out.push_str("},\"assessments\":");
            out.push_str(if p.assessments.is_empty() {
                "["
            } else {
                &p.assessments
            });
            out.push(']');
            out.push_str(&p.tail);
            out.push('}');
        }
    }
    out.push(']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_as_serde_json_does() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\ncr\rtab\t",
            "\u{1}\u{1f}",
            "é ☃ 𝄞",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap_or_default(), "{s:?}");
        }
    }
}
