//! SQL for the tracking tables: loading entities and building search queries. Runs on a
//! [`Conn`] inside a read or write transaction; all SQL is portable (`?` placeholders).

use std::collections::HashMap;

use loopml_store::{Conn, Row, StoreError, Value};

use crate::error::{Error, Result};
use crate::filter::{Clause, Entity, Literal, Op, OrderBy};
use crate::model::{
    Dataset, DatasetInput, DatasetSummary, Experiment, KeyValue, LifecycleStage, LoggedModel,
    LoggedModelStatus, Metric, ModelMetric, Run, RunInfo, RunStatus,
};

/// `?, ?, ?` with `n` placeholders.
pub fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// Maximum ids per `IN (...)` list.
const CHUNK: usize = 500;

fn kv(r: &Row<'_>, k: usize) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: r.string(k)?,
        value: r.string(k + 1)?,
    })
}

fn metric_value(r: &Row<'_>, value_idx: usize, nan_idx: usize) -> Result<f64, StoreError> {
    if r.i64(nan_idx)? != 0 {
        Ok(f64::NAN)
    } else {
        r.f64(value_idx)
    }
}

// ------------------------------------------------------------------------------------------
// Experiments

const EXPERIMENT_COLUMNS: &str =
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time";

fn experiment_row(r: &Row<'_>) -> Result<Experiment, StoreError> {
    Ok(Experiment {
        id: r.i64(0)?,
        name: r.string(1)?,
        artifact_location: r.string(2)?,
        lifecycle_stage: LifecycleStage::parse(&r.string(3)?),
        creation_time: r.i64(4)?,
        last_update_time: r.i64(5)?,
        tags: Vec::new(),
    })
}

fn attach_experiment_tags(c: &Conn<'_>, exps: &mut [Experiment]) -> Result<()> {
    for chunk in exps.chunks_mut(CHUNK) {
        let ids: Vec<Value<'_>> = chunk.iter().map(|e| Value::Int(e.id)).collect();
        let sql = format!(
            "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN ({}) \
             ORDER BY key",
            placeholders(ids.len())
        );
        let rows = c.query(&sql, &ids, |r| Ok((r.i64(0)?, kv(r, 1)?)))?;
        let mut by_id: HashMap<i64, Vec<KeyValue>> = HashMap::new();
        for (id, t) in rows {
            by_id.entry(id).or_default().push(t);
        }
        for e in chunk.iter_mut() {
            e.tags = by_id.remove(&e.id).unwrap_or_default();
        }
    }
    Ok(())
}

/// Loads an experiment with its tags.
pub fn experiment_by_id(c: &Conn<'_>, id: i64) -> Result<Option<Experiment>> {
    let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = ?");
    let Some(e) = c.query_opt(&sql, &[Value::Int(id)], experiment_row)? else {
        return Ok(None);
    };
    let mut v = vec![e];
    attach_experiment_tags(c, &mut v)?;
    Ok(v.pop())
}

/// Loads an experiment by name.
pub fn experiment_by_name(c: &Conn<'_>, name: &str) -> Result<Option<Experiment>> {
    let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE name = ?");
    let Some(e) = c.query_opt(&sql, &[name.into()], experiment_row)? else {
        return Ok(None);
    };
    let mut v = vec![e];
    attach_experiment_tags(c, &mut v)?;
    Ok(v.pop())
}

/// Loads experiment or fails with MLflow's not-found error.
pub fn require_experiment(c: &Conn<'_>, id: i64) -> Result<Experiment> {
    experiment_by_id(c, id)?
        .ok_or_else(|| Error::NotFound(format!("No Experiment with id={id} exists")))
}

fn string_cmp(col: &str, op: Op) -> Result<String> {
    Ok(match op {
        Op::Eq | Op::Ne | Op::Like => format!("{col} {} ?", op.sql()),
        Op::ILike => format!("LOWER({col}) LIKE LOWER(?)"),
        _ => {
            return Err(Error::InvalidParameter(format!(
                "Invalid comparator '{}' for a string attribute",
                op.sql()
            )));
        }
    })
}

fn numeric_cmp(col: &str, clause: &Clause) -> Result<(String, f64)> {
    if !clause.op.is_numeric() {
        return Err(Error::InvalidParameter(format!(
            "Invalid comparator '{}' for numeric {}. Only =, !=, >, >=, <, <= are allowed.",
            clause.op.sql(),
            clause.entity.describe()
        )));
    }
    Ok((
        format!("{col} {} ?", clause.op.sql()),
        clause.numeric_value()?,
    ))
}

/// A key/value table condition (`params`, `tags`, …) for one clause.
fn kv_condition(
    table: &str,
    id_col: &str,
    outer: &str,
    key: &str,
    clause: &Clause,
    params: &mut Vec<Value<'static>>,
) -> Result<String> {
    match clause.op {
        Op::IsNull | Op::IsNotNull => {
            params.push(Value::from(key.to_string()));
            let not = if clause.op == Op::IsNull { "NOT " } else { "" };
            Ok(format!(
                "{not}EXISTS (SELECT 1 FROM {table} x WHERE x.{id_col} = {outer} AND x.key = ?)"
            ))
        }
        op if op.is_string() => {
            let v = clause.string_value()?.to_string();
            params.push(Value::from(key.to_string()));
            params.push(Value::from(v));
            Ok(format!(
                "EXISTS (SELECT 1 FROM {table} x WHERE x.{id_col} = {outer} AND x.key = ? AND {})",
                string_cmp("x.value", op)?
            ))
        }
        op => Err(Error::InvalidParameter(format!(
            "Invalid comparator '{}' for {}. Only =, !=, LIKE, ILIKE, IS NULL and IS NOT NULL \
             are allowed.",
            op.sql(),
            clause.entity.describe()
        ))),
    }
}

fn list_condition(col: &str, clause: &Clause, params: &mut Vec<Value<'static>>) -> Result<String> {
    let Literal::List(items) = &clause.value else {
        return Err(Error::InvalidParameter(format!(
            "Expected a parenthesised list of quoted strings after {} for {}",
            clause.op.sql(),
            clause.entity.describe()
        )));
    };
    params.extend(items.iter().map(|i| Value::from(i.clone())));
    Ok(format!(
        "{col} {} ({})",
        clause.op.sql(),
        placeholders(items.len())
    ))
}

