//! Retrieval (RAG) evaluation: an embedded vector index (HNSW, from the `instant-distance`
//! crate) over a dataset version's text column, a query endpoint, and retrieval metrics
//! (recall@k, precision@k, MRR, nDCG@k) against labelled relevant documents, logged as a
//! tracked run, so a change of embedding model or chunking is compared like any experiment.
//!
//! Texts come from loopml's dataset versions and embeddings from a gateway embedding model,
//! both through traits the binary implements ([`Corpus`], [`Embedder`]).
//!
//! `POST /api/2.0/loopml/retrieval/indexes` `{name, dataset, id_column, text_column,
//! embedding_model}` builds an index; `GET …/indexes` lists them; `POST
//! …/indexes/{name}/query` `{query, k}` answers the nearest documents; `POST
//! /api/2.0/loopml/retrieval/evaluate` `{index, queries: [{query, relevant: [ids]}] | dataset +
//! query_column + relevant_column, k: [1, 5, 10], experiment_id, run_name}` logs a run.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use instant_distance::{Builder, HnswMap, Search};
use loopml_tracking::TrackingService;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Embeds texts with a model (the gateway's `/v1/embeddings`, in `loopml server`).
pub trait Embedder: Send + Sync {
    /// One vector per text, in order.
    fn embed(
        &self,
        model: String,
        texts: Vec<String>,
    ) -> BoxFuture<'static, std::result::Result<Vec<Vec<f32>>, String>>;
}

/// Reads `(id, text)` pairs (or any two columns) of a dataset version.
pub trait Corpus: Send + Sync {
    /// The two columns of `dataset` (`name@version`), as text, row by row.
    fn columns(
        &self,
        dataset: String,
        first: String,
        second: String,
    ) -> BoxFuture<'static, std::result::Result<Vec<(String, String)>, String>>;
}

/// A unit-length embedding; distance is 1 − cosine similarity.
#[derive(Clone, Debug)]
struct Point(Vec<f32>);

impl instant_distance::Point for Point {
    fn distance(&self, other: &Self) -> f32 {
        let dot: f32 = self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum();
        1.0 - dot
    }
}

fn normalised(mut v: Vec<f32>) -> Point {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in &mut v {
            *x /= n;
        }
    }
    Point(v)
}

/// One built index.
struct Index {
    dataset: String,
    model: String,
    dims: usize,
    map: HnswMap<Point, usize>,
    docs: Vec<(String, String)>,
}

/// The retrieval service: its indexes (in memory; rebuilt from the dataset version on
/// demand) and what it needs to build and log.
#[derive(Clone)]
pub struct Retrieval {
    indexes: Arc<RwLock<HashMap<String, Arc<Index>>>>,
    embedder: Arc<dyn Embedder>,
    corpus: Arc<dyn Corpus>,
    tracking: TrackingService,
}

/// Texts embedded per call.
const EMBED_BATCH: usize = 256;

