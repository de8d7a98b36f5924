//! MLflow-compatible experiment tracking: experiments, runs, params, metrics, tags, dataset
//! inputs and MLflow 3 logged models, with MLflow's REST API, search-filter language and
//! artifact proxy. It owns the tracking tables (see `migrations/`) and routes; it does not own
//! the model registry, datasets' bytes, or serving.

pub mod api;
pub mod error;
pub mod filter;
pub mod model;
mod names;
pub mod pyjson;
pub mod routes;
mod service;
mod sql;
pub mod ui;
pub mod validation;

pub use error::{Error, Result};
pub use routes::router;
pub use service::{Batch, ModelSearch, NewDatasetInput, TrackingService, now_ms, parse_view_type};

/// The `mlflow server` version whose REST API loopml implements, reported at `/version`: the
/// MLflow client gates features on it (it sends traces only to servers of 3.4 or later).
pub const MLFLOW_COMPATIBLE_VERSION: &str = "3.17.2";

/// The tracking tables' migrations, in order.
pub const MIGRATIONS: &[loopml_store::Migration] = &[
    loopml_store::Migration {
        name: "0001_tracking",
        sqlite: include_str!("../migrations/sqlite/0001_tracking.sql"),
        postgres: include_str!("../migrations/postgres/0001_tracking.sql"),
    },
    loopml_store::Migration {
        name: "0002_metric_series",
        sqlite: include_str!("../migrations/sqlite/0002_metric_series.sql"),
        postgres: include_str!("../migrations/postgres/0002_metric_series.sql"),
    },
    loopml_store::Migration {
        name: "0003_latest_in_series",
        sqlite: include_str!("../migrations/sqlite/0003_latest_in_series.sql"),
        postgres: include_str!("../migrations/postgres/0003_latest_in_series.sql"),
    },
];
