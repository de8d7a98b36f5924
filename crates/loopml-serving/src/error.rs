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

impl Error {
    /// The HTTP status, for every protocol serving speaks (Open Inference Protocol, MLflow
    /// scoring, the deployment API): the one table, so one condition gets one answer.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Runtime(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Model(_) | Error::Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Store(e) => e.mlflow_code_and_status().1,
        }
    }

    /// The MLflow REST `error_code` (the deployment API, `/api/2.0/loopml/…`).
    pub fn rest_code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "INVALID_PARAMETER_VALUE",
            Error::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            Error::Conflict(_) => "RESOURCE_ALREADY_EXISTS",
            Error::Overloaded(_) => "RESOURCE_EXHAUSTED",
            Error::Runtime(_) => "TEMPORARILY_UNAVAILABLE",
            Error::Model(_) | Error::Inference(_) => "INTERNAL_ERROR",
            Error::Store(e) => e.mlflow_code_and_status().0,
        }
    }

    /// The `error_code` of MLflow's scoring server (`/invocations`), which says `BAD_REQUEST`
    /// for bad input; otherwise as [`Self::rest_code`].
    pub fn scoring_code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "BAD_REQUEST",
            Error::NotFound(_)
            | Error::Conflict(_)
            | Error::Overloaded(_)
            | Error::Runtime(_)
            | Error::Model(_)
            | Error::Inference(_)
            | Error::Store(_) => self.rest_code(),
        }
    }

    /// How a failed request is counted (metrics' `status` label, the inference log): the
    /// caller's mistake, too much load, or the server's failure.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) | Error::NotFound(_) | Error::Conflict(_) => "client_error",
            Error::Overloaded(_) => "overloaded",
            Error::Runtime(_) | Error::Model(_) | Error::Inference(_) | Error::Store(_) => "error",
        }
    }
}

/// Shorthand for serving results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
