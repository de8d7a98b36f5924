//! HTTP routes for datasets under `/api/2.0/loopml/datasets`: upload a version (the body is the
//! CSV or Parquet file, streamed), list, show (with profile) and download; validate a stored
//! version against a suite and compute drift between two stored versions, keeping each result
//! with the version (`…/checks`, `/api/2.0/loopml/dataset-checks/{id}`). Errors use the
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

use std::collections::HashMap;

use crate::checks::{CheckKind, NewCheck};
use crate::drift::{DriftOptions, drift_files};
use crate::error::Error;
use crate::validate::{SetSource, Suite, validate_file};
use crate::versions::{DatasetStore, parse_reference, validate_name};

/// Largest suite or drift request body.
pub const MAX_CHECK_REQUEST_BYTES: usize = 4 << 20;

/// Dataset routes' state: the store and a staging folder for uploads.
#[derive(Debug, Clone)]
pub struct DataApi {
    /// Dataset versions.
    pub store: DatasetStore,
    /// Where uploads are staged (on the server's disk) before they are profiled and stored.
    pub staging: PathBuf,
}

impl DataApi {
    /// The stored version `raw` (`NAME`, `NAME@latest`, `NAME@3`) names.
    async fn version(&self, raw: &str) -> Result<crate::versions::DatasetVersion, Error> {
        let (name, version) = parse_reference(raw)?;
        self.store.get(&name, version).await
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = match &self {
            Error::Invalid(_) | Error::Statistic(_) => {
                ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST)
            }
            Error::NotFound(_) => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
            Error::Store(e) => e.mlflow_code_and_status(),
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
    Ok(json(&api.version(&reference).await?))
}

async fn content(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
) -> Result<Response, Error> {
    let v = api.version(&reference).await?;
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

async fn small_body(req: Request) -> Result<String, Error> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_CHECK_REQUEST_BYTES)
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "cannot read the request body (at most {MAX_CHECK_REQUEST_BYTES} bytes): {e}"
            ))
        })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::Invalid("the request body is not UTF-8 text".into()))
}

fn joined<T>(r: Result<Result<T, Error>, tokio::task::JoinError>) -> Result<T, Error> {
    r.map_err(|e| Error::Invalid(format!("the check stopped: {e}")))?
}

/// Query of a check.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    /// Keep the result with the dataset version (default true).
    #[serde(default = "yes")]
    store: bool,
}

fn yes() -> bool {
    true
}

/// Validates a stored version against the suite in the body (YAML, or the same as JSON).
/// `value_set_from` may name stored datasets (`dataset: NAME@N`); `file:` is refused here, as it
/// would read the server's disk.
async fn validate_version(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
    q: Query<CheckQuery>,
    req: Request,
) -> Result<Response, Error> {
    let v = api.version(&reference).await?;
    let text = small_body(req).await?;
    let suite = Suite::from_yaml(&text, "suite")?;
    if let Some(file) = suite.file_sets().first() {
        return Err(Error::Invalid(format!(
            "value_set_from: {{file: {file}}} cannot be used on the server (it would read the \
             server's disk): store that file as a dataset and write \
             value_set_from: {{dataset: NAME@N, column: …}}"
        )));
    }
    let mut copies = Vec::new();
    let mut sets: HashMap<String, PathBuf> = HashMap::new();
    for r in suite.dataset_sets() {
        let sv = api.version(&r).await?;
        let copy = api.store.local_copy(&sv, &api.staging).await?;
        sets.insert(r, copy.path().to_path_buf());
        copies.push(copy);
    }
    let data = api.store.local_copy(&v, &api.staging).await?;
    let path = data.path().to_path_buf();
    let run_suite = suite.clone();
    let result = joined(
        tokio::task::spawn_blocking(move || {
            let resolve = |src: &SetSource| match (&src.file, &src.dataset) {
                (_, Some(d)) => sets
                    .get(d)
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("dataset {d} was not resolved"))),
                _ => Err(Error::Invalid(
                    "value_set_from must name a stored dataset on the server".into(),
                )),
            };
            validate_file(&path, &run_suite, &resolve)
        })
        .await,
    )?;
    drop((data, copies));
    let result_json = result.to_json();
    let check = if q.store {
        Some(
            api.store
                .record_check(
                    &v,
                    NewCheck {
                        kind: CheckKind::Validation,
                        against: Some(suite.name.clone()),
                        success: result.success,
                        summary: result_json["statistics"].clone(),
                        definition: text,
                        result: result_json.clone(),
                        report_html: crate::html::validation_report(&result, &v.reference()),
                    },
                )
                .await?,
        )
    } else {
        None
    };
    Ok(json(&serde_json::json!({
        "check": check,
        "result": result_json,
        "summary": result.summary(),
    })))
}

