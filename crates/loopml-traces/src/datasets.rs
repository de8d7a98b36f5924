//! Evaluation datasets (`mlflow.genai.datasets`, `/api/3.0/mlflow/datasets/…`): named sets of
//! records (inputs, expectations, outputs, tags, source) upserted by the hash of their inputs,
//! linked to experiments. `tags`, `schema`, `profile` and `records` travel as JSON inside a
//! string, as MLflow's protobuf declares them.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use loopml_store::{Conn, Value as Sql};
use loopml_tracking::filter::{Literal, Op, parse_raw_filter, parse_raw_order_by};
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::service::TraceService;

/// Largest page of records.
const MAX_RECORDS: usize = 1000;

fn ok(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidParameter(m.into())
}

/// Canonical JSON (object keys sorted), for hashing inputs.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn hash(v: &Value) -> String {
    sha2::Sha256::digest(canonical(v).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json_string_field(v: &Value, at: &str) -> Result<Option<Value>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| invalid(format!("'{at}' must be JSON in a string: {e}"))),
        Value::Object(_) => Ok(Some(v.clone())),
        _ => Err(invalid(format!("'{at}' must be JSON in a string"))),
    }
}

struct Row {
    id: String,
    name: String,
    tags: String,
    digest: String,
    created: i64,
    updated: i64,
    created_by: Option<String>,
    updated_by: Option<String>,
    records: i64,
}

const COLUMNS: &str = "d.dataset_id, d.name, d.tags, d.digest, d.created_time, \
    d.last_update_time, d.created_by, d.last_updated_by, \
    (SELECT COUNT(*) FROM eval_dataset_records r WHERE r.dataset_id = d.dataset_id)";

fn row(r: &loopml_store::Row<'_>) -> std::result::Result<Row, loopml_store::StoreError> {
    Ok(Row {
        id: r.string(0)?,
        name: r.string(1)?,
        tags: r.string(2)?,
        digest: r.string(3)?,
        created: r.i64(4)?,
        updated: r.i64(5)?,
        created_by: r.opt_string(6)?,
        updated_by: r.opt_string(7)?,
        records: r.i64(8)?,
    })
}

fn experiments_of(c: &Conn<'_>, id: &str) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT experiment_id FROM eval_dataset_experiments WHERE dataset_id = ?1 \
         ORDER BY experiment_id",
        &[id.into()],
        |r| r.i64(0).map(|e| e.to_string()),
    )?)
}

impl TraceService {
    /// The experiments an evaluation dataset is linked to (for the auth layer; empty for an
    /// unknown dataset).
    pub async fn eval_dataset_experiments(&self, dataset_id: String) -> Result<Vec<String>> {
        self.db()
            .read(move |c| experiments_of(c, &dataset_id))
            .await
    }
}

fn dataset_json(c: &Conn<'_>, d: &Row, with_experiments: bool) -> Result<Value> {
    let mut out = json!({
        "dataset_id": d.id, "name": d.name, "tags": d.tags, "digest": d.digest,
        "created_time": d.created, "last_update_time": d.updated,
    });
    if let Some(b) = &d.created_by {
        out["created_by"] = json!(b);
    }
    if let Some(b) = &d.updated_by {
        out["last_updated_by"] = json!(b);
    }
    if d.records > 0 {
        let (schema, profile) = schema_and_profile(c, &d.id, d.records)?;
        out["schema"] = json!(schema);
        out["profile"] = json!(profile);
    }
    if with_experiments {
        out["experiment_ids"] = json!(experiments_of(c, &d.id)?);
    }
    Ok(out)
}

