//! Errors raised by the storage layer. Backend driver errors (rusqlite, tokio-postgres) are
//! mapped here by kind, so no domain crate sees, or matches on, a driver type.

/// What went wrong in the metadata database or the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQL backend rejected a statement (a bug or a schema mismatch, not the user's input).
    #[error("database error: {0}")]
    Database(String),
    /// A uniqueness or primary-key constraint was violated: the row already exists.
    #[error("already exists: {0}")]
    Unique(String),
    /// A foreign-key, not-null or check constraint was violated.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The database cannot answer now (server down or restarting, connection lost, pool
    /// exhausted, deadline passed, serialization conflict); the same request may succeed if
    /// retried. Nothing of the failed request was committed.
    #[error("database temporarily unavailable: {0}")]
    Unavailable(String),
    /// The storage configuration is invalid (URL, scheme, options).
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// The database file or its directory could not be opened.
    #[error("cannot open database at {path}: {reason}")]
    Open {
        /// Path to the database file.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A migration failed to apply.
    #[error("migration {domain}/{name} failed: {reason}")]
    Migration {
        /// Domain (crate) that owns the migration.
        domain: String,
        /// Name of the migration.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// An artifact path was malformed or tried to escape the artifact root.
    #[error("Invalid path: {0}")]
    InvalidPath(String),
    /// The artifact does not exist.
    #[error("No such artifact: '{0}'")]
    ArtifactNotFound(String),
    /// A byte range lies outside the file (its size is given, for `Content-Range`).
    #[error("the requested range is outside the file ({0} bytes)")]
    RangeNotSatisfiable(u64),
    /// The artifact backend failed.
    #[error("artifact store error: {0}")]
    Artifact(String),
    /// A blocking worker panicked or was cancelled.
    #[error("storage worker failed: {0}")]
    Worker(String),
}

impl StoreError {
    /// True when the error is a uniqueness / primary-key violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Unique(_))
    }

    /// True when retrying later may succeed (the database was unreachable or busy).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// MLflow error code and HTTP status for a storage error: the one table every
    /// MLflow-shaped API (tracking, registry, datasets, monitors, deployments) answers with.
    pub fn mlflow_code_and_status(&self) -> (&'static str, http::StatusCode) {
        use http::StatusCode;
        match self {
            StoreError::InvalidPath(_) => ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST),
            StoreError::ArtifactNotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            StoreError::RangeNotSatisfiable(_) => {
                ("INVALID_PARAMETER_VALUE", StatusCode::RANGE_NOT_SATISFIABLE)
            }
            StoreError::Constraint(_) => ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST),
            // MLflow answers 400 for an existing resource, not 409.
            StoreError::Unique(_) => ("RESOURCE_ALREADY_EXISTS", StatusCode::BAD_REQUEST),
            // Clients retry 503s with backoff, which is what a restarting database needs.
            StoreError::Unavailable(_) => {
                ("TEMPORARILY_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE)
            }
            StoreError::Database(_)
            | StoreError::InvalidConfig(_)
            | StoreError::Open { .. }
            | StoreError::Migration { .. }
            | StoreError::Artifact(_)
            | StoreError::Worker(_) => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StoreError::ArtifactNotFound(path),
            other => StoreError::Artifact(other.to_string()),
        }
    }
}
