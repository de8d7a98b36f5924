//! Errors of the monitor crate.

/// What can go wrong with monitors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is invalid (a bad spec, an unknown check, a bad parameter).
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Evaluating a check failed.
    #[error("{0}")]
    Evaluation(String),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] loopml_store::StoreError),
}

/// Result with the crate's error.
pub type Result<T> = std::result::Result<T, Error>;

impl From<loopml_data::Error> for Error {
    fn from(e: loopml_data::Error) -> Self {
        match e {
            loopml_data::Error::NotFound(m) => Error::NotFound(m),
            other => Error::Evaluation(other.to_string()),
        }
    }
}

impl From<loopml_serving::Error> for Error {
    fn from(e: loopml_serving::Error) -> Self {
        Error::Evaluation(e.to_string())
    }
}
