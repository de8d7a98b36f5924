//! `loopml db copy`: moves an embedded SQLite installation onto PostgreSQL. Both sides must
//! carry the same migrations (the caller migrates them first). The copy is one PostgreSQL
//! transaction: it empties the target's tables (the rows migrations seed), streams every
//! table from a read snapshot of the SQLite file with `COPY ... FROM STDIN`, moves the
//! identity sequences past the copied ids, and compares row counts before it commits, so the
//! target holds either everything or nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use rusqlite::types::ValueRef;

use super::{Backend, ConnInner, Database, DbInner};
use crate::StoreError;

/// Bytes of COPY text sent per `COPY` statement.
const COPY_CHUNK: usize = 4 << 20;

/// The bookkeeping table, which the migrations on each side already wrote.
const MIGRATIONS_TABLE: &str = "loopml_migrations";

/// What [`copy_database`] moved: rows per table, in copy order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)` in the order they were copied.
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    /// Rows copied in all.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// Copies every table of the SQLite database `source` into the PostgreSQL database `target`,
/// replacing what the target's tables hold. Both must already be migrated to the same
/// versions; a table or column one side lacks is refused before anything is written.
pub async fn copy_database(source: &Database, target: &Database) -> Result<CopyReport, StoreError> {
    let path = match (&source.0, &target.0) {
        (DbInner::Sqlite(s), DbInner::Postgres(_)) => match &s.config().backend {
            Backend::Sqlite { path } => path.clone(),
            Backend::Postgres { .. } => unreachable_backend()?,
        },
        _ => {
            return Err(StoreError::InvalidConfig(format!(
                "db copy moves a SQLite database onto PostgreSQL; got {} -> {} (to copy out of \
                 PostgreSQL use pg_dump)",
                source.backend(),
                target.backend()
            )));
        }
    };
    let source_migrations = applied(source).await?;
    let target_migrations = applied(target).await?;
    if source_migrations != target_migrations {
        return Err(StoreError::InvalidConfig(format!(
            "source and target are on different migrations ({} vs {} applied); open both \
             with this loopml version first (loopml db migrate)",
            source_migrations.len(),
            target_migrations.len()
        )));
    }
    let tables = source_tables(source).await?;
    let target_columns = target_columns(target).await?;
    for (table, cols) in &tables {
        let Some(have) = target_columns.get(table) else {
            return Err(StoreError::InvalidConfig(format!(
                "table {table} is missing on the target"
            )));
        };
        let missing: Vec<&String> = cols.iter().filter(|c| !have.contains(*c)).collect();
        if !missing.is_empty() || have.len() != cols.len() {
            return Err(StoreError::InvalidConfig(format!(
                "table {table} has columns {cols:?} in SQLite but {have:?} on PostgreSQL"
            )));
        }
    }
    target
        .write(move |c| {
            let ConnInner::Postgres(s) = &c.0 else {
                return unreachable_backend();
            };
            copy_tables(s, path, &tables)
        })
        .await
}

/// Applied migrations; none when the bookkeeping table does not exist yet (a fresh database).
async fn applied(db: &Database) -> Result<Vec<(String, i64, String)>, StoreError> {
    db.applied_migrations().await
}

fn unreachable_backend<T>() -> Result<T, StoreError> {
    Err(StoreError::InvalidConfig(
        "db copy: unexpected backend combination".into(),
    ))
}

/// Source tables in creation order (parents before the tables whose foreign keys name them)
/// with their columns, the bookkeeping table left out.
async fn source_tables(source: &Database) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    source
        .read(|c| {
            let names = c.query(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> ? ORDER BY rowid",
                &[MIGRATIONS_TABLE.into()],
                |r| r.string(0),
            )?;
            names
                .into_iter()
                .map(|t| {
                    let cols = c.query(
                        "SELECT name FROM pragma_table_info(?) ORDER BY cid",
                        &[t.as_str().into()],
                        |r| r.string(0),
                    )?;
                    Ok((t, cols))
                })
                .collect()
        })
        .await
}

