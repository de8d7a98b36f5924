//! `POST /graphql`: the GraphQL endpoint the MLflow web UI queries (run pages, run tables,
//! metric charts, artifact lists), with the schema of `mlflow server` 3.17 — its root fields
//! `mlflowGetExperiment`, `mlflowGetRun` (with `experiment` and `modelVersions`),
//! `mlflowSearchRuns`, `mlflowListArtifacts`, `mlflowGetMetricHistoryBulkInterval`,
//! `mlflowSearchModelVersions`, `mlflowSearchDatasets` and `test`. Queries are parsed with
//! `graphql-parser`, checked against the schema below (unknown fields are refused in
//! graphql-core's words), limited as mlflow server limits them (depth 10, 1,000 selections,
//! 10 root fields and 10 aliases per level, the last two from
//! `MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS` / `_MAX_ALIASES`), and resolved over the tracking
//! and registry services, so a GraphQL answer holds what the REST API answers. 64-bit integers
//! are strings (MLflow's `LongString`), absent fields take their protobuf defaults as there,
//! and a metric value that is NaN or infinite is `null` without an error. One operation per
//! request: a batch (a JSON array) is refused with 400.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Selection, SelectionSet, TypeCondition,
    Value as GqlValue,
};
use serde_json::{Map, Value, json};

use crate::service::RegistryService;

/// Most nested levels of a query, as mlflow server allows.
const MAX_DEPTH: usize = 10;
/// Most field selections in one query, as mlflow server allows.
const MAX_SELECTIONS: usize = 1000;
/// Largest query document taken.
const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Where a run's `experiment` is put once fetched (not a REST key: it cannot clash).
const EXT_EXPERIMENT: &str = " experiment";
/// Where a run's `modelVersions` are put once fetched.
const EXT_VERSIONS: &str = " model_versions";

