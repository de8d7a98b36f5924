//! The trace store: span ingest (one transaction per OTLP batch, spans upserted by id), trace
//! info upserts, reads, search, tags, links, deletion and assessments.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use loopml_store::{Conn, Database, Value as Sql};
use loopml_tracking::TrackingService;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::{self, TraceInfo};
use crate::otlp::{Span, plain};

/// Prices a model's tokens: `(model, input tokens, output tokens)` → USD, when known.
pub type Pricer = Arc<dyn Fn(&str, u64, u64) -> Option<f64> + Send + Sync>;

/// The trace store; cheap to clone.
#[derive(Clone)]
pub struct TraceService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    tracking: TrackingService,
    pricer: OnceLock<Pricer>,
}

impl std::fmt::Debug for TraceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceService").finish_non_exhaustive()
    }
}

/// Longest preview kept (as `mlflow server` does).
const PREVIEW_CHARS: usize = 1000;
/// Largest page of a trace search.
pub const MAX_RESULTS: usize = 500;

fn preview(v: &Value) -> Option<String> {
    let text = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(text.chars().take(PREVIEW_CHARS).collect())
}

/// What one span adds to its trace's totals, read from its attributes.
struct SpanFacts {
    span_type: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost: Option<f64>,
}

fn facts(s: &Span, pricer: Option<&Pricer>) -> SpanFacts {
    let text = |k: &str| s.attr(k).map(plain);
    let span_type = text("mlflow.spanType").and_then(|v| v.as_str().map(str::to_string));
    let usage = text("mlflow.chat.tokenUsage");
    let num = |v: Option<Value>| v.and_then(|v| v.as_i64().or(v.as_f64().map(|f| f as i64)));
    let (input, output) = match &usage {
        Some(u) if u.is_object() => (
            num(Some(u["input_tokens"].clone())),
            num(Some(u["output_tokens"].clone())),
        ),
        _ => (
            num(text("gen_ai.usage.input_tokens")).or(num(text("gen_ai.usage.prompt_tokens"))),
            num(text("gen_ai.usage.output_tokens")).or(num(text("gen_ai.usage.completion_tokens"))),
        ),
    };
    let cost = text("mlflow.llm.cost")
        .and_then(|c| c["total_cost"].as_f64().or(c.as_f64()))
        .or_else(|| {
            let model = text("mlflow.llm.model")
                .or(text("gen_ai.response.model"))
                .or(text("gen_ai.request.model"))?;
            let model = model.as_str()?.to_string();
            let p = pricer?;
            p(
                &model,
                input.unwrap_or(0).max(0) as u64,
                output.unwrap_or(0).max(0) as u64,
            )
        });
    SpanFacts {
        span_type,
        input_tokens: input,
        output_tokens: output,
        cost,
    }
}

/// A search request.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Experiments searched (at least one).
    pub experiment_ids: Vec<i64>,
    /// MLflow's trace filter.
    pub filter: String,
    /// Page size (1..=500, default 100).
    pub max_results: usize,
    /// `timestamp_ms DESC`, …
    pub order_by: Vec<String>,
    /// From the previous page.
    pub page_token: Option<String>,
}

impl TraceService {
    /// The trace store on the tracking database (its tables created if needed).
    pub fn new(tracking: TrackingService) -> Result<Self> {
        let db = tracking.database().clone();
        db.migrate("traces", crate::MIGRATIONS)?;
        Ok(TraceService {
            inner: Arc::new(Inner {
                db,
                tracking,
                pricer: OnceLock::new(),
            }),
        })
    }

