//! The metadata database behind one backend-neutral API: SQLite (embedded default) or
//! PostgreSQL. Domain crates write SQL with `?` / `?N` placeholders and run it through [`Conn`]
//! inside [`Database::read`] / [`Database::write`] closures; they never learn which backend
//! they are on. Each backend runs the closures on tokio's blocking pool (SQLite: one writer
//! thread with group commit; PostgreSQL: a bounded connection pool, one transaction each).

mod copy;
mod lease;
mod pg_tls;
mod placeholders;
mod postgres;
mod sqlite;

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::StoreError;

pub use copy::{CopyReport, copy_database};
pub use lease::{STORE_MIGRATIONS, lease_holder};
pub use placeholders::to_dollar_placeholders;

/// How hard a commit works to survive crashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// SQLite: WAL with `synchronous=NORMAL`: a committed write survives the process being
    /// killed (`kill -9`); a power loss may drop the last few commits. PostgreSQL: the
    /// server's own `synchronous_commit` setting.
    #[default]
    Normal,
    /// SQLite: WAL with `synchronous=FULL`: every commit is fsynced before it is acknowledged.
    /// PostgreSQL: `synchronous_commit=on` for loopml's sessions whatever the server default.
    Full,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            other => Err(format!(
                "unknown durability '{other}' (expected 'normal' or 'full')"
            )),
        }
    }
}

/// Which database a [`DatabaseConfig`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite {
        /// Path of the database file.
        path: PathBuf,
    },
    /// A PostgreSQL server, by libpq-style URL (`postgres://user:pass@host:port/db?...`).
    Postgres {
        /// The connection URL (may hold a password: never log it, use [`Backend::describe`]).
        url: String,
    },
}

impl Backend {
    /// Parses a `--database-url`: `sqlite:///abs/path.db`, `sqlite://rel/path.db`, a bare
    /// path, or `postgres://…` / `postgresql://…`.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::parse_config(url)?;
            return Ok(Backend::Postgres { url: url.into() });
        }
        if let Some(rest) = url.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(StoreError::InvalidConfig(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/loopml/loopml.db".into(),
                ));
            }
            return Ok(Backend::Sqlite { path: rest.into() });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(StoreError::InvalidConfig(format!(
                "unsupported database URL scheme '{scheme}://' (expected sqlite:// or postgres://)"
            )));
        }
        if url.is_empty() {
            return Err(StoreError::InvalidConfig(
                "the database URL is empty".into(),
            ));
        }
        Ok(Backend::Sqlite { path: url.into() })
    }

    /// Where the database is, safe to print (passwords are masked).
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite { path } => format!("sqlite://{}", path.display()),
            Backend::Postgres { url } => postgres::redact(url),
        }
    }
}

/// Settings for opening the metadata database.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The backend and where it is.
    pub backend: Backend,
    /// Commit durability.
    pub durability: Durability,
    /// SQLite: idle reader connections kept open. PostgreSQL: the most connections this
    /// process opens (readers and writers together).
    pub max_readers: usize,
    /// How long a request waits for a pooled connection, or for PostgreSQL to accept a new
    /// one, before it is answered "temporarily unavailable".
    pub acquire_timeout: Duration,
    /// PostgreSQL: the longest one statement may run (server-side `statement_timeout`).
    pub statement_timeout: Duration,
}

impl DatabaseConfig {
    /// Default settings for a SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::new(Backend::Sqlite { path: path.into() })
    }

    /// Default settings for a PostgreSQL URL.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self::new(Backend::Postgres { url: url.into() })
    }

    /// Default settings for a backend.
    pub fn new(backend: Backend) -> Self {
        let max_readers = match backend {
            Backend::Sqlite { .. } => 8,
            Backend::Postgres { .. } => 16,
        };
        Self {
            backend,
            durability: Durability::Normal,
            max_readers,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
        }
    }
}

/// One migration step owned by a domain crate, written once per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Short name, recorded when applied.
    pub name: &'static str,
    /// SQL script for the SQLite backend.
    pub sqlite: &'static str,
    /// SQL script for the PostgreSQL backend.
    pub postgres: &'static str,
}

/// A bound SQL parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// A double (may be ±inf; NaN must be stored by the caller as a flag).
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
}

