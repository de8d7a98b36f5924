//! `search_registered_models` and `search_model_versions`: MLflow's filter grammar (parsed by
//! the tracking crate's parser) turned into SQL, with MLflow's allowed keys, operators, default
//! orders and its hiding of prompts.

use loopml_store::Value;
use loopml_tracking::filter::{self, Clause, Entity, Literal, Op};

use crate::PROMPT_TAG;
use crate::error::{Error, Result};

/// A WHERE clause with its parameters and an ORDER BY, ready to paste into a query.
#[derive(Debug, Default)]
pub struct SqlQuery {
    /// `cond AND cond …` (`1=1` when there is no condition).
    pub where_sql: String,
    /// Parameters, numbered from 1 in `where_sql`.
    pub params: Vec<Value<'static>>,
    /// ORDER BY list (without the keywords).
    pub order_sql: String,
}

impl SqlQuery {
    fn param(&mut self, v: Value<'static>) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }
    fn push(&mut self, cond: String) {
        if !self.where_sql.is_empty() {
            self.where_sql.push_str(" AND ");
        }
        self.where_sql.push_str(&cond);
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidParameter(msg.into())
}

/// `column op value` for a string column (= != LIKE ILIKE IN NOT IN).
fn string_condition(q: &mut SqlQuery, column: &str, clause: &Clause) -> Result<String> {
    Ok(match clause.op {
        Op::Eq | Op::Ne | Op::Like => {
            let v = q.param(Value::from(clause.string_value()?.to_string()));
            format!("{column} {} {v}", clause.op.sql())
        }
        Op::ILike => {
            let v = q.param(Value::from(clause.string_value()?.to_string()));
            format!("LOWER({column}) LIKE LOWER({v})")
        }
        Op::In | Op::NotIn => {
            let Literal::List(items) = &clause.value else {
                return Err(invalid(format!(
                    "Expected a parenthesised list of strings for '{}' {}",
                    clause.entity.describe(),
                    clause.op.sql()
                )));
            };
            if items.is_empty() {
                // `x IN ()` matches nothing; `x NOT IN ()` matches everything.
                return Ok(if clause.op == Op::In { "1=0" } else { "1=1" }.to_string());
            }
            let ps: Vec<String> = items
                .iter()
                .map(|i| q.param(Value::from(i.clone())))
                .collect();
            format!("{column} {} ({})", clause.op.sql(), ps.join(", "))
        }
        _ => {
            return Err(invalid(format!(
                "Invalid comparator for attribute: {}",
                clause.op.sql()
            )));
        }
    })
}

/// `column op n` for an integer column.
fn numeric_condition(q: &mut SqlQuery, column: &str, key: &str, clause: &Clause) -> Result<String> {
    if !clause.op.is_numeric() {
        return Err(invalid(format!(
            "Invalid comparator for attribute {key}: {}",
            clause.op.sql()
        )));
    }
    let n = match &clause.value {
        Literal::Num(_, text) => text.parse::<i64>().ok(),
        Literal::Str(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(format!(
            "Invalid value for numeric attribute '{key}': expected an integer"
        ))
    })?;
    let v = q.param(Value::Int(n));
    Ok(format!("{column} {} {v}", clause.op.sql()))
}

/// Tag condition as membership in the set of entities carrying a matching tag. Written as
/// `key IN (SELECT … WHERE key = ? AND value …)` so the planner can start from the tag index
/// (`key, value`) instead of probing every row of the searched table.
fn tag_condition(
    q: &mut SqlQuery,
    table: &str,
    entity_columns: &str,
    tag_columns: &str,
    key: &str,
    clause: &Clause,
) -> Result<String> {
    if !clause.op.is_string() {
        return Err(invalid(format!(
            "Invalid comparator for tag: {}",
            clause.op.sql()
        )));
    }
    let k = q.param(Value::from(key.to_string()));
    let cond = string_condition(q, "t.value", clause)?;
    Ok(format!(
        "{entity_columns} IN (SELECT {tag_columns} FROM {table} t WHERE t.key = {k} AND {cond})"
    ))
}

/// Whether the filter explicitly asks for prompts (`tags.mlflow.prompt.is_prompt = 'true'`).
fn queries_prompts(clauses: &[Clause]) -> bool {
    clauses.iter().any(|c| match (&c.entity, &c.value) {
        (Entity::Tag(k), Literal::Str(v)) if k == PROMPT_TAG => {
            (c.op == Op::Eq && v.eq_ignore_ascii_case("true"))
                || (c.op == Op::Ne && v.eq_ignore_ascii_case("false"))
        }
        _ => false,
    })
}

/// Shared tail of both searches: apply the prompt rule the way MLflow does. Unless the filter
/// asks for prompts, clauses on the prompt tag are dropped and prompt models are excluded
/// (including models without the tag: the client always appends `is_prompt != 'true'`).
fn prompt_clauses(clauses: Vec<Clause>, q: &mut SqlQuery, model_key_column: &str) -> Vec<Clause> {
    if queries_prompts(&clauses) {
        return clauses;
    }
    q.push(format!(
        "NOT EXISTS (SELECT 1 FROM registered_model_tags pt WHERE pt.model = {model_key_column} \
         AND pt.key = '{PROMPT_TAG}' AND pt.value = 'true')"
    ));
    clauses
        .into_iter()
        .filter(|c| !matches!(&c.entity, Entity::Tag(k) if k == PROMPT_TAG))
        .collect()
}

fn order_entries(order_by: &[String]) -> Result<Vec<(String, bool)>> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for raw in order_by.iter().filter(|s| !s.trim().is_empty()) {
        let parsed = filter::parse_order_by(raw)?;
        let key = match parsed.entity {
            Entity::Attribute(k) => k,
            other => {
                return Err(invalid(format!(
                    "Invalid order by key '{}' specified.",
                    other.describe()
                )));
            }
        };
        out.push((key, parsed.ascending));
    }
    Ok(out)
}

/// Builds the WHERE and ORDER BY of `search_registered_models` (table alias `rm`).
pub fn registered_models(filter_str: Option<&str>, order_by: &[String]) -> Result<SqlQuery> {
    let clauses = filter::parse_filter(filter_str.unwrap_or(""))?;
    let mut q = SqlQuery::default();
    let clauses = prompt_clauses(clauses, &mut q, "rm.id");
    for c in &clauses {
        let cond = match &c.entity {
            Entity::Attribute(k) if k == "name" => string_condition(&mut q, "rm.name", c)?,
            Entity::Attribute(k) => return Err(invalid(format!("Invalid attribute name: {k}"))),
            Entity::Tag(k) => {
                tag_condition(&mut q, "registered_model_tags", "rm.id", "t.model", k, c)?
            }
            other => {
                return Err(invalid(format!(
                    "Invalid token type in filter: '{}'. Registered models can be searched by \
                     name and tags only.",
                    other.describe()
                )));
            }
        };
        q.push(cond);
    }
    let mut seen: Vec<&'static str> = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for (key, asc) in order_entries(order_by)? {
        let column = match key.as_str() {
            "name" => "rm.name",
            // MLflow's SQL store sorts both timestamp keys by last update.
            "timestamp" | "last_updated_timestamp" | "creation_timestamp" => "rm.last_updated_time",
            _ => {
                return Err(invalid(format!(
                    "Invalid order by key '{key}' specified.Valid keys are '{{'name', \
                     'last_updated_timestamp', 'timestamp'}}'"
                )));
            }
        };
        if seen.contains(&column) {
            return Err(invalid(format!(
                "`order_by` contains duplicate fields: {order_by:?}"
            )));
        }
        seen.push(column);
        order.push(format!("{column} {}", if asc { "ASC" } else { "DESC" }));
    }
    if !seen.contains(&"rm.name") {
        order.push("rm.name ASC".into());
    }
    q.order_sql = order.join(", ");
    if q.where_sql.is_empty() {
        q.where_sql = "1=1".into();
    }
    Ok(q)
}

