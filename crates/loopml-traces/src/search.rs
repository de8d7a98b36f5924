//! Trace search: MLflow's trace filter language (`SearchTraceUtils`) and order-by keys turned
//! into one SQL query over the trace tables, newest first by default.
//!
//! Prefixes: `attribute(s)` / `trace` (or none): `request_id`, `timestamp[_ms]`,
//! `execution_time[_ms]`, `end_time[_ms]`, `status`, `client_request_id`, `name`, `run_id`
//! (the source run or a link), `prompt` (`'name/version'`), `text` (span content);
//! `tag(s)`; `request_metadata` / `metadata`; `span` (`name`, `type`, `status`, `content`,
//! `attributes.<key>`); `feedback.<name>` and `expectation.<name>` (valid assessments only).

use base64::Engine;
use loopml_store::Value as Sql;
use loopml_tracking::filter::{Literal, Op, RawClause, parse_raw_filter, parse_raw_order_by};

use crate::error::{Error, Result};

/// A built query: SQL with `?N` placeholders and their values.
#[derive(Debug, Clone)]
pub struct Query {
    pub sql: String,
    pub params: Vec<Sql<'static>>,
}

struct Builder {
    params: Vec<Sql<'static>>,
}

impl Builder {
    fn p(&mut self, v: impl Into<Sql<'static>>) -> String {
        self.params.push(v.into());
        format!("?{}", self.params.len())
    }

    fn text(&mut self, c: &RawClause) -> Result<String> {
        match &c.value {
            Literal::Str(s) => Ok(self.p(s.clone())),
            Literal::Num(_, t) => Ok(self.p(t.clone())),
            _ => Err(invalid(format!("'{}' needs a quoted string", name(c)))),
        }
    }

    /// `col op value` for a text column.
    fn string_cmp(&mut self, col: &str, c: &RawClause) -> Result<String> {
        Ok(match c.op {
            Op::Eq | Op::Ne | Op::Like => {
                let v = self.text(c)?;
                format!("{col} {} {v}", c.op.sql())
            }
            Op::ILike => {
                let v = self.text(c)?;
                format!("LOWER({col}) LIKE LOWER({v})")
            }
            Op::In | Op::NotIn => {
                let Literal::List(items) = &c.value else {
                    return Err(invalid(format!(
                        "'{}' {} needs a list",
                        name(c),
                        c.op.sql()
                    )));
                };
                let ps: Vec<String> = items.iter().map(|i| self.p(i.clone())).collect();
                format!("{col} {} ({})", c.op.sql(), ps.join(", "))
            }
            _ => {
                return Err(invalid(format!(
                    "'{}' compares text: use =, !=, LIKE, ILIKE, IN or NOT IN, not {}",
                    name(c),
                    c.op.sql()
                )));
            }
        })
    }

    /// `col op number` for a numeric column.
    fn numeric_cmp(&mut self, col: &str, c: &RawClause) -> Result<String> {
        if !c.op.is_numeric() {
            return Err(invalid(format!(
                "'{}' is a number: use =, !=, >, >=, <, <=",
                name(c)
            )));
        }
        let n = match &c.value {
            Literal::Num(n, _) => *n,
            Literal::Str(s) => s
                .parse()
                .map_err(|_| invalid(format!("'{}' needs a number, not '{s}'", name(c))))?,
            _ => return Err(invalid(format!("'{}' needs a number", name(c)))),
        };
        let v = self.p(n);
        Ok(format!("{col} {} {v}", c.op.sql()))
    }

    /// A condition on a key/value table (`trace_tags`, `trace_metadata`).
    fn pairs(&mut self, table: &str, c: &RawClause) -> Result<String> {
        let k = self.p(c.key.clone());
        Ok(match c.op {
            Op::IsNull => format!(
                "NOT EXISTS (SELECT 1 FROM {table} x WHERE x.trace_id = t.trace_id AND x.key = {k})"
            ),
            Op::IsNotNull => format!(
                "EXISTS (SELECT 1 FROM {table} x WHERE x.trace_id = t.trace_id AND x.key = {k})"
            ),
            // A correlated EXISTS on the (trace_id, key) primary key: the search walks the
            // experiment's traces newest first and stops at a page, instead of collecting and
            // sorting every match (10,000 of 100,000 traces took 35 ms that way).
            _ => {
                let cond = self.string_cmp("x.value", c)?;
                format!(
                    "EXISTS (SELECT 1 FROM {table} x WHERE x.trace_id = t.trace_id AND x.key = {k} \
                     AND {cond})"
                )
            }
        })
    }

