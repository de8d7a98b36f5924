//! The auth crate's errors, answered in MLflow's error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loopml_store::StoreError;

/// What went wrong with an auth call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (INVALID_PARAMETER_VALUE).
    #[error("{0}")]
    InvalidParameter(String),
    /// The user, grant or token does not exist (RESOURCE_DOES_NOT_EXIST).
    #[error("{0}")]
    NotFound(String),
    /// It exists already (RESOURCE_ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// No or wrong credentials (401 UNAUTHENTICATED).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed (403 PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
    /// Too many failed logins for this user: wait (429).
    #[error("{0}")]
    Throttled(String),
    /// The request body is too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// A bug (500).
    #[error("{0}")]
    Internal(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A read-only token tried to change something.
    pub fn read_only() -> Self {
        Error::PermissionDenied("Permission denied: this token is read-only".into())
    }

    /// MLflow's error code and the HTTP status.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Error::InvalidParameter(_) => ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST),
            Error::NotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            Error::AlreadyExists(_) => ("RESOURCE_ALREADY_EXISTS", StatusCode::BAD_REQUEST),
            Error::Unauthenticated(_) => ("UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
            Error::PermissionDenied(_) => ("PERMISSION_DENIED", StatusCode::FORBIDDEN),
            Error::Throttled(_) => ("REQUEST_LIMIT_EXCEEDED", StatusCode::TOO_MANY_REQUESTS),
            Error::TooLarge(_) => ("INVALID_PARAMETER_VALUE", StatusCode::PAYLOAD_TOO_LARGE),
            Error::Internal(_) => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
            Error::Store(e) => e.mlflow_code_and_status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.respond(false)
    }
}

impl Error {
    /// The answer in the Open Inference Protocol's error shape (`{"error": message}`), for
    /// `/v2/…` routes.
    pub fn into_oip_response(self) -> Response {
        self.respond(true)
    }

    /// The answer in OpenAI's error shape (`{"error": {"message", "type", "code"}}`), for
    /// the gateway's routes.
    pub fn into_openai_response(self) -> Response {
        let (code, status) = self.code_and_status();
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        };
        let message = if status.is_server_error() {
            "Internal error in the auth store".to_string()
        } else {
            self.to_string()
        };
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": {
                "message": message,
                "type": kind,
                "param": null,
                "code": code.to_ascii_lowercase(),
            }})
            .to_string(),
        )
            .into_response()
    }

    fn respond(self, oip: bool) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(error = %self, "auth request failed");
        }
        // A store error's text can hold SQL: say only what kind of failure it was.
        let message = match &self {
            Error::Store(StoreError::Unique(_)) => "The resource already exists".to_string(),
            Error::Store(e) if status.is_server_error() => {
                let _ = e;
                "Internal error in the auth store".to_string()
            }
            other => other.to_string(),
        };
        let mut r = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            if oip {
                serde_json::json!({"error": message}).to_string()
            } else {
                serde_json::json!({"error_code": code, "message": message}).to_string()
            },
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"mlflow\""),
            );
        }
        r
    }
}