/// Builds the query for an experiments search: returns SQL and parameters.
pub fn search_experiments_sql(
    clauses: &[Clause],
    order: &[OrderBy],
    stages: &[&'static str],
    limit: i64,
    offset: i64,
) -> Result<(String, Vec<Value<'static>>)> {
    let mut params: Vec<Value<'static>> = stages.iter().map(|s| Value::from(*s)).collect();
    let mut wheres = vec![format!(
        "e.lifecycle_stage IN ({})",
        placeholders(stages.len())
    )];
    for clause in clauses {
        let cond = match &clause.entity {
            Entity::Attribute(a) => match a.as_str() {
                "name" => match clause.op {
                    Op::In | Op::NotIn => list_condition("e.name", clause, &mut params)?,
                    op => {
                        params.push(Value::from(clause.string_value()?.to_string()));
                        string_cmp("e.name", op)?
                    }
                },
                "experiment_id" => match clause.op {
                    Op::In | Op::NotIn => {
                        list_condition("CAST(e.experiment_id AS TEXT)", clause, &mut params)?
                    }
                    Op::Eq | Op::Ne => {
                        let v = match &clause.value {
                            Literal::Str(s) => s.clone(),
                            Literal::Num(_, t) => t.clone(),
                            _ => return Err(Error::InvalidParameter("bad experiment_id".into())),
                        };
                        params.push(Value::from(v));
                        format!("CAST(e.experiment_id AS TEXT) {} ?", clause.op.sql())
                    }
                    _ => {
                        return Err(Error::InvalidParameter(
                            "experiment_id supports only =, !=, IN and NOT IN".into(),
                        ));
                    }
                },
                "creation_time" | "last_update_time" => {
                    let (sql, v) = numeric_cmp(&format!("e.{a}"), clause)?;
                    params.push(Value::Real(v));
                    sql
                }
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid attribute key '{other}' specified. Valid keys are \
                         ['name', 'experiment_id', 'creation_time', 'last_update_time']"
                    )));
                }
            },
            Entity::Tag(k) => kv_condition(
                "experiment_tags",
                "experiment_id",
                "e.experiment_id",
                k,
                clause,
                &mut params,
            )?,
            other => {
                return Err(Error::InvalidParameter(format!(
                    "Invalid entity type '{}' for an experiments search: only attributes and \
                     tags can be filtered on.",
                    other.describe()
                )));
            }
        };
        wheres.push(cond);
    }
    let mut order_sql = Vec::new();
    let mut has_id = false;
    for o in order {
        let dir = if o.ascending { "ASC" } else { "DESC" };
        let col = match &o.entity {
            Entity::Attribute(a) => match a.as_str() {
                "name" => "e.name",
                "experiment_id" => {
                    has_id = true;
                    "e.experiment_id"
                }
                "creation_time" => "e.creation_time",
                "last_update_time" => "e.last_update_time",
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid order_by key '{other}'. Valid keys are ['name', \
                         'experiment_id', 'creation_time', 'last_update_time']"
                    )));
                }
            },
            other => {
                return Err(Error::InvalidParameter(format!(
                    "Invalid order_by entity '{}' for experiments",
                    other.describe()
                )));
            }
        };
        order_sql.push(format!("{col} {dir}"));
    }
    if order.is_empty() {
        order_sql.push("e.creation_time DESC".into());
        order_sql.push("e.experiment_id ASC".into());
    } else if !has_id {
        order_sql.push("e.experiment_id DESC".into());
    }
    params.push(Value::Int(limit));
    params.push(Value::Int(offset));
    Ok((
        format!(
            "SELECT e.experiment_id FROM experiments e WHERE {} ORDER BY {} LIMIT ? OFFSET ?",
            wheres.join(" AND "),
            order_sql.join(", ")
        ),
        params,
    ))
}

/// Loads experiments by id, in the given order.
pub fn experiments_by_ids(c: &Conn<'_>, ids: &[i64]) -> Result<Vec<Experiment>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let p: Vec<Value<'_>> = chunk.iter().map(|i| Value::Int(*i)).collect();
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id IN ({})",
            placeholders(p.len())
        );
        let mut found: HashMap<i64, Experiment> = c
            .query(&sql, &p, experiment_row)?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        out.extend(chunk.iter().filter_map(|i| found.remove(i)));
    }
    attach_experiment_tags(c, &mut out)?;
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Runs

const RUN_COLUMNS: &str = "run_uuid, experiment_id, name, user_id, status, start_time, end_time, \
                           artifact_uri, lifecycle_stage";

fn run_info_row(r: &Row<'_>) -> Result<RunInfo, StoreError> {
    Ok(RunInfo {
        run_id: r.string(0)?,
        experiment_id: r.i64(1)?,
        run_name: r.string(2)?,
        user_id: r.string(3)?,
        status: RunStatus::parse(&r.string(4)?).unwrap_or(RunStatus::Running),
        start_time: r.i64(5)?,
        end_time: r.opt_i64(6)?,
        artifact_uri: r.string(7)?,
        lifecycle_stage: LifecycleStage::parse(&r.string(8)?),
    })
}

/// Loads one run's info.
pub fn run_info(c: &Conn<'_>, run_id: &str) -> Result<Option<RunInfo>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_uuid = ?");
    Ok(c.query_opt(&sql, &[run_id.into()], run_info_row)?)
}

/// Loads a run's info or fails with MLflow's not-found error.
pub fn require_run(c: &Conn<'_>, run_id: &str) -> Result<RunInfo> {
    run_info(c, run_id)?.ok_or_else(|| Error::NotFound(format!("Run with id={run_id} not found")))
}