    fn attribute(&mut self, c: &RawClause) -> Result<String> {
        match c.key.as_str() {
            "request_id" | "trace_id" => self.string_cmp("t.trace_id", c),
            "timestamp" | "timestamp_ms" => self.numeric_cmp("t.request_time", c),
            "execution_time" | "execution_time_ms" => self.numeric_cmp("t.execution_ms", c),
            "end_time" | "end_time_ms" => self.numeric_cmp("(t.request_time + t.execution_ms)", c),
            "status" | "state" => self.string_cmp("t.state", c),
            "client_request_id" => self.string_cmp("t.client_request_id", c),
            // The name is the `mlflow.traceName` tag, however the trace got it.
            "name" => {
                let mut tag = c.clone();
                tag.key = crate::model::TRACE_NAME.to_string();
                self.pairs("trace_tags", &tag)
            }
            "run_id" => {
                let a = self.string_cmp("t.source_run", c)?;
                let b = self.string_cmp("r.run_id", c)?;
                Ok(format!(
                    "({a} OR EXISTS (SELECT 1 FROM trace_runs r WHERE r.trace_id = t.trace_id \
                     AND {b}))"
                ))
            }
            "prompt" => {
                let Literal::Str(s) = &c.value else {
                    return Err(invalid("prompt = 'name/version' needs a quoted string"));
                };
                if c.op != Op::Eq {
                    return Err(invalid("prompt takes = only: prompt = 'name/version'"));
                }
                let (n, v) = s
                    .rsplit_once('/')
                    .ok_or_else(|| invalid(format!("prompt = '{s}': expected 'name/version'")))?;
                let (n, v) = (self.p(n.to_string()), self.p(v.to_string()));
                Ok(format!(
                    "EXISTS (SELECT 1 FROM trace_prompts p WHERE p.trace_id = t.trace_id \
                     AND p.name = {n} AND p.version = {v})"
                ))
            }
            "text" => self.span_content(c),
            other => Err(invalid(format!(
                "Invalid attribute key '{other}': valid keys are request_id, timestamp_ms, \
                 execution_time_ms, end_time_ms, status, client_request_id, name, run_id, \
                 prompt, text"
            ))),
        }
    }

    fn span_content(&mut self, c: &RawClause) -> Result<String> {
        if !matches!(c.op, Op::Like | Op::ILike) {
            return Err(invalid(format!("'{}' takes LIKE or ILIKE", name(c))));
        }
        let cond = self.string_cmp("s.content", c)?;
        Ok(format!(
            "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND {cond})"
        ))
    }

    fn span(&mut self, c: &RawClause) -> Result<String> {
        let cond = match c.key.as_str() {
            "name" => self.string_cmp("s.name", c)?,
            "type" | "span_type" => self.string_cmp("s.span_type", c)?,
            "status" => {
                // `OK` as MLflow writes it, `STATUS_CODE_OK` as stored.
                let mut c = c.clone();
                let full = |s: &str| {
                    if s.starts_with("STATUS_CODE_") {
                        s.to_string()
                    } else {
                        format!("STATUS_CODE_{}", s.to_ascii_uppercase())
                    }
                };
                c.value = match &c.value {
                    Literal::Str(s) => Literal::Str(full(s)),
                    Literal::List(l) => Literal::List(l.iter().map(|s| full(s)).collect()),
                    other => other.clone(),
                };
                self.string_cmp("s.status", &c)?
            }
            "content" => return self.span_content(c),
            k if k.starts_with("attributes.") => {
                let key = &k["attributes.".len()..];
                let value = match &c.value {
                    Literal::Str(s) => serde_json::json!({"string_value": s}),
                    Literal::Num(n, t) if t.contains(['.', 'e', 'E']) => {
                        serde_json::json!({"double_value": n})
                    }
                    Literal::Num(_, t) => serde_json::json!({"int_value": t}),
                    _ => return Err(invalid(format!("'{}' needs a value", name(c)))),
                };
                if !matches!(c.op, Op::Eq | Op::Ne) {
                    return Err(invalid(format!("'{}' takes = or !=", name(c))));
                }
                let needle = serde_json::json!({"key": key, "value": value}).to_string();
                let pattern = format!("%{}%", like_escape(&needle));
                let v = self.p(pattern);
                let has = format!(
                    "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND \
                     s.content LIKE {v} ESCAPE '\\')"
                );
                return Ok(if c.op == Op::Eq {
                    has
                } else {
                    format!("NOT {has}")
                });
            }
            other => {
                return Err(invalid(format!(
                    "Invalid span key '{other}': valid keys are name, type, status, content, \
                     attributes.<key>"
                )));
            }
        };
        Ok(format!(
            "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND {cond})"
        ))
    }

