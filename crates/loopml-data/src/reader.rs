//! Reading CSV and Parquet files as a stream of Arrow record batches, with errors that name the
//! file (and, for CSV, the line and column) instead of a bare parser message.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

/// Rows per record batch.
pub const BATCH_ROWS: usize = 64 * 1024;
/// CSV rows read to infer column types.
pub const CSV_INFER_ROWS: usize = 10_000;

/// A supported file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// Picks the format from the file name (`.csv`, `.parquet`, `.pq`), else from the content
    /// (Parquet files start with `PAR1`).
    pub fn detect(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") | Some("txt") => return Ok(FileFormat::Csv),
            Some("parquet") | Some("pq") => return Ok(FileFormat::Parquet),
            _ => {}
        }
        let mut head = [0u8; 4];
        let n = std::io::Read::read(&mut open_file(path)?, &mut head)
            .map_err(|e| Error::Invalid(format!("{}: cannot read: {e}", path.display())))?;
        Ok(if n == 4 && &head == b"PAR1" {
            FileFormat::Parquet
        } else {
            FileFormat::Csv
        })
    }

    /// File extension for stored copies.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// A file whose decoder gave up with a panic.
fn corrupt(path: &Path) -> Error {
    Error::Invalid(format!(
        "{}: not a readable file: its contents are corrupt",
        path.display()
    ))
}

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Invalid(format!("{}: cannot open: {e}", path.display())))
}

/// A stream of record batches from one file.
pub struct BatchReader {
    path: PathBuf,
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>,
    rows_read: u64,
    total_rows: Option<u64>,
    format: FileFormat,
}

impl std::fmt::Debug for BatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReader")
            .field("path", &self.path)
            .field("rows_read", &self.rows_read)
            .finish()
    }
}