/// Loads a run that must be active (writes to deleted runs are refused).
pub fn require_active_run(c: &Conn<'_>, run_id: &str) -> Result<RunInfo> {
    let info = require_run(c, run_id)?;
    if info.lifecycle_stage != LifecycleStage::Active {
        return Err(Error::InvalidParameter(format!(
            "The run {run_id} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(info)
}

/// Params and tags of runs, by run id.
pub type RunKeyValues = HashMap<String, (Vec<KeyValue>, Vec<KeyValue>)>;

/// Loads full runs (latest metrics, params, tags, inputs, outputs), in the order of `ids`.
pub fn runs_by_ids(c: &Conn<'_>, ids: &[String]) -> Result<Vec<Run>> {
    let cores = run_cores(c, ids)?;
    let kvs = run_key_values(c, ids)?;
    Ok(assemble_runs(ids, cores, kvs))
}

/// Puts runs loaded in parts back together, in the order of `ids`.
pub fn assemble_runs(
    ids: &[String],
    mut cores: HashMap<String, Run>,
    mut kvs: RunKeyValues,
) -> Vec<Run> {
    ids.iter()
        .filter_map(|id| {
            let mut run = cores.remove(id)?;
            if let Some((params, tags)) = kvs.remove(id) {
                run.params = params;
                run.tags = tags;
            }
            Some(run)
        })
        .collect()
}

/// Loads the params and tags of runs.
pub fn run_key_values(c: &Conn<'_>, ids: &[String]) -> Result<RunKeyValues> {
    let mut out: RunKeyValues = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let p: Vec<Value<'_>> = chunk.iter().map(|i| Value::from(i.as_str())).collect();
        let ph = placeholders(p.len());
        for (table, is_param) in [("params", true), ("tags", false)] {
            c.query(
                &format!("SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({ph})"),
                &p,
                |r| {
                    let item = kv(r, 1)?;
                    let entry = match out.get_mut(r.str(0)?) {
                        Some(e) => e,
                        None => out.entry(r.string(0)?).or_default(),
                    };
                    if is_param {
                        entry.0.push(item);
                    } else {
                        entry.1.push(item);
                    }
                    Ok(())
                },
            )?;
        }
    }
    Ok(out)
}

/// Loads runs without params and tags (info, latest metrics, inputs, outputs), by run id.
pub fn run_cores(c: &Conn<'_>, ids: &[String]) -> Result<HashMap<String, Run>> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let p: Vec<Value<'_>> = chunk.iter().map(|i| Value::from(i.as_str())).collect();
        let ph = placeholders(p.len());
        let mut runs: HashMap<String, Run> = c
            .query(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_uuid IN ({ph})"),
                &p,
                run_info_row,
            )?
            .into_iter()
            .map(|info| {
                (
                    info.run_id.clone(),
                    Run {
                        info,
                        metrics: Vec::new(),
                        params: Vec::new(),
                        tags: Vec::new(),
                        dataset_inputs: Vec::new(),
                        model_inputs: Vec::new(),
                        model_outputs: Vec::new(),
                    },
                )
            })
            .collect();
        c.query(
            &format!(
                "SELECT run_uuid, key, value, timestamp, step, is_nan FROM metric_series \
                 WHERE run_uuid IN ({ph})"
            ),
            &p,
            |r| {
                if let Some(run) = runs.get_mut(r.str(0)?) {
                    run.metrics.push(Metric {
                        key: r.string(1)?,
                        value: metric_value(r, 2, 5)?,
                        timestamp: r.i64(3)?,
                        step: r.i64(4)?,
                    });
                }
                Ok(())
            },
        )?;
        let mut input_tags: HashMap<(String, String), Vec<KeyValue>> = HashMap::new();
        c.query(
            &format!(
                "SELECT run_uuid, dataset_uuid, key, value FROM run_dataset_input_tags \
                 WHERE run_uuid IN ({ph})"
            ),
            &p,
            |r| {
                input_tags
                    .entry((r.string(0)?, r.string(1)?))
                    .or_default()
                    .push(kv(r, 2)?);
                Ok(())
            },
        )?;
        c.query(
            &format!(
                "SELECT i.run_uuid, d.dataset_uuid, d.name, d.digest, d.source_type, d.source, \
                 d.schema, d.profile FROM run_dataset_inputs i \
                 JOIN datasets d ON d.dataset_uuid = i.dataset_uuid \
                 WHERE i.run_uuid IN ({ph}) ORDER BY d.name"
            ),
            &p,
            |r| {
                let run_id = r.string(0)?;
                let ds_id = r.string(1)?;
                let tags = input_tags
                    .remove(&(run_id.clone(), ds_id))
                    .unwrap_or_default();
                if let Some(run) = runs.get_mut(&run_id) {
                    run.dataset_inputs.push(DatasetInput {
                        tags,
                        dataset: Dataset {
                            name: r.string(2)?,
                            digest: r.string(3)?,
                            source_type: r.string(4)?,
                            source: r.string(5)?,
                            schema: r.opt_string(6)?,
                            profile: r.opt_string(7)?,
                        },
                    });
                }
                Ok(())
            },
        )?;
        c.query(
            &format!("SELECT run_uuid, model_id FROM run_model_inputs WHERE run_uuid IN ({ph})"),
            &p,
            |r| {
                if let Some(run) = runs.get_mut(r.str(0)?) {
                    run.model_inputs.push(r.string(1)?);
                }
                Ok(())
            },
        )?;
        c.query(
            &format!(
                "SELECT run_uuid, model_id, step FROM run_model_outputs WHERE run_uuid IN ({ph})"
            ),
            &p,
            |r| {
                if let Some(run) = runs.get_mut(r.str(0)?) {
                    run.model_outputs.push((r.string(1)?, r.i64(2)?));
                }
                Ok(())
            },
        )?;
        out.extend(runs);
    }
    Ok(out)
}

fn run_attribute(name: &str) -> Option<(&'static str, bool)> {
    // (column, is_numeric)
    Some(match name {
        "run_id" | "run_uuid" => ("r.run_uuid", false),
        "run_name" | "run name" | "Run name" | "Run Name" => ("r.name", false),
        "status" => ("r.status", false),
        "user_id" => ("r.user_id", false),
        "artifact_uri" => ("r.artifact_uri", false),
        "lifecycle_stage" => ("r.lifecycle_stage", false),
        "start_time" | "created" | "Created" => ("r.start_time", true),
        "end_time" => ("r.end_time", true),
        _ => return None,
    })
}

const RUN_ATTRIBUTES: &str = "['run_id', 'run_name', 'status', 'user_id', 'artifact_uri', \
                              'start_time', 'end_time', 'created']";

/// The kind of value one sort key of a runs search holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    /// An integer (flags, times, `is_nan`).
    Int,
    /// A double (metric values).
    Real,
    /// Text (params, tags, text attributes, the run id).
    Text,
}

/// One sort key's value in the last run of a page: where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// SQL NULL (the run lacks the metric, param, tag or attribute).
    Null,
    /// An integer.
    Int(i64),
    /// A double, exact.
    Real(f64),
    /// Text.
    Text(String),
}

impl SortValue {
    fn fits(&self, kind: SortKind) -> bool {
        matches!(
            (self, kind),
            (SortValue::Null, _)
                | (SortValue::Int(_), SortKind::Int)
                | (SortValue::Real(_), SortKind::Real)
                | (SortValue::Text(_), SortKind::Text)
        )
    }

    fn param(&self) -> Value<'static> {
        match self {
            SortValue::Null => Value::Null,
            SortValue::Int(i) => Value::Int(*i),
            SortValue::Real(f) => Value::Real(*f),
            SortValue::Text(t) => Value::from(t.clone()),
        }
    }
}

/// Where a runs-search page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum RunsPage {
    /// Skip this many runs (MLflow's own tokens, and the first page).
    Offset(i64),
    /// Just after the run with these sort-key values (keyset paging: page N costs what
    /// page 1 costs, and runs logged meanwhile neither repeat nor vanish from later pages).
    After(Vec<SortValue>),
}