    fn assessment(&mut self, kind: &'static str, c: &RawClause) -> Result<String> {
        let n = self.p(c.key.clone());
        let base = format!(
            "SELECT 1 FROM assessments a WHERE a.trace_id = t.trace_id AND a.kind = '{kind}' \
             AND a.name = {n} AND a.valid = 1"
        );
        Ok(match c.op {
            Op::IsNull => format!("NOT EXISTS ({base})"),
            Op::IsNotNull => format!("EXISTS ({base})"),
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                let cond = self.numeric_cmp("CAST(a.value AS DOUBLE PRECISION)", c)?;
                format!("EXISTS ({base} AND {cond})")
            }
            _ => {
                let cond = self.string_cmp("a.value", c)?;
                format!("EXISTS ({base} AND {cond})")
            }
        })
    }
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidParameter(m.into())
}

fn name(c: &RawClause) -> String {
    match &c.prefix {
        Some(p) => format!("{p}.{}", c.key),
        None => c.key.clone(),
    }
}

fn order_column(prefix: Option<&str>, key: &str) -> Result<&'static str> {
    if prefix.is_some_and(|p| !matches!(p, "attribute" | "attributes" | "trace")) {
        return Err(invalid(format!("Invalid order_by key '{key}'")));
    }
    Ok(match key {
        "timestamp" | "timestamp_ms" | "request_time" => "t.request_time",
        "execution_time" | "execution_time_ms" => "t.execution_ms",
        "end_time" | "end_time_ms" => "(t.request_time + t.execution_ms)",
        "status" | "state" => "t.state",
        "request_id" | "trace_id" => "t.trace_id",
        "name" => "t.name",
        "run_id" => "t.source_run",
        "experiment_id" => "t.experiment_id",
        other => {
            return Err(invalid(format!(
                "Invalid order_by key '{other}': valid keys are experiment_id, timestamp_ms, \
                 execution_time_ms, end_time_ms, status, request_id, name, run_id"
            )));
        }
    })
}

/// The key/value table an equality clause can drive a search from (`tags.k = 'v'`,
/// `metadata.k = 'v'`, `name = 'v'`), with the key it looks up.
fn driver(c: &RawClause) -> Option<(&'static str, String)> {
    if c.op != Op::Eq || !matches!(c.value, Literal::Str(_) | Literal::Num(..)) {
        return None;
    }
    let prefix = c.prefix.as_deref().map(str::to_ascii_lowercase);
    match prefix.as_deref() {
        Some("tag" | "tags") => Some(("trace_tags", c.key.clone())),
        Some("request_metadata" | "metadata") => Some(("trace_metadata", c.key.clone())),
        None | Some("attribute" | "attributes" | "trace") if c.key == "name" => {
            Some(("trace_tags", crate::model::TRACE_NAME.to_string()))
        }
        _ => None,
    }
}

