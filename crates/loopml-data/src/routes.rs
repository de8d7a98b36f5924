//! HTTP routes for datasets under `/api/2.0/loopml/datasets`: upload a version (the body is the
//! CSV or Parquet file, streamed), list, show (with profile) and download. Errors use the
//! `{error_code, message}` shape of loopml's other APIs.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::error::Error;
use crate::versions::{DatasetStore, parse_reference, validate_name};

/// Dataset routes' state: the store and a staging folder for uploads.
#[derive(Debug, Clone)]
pub struct DataApi {
    /// Dataset versions.
    pub store: DatasetStore,
    /// Where uploads are staged (on the server's disk) before they are profiled and stored.
    pub staging: PathBuf,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = match &self {
            Error::Invalid(_) | Error::Statistic(_) => {
                ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST)
            }
            Error::NotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            Error::Store(loopml_store::StoreError::InvalidPath(_)) => {
                ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST)
            }
            Error::Store(loopml_store::StoreError::ArtifactNotFound(_)) => {
                ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND)
            }
            Error::Store(_) => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "dataset request failed");
        }
        let body = serde_json::json!({"error_code": code, "message": self.to_string()});
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => Error::Invalid(format!("cannot encode the answer: {e}")).into_response(),
    }
}

/// Query of an upload.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// `csv` or `parquet` (else detected from the content).
    #[serde(default)]
    format: Option<String>,
    /// Where the data came from (recorded as given).
    #[serde(default)]
    source: Option<String>,
}

async fn upload(
    State(api): State<DataApi>,
    Path(name): Path<String>,
    q: Query<UploadQuery>,
    req: Request,
) -> Result<Response, Error> {
    validate_name(&name)?;
    let ext = match q.format.as_deref() {
        None | Some("") => "bin",
        Some("csv") => "csv",
        Some("parquet") => "parquet",
        Some(other) => {
            return Err(Error::Invalid(format!(
                "unknown format '{other}': use csv or parquet"
            )));
        }
    };
    tokio::fs::create_dir_all(&api.staging)
        .await
        .map_err(|e| Error::Invalid(format!("cannot stage the upload: {e}")))?;
    // The staged file is named by the dataset name so errors read "churn.csv: …".
    let dir = api.staging.join(uuid_like());
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::Invalid(format!("cannot stage the upload: {e}")))?;
    let staged = dir.join(format!("{name}.{ext}"));
    let result = async {
        let mut f = tokio::fs::File::create(&staged)
            .await
            .map_err(|e| Error::Invalid(format!("cannot stage the upload: {e}")))?;
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Invalid(format!("upload interrupted: {e}")))?;
            f.write_all(&chunk)
                .await
                .map_err(|e| Error::Invalid(format!("cannot stage the upload: {e}")))?;
        }
        f.flush()
            .await
            .map_err(|e| Error::Invalid(format!("cannot stage the upload: {e}")))?;
        api.store.add(&name, &staged, q.source.clone()).await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    Ok(json(&result?))
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("upload-{t:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Query of a listing.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this dataset's versions.
    #[serde(default)]
    name: Option<String>,
}

async fn list(State(api): State<DataApi>, q: Query<ListQuery>) -> Result<Response, Error> {
    if let Some(n) = &q.name {
        validate_name(n)?;
    }
    let versions = api.store.list(q.name.clone()).await?;
    Ok(json(&serde_json::json!({ "versions": versions })))
}

async fn show(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
) -> Result<Response, Error> {
    let (name, version) = parse_reference(&reference)?;
    Ok(json(&api.store.get(&name, version).await?))
}

async fn content(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
) -> Result<Response, Error> {
    let (name, version) = parse_reference(&reference)?;
    let v = api.store.get(&name, version).await?;
    let (size, stream) = api.store.open(&v).await?;
    let filename = format!("{}-{}.{}", v.name, v.version, v.format);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::ETAG, format!("\"sha256:{}\"", v.digest)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The dataset router (`/api/2.0/loopml/datasets/...`).
pub fn router(api: DataApi) -> Router {
    Router::new()
        .route("/api/2.0/loopml/datasets", get(list))
        .route("/api/2.0/loopml/datasets/{name}/versions", post(upload))
        .route("/api/2.0/loopml/datasets/{reference}", get(show))
        .route("/api/2.0/loopml/datasets/{reference}/content", get(content))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(api)
}