/// A runs search: SQL selecting each run id followed by its sort-key values, the parameters,
/// and the kind of each sort key (for [`sort_values`]).
#[derive(Debug)]
pub struct RunsQuery {
    /// The statement.
    pub sql: String,
    /// Its parameters, in order.
    pub params: Vec<Value<'static>>,
    /// The kind of each sort key, in `ORDER BY` order.
    pub kinds: Vec<SortKind>,
}

/// Reads the sort-key values of one row of a [`RunsQuery`] (columns 1..).
pub fn sort_values(r: &Row<'_>, kinds: &[SortKind]) -> Result<Vec<SortValue>, StoreError> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let idx = i + 1;
            Ok(match kind {
                SortKind::Int => r.opt_i64(idx)?.map_or(SortValue::Null, SortValue::Int),
                SortKind::Real => r.opt_f64(idx)?.map_or(SortValue::Null, SortValue::Real),
                SortKind::Text => r.opt_string(idx)?.map_or(SortValue::Null, SortValue::Text),
            })
        })
        .collect()
}

/// One sort key: expression, kind, ascending.
type SortKey = (String, SortKind, bool);

/// `(k0 > v0) OR (k0 = v0 AND k1 > v1) OR …` with each key's direction: the rows strictly
/// after `after` in the sort order. A NULL value compares equal only to NULL and nothing is
/// after it within its own key (NULLs only occur where the key's missing-flag before it ties).
fn keyset_after(
    keys: &[SortKey],
    after: &[SortValue],
    params: &mut Vec<Value<'static>>,
) -> Result<String> {
    if after.len() != keys.len() || !after.iter().zip(keys).all(|(v, k)| v.fits(k.1)) {
        return Err(Error::InvalidParameter(
            "Invalid page token: it belongs to a search with a different order_by".into(),
        ));
    }
    let mut disjuncts = Vec::new();
    for (k, value) in after.iter().enumerate() {
        if *value == SortValue::Null {
            continue;
        }
        let mut conj = Vec::with_capacity(k + 1);
        for (j, prev) in after[..k].iter().enumerate() {
            if *prev == SortValue::Null {
                conj.push(format!("{} IS NULL", keys[j].0));
            } else {
                conj.push(format!("{} = ?", keys[j].0));
                params.push(prev.param());
            }
        }
        let cmp = if keys[k].2 { ">" } else { "<" };
        conj.push(format!("{} {cmp} ?", keys[k].0));
        params.push(value.param());
        disjuncts.push(format!("({})", conj.join(" AND ")));
    }
    Ok(if disjuncts.is_empty() {
        "1 = 0".to_string()
    } else {
        format!("({})", disjuncts.join(" OR "))
    })
}

/// Builds the query for a runs search (see [`RunsQuery`]).
pub fn search_runs_sql(
    experiment_ids: &[i64],
    stages: &[&'static str],
    clauses: &[Clause],
    order: &[OrderBy],
    limit: i64,
    page: &RunsPage,
) -> Result<RunsQuery> {
    let mut join_params: Vec<Value<'static>> = Vec::new();
    let mut joins = String::new();
    // Each order_by adds a missing-flag (runs without the key sort last) and its value.
    let mut keys: Vec<SortKey> = Vec::new();
    let missing = |e: &str| format!("CASE WHEN {e} IS NULL THEN 1 ELSE 0 END");
    for (i, o) in order.iter().enumerate() {
        match &o.entity {
            Entity::Metric(k) => {
                joins.push_str(&format!(
                    " LEFT JOIN metric_series o{i} ON o{i}.run_uuid = r.run_uuid AND o{i}.key = ?"
                ));
                join_params.push(Value::from(k.clone()));
                keys.push((missing(&format!("o{i}.run_uuid")), SortKind::Int, true));
                keys.push((format!("o{i}.is_nan"), SortKind::Int, true));
                keys.push((format!("o{i}.value"), SortKind::Real, o.ascending));
            }

            Entity::Param(k) | Entity::Tag(k) => {
                let table = if matches!(o.entity, Entity::Param(_)) {
                    "params"
                } else {
                    "tags"
                };
                joins.push_str(&format!(
                    " LEFT JOIN {table} o{i} ON o{i}.run_uuid = r.run_uuid AND o{i}.key = ?"
                ));
                join_params.push(Value::from(k.clone()));
                keys.push((missing(&format!("o{i}.value")), SortKind::Int, true));
                keys.push((format!("o{i}.value"), SortKind::Text, o.ascending));
            }
            Entity::Attribute(a) => {
                let (col, numeric) = run_attribute(a).ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "Invalid order_by attribute '{a}'. Valid attributes are {RUN_ATTRIBUTES}"
                    ))
                })?;
                let kind = if numeric {
                    SortKind::Int
                } else {
                    SortKind::Text
                };
                keys.push((missing(col), SortKind::Int, true));
                keys.push((col.to_string(), kind, o.ascending));
            }
            Entity::Dataset(_) => {
                return Err(Error::InvalidParameter(
                    "Invalid order_by entity: datasets cannot be ordered by".into(),
                ));
            }
        }
    }
    keys.push(("r.start_time".into(), SortKind::Int, false));
    keys.push(("r.run_uuid".into(), SortKind::Text, true));

    let mut params: Vec<Value<'static>> = Vec::new();
    let mut wheres = vec![
        format!(
            "r.experiment_id IN ({})",
            placeholders(experiment_ids.len())
        ),
        format!("r.lifecycle_stage IN ({})", placeholders(stages.len())),
    ];
    params.extend(experiment_ids.iter().map(|i| Value::Int(*i)));
    params.extend(stages.iter().map(|s| Value::from(*s)));
    for clause in clauses {
        let cond = match &clause.entity {
            Entity::Metric(k) => {
                if !clause.op.is_numeric() {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid comparator '{}' for metrics.{k}. Only =, !=, >, >=, <, <= are \
                         allowed.",
                        clause.op.sql()
                    )));
                }
                let v = clause.numeric_value()?;
                params.push(Value::from(k.clone()));
                params.push(Value::Real(v));
                format!(
                    "EXISTS (SELECT 1 FROM metric_series x WHERE x.run_uuid = r.run_uuid AND \
                     x.key = ? AND x.is_nan = 0 AND x.value {} ?)",
                    clause.op.sql()
                )
            }
            Entity::Param(k) => {
                kv_condition("params", "run_uuid", "r.run_uuid", k, clause, &mut params)?
            }
            Entity::Tag(k) => {
                kv_condition("tags", "run_uuid", "r.run_uuid", k, clause, &mut params)?
            }
            Entity::Attribute(a) => {
                let (col, numeric) = run_attribute(a).ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "Invalid attribute key '{a}' specified. Valid keys are {RUN_ATTRIBUTES}"
                    ))
                })?;
                match clause.op {
                    Op::In | Op::NotIn if col == "r.run_uuid" => {
                        list_condition(col, clause, &mut params)?
                    }
                    Op::In | Op::NotIn => {
                        return Err(Error::InvalidParameter(format!(
                            "Invalid comparator '{}' for attribute {a}: IN and NOT IN are only \
                             supported for run_id.",
                            clause.op.sql()
                        )));
                    }
                    _ if numeric => {
                        let (sql, v) = numeric_cmp(col, clause)?;
                        params.push(Value::Real(v));
                        sql
                    }
                    op => {
                        params.push(Value::from(clause.string_value()?.to_string()));
                        string_cmp(col, op)?
                    }
                }
            }
            Entity::Dataset(field) => {
                let (sub, col) = match field.as_str() {
                    "name" => ("datasets", "d.name"),
                    "digest" => ("datasets", "d.digest"),
                    "context" => ("context", "t.value"),
                    other => {
                        return Err(Error::InvalidParameter(format!(
                            "Invalid dataset key '{other}'. Valid keys are ['name', 'digest', \
                             'context']"
                        )));
                    }
                };
                let cmp = match clause.op {
                    Op::In | Op::NotIn => list_condition(col, clause, &mut params)?,
                    op => {
                        params.push(Value::from(clause.string_value()?.to_string()));
                        string_cmp(col, op)?
                    }
                };
                if sub == "datasets" {
                    format!(
                        "EXISTS (SELECT 1 FROM run_dataset_inputs i JOIN datasets d ON \
                         d.dataset_uuid = i.dataset_uuid WHERE i.run_uuid = r.run_uuid AND {cmp})"
                    )
                } else {
                    format!(
                        "EXISTS (SELECT 1 FROM run_dataset_input_tags t WHERE t.run_uuid = \
                         r.run_uuid AND t.key = 'mlflow.data.context' AND {cmp})"
                    )
                }
            }
        };
        wheres.push(cond);
    }
    if let RunsPage::After(after) = page {
        wheres.push(keyset_after(&keys, after, &mut params)?);
    }
    let mut all = join_params;
    all.extend(params);
    all.push(Value::Int(limit));
    let offset = match page {
        RunsPage::Offset(n) if *n > 0 => {
            all.push(Value::Int(*n));
            " OFFSET ?"
        }
        _ => "",
    };
    let select: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let order_sql: Vec<String> = keys
        .iter()
        .map(|(e, _, asc)| format!("{e} {}", if *asc { "ASC" } else { "DESC" }))
        .collect();
    Ok(RunsQuery {
        sql: format!(
            "SELECT r.run_uuid, {} FROM runs r{joins} WHERE {} ORDER BY {} LIMIT ?{offset}",
            select.join(", "),
            wheres.join(" AND "),
            order_sql.join(", ")
        ),
        params: all,
        kinds: keys.iter().map(|k| k.1).collect(),
    })
}

