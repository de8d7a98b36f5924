//! MLflow registry wire format: request messages (parsed leniently by the tracking crate's
//! [`Mlflow`](loopml_tracking::api::Mlflow) extractor) and response bodies.

use serde::{Deserialize, Serialize};

use crate::model::{Alias, ModelVersion, RegisteredModel, RegistryEvent};

use loopml_tracking::mlflow_message as message;

message! {
    /// `registered-models/create`.
    CreateRegisteredModel {
        /// Name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Tags.
        tags: Vec<loopml_tracking::api::WireKeyValue> = "loopml_tracking::api::de::vec_or_one",
        /// Description.
        description: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// A request naming a registered model (get, delete).
    ModelRef {
        /// Name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `registered-models/update`.
    UpdateRegisteredModel {
        /// Name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// New description.
        description: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `registered-models/rename`.
    RenameRegisteredModel {
        /// Current name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// New name.
        new_name: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `registered-models/search` and `model-versions/search`.
    Search {
        /// Filter.
        filter: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Page size.
        max_results: Option<i64> = "loopml_tracking::api::de::opt_i64",
        /// Order.
        order_by: Vec<String> = "loopml_tracking::api::de::vec_or_one",
        /// Page token.
        page_token: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `registered-models/get-latest-versions`.
    GetLatestVersions {
        /// Name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Stages.
        stages: Vec<String> = "loopml_tracking::api::de::vec_or_one",
    }
}

message! {
    /// Registered model or model version tag set/delete.
    TagRequest {
        /// Model name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Version (version tags only).
        version: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Key.
        key: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Value.
        value: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `registered-models/alias` (set, delete, get).
    AliasRequest {
        /// Model name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Alias.
        alias: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Version (set only).
        version: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `model-versions/create`.
    CreateModelVersion {
        /// Model name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Source URI.
        source: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Run id.
        run_id: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Tags.
        tags: Vec<loopml_tracking::api::WireKeyValue> = "loopml_tracking::api::de::vec_or_one",
        /// Run link.
        run_link: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Description.
        description: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Logged model id.
        model_id: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// A request naming a model version (get, delete, download uri, update).
    VersionRef {
        /// Model name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Version.
        version: Option<String> = "loopml_tracking::api::de::opt_string",
        /// New description (update only).
        description: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `/model-versions/get-artifact` (the UI's file preview).
    VersionArtifact {
        /// Model name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Version.
        version: Option<String> = "loopml_tracking::api::de::opt_string",
        /// File path inside the version's model.
        path: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

message! {
    /// `model-versions/transition-stage`.
    TransitionStage {
        /// Model name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Version.
        version: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Target stage.
        stage: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Archive the other versions in that stage.
        archive_existing_versions: Option<bool> = "loopml_tracking::api::de::opt_bool",
    }
}

/// `{key, value}` on the wire.
#[derive(Serialize)]
pub struct KeyValueJson<'a> {
    key: &'a str,
    value: &'a str,
}

/// A model version on the wire.
#[derive(Serialize)]
pub struct ModelVersionJson<'a> {
    name: &'a str,
    version: String,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    current_stage: &'static str,
    /// MLflow sends `""` for an unset version description (and run link).
    description: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<&'a str>,
    tags: Vec<KeyValueJson<'a>>,
    run_link: &'a str,
    aliases: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    model_id: Option<&'a str>,
}

impl<'a> From<&'a ModelVersion> for ModelVersionJson<'a> {
    fn from(mv: &'a ModelVersion) -> Self {
        Self {
            name: &mv.name,
            version: mv.version.to_string(),
            creation_timestamp: mv.creation_timestamp,
            last_updated_timestamp: mv.last_updated_timestamp,
            user_id: mv.user_id.as_deref(),
            current_stage: mv.current_stage.as_str(),
            description: mv.description.as_deref().unwrap_or(""),
            source: &mv.source,
            run_id: mv.run_id.as_deref(),
            status: &mv.status,
            status_message: mv.status_message.as_deref(),
            tags: mv
                .tags
                .iter()
                .map(|t| KeyValueJson {
                    key: &t.key,
                    value: &t.value,
                })
                .collect(),
            run_link: mv.run_link.as_deref().unwrap_or(""),
            aliases: &mv.aliases,
            model_id: mv.model_id.as_deref(),
        }
    }
}

/// An alias on the wire.
#[derive(Serialize)]
pub struct AliasJson<'a> {
    alias: &'a str,
    version: String,
}

impl<'a> From<&'a Alias> for AliasJson<'a> {
    fn from(a: &'a Alias) -> Self {
        Self {
            alias: &a.alias,
            version: a.version.to_string(),
        }
    }
}

/// A registered model on the wire.
#[derive(Serialize)]
pub struct RegisteredModelJson<'a> {
    name: &'a str,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    latest_versions: Vec<ModelVersionJson<'a>>,
    tags: Vec<KeyValueJson<'a>>,
    aliases: Vec<AliasJson<'a>>,
}

impl<'a> From<&'a RegisteredModel> for RegisteredModelJson<'a> {
    fn from(m: &'a RegisteredModel) -> Self {
        Self {
            name: &m.name,
            creation_timestamp: m.creation_timestamp,
            last_updated_timestamp: m.last_updated_timestamp,
            description: m.description.as_deref(),
            latest_versions: m.latest_versions.iter().map(Into::into).collect(),
            tags: m
                .tags
                .iter()
                .map(|t| KeyValueJson {
                    key: &t.key,
                    value: &t.value,
                })
                .collect(),
            aliases: m.aliases.iter().map(Into::into).collect(),
        }
    }
}

/// A change-feed event on the wire.
#[derive(Serialize)]
pub struct EventJson<'a> {
    seq: i64,
    timestamp: i64,
    event: &'a str,
    entity: &'a str,
    action: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    data: &'a serde_json::Value,
}

impl<'a> From<&'a RegistryEvent> for EventJson<'a> {
    fn from(e: &'a RegistryEvent) -> Self {
        Self {
            seq: e.seq,
            timestamp: e.timestamp,
            event: &e.event,
            entity: e.entity(),
            action: e.action(),
            name: &e.name,
            version: e.version.map(|v| v.to_string()),
            data: &e.data,
        }
    }
}

/// `{entity, action}` of a webhook event on the wire.
#[derive(Debug, Clone, Deserialize)]
pub struct WireEvent {
    /// Entity (`MODEL_VERSION_ALIAS`, any case).
    #[serde(default, deserialize_with = "loopml_tracking::api::de::opt_string")]
    pub entity: Option<String>,
    /// Action (`CREATED`, any case).
    #[serde(default, deserialize_with = "loopml_tracking::api::de::opt_string")]
    pub action: Option<String>,
}

message! {
    /// `webhooks` create and update.
    WebhookRequest {
        /// Name.
        name: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Description.
        description: Option<String> = "loopml_tracking::api::de::opt_string",
        /// URL.
        url: Option<String> = "loopml_tracking::api::de::opt_string",
        /// Events.
        events: Vec<WireEvent> = "loopml_tracking::api::de::vec_or_one",
        /// HMAC secret.
        secret: Option<String> = "loopml_tracking::api::de::opt_string",
        /// ACTIVE or DISABLED.
        status: Option<String> = "loopml_tracking::api::de::opt_string",
    }
}

/// `webhooks/{id}/test`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TestWebhookRequest {
    /// Event to send an example of (default: the webhook's first).
    #[serde(default)]
    pub event: Option<WireEvent>,
}

/// An event name on the wire: `{entity: "MODEL_VERSION_ALIAS", action: "CREATED"}`.
#[derive(Serialize)]
pub struct EventNameJson {
    entity: String,
    action: String,
}

/// A webhook on the wire (never with its secret).
#[derive(Serialize)]
pub struct WebhookJson<'a> {
    webhook_id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    url: &'a str,
    events: Vec<EventNameJson>,
    status: &'static str,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
}

impl<'a> From<&'a crate::webhooks::Webhook> for WebhookJson<'a> {
    fn from(w: &'a crate::webhooks::Webhook) -> Self {
        Self {
            webhook_id: &w.id,
            name: &w.name,
            description: w.description.as_deref(),
            url: &w.url,
            events: w
                .events
                .iter()
                .map(|e| {
                    let (entity, action) = e.split_once('.').unwrap_or((e, ""));
                    EventNameJson {
                        entity: entity.to_ascii_uppercase(),
                        action: action.to_ascii_uppercase(),
                    }
                })
                .collect(),
            status: w.status.as_str(),
            creation_timestamp: w.creation_timestamp,
            last_updated_timestamp: w.last_updated_timestamp,
        }
    }
}