/// The query for one page: `limit` trace ids from `offset`.
///
/// Newest first (or oldest first) with an equality on a tag or metadata key, the page is read
/// from that table's `(experiment_id, key, value, request_time, trace_id)` index, so it costs
/// the page, not the matches before it; otherwise the experiment's traces are walked in order
/// and every clause is a condition on them.
pub fn build(
    experiments: &[i64],
    filter: &str,
    order_by: &[String],
    limit: usize,
    offset: usize,
) -> Result<Query> {
    let mut b = Builder { params: Vec::new() };
    let clauses = parse_raw_filter(filter).map_err(|e| invalid(e.to_string()))?;
    let mut order = Vec::new();
    let mut by_time: Option<bool> = None;
    for o in order_by {
        let (prefix, key, asc) = parse_raw_order_by(o).map_err(|e| invalid(e.to_string()))?;
        let col = order_column(prefix.as_deref(), &key)?;
        by_time = (order_by.len() == 1 && col == "t.request_time").then_some(asc);
        order.push(format!("{col} {}", if asc { "ASC" } else { "DESC" }));
    }
    if order.is_empty() {
        order.push("t.request_time DESC".into());
        by_time = Some(false);
    }
    order.push("t.trace_id DESC".into());
    let drive = by_time.and_then(|asc| {
        clauses
            .iter()
            .enumerate()
            .find_map(|(i, c)| driver(c).map(|(table, key)| (i, table, key, asc)))
    });
    let exps: Vec<String> = experiments.iter().map(|e| b.p(*e)).collect();
    let exps = exps.join(", ");
    let (from, mut conds) = match &drive {
        Some((i, table, key, asc)) => {
            let k = b.p(key.clone());
            let v = b.text(&clauses[*i])?;
            let dir = if *asc { "ASC" } else { "DESC" };
            order = vec![
                format!("d.request_time {dir}"),
                "d.trace_id DESC".to_string(),
            ];
            (
                format!("{table} d JOIN traces t ON t.trace_id = d.trace_id"),
                vec![format!(
                    "d.experiment_id IN ({exps}) AND d.key = {k} AND d.value = {v}"
                )],
            )
        }
        None => (
            "traces t".to_string(),
            vec![format!("t.experiment_id IN ({exps})")],
        ),
    };
    for (i, c) in clauses.iter().enumerate() {
        if drive.as_ref().is_some_and(|d| d.0 == i) {
            continue;
        }
        let prefix = c.prefix.as_deref().map(str::to_ascii_lowercase);
        conds.push(match prefix.as_deref() {
            None | Some("attribute" | "attributes" | "trace") => b.attribute(c)?,
            Some("tag" | "tags") => b.pairs("trace_tags", c)?,
            Some("request_metadata" | "metadata") => b.pairs("trace_metadata", c)?,
            Some("span") => b.span(c)?,
            Some("feedback") => b.assessment("feedback", c)?,
            Some("expectation") => b.assessment("expectation", c)?,
            Some(p) => {
                return Err(invalid(format!(
                    "Invalid entity type '{p}': valid ones are attribute, tag, \
                     request_metadata, span, feedback, expectation"
                )));
            }
        });
    }
    let l = b.p(limit as i64);
    let o = b.p(offset as i64);
    Ok(Query {
        sql: format!(
            "SELECT t.trace_id FROM {from} WHERE {} ORDER BY {} LIMIT {l} OFFSET {o}",
            conds.join(" AND "),
            order.join(", ")
        ),
        params: b.params,
    })
}

/// The page token for `offset` (base64 JSON, as `mlflow server` writes it).
pub fn token(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(serde_json::json!({"offset": offset}).to_string())
}

/// The offset of a page token.
pub fn read_token(t: &str) -> Result<usize> {
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["offset"].as_u64())
        .map(|n| n as usize)
        .ok_or_else(|| invalid(format!("Invalid page token '{t}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_sql_over_the_trace_tables() {
        let q = build(
            &[1, 2],
            "tags.env = 'prod' AND attributes.status = 'OK' AND span.type = 'LLM' AND \
             feedback.helpful = 'true' AND timestamp_ms > 100 AND run_id = 'r1'",
            &["timestamp_ms ASC".into()],
            101,
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            q.sql.contains("FROM trace_tags d JOIN traces t"),
            "{}",
            q.sql
        );
        assert!(q.sql.contains("d.key = ?3 AND d.value = ?4"), "{}", q.sql);
        assert!(
            q.sql
                .contains("ORDER BY d.request_time ASC, d.trace_id DESC"),
            "{}",
            q.sql
        );
        assert!(q.sql.contains("s.span_type = "), "{}", q.sql);
        assert!(q.sql.contains("a.kind = 'feedback'"), "{}", q.sql);
        // A tag inequality or another order walks the traces instead.
        let q = build(&[1], "tags.env != 'prod'", &["status DESC".into()], 10, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(q.sql.contains("FROM traces t WHERE"), "{}", q.sql);
        assert!(q.sql.contains("x.key = ?2 AND x.value != ?3"), "{}", q.sql);
        assert!(
            q.sql.contains("ORDER BY t.state DESC, t.trace_id DESC"),
            "{}",
            q.sql
        );
        let q = build(&[1], "metadata.user = 'u' AND tags.env = 'a'", &[], 10, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(q.sql.contains("FROM trace_metadata d"), "{}", q.sql);
        assert!(
            q.sql.contains("EXISTS (SELECT 1 FROM trace_tags x"),
            "{}",
            q.sql
        );
        assert_eq!(read_token(&token(200)).ok(), Some(200));
        assert!(build(&[1], "planet.x = 'y'", &[], 10, 0).is_err());
        assert!(build(&[1], "attributes.nope = 'y'", &[], 10, 0).is_err());
        assert!(build(&[1], "status > 3", &[], 10, 0).is_err());
        assert!(build(&[1], "prompt = 'noversion'", &[], 10, 0).is_err());
        assert!(read_token("!!").is_err());
    }
}