impl Retrieval {
    /// A retrieval service over these sources.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        corpus: Arc<dyn Corpus>,
        tracking: TrackingService,
    ) -> Self {
        Retrieval {
            indexes: Arc::default(),
            embedder,
            corpus,
            tracking,
        }
    }

    async fn embed_all(&self, model: &str, texts: Vec<String>) -> Result<Vec<Point>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_BATCH) {
            let vs = self
                .embedder
                .embed(model.to_string(), chunk.to_vec())
                .await
                .map_err(|e| {
                    Error::InvalidParameter(format!("embedding with '{model}' failed: {e}"))
                })?;
            if vs.len() != chunk.len() {
                return Err(Error::InvalidParameter(format!(
                    "'{model}' answered {} embeddings for {} texts",
                    vs.len(),
                    chunk.len()
                )));
            }
            out.extend(vs.into_iter().map(normalised));
        }
        Ok(out)
    }

    /// Builds (or rebuilds) index `name`.
    pub async fn build(
        &self,
        name: &str,
        dataset: &str,
        id_column: &str,
        text_column: &str,
        model: &str,
    ) -> Result<Value> {
        if name.is_empty() || name.len() > 200 || name.contains(['/', '\0']) {
            return Err(Error::InvalidParameter(
                "an index name is 1 to 200 characters without '/'".into(),
            ));
        }
        let docs = self
            .corpus
            .columns(
                dataset.to_string(),
                id_column.to_string(),
                text_column.to_string(),
            )
            .await
            .map_err(Error::InvalidParameter)?;
        if docs.is_empty() {
            return Err(Error::InvalidParameter(format!(
                "dataset '{dataset}' has no rows"
            )));
        }
        let points = self
            .embed_all(model, docs.iter().map(|(_, t)| t.clone()).collect())
            .await?;
        let dims = points[0].0.len();
        if points.iter().any(|p| p.0.len() != dims) {
            return Err(Error::InvalidParameter(format!(
                "'{model}' answered embeddings of different lengths"
            )));
        }
        let values: Vec<usize> = (0..docs.len()).collect();
        let map =
            tokio::task::spawn_blocking(move || Builder::default().seed(7).build(points, values))
                .await
                .map_err(|e| Error::InvalidParameter(format!("building the index failed: {e}")))?;
        let index = Arc::new(Index {
            dataset: dataset.to_string(),
            model: model.to_string(),
            dims,
            map,
            docs,
        });
        let summary = summary(name, &index);
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), index);
        Ok(summary)
    }

    fn index(&self, name: &str) -> Result<Arc<Index>> {
        self.indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("No retrieval index named '{name}'")))
    }

    /// The `k` documents nearest each query: `(id, text, score)` best first.
    pub async fn query(
        &self,
        name: &str,
        queries: Vec<String>,
        k: usize,
    ) -> Result<Vec<Vec<(String, String, f32)>>> {
        let index = self.index(name)?;
        let points = self.embed_all(&index.model, queries).await?;
        Ok(points
            .iter()
            .map(|q| {
                let mut search = Search::default();
                index
                    .map
                    .search(q, &mut search)
                    .take(k)
                    .map(|item| {
                        let (id, text) = &index.docs[*item.value];
                        (id.clone(), text.clone(), 1.0 - item.distance)
                    })
                    .collect()
            })
            .collect())
    }

    /// Scores the index on labelled queries and logs a run with the metrics.
    pub async fn evaluate(
        &self,
        name: &str,
        labelled: Vec<(String, HashSet<String>)>,
        ks: Vec<usize>,
        experiment_id: i64,
        run_name: Option<String>,
    ) -> Result<Value> {
        if labelled.is_empty() {
            return Err(Error::InvalidParameter(
                "no labelled queries to evaluate".into(),
            ));
        }
        let max_k = ks.iter().copied().max().unwrap_or(10).max(1);
        let index = self.index(name)?;
        let hits = self
            .query(
                name,
                labelled.iter().map(|(q, _)| q.clone()).collect(),
                max_k,
            )
            .await?;
        let m = metrics(&labelled, &hits, &ks);
        let run = self
            .tracking
            .create_run(
                experiment_id,
                None,
                run_name,
                None,
                vec![kv("loopml.runType", "retrieval_evaluate")],
            )
            .await?;
        let now = crate::now_ms();
        let batch = loopml_tracking::Batch {
            metrics: m
                .iter()
                .map(|(k, v)| loopml_tracking::model::LoggedMetric {
                    metric: loopml_tracking::model::Metric {
                        key: k.clone(),
                        value: *v,
                        timestamp: now,
                        step: 0,
                    },
                    model_id: None,
                    dataset_name: Some(index.dataset.clone()),
                    dataset_digest: None,
                })
                .collect(),
            params: vec![
                kv("index", name),
                kv("dataset", &index.dataset),
                kv("embedding_model", &index.model),
                kv("dimensions", &index.dims.to_string()),
                kv("documents", &index.docs.len().to_string()),
                kv("queries", &labelled.len().to_string()),
            ],
            tags: vec![],
        };
        self.tracking
            .log_batch(run.info.run_id.clone(), batch)
            .await?;
        self.tracking
            .update_run(
                run.info.run_id.clone(),
                Some(loopml_tracking::model::RunStatus::Finished),
                Some(crate::now_ms()),
                None,
            )
            .await?;
        Ok(
            json!({"run_id": run.info.run_id, "metrics": m.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>()}),
        )
    }
}