// ------------------------------------------------------------------------------------------
// Logged models

const MODEL_COLUMNS: &str = "model_id, experiment_id, name, artifact_uri, status, status_message, \
                             model_type, source_run_id, creation_time, last_updated_time, \
                             lifecycle_stage";

fn model_row(r: &Row<'_>) -> Result<LoggedModel, StoreError> {
    Ok(LoggedModel {
        model_id: r.string(0)?,
        experiment_id: r.i64(1)?,
        name: r.string(2)?,
        artifact_uri: r.string(3)?,
        status: LoggedModelStatus::parse(&r.string(4)?).unwrap_or(LoggedModelStatus::Unspecified),
        status_message: r.opt_string(5)?,
        model_type: r.opt_string(6)?,
        source_run_id: r.opt_string(7)?,
        creation_timestamp_ms: r.i64(8)?,
        last_updated_timestamp_ms: r.i64(9)?,
        lifecycle_stage: LifecycleStage::parse(&r.string(10)?),
        tags: Vec::new(),
        params: Vec::new(),
        metrics: Vec::new(),
    })
}

/// Loads logged models with tags, params and metrics, in the order of `ids`.
pub fn models_by_ids(c: &Conn<'_>, ids: &[String]) -> Result<Vec<LoggedModel>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let p: Vec<Value<'_>> = chunk.iter().map(|i| Value::from(i.as_str())).collect();
        let ph = placeholders(p.len());
        let mut models: HashMap<String, LoggedModel> = c
            .query(
                &format!("SELECT {MODEL_COLUMNS} FROM logged_models WHERE model_id IN ({ph})"),
                &p,
                model_row,
            )?
            .into_iter()
            .map(|m| (m.model_id.clone(), m))
            .collect();
        for (table, is_param) in [("logged_model_params", true), ("logged_model_tags", false)] {
            c.query(
                &format!(
                    "SELECT model_id, key, value FROM {table} WHERE model_id IN ({ph}) ORDER BY key"
                ),
                &p,
                |r| {
                    if let Some(m) = models.get_mut(r.str(0)?) {
                        let item = kv(r, 1)?;
                        if is_param {
                            m.params.push(item);
                        } else {
                            m.tags.push(item);
                        }
                    }
                    Ok(())
                },
            )?;
        }
        c.query(
            &format!(
                "SELECT model_id, key, value, timestamp, step, is_nan, run_uuid, dataset_name, \
                 dataset_digest FROM logged_model_metrics WHERE model_id IN ({ph}) \
                 ORDER BY key, step, timestamp"
            ),
            &p,
            |r| {
                if let Some(m) = models.get_mut(r.str(0)?) {
                    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
                    m.metrics.push(ModelMetric {
                        metric: Metric {
                            key: r.string(1)?,
                            value: metric_value(r, 2, 5)?,
                            timestamp: r.i64(3)?,
                            step: r.i64(4)?,
                        },
                        run_id: r.opt_string(6)?,
                        dataset_name: nonempty(r.opt_string(7)?),
                        dataset_digest: nonempty(r.opt_string(8)?),
                    });
                }
                Ok(())
            },
        )?;
        out.extend(chunk.iter().filter_map(|id| models.remove(id)));
    }
    Ok(out)
}

/// Loads one logged model or fails with MLflow's not-found error.
pub fn require_model(c: &Conn<'_>, model_id: &str, allow_deleted: bool) -> Result<LoggedModel> {
    let not_found = || Error::NotFound(format!("Logged model with ID '{model_id}' not found."));
    let m = models_by_ids(c, &[model_id.to_string()])?
        .pop()
        .ok_or_else(not_found)?;
    if m.lifecycle_stage == LifecycleStage::Deleted && !allow_deleted {
        return Err(not_found());
    }
    Ok(m)
}