/// The record fields' names and JSON types, and the record count.
fn schema_and_profile(c: &Conn<'_>, id: &str, n: i64) -> Result<(String, String)> {
    let sample = c.query(
        "SELECT inputs, expectations FROM eval_dataset_records WHERE dataset_id = ?1 \
         ORDER BY created_time LIMIT 100",
        &[id.into()],
        |r| Ok((r.string(0)?, r.opt_string(1)?)),
    )?;
    let kind = |v: &Value| match v {
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "float",
        Value::Bool(_) => "boolean",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    let mut inputs = Map::new();
    let mut expectations = Map::new();
    for (i, e) in sample {
        for (text, into) in [(Some(i), &mut inputs), (e, &mut expectations)] {
            if let Some(Value::Object(m)) = text.and_then(|t| serde_json::from_str(&t).ok()) {
                for (k, v) in m {
                    into.entry(k).or_insert(json!(kind(&v)));
                }
            }
        }
    }
    Ok((
        json!({"inputs": inputs, "expectations": expectations}).to_string(),
        json!({"num_records": n}).to_string(),
    ))
}

fn get_row(c: &Conn<'_>, id: &str) -> Result<Row> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM eval_datasets d WHERE d.dataset_id = ?1"),
        &[id.into()],
        row,
    )?
    .ok_or_else(|| Error::NotFound(format!("Evaluation dataset '{id}' not found")))
}

fn experiment_ids(v: &Value) -> Result<Vec<i64>> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e.as_str()
                .and_then(|s| s.parse().ok())
                .or(e.as_i64())
                .ok_or_else(|| invalid(format!("'{e}' is not an experiment id")))
        })
        .collect()
}

fn body_json(b: &[u8]) -> Result<Value> {
    if b.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(b).map_err(|e| invalid(format!("The request body is not JSON: {e}")))
}