fn kv(k: &str, v: &str) -> loopml_tracking::model::KeyValue {
    loopml_tracking::model::KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

fn summary(name: &str, i: &Index) -> Value {
    json!({"name": name, "dataset": i.dataset, "embedding_model": i.model,
        "dimensions": i.dims, "documents": i.docs.len()})
}

/// Mean recall@k, precision@k and nDCG@k (binary relevance) for each k, and MRR over the
/// longest list, by query.
pub fn metrics(
    labelled: &[(String, HashSet<String>)],
    hits: &[Vec<(String, String, f32)>],
    ks: &[usize],
) -> Vec<(String, f64)> {
    let n = labelled.len().max(1) as f64;
    let mut out = Vec::new();
    for &k in ks {
        let (mut recall, mut precision, mut ndcg) = (0.0, 0.0, 0.0);
        for ((_, relevant), got) in labelled.iter().zip(hits) {
            let top: Vec<&String> = got.iter().take(k).map(|(id, _, _)| id).collect();
            let found = top.iter().filter(|id| relevant.contains(**id)).count() as f64;
            if !relevant.is_empty() {
                recall += found / relevant.len() as f64;
            }
            precision += found / k as f64;
            let dcg: f64 = top
                .iter()
                .enumerate()
                .filter(|(_, id)| relevant.contains(**id))
                .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
                .sum();
            let ideal: f64 = (0..relevant.len().min(k))
                .map(|i| 1.0 / ((i + 2) as f64).log2())
                .sum();
            if ideal > 0.0 {
                ndcg += dcg / ideal;
            }
        }
        out.push((format!("recall_at_{k}"), recall / n));
        out.push((format!("precision_at_{k}"), precision / n));
        out.push((format!("ndcg_at_{k}"), ndcg / n));
    }
    let mrr: f64 = labelled
        .iter()
        .zip(hits)
        .map(|((_, relevant), got)| {
            got.iter()
                .position(|(id, _, _)| relevant.contains(id))
                .map_or(0.0, |i| 1.0 / (i + 1) as f64)
        })
        .sum();
    out.push(("mrr".into(), mrr / n));
    out
}

fn ok(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn body_json(b: &[u8]) -> Result<Value> {
    serde_json::from_slice(b)
        .map_err(|e| Error::InvalidParameter(format!("The request body is not JSON: {e}")))
}

fn required<'a>(v: &'a Value, k: &str) -> Result<&'a str> {
    v[k].as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::InvalidParameter(format!("'{k}' is required")))
}

async fn build_index(State(r): State<Retrieval>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let out = r
        .build(
            required(&v, "name")?,
            required(&v, "dataset")?,
            v["id_column"].as_str().unwrap_or("id"),
            required(&v, "text_column")?,
            required(&v, "embedding_model")?,
        )
        .await?;
    Ok(ok(json!({"index": out})))
}

async fn list_indexes(State(r): State<Retrieval>) -> Response {
    let all: Vec<Value> = r
        .indexes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(n, i)| summary(n, i))
        .collect();
    ok(json!({"indexes": all}))
}

fn k_of(v: &Value, default: usize) -> Result<usize> {
    match &v["k"] {
        Value::Null => Ok(default),
        k => k
            .as_u64()
            .filter(|k| (1..=1000).contains(k))
            .map(|k| k as usize)
            .ok_or_else(|| Error::InvalidParameter("'k' must be 1 to 1000".into())),
    }
}

async fn query_index(
    State(r): State<Retrieval>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let v = body_json(&body)?;
    let q = required(&v, "query")?.to_string();
    let k = k_of(&v, 5)?;
    let mut hits = r.query(&name, vec![q], k).await?;
    let results: Vec<Value> = hits
        .pop()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, text, score)| json!({"id": id, "text": text, "score": score}))
        .collect();
    Ok(ok(json!({"results": results})))
}