/// How a logged-model search orders results.
#[derive(Debug, Clone)]
pub struct ModelOrder {
    /// Field name (`name`, `creation_timestamp`, `metrics.<k>`, …).
    pub field: String,
    /// Ascending?
    pub ascending: bool,
    /// Dataset scope for metric ordering.
    pub dataset_name: Option<String>,
    /// Dataset scope for metric ordering.
    pub dataset_digest: Option<String>,
}

fn model_attribute(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "name" => ("m.name", false),
        "model_id" => ("m.model_id", false),
        "model_type" => ("m.model_type", false),
        "status" => ("m.status", false),
        "source_run_id" => ("m.source_run_id", false),
        "creation_timestamp" | "creation_time" | "creation_timestamp_ms" => {
            ("m.creation_time", true)
        }
        "last_updated_timestamp" | "last_updated_time" | "last_updated_timestamp_ms" => {
            ("m.last_updated_time", true)
        }
        _ => return None,
    })
}

/// Builds the query for a logged-model search.
pub fn search_models_sql(
    experiment_ids: &[i64],
    clauses: &[Clause],
    datasets: &[(String, Option<String>)],
    order: &[ModelOrder],
    limit: i64,
    offset: i64,
) -> Result<(String, Vec<Value<'static>>)> {
    let mut joins = String::new();
    let mut join_params: Vec<Value<'static>> = Vec::new();
    let mut order_sql = Vec::new();
    for (i, o) in order.iter().enumerate() {
        let dir = if o.ascending { "ASC" } else { "DESC" };
        if let Some(key) = o.field.strip_prefix("metrics.") {
            // Each model's latest value of the metric (newest timestamp, then step), on the
            // dataset when one is named, as mlflow server orders: one row per model, so a
            // metric logged on several datasets cannot repeat a model in the page.
            let mut scope = String::from("key = ?");
            join_params.push(Value::from(key.to_string()));
            if let Some(n) = &o.dataset_name {
                scope.push_str(" AND dataset_name = ?");
                join_params.push(Value::from(n.clone()));
            }
            if let Some(d) = &o.dataset_digest {
                scope.push_str(" AND dataset_digest = ?");
                join_params.push(Value::from(d.clone()));
            }
            joins.push_str(&format!(
                " LEFT JOIN (SELECT model_id, value FROM (SELECT model_id, \
                 CASE WHEN is_nan = 0 THEN value END AS value, ROW_NUMBER() OVER (PARTITION BY \
                 model_id ORDER BY timestamp DESC, step DESC, run_uuid ASC) AS rn \
                 FROM logged_model_metrics WHERE {scope}) t{i} WHERE rn = 1) o{i} \
                 ON o{i}.model_id = m.model_id"
            ));
            order_sql.push(format!("(o{i}.value IS NULL), o{i}.value {dir}"));
        } else {
            let (col, _) = model_attribute(&o.field).ok_or_else(|| {
                Error::InvalidParameter(format!("Invalid order_by field '{}'", o.field))
            })?;
            order_sql.push(format!("({col} IS NULL), {col} {dir}"));
        }
    }
    // mlflow server's tie-breakers, each unless the caller ordered by it already.
    if !order.iter().any(|o| {
        matches!(
            o.field.as_str(),
            "creation_time" | "creation_timestamp" | "creation_timestamp_ms"
        )
    }) {
        order_sql.push("m.creation_time DESC".into());
    }
    if !order.iter().any(|o| o.field == "model_id") {
        order_sql.push("m.model_id ASC".into());
    }

    let mut params: Vec<Value<'static>> = experiment_ids.iter().map(|i| Value::Int(*i)).collect();
    let mut wheres = vec![
        format!(
            "m.experiment_id IN ({})",
            placeholders(experiment_ids.len())
        ),
        "m.lifecycle_stage = 'active'".to_string(),
    ];
    for clause in clauses {
        let cond = match &clause.entity {
            Entity::Metric(k) => {
                if !clause.op.is_numeric() {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid comparator '{}' for metrics.{k}",
                        clause.op.sql()
                    )));
                }
                let v = clause.numeric_value()?;
                params.push(Value::from(k.clone()));
                params.push(Value::Real(v));
                let mut scope = String::new();
                if !datasets.is_empty() {
                    let mut alts = Vec::new();
                    for (name, digest) in datasets {
                        params.push(Value::from(name.clone()));
                        match digest {
                            Some(d) => {
                                params.push(Value::from(d.clone()));
                                alts.push("(x.dataset_name = ? AND x.dataset_digest = ?)");
                            }
                            None => alts.push("(x.dataset_name = ?)"),
                        }
                    }
                    scope = format!(" AND ({})", alts.join(" OR "));
                }
                format!(
                    "EXISTS (SELECT 1 FROM logged_model_metrics x WHERE x.model_id = m.model_id \
                     AND x.key = ? AND x.is_nan = 0 AND x.value {} ?{scope})",
                    clause.op.sql()
                )
            }
            Entity::Param(k) => kv_condition(
                "logged_model_params",
                "model_id",
                "m.model_id",
                k,
                clause,
                &mut params,
            )?,
            Entity::Tag(k) => kv_condition(
                "logged_model_tags",
                "model_id",
                "m.model_id",
                k,
                clause,
                &mut params,
            )?,
            Entity::Attribute(a) => {
                let (col, numeric) = model_attribute(a).ok_or_else(|| {
                    Error::InvalidParameter(format!("Invalid attribute '{a}' for logged models"))
                })?;
                match clause.op {
                    Op::In | Op::NotIn => list_condition(col, clause, &mut params)?,
                    _ if numeric => {
                        let (sql, v) = numeric_cmp(col, clause)?;
                        params.push(Value::Real(v));
                        sql
                    }
                    op => {
                        params.push(Value::from(clause.string_value()?.to_string()));
                        string_cmp(col, op)?
                    }
                }
            }
            Entity::Dataset(_) => {
                return Err(Error::InvalidParameter(
                    "Filter on datasets is not supported for logged models; use the \
                     'datasets' field"
                        .into(),
                ));
            }
        };
        wheres.push(cond);
    }
    let mut all = join_params;
    all.extend(params);
    all.push(Value::Int(limit));
    all.push(Value::Int(offset));
    Ok((
        format!(
            "SELECT m.model_id FROM logged_models m{joins} WHERE {} ORDER BY {} LIMIT ? OFFSET ?",
            wheres.join(" AND "),
            order_sql.join(", ")
        ),
        all,
    ))
}

// ---------------------------------------------------------------------------------------------
// Metric points. Each (run, key) series has an integer id and its latest point in
// `metric_series` (searches filter and sort on that row); points are keyed by
// (series_id, timestamp, step, value, is_nan). Writes are multi-row statements, so a log-batch
// of 1,000 metrics is a handful of statements, not 2,000.