impl Value<'_> {
    /// The same value, owning its text.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i),
            Value::Real(f) => Value::Real(f),
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Cow::Borrowed(v.as_str()))
    }
}
impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A result row; columns are read by position. Integers, doubles and text read the same on
/// every backend: integer columns of any width read as `i64`, `f64` widens integers and reads
/// NULL as NaN.
pub struct Row<'r>(RowInner<'r>);

enum RowInner<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Integer column.
    pub fn i64(&self, idx: usize) -> Result<i64, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::row_i64(r, idx),
            RowInner::Postgres(r) => postgres::row_i64(r, idx),
        }
    }
    /// Nullable integer column.
    pub fn opt_i64(&self, idx: usize) -> Result<Option<i64>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::row_opt_i64(r, idx),
            RowInner::Postgres(r) => postgres::row_opt_i64(r, idx),
        }
    }
    /// Double column (integers are widened, NULL reads as NaN).
    pub fn f64(&self, idx: usize) -> Result<f64, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::row_f64(r, idx),
            RowInner::Postgres(r) => postgres::row_f64(r, idx),
        }
    }
    /// Nullable double column (integers are widened).
    pub fn opt_f64(&self, idx: usize) -> Result<Option<f64>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::row_opt_f64(r, idx),
            RowInner::Postgres(r) => postgres::row_opt_f64(r, idx),
        }
    }
    /// Text column.
    pub fn string(&self, idx: usize) -> Result<String, StoreError> {
        self.str(idx).map(str::to_owned)
    }
    /// Text column, borrowed from the row (no allocation).
    pub fn str(&self, idx: usize) -> Result<&str, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::row_str(r, idx),
            RowInner::Postgres(r) => postgres::row_str(r, idx),
        }
    }
    /// Nullable text column.
    pub fn opt_string(&self, idx: usize) -> Result<Option<String>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::row_opt_str(r, idx).map(|o| o.map(str::to_owned)),
            RowInner::Postgres(r) => postgres::row_opt_str(r, idx).map(|o| o.map(str::to_owned)),
        }
    }
}

/// A connection inside a transaction (a write transaction in [`Database::write`], a
/// read-only snapshot in [`Database::read`]) that domain crates run portable SQL on.
pub struct Conn<'c>(ConnInner<'c>);

enum ConnInner<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'c postgres::Session<'c>),
}

impl Conn<'_> {
    /// Runs a statement; returns the number of changed rows.
    pub fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError> {
        match &self.0 {
            ConnInner::Sqlite(c) => sqlite::execute(c, sql, params),
            ConnInner::Postgres(s) => s.execute(sql, params),
        }
    }

    /// Runs a query and maps every row.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        match &self.0 {
            ConnInner::Sqlite(c) => sqlite::query(c, sql, params, |r| f(&Row(RowInner::Sqlite(r)))),
            ConnInner::Postgres(s) => {
                let rows = s.query(sql, params)?;
                rows.iter()
                    .map(|r| f(&Row(RowInner::Postgres(r))))
                    .collect()
            }
        }
    }

    /// Runs a query expected to return at most one row.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match &self.0 {
            ConnInner::Sqlite(c) => {
                sqlite::query_opt(c, sql, params, |r| f(&Row(RowInner::Sqlite(r))))
            }
            ConnInner::Postgres(s) => match s.query(sql, params)?.first() {
                Some(r) => Ok(Some(f(&Row(RowInner::Postgres(r)))?)),
                None => Ok(None),
            },
        }
    }

    /// Runs a statement once per parameter set (SQLite: one prepared statement reused;
    /// PostgreSQL: all executions pipelined in one round trip).
    pub fn execute_many<'p, I>(&self, sql: &str, rows: I) -> Result<usize, StoreError>
    where
        I: IntoIterator<Item = &'p [Value<'p>]>,
    {
        match &self.0 {
            ConnInner::Sqlite(c) => sqlite::execute_many(c, sql, rows),
            ConnInner::Postgres(s) => s.execute_many(sql, rows),
        }
    }

    /// Runs these statements as the transaction's last writes, when nothing needs their
    /// row counts: on PostgreSQL they are held and sent pipelined with the COMMIT (one round
    /// trip for writes and commit; a later statement in the same transaction sends them
    /// first). Their errors fail the transaction as any statement's would: it is rolled back
    /// and [`Database::write`] returns the first error. SQLite runs them at once.
    pub fn execute_at_commit(&self, statements: &[(&str, &[Value<'_>])]) -> Result<(), StoreError> {
        match &self.0 {
            ConnInner::Sqlite(c) => {
                for (sql, params) in statements {
                    sqlite::execute(c, sql, params)?;
                }
                Ok(())
            }
            ConnInner::Postgres(s) => s.defer(statements),
        }
    }

    /// Name of the backend this connection is on (for the rare query that must differ).
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            ConnInner::Sqlite(_) => "sqlite",
            ConnInner::Postgres(_) => "postgres",
        }
    }
}