async fn evaluate(State(r): State<Retrieval>, body: Bytes) -> Result<Response> {
    let v = body_json(&body)?;
    let index = required(&v, "index")?.to_string();
    let mut labelled: Vec<(String, HashSet<String>)> = Vec::new();
    for (i, q) in v["queries"].as_array().into_iter().flatten().enumerate() {
        let text = q["query"]
            .as_str()
            .ok_or_else(|| Error::InvalidParameter(format!("queries[{i}].query is required")))?;
        let relevant = q["relevant"]
            .as_array()
            .ok_or_else(|| Error::InvalidParameter(format!("queries[{i}].relevant must list ids")))?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect();
        labelled.push((text.to_string(), relevant));
    }
    if let Some(ds) = v["dataset"].as_str() {
        // Queries from a dataset version: one row a query, relevant ids comma-separated.
        let rows = r
            .corpus
            .columns(
                ds.to_string(),
                v["query_column"].as_str().unwrap_or("query").to_string(),
                v["relevant_column"]
                    .as_str()
                    .unwrap_or("relevant")
                    .to_string(),
            )
            .await
            .map_err(Error::InvalidParameter)?;
        for (q, rel) in rows {
            let relevant = rel
                .trim_matches(['[', ']'])
                .split(',')
                .map(|s| s.trim().trim_matches(['"', '\'']).to_string())
                .filter(|s| !s.is_empty())
                .collect();
            labelled.push((q, relevant));
        }
    }
    let ks: Vec<usize> = match v["k"].as_array() {
        Some(a) => a
            .iter()
            .map(|k| {
                k.as_u64()
                    .filter(|k| (1..=1000).contains(k))
                    .map(|k| k as usize)
                    .ok_or_else(|| Error::InvalidParameter("each k must be 1 to 1000".into()))
            })
            .collect::<Result<_>>()?,
        None => vec![k_of(&v, 5)?],
    };
    let e = &v["experiment_id"];
    let experiment_id = e
        .as_str()
        .and_then(|s| s.parse().ok())
        .or(e.as_i64())
        .unwrap_or(0);
    let out = r
        .evaluate(
            &index,
            labelled,
            ks,
            experiment_id,
            v["run_name"].as_str().map(str::to_string),
        )
        .await?;
    Ok(ok(out))
}

/// The retrieval routes.
pub fn router(r: Retrieval) -> Router {
    let b = "/api/2.0/loopml/retrieval";
    Router::new()
        .route(&format!("{b}/indexes"), post(build_index).get(list_indexes))
        .route(&format!("{b}/indexes/{{name}}/query"), post(query_index))
        .route(&format!("{b}/evaluate"), post(evaluate))
        .with_state(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let hit = |ids: &[&str]| {
            ids.iter()
                .map(|s| (s.to_string(), String::new(), 1.0))
                .collect::<Vec<_>>()
        };
        let labelled = vec![
            ("q1".to_string(), set(&["a", "b"])),
            ("q2".to_string(), set(&["z"])),
        ];
        let hits = vec![hit(&["a", "x", "b"]), hit(&["x", "y", "q"])];
        let m: HashMap<String, f64> = metrics(&labelled, &hits, &[1, 3]).into_iter().collect();
        assert!((m["recall_at_1"] - 0.25).abs() < 1e-9); // (1/2 + 0) / 2
        assert!((m["recall_at_3"] - 0.5).abs() < 1e-9); // (2/2 + 0) / 2
        assert!((m["precision_at_3"] - (2.0 / 3.0) / 2.0).abs() < 1e-9);
        assert!((m["mrr"] - 0.5).abs() < 1e-9); // (1/1 + 0) / 2
        let ideal = 1.0 + 1.0 / 3f64.log2();
        let dcg = 1.0 + 1.0 / 4f64.log2();
        assert!((m["ndcg_at_3"] - (dcg / ideal) / 2.0).abs() < 1e-9);
    }
}
