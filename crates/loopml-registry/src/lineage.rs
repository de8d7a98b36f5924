//! Lineage of a model version: dataset inputs → training run → logged model → model version →
//! aliases and stage (and, once serving exists, the deployments that serve it). Assembled from
//! the registry and, through the tracking service, from runs, logged models and artifacts.

use std::collections::BTreeMap;

use loopml_tracking::model::{KeyValue, Run};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::ModelVersion;
use crate::service::RegistryService;

/// A stored dataset version a logged dataset was linked to: the bytes the run trained on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDataset {
    /// `name@version`.
    pub reference: String,
    /// sha256 of the stored bytes.
    pub digest: String,
    /// `digest` (the logged digest is the stored sha256 or a prefix of it of at least 12
    /// digits) or `source` (the logged source names the stored version).
    pub matched_by: String,
    /// Rows.
    pub rows: i64,
    /// Where to download the bytes (a path on this server).
    pub content_path: String,
}

/// Finds the stored dataset version behind a dataset a run logged with `mlflow.log_input`.
pub trait DatasetLinker: Send + Sync {
    /// The stored version matching a logged dataset's name, digest and source, if any.
    fn link<'a>(
        &'a self,
        name: &'a str,
        digest: &'a str,
        source: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<StoredDataset>>;
}

/// Finds where a model version is served (the serving layer, wired in by the binary).
pub trait DeploymentFinder: Send + Sync {
    /// Deployments and endpoints serving `model` version `version`, one JSON object each
    /// (`deployment`, `variant`, `strategy`, `uri`, `endpoint`).
    fn serving(&self, model: &str, version: i64) -> Vec<serde_json::Value>;
}

/// One dataset the training run consumed.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetLineage {
    /// Dataset name.
    pub name: String,
    /// Content digest.
    pub digest: String,
    /// Source kind (e.g. `local`, `s3`, `code`).
    pub source_type: String,
    /// Source description (as logged).
    pub source: String,
    /// Role in the run (`mlflow.data.context`: training, validation, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Schema as logged (JSON text), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Profile as logged (JSON text), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<serde_json::Value>,
    /// The stored dataset version holding these bytes, when one matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredDataset>,
}

/// The training run.
#[derive(Debug, Clone, Serialize)]
pub struct RunLineage {
    /// Run id.
    pub run_id: String,
    /// Run name.
    pub run_name: String,
    /// Experiment id.
    pub experiment_id: String,
    /// Experiment name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment_name: Option<String>,
    /// User who ran it.
    pub user: String,
    /// Final status.
    pub status: String,
    /// Start, ms.
    pub start_time: i64,
    /// End, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// Git commit of the training code (`mlflow.source.git.commit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Entry point (`mlflow.source.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    /// Parent run, for nested runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// Params.
    pub params: BTreeMap<String, String>,
    /// Latest value of each metric.
    pub metrics: BTreeMap<String, f64>,
    /// User tags (system `mlflow.*` tags left out).
    pub tags: BTreeMap<String, String>,
}

/// The logged model (MLflow 3) the version was registered from.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedModelLineage {
    /// `m-…` id.
    pub model_id: String,
    /// Name given at `log_model`.
    pub name: String,
    /// Artifact location.
    pub artifact_uri: String,
    /// Status.
    pub status: String,
    /// Created, ms.
    pub creation_timestamp: i64,
    /// Metrics attached to the model (e.g. from `mlflow.evaluate`).
    pub metrics: BTreeMap<String, f64>,
}

/// The input/output signature and flavors read from the version's `MLmodel` file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelFileInfo {
    /// Flavors the model was saved with (`python_function`, `sklearn`, `onnx`, …).
    pub flavors: Vec<String>,
    /// Input schema (parsed MLflow column/tensor spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<serde_json::Value>,
    /// Output schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
    /// Inference params schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// MLflow version that wrote the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlflow_version: Option<String>,
    /// Size of the model files, bytes, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_size_bytes: Option<u64>,
}

/// One step in a version's history (from the change feed).
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// Feed sequence number.
    pub seq: i64,
    /// When, ms.
    pub timestamp: i64,
    /// What happened (`model_version.created`, `model_version_alias.created`, …).
    pub event: String,
    /// Details.
    pub data: serde_json::Value,
}

