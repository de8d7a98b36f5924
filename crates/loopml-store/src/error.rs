//! Errors raised by the storage layer.

/// What went wrong in the metadata database or the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQL backend reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// A uniqueness or foreign-key constraint was violated.
    #[error("constraint violated: {0}")]
    Constraint(String),
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
        match self {
            StoreError::Constraint(_) => true,
            StoreError::Database(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            _ => false,
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
