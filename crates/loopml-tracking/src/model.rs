//! Tracking domain types: experiments, runs, metrics, params, tags, datasets, logged models.

/// A key/value pair (params and tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Whether an experiment, run or logged model is live or soft-deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleStage {
    /// Live.
    Active,
    /// Soft-deleted; can be restored.
    Deleted,
}

impl LifecycleStage {
    /// Stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Active => "active",
            LifecycleStage::Deleted => "deleted",
        }
    }
    /// Parses the stored name.
    pub fn parse(s: &str) -> Self {
        if s == "deleted" {
            LifecycleStage::Deleted
        } else {
            LifecycleStage::Active
        }
    }
}

/// Which lifecycle stages a search includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    /// Active entities only (the default).
    #[default]
    ActiveOnly,
    /// Deleted entities only.
    DeletedOnly,
    /// Both.
    All,
}

impl ViewType {
    /// Stored lifecycle stages that this view includes.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &["active"],
            ViewType::DeletedOnly => &["deleted"],
            ViewType::All => &["active", "deleted"],
        }
    }
}

/// An experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Integer id (rendered as a string on the wire).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Root URI of the experiment's artifacts.
    pub artifact_location: String,
    /// Live or deleted.
    pub lifecycle_stage: LifecycleStage,
    /// Creation time, ms since the epoch.
    pub creation_time: i64,
    /// Last update time, ms since the epoch.
    pub last_update_time: i64,
    /// Tags.
    pub tags: Vec<KeyValue>,
}

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Running.
    Running,
    /// Scheduled, not started.
    Scheduled,
    /// Finished successfully.
    Finished,
    /// Failed.
    Failed,
    /// Killed.
    Killed,
}

impl RunStatus {
    /// Wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
    /// Parses a name (any case) or the protobuf enum number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "RUNNING" | "1" => RunStatus::Running,
            "SCHEDULED" | "2" => RunStatus::Scheduled,
            "FINISHED" | "3" => RunStatus::Finished,
            "FAILED" | "4" => RunStatus::Failed,
            "KILLED" | "5" => RunStatus::Killed,
            _ => return None,
        })
    }
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric key.
    pub key: String,
    /// Value (NaN and ±inf allowed).
    pub value: f64,
    /// Time, ms since the epoch.
    pub timestamp: i64,
    /// Training step.
    pub step: i64,
}

/// A metric as logged, possibly attached to a logged model and a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedMetric {
    /// The value itself.
    pub metric: Metric,
    /// Logged model the metric belongs to.
    pub model_id: Option<String>,
    /// Dataset name the metric was computed on.
    pub dataset_name: Option<String>,
    /// Dataset digest the metric was computed on.
    pub dataset_digest: Option<String>,
}

/// Run metadata.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// 32-hex run id.
    pub run_id: String,
    /// Owning experiment.
    pub experiment_id: i64,
    /// Display name.
    pub run_name: String,
    /// User who created the run.
    pub user_id: String,
    /// Status.
    pub status: RunStatus,
    /// Start time, ms.
    pub start_time: i64,
    /// End time, ms, once terminated.
    pub end_time: Option<i64>,
    /// Artifact root URI of the run.
    pub artifact_uri: String,
    /// Live or deleted.
    pub lifecycle_stage: LifecycleStage,
}

/// A dataset as the MLflow client describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Name.
    pub name: String,
    /// Content digest.
    pub digest: String,
    /// Kind of source (e.g. "local", "code").
    pub source_type: String,
    /// Source description (JSON).
    pub source: String,
    /// Schema (JSON).
    pub schema: Option<String>,
    /// Profile (JSON).
    pub profile: Option<String>,
}

/// One dataset an experiment's runs used, as the MLflow UI's dataset filter lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    /// Experiment id.
    pub experiment_id: i64,
    /// Dataset name.
    pub name: String,
    /// Dataset digest.
    pub digest: String,
    /// The input's `mlflow.data.context` tag ("training", "eval", …), if it has one.
    pub context: Option<String>,
}

/// A dataset used by a run, with its input tags (e.g. `mlflow.data.context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetInput {
    /// Input tags.
    pub tags: Vec<KeyValue>,
    /// The dataset.
    pub dataset: Dataset,
}

/// A full run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Metadata.
    pub info: RunInfo,
    /// Latest value of each metric.
    pub metrics: Vec<Metric>,
    /// Params.
    pub params: Vec<KeyValue>,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Datasets used.
    pub dataset_inputs: Vec<DatasetInput>,
    /// Logged models used as inputs.
    pub model_inputs: Vec<String>,
    /// Logged models produced, with the step.
    pub model_outputs: Vec<(String, i64)>,
}

/// Status of a logged model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedModelStatus {
    /// Not set.
    Unspecified,
    /// Being uploaded.
    Pending,
    /// Ready to use.
    Ready,
    /// Upload failed.
    UploadFailed,
}

impl LoggedModelStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoggedModelStatus::Unspecified => "LOGGED_MODEL_STATUS_UNSPECIFIED",
            LoggedModelStatus::Pending => "LOGGED_MODEL_PENDING",
            LoggedModelStatus::Ready => "LOGGED_MODEL_READY",
            LoggedModelStatus::UploadFailed => "LOGGED_MODEL_UPLOAD_FAILED",
        }
    }
    /// Parses a wire name or enum number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "LOGGED_MODEL_STATUS_UNSPECIFIED" | "0" => LoggedModelStatus::Unspecified,
            "LOGGED_MODEL_PENDING" | "1" => LoggedModelStatus::Pending,
            "LOGGED_MODEL_READY" | "2" => LoggedModelStatus::Ready,
            "LOGGED_MODEL_UPLOAD_FAILED" | "3" => LoggedModelStatus::UploadFailed,
            _ => return None,
        })
    }
}

/// A metric attached to a logged model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetric {
    /// Value.
    pub metric: Metric,
    /// Run that logged it.
    pub run_id: Option<String>,
    /// Dataset name.
    pub dataset_name: Option<String>,
    /// Dataset digest.
    pub dataset_digest: Option<String>,
}

/// An MLflow 3 logged model.
#[derive(Debug, Clone)]
pub struct LoggedModel {
    /// `m-<32hex>`.
    pub model_id: String,
    /// Owning experiment.
    pub experiment_id: i64,
    /// Name.
    pub name: String,
    /// Created, ms.
    pub creation_timestamp_ms: i64,
    /// Last updated, ms.
    pub last_updated_timestamp_ms: i64,
    /// Artifact root URI.
    pub artifact_uri: String,
    /// Status.
    pub status: LoggedModelStatus,
    /// Status message.
    pub status_message: Option<String>,
    /// Model type (free text).
    pub model_type: Option<String>,
    /// Run that produced it.
    pub source_run_id: Option<String>,
    /// Live or deleted.
    pub lifecycle_stage: LifecycleStage,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Params.
    pub params: Vec<KeyValue>,
    /// Metrics.
    pub metrics: Vec<ModelMetric>,
}

/// A page of results and the token for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items on this page.
    pub items: Vec<T>,
    /// Opaque token for the next page, when more rows exist.
    pub next_page_token: Option<String>,
}