/// The registered model's side of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredModelLineage {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// The whole chain for one model version.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    /// The URI asked for.
    pub model_uri: String,
    /// The registered model.
    pub registered_model: RegisteredModelLineage,
    /// The version the URI resolved to.
    pub model_version: VersionLineage,
    /// The logged model, when the version came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logged_model: Option<LoggedModelLineage>,
    /// The training run, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunLineage>,
    /// Datasets the run consumed.
    pub datasets: Vec<DatasetLineage>,
    /// Signature and flavors, when the `MLmodel` file is readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_file: Option<ModelFileInfo>,
    /// Deployments and endpoints serving this version now.
    pub deployments: Vec<serde_json::Value>,
    /// What happened to this version, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Gaps in the chain a reader should know about.
    pub warnings: Vec<String>,
}

/// The model version's own fields in a lineage.
#[derive(Debug, Clone, Serialize)]
pub struct VersionLineage {
    /// Version number.
    pub version: i64,
    /// Stage.
    pub stage: String,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
    /// Source as registered.
    pub source: String,
    /// Where the artifacts are.
    pub storage_location: String,
    /// Status.
    pub status: String,
    /// Created, ms.
    pub creation_timestamp: i64,
    /// Last updated, ms.
    pub last_updated_timestamp: i64,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

fn kv_map(items: &[KeyValue]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

fn tag<'a>(run: &'a Run, key: &str) -> Option<&'a str> {
    run.tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

fn json_text(raw: Option<&str>) -> Option<serde_json::Value> {
    let raw = raw?.trim();
    if raw.is_empty() {
        return None;
    }
    Some(serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.into())))
}

#[derive(Deserialize)]
struct MlModelYaml {
    #[serde(default)]
    flavors: BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    signature: Option<SignatureYaml>,
    #[serde(default)]
    mlflow_version: Option<String>,
    #[serde(default)]
    model_size_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct SignatureYaml {
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    outputs: Option<String>,
    #[serde(default)]
    params: Option<String>,
}

/// Parses an `MLmodel` file's flavors and signature.
pub fn parse_mlmodel(text: &str) -> std::result::Result<ModelFileInfo, String> {
    let y: MlModelYaml = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let sig = y.signature;
    Ok(ModelFileInfo {
        flavors: y.flavors.into_keys().collect(),
        inputs: sig.as_ref().and_then(|s| json_text(s.inputs.as_deref())),
        outputs: sig.as_ref().and_then(|s| json_text(s.outputs.as_deref())),
        params: sig.as_ref().and_then(|s| json_text(s.params.as_deref())),
        mlflow_version: y.mlflow_version,
        model_size_bytes: y.model_size_bytes,
    })
}

impl RegistryService {
    /// The folder of this server's artifact store that holds the files at a model version's
    /// storage location (`runs:/…`, `mlflow-artifacts:/…` or the server's artifact URIs); an
    /// error when they are stored elsewhere.
    pub async fn artifact_dir(
        &self,
        location: &str,
    ) -> std::result::Result<loopml_store::ArtifactPath, String> {
        let root = if let Some(rest) = location.strip_prefix("runs:/") {
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            let run = self
                .tracking()
                .get_run(run_id.to_string())
                .await
                .map_err(|e| e.to_string())?;
            format!("{}/{}", run.info.artifact_uri.trim_end_matches('/'), path)
        } else {
            location.to_string()
        };
        loopml_tracking::routes::proxied_artifact_path(&root).ok_or_else(|| {
            format!("the model's artifacts at {location} are not stored by this server")
        })
    }

    /// Reads `MLmodel` under a storage location this server holds (proxied artifacts).
    async fn read_mlmodel(&self, location: &str) -> std::result::Result<ModelFileInfo, String> {
        use futures::TryStreamExt;
        let dir = self.artifact_dir(location).await?;
        let file = loopml_store::ArtifactPath::parse("MLmodel").map_err(|e| e.to_string())?;
        let (size, stream) = self
            .tracking()
            .artifacts()
            .get(&dir.join(&file))
            .await
            .map_err(|e| format!("cannot read MLmodel: {e}"))?;
        if size > 4 * 1024 * 1024 {
            return Err(format!(
                "MLmodel is {size} bytes; refusing to parse more than 4 MiB"
            ));
        }
        let buf = stream
            .try_fold(
                Vec::with_capacity(size as usize),
                |mut buf, chunk| async move {
                    buf.extend_from_slice(&chunk);
                    Ok(buf)
                },
            )
            .await
            .map_err(|e| format!("cannot read MLmodel: {e}"))?;
        let text = String::from_utf8(buf).map_err(|_| "MLmodel is not UTF-8".to_string())?;
        parse_mlmodel(&text).map_err(|e| format!("cannot parse MLmodel: {e}"))
    }