/// What a schema field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    /// A 64-bit integer, sent as a string (MLflow's `LongString`).
    Long,
    Float,
    Bool,
    Enum,
    StrList,
    Obj(&'static str),
    ObjList(&'static str),
}

/// A schema field: its GraphQL name, the key it has in the REST JSON, and its kind.
type FieldDef = (&'static str, &'static str, Kind);

use Kind::*;

/// The object types of MLflow's GraphQL schema that loopml serves.
fn fields_of(type_name: &str) -> Option<&'static [FieldDef]> {
    Some(match type_name {
        "Query" => &[
            ("test", "test", Obj("Test")),
            (
                "mlflowGetExperiment",
                "",
                Obj("MlflowGetExperimentResponse"),
            ),
            ("mlflowGetRun", "", Obj("MlflowGetRunResponse")),
            ("mlflowSearchRuns", "", Obj("MlflowSearchRunsResponse")),
            (
                "mlflowListArtifacts",
                "",
                Obj("MlflowListArtifactsResponse"),
            ),
            (
                "mlflowGetMetricHistoryBulkInterval",
                "",
                Obj("MlflowGetMetricHistoryBulkIntervalResponse"),
            ),
            (
                "mlflowSearchModelVersions",
                "",
                Obj("MlflowSearchModelVersionsResponse"),
            ),
        ],
        "Mutation" => &[
            ("testMutation", "", Obj("TestMutation")),
            ("mlflowSearchRuns", "", Obj("MlflowSearchRunsResponse")),
            (
                "mlflowSearchDatasets",
                "",
                Obj("MlflowSearchDatasetsResponse"),
            ),
        ],
        "Test" | "TestMutation" => &[("output", "output", Str)],
        "ApiError" => &[
            ("code", "code", Str),
            ("message", "message", Str),
            ("helpUrl", "help_url", Str),
            ("traceId", "trace_id", Str),
            ("errorDetails", "error_details", ObjList("ErrorDetail")),
        ],
        "ErrorDetail" => &[("field", "field", Str), ("message", "message", Str)],
        "MlflowGetExperimentResponse" => &[
            ("experiment", "experiment", Obj("MlflowExperiment")),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowExperiment" => &[
            ("experimentId", "experiment_id", Str),
            ("name", "name", Str),
            ("artifactLocation", "artifact_location", Str),
            ("lifecycleStage", "lifecycle_stage", Str),
            ("lastUpdateTime", "last_update_time", Long),
            ("creationTime", "creation_time", Long),
            ("tags", "tags", ObjList("MlflowExperimentTag")),
            (
                "effectiveTraceArchivalRetention",
                "effective_trace_archival_retention",
                Str,
            ),
            ("workspace", "workspace", Str),
        ],
        "MlflowExperimentTag"
        | "MlflowRunTag"
        | "MlflowParam"
        | "MlflowInputTag"
        | "MlflowModelVersionTag" => &[("key", "key", Str), ("value", "value", Str)],
        "MlflowGetRunResponse" => &[
            ("run", "run", Obj("MlflowRunExtension")),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowSearchRunsResponse" => &[
            ("runs", "runs", ObjList("MlflowRunExtension")),
            ("nextPageToken", "next_page_token", Str),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowRunExtension" => &[
            ("info", "info", Obj("MlflowRunInfo")),
            ("data", "data", Obj("MlflowRunData")),
            ("inputs", "inputs", Obj("MlflowRunInputs")),
            ("outputs", "outputs", Obj("MlflowRunOutputs")),
            ("experiment", EXT_EXPERIMENT, Obj("MlflowExperiment")),
            ("modelVersions", EXT_VERSIONS, ObjList("MlflowModelVersion")),
        ],
        "MlflowRunInfo" => &[
            ("runId", "run_id", Str),
            ("runUuid", "run_uuid", Str),
            ("runName", "run_name", Str),
            ("experimentId", "experiment_id", Str),
            ("userId", "user_id", Str),
            ("status", "status", Enum),
            ("startTime", "start_time", Long),
            ("endTime", "end_time", Long),
            ("artifactUri", "artifact_uri", Str),
            ("lifecycleStage", "lifecycle_stage", Str),
        ],
        "MlflowRunData" => &[
            ("metrics", "metrics", ObjList("MlflowMetricExtension")),
            ("params", "params", ObjList("MlflowParam")),
            ("tags", "tags", ObjList("MlflowRunTag")),
        ],
        "MlflowMetricExtension" | "MlflowModelMetric" => &[
            ("key", "key", Str),
            ("value", "value", Float),
            ("timestamp", "timestamp", Long),
            ("step", "step", Long),
            ("datasetName", "dataset_name", Str),
            ("datasetDigest", "dataset_digest", Str),
            ("modelId", "model_id", Str),
            ("runId", "run_id", Str),
        ],
        "MlflowRunInputs" => &[
            (
                "datasetInputs",
                "dataset_inputs",
                ObjList("MlflowDatasetInput"),
            ),
            ("modelInputs", "model_inputs", ObjList("MlflowModelInput")),
        ],
        "MlflowDatasetInput" => &[
            ("tags", "tags", ObjList("MlflowInputTag")),
            ("dataset", "dataset", Obj("MlflowDataset")),
        ],
        "MlflowDataset" => &[
            ("name", "name", Str),
            ("digest", "digest", Str),
            ("sourceType", "source_type", Str),
            ("source", "source", Str),
            ("schema", "schema", Str),
            ("profile", "profile", Str),
        ],
        "MlflowModelInput" => &[("modelId", "model_id", Str)],
        "MlflowRunOutputs" => &[(
            "modelOutputs",
            "model_outputs",
            ObjList("MlflowModelOutput"),
        )],
        "MlflowModelOutput" => &[("modelId", "model_id", Str), ("step", "step", Long)],
        "MlflowListArtifactsResponse" => &[
            ("rootUri", "root_uri", Str),
            ("files", "files", ObjList("MlflowFileInfo")),
            ("nextPageToken", "next_page_token", Str),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowFileInfo" => &[
            ("path", "path", Str),
            ("isDir", "is_dir", Bool),
            ("fileSize", "file_size", Long),
        ],
        "MlflowGetMetricHistoryBulkIntervalResponse" => &[
            ("metrics", "metrics", ObjList("MlflowMetricWithRunId")),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowMetricWithRunId" => &[
            ("key", "key", Str),
            ("value", "value", Float),
            ("timestamp", "timestamp", Long),
            ("step", "step", Long),
            ("runId", "run_id", Str),
        ],
        "MlflowSearchModelVersionsResponse" => &[
            (
                "modelVersions",
                "model_versions",
                ObjList("MlflowModelVersion"),
            ),
            ("nextPageToken", "next_page_token", Str),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowModelVersion" => &[
            ("name", "name", Str),
            ("version", "version", Str),
            ("creationTimestamp", "creation_timestamp", Long),
            ("lastUpdatedTimestamp", "last_updated_timestamp", Long),
            ("userId", "user_id", Str),
            ("currentStage", "current_stage", Str),
            ("description", "description", Str),
            ("source", "source", Str),
            ("runId", "run_id", Str),
            ("status", "status", Enum),
            ("statusMessage", "status_message", Str),
            ("tags", "tags", ObjList("MlflowModelVersionTag")),
            ("runLink", "run_link", Str),
            ("aliases", "aliases", StrList),
            ("modelId", "model_id", Str),
            ("modelParams", "model_params", ObjList("MlflowModelParam")),
            (
                "modelMetrics",
                "model_metrics",
                ObjList("MlflowModelMetric"),
            ),
            (
                "deploymentJobState",
                "deployment_job_state",
                Obj("MlflowModelVersionDeploymentJobState"),
            ),
        ],
        "MlflowModelParam" => &[("name", "name", Str), ("value", "value", Str)],
        "MlflowModelVersionDeploymentJobState" => &[
            ("jobId", "job_id", Str),
            ("runId", "run_id", Str),
            ("jobState", "job_state", Enum),
            ("runState", "run_state", Enum),
            ("currentTaskName", "current_task_name", Str),
        ],
        "MlflowSearchDatasetsResponse" => &[
            (
                "datasetSummaries",
                "dataset_summaries",
                ObjList("MlflowDatasetSummary"),
            ),
            ("apiError", "apiError", Obj("ApiError")),
        ],
        "MlflowDatasetSummary" => &[
            ("experimentId", "experiment_id", Str),
            ("name", "name", Str),
            ("digest", "digest", Str),
            ("context", "context", Str),
        ],
        _ => return None,
    })
}