/// Handle to the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Database(DbInner);

#[derive(Clone)]
enum DbInner {
    Sqlite(sqlite::SqliteDb),
    Postgres(postgres::PgDb),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("at", &self.describe())
            .finish()
    }
}

impl Database {
    /// Opens (creating if needed) the database described by `config`. For PostgreSQL no
    /// connection is made yet: connections open on first use, so a server that starts before
    /// its database comes up answers "temporarily unavailable" instead of failing to start.
    pub fn open(config: DatabaseConfig) -> Result<Self, StoreError> {
        match &config.backend {
            Backend::Sqlite { .. } => Ok(Self(DbInner::Sqlite(sqlite::SqliteDb::open(config)?))),
            Backend::Postgres { .. } => Ok(Self(DbInner::Postgres(postgres::PgDb::open(config)?))),
        }
    }

    /// Name of the backend, for start-up summaries.
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            DbInner::Sqlite(_) => "sqlite",
            DbInner::Postgres(_) => "postgres",
        }
    }

    /// Where the database is, safe to print (passwords masked).
    pub fn describe(&self) -> String {
        match &self.0 {
            DbInner::Sqlite(db) => db.config().backend.describe(),
            DbInner::Postgres(db) => db.config().backend.describe(),
        }
    }

    /// Applies the not-yet-applied migrations of `domain`, in order, each in its own
    /// transaction. On PostgreSQL a session advisory lock makes replicas that start at the
    /// same moment apply each migration exactly once. Blocks the calling thread.
    pub fn migrate(&self, domain: &str, migrations: &[Migration]) -> Result<(), StoreError> {
        match &self.0 {
            DbInner::Sqlite(db) => db.migrate(domain, migrations),
            DbInner::Postgres(db) => db.migrate(domain, migrations),
        }
    }

    /// The migrations recorded as applied: `(domain, version, name)`, in order; none on a
    /// database no loopml has migrated yet (no bookkeeping table).
    pub async fn applied_migrations(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        self.read(|c| {
            let exists = if c.backend() == "postgres" {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'loopml_migrations'"
            } else {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = 'loopml_migrations'"
            };
            if c.query_opt(exists, &[], |r| r.i64(0))?.unwrap_or(0) == 0 {
                return Ok(Vec::new());
            }
            c.query(
                "SELECT domain, version, name FROM loopml_migrations ORDER BY domain, version",
                &[],
                |r| Ok((r.string(0)?, r.i64(1)?, r.string(2)?)),
            )
        })
        .await
    }

    /// SQLite: folds the WAL back into the database file and truncates it (on shutdown, so a
    /// stopped server leaves one compact file); waits for queued writes first. PostgreSQL:
    /// closes idle pooled connections.
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        match &self.0 {
            DbInner::Sqlite(db) => db.checkpoint_truncate(),
            DbInner::Postgres(db) => {
                db.close_idle();
                Ok(())
            }
        }
    }

    /// Runs `f` in a write transaction and resolves once it is committed. When `f` returns
    /// `Err` its writes are rolled back, so a rejected request never leaves half a write
    /// behind. On SQLite concurrent writes share one commit (group commit), each under its own
    /// savepoint; on PostgreSQL each write is its own transaction on a pooled connection.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.0 {
            DbInner::Sqlite(db) => db.write(f).await,
            DbInner::Postgres(db) => db.run(postgres::TxKind::Write, f).await,
        }
    }

    /// Runs `f` on a consistent read-only snapshot, on the blocking pool.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match &self.0 {
            DbInner::Sqlite(db) => db.read(f).await,
            DbInner::Postgres(db) => db.run(postgres::TxKind::Read, f).await,
        }
    }

    /// Checks that the database answers now (readiness probes): a trivial query within the
    /// acquire timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_opt("SELECT 1", &[], |r| r.i64(0)).map(|_| ()))
            .await
    }
}

#[cfg(test)]
mod tests;
