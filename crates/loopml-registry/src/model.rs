//! Registry domain types: registered models, model versions, stages, aliases and feed events.

use loopml_tracking::model::KeyValue;

/// Lifecycle stage of a model version (MLflow's classic stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Not staged.
    None,
    /// Being validated.
    Staging,
    /// Serving production traffic.
    Production,
    /// Retired.
    Archived,
}

impl Stage {
    /// All stages, in MLflow's order.
    pub const ALL: [Stage; 4] = [
        Stage::None,
        Stage::Staging,
        Stage::Production,
        Stage::Archived,
    ];

    /// Canonical name, as stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }

    /// Parses a stage name in any case.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// Staging and Production: the stages `archive_existing_versions` applies to.
    pub fn is_active(self) -> bool {
        matches!(self, Stage::Staging | Stage::Production)
    }
}

/// One version of a registered model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// Registered model name.
    pub name: String,
    /// Version number (1, 2, …).
    pub version: i64,
    /// Created, ms since the epoch.
    pub creation_timestamp: i64,
    /// Last changed, ms since the epoch.
    pub last_updated_timestamp: i64,
    /// Free-text description.
    pub description: Option<String>,
    /// Who created it.
    pub user_id: Option<String>,
    /// Stage.
    pub current_stage: Stage,
    /// Source URI as given at creation (`models:/m-…`, `runs:/…`, `mlflow-artifacts:/…`).
    pub source: String,
    /// Where the artifacts actually are (what `get-download-uri` answers).
    pub storage_location: String,
    /// Training run.
    pub run_id: Option<String>,
    /// Link to the run.
    pub run_link: Option<String>,
    /// MLflow 3 logged model id.
    pub model_id: Option<String>,
    /// Registration status (always `READY`: versions are created synchronously).
    pub status: String,
    /// Status message.
    pub status_message: Option<String>,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
}

/// An alias of a registered model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Alias name.
    pub alias: String,
    /// Version it points at.
    pub version: i64,
}

/// A registered model.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    /// Unique name.
    pub name: String,
    /// Created, ms.
    pub creation_timestamp: i64,
    /// Last changed, ms.
    pub last_updated_timestamp: i64,
    /// Free-text description.
    pub description: Option<String>,
    /// The latest version in each stage.
    pub latest_versions: Vec<ModelVersion>,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Aliases.
    pub aliases: Vec<Alias>,
}

impl RegisteredModel {
    /// True when the model is an MLflow prompt (tag `mlflow.prompt.is_prompt=true`).
    pub fn is_prompt(&self) -> bool {
        self.tags
            .iter()
            .any(|t| t.key == crate::PROMPT_TAG && t.value.eq_ignore_ascii_case("true"))
    }
}

/// One entry of the registry change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryEvent {
    /// Position in the feed (strictly increasing).
    pub seq: i64,
    /// When it happened, ms.
    pub timestamp: i64,
    /// What happened, as `entity.action` (MLflow's webhook event names where MLflow has one).
    pub event: String,
    /// Registered model name at the time of the event.
    pub name: String,
    /// Version concerned, if any.
    pub version: Option<i64>,
    /// Event details (the webhook payload).
    pub data: serde_json::Value,
}

impl RegistryEvent {
    /// Entity part of the event name (`model_version_alias`).
    pub fn entity(&self) -> &str {
        self.event.split_once('.').map_or(&self.event, |(e, _)| e)
    }
    /// Action part of the event name (`created`).
    pub fn action(&self) -> &str {
        self.event.split_once('.').map_or("", |(_, a)| a)
    }
}

/// A page of results and the token for the next one.
pub use loopml_tracking::model::Page;