fn field_def(type_name: &str, field: &str) -> Option<FieldDef> {
    fields_of(type_name)?
        .iter()
        .find(|(name, _, _)| *name == field)
        .copied()
}

/// A request or document error: the whole answer is `{"data": null, "errors": [message]}`.
#[derive(Debug)]
struct DocError(String);

type Doc = Document<'static, String>;
type Sel = SelectionSet<'static, String>;
type Fld = Field<'static, String>;
type Fragments<'d> = HashMap<&'d str, &'d Sel>;

/// The fields a selection set selects on `type_name`, fragments spread and inline fragments
/// of this type merged in, in document order.
fn collect<'d>(
    set: &'d Sel,
    type_name: &str,
    fragments: &Fragments<'d>,
    seen: &mut HashSet<&'d str>,
    out: &mut Vec<&'d Fld>,
) {
    for item in &set.items {
        match item {
            Selection::Field(f) => out.push(f),
            Selection::InlineFragment(i) => {
                let applies = match &i.type_condition {
                    Some(TypeCondition::On(t)) => t == type_name,
                    None => true,
                };
                if applies {
                    collect(&i.selection_set, type_name, fragments, seen, out);
                }
            }
            Selection::FragmentSpread(s) => {
                if seen.insert(s.fragment_name.as_str())
                    && let Some(frag) = fragments.get(s.fragment_name.as_str())
                {
                    collect(frag, type_name, fragments, seen, out);
                }
            }
        }
    }
}

/// The limits and the schema, checked before anything runs.
struct Checker<'d> {
    fragments: &'d Fragments<'d>,
    selections: usize,
    max_aliases: usize,
}

