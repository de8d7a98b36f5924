//! Serving errors; each maps to one protocol error (HTTP status + message naming the input).

/// Everything serving can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ONNX Runtime's library is missing or unusable.
    #[error("{0}")]
    Runtime(String),
    /// The model file could not be loaded.
    #[error("{0}")]
    Model(String),
    /// The request's inputs do not fit the model (names, types, shapes).
    #[error("{0}")]
    InvalidInput(String),
    /// The model or version does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Inference failed inside the runtime.
    #[error("{0}")]
    Inference(String),
    /// The name is taken (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The metadata database failed.
    #[error("{0}")]
    Store(#[from] loopml_store::StoreError),
    /// The model's queue is full (HTTP 429).
    #[error("{0}")]
    Overloaded(String),
}

/// Shorthand for serving results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
