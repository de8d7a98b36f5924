//! Traces for loopml: MLflow's v3 trace API and OTLP span ingest (`POST /v1/traces`), trace
//! search with MLflow's filter language, tags, run and prompt links, deletion, and
//! assessments (feedback and expectations). Each trace is stored once, in the metadata
//! database: StartTraceV3 always answers `spansLocation=TRACKING_STORE`, so the client never
//! uploads a second copy as `traces.json` (mlflow/mlflow#24332).
#![allow(missing_docs)] // the OTLP protobuf fields are documented by their .proto files

pub mod assessments;
pub mod datasets;
pub mod error;
pub mod model;
pub mod otlp;
pub mod page;
pub mod retrieval;
pub mod routes;
pub mod scorers;
pub mod search;
pub mod service;

pub use error::{Error, Result};
pub use model::TraceInfo;
pub use routes::router;
pub use service::{Pricer, Search, TraceService};

/// The traces tables' migrations, in order.
pub const MIGRATIONS: &[loopml_store::Migration] = &[
    loopml_store::Migration {
        name: "0001_traces",
        sqlite: include_str!("../migrations/sqlite/0001_traces.sql"),
        postgres: include_str!("../migrations/postgres/0001_traces.sql"),
    },
    loopml_store::Migration {
        name: "0002_datasets",
        sqlite: include_str!("../migrations/sqlite/0002_datasets.sql"),
        postgres: include_str!("../migrations/postgres/0002_datasets.sql"),
    },
    loopml_store::Migration {
        name: "0003_scorers",
        sqlite: include_str!("../migrations/sqlite/0003_scorers.sql"),
        postgres: include_str!("../migrations/postgres/0003_scorers.sql"),
    },
    loopml_store::Migration {
        name: "0004_search_index",
        sqlite: include_str!("../migrations/sqlite/0004_search_index.sql"),
        postgres: include_str!("../migrations/postgres/0004_search_index.sql"),
    },
];

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A trace id: printable ASCII without `/`, at most 100 characters.
pub fn validate_trace_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
    {
        return Err(Error::InvalidParameter(format!(
            "Invalid trace id '{}': printable ASCII without '/', at most 100 characters",
            id.chars().take(120).collect::<String>()
        )));
    }
    Ok(())
}

/// A trace tag: key at most 250 characters, value at most 8,000, no NUL.
pub fn validate_tag(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > 250 || key.contains('\0') {
        return Err(Error::InvalidParameter(
            "A trace tag key must be 1 to 250 characters without NUL".into(),
        ));
    }
    if value.chars().count() > 8000 || value.contains('\0') {
        return Err(Error::InvalidParameter(
            "A trace tag value must be at most 8,000 characters without NUL".into(),
        ));
    }
    Ok(())
}