impl BatchReader {
    /// Opens a CSV or Parquet file. Empty files and files without columns are errors.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Invalid(format!("{}: cannot open: {e}", path.display())))?;
        if meta.len() == 0 {
            return Err(Error::Invalid(format!(
                "{}: the file is empty",
                path.display()
            )));
        }
        match FileFormat::detect(path)? {
            FileFormat::Parquet => Self::open_parquet(path, None),
            FileFormat::Csv => Self::open_csv(path, None),
        }
    }

    /// Opens a file reading only the named columns (Parquet decodes only those; CSV still parses
    /// every line). Batches hold the columns in file order. A missing column is an error naming
    /// the file and its columns.
    pub fn open_columns(path: &Path, columns: &[String]) -> Result<Self> {
        let full = Self::open(path)?;
        let schema = full.schema();
        let mut idx = Vec::with_capacity(columns.len());
        for name in columns {
            let Some((i, _)) = schema.column_with_name(name) else {
                return Err(missing_column(path, &schema, name));
            };
            idx.push(i);
        }
        idx.sort_unstable();
        idx.dedup();
        match FileFormat::detect(path)? {
            FileFormat::Parquet => Self::open_parquet(path, Some(idx)),
            FileFormat::Csv => Self::open_csv(path, Some(idx)),
        }
    }

    fn open_parquet(path: &Path, projection: Option<Vec<usize>>) -> Result<Self> {
        // The parquet crate panics on some corrupt files (a negative column length in the
        // footer, found by fuzzing): a damaged upload is a bad file, not a crash.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_parquet_unguarded(path, projection)
        }))
        .unwrap_or_else(|_| Err(corrupt(path)))
    }

    fn open_parquet_unguarded(path: &Path, projection: Option<Vec<usize>>) -> Result<Self> {
        let bad = |e: parquet::errors::ParquetError| {
            Error::Invalid(format!(
                "{}: not a readable Parquet file: {e}",
                path.display()
            ))
        };
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new(open_file(path)?).map_err(bad)?;
        let total = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
        if let Some(idx) = projection {
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), idx);
            builder = builder.with_projection(mask);
        }
        let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(bad)?;
        let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
        let mut r = Self::checked(path, schema, Box::new(reader))?;
        r.total_rows = total;
        r.format = FileFormat::Parquet;
        Ok(r)
    }

    fn open_csv(path: &Path, projection: Option<Vec<usize>>) -> Result<Self> {
        use arrow::csv::reader::{Format, ReaderBuilder};
        let format = Format::default().with_header(true);
        let (schema, _) = format
            .infer_schema(open_file(path)?, Some(CSV_INFER_ROWS))
            .map_err(|e| Error::Invalid(format!("{}: {}", path.display(), csv_message(&e))))?;
        let schema = Arc::new(schema);
        let mut builder = ReaderBuilder::new(Arc::clone(&schema))
            .with_format(format)
            .with_batch_size(BATCH_ROWS);
        let mut out_schema = schema;
        if let Some(idx) = projection {
            out_schema = Arc::new(
                out_schema
                    .project(&idx)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?,
            );
            builder = builder.with_projection(idx);
        }
        let reader = builder
            .build(open_file(path)?)
            .map_err(|e| Error::Invalid(format!("{}: {}", path.display(), csv_message(&e))))?;
        Self::checked(path, out_schema, Box::new(reader))
    }

    fn checked(
        path: &Path,
        schema: SchemaRef,
        batches: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>,
    ) -> Result<Self> {
        if schema.fields().is_empty() {
            return Err(Error::Invalid(format!(
                "{}: the file has no columns",
                path.display()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for f in schema.fields() {
            if !seen.insert(f.name().as_str()) {
                return Err(Error::Invalid(format!(
                    "{}: column '{}' appears more than once",
                    path.display(),
                    f.name()
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            batches,
            rows_read: 0,
            total_rows: None,
            format: FileFormat::Csv,
        })
    }

    /// Rows in the file when known without reading it (Parquet metadata), else `None`.
    pub fn total_rows(&self) -> Option<u64> {
        self.total_rows
    }

    /// The format being read.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The file's schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The error for a column a file does not have.
pub fn missing_column(path: &Path, schema: &SchemaRef, name: &str) -> Error {
    Error::Invalid(format!(
        "{}: has no column '{name}' (columns: {})",
        path.display(),
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Turns arrow-csv's messages into one a user can act on (they already carry line numbers).
fn csv_message(e: &ArrowError) -> String {
    match e {
        ArrowError::CsvError(m) | ArrowError::ParseError(m) => m.clone(),
        other => other.to_string(),
    }
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batches = &mut self.batches;
        let next = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batches.next())) {
            Ok(n) => n?,
            Err(_) => {
                // A decoder panicked on corrupt data: report it once, then end the stream.
                self.batches = Box::new(std::iter::empty());
                return Some(Err(corrupt(&self.path)));
            }
        };
        Some(match next {
            Ok(b) => {
                self.rows_read += b.num_rows() as u64;
                Ok(b)
            }
            Err(e) => Err(Error::Invalid(format!(
                "{}: {} (after {} good rows; a column whose first {CSV_INFER_ROWS} rows looked \
                 like one type holds another further down?)",
                self.path.display(),
                csv_message(&e),
                self.rows_read
            ))),
        })
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn reads_csv_and_reports_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", b"x,y\n1,a\n2,b\n");
        let r = BatchReader::open(&p).unwrap();
        assert_eq!(r.schema().fields().len(), 2);
        let rows: usize = r.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);

        let empty = write(dir.path(), "e.csv", b"");
        let err = BatchReader::open(&empty).unwrap_err().to_string();
        assert!(err.contains("e.csv") && err.contains("empty"), "{err}");

        let dup = write(dir.path(), "d.csv", b"x,x\n1,2\n");
        assert!(
            BatchReader::open(&dup)
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );

        let bad_utf8 = write(dir.path(), "u.csv", b"x,y\n1,\xff\xfe\n");
        let err = match BatchReader::open(&bad_utf8) {
            Err(e) => e.to_string(),
            Ok(r) => r.filter_map(|b| b.err()).map(|e| e.to_string()).collect(),
        };
        assert!(err.contains("u.csv"), "{err}");

        let pq = write(dir.path(), "p.parquet", b"PAR1 not really");
        assert!(
            BatchReader::open(&pq)
                .unwrap_err()
                .to_string()
                .contains("Parquet")
        );
    }

    #[test]
    fn mixed_types_past_the_inference_window_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = String::from("n,s\n");
        for i in 0..(CSV_INFER_ROWS + 10) {
            body.push_str(&format!("{i},a\n"));
        }
        body.push_str("oops,a\n");
        let p = write(dir.path(), "m.csv", body.as_bytes());
        let errs: Vec<String> = BatchReader::open(&p)
            .unwrap()
            .filter_map(|b| b.err())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("m.csv") && errs[0].contains("oops"),
            "{}",
            errs[0]
        );
    }
}
