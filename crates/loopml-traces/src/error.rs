//! The traces crate's errors, answered in MLflow's error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loopml_store::StoreError;

/// What went wrong with a trace call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (MLflow's INVALID_PARAMETER_VALUE).
    #[error("{0}")]
    InvalidParameter(String),
    /// The trace, assessment or experiment does not exist (RESOURCE_DOES_NOT_EXIST).
    #[error("{0}")]
    NotFound(String),
    /// An OTLP body could not be read (400, FastAPI's `detail` shape, as `mlflow server`).
    #[error("{0}")]
    Otlp(String),
    /// The metadata database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: an answer could not be written (INTERNAL_ERROR).
    #[error("{0}")]
    Internal(String),
    /// Tracking (experiments, runs) failed.
    #[error(transparent)]
    Tracking(#[from] loopml_tracking::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// MLflow's error code and the HTTP status.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Error::InvalidParameter(_) | Error::Otlp(_) => {
                ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST)
            }
            Error::NotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            Error::Internal(_) => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
            Error::Store(e) => e.mlflow_code_and_status(),
            Error::Tracking(e) => e.code_and_status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(error = %self, "trace request failed");
        }
        let body = match &self {
            Error::Otlp(m) => serde_json::json!({"detail": m}),
            _ => serde_json::json!({"error_code": code, "message": self.to_string()}),
        };
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
