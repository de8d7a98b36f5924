//! Registry errors and their one mapping onto MLflow's `{error_code, message}` shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loopml_store::StoreError;

/// Everything a registry request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a rule (MLflow `INVALID_PARAMETER_VALUE`).
    #[error("{0}")]
    InvalidParameter(String),
    /// The named entity does not exist (`RESOURCE_DOES_NOT_EXIST`).
    #[error("{0}")]
    NotFound(String),
    /// An entity with that name already exists (`RESOURCE_ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// An error from the tracking service (runs, logged models, artifacts, request parsing).
    #[error(transparent)]
    Tracking(#[from] loopml_tracking::Error),
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shorthand for registry results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A "missing required parameter" error worded as MLflow words it.
    pub fn missing(param: &str) -> Self {
        Error::Tracking(loopml_tracking::Error::missing(param))
    }

    /// MLflow error code and HTTP status for this error.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Error::InvalidParameter(_) => ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST),
            Error::NotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            Error::AlreadyExists(_) => ("RESOURCE_ALREADY_EXISTS", StatusCode::BAD_REQUEST),
            Error::Tracking(e) => e.code_and_status(),
            Error::Store(e) => e.mlflow_code_and_status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(error = %self, "registry request failed");
        }
        let body = serde_json::json!({ "error_code": code, "message": self.to_string() });
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
