//! Versioned datasets: `add` stores a file content-addressed (sha256 of its bytes) with its
//! schema and profile and numbers it `name@1`, `name@2`, …; adding identical content again
//! returns the existing version (as DVC does). Bytes live once in the artifact store.

use std::path::{Path, PathBuf};

use loopml_store::{ArtifactPath, ArtifactStore, Database, Row, StoreError};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::profile::{Profile, profile_file};
use crate::reader::{BatchReader, FileFormat};

/// A stored dataset version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetVersion {
    /// Dataset name.
    pub name: String,
    /// Version number, from 1.
    pub version: i64,
    /// sha256 of the file's bytes, hex.
    pub digest: String,
    /// File format.
    pub format: String,
    /// File size.
    pub size_bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Columns.
    pub columns: i64,
    /// Columns with their Arrow types: `[{name, type, nullable}]`.
    pub schema: serde_json::Value,
    /// Where the data came from (path or URL given at `add`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Created, ms since the epoch.
    pub creation_timestamp: i64,
    /// Profile (omitted in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<serde_json::Value>,
}

impl DatasetVersion {
    /// `name@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
    /// Short digest for display (12 hex digits).
    pub fn short_digest(&self) -> &str {
        self.digest.get(..12).unwrap_or(&self.digest)
    }
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Parses `name`, `name@3` or `name@latest`.
pub fn parse_reference(raw: &str) -> Result<(String, Option<i64>)> {
    let (name, version) = match raw.rsplit_once('@') {
        Some((n, v)) if v.eq_ignore_ascii_case("latest") => (n, None),
        Some((n, v)) => (
            n,
            Some(v.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::Invalid(format!(
                    "'{raw}': the version after '@' must be a number ≥ 1 or 'latest'"
                ))
            })?),
        ),
        None => (raw, None),
    };
    validate_name(name)?;
    Ok((name.to_string(), version))
}

/// Checks a dataset name: 1–200 characters, letters, digits, `_ - .`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid dataset name '{name}': use 1–200 letters, digits, '_', '-' or '.', not \
             starting with '.'"
        )))
    }
}

/// The datasets tables' migrations, in order.
pub const MIGRATIONS: &[loopml_store::Migration] = &[
    loopml_store::Migration {
        name: "0001_datasets",
        sqlite: include_str!("../migrations/sqlite/0001_datasets.sql"),
        postgres: include_str!("../migrations/postgres/0001_datasets.sql"),
    },
    loopml_store::Migration {
        name: "0002_dataset_checks",
        sqlite: include_str!("../migrations/sqlite/0002_dataset_checks.sql"),
        postgres: include_str!("../migrations/postgres/0002_dataset_checks.sql"),
    },
];

const COLUMNS: &str = "name, version, digest, format, size_bytes, rows, columns, schema, source, \
     creation_time";

fn version_from_row(r: &Row<'_>) -> Result<DatasetVersion, StoreError> {
    Ok(DatasetVersion {
        name: r.string(0)?,
        version: r.i64(1)?,
        digest: r.string(2)?,
        format: r.string(3)?,
        size_bytes: r.i64(4)?,
        rows: r.i64(5)?,
        columns: r.i64(6)?,
        schema: serde_json::from_str(r.str(7)?).unwrap_or(serde_json::Value::Null),
        source: r.opt_string(8)?,
        creation_timestamp: r.i64(9)?,
        profile: None,
    })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// sha256 of a file, hex, read in 1 MiB chunks.
pub fn file_digest(path: &Path) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::Invalid(format!("{}: cannot open: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Invalid(format!("{}: cannot read: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, size))
}

fn schema_json(path: &Path) -> Result<(serde_json::Value, i64)> {
    let schema = BatchReader::open(path)?.schema();
    let cols: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({"name": f.name(), "type": f.data_type().to_string(),
                               "nullable": f.is_nullable()})
        })
        .collect();
    let n = cols.len() as i64;
    Ok((serde_json::Value::Array(cols), n))
}

/// A small number from a digest, to spread retries apart.
fn digest_seed(digest: &str) -> u32 {
    digest
        .bytes()
        .take(8)
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
}

/// Dataset versions over the metadata store and the artifact store.
#[derive(Debug, Clone)]
pub struct DatasetStore {
    pub(crate) db: Database,
    pub(crate) artifacts: ArtifactStore,
}

impl DatasetStore {
    /// Builds the store (applies the dataset migrations).
    pub fn new(db: Database, artifacts: ArtifactStore) -> Result<Self> {
        db.migrate("data", MIGRATIONS)?;
        Ok(Self { db, artifacts })
    }

