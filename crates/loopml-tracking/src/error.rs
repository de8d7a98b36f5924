//! Tracking errors and their one mapping onto MLflow's `{error_code, message}` shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loopml_store::StoreError;

/// Everything a tracking request can fail with.
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
    /// The entity is in a state that forbids the operation (`INVALID_STATE`).
    #[error("{0}")]
    InvalidState(String),
    /// The operation is not offered by this server (`NOT_IMPLEMENTED`).
    #[error("{0}")]
    NotImplemented(String),
    /// No such route (`ENDPOINT_NOT_FOUND`).
    #[error("{0}")]
    EndpointNotFound(String),
    /// The request body is over the route's limit (413, `INVALID_PARAMETER_VALUE`).
    #[error("{0}")]
    TooLarge(String),
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shorthand for tracking results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A "missing required parameter" error worded as MLflow words it.
    pub fn missing(param: &str) -> Self {
        Error::InvalidParameter(format!(
            "Missing value for required parameter '{param}'. See the API docs for more \
             information about request parameters."
        ))
    }

    /// MLflow error code and HTTP status for this error.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Error::InvalidParameter(_) => ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST),
            Error::NotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            // MLflow answers 400 here, not 409; the client branches on the code only.
            Error::AlreadyExists(_) => ("RESOURCE_ALREADY_EXISTS", StatusCode::BAD_REQUEST),
            // MLflow answers 500, which makes its client retry a deterministic error for
            // minutes; 400 carries the same code without the retry storm.
            Error::InvalidState(_) => ("INVALID_STATE", StatusCode::BAD_REQUEST),
            Error::NotImplemented(_) => ("NOT_IMPLEMENTED", StatusCode::NOT_IMPLEMENTED),
            Error::EndpointNotFound(_) => ("ENDPOINT_NOT_FOUND", StatusCode::NOT_FOUND),
            Error::TooLarge(_) => ("INVALID_PARAMETER_VALUE", StatusCode::PAYLOAD_TOO_LARGE),
            Error::Store(e) => e.mlflow_code_and_status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
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