async fn create(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let name = v["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid("'name' is required"))?
        .to_string();
    if name.chars().count() > 255 || name.contains('\0') {
        return Err(invalid("'name' must be at most 255 characters without NUL"));
    }
    let tags = json_string_field(&v["tags"], "tags")?.unwrap_or(json!({}));
    if !tags.is_object() {
        return Err(invalid("'tags' must be a JSON object"));
    }
    let created_by = tags["mlflow.user"].as_str().map(str::to_string);
    let exps = experiment_ids(&v["experiment_ids"])?;
    for e in &exps {
        s.tracking().get_experiment(*e).await?;
    }
    let id = format!("d-{}", uuid::Uuid::new_v4().simple());
    let now = crate::now_ms();
    let digest = hash(&json!([id, now]))[..16].to_string();
    let out = s
        .db()
        .write(move |c| -> Result<Value> {
            c.execute(
                "INSERT INTO eval_datasets (dataset_id, name, tags, digest, created_time, \
                 last_update_time, created_by, last_updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?6)",
                &[
                    id.as_str().into(),
                    name.as_str().into(),
                    tags.to_string().into(),
                    digest.as_str().into(),
                    now.into(),
                    created_by.as_deref().into(),
                ],
            )?;
            for e in &exps {
                c.execute(
                    "INSERT INTO eval_dataset_experiments (dataset_id, experiment_id) VALUES (?1, ?2) \
                     ON CONFLICT (dataset_id, experiment_id) DO NOTHING",
                    &[id.as_str().into(), (*e).into()],
                )?;
            }
            let d = get_row(c, &id)?;
            dataset_json(c, &d, true)
        })
        .await?;
    Ok(ok(json!({"dataset": out})))
}

async fn get_dataset(State(s): State<TraceService>, Path(id): Path<String>) -> Result<Response> {
    let out = s
        .db()
        .read(move |c| -> Result<Value> {
            let d = get_row(c, &id)?;
            dataset_json(c, &d, false)
        })
        .await?;
    Ok(ok(json!({"dataset": out})))
}

async fn delete_dataset(State(s): State<TraceService>, Path(id): Path<String>) -> Result<Response> {
    s.db()
        .write(move |c| -> Result<()> {
            get_row(c, &id)?;
            for t in [
                "eval_dataset_records",
                "eval_dataset_experiments",
                "eval_datasets",
            ] {
                c.execute(
                    &format!("DELETE FROM {t} WHERE dataset_id = ?1"),
                    &[id.as_str().into()],
                )?;
            }
            Ok(())
        })
        .await?;
    Ok(ok(json!({})))
}

async fn search(State(s): State<TraceService>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let exps = experiment_ids(&v["experiment_ids"])?;
    let max = v["max_results"].as_u64().unwrap_or(1000).clamp(1, 1000) as usize;
    let offset = match v["page_token"].as_str() {
        Some(t) if !t.is_empty() => crate::search::read_token(t)?,
        _ => 0,
    };
    let mut params: Vec<Sql<'static>> = Vec::new();
    let mut p = |v: Sql<'static>| {
        params.push(v);
        format!("?{}", params.len())
    };
    let mut conds = vec!["1 = 1".to_string()];
    if !exps.is_empty() {
        let list: Vec<String> = exps.iter().map(|e| p((*e).into())).collect();
        conds.push(format!(
            "d.dataset_id IN (SELECT dataset_id FROM eval_dataset_experiments \
             WHERE experiment_id IN ({}))",
            list.join(", ")
        ));
    }
    let filter = v["filter_string"].as_str().unwrap_or("");
    for c in parse_raw_filter(filter).map_err(|e| invalid(e.to_string()))? {
        let col = match (c.prefix.as_deref(), c.key.as_str()) {
            (
                None | Some("attribute" | "attributes"),
                k @ ("name" | "created_by" | "last_updated_by"),
            ) => {
                format!("d.{k}")
            }
            (
                None | Some("attribute" | "attributes"),
                k @ ("created_time" | "last_update_time"),
            ) => {
                let n = match &c.value {
                    Literal::Num(n, _) => *n as i64,
                    Literal::Str(s) => s
                        .parse()
                        .map_err(|_| invalid(format!("'{k}' needs a number")))?,
                    _ => return Err(invalid(format!("'{k}' needs a number"))),
                };
                if !c.op.is_numeric() {
                    return Err(invalid(format!("'{k}' takes =, !=, >, >=, <, <=")));
                }
                conds.push(format!("d.{k} {} {}", c.op.sql(), p(n.into())));
                continue;
            }
            (Some("tag" | "tags"), k) => {
                // Tags are one JSON object: compare the key's value in it.
                let Literal::Str(val) = &c.value else {
                    return Err(invalid(format!("tags.{k} needs a quoted string")));
                };
                if c.op != Op::Eq {
                    return Err(invalid(format!("tags.{k} takes = only")));
                }
                let needle = format!("%{}%", json!({k: val}).to_string().trim_matches(['{', '}']));
                conds.push(format!("d.tags LIKE {}", p(needle.into())));
                continue;
            }
            _ => {
                return Err(invalid(format!(
                    "Invalid dataset filter key '{}': name, created_time, last_update_time, \
                     created_by, last_updated_by or tags.<key>",
                    c.key
                )));
            }
        };
        conds.push(match (c.op, &c.value) {
            (Op::In | Op::NotIn, Literal::List(items)) => {
                let l: Vec<String> = items.iter().map(|i| p(i.clone().into())).collect();
                format!("{col} {} ({})", c.op.sql(), l.join(", "))
            }
            (Op::Eq | Op::Ne | Op::Like, Literal::Str(v)) => {
                format!("{col} {} {}", c.op.sql(), p(v.clone().into()))
            }
            (Op::ILike, Literal::Str(v)) => {
                format!("LOWER({col}) LIKE LOWER({})", p(v.clone().into()))
            }
            _ => return Err(invalid(format!("Invalid comparison on '{}'", c.key))),
        });
    }
    let mut order = Vec::new();
    for o in v["order_by"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let (_, key, asc) = parse_raw_order_by(o).map_err(|e| invalid(e.to_string()))?;
        if !matches!(key.as_str(), "name" | "created_time" | "last_update_time") {
            return Err(invalid(format!(
                "Invalid order_by key '{key}': name, created_time or last_update_time"
            )));
        }
        order.push(format!("d.{key} {}", if asc { "ASC" } else { "DESC" }));
    }
    if order.is_empty() {
        order.push("d.created_time DESC".into());
    }
    order.push("d.dataset_id".into());
    let sql = format!(
        "SELECT {COLUMNS} FROM eval_datasets d WHERE {} ORDER BY {} LIMIT {} OFFSET {}",
        conds.join(" AND "),
        order.join(", "),
        p(((max + 1) as i64).into()),
        p((offset as i64).into()),
    );
    let (list, more) = s
        .db()
        .read(move |c| -> Result<(Vec<Value>, bool)> {
            let mut rows = c.query(&sql, &params, row)?;
            let more = rows.len() > max;
            rows.truncate(max);
            let list = rows
                .iter()
                .map(|d| dataset_json(c, d, true))
                .collect::<Result<Vec<_>>>()?;
            Ok((list, more))
        })
        .await?;
    let mut out = json!({"datasets": list});
    if more {
        out["next_page_token"] = json!(crate::search::token(offset + max));
    }
    Ok(ok(out))
}

