//! The model registry: registered models, versions, stages, aliases and tags with MLflow's
//! registry REST API, plus what MLflow leaves to users: lineage from dataset to deployment,
//! generated model cards, and an ordered change feed with long-poll and signed webhooks. It owns
//! the registry tables (see `migrations/`) and routes; runs, logged models and artifacts belong
//! to the tracking crate and are reached through its service.

pub mod api;
pub mod card;
pub mod error;
pub mod graphql;
pub mod lineage;
pub mod model;
pub mod routes;
pub mod search;
mod service;
mod sql;
pub mod validation;
pub mod webhooks;

pub use error::{Error, Result};
pub use model::{Alias, ModelVersion, RegisteredModel, RegistryEvent, Stage};
pub use routes::router;
pub use service::{NewModelVersion, RegistryService};

/// Tag that marks a registered model as an MLflow prompt.
pub const PROMPT_TAG: &str = "mlflow.prompt.is_prompt";
/// The model-version tag holding a prompt's template (text, or chat messages as JSON).
pub const PROMPT_TEXT_TAG: &str = "mlflow.prompt.text";

/// The registry tables' migrations, in order.
pub const MIGRATIONS: &[loopml_store::Migration] = &[loopml_store::Migration {
    name: "0001_registry",
    sqlite: include_str!("../migrations/sqlite/0001_registry.sql"),
    postgres: include_str!("../migrations/postgres/0001_registry.sql"),
}];