/// A drift request: the stored version in the path is the current data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftRequest {
    /// The reference version (`NAME@N`).
    reference: String,
    /// Only these columns.
    #[serde(default)]
    columns: Vec<String>,
    /// One method for every column.
    #[serde(default)]
    method: Option<String>,
    /// One threshold for every column.
    #[serde(default)]
    threshold: Option<f64>,
    /// Method per column.
    #[serde(default)]
    per_column_method: HashMap<String, String>,
    /// Threshold per column.
    #[serde(default)]
    per_column_threshold: HashMap<String, f64>,
    /// Dataset drift when at least this share of columns drifted (default 0.5).
    #[serde(default)]
    drift_share: Option<f64>,
}

/// Computes drift of a stored version (current) against another (reference).
async fn drift_version(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
    q: Query<CheckQuery>,
    req: Request,
) -> Result<Response, Error> {
    let current = api.version(&reference).await?;
    let text = small_body(req).await?;
    let body: DriftRequest = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("invalid drift request: {e}")))?;
    let reference_version = api.version(&body.reference).await?;
    let mut opts = DriftOptions {
        columns: (!body.columns.is_empty()).then(|| body.columns.clone()),
        method: body.method.as_deref().map(str::parse).transpose()?,
        threshold: body.threshold,
        drift_share: body.drift_share.unwrap_or(0.5),
        ..DriftOptions::default()
    };
    for (col, m) in &body.per_column_method {
        opts.per_column_method.insert(col.clone(), m.parse()?);
    }
    opts.per_column_threshold = body.per_column_threshold.clone();
    let r = api
        .store
        .local_copy(&reference_version, &api.staging)
        .await?;
    let c = api.store.local_copy(&current, &api.staging).await?;
    let (rp, cp) = (r.path().to_path_buf(), c.path().to_path_buf());
    let mut report =
        joined(tokio::task::spawn_blocking(move || drift_files(&rp, &cp, &opts)).await)?;
    drop((r, c));
    report.reference = reference_version.reference();
    report.current = current.reference();
    let report_json = serde_json::to_value(&report)
        .map_err(|e| Error::Invalid(format!("cannot encode the report: {e}")))?;
    let check = if q.store {
        Some(
            api.store
                .record_check(
                    &current,
                    NewCheck {
                        kind: CheckKind::Drift,
                        against: Some(reference_version.reference()),
                        success: !report.dataset_drift,
                        summary: serde_json::json!({
                            "dataset_drift": report.dataset_drift,
                            "drifted_columns": report.drifted_columns,
                            "checked_columns": report.columns.len(),
                            "share": report.share,
                            "drift_share": report.drift_share,
                        }),
                        definition: text,
                        result: report_json.clone(),
                        report_html: crate::html::drift_report(&report),
                    },
                )
                .await?,
        )
    } else {
        None
    };
    Ok(json(&serde_json::json!({
        "check": check,
        "report": report_json,
        "summary": report.summary(),
    })))
}

/// Query of a diff.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    /// The older version (`NAME@N`) to compare the path's version with.
    #[serde(default)]
    against: Option<String>,
}