impl<'d> Checker<'d> {
    fn check(&mut self, set: &'d Sel, type_name: &str, depth: usize) -> Result<(), DocError> {
        if depth > MAX_DEPTH {
            return Err(DocError(format!(
                "Query exceeds maximum depth of {MAX_DEPTH}"
            )));
        }
        let mut fields = Vec::new();
        collect(
            set,
            type_name,
            self.fragments,
            &mut HashSet::new(),
            &mut fields,
        );
        let aliases = fields.iter().filter(|f| f.alias.is_some()).count();
        if aliases > self.max_aliases {
            return Err(DocError(limit_message("aliases", aliases)));
        }
        for f in fields {
            self.selections += 1;
            if self.selections > MAX_SELECTIONS {
                return Err(DocError(format!(
                    "Query exceeds maximum total selections of {MAX_SELECTIONS}"
                )));
            }
            if f.name == "__typename" {
                continue;
            }
            let Some((_, _, kind)) = field_def(type_name, &f.name) else {
                return Err(DocError(format!(
                    "Cannot query field '{}' on type '{type_name}'.",
                    f.name
                )));
            };
            match kind {
                Obj(t) | ObjList(t) => {
                    if f.selection_set.items.is_empty() {
                        return Err(DocError(format!(
                            "Field '{}' of type '{t}' must have a selection of subfields.",
                            f.name
                        )));
                    }
                    self.check(&f.selection_set, t, depth + 1)?;
                }
                _ if !f.selection_set.items.is_empty() => {
                    return Err(DocError(format!(
                        "Field '{}' must not have a selection since its type has no subfields.",
                        f.name
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn limit_env(var: &str) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10)
}

fn limit_message(what: &str, got: usize) -> String {
    let var = if what == "aliases" {
        "MLFLOW_SERVER_GRAPHQL_MAX_ALIASES"
    } else {
        "MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS"
    };
    format!(
        "GraphQL queries should have at most {} {what}, got {got} {what}. To increase the \
         limit, set the {var} environment variable.",
        limit_env(var)
    )
}

/// A GraphQL argument value as JSON, variables substituted; input-object keys become the REST
/// API's snake_case names.
fn to_json(v: &GqlValue<'static, String>, vars: &Map<String, Value>) -> Value {
    match v {
        GqlValue::Variable(name) => vars.get(name).cloned().unwrap_or(Value::Null),
        GqlValue::Int(n) => n.as_i64().map_or(Value::Null, Value::from),
        GqlValue::Float(f) => json!(f),
        GqlValue::String(s) => Value::String(s.clone()),
        GqlValue::Boolean(b) => Value::Bool(*b),
        GqlValue::Null => Value::Null,
        GqlValue::Enum(e) => Value::String(e.clone()),
        GqlValue::List(items) => Value::Array(items.iter().map(|i| to_json(i, vars)).collect()),
        GqlValue::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (snake_case(k), to_json(v, vars)))
                .collect(),
        ),
    }
}

/// Variables given as JSON objects get the same snake_case keys as literal input objects.
fn snake_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (snake_case(&k), snake_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The `input` argument of a root field, as a REST-style JSON object.
fn input_of(f: &Fld, vars: &Map<String, Value>) -> Map<String, Value> {
    f.arguments
        .iter()
        .find(|(name, _)| name == "input")
        .map(|(_, v)| match snake_keys(to_json(v, vars)) {
            Value::Object(m) => m,
            _ => Map::new(),
        })
        .unwrap_or_default()
}

fn text(input: &Map<String, Value>, key: &str) -> Option<String> {
    match input.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(input: &Map<String, Value>, key: &str) -> Option<i64> {
    match input.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn texts(input: &Map<String, Value>, key: &str) -> Vec<String> {
    match input.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn encode<T: serde::Serialize>(v: T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Runs one operation: resolves root fields over the services and shapes the answers.
struct Exec<'d> {
    registry: &'d RegistryService,
    fragments: Fragments<'d>,
    vars: Map<String, Value>,
    errors: Vec<String>,
}

impl<'d> Exec<'d> {
    async fn root(&mut self, f: &'d Fld, type_name: &str) -> Value {
        let input = input_of(f, &self.vars);
        let (_, _, kind) = field_def(type_name, &f.name).unwrap_or(("", "", Str));
        let resolved = match f.name.as_str() {
            "test" | "testMutation" => Ok(json!({
                "output": f.arguments.iter().find(|(n, _)| n == "inputString")
                    .map(|(_, v)| to_json(v, &self.vars)).unwrap_or(Value::Null)
            })),
            "mlflowGetExperiment" => self.get_experiment(&input).await,
            "mlflowGetRun" => self.get_run(&input).await,
            "mlflowSearchRuns" => self.search_runs(&input).await,
            "mlflowListArtifacts" => self.list_artifacts(&input).await,
            "mlflowGetMetricHistoryBulkInterval" => self.history(&input).await,
            "mlflowSearchModelVersions" => self.search_versions(&input).await,
            "mlflowSearchDatasets" => self.search_datasets(&input).await,
            _ => Ok(Value::Null),
        };
        match resolved {
            Ok(mut v) => match kind {
                Obj(t) => {
                    self.extend_runs(&mut v, f, t).await;
                    shape(&v, t, &f.selection_set, &self.fragments)
                }
                _ => v,
            },
            Err(message) => {
                self.errors.push(message);
                Value::Null
            }
        }
    }

    async fn get_experiment(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let id = text(input, "experiment_id").unwrap_or_default();
        let id =
            loopml_tracking::validation::parse_experiment_id(&id).map_err(|e| e.to_string())?;
        let e = self
            .registry
            .tracking()
            .get_experiment(id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({ "experiment": encode(loopml_tracking::api::ExperimentJson::from(&e))? }))
    }

    async fn get_run(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let id = text(input, "run_id")
            .filter(|r| !r.is_empty())
            .or_else(|| text(input, "run_uuid"))
            .unwrap_or_default();
        let run = self
            .registry
            .tracking()
            .get_run(id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({ "run": encode(loopml_tracking::api::RunJson::from(&run))? }))
    }

    async fn search_runs(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let view = loopml_tracking::parse_view_type(text(input, "run_view_type").as_deref())
            .map_err(|e| e.to_string())?;
        let page = self
            .registry
            .tracking()
            .search_runs(
                texts(input, "experiment_ids"),
                text(input, "filter"),
                view,
                int(input, "max_results"),
                texts(input, "order_by"),
                text(input, "page_token"),
            )
            .await
            .map_err(|e| e.to_string())?;
        let runs: Vec<Value> = page
            .items
            .iter()
            .map(|r| encode(loopml_tracking::api::RunJson::from(r)))
            .collect::<Result<_, _>>()?;
        Ok(json!({ "runs": runs, "next_page_token": page.next_page_token }))
    }

    async fn list_artifacts(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let id = text(input, "run_id")
            .filter(|r| !r.is_empty())
            .or_else(|| text(input, "run_uuid"))
            .unwrap_or_default();
        loopml_tracking::routes::run_artifact_listing(
            self.registry.tracking(),
            id,
            text(input, "path").as_deref(),
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn history(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let points = self
            .registry
            .tracking()
            .metric_history_bulk_interval(
                texts(input, "run_ids"),
                text(input, "metric_key"),
                int(input, "start_step"),
                int(input, "end_step"),
                int(input, "max_results"),
            )
            .await
            .map_err(|e| e.to_string())?;
        let metrics: Vec<Value> = points
            .iter()
            .map(|(id, m)| encode(loopml_tracking::api::RunMetricJson::new(id, m)))
            .collect::<Result<_, _>>()?;
        Ok(json!({ "metrics": metrics }))
    }

    async fn search_versions(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let page = self
            .registry
            .search_model_versions(
                text(input, "filter"),
                int(input, "max_results"),
                texts(input, "order_by"),
                text(input, "page_token"),
            )
            .await
            .map_err(|e| e.to_string())?;
        let versions: Vec<Value> = page
            .items
            .iter()
            .map(|v| encode(crate::api::ModelVersionJson::from(v)))
            .collect::<Result<_, _>>()?;
        Ok(json!({ "model_versions": versions, "next_page_token": page.next_page_token }))
    }

    async fn search_datasets(&self, input: &Map<String, Value>) -> Result<Value, String> {
        let found = self
            .registry
            .tracking()
            .search_dataset_summaries(texts(input, "experiment_ids"))
            .await
            .map_err(|e| e.to_string())?;
        let items: Vec<Value> = found
            .iter()
            .map(|d| {
                json!({
                    "experiment_id": d.experiment_id.to_string(),
                    "name": d.name,
                    "digest": d.digest,
                    "context": d.context,
                })
            })
            .collect();
        Ok(json!({ "dataset_summaries": items }))
    }

    /// Fetches `experiment` and `modelVersions` for the runs of a resolved root value when
    /// the query selects them, so that shaping needs no further calls.
    async fn extend_runs(&mut self, v: &mut Value, f: &'d Fld, type_name: &str) {
        let (experiment, versions) =
            wants_run_extensions(&f.selection_set, type_name, &self.fragments);
        if !experiment && !versions {
            return;
        }
        let runs: Vec<&mut Value> = match v {
            Value::Object(m) => match (m.get_mut("run"), None::<()>) {
                (Some(run), _) => vec![run],
                (None, _) => match m.get_mut("runs") {
                    Some(Value::Array(items)) => items.iter_mut().collect(),
                    _ => Vec::new(),
                },
            },
            _ => Vec::new(),
        };
        let mut experiments: HashMap<String, Value> = HashMap::new();
        for run in runs {
            let info = run.get("info").cloned().unwrap_or(Value::Null);
            if experiment {
                let id = info
                    .get("experiment_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let e = match experiments.get(&id) {
                    Some(e) => e.clone(),
                    None => {
                        let mut input = Map::new();
                        input.insert("experiment_id".into(), Value::String(id.clone()));
                        let e = match self.get_experiment(&input).await {
                            Ok(e) => e.get("experiment").cloned().unwrap_or(Value::Null),
                            Err(message) => {
                                self.errors.push(message);
                                Value::Null
                            }
                        };
                        experiments.insert(id, e.clone());
                        e
                    }
                };
                if let Value::Object(m) = run {
                    m.insert(EXT_EXPERIMENT.into(), e);
                }
            }
            if versions {
                let run_id = info
                    .get("run_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut input = Map::new();
                input.insert(
                    "filter".into(),
                    Value::String(format!("run_id = '{}'", run_id.replace('\'', ""))),
                );
                let mv = match self.search_versions(&input).await {
                    Ok(v) => v.get("model_versions").cloned().unwrap_or(Value::Null),
                    Err(message) => {
                        self.errors.push(message);
                        Value::Null
                    }
                };
                if let Value::Object(m) = run {
                    m.insert(EXT_VERSIONS.into(), mv);
                }
            }
        }
    }
}

/// Whether a selection reaches a run's `experiment` / `modelVersions` (through any path).
fn wants_run_extensions(set: &Sel, type_name: &str, fragments: &Fragments<'_>) -> (bool, bool) {
    let mut fields = Vec::new();
    collect(set, type_name, fragments, &mut HashSet::new(), &mut fields);
    let mut found = (false, false);
    for f in fields {
        if type_name == "MlflowRunExtension" {
            found.0 |= f.name == "experiment";
            found.1 |= f.name == "modelVersions";
        }
        if let Some((_, _, Obj(t) | ObjList(t))) = field_def(type_name, &f.name) {
            let inner = wants_run_extensions(&f.selection_set, t, fragments);
            found = (found.0 || inner.0, found.1 || inner.1);
        }
    }
    found
}

/// The fields of `set` picked from `v` (REST JSON of a `type_name`), as GraphQL answers them:
/// aliases, LongStrings, protobuf defaults.
fn shape(v: &Value, type_name: &str, set: &Sel, fragments: &Fragments<'_>) -> Value {
    let mut fields = Vec::new();
    collect(set, type_name, fragments, &mut HashSet::new(), &mut fields);
    let mut out = Map::new();
    for f in fields {
        let name = f.alias.as_deref().unwrap_or(&f.name).to_string();
        if f.name == "__typename" {
            out.insert(name, Value::String(type_name.to_string()));
            continue;
        }
        let Some((_, key, kind)) = field_def(type_name, &f.name) else {
            continue;
        };
        let raw = v.get(key).unwrap_or(&Value::Null);
        out.insert(name, shape_value(raw, kind, &f.selection_set, fragments));
    }
    Value::Object(out)
}

fn shape_value(raw: &Value, kind: Kind, set: &Sel, fragments: &Fragments<'_>) -> Value {
    match kind {
        Str => match raw {
            Value::Null => json!(""),
            Value::String(_) => raw.clone(),
            other => Value::String(other.to_string()),
        },
        Long => match raw {
            Value::Null => json!("0"),
            Value::Number(n) => Value::String(n.to_string()),
            Value::String(_) => raw.clone(),
            _ => Value::Null,
        },
        // NaN and the infinities travel as text in MLflow's JSON; GraphQL's Float cannot hold
        // them, so they are null (mlflow server also adds an error for the chart query).
        Float => match raw {
            Value::Null => json!(0.0),
            Value::Number(n) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .map_or(Value::Null, |x| json!(x)),
            _ => Value::Null,
        },
        Bool => match raw {
            Value::Null => json!(false),
            other => other.clone(),
        },
        Enum => raw.clone(),
        StrList => match raw {
            Value::Array(_) => raw.clone(),
            _ => json!([]),
        },
        Obj(t) => {
            if t == "ApiError" && raw.is_null() {
                return Value::Null;
            }
            let empty = Value::Object(Map::new());
            let src = if raw.is_object() { raw } else { &empty };
            shape(src, t, set, fragments)
        }
        ObjList(t) => match raw {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| shape(item, t, set, fragments))
                    .collect(),
            ),
            _ => json!([]),
        },
    }
}

/// One GraphQL request: `{query, variables?, operationName?}`.
async fn execute(registry: &RegistryService, request: &Value) -> Result<Value, DocError> {
    let query = request
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| DocError("Must provide query string.".into()))?;
    if query.len() > MAX_QUERY_BYTES {
        return Err(DocError(format!(
            "The query is larger than {MAX_QUERY_BYTES} bytes."
        )));
    }
    let vars = match request.get("variables") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err(DocError("Variables must be provided as an object.".into())),
    };
    let op_name = request.get("operationName").and_then(Value::as_str);
    let doc: Doc = graphql_parser::query::parse_query::<String>(query)
        .map_err(|e| DocError(format!("Syntax Error: {}", e.to_string().trim())))?
        .into_static();
    let mut fragments: Fragments<'_> = HashMap::new();
    let mut ops = Vec::new();
    for d in &doc.definitions {
        match d {
            Definition::Fragment(f) => {
                fragments.insert(f.name.as_str(), &f.selection_set);
            }
            Definition::Operation(o) => ops.push(o),
        }
    }
    let (set, root_type, var_defs) = {
        let pick = |o: &&OperationDefinition<'static, String>| -> Option<String> {
            match o {
                OperationDefinition::Query(q) => q.name.clone(),
                OperationDefinition::Mutation(m) => m.name.clone(),
                OperationDefinition::Subscription(s) => s.name.clone(),
                OperationDefinition::SelectionSet(_) => None,
            }
        };
        let op = match op_name {
            Some(n) => ops
                .iter()
                .find(|o| pick(o).as_deref() == Some(n))
                .ok_or_else(|| DocError(format!("Unknown operation named '{n}'.")))?,
            None if ops.len() == 1 => &ops[0],
            None if ops.is_empty() => return Err(DocError("Must provide an operation.".into())),
            None => {
                return Err(DocError(
                    "Must provide operation name if query contains multiple operations.".into(),
                ));
            }
        };
        match op {
            OperationDefinition::Query(q) => {
                (&q.selection_set, "Query", &q.variable_definitions[..])
            }
            OperationDefinition::Mutation(m) => {
                (&m.selection_set, "Mutation", &m.variable_definitions[..])
            }
            OperationDefinition::SelectionSet(s) => (s, "Query", &[][..]),
            OperationDefinition::Subscription(_) => {
                return Err(DocError(
                    "Schema is not configured to execute subscription operation.".into(),
                ));
            }
        }
    };
    let mut vars = vars;
    for d in var_defs {
        if !vars.contains_key(&d.name)
            && let Some(default) = &d.default_value
        {
            vars.insert(d.name.clone(), to_json(default, &Map::new()));
        }
    }
    let mut roots = Vec::new();
    collect(set, root_type, &fragments, &mut HashSet::new(), &mut roots);
    let max_roots = limit_env("MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS");
    if roots.len() > max_roots {
        return Err(DocError(limit_message("root fields", roots.len())));
    }
    Checker {
        fragments: &fragments,
        selections: 0,
        max_aliases: limit_env("MLFLOW_SERVER_GRAPHQL_MAX_ALIASES"),
    }
    .check(set, root_type, 1)?;
    let mut exec = Exec {
        registry,
        fragments,
        vars,
        errors: Vec::new(),
    };
    let mut data = Map::new();
    for f in roots {
        let key = f.alias.as_deref().unwrap_or(&f.name).to_string();
        let v = if f.name == "__typename" {
            Value::String(root_type.to_string())
        } else {
            exec.root(f, root_type).await
        };
        data.insert(key, v);
    }
    let errors = if exec.errors.is_empty() {
        Value::Null
    } else {
        json!(exec.errors)
    };
    Ok(json!({ "data": data, "errors": errors }))
}

fn answer(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refused(status: StatusCode, message: &str) -> Response {
    answer(status, &json!({ "data": null, "errors": [message] }))
}

async fn run(registry: &RegistryService, request: Value, allow_mutation: bool) -> Response {
    if request.is_array() {
        return refused(
            StatusCode::BAD_REQUEST,
            "GraphQL batching is not supported: send one operation per request.",
        );
    }
    if !request.is_object() {
        return refused(
            StatusCode::BAD_REQUEST,
            "The request must be a JSON object.",
        );
    }
    if !allow_mutation
        && request
            .get("query")
            .and_then(Value::as_str)
            .is_some_and(|q| q.trim_start().starts_with("mutation"))
    {
        return refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "Mutations must be sent with POST.",
        );
    }
    match execute(registry, &request).await {
        Ok(body) => answer(StatusCode::OK, &body),
        Err(DocError(message)) if message.starts_with("Syntax Error") => {
            refused(StatusCode::BAD_REQUEST, &message)
        }
        Err(DocError(message)) => refused(StatusCode::OK, &message),
    }
}

/// `POST /graphql` with a JSON body.
pub async fn post_graphql(State(s): State<RegistryService>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(request) => run(&s, request, true).await,
        Err(e) => refused(
            StatusCode::BAD_REQUEST,
            &format!("The body is not JSON: {e}"),
        ),
    }
}

/// `GET /graphql?query=…&variables=…&operationName=…` (queries only).
pub async fn get_graphql(State(s): State<RegistryService>, RawQuery(q): RawQuery) -> Response {
    let mut request = Map::new();
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        let value = if k == "variables" {
            serde_json::from_str(&v).unwrap_or(Value::Null)
        } else {
            Value::String(v)
        };
        request.insert(k, value);
    }
    run(&s, Value::Object(request), false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_type_named_in_the_schema_is_defined() {
        let mut todo = vec!["Query", "Mutation"];
        let mut seen = HashSet::new();
        while let Some(t) = todo.pop() {
            if !seen.insert(t) {
                continue;
            }
            let fields = fields_of(t).unwrap_or_else(|| panic!("type {t} is not defined"));
            for (_, _, kind) in fields {
                if let Obj(n) | ObjList(n) = kind {
                    todo.push(n);
                }
            }
        }
        assert!(seen.len() > 30);
    }

    #[test]
    fn names_become_the_rest_api_keys() {
        assert_eq!(snake_case("experimentIds"), "experiment_ids");
        assert_eq!(snake_case("runId"), "run_id");
        assert_eq!(snake_case("metricKey"), "metric_key");
    }
}