    pub(crate) fn blob_path(digest: &str, format: &str) -> Result<ArtifactPath> {
        Ok(ArtifactPath::parse(&format!(
            "datasets/sha256/{digest}.{format}"
        ))?)
    }

    /// Adds a local CSV or Parquet file as the next version of `name` (or returns the version
    /// that already holds identical bytes).
    pub async fn add(
        &self,
        name: &str,
        path: &Path,
        source: Option<String>,
    ) -> Result<DatasetVersion> {
        validate_name(name)?;
        let p = path.to_path_buf();
        let (digest, size, format, schema, ncols, profile) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let format = FileFormat::detect(&p)?;
                let (digest, size) = file_digest(&p)?;
                let (schema, ncols) = schema_json(&p)?;
                let profile = profile_file(&p)?;
                Ok((digest, size, format, schema, ncols, profile))
            })
            .await
            .map_err(|e| Error::Invalid(format!("profiling failed: {e}")))??;
        if let Some(existing) = self.find_digest(name, &digest).await? {
            return Ok(existing);
        }
        let blob = Self::blob_path(&digest, format.extension())?;
        if self.artifacts.get(&blob).await.is_err() {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::Invalid(format!("{}: cannot open: {e}", path.display())))?;
            let stream = file_chunks(file);
            self.artifacts.put(&blob, stream).await?;
        }
        self.insert(name, digest, size, format, schema, ncols, &profile, source)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        name: &str,
        digest: String,
        size: u64,
        format: FileFormat,
        schema: serde_json::Value,
        ncols: i64,
        profile: &Profile,
        source: Option<String>,
    ) -> Result<DatasetVersion> {
        let name = name.to_string();
        let profile_json = serde_json::to_string(profile)
            .map_err(|e| Error::Invalid(format!("cannot encode the profile: {e}")))?;
        let rows = profile.rows as i64;
        let (n2, d2) = (name.clone(), digest.clone());
        // The next version number is read then written: two processes adding to one dataset at
        // once (replicas on PostgreSQL) can pick the same number, and the loser's insert hits
        // the primary key. It simply tries again with the number after the winner's.
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (name, digest, schema, profile_json, source) = (
                name.clone(),
                digest.clone(),
                schema.clone(),
                profile_json.clone(),
                source.clone(),
            );
            let written = self.db
            .write(move |c| -> Result<()> {
                // Same content under the same name: keep the first version (idempotent add).
                let exists = c.query_opt(
                    "SELECT version FROM dataset_versions WHERE name = ?1 AND digest = ?2",
                    &[(&name).into(), (&digest).into()],
                    |r| r.i64(0),
                )?;
                if exists.is_some() {
                    return Ok(());
                }
                let next = c
                    .query_opt(
                        "SELECT COALESCE(MAX(version), 0) + 1 FROM dataset_versions WHERE name = ?1",
                        &[(&name).into()],
                        |r| r.i64(0),
                    )?
                    .unwrap_or(1);
                c.execute(
                    "INSERT INTO dataset_versions (name, version, digest, format, size_bytes, \
                     rows, columns, schema, profile, source, creation_time) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    &[
                        (&name).into(),
                        next.into(),
                        (&digest).into(),
                        format.extension().into(),
                        (size as i64).into(),
                        rows.into(),
                        ncols.into(),
                        schema.to_string().into(),
                        profile_json.into(),
                        source.as_ref().into(),
                        now_ms().into(),
                    ],
                )?;
                Ok(())
            })
            .await;
            match written {
                Err(Error::Store(e)) if e.is_unique_violation() && attempt < 64 => {
                    // Spread the retries of a crowd of writers apart (a few ms, growing).
                    let jitter = u64::from(std::process::id() ^ digest_seed(&d2)) % 4;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        u64::from(attempt.min(10)) + jitter,
                    ))
                    .await;
                    continue;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        self.find_digest(&n2, &d2)
            .await?
            .ok_or_else(|| Error::Invalid(format!("dataset {n2} vanished while being added")))
    }

    async fn find_digest(&self, name: &str, digest: &str) -> Result<Option<DatasetVersion>> {
        let (name, digest) = (name.to_string(), digest.to_string());
        self.db
            .read(move |c| -> Result<_> {
                Ok(c.query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM dataset_versions WHERE name = ?1 AND digest = ?2"
                    ),
                    &[(&name).into(), (&digest).into()],
                    version_from_row,
                )?)
            })
            .await
    }

    /// Gets `name@version` (the latest when `version` is `None`), with its profile.
    pub async fn get(&self, name: &str, version: Option<i64>) -> Result<DatasetVersion> {
        validate_name(name)?;
        let name = name.to_string();
        self.db
            .read(move |c| -> Result<_> {
                let sql = format!(
                    "SELECT {COLUMNS}, profile FROM dataset_versions WHERE name = ?1 AND \
                     version = COALESCE(?2, (SELECT MAX(version) FROM dataset_versions \
                     WHERE name = ?1))"
                );
                let found = c.query_opt(&sql, &[(&name).into(), version.into()], |r| {
                    let mut v = version_from_row(r)?;
                    v.profile = serde_json::from_str(r.str(10)?).ok();
                    Ok(v)
                })?;
                found.ok_or_else(|| {
                    Error::NotFound(match version {
                        Some(v) => format!("dataset version {name}@{v} does not exist"),
                        None => format!("dataset {name} does not exist"),
                    })
                })
            })
            .await
    }

    /// Every version of every dataset (or of one), newest first within a name.
    pub async fn list(&self, name: Option<String>) -> Result<Vec<DatasetVersion>> {
        self.db
            .read(move |c| -> Result<_> {
                Ok(match &name {
                    Some(n) => c.query(
                        &format!(
                            "SELECT {COLUMNS} FROM dataset_versions WHERE name = ?1 \
                             ORDER BY version DESC"
                        ),
                        &[n.into()],
                        version_from_row,
                    )?,
                    None => c.query(
                        &format!(
                            "SELECT {COLUMNS} FROM dataset_versions ORDER BY name, version DESC"
                        ),
                        &[],
                        version_from_row,
                    )?,
                })
            })
            .await
    }

    /// Versions (of any name) holding content with this digest.
    pub async fn find_by_digest(&self, digest: &str) -> Result<Vec<DatasetVersion>> {
        let digest = digest.to_string();
        self.db
            .read(move |c| -> Result<_> {
                Ok(c.query(
                    &format!(
                        "SELECT {COLUMNS} FROM dataset_versions WHERE digest = ?1 \
                         ORDER BY name, version"
                    ),
                    &[(&digest).into()],
                    version_from_row,
                )?)
            })
            .await
    }

    /// The stored version behind a dataset logged elsewhere (e.g. with MLflow's `log_input`):
    /// one whose sha256 equals the logged digest (optionally written `sha256:…`) or starts with
    /// it (at least 12 hex digits), preferring the logged name; else the version the logged
    /// source names (`…/api/2.0/loopml/datasets/NAME@N…` in a URL or path). Returns the version
    /// and `digest` or `source`, the way it matched.
    pub async fn match_logged(
        &self,
        name: &str,
        digest: &str,
        source: &str,
    ) -> Result<Option<(DatasetVersion, &'static str)>> {
        let d = digest.trim();
        let d = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
        if (12..=64).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_hexdigit()) {
            let pattern = format!("{d}%");
            let mut found = self
                .db
                .read(move |c| -> Result<_> {
                    Ok(c.query(
                        &format!(
                            "SELECT {COLUMNS} FROM dataset_versions WHERE digest LIKE ?1 \
                             ORDER BY name, version LIMIT 100"
                        ),
                        &[(&pattern).into()],
                        version_from_row,
                    )?)
                })
                .await?;
            let first_digest = found.first().map(|v| v.digest.clone());
            // A prefix shared by different contents is ambiguous: no link rather than a wrong one.
            if found
                .iter()
                .all(|v| Some(&v.digest) == first_digest.as_ref())
                && !found.is_empty()
            {
                let pick = found.iter().position(|v| v.name == name).unwrap_or(0);
                return Ok(Some((found.swap_remove(pick), "digest")));
            }
        }
        if let Some(reference) = named_in_source(source)
            && let Ok((n, v)) = parse_reference(&reference)
            && let Ok(found) = self.get(&n, v).await
        {
            let mut found = found;
            found.profile = None;
            return Ok(Some((found, "source")));
        }
        Ok(None)
    }

    /// The stored bytes of a version, as a stream.
    pub async fn open(&self, v: &DatasetVersion) -> Result<(u64, loopml_store::ByteStream)> {
        Ok(self
            .artifacts
            .get(&Self::blob_path(&v.digest, &v.format)?)
            .await?)
    }

    /// The named columns of dataset `reference` (`name`, `name@3`, `name@latest`) as text,
    /// row by row (nulls as empty text); the file is fetched into `staging` for the read.
    pub async fn text_columns(
        &self,
        reference: &str,
        columns: Vec<String>,
        staging: &Path,
    ) -> Result<Vec<Vec<String>>> {
        let (name, version) = parse_reference(reference)?;
        let v = self.get(&name, version).await?;
        std::fs::create_dir_all(staging)
            .map_err(|e| Error::Invalid(format!("{}: cannot create: {e}", staging.display())))?;
        let file = staging.join(format!(
            "text-{}-{}.{}",
            v.short_digest(),
            uuid_suffix(),
            v.format
        ));
        self.download(&v, &file).await?;
        let path = file.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<String>>> {
            use arrow::array::Array;
            let reader = BatchReader::open_columns(&path, &columns)?;
            let mut rows = Vec::new();
            for batch in reader {
                let batch = batch?;
                let cols = columns
                    .iter()
                    .map(|c| {
                        let i = batch
                            .schema()
                            .index_of(c)
                            .map_err(|e| Error::Invalid(e.to_string()))?;
                        arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                            .map_err(|e| Error::Invalid(format!("column '{c}' is not text: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let strings: Vec<&arrow::array::StringArray> = cols
                    .iter()
                    .filter_map(|a| a.as_any().downcast_ref::<arrow::array::StringArray>())
                    .collect();
                for r in 0..batch.num_rows() {
                    rows.push(
                        strings
                            .iter()
                            .map(|a| {
                                if a.is_null(r) {
                                    String::new()
                                } else {
                                    a.value(r).to_string()
                                }
                            })
                            .collect(),
                    );
                }
            }
            Ok(rows)
        })
        .await
        .map_err(|e| Error::Invalid(format!("reading the dataset failed: {e}")));
        let _ = std::fs::remove_file(&file);
        read?
    }

    /// Writes a version's bytes to a local file (temp file, then rename).
    pub async fn download(&self, v: &DatasetVersion, out: &Path) -> Result<u64> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (_, mut stream) = self.open(v).await?;
        let tmp: PathBuf = out.with_extension("loopml-partial");
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::Invalid(format!("{}: cannot write: {e}", tmp.display())))?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            f.write_all(&chunk)
                .await
                .map_err(|e| Error::Invalid(format!("{}: cannot write: {e}", tmp.display())))?;
        }
        f.sync_all()
            .await
            .map_err(|e| Error::Invalid(format!("{}: cannot write: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, out)
            .await
            .map_err(|e| Error::Invalid(format!("{}: cannot write: {e}", out.display())))?;
        Ok(n)
    }
}

/// The `NAME@N` a dataset source names through loopml's content URL
/// (`…/api/2.0/loopml/datasets/NAME@N[/content]`), in a plain string or in MLflow's source JSON.
fn named_in_source(source: &str) -> Option<String> {
    const MARK: &str = "/api/2.0/loopml/datasets/";
    let at = source.find(MARK)? + MARK.len();
    let rest = &source[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
        .unwrap_or(rest.len());
    let reference = &rest[..end];
    reference.contains('@').then(|| reference.to_string())
}

/// A file as a stream of 1 MiB chunks.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin + Send {
    use tokio::io::AsyncReadExt;
    Box::pin(futures::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_naming_a_stored_version() {
        assert_eq!(
            named_in_source(r#"{"url": "http://h:5000/api/2.0/loopml/datasets/churn@3/content"}"#)
                .as_deref(),
            Some("churn@3")
        );
        assert_eq!(
            named_in_source("/api/2.0/loopml/datasets/a.b-c@12").as_deref(),
            Some("a.b-c@12")
        );
        assert_eq!(named_in_source("/api/2.0/loopml/datasets/churn"), None);
        assert_eq!(named_in_source(r#"{"path": "/tmp/train.csv"}"#), None);
    }

    #[test]
    fn references() {
        assert_eq!(parse_reference("churn").unwrap(), ("churn".into(), None));
        assert_eq!(
            parse_reference("churn@3").unwrap(),
            ("churn".into(), Some(3))
        );
        assert_eq!(
            parse_reference("churn@latest").unwrap(),
            ("churn".into(), None)
        );
        assert!(parse_reference("churn@0").is_err());
        assert!(parse_reference("churn@x").is_err());
        assert!(parse_reference("../etc").is_err());
        assert!(parse_reference("a/b").is_err());
        assert!(parse_reference("").is_err());
    }
}