/// Rows per multi-row INSERT: 200 rows × 5 columns stays far below every backend's
/// parameter limit, and bounds the number of distinct statement texts.
const INSERT_ROWS: usize = 200;

/// `(?, ?), (?, ?)` for `rows` rows of `cols` placeholders.
fn values_rows(rows: usize, cols: usize) -> String {
    let one = format!("({})", placeholders(cols));
    let mut s = String::with_capacity(rows * (one.len() + 2));
    for i in 0..rows {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&one);
    }
    s
}

/// The stored form of a metric value: NaN is kept as a flag with value 0 (PostgreSQL and
/// SQLite disagree on NaN ordering, and JSON has no NaN).
fn stored_value(v: f64) -> (f64, bool) {
    if v.is_nan() { (0.0, true) } else { (v, false) }
}

/// Whether point `a` is newer than `b` in MLflow's latest-value order: largest
/// (step, timestamp, value) wins, NaN comparing as its stored 0.
fn newer(a: &Metric, b: &Metric) -> bool {
    let (av, _) = stored_value(a.value);
    let (bv, _) = stored_value(b.value);
    (a.step, a.timestamp)
        .cmp(&(b.step, b.timestamp))
        .then(av.total_cmp(&bv))
        .is_gt()
}

/// Series ids of the keys of `newest` (each key's newest point of a batch) for `run_id`,
/// created where missing with that point as their latest value.
fn metric_series_ids(
    c: &Conn<'_>,
    run_id: &str,
    newest: &[&Metric],
) -> Result<HashMap<String, i64>> {
    let mut ids = HashMap::with_capacity(newest.len());
    for chunk in newest.chunks(INSERT_ROWS) {
        let mut params: Vec<Value<'_>> = Vec::with_capacity(chunk.len() * 6);
        for m in chunk {
            let (value, nan) = stored_value(m.value);
            params.extend([
                run_id.into(),
                m.key.as_str().into(),
                value.into(),
                m.timestamp.into(),
                m.step.into(),
                nan.into(),
            ]);
        }
        c.execute(
            &format!(
                "INSERT INTO metric_series (run_uuid, key, value, timestamp, step, is_nan) \
                 VALUES {} ON CONFLICT (run_uuid, key) DO NOTHING",
                values_rows(chunk.len(), 6)
            ),
            &params,
        )?;
        let mut params: Vec<Value<'_>> = Vec::with_capacity(chunk.len() + 1);
        params.push(run_id.into());
        params.extend(chunk.iter().map(|m| Value::from(m.key.as_str())));
        let found = c.query(
            &format!(
                "SELECT key, series_id FROM metric_series WHERE run_uuid = ? AND key IN ({})",
                placeholders(chunk.len())
            ),
            &params,
            |r| Ok((r.string(0)?, r.i64(1)?)),
        )?;
        ids.extend(found);
    }
    Ok(ids)
}

/// The series id of one (run, key), if anything was ever logged to it.
pub fn metric_series_id(c: &Conn<'_>, run_id: &str, key: &str) -> Result<Option<i64>> {
    Ok(c.query_opt(
        "SELECT series_id FROM metric_series WHERE run_uuid = ? AND key = ?",
        &[run_id.into(), key.into()],
        |r| r.i64(0),
    )?)
}

/// Stores metric points of one run (identical points once) and moves each key's latest value
/// forward: largest (step, timestamp, value) wins, as in MLflow. `known` holds committed series
/// ids of this run; the ids it had to look up or create are returned. For known series this is
/// two statements, sent with the COMMIT (one round trip on PostgreSQL): a multi-row INSERT
/// of the points and one upsert of the series rows by id.
pub fn insert_metric_points(
    c: &Conn<'_>,
    run_id: &str,
    metrics: &[&Metric],
    known: &HashMap<String, i64>,
) -> Result<HashMap<String, i64>> {
    if metrics.is_empty() {
        return Ok(HashMap::new());
    }
    // The newest point of each key in this batch.
    let mut latest: HashMap<&str, &Metric> = HashMap::with_capacity(metrics.len());
    for m in metrics {
        latest
            .entry(m.key.as_str())
            .and_modify(|cur| {
                if newer(m, cur) {
                    *cur = m;
                }
            })
            .or_insert(m);
    }
    let mut missing: Vec<&Metric> = latest
        .iter()
        .filter(|(k, _)| !known.contains_key(**k))
        .map(|(_, m)| *m)
        .collect();
    // A stable order: concurrent batches lock the same rows in the same order (no deadlock).
    missing.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let looked_up = if missing.is_empty() {
        HashMap::new()
    } else {
        metric_series_ids(c, run_id, &missing)?
    };
    let id_of = |k: &str| {
        known
            .get(k)
            .or_else(|| looked_up.get(k))
            .copied()
            .ok_or_else(|| {
                Error::Store(StoreError::Database(format!(
                    "metric series for key '{k}' was not created"
                )))
            })
    };
    let mut updates: Vec<(i64, &Metric)> = latest
        .values()
        .map(|m| Ok((id_of(m.key.as_str())?, *m)))
        .collect::<Result<_>>()?;
    updates.sort_unstable_by_key(|(id, _)| *id);

    let mut texts: Vec<String> = Vec::new();
    let mut bound: Vec<Vec<Value<'_>>> = Vec::new();
    for chunk in metrics.chunks(INSERT_ROWS) {
        let mut params: Vec<Value<'_>> = Vec::with_capacity(chunk.len() * 5);
        for m in chunk {
            let (value, nan) = stored_value(m.value);
            params.extend([
                id_of(m.key.as_str())?.into(),
                m.timestamp.into(),
                m.step.into(),
                value.into(),
                nan.into(),
            ]);
        }
        texts.push(format!(
            "INSERT INTO metric_points (series_id, timestamp, step, value, is_nan) \
             VALUES {} ON CONFLICT DO NOTHING",
            values_rows(chunk.len(), 5)
        ));
        bound.push(params);
    }
    // The series rows only move forward (a point older than the stored latest changes nothing).
    // An upsert on the primary key rather than `UPDATE … FROM (VALUES …)`: its row lookup is
    // the arbiter index, never a planner's choice. PostgreSQL caches a generic plan for the
    // UPDATE form, and one cached while the table was small kept scanning the whole table as
    // it grew (10,000 sequential scans in one benchmark run). Every row exists, so nothing is
    // ever inserted.
    for chunk in updates.chunks(INSERT_ROWS) {
        let mut params: Vec<Value<'_>> = Vec::with_capacity(chunk.len() * 7);
        for (id, m) in chunk {
            let (value, nan) = stored_value(m.value);
            params.extend([
                (*id).into(),
                run_id.into(),
                m.key.as_str().into(),
                value.into(),
                m.timestamp.into(),
                m.step.into(),
                nan.into(),
            ]);
        }
        texts.push(format!(
            "INSERT INTO metric_series (series_id, run_uuid, key, value, timestamp, step, \
             is_nan) VALUES {} ON CONFLICT (series_id) DO UPDATE SET \
             value = excluded.value, timestamp = excluded.timestamp, \
             step = excluded.step, is_nan = excluded.is_nan \
             WHERE (excluded.step, excluded.timestamp, excluded.value) > \
                   (metric_series.step, metric_series.timestamp, metric_series.value)",
            values_rows(chunk.len(), 7)
        ));
        bound.push(params);
    }
    let statements: Vec<(&str, &[Value<'_>])> = texts
        .iter()
        .zip(&bound)
        .map(|(t, p)| (t.as_str(), p.as_slice()))
        .collect();
    // Nothing needs their counts: on PostgreSQL they travel with the COMMIT.
    c.execute_at_commit(&statements)?;
    Ok(looked_up)
}

/// Where a metric history page starts: just after this point, in history order
/// (timestamp, step, value, is_nan).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryCursor {
    /// Timestamp of the last point returned.
    pub timestamp: i64,
    /// Step of the last point returned.
    pub step: i64,
    /// Stored value of the last point returned (0 for NaN).
    pub value: f64,
    /// Whether the last point returned was NaN.
    pub is_nan: bool,
}

/// One page of a metric's history after `after` (keyset paging: each page is an index range,
/// however deep), at most `limit` points.
pub fn metric_history_page(
    c: &Conn<'_>,
    series_id: i64,
    key: &str,
    after: Option<HistoryCursor>,
    limit: i64,
) -> Result<Vec<(Metric, HistoryCursor)>> {
    let row = |r: &Row<'_>| {
        let value = r.f64(2)?;
        let is_nan = r.i64(3)? != 0;
        let cursor = HistoryCursor {
            timestamp: r.i64(0)?,
            step: r.i64(1)?,
            value,
            is_nan,
        };
        Ok((
            Metric {
                key: key.to_string(),
                timestamp: cursor.timestamp,
                step: cursor.step,
                value: if is_nan { f64::NAN } else { value },
            },
            cursor,
        ))
    };
    Ok(match after {
        None => c.query(
            "SELECT timestamp, step, value, is_nan FROM metric_points WHERE series_id = ? \
             ORDER BY timestamp, step, value, is_nan LIMIT ?",
            &[series_id.into(), limit.into()],
            row,
        )?,
        Some(a) => c.query(
            "SELECT timestamp, step, value, is_nan FROM metric_points WHERE series_id = ? \
             AND (timestamp, step, value, is_nan) > (?, ?, ?, ?) \
             ORDER BY timestamp, step, value, is_nan LIMIT ?",
            &[
                series_id.into(),
                a.timestamp.into(),
                a.step.into(),
                a.value.into(),
                a.is_nan.into(),
                limit.into(),
            ],
            row,
        )?,
    })
}