async fn upsert_records(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let records = json_string_field(&v["records"], "records")?.unwrap_or(json!([]));
    let Value::Array(records) = records else {
        return Err(invalid("'records' must be a JSON list in a string"));
    };
    let mut rows = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let inputs = r.get("inputs").cloned().unwrap_or(Value::Null);
        if !inputs.is_object() {
            return Err(invalid(format!("record {i}: 'inputs' must be an object")));
        }
        rows.push((hash(&inputs), r));
    }
    let (inserted, updated) = s
        .db()
        .write(move |c| -> Result<(usize, usize)> {
            get_row(c, &id)?;
            let now = crate::now_ms();
            let (mut inserted, mut updated) = (0, 0);
            for (h, r) in &rows {
                let text = |k: &str| r.get(k).filter(|v| !v.is_null()).map(Value::to_string);
                let source = r.get("source").cloned().unwrap_or(Value::Null);
                let source_type = source["source_type"]
                    .as_str()
                    .or(r["source_type"].as_str())
                    .unwrap_or("HUMAN")
                    .to_string();
                let by = r["created_by"].as_str().map(str::to_string);
                let existing = c.query_opt(
                    "SELECT record_id, expectations, tags FROM eval_dataset_records \
                     WHERE dataset_id = ?1 AND inputs_hash = ?2",
                    &[id.as_str().into(), h.as_str().into()],
                    |row| Ok((row.string(0)?, row.opt_string(1)?, row.opt_string(2)?)),
                )?;
                match existing {
                    Some((rid, old_exp, old_tags)) => {
                        // A re-merge updates the record: expectations and tags are merged.
                        let merge = |old: Option<String>, new: Option<&Value>| -> Option<String> {
                            let mut m: Map<String, Value> = old
                                .and_then(|o| serde_json::from_str(&o).ok())
                                .unwrap_or_default();
                            if let Some(Value::Object(n)) = new {
                                for (k, v) in n {
                                    m.insert(k.clone(), v.clone());
                                }
                            }
                            (!m.is_empty()).then(|| Value::Object(m).to_string())
                        };
                        c.execute(
                            "UPDATE eval_dataset_records SET expectations = ?2, tags = ?3, \
                             outputs = COALESCE(?4, outputs), last_update_time = ?5, \
                             last_updated_by = COALESCE(?6, last_updated_by) WHERE record_id = ?1",
                            &[
                                rid.as_str().into(),
                                merge(old_exp, r.get("expectations")).into(),
                                merge(old_tags, r.get("tags")).into(),
                                text("outputs").into(),
                                now.into(),
                                by.as_deref().into(),
                            ],
                        )?;
                        updated += 1;
                    }
                    None => {
                        let rid = format!("dr-{}", uuid::Uuid::new_v4().simple());
                        c.execute(
                            "INSERT INTO eval_dataset_records (record_id, dataset_id, inputs_hash, \
                             inputs, expectations, outputs, tags, source, source_type, \
                             created_time, last_update_time, created_by, last_updated_by) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?11)",
                            &[
                                rid.as_str().into(),
                                id.as_str().into(),
                                h.as_str().into(),
                                text("inputs").into(),
                                text("expectations").into(),
                                text("outputs").into(),
                                text("tags").into(),
                                (!source.is_null()).then(|| source.to_string()).into(),
                                source_type.as_str().into(),
                                now.into(),
                                by.as_deref().into(),
                            ],
                        )?;
                        inserted += 1;
                    }
                }
            }
            let digest = hash(&json!([id, now, inserted, updated]))[..16].to_string();
            c.execute(
                "UPDATE eval_datasets SET last_update_time = ?2, digest = ?3 WHERE dataset_id = ?1",
                &[id.as_str().into(), now.into(), digest.as_str().into()],
            )?;
            Ok((inserted, updated))
        })
        .await?;
    Ok(ok(
        json!({"inserted_count": inserted, "updated_count": updated}),
    ))
}