    /// Builds the lineage of the version a `models:/…` URI resolves to.
    pub async fn lineage(&self, uri: &str) -> Result<Lineage> {
        let mv = self.resolve_uri(uri).await?;
        self.lineage_of(uri, mv).await
    }

    /// Builds the lineage of a given version.
    pub async fn lineage_of(&self, uri: &str, mv: ModelVersion) -> Result<Lineage> {
        let tracking = self.tracking();
        let rm = self.get_registered_model(mv.name.clone()).await?;
        let mut warnings = Vec::new();

        let logged_model = match &mv.model_id {
            Some(id) => match tracking.get_logged_model(id.clone(), true).await {
                Ok(lm) => Some(LoggedModelLineage {
                    model_id: lm.model_id.clone(),
                    name: lm.name.clone(),
                    artifact_uri: lm.artifact_uri.clone(),
                    status: lm.status.as_str().to_string(),
                    creation_timestamp: lm.creation_timestamp_ms,
                    metrics: lm
                        .metrics
                        .iter()
                        .map(|m| (m.metric.key.clone(), m.metric.value))
                        .collect(),
                }),
                Err(e) => {
                    warnings.push(format!("logged model {id} is not available: {e}"));
                    None
                }
            },
            None => None,
        };

        let mut datasets = Vec::new();
        let run = match &mv.run_id {
            Some(run_id) => match tracking.get_run(run_id.clone()).await {
                Ok(run) => {
                    let experiment_name = tracking
                        .get_experiment(run.info.experiment_id)
                        .await
                        .ok()
                        .map(|e| e.name);
                    for input in &run.dataset_inputs {
                        let d = &input.dataset;
                        let stored = match self.dataset_linker() {
                            Some(l) => {
                                let found = l.link(&d.name, &d.digest, &d.source).await;
                                if found.is_none() {
                                    warnings.push(format!(
                                        "dataset {} (digest {}) matches no stored dataset \
                                         version, so its bytes are not kept: add it with \
                                         `loopml data add` and log it with that digest",
                                        d.name, d.digest
                                    ));
                                }
                                found
                            }
                            None => None,
                        };
                        datasets.push(DatasetLineage {
                            stored,
                            name: d.name.clone(),
                            digest: d.digest.clone(),
                            source_type: d.source_type.clone(),
                            source: d.source.clone(),
                            context: input
                                .tags
                                .iter()
                                .find(|t| t.key == "mlflow.data.context")
                                .map(|t| t.value.clone()),
                            schema: json_text(d.schema.as_deref()),
                            profile: json_text(d.profile.as_deref()),
                        });
                    }
                    if datasets.is_empty() {
                        warnings.push(
                            "the training run logged no dataset inputs (mlflow.log_input), so \
                             the training data is not traceable"
                                .into(),
                        );
                    }
                    Some(RunLineage {
                        run_id: run.info.run_id.clone(),
                        run_name: run.info.run_name.clone(),
                        experiment_id: run.info.experiment_id.to_string(),
                        experiment_name,
                        user: run.info.user_id.clone(),
                        status: run.info.status.as_str().to_string(),
                        start_time: run.info.start_time,
                        end_time: run.info.end_time,
                        git_commit: tag(&run, "mlflow.source.git.commit").map(str::to_string),
                        source_name: tag(&run, "mlflow.source.name").map(str::to_string),
                        parent_run_id: tag(&run, "mlflow.parentRunId").map(str::to_string),
                        params: kv_map(&run.params),
                        metrics: run
                            .metrics
                            .iter()
                            .map(|m| (m.key.clone(), m.value))
                            .collect(),
                        tags: run
                            .tags
                            .iter()
                            .filter(|t| !t.key.starts_with("mlflow."))
                            .map(|t| (t.key.clone(), t.value.clone()))
                            .collect(),
                    })
                }
                Err(e) => {
                    warnings.push(format!("training run {run_id} is not available: {e}"));
                    None
                }
            },
            None => {
                warnings.push(
                    "the version was registered without a run, so its training is not traceable"
                        .into(),
                );
                None
            }
        };

        let model_file = match self.read_mlmodel(&mv.storage_location).await {
            Ok(info) => Some(info),
            Err(e) => {
                warnings.push(format!("no signature: {e}"));
                None
            }
        };

        let history = self
            .version_history(mv.name.clone(), mv.version)
            .await?
            .into_iter()
            .map(|e| HistoryEntry {
                seq: e.seq,
                timestamp: e.timestamp,
                event: e.event,
                data: e.data,
            })
            .collect();

        Ok(Lineage {
            model_uri: uri.to_string(),
            registered_model: RegisteredModelLineage {
                name: rm.name.clone(),
                description: rm.description.clone(),
                tags: kv_map(&rm.tags),
            },
            model_version: VersionLineage {
                version: mv.version,
                stage: mv.current_stage.as_str().to_string(),
                aliases: mv.aliases.clone(),
                source: mv.source.clone(),
                storage_location: mv.storage_location.clone(),
                status: mv.status.clone(),
                creation_timestamp: mv.creation_timestamp,
                last_updated_timestamp: mv.last_updated_timestamp,
                description: mv.description.clone(),
                tags: kv_map(&mv.tags),
            },
            logged_model,
            run,
            datasets,
            model_file,
            deployments: self
                .deployment_finder()
                .map(|f| f.serving(&rm.name, mv.version))
                .unwrap_or_default(),
            history,
            warnings,
        })
    }
}

/// Formats ms since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A run's params for the lineage text: on one line when they are short and single-line;
/// otherwise one per line, a multi-line value's lines aligned under its first.
fn params_text(params: &BTreeMap<String, String>) -> String {
    let one: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let joined = one.join(", ");
    if !joined.contains('\n') && joined.chars().count() <= 100 {
        return format!("   params  {joined}\n");
    }
    let width = params.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    let mut o = String::from("   params\n");
    for (k, v) in params {
        let v = short(v, 2000);
        let mut lines = v.lines();
        let first = lines.next().unwrap_or("");
        o.push_str(&format!("     {k:<width$} = {first}\n"));
        for more in lines {
            o.push_str(&format!("     {:<width$}   {more}\n", ""));
        }
    }
    o
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// A number for people: integers without decimals, others with at most six.
pub(crate) fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Lineage {
    /// A plain-text tree for terminals (what `loopml lineage` prints).
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let mv = &self.model_version;
        let aliases = if mv.aliases.is_empty() {
            "none".to_string()
        } else {
            mv.aliases.join(", ")
        };
        o.push_str(&format!(
            "{} → {} version {} (stage {}; aliases: {})\n",
            self.model_uri, self.registered_model.name, mv.version, mv.stage, aliases
        ));
        o.push_str("\ndatasets\n");
        if self.datasets.is_empty() {
            o.push_str("  (none logged)\n");
        }
        for d in &self.datasets {
            o.push_str(&format!(
                "  • {} digest {} [{}] {}{}\n",
                d.name,
                d.digest,
                d.source_type,
                short(&d.source, 80),
                d.context
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ));
            if let Some(s) = &d.stored {
                o.push_str(&format!(
                    "    stored as {} (sha256 {}…, {} rows; matched by {}): {}\n",
                    s.reference,
                    s.digest.get(..12).unwrap_or(&s.digest),
                    s.rows,
                    s.matched_by,
                    s.content_path
                ));
            }
        }
        o.push_str("\n└─ training run\n");
        match &self.run {
            Some(r) => {
                o.push_str(&format!(
                    "   {} \"{}\" in experiment {}{} by {}, {}\n",
                    r.run_id,
                    r.run_name,
                    r.experiment_id,
                    r.experiment_name
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    if r.user.is_empty() {
                        "unknown user"
                    } else {
                        &r.user
                    },
                    r.status
                ));
                o.push_str(&format!(
                    "   started {}{}\n",
                    format_time(r.start_time),
                    r.end_time
                        .map(|e| format!(", ended {}", format_time(e)))
                        .unwrap_or_default()
                ));
                if let Some(c) = &r.git_commit {
                    o.push_str(&format!("   git commit {c}\n"));
                }
                if let Some(s) = &r.source_name {
                    o.push_str(&format!("   code {s}\n"));
                }
                if !r.params.is_empty() {
                    o.push_str(&params_text(&r.params));
                }
                if !r.metrics.is_empty() {
                    let m: Vec<String> = r
                        .metrics
                        .iter()
                        .map(|(k, v)| format!("{k}={}", format_number(*v)))
                        .collect();
                    o.push_str(&format!("   metrics {}\n", short(&m.join(", "), 400)));
                }
            }
            None => o.push_str("   (unknown)\n"),
        }
        o.push_str("   └─ logged model\n");
        match &self.logged_model {
            Some(lm) => o.push_str(&format!(
                "      {} \"{}\" {} at {}\n",
                lm.model_id, lm.name, lm.status, lm.artifact_uri
            )),
            None => o.push_str(&format!("      (none: source {})\n", mv.source)),
        }
        o.push_str("      └─ model version\n");
        o.push_str(&format!(
            "         {} v{} created {}, stage {}, aliases: {}\n",
            self.registered_model.name,
            mv.version,
            format_time(mv.creation_timestamp),
            mv.stage,
            aliases
        ));
        for h in &self.history {
            o.push_str(&format!(
                "         · {} {}\n",
                format_time(h.timestamp),
                describe_event(&h.event, &h.data)
            ));
        }
        o.push_str("         └─ deployments\n");
        if self.deployments.is_empty() {
            o.push_str("            (none)\n");
        }
        for d in &self.deployments {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
            o.push_str(&format!(
                "            {} (variant {}, {}) at {} from {}\n",
                s("deployment"),
                s("variant"),
                s("strategy"),
                s("endpoint"),
                s("uri")
            ));
        }
        for w in &self.warnings {
            o.push_str(&format!("\nwarning: {w}"));
        }
        if !self.warnings.is_empty() {
            o.push('\n');
        }
        o
    }
}

/// One-line human description of a feed event.
pub fn describe_event(event: &str, data: &serde_json::Value) -> String {
    let s = |k: &str| data[k].as_str().unwrap_or("?").to_string();
    match event {
        "model_version.created" => format!("version created from {}", s("source")),
        "model_version.updated" => "description updated".into(),
        "model_version.stage_transitioned" => {
            format!("stage {} → {}", s("from_stage"), s("to_stage"))
        }
        "model_version.deleted" => "version deleted".into(),
        "model_version_tag.set" => format!("tag {} set", s("key")),
        "model_version_tag.deleted" => format!("tag {} deleted", s("key")),
        "model_version_alias.created" => match data["previous_version"].as_str() {
            Some(p) => format!("alias @{} moved here from version {p}", s("alias")),
            None => format!("alias @{} set", s("alias")),
        },
        "model_version_alias.deleted" => format!("alias @{} removed", s("alias")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_params_stay_readable() {
        let mut p = BTreeMap::new();
        p.insert("alpha".to_string(), "0.5".to_string());
        assert_eq!(params_text(&p), "   params  alpha=0.5\n");
        p.insert(
            "command".to_string(),
            "python train.py \\\n  --data data/fresh.csv".to_string(),
        );
        assert_eq!(
            params_text(&p),
            "   params\n     alpha   = 0.5\n     command = python train.py \\\n                 --data data/fresh.csv\n"
        );
    }

    #[test]
    fn parses_an_sklearn_mlmodel() {
        let text = r#"artifact_path: model
flavors:
  python_function:
    env:
      conda: conda.yaml
    loader_module: mlflow.sklearn
    python_version: 3.11.7
  sklearn:
    pickled_model: model.pkl
    sklearn_version: 1.5.2
mlflow_version: 3.17.2
model_size_bytes: 883
model_uuid: 5d7c
signature:
  inputs: '[{"type": "double", "name": "x", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
  params: null
utc_time_created: '2026-11-23 10:00:00.000000'
"#;
        let info = parse_mlmodel(text).unwrap();
        assert_eq!(info.flavors, ["python_function", "sklearn"]);
        assert_eq!(info.inputs.unwrap()[0]["name"], "x");
        assert_eq!(info.outputs.unwrap()[0]["type"], "tensor");
        assert!(info.params.is_none());
        assert_eq!(info.mlflow_version.as_deref(), Some("3.17.2"));
        assert_eq!(info.model_size_bytes, Some(883));
        assert!(parse_mlmodel("flavors: [").is_err());
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_795_000_000_000), "2026-11-18 11:06:40Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