async fn target_columns(target: &Database) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let rows = target
        .read(|c| {
            c.query(
                "SELECT table_name, column_name FROM information_schema.columns \
                 WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
                &[],
                |r| Ok((r.string(0)?, r.string(1)?)),
            )
        })
        .await?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (t, c) in rows {
        out.entry(t).or_default().push(c);
    }
    Ok(out)
}

/// A SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn copy_tables(
    s: &super::postgres::Session<'_>,
    path: PathBuf,
    tables: &[(String, Vec<String>)],
) -> Result<CopyReport, StoreError> {
    let src = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let sq = |e: rusqlite::Error| StoreError::Database(format!("reading {}: {e}", path.display()));
    // One read snapshot for the whole copy: a server still writing cannot tear it.
    src.execute_batch("BEGIN").map_err(sq)?;

    // Children first, so emptying never trips a foreign key.
    for (table, _) in tables.iter().rev() {
        s.execute(&format!("DELETE FROM {}", ident(table)), &[])?;
    }
    let mut report = CopyReport::default();
    for (table, cols) in tables {
        let col_list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let copy_sql = format!("COPY {} ({col_list}) FROM STDIN", ident(table));
        let mut stmt = src
            .prepare(&format!("SELECT {col_list} FROM {}", ident(table)))
            .map_err(sq)?;
        let mut rows = stmt.query([]).map_err(sq)?;
        let mut buf = String::with_capacity(COPY_CHUNK + 4096);
        let mut read = 0u64;
        let mut loaded = 0u64;
        while let Some(row) = rows.next().map_err(sq)? {
            for i in 0..cols.len() {
                if i > 0 {
                    buf.push('\t');
                }
                copy_field(&mut buf, row.get_ref(i).map_err(sq)?);
            }
            buf.push('\n');
            read += 1;
            if buf.len() >= COPY_CHUNK {
                loaded += s.copy_in(&copy_sql, bytes::Bytes::from(std::mem::take(&mut buf)))?;
            }
        }
        if !buf.is_empty() {
            loaded += s.copy_in(&copy_sql, bytes::Bytes::from(buf))?;
        }
        let counted = s
            .query(&format!("SELECT COUNT(*) FROM {}", ident(table)), &[])?
            .first()
            .map(|r| super::postgres::row_i64(r, 0))
            .transpose()?
            .unwrap_or(0);
        if loaded != read || counted != read as i64 {
            return Err(StoreError::Database(format!(
                "table {table}: read {read} rows from SQLite, PostgreSQL loaded {loaded} and \
                 holds {counted}; nothing was committed"
            )));
        }
        tracing::info!(table = %table, rows = read, "copied");
        report.tables.push((table.clone(), read));
    }
    // Identity columns continue after the copied ids.
    let identities = s.query(
        "SELECT table_name, column_name FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES'",
        &[],
    )?;
    for r in &identities {
        let (table, col) = (
            super::postgres::row_str(r, 0)?,
            super::postgres::row_str(r, 1)?,
        );
        s.query(
            &format!(
                "SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({c}), 0) + 1, false) \
                 FROM {t}",
                c = ident(col),
                t = ident(table)
            ),
            &[ident(table).as_str().into(), col.into()],
        )?;
    }
    Ok(report)
}

/// One field in COPY's text format: `\N` for NULL, backslash escapes for the separators.
fn copy_field(out: &mut String, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push_str("\\N"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) => {
            if f.is_nan() {
                out.push_str("NaN");
            } else if f.is_infinite() {
                out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
            } else {
                // Debug is the shortest text that parses back to the same double.
                let _ = write!(out, "{f:?}");
            }
        }
        ValueRef::Text(t) => escape_text(out, &String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => {
            out.push_str("\\\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
    }
}

fn escape_text(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_copy_text_format() {
        let mut s = String::new();
        for v in [
            ValueRef::Null,
            ValueRef::Integer(-7),
            ValueRef::Real(0.1),
            ValueRef::Real(f64::NEG_INFINITY),
            ValueRef::Text(b"a\tb\nc\\d\re \xc3\xbc"),
            ValueRef::Blob(&[0, 255]),
        ] {
            copy_field(&mut s, v);
            s.push('|');
        }
        assert_eq!(s, "\\N|-7|0.1|-Infinity|a\\tb\\nc\\\\d\\re ü|\\\\x00ff|");
    }
}