async fn get_records(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let q = crate::routes::query(q);
    let one = |k: &str| crate::routes::one(&q, k).map(str::to_string);
    let max = match one("max_results") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_RECORDS).contains(n))
            .ok_or_else(|| invalid(format!("'max_results' must be 1 to {MAX_RECORDS}")))?,
        None => MAX_RECORDS,
    };
    let offset = match one("page_token") {
        Some(t) if !t.is_empty() => crate::search::read_token(&t)?,
        _ => 0,
    };
    let (records, more) = s
        .db()
        .read(move |c| -> Result<(Vec<Value>, bool)> {
            get_row(c, &id)?;
            let mut rows = c.query(
                "SELECT record_id, inputs, expectations, outputs, tags, source, source_type, \
                 created_time, last_update_time, created_by, last_updated_by \
                 FROM eval_dataset_records WHERE dataset_id = ?1 \
                 ORDER BY created_time, record_id LIMIT ?2 OFFSET ?3",
                &[
                    id.as_str().into(),
                    ((max + 1) as i64).into(),
                    (offset as i64).into(),
                ],
                |r| {
                    let parse = |t: Option<String>| {
                        t.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                            .unwrap_or(Value::Null)
                    };
                    let source = parse(r.opt_string(5)?);
                    let source_id = source["source_data"]["trace_id"]
                        .as_str()
                        .or(source["source_data"]["source_id"].as_str())
                        .map(str::to_string);
                    Ok(json!({
                        "dataset_record_id": r.string(0)?, "dataset_id": id,
                        "inputs": parse(r.opt_string(1)?),
                        "expectations": parse(r.opt_string(2)?),
                        "outputs": parse(r.opt_string(3)?),
                        "tags": parse(r.opt_string(4)?),
                        "source": source, "source_id": source_id,
                        "source_type": r.string(6)?,
                        "created_time": r.i64(7)?, "last_update_time": r.i64(8)?,
                        "created_by": r.opt_string(9)?, "last_updated_by": r.opt_string(10)?,
                    }))
                },
            )?;
            let more = rows.len() > max;
            rows.truncate(max);
            Ok((rows, more))
        })
        .await?;
    let mut out = json!({"records": Value::Array(records).to_string()});
    if more {
        out["next_page_token"] = json!(crate::search::token(offset + max));
    }
    Ok(ok(out))
}