/// Builds the WHERE and ORDER BY of `search_model_versions` (aliases `mv` and `rm`).
pub fn model_versions(filter_str: Option<&str>, order_by: &[String]) -> Result<SqlQuery> {
    let clauses = filter::parse_filter(filter_str.unwrap_or(""))?;
    let mut q = SqlQuery::default();
    let clauses = prompt_clauses(clauses, &mut q, "mv.model");
    for c in &clauses {
        let cond = match &c.entity {
            Entity::Attribute(k) => match k.as_str() {
                "name" => string_condition(&mut q, "rm.name", c)?,
                "run_id" => string_condition(&mut q, "mv.run_id", c)?,
                "source_path" => {
                    if matches!(c.op, Op::In | Op::NotIn) {
                        return Err(invalid(format!(
                            "Invalid comparator for attribute: {}",
                            c.op.sql()
                        )));
                    }
                    string_condition(&mut q, "mv.source", c)?
                }
                "version_number" => numeric_condition(&mut q, "mv.version", k, c)?,
                _ => return Err(invalid(format!("Invalid attribute name: {k}"))),
            },
            Entity::Tag(k) => tag_condition(
                &mut q,
                "model_version_tags",
                "(mv.model, mv.version)",
                "t.model, t.version",
                k,
                c,
            )?,
            other => {
                return Err(invalid(format!(
                    "Invalid token type in filter: '{}'. Model versions can be searched by \
                     name, run_id, source_path, version_number and tags.",
                    other.describe()
                )));
            }
        };
        q.push(cond);
    }
    let defaults = [
        "last_updated_timestamp DESC".to_string(),
        "name ASC".to_string(),
        "version_number DESC".to_string(),
    ];
    let given: Vec<String> = order_by
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    let order_by = if given.is_empty() {
        &defaults[..]
    } else {
        &given[..]
    };
    let mut seen: Vec<&'static str> = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for (key, asc) in order_entries(order_by)? {
        let column = match key.as_str() {
            "name" => "rm.name",
            "version_number" => "mv.version",
            "creation_timestamp" => "mv.creation_time",
            "last_updated_timestamp" => "mv.last_updated_time",
            _ => {
                return Err(invalid(format!(
                    "Invalid order by key '{key}' specified. Valid keys are {{'name', \
                     'version_number', 'creation_timestamp', 'last_updated_timestamp'}}"
                )));
            }
        };
        if seen.contains(&column) {
            return Err(invalid(format!(
                "`order_by` contains duplicate fields: {order_by:?}"
            )));
        }
        seen.push(column);
        order.push(format!("{column} {}", if asc { "ASC" } else { "DESC" }));
    }
    if !seen.contains(&"rm.name") {
        order.push("rm.name ASC".into());
    }
    if !seen.contains(&"mv.version") {
        order.push("mv.version DESC".into());
    }
    q.order_sql = order.join(", ");
    if q.where_sql.is_empty() {
        q.where_sql = "1=1".into();
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_rewrite_is_dropped_and_becomes_an_anti_join() {
        let q = registered_models(
            Some("name LIKE 'rm%' AND tag.`mlflow.prompt.is_prompt` != 'true'"),
            &[],
        )
        .unwrap();
        assert!(q.where_sql.contains("NOT EXISTS"));
        assert!(!q.where_sql.contains(" t.key"));
        assert_eq!(q.params.len(), 1);
        assert_eq!(q.order_sql, "rm.name ASC");
    }

    #[test]
    fn asking_for_prompts_keeps_the_tag_clause() {
        let q = registered_models(Some("tags.`mlflow.prompt.is_prompt` = 'true'"), &[]).unwrap();
        assert!(!q.where_sql.contains("NOT EXISTS"));
        assert!(q.where_sql.contains(" t.key"));
    }

    #[test]
    fn model_version_orders_and_errors() {
        let q = model_versions(Some("name = 'a'"), &[]).unwrap();
        assert_eq!(
            q.order_sql,
            "mv.last_updated_time DESC, rm.name ASC, mv.version DESC"
        );
        let q = model_versions(None, &["version_number ASC".into()]).unwrap();
        assert_eq!(q.order_sql, "mv.version ASC, rm.name ASC");
        assert!(model_versions(Some("metrics.x > 1"), &[]).is_err());
        assert!(model_versions(Some("version_number = 'abc'"), &[]).is_err());
        assert!(model_versions(Some("source_path IN ('a')"), &[]).is_err());
        assert!(model_versions(None, &["bogus".into()]).is_err());
        assert!(model_versions(None, &["name".into(), "name DESC".into()]).is_err());
        assert!(registered_models(Some("run_id = 'x'"), &[]).is_err());
        assert!(registered_models(Some("tags.a > 1"), &[]).is_err());
    }
}
