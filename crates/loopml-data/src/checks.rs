//! Checks run against stored dataset versions (over HTTP): validation results and drift reports
//! are kept in `dataset_checks` with the version they checked — the result JSON, a short
//! summary, what was asked (the suite, or the drift options) and the HTML report — so a version's
//! history of checks can be listed and any report reopened later.

use std::path::{Path, PathBuf};

use loopml_store::{Row, StoreError};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::versions::{DatasetStore, DatasetVersion, now_ms};

/// What a check was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// An expectation suite run.
    Validation,
    /// A drift report (the version is the current side).
    Drift,
}

impl CheckKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Validation => "validation",
            CheckKind::Drift => "drift",
        }
    }

    /// Parses `validation` or `drift`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "validation" => Ok(CheckKind::Validation),
            "drift" => Ok(CheckKind::Drift),
            other => Err(Error::Invalid(format!(
                "unknown check kind '{other}': use validation or drift"
            ))),
        }
    }
}

/// One stored check, without its full result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    /// Check id.
    pub id: i64,
    /// The dataset version checked (`name@version`).
    pub dataset: String,
    /// Dataset name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// `validation` or `drift`.
    pub kind: CheckKind,
    /// The suite's name, or the drift reference (`name@version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    /// Validation: every expectation passed. Drift: no dataset drift.
    pub success: bool,
    /// Headline figures (validation statistics, or drifted columns and share).
    pub summary: serde_json::Value,
    /// Created, ms since the epoch.
    pub creation_timestamp: i64,
}

/// A check to store.
#[derive(Debug, Clone)]
pub struct NewCheck {
    /// Kind.
    pub kind: CheckKind,
    /// Suite name or drift reference.
    pub against: Option<String>,
    /// Outcome.
    pub success: bool,
    /// Headline figures.
    pub summary: serde_json::Value,
    /// What was asked: the suite YAML, or the drift options as JSON.
    pub definition: String,
    /// The full result (GX-shaped validation result, or the drift report).
    pub result: serde_json::Value,
    /// The self-contained HTML report.
    pub report_html: String,
}

const SUMMARY_COLUMNS: &str = "id, name, version, kind, against, success, summary, creation_time";

fn summary_from_row(r: &Row<'_>) -> std::result::Result<CheckSummary, StoreError> {
    let name = r.string(1)?;
    let version = r.i64(2)?;
    Ok(CheckSummary {
        id: r.i64(0)?,
        dataset: format!("{name}@{version}"),
        name,
        version,
        kind: if r.str(3)? == "drift" {
            CheckKind::Drift
        } else {
            CheckKind::Validation
        },
        against: r.opt_string(4)?,
        success: r.i64(5)? != 0,
        summary: serde_json::from_str(r.str(6)?).unwrap_or(serde_json::Value::Null),
        creation_timestamp: r.i64(7)?,
    })
}

/// A stored version's bytes as a local file: the stored file itself on the local backend, else a
/// temporary copy removed on drop.
#[derive(Debug)]
pub struct LocalCopy {
    path: PathBuf,
    temporary: bool,
}

impl LocalCopy {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl DatasetStore {
    /// The version's bytes as a local file (`scratch` holds a copy when the artifact store is
    /// not a local folder). The file is named `<name>-<version>.<format>` so errors read well.
    pub async fn local_copy(&self, v: &DatasetVersion, scratch: &Path) -> Result<LocalCopy> {
        let blob = Self::blob_path(&v.digest, &v.format)?;
        if let Some(path) = self.artifacts.local_file(&blob)? {
            return Ok(LocalCopy {
                path,
                temporary: false,
            });
        }
        tokio::fs::create_dir_all(scratch)
            .await
            .map_err(|e| Error::Invalid(format!("{}: cannot create: {e}", scratch.display())))?;
        let path = scratch.join(format!(
            "{}-{}-{}.{}",
            v.name,
            v.version,
            now_ms(),
            v.format
        ));
        self.download(v, &path).await?;
        Ok(LocalCopy {
            path,
            temporary: true,
        })
    }

    /// Stores a check of `v`.
    pub async fn record_check(&self, v: &DatasetVersion, check: NewCheck) -> Result<CheckSummary> {
        let (name, version) = (v.name.clone(), v.version);
        let created = now_ms();
        let summary = check.summary.to_string();
        let result = check.result.to_string();
        let against = check.against.clone();
        let kind = check.kind;
        let success = check.success;
        let id = self
            .db
            .write(move |c| -> Result<i64> {
                c.query_opt(
                    "INSERT INTO dataset_checks (name, version, kind, against, success, summary, \
                     definition, result, report_html, creation_time) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                    &[
                        (&name).into(),
                        version.into(),
                        kind.as_str().into(),
                        against.as_ref().into(),
                        success.into(),
                        (&summary).into(),
                        (&check.definition).into(),
                        (&result).into(),
                        (&check.report_html).into(),
                        created.into(),
                    ],
                    |r| r.i64(0),
                )?
                .ok_or_else(|| Error::Invalid("the check was not stored".into()))
            })
            .await?;
        Ok(CheckSummary {
            id,
            dataset: v.reference(),
            name: v.name.clone(),
            version: v.version,
            kind: check.kind,
            against: check.against,
            success: check.success,
            summary: check.summary,
            creation_timestamp: created,
        })
    }

    /// Checks of a dataset (every version, or one), newest first, at most `limit`.
    pub async fn list_checks(
        &self,
        name: &str,
        version: Option<i64>,
        kind: Option<CheckKind>,
        limit: i64,
    ) -> Result<Vec<CheckSummary>> {
        let name = name.to_string();
        self.db
            .read(move |c| -> Result<_> {
                Ok(c.query(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS} FROM dataset_checks WHERE name = ?1 \
                         AND (CAST(?2 AS BIGINT) IS NULL OR version = ?2) AND (CAST(?3 AS TEXT) IS NULL OR kind = ?3) \
                         ORDER BY id DESC LIMIT ?4"
                    ),
                    &[
                        (&name).into(),
                        version.into(),
                        kind.map(CheckKind::as_str).into(),
                        limit.into(),
                    ],
                    summary_from_row,
                )?)
            })
            .await
    }

    /// One check: its summary, full result and definition.
    pub async fn get_check(&self, id: i64) -> Result<(CheckSummary, serde_json::Value, String)> {
        self.db
            .read(move |c| -> Result<_> {
                c.query_opt(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS}, result, definition FROM dataset_checks \
                         WHERE id = ?1"
                    ),
                    &[id.into()],
                    |r| {
                        Ok((
                            summary_from_row(r)?,
                            serde_json::from_str(r.str(8)?).unwrap_or(serde_json::Value::Null),
                            r.string(9)?,
                        ))
                    },
                )?
                .ok_or_else(|| Error::NotFound(format!("dataset check {id} does not exist")))
            })
            .await
    }

    /// One check's HTML report.
    pub async fn check_html(&self, id: i64) -> Result<String> {
        self.db
            .read(move |c| -> Result<_> {
                c.query_opt(
                    "SELECT report_html FROM dataset_checks WHERE id = ?1",
                    &[id.into()],
                    |r| r.string(0),
                )?
                .ok_or_else(|| Error::NotFound(format!("dataset check {id} does not exist")))
            })
            .await
    }
}