async fn delete_records(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let ids: Vec<String> = v["dataset_record_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let n = s
        .db()
        .write(move |c| -> Result<usize> {
            get_row(c, &id)?;
            let mut n = 0;
            for r in &ids {
                n += c.execute(
                    "DELETE FROM eval_dataset_records WHERE dataset_id = ?1 AND record_id = ?2",
                    &[id.as_str().into(), r.as_str().into()],
                )?;
            }
            Ok(n)
        })
        .await?;
    Ok(ok(json!({"deleted_count": n})))
}

async fn set_tags(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let Some(Value::Object(new)) = json_string_field(&v["tags"], "tags")? else {
        return Err(invalid("'tags' must be a JSON object in a string"));
    };
    s.db()
        .write(move |c| -> Result<()> {
            let d = get_row(c, &id)?;
            let mut tags: Map<String, Value> = serde_json::from_str(&d.tags).unwrap_or_default();
            for (k, v) in new {
                if v.is_null() {
                    tags.remove(&k);
                } else {
                    tags.insert(k, v);
                }
            }
            c.execute(
                "UPDATE eval_datasets SET tags = ?2, last_update_time = ?3 WHERE dataset_id = ?1",
                &[
                    id.as_str().into(),
                    Value::Object(tags).to_string().into(),
                    crate::now_ms().into(),
                ],
            )?;
            Ok(())
        })
        .await?;
    Ok(ok(json!({})))
}

async fn delete_tag(
    State(s): State<TraceService>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response> {
    s.db()
        .write(move |c| -> Result<()> {
            let d = get_row(c, &id)?;
            let mut tags: Map<String, Value> = serde_json::from_str(&d.tags).unwrap_or_default();
            tags.remove(&key);
            c.execute(
                "UPDATE eval_datasets SET tags = ?2 WHERE dataset_id = ?1",
                &[id.as_str().into(), Value::Object(tags).to_string().into()],
            )?;
            Ok(())
        })
        .await?;
    Ok(ok(json!({})))
}

async fn experiment_list(
    State(s): State<TraceService>,
    Path(id): Path<String>,
) -> Result<Response> {
    let ids = s
        .db()
        .read(move |c| -> Result<Vec<String>> {
            get_row(c, &id)?;
            experiments_of(c, &id)
        })
        .await?;
    Ok(ok(json!({"experiment_ids": ids})))
}

async fn change_experiments(
    s: TraceService,
    id: String,
    body: Bytes,
    add: bool,
) -> Result<Response> {
    let v = body_json(&body)?;
    let exps = experiment_ids(&v["experiment_ids"])?;
    if add {
        for e in &exps {
            s.tracking().get_experiment(*e).await?;
        }
    }
    let out = s
        .db()
        .write(move |c| -> Result<Value> {
            get_row(c, &id)?;
            for e in &exps {
                if add {
                    c.execute(
                        "INSERT INTO eval_dataset_experiments (dataset_id, experiment_id) \
                         VALUES (?1, ?2) ON CONFLICT (dataset_id, experiment_id) DO NOTHING",
                        &[id.as_str().into(), (*e).into()],
                    )?;
                } else {
                    c.execute(
                        "DELETE FROM eval_dataset_experiments WHERE dataset_id = ?1 AND experiment_id = ?2",
                        &[id.as_str().into(), (*e).into()],
                    )?;
                }
            }
            let d = get_row(c, &id)?;
            dataset_json(c, &d, true)
        })
        .await?;
    Ok(ok(json!({"dataset": out})))
}

async fn add_experiments(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    change_experiments(s, id, body, true).await
}

async fn remove_experiments(
    State(s): State<TraceService>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    change_experiments(s, id, body, false).await
}

/// The evaluation-dataset routes.
pub fn router(s: TraceService) -> Router {
    let b = "/api/3.0/mlflow/datasets";
    Router::new()
        .route(&format!("{b}/create"), post(create))
        .route(&format!("{b}/search"), post(search))
        .route(
            &format!("{b}/{{dataset_id}}"),
            get(get_dataset).delete(delete_dataset),
        )
        .route(
            &format!("{b}/{{dataset_id}}/records"),
            get(get_records).post(upsert_records).delete(delete_records),
        )
        .route(
            &format!("{b}/{{dataset_id}}/tags"),
            axum::routing::patch(set_tags),
        )
        .route(
            &format!("{b}/{{dataset_id}}/tags/{{key}}"),
            axum::routing::delete(delete_tag),
        )
        .route(
            &format!("{b}/{{dataset_id}}/experiment-ids"),
            get(experiment_list),
        )
        .route(
            &format!("{b}/{{dataset_id}}/add-experiments"),
            post(add_experiments),
        )
        .route(
            &format!("{b}/{{dataset_id}}/remove-experiments"),
            post(remove_experiments),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_hash_ignores_key_order() {
        assert_eq!(
            hash(&json!({"a": 1, "b": [1, {"y": 2, "x": 1}]})),
            hash(&json!({"b": [1, {"x": 1, "y": 2}], "a": 1}))
        );
        assert_ne!(hash(&json!({"a": 1})), hash(&json!({"a": 2})));
    }
}