/// What changed from `against` to the path's version: schema, rows, per-column changes and
/// drift verdicts.
async fn diff_versions(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
    q: Query<DiffQuery>,
) -> Result<Response, Error> {
    let new = api.version(&reference).await?;
    let against = q.against.as_deref().ok_or_else(|| {
        Error::Invalid("missing parameter 'against': the version to compare with (NAME@N)".into())
    })?;
    let old = api.version(against).await?;
    let a = api.store.local_copy(&old, &api.staging).await?;
    let b = api.store.local_copy(&new, &api.staging).await?;
    let (ap, bp) = (a.path().to_path_buf(), b.path().to_path_buf());
    let diff =
        joined(tokio::task::spawn_blocking(move || crate::diff::diff_files(&ap, &bp)).await)?;
    drop((a, b));
    Ok(json(&serde_json::json!({
        "old": old.reference(),
        "new": new.reference(),
        "diff": diff,
        "summary": diff.summary(),
    })))
}

/// Query of a check listing.
#[derive(Debug, Deserialize)]
pub struct ChecksQuery {
    /// `validation` or `drift`.
    #[serde(default)]
    kind: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    max_results: Option<i64>,
}

/// Checks of a dataset (`NAME`: every version) or of one version (`NAME@N`), newest first.
async fn list_checks(
    State(api): State<DataApi>,
    Path(reference): Path<String>,
    q: Query<ChecksQuery>,
) -> Result<Response, Error> {
    let (name, version) = if reference.contains('@') {
        let (n, v) = parse_reference(&reference)?;
        let version = api.store.get(&n, v).await?.version;
        (n, Some(version))
    } else {
        validate_name(&reference)?;
        (reference.clone(), None)
    };
    let kind = q.kind.as_deref().map(CheckKind::parse).transpose()?;
    let limit = q.max_results.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::Invalid(format!(
            "max_results must be between 1 and 1000, got {limit}"
        )));
    }
    let checks = api.store.list_checks(&name, version, kind, limit).await?;
    Ok(json(&serde_json::json!({ "checks": checks })))
}

/// Query of one check.
#[derive(Debug, Deserialize)]
pub struct CheckFormat {
    /// `json` (default) or `html`.
    #[serde(default)]
    format: Option<String>,
}

async fn get_check(
    State(api): State<DataApi>,
    Path(id): Path<String>,
    q: Query<CheckFormat>,
) -> Result<Response, Error> {
    let id: i64 = id
        .parse()
        .map_err(|_| Error::Invalid(format!("check id must be a number, got '{id}'")))?;
    match q.format.as_deref() {
        None | Some("json") => {
            let (check, result, definition) = api.store.get_check(id).await?;
            Ok(json(&serde_json::json!({
                "check": check,
                "result": result,
                "definition": definition,
            })))
        }
        Some("html") => Ok((
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            api.store.check_html(id).await?,
        )
            .into_response()),
        Some(other) => Err(Error::Invalid(format!(
            "unknown format '{other}': use json or html"
        ))),
    }
}

/// The dataset router (`/api/2.0/loopml/datasets/...`).
pub fn router(api: DataApi) -> Router {
    Router::new()
        .route("/api/2.0/loopml/datasets", get(list))
        .route("/api/2.0/loopml/datasets/{name}/versions", post(upload))
        .route("/api/2.0/loopml/datasets/{reference}", get(show))
        .route("/api/2.0/loopml/datasets/{reference}/content", get(content))
        .route(
            "/api/2.0/loopml/datasets/{reference}/validations",
            post(validate_version),
        )
        .route(
            "/api/2.0/loopml/datasets/{reference}/drift",
            post(drift_version),
        )
        .route(
            "/api/2.0/loopml/datasets/{reference}/diff",
            get(diff_versions),
        )
        .route(
            "/api/2.0/loopml/datasets/{reference}/checks",
            get(list_checks),
        )
        .route("/api/2.0/loopml/dataset-checks/{id}", get(get_check))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(api)
}