/// Points of a series between two steps (inclusive), sampled to at most `max` rows: the rows
/// in (step, timestamp, value) order are cut into `max` even buckets (NTILE) and each bucket's
/// first row is kept; the series' last row in that range always ends the sample (replacing
/// the final pick when there are already `max`). Fewer rows than `max`: all of them.
pub fn metric_points_sampled(
    c: &Conn<'_>,
    series_id: i64,
    key: &str,
    lo: i64,
    hi: i64,
    max: i64,
) -> Result<Vec<Metric>> {
    let row = |r: &Row<'_>| {
        Ok(Metric {
            key: key.to_string(),
            timestamp: r.i64(0)?,
            step: r.i64(1)?,
            value: metric_value(r, 2, 3)?,
        })
    };
    // NTILE's count is written into the SQL: PostgreSQL types it `integer`, which a bound
    // 64-bit parameter does not fit. `max` is a validated small number.
    let sampled = format!(
        "SELECT timestamp, step, value, is_nan FROM ( \
           SELECT timestamp, step, value, is_nan, ROW_NUMBER() OVER ( \
             PARTITION BY bucket ORDER BY step, timestamp, value, is_nan) AS rn FROM ( \
               SELECT timestamp, step, value, is_nan, NTILE({}) OVER ( \
                 ORDER BY step, timestamp, value, is_nan) AS bucket \
               FROM metric_points WHERE series_id = ? AND step >= ? AND step <= ?) b) r \
         WHERE rn = 1 ORDER BY step, timestamp, value, is_nan",
        max.clamp(1, i64::from(i32::MAX))
    );
    let mut rows = c.query(&sampled, &[series_id.into(), lo.into(), hi.into()], row)?;
    let last = c.query_opt(
        "SELECT timestamp, step, value, is_nan FROM metric_points WHERE series_id = ? \
         AND step >= ? AND step <= ? ORDER BY step DESC, timestamp DESC, value DESC, \
         is_nan DESC LIMIT 1",
        &[series_id.into(), lo.into(), hi.into()],
        row,
    )?;
    if let Some(last) = last {
        let same = |m: &Metric| {
            m.step == last.step
                && m.timestamp == last.timestamp
                && (m.value == last.value || (m.value.is_nan() && last.value.is_nan()))
        };
        match rows.last() {
            Some(m) if same(m) => {}
            _ if rows.len() as i64 >= max => {
                if let Some(end) = rows.last_mut() {
                    *end = last;
                }
            }
            _ => rows.push(last),
        }
    }
    Ok(rows)
}

/// Distinct (experiment, dataset name, digest, context) of the runs' dataset inputs in
/// `experiment_ids`, at most `limit`.
pub fn dataset_summaries(
    c: &Conn<'_>,
    experiment_ids: &[i64],
    limit: i64,
) -> Result<Vec<DatasetSummary>> {
    let sql = format!(
        "SELECT DISTINCT d.experiment_id, d.name, d.digest, t.value FROM datasets d \
         JOIN run_dataset_inputs i ON i.dataset_uuid = d.dataset_uuid \
         LEFT JOIN run_dataset_input_tags t ON t.run_uuid = i.run_uuid \
           AND t.dataset_uuid = i.dataset_uuid AND t.key = 'mlflow.data.context' \
         WHERE d.experiment_id IN ({}) ORDER BY d.experiment_id, d.name, d.digest, t.value \
         LIMIT ?",
        placeholders(experiment_ids.len())
    );
    let mut params: Vec<Value<'_>> = experiment_ids.iter().map(|&e| e.into()).collect();
    params.push(limit.into());
    Ok(c.query(&sql, &params, |r| {
        Ok(DatasetSummary {
            experiment_id: r.i64(0)?,
            name: r.string(1)?,
            digest: r.string(2)?,
            context: r.opt_string(3)?,
        })
    })?)
}
