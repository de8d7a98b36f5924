//! Data errors: what went wrong, naming the file, column and row where there is one.

/// Everything a data operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not usable (bad file, wrong types, missing column, …).
    #[error("{0}")]
    Invalid(String),
    /// The named dataset or version does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A statistic cannot be computed on this input (e.g. an empty sample).
    #[error("{0}")]
    Statistic(String),
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] loopml_store::StoreError),
}

/// Shorthand for data results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