    /// Sets how LLM spans without a cost of their own are priced (the gateway's price table).
    pub fn set_pricer(&self, p: Pricer) {
        let _ = self.inner.pricer.set(p);
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    pub(crate) fn tracking(&self) -> &TrackingService {
        &self.inner.tracking
    }

    /// The artifact location tag value of a trace of `experiment_id`; errors when the
    /// experiment does not exist or is deleted.
    async fn artifact_root(&self, experiment_id: i64) -> Result<String> {
        let e = self.inner.tracking.get_experiment(experiment_id).await?;
        if e.lifecycle_stage != loopml_tracking::model::LifecycleStage::Active {
            return Err(Error::InvalidParameter(format!(
                "The experiment {experiment_id} is deleted; traces cannot be logged to it"
            )));
        }
        Ok(e.artifact_location)
    }

    /// Ingests spans (an OTLP batch) into `experiment_id`: traces created as needed, spans
    /// upserted by (trace, span), the trace's totals recomputed; with `run_id`, the traces
    /// are linked to that run. All or nothing.
    pub async fn log_spans(
        &self,
        experiment_id: i64,
        run_id: Option<String>,
        spans: Vec<Span>,
    ) -> Result<usize> {
        if spans.is_empty() {
            return Ok(0);
        }
        let root = self.artifact_root(experiment_id).await?;
        let pricer = self.inner.pricer.get().cloned();
        let n = spans.len();
        self.db()
            .write(move |c| -> Result<()> {
                let mut by_trace: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
                for s in &spans {
                    by_trace
                        .entry(format!("tr-{}", s.trace_id))
                        .or_default()
                        .push(s);
                }
                for (trace_id, spans) in &by_trace {
                    let first = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
                    let inserted = c.execute(
                        "INSERT INTO traces (trace_id, experiment_id, request_time, state) \
                         VALUES (?1, ?2, ?3, 'IN_PROGRESS') ON CONFLICT (trace_id) DO NOTHING",
                        &[
                            trace_id.as_str().into(),
                            experiment_id.into(),
                            ((first / 1_000_000) as i64).into(),
                        ],
                    )?;
                    // Spans of a trace logged to another experiment must not join it (nor
                    // pass a permission check made on this one).
                    if inserted == 0 {
                        let owner = c.query_opt(
                            "SELECT experiment_id FROM traces WHERE trace_id = ?1",
                            &[trace_id.as_str().into()],
                            |r| r.i64(0),
                        )?;
                        if owner.is_some_and(|e| e != experiment_id) {
                            return Err(Error::InvalidParameter(format!(
                                "Trace '{trace_id}' belongs to another experiment"
                            )));
                        }
                    }
                    let location = format!("{root}/traces/{trace_id}/artifacts");
                    let mut tags: Vec<(&str, String)> = vec![
                        (model::ARTIFACT_LOCATION, location),
                        (model::SPANS_LOCATION, "TRACKING_STORE".into()),
                    ];
                    if let Some(svc) = spans.iter().find_map(|s| s.service.clone()) {
                        tags.push(("service.name", svc));
                    }
                    let rows: Vec<[Sql<'_>; 3]> = spans
                        .iter()
                        .filter(|s| s.parent_span_id.is_none())
                        .map(|s| s.name.clone())
                        .take(1)
                        .map(|n| (model::TRACE_NAME, n))
                        .chain(tags)
                        .map(|(k, v)| [trace_id.as_str().into(), k.into(), v.into()])
                        .collect();
                    c.execute_many(
                        &pair_insert("trace_tags", "DO NOTHING"),
                        rows.iter().map(|r| r.as_slice()),
                    )?;
                    let mut span_rows: Vec<[Sql<'static>; 12]> = Vec::with_capacity(spans.len());
                    for s in spans {
                        let f = facts(s, pricer.as_ref());
                        span_rows.push([
                            trace_id.clone().into(),
                            s.span_id.clone().into(),
                            s.parent_span_id.clone().into(),
                            s.name.clone().into(),
                            f.span_type.into(),
                            s.status_code.into(),
                            (s.start_ns as i64).into(),
                            (s.end_ns as i64).into(),
                            f.input_tokens.into(),
                            f.output_tokens.into(),
                            f.cost.into(),
                            s.to_json().to_string().into(),
                        ]);
                    }
                    c.execute_many(
                        "INSERT INTO spans (trace_id, span_id, parent_span_id, name, span_type, \
                         status, start_ns, end_ns, input_tokens, output_tokens, cost, content) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                         ON CONFLICT (trace_id, span_id) DO UPDATE SET \
                         parent_span_id = excluded.parent_span_id, name = excluded.name, \
                         span_type = excluded.span_type, status = excluded.status, \
                         start_ns = excluded.start_ns, end_ns = excluded.end_ns, \
                         input_tokens = excluded.input_tokens, \
                         output_tokens = excluded.output_tokens, cost = excluded.cost, \
                         content = excluded.content",
                        span_rows.iter().map(|r| r.as_slice()),
                    )?;
                    // The root span gives a trace logged by OTLP alone its time and state
                    // (StartTraceV3, when it comes, has the last word).
                    if let Some(r) = spans.iter().find(|s| s.parent_span_id.is_none()) {
                        let state = if r.status_code == "STATUS_CODE_ERROR" {
                            "ERROR"
                        } else {
                            "OK"
                        };
                        c.execute(
                            "UPDATE traces SET request_time = ?2, execution_ms = ?3, state = ?4, \
                             request_preview = COALESCE(request_preview, ?5), \
                             response_preview = COALESCE(response_preview, ?6), \
                             name = COALESCE(name, ?7) \
                             WHERE trace_id = ?1 AND finalized = 0",
                            &[
                                trace_id.as_str().into(),
                                ((r.start_ns / 1_000_000) as i64).into(),
                                ((r.end_ns.saturating_sub(r.start_ns) / 1_000_000) as i64).into(),
                                state.into(),
                                r.attr("mlflow.spanInputs").map(plain).as_ref().and_then(preview).into(),
                                r.attr("mlflow.spanOutputs").map(plain).as_ref().and_then(preview).into(),
                                r.name.as_str().into(),
                            ],
                        )?;
                    }
                    c.execute(
                        "UPDATE traces SET \
                         span_count = (SELECT COUNT(*) FROM spans s WHERE s.trace_id = ?1), \
                         input_tokens = (SELECT SUM(input_tokens) FROM spans s WHERE s.trace_id = ?1), \
                         output_tokens = (SELECT SUM(output_tokens) FROM spans s WHERE s.trace_id = ?1), \
                         cost = (SELECT SUM(cost) FROM spans s WHERE s.trace_id = ?1) \
                         WHERE trace_id = ?1",
                        &[trace_id.as_str().into()],
                    )?;
                    if let Some(run) = &run_id {
                        c.execute(
                            "INSERT INTO trace_runs (trace_id, run_id) VALUES (?1, ?2) \
                             ON CONFLICT (trace_id, run_id) DO NOTHING",
                            &[trace_id.as_str().into(), run.as_str().into()],
                        )?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }

    /// StartTraceV3: creates or completes a trace's info (the client sends it when the trace
    /// ends, possibly after or before its spans); tags and metadata are merged.
    pub async fn start_trace(&self, info: TraceInfo) -> Result<TraceInfo> {
        let root = self.artifact_root(info.experiment_id).await?;
        let id = info.trace_id.clone();
        let location = format!("{root}/traces/{id}/artifacts");
        self.db()
            .write(move |c| -> Result<()> {
                let t = &info;
                let existing = c.query_opt(
                    "SELECT experiment_id FROM traces WHERE trace_id = ?1",
                    &[t.trace_id.as_str().into()],
                    |r| r.i64(0),
                )?;
                if existing.is_some_and(|e| e != t.experiment_id) {
                    return Err(Error::InvalidParameter(format!(
                        "Trace '{}' belongs to another experiment",
                        t.trace_id
                    )));
                }
                let name = t.tags.get(model::TRACE_NAME).cloned();
                let run = t.metadata.get(model::SOURCE_RUN).cloned();
                c.execute(
                    "INSERT INTO traces (trace_id, experiment_id, request_time, execution_ms, \
                     state, client_request_id, request_preview, response_preview, name, \
                     source_run, finalized) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1) \
                     ON CONFLICT (trace_id) DO UPDATE SET request_time = excluded.request_time, \
                     execution_ms = excluded.execution_ms, state = excluded.state, \
                     client_request_id = excluded.client_request_id, \
                     request_preview = excluded.request_preview, \
                     response_preview = excluded.response_preview, \
                     name = COALESCE(excluded.name, traces.name), \
                     source_run = COALESCE(excluded.source_run, traces.source_run), finalized = 1",
                    &[
                        t.trace_id.as_str().into(),
                        t.experiment_id.into(),
                        t.request_time.into(),
                        t.execution_ms.into(),
                        t.state.as_str().into(),
                        t.client_request_id.as_deref().into(),
                        t.request_preview.as_deref().into(),
                        t.response_preview.as_deref().into(),
                        name.as_deref().into(),
                        run.as_deref().into(),
                    ],
                )?;
                let mut tags: Vec<(&str, &str)> = t
                    .tags
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                tags.push((model::ARTIFACT_LOCATION, location.as_str()));
                tags.push((model::SPANS_LOCATION, "TRACKING_STORE"));
                upsert_pairs(c, "trace_tags", &t.trace_id, &tags)?;
                let mut meta: Vec<(&str, &str)> = t
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                meta.push(("mlflow.trace.infoFinalized", "true"));
                upsert_pairs(c, "trace_metadata", &t.trace_id, &meta)?;
                if let Some(run) = &run {
                    c.execute(
                        "INSERT INTO trace_runs (trace_id, run_id) VALUES (?1, ?2) \
                         ON CONFLICT (trace_id, run_id) DO NOTHING",
                        &[t.trace_id.as_str().into(), run.as_str().into()],
                    )?;
                }
                Ok(())
            })
            .await?;
        self.get_info(&id).await
    }

    /// The experiment a trace belongs to (one primary-key read, for permission checks).
    pub async fn experiment_of(&self, trace_id: &str) -> Result<i64> {
        let id = trace_id.to_string();
        self.db()
            .read(move |c| -> Result<i64> {
                c.query_opt(
                    "SELECT experiment_id FROM traces WHERE trace_id = ?1",
                    &[id.as_str().into()],
                    |r| r.i64(0),
                )?
                .ok_or_else(|| Error::NotFound(format!("Trace with ID '{id}' not found.")))
            })
            .await
    }

    /// A trace's info with its assessments.
    pub async fn get_info(&self, trace_id: &str) -> Result<TraceInfo> {
        let id = trace_id.to_string();
        let mut found = self.infos(vec![id.clone()]).await?;
        found
            .pop()
            .ok_or_else(|| Error::NotFound(format!("Trace with ID '{id}' not found.")))
    }

    /// Infos of these traces (missing ones left out), in the order given.
    pub async fn infos(&self, ids: Vec<String>) -> Result<Vec<TraceInfo>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.db()
            .read(move |c| -> Result<Vec<TraceInfo>> { load_infos(c, &ids) })
            .await
    }

    /// Infos and spans (each span's MLflow JSON, as stored) of these traces.
    pub async fn traces(&self, ids: Vec<String>) -> Result<Vec<(TraceInfo, Vec<String>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.db()
            .read(move |c| -> Result<_> {
                let infos = load_infos(c, &ids)?;
                let mut out = Vec::with_capacity(infos.len());
                for info in infos {
                    let spans = c.query(
                        "SELECT content FROM spans WHERE trace_id = ?1 ORDER BY start_ns, span_id",
                        &[info.trace_id.as_str().into()],
                        |r| r.string(0),
                    )?;
                    out.push((info, spans));
                }
                Ok(out)
            })
            .await
    }

    /// The query of a search page, its size and offset.
    fn page_query(s: &Search) -> Result<(crate::search::Query, usize, usize)> {
        if s.experiment_ids.is_empty() {
            return Err(Error::InvalidParameter(
                "search_traces needs at least one experiment location".into(),
            ));
        }
        let max = if s.max_results == 0 {
            100
        } else {
            s.max_results
        };
        if max > MAX_RESULTS {
            return Err(Error::InvalidParameter(format!(
                "Invalid value {max} for parameter 'max_results': at most {MAX_RESULTS}"
            )));
        }
        let offset = match &s.page_token {
            Some(t) if !t.is_empty() => crate::search::read_token(t)?,
            _ => 0,
        };
        let q = crate::search::build(&s.experiment_ids, &s.filter, &s.order_by, max + 1, offset)?;
        Ok((q, max, offset))
    }

    /// Searches traces; answers a page and the next page's token.
    pub async fn search(&self, s: Search) -> Result<(Vec<TraceInfo>, Option<String>)> {
        let (q, max, offset) = Self::page_query(&s)?;
        // The page and its infos in one snapshot.
        let (infos, more) = self
            .db()
            .read(move |c| -> Result<_> {
                let params: Vec<Sql<'_>> = q.params.to_vec();
                let mut ids = c.query(&q.sql, &params, |r| r.string(0))?;
                let more = ids.len() > max;
                ids.truncate(max);
                Ok((load_infos(c, &ids)?, more))
            })
            .await?;
        let next = more.then(|| crate::search::token(offset + max));
        Ok((infos, next))
    }

    /// Searches traces and answers the page as SearchTracesV3's JSON body, written straight
    /// from the rows (a page is 100 infos of ~14 pairs each: no intermediate structs).
    pub async fn search_json(&self, s: Search) -> Result<String> {
        let (q, max, offset) = Self::page_query(&s)?;
        self.db()
            .read(move |c| -> Result<String> {
                let params: Vec<Sql<'_>> = q.params.to_vec();
                let mut ids = c.query(&q.sql, &params, |r| r.string(0))?;
                let more = ids.len() > max;
                ids.truncate(max);
                let mut out = String::with_capacity(1024 * (ids.len() + 1));
                out.push_str("{\"traces\":");
                crate::page::write_infos(c, &ids, &mut out)?;
                if more {
                    out.push_str(",\"next_page_token\":");
                    crate::page::push_json_str(&mut out, &crate::search::token(offset + max));
                }
                out.push('}');
                Ok(out)
            })
            .await
    }

    /// Sets a tag on a trace.
    pub async fn set_tag(&self, trace_id: &str, key: &str, value: &str) -> Result<()> {
        crate::validate_tag(key, value)?;
        let (id, k, v) = (trace_id.to_string(), key.to_string(), value.to_string());
        self.db()
            .write(move |c| -> Result<()> {
                require(c, &id)?;
                upsert_pairs(c, "trace_tags", &id, &[(k.as_str(), v.as_str())])?;
                if k == model::TRACE_NAME {
                    c.execute(
                        "UPDATE traces SET name = ?2 WHERE trace_id = ?1",
                        &[id.as_str().into(), v.as_str().into()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Deletes a tag of a trace.
    pub async fn delete_tag(&self, trace_id: &str, key: &str) -> Result<()> {
        let (id, k) = (trace_id.to_string(), key.to_string());
        self.db()
            .write(move |c| -> Result<()> {
                require(c, &id)?;
                let n = c.execute(
                    "DELETE FROM trace_tags WHERE trace_id = ?1 AND key = ?2",
                    &[id.as_str().into(), k.as_str().into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound(format!(
                        "No trace tag with key '{k}' for trace with ID '{id}'"
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Deletes traces of an experiment: those named, or (oldest first) those before
    /// `max_timestamp_ms`, at most `max_traces`. Answers how many went.
    pub async fn delete_traces(
        &self,
        experiment_id: i64,
        ids: Option<Vec<String>>,
        max_timestamp_ms: Option<i64>,
        max_traces: Option<i64>,
    ) -> Result<usize> {
        self.db()
            .write(move |c| -> Result<usize> {
                let doomed: Vec<String> = match (&ids, max_timestamp_ms) {
                    (Some(ids), None) => {
                        let mut out = Vec::new();
                        for id in ids {
                            if c.query_opt(
                                "SELECT 1 FROM traces WHERE trace_id = ?1 AND experiment_id = ?2",
                                &[id.as_str().into(), experiment_id.into()],
                                |_| Ok(()),
                            )?
                            .is_some()
                            {
                                out.push(id.clone());
                            }
                        }
                        out
                    }
                    (None, Some(ts)) => c.query(
                        "SELECT trace_id FROM traces WHERE experiment_id = ?1 AND request_time <= ?2 \
                         ORDER BY request_time, trace_id LIMIT ?3",
                        &[
                            experiment_id.into(),
                            ts.into(),
                            max_traces.unwrap_or(i64::MAX).into(),
                        ],
                        |r| r.string(0),
                    )?,
                    _ => {
                        return Err(Error::InvalidParameter(
                            "delete_traces takes either request_ids or max_timestamp_millis"
                                .into(),
                        ));
                    }
                };
                for id in &doomed {
                    for table in [
                        "spans",
                        "trace_tags",
                        "trace_metadata",
                        "assessments",
                        "trace_runs",
                        "trace_prompts",
                        "traces",
                    ] {
                        c.execute(
                            &format!("DELETE FROM {table} WHERE trace_id = ?1"),
                            &[id.as_str().into()],
                        )?;
                    }
                }
                Ok(doomed.len())
            })
            .await
    }

    /// Links traces to a run (idempotent; unknown traces are refused).
    pub async fn link_to_run(&self, trace_ids: Vec<String>, run_id: String) -> Result<()> {
        if trace_ids.len() > 100 {
            return Err(Error::InvalidParameter(
                "link-to-run takes at most 100 trace ids".into(),
            ));
        }
        self.inner.tracking.get_run(run_id.clone()).await?;
        self.db()
            .write(move |c| -> Result<()> {
                for id in &trace_ids {
                    require(c, id)?;
                    c.execute(
                        "INSERT INTO trace_runs (trace_id, run_id) VALUES (?1, ?2) \
                         ON CONFLICT (trace_id, run_id) DO NOTHING",
                        &[id.as_str().into(), run_id.as_str().into()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Records the prompt versions a trace used (searchable as `prompt = 'name/version'`).
    pub async fn link_prompts(
        &self,
        trace_id: String,
        prompts: Vec<(String, String)>,
    ) -> Result<()> {
        self.db()
            .write(move |c| -> Result<()> {
                require(c, &trace_id)?;
                for (name, version) in &prompts {
                    c.execute(
                        "INSERT INTO trace_prompts (trace_id, name, version) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (trace_id, name, version) DO NOTHING",
                        &[
                            trace_id.as_str().into(),
                            name.as_str().into(),
                            version.as_str().into(),
                        ],
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Creates an assessment (feedback or expectation); one that `overrides` another marks
    /// the old one invalid.
    pub async fn create_assessment(&self, trace_id: &str, mut a: Value) -> Result<Value> {
        let id = format!("a-{}", uuid::Uuid::new_v4().simple());
        let now = crate::now_ms();
        let (name, kind, value) = crate::assessments::columns(&a)?;
        a["assessment_id"] = json!(id);
        a["trace_id"] = json!(trace_id);
        if a["valid"].is_null() {
            a["valid"] = json!(true);
        }
        if a["create_time"].is_null() {
            a["create_time"] = json!(model::timestamp(now));
        }
        if a["last_update_time"].is_null() {
            a["last_update_time"] = a["create_time"].clone();
        }
        let valid = a["valid"].as_bool() != Some(false);
        let overrides = a["overrides"].as_str().map(str::to_string);
        let tid = trace_id.to_string();
        let body = a.clone();
        self.db()
            .write(move |c| -> Result<()> {
                require(c, &tid)?;
                if let Some(old) = &overrides {
                    let n = c.execute(
                        "UPDATE assessments SET valid = 0, update_time = ?3 \
                         WHERE assessment_id = ?1 AND trace_id = ?2",
                        &[old.as_str().into(), tid.as_str().into(), now.into()],
                    )?;
                    if n == 0 {
                        return Err(Error::NotFound(format!(
                            "Assessment '{old}' to override was not found on trace '{tid}'"
                        )));
                    }
                }
                c.execute(
                    "INSERT INTO assessments (assessment_id, trace_id, name, kind, value, valid, \
                     create_time, update_time, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
                    &[
                        id.as_str().into(),
                        tid.as_str().into(),
                        name.as_str().into(),
                        kind.into(),
                        value.as_deref().into(),
                        i64::from(valid).into(),
                        now.into(),
                        body.to_string().into(),
                    ],
                )?;
                Ok(())
            })
            .await?;
        Ok(a)
    }

    /// One assessment.
    pub async fn get_assessment(&self, trace_id: &str, assessment_id: &str) -> Result<Value> {
        let (tid, aid) = (trace_id.to_string(), assessment_id.to_string());
        self.db()
            .read(move |c| -> Result<Value> { load_assessment(c, &tid, &aid) })
            .await
    }

    /// Updates the fields of `update_mask` (comma-separated, camelCase) from `new`.
    pub async fn update_assessment(
        &self,
        trace_id: &str,
        assessment_id: &str,
        new: Value,
        mask: &str,
    ) -> Result<Value> {
        let (tid, aid) = (trace_id.to_string(), assessment_id.to_string());
        let fields: Vec<String> = mask
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(crate::assessments::snake)
            .collect();
        if fields.is_empty() {
            return Err(Error::InvalidParameter(
                "'update_mask' must name the fields to update".into(),
            ));
        }
        for f in &fields {
            if !crate::assessments::UPDATABLE.contains(&f.as_str()) {
                return Err(Error::InvalidParameter(format!(
                    "'{f}' cannot be updated; updatable fields: {}",
                    crate::assessments::UPDATABLE.join(", ")
                )));
            }
        }
        self.db()
            .write(move |c| -> Result<Value> {
                let mut a = load_assessment(c, &tid, &aid)?;
                for f in &fields {
                    if (f == "feedback" || f == "expectation")
                        && let Some(o) = a.as_object_mut()
                    {
                        o.remove("feedback");
                        o.remove("expectation");
                    }
                    match new.get(f) {
                        Some(v) => a[f.as_str()] = v.clone(),
                        None => {
                            if let Some(o) = a.as_object_mut() {
                                o.remove(f);
                            }
                        }
                    }
                }
                let now = crate::now_ms();
                a["last_update_time"] = json!(model::timestamp(now));
                let (name, kind, value) = crate::assessments::columns(&a)?;
                let valid = a["valid"].as_bool() != Some(false);
                c.execute(
                    "UPDATE assessments SET name = ?3, kind = ?4, value = ?5, valid = ?6, \
                     update_time = ?7, body = ?8 WHERE assessment_id = ?1 AND trace_id = ?2",
                    &[
                        aid.as_str().into(),
                        tid.as_str().into(),
                        name.as_str().into(),
                        kind.into(),
                        value.as_deref().into(),
                        i64::from(valid).into(),
                        now.into(),
                        a.to_string().into(),
                    ],
                )?;
                Ok(a)
            })
            .await
    }

    /// Deletes an assessment.
    pub async fn delete_assessment(&self, trace_id: &str, assessment_id: &str) -> Result<()> {
        let (tid, aid) = (trace_id.to_string(), assessment_id.to_string());
        self.db()
            .write(move |c| -> Result<()> {
                let n = c.execute(
                    "DELETE FROM assessments WHERE assessment_id = ?1 AND trace_id = ?2",
                    &[aid.as_str().into(), tid.as_str().into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound(format!(
                        "Assessment with ID '{aid}' not found on trace '{tid}'"
                    )));
                }
                Ok(())
            })
            .await
    }
}

fn require(c: &Conn<'_>, trace_id: &str) -> Result<()> {
    c.query_opt(
        "SELECT 1 FROM traces WHERE trace_id = ?1",
        &[trace_id.into()],
        |_| Ok(()),
    )?
    .ok_or_else(|| Error::NotFound(format!("Trace with ID '{trace_id}' not found.")))
}

/// Inserts a (trace, key, value) row into `table` with its trace's experiment and start time
/// (the search index's columns; a trigger keeps them equal when the trace's time changes).
fn pair_insert(table: &str, on_conflict: &str) -> String {
    format!(
        "INSERT INTO {table} (trace_id, key, value, experiment_id, request_time) \
         SELECT ?1, ?2, ?3, t.experiment_id, t.request_time FROM traces t WHERE t.trace_id = ?1 \
         ON CONFLICT (trace_id, key) {on_conflict}"
    )
}

fn upsert_pairs(c: &Conn<'_>, table: &str, trace_id: &str, pairs: &[(&str, &str)]) -> Result<()> {
    let rows: Vec<[Sql<'_>; 3]> = pairs
        .iter()
        .map(|(k, v)| [trace_id.into(), (*k).into(), (*v).into()])
        .collect();
    c.execute_many(
        &pair_insert(table, "DO UPDATE SET value = excluded.value"),
        rows.iter().map(|r| r.as_slice()),
    )?;
    Ok(())
}

fn load_assessment(c: &Conn<'_>, tid: &str, aid: &str) -> Result<Value> {
    c.query_opt(
        "SELECT body, valid FROM assessments WHERE assessment_id = ?1 AND trace_id = ?2",
        &[aid.into(), tid.into()],
        |r| Ok((r.string(0)?, r.i64(1)?)),
    )?
    .map(|(body, valid)| {
        let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["valid"] = json!(valid != 0);
        v
    })
    .ok_or_else(|| {
        Error::NotFound(format!(
            "Assessment with ID '{aid}' not found on trace '{tid}'"
        ))
    })
}

/// `IN (?2, ?3, …)` placeholders after `first` others.
fn placeholders(n: usize, first: usize) -> String {
    (0..n)
        .map(|i| format!("?{}", first + i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `traces` columns a trace info is read from, in the order both readers expect.
pub(crate) const INFO_COLUMNS: &str = "trace_id, experiment_id, request_time, execution_ms, \
     state, client_request_id, request_preview, response_preview, input_tokens, output_tokens, \
     cost";

fn load_infos(c: &Conn<'_>, ids: &[String]) -> Result<Vec<TraceInfo>> {
    let mut out: Vec<TraceInfo> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let params: Vec<Sql<'_>> = chunk.iter().map(|s| s.as_str().into()).collect();
        let list = placeholders(chunk.len(), 0);
        let mut found: HashMap<String, TraceInfo> = c
            .query(
                &format!("SELECT {INFO_COLUMNS} FROM traces WHERE trace_id IN ({list})"),
                &params,
                |r| {
                    Ok(TraceInfo {
                        trace_id: r.string(0)?,
                        experiment_id: r.i64(1)?,
                        request_time: r.i64(2)?,
                        execution_ms: r.opt_i64(3)?,
                        state: r.string(4)?,
                        client_request_id: r.opt_string(5)?,
                        request_preview: r.opt_string(6)?,
                        response_preview: r.opt_string(7)?,
                        input_tokens: r.opt_i64(8)?,
                        output_tokens: r.opt_i64(9)?,
                        cost: r.opt_f64(10)?,
                        ..TraceInfo::default()
                    })
                },
            )?
            .into_iter()
            .map(|t| (t.trace_id.clone(), t))
            .collect();
        for (table, is_tag) in [("trace_tags", true), ("trace_metadata", false)] {
            let rows = c.query(
                &format!("SELECT trace_id, key, value FROM {table} WHERE trace_id IN ({list})"),
                &params,
                |r| Ok((r.string(0)?, r.string(1)?, r.string(2)?)),
            )?;
            for (id, k, v) in rows {
                if let Some(t) = found.get_mut(&id) {
                    if is_tag {
                        t.tags.insert(k, v);
                    } else {
                        t.metadata.insert(k, v);
                    }
                }
            }
        }
        let rows = c.query(
            &format!(
                "SELECT trace_id, body, valid FROM assessments WHERE trace_id IN ({list}) \
                 ORDER BY create_time, assessment_id"
            ),
            &params,
            |r| Ok((r.string(0)?, r.string(1)?, r.i64(2)?)),
        )?;
        for (id, body, valid) in rows {
            if let Some(t) = found.get_mut(&id) {
                let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                v["valid"] = json!(valid != 0);
                t.assessments.push(v);
            }
        }
        for id in chunk {
            if let Some(t) = found.remove(id) {
                out.push(t);
            }
        }
    }
    Ok(out)
}
