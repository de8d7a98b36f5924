//! The metadata database: one writer connection (SQLite allows one writer at a time, so we
//! serialise writers ourselves instead of spinning on `SQLITE_BUSY`) and a small pool of
//! readers, all used from tokio's blocking pool so SQL never runs on the request executor.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

use crate::StoreError;

/// How hard a commit works to survive crashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: a committed write survives the process being killed
    /// (`kill -9`); a power loss may drop the last few commits.
    #[default]
    Normal,
    /// WAL with `synchronous=FULL`: every commit is fsynced before it is acknowledged.
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

/// Settings for opening the metadata database.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Path of the SQLite file.
    pub path: PathBuf,
    /// Commit durability.
    pub durability: Durability,
    /// Maximum number of idle reader connections kept open.
    pub max_readers: usize,
}

impl DatabaseConfig {
    /// Default settings for a SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Normal,
            max_readers: 8,
        }
    }
}

/// One migration step owned by a domain crate.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Short name, recorded when applied.
    pub name: &'static str,
    /// SQL script for the SQLite backend.
    pub sqlite: &'static str,
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

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// A result row; columns are read by position.
pub struct Row<'r>(&'r rusqlite::Row<'r>);

impl Row<'_> {
    /// Integer column.
    pub fn i64(&self, idx: usize) -> Result<i64, StoreError> {
        Ok(self.0.get(idx)?)
    }
    /// Nullable integer column.
    pub fn opt_i64(&self, idx: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.0.get(idx)?)
    }
    /// Double column (integers are widened).
    pub fn f64(&self, idx: usize) -> Result<f64, StoreError> {
        match self.0.get_ref(idx)? {
            ValueRef::Integer(i) => Ok(i as f64),
            ValueRef::Real(f) => Ok(f),
            ValueRef::Null => Ok(f64::NAN),
            _ => Ok(self.0.get(idx)?),
        }
    }
    /// Text column.
    pub fn string(&self, idx: usize) -> Result<String, StoreError> {
        Ok(self.0.get(idx)?)
    }
    /// Text column, borrowed from the row (no allocation).
    pub fn str(&self, idx: usize) -> Result<&str, StoreError> {
        self.0
            .get_ref(idx)?
            .as_str()
            .map_err(|e| StoreError::Database(e.into()))
    }
    /// Nullable text column.
    pub fn opt_string(&self, idx: usize) -> Result<Option<String>, StoreError> {
        Ok(self.0.get(idx)?)
    }
}

/// A connection (inside a transaction for writers) that domain crates run portable SQL on.
pub struct Conn<'c>(&'c Connection);

fn map_sqlite(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Constraint(msg.clone().unwrap_or_else(|| f.to_string()))
        }
        _ => StoreError::Database(e),
    }
}

impl Conn<'_> {
    /// Runs a statement; returns the number of changed rows.
    pub fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(map_sqlite)?;
        stmt.execute(rusqlite::params_from_iter(params.iter()))
            .map_err(map_sqlite)
    }

    /// Runs a query and maps every row.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(map_sqlite)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(map_sqlite)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(map_sqlite)? {
            out.push(f(&Row(r))?);
        }
        Ok(out)
    }

    /// Runs a query expected to return at most one row.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(map_sqlite)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(map_sqlite)?;
        match rows.next().map_err(map_sqlite)? {
            Some(r) => Ok(Some(f(&Row(r))?)),
            None => Ok(None),
        }
    }

    /// Runs a statement once per parameter set, reusing the prepared statement.
    pub fn execute_many<'p, I>(&self, sql: &str, rows: I) -> Result<usize, StoreError>
    where
        I: IntoIterator<Item = &'p [Value<'p>]>,
    {
        let mut stmt = self.0.prepare_cached(sql).map_err(map_sqlite)?;
        let mut n = 0;
        for params in rows {
            n += stmt
                .execute(rusqlite::params_from_iter(params.iter()))
                .map_err(map_sqlite)?;
        }
        Ok(n)
    }
}

/// Work for the writer thread.
enum Job {
    /// Runs inside the shared group-commit transaction, under its own savepoint. Returns
    /// whether it succeeded and a callback that reports the outcome once the commit is known.
    Grouped(GroupedJob),
    /// Runs alone with the connection outside any transaction (migrations).
    Exclusive(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// A job of the group-commit transaction.
type GroupedJob = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// Reports a grouped job's result; gets the commit error, if the commit failed.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Most jobs folded into one commit.
const MAX_GROUP: usize = 64;

struct Inner {
    config: DatabaseConfig,
    jobs: std::sync::mpsc::SyncSender<Job>,
    readers: Mutex<Vec<Connection>>,
}

/// The writer thread: takes every job queued at the moment, runs each under a savepoint
/// inside one `BEGIN IMMEDIATE` transaction and commits once (group commit). A job that fails
/// is rolled back to its savepoint alone; nobody hears "ok" before the commit succeeded.
fn writer_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match jobs.recv() {
                Ok(j) => j,
                Err(_) => return, // every Database handle is gone
            },
        };
        let first = match first {
            Job::Exclusive(f) => {
                if catch_unwind(AssertUnwindSafe(|| f(&mut conn))).is_err() {
                    tracing::error!("exclusive database job panicked");
                }
                continue;
            }
            Job::Grouped(f) => f,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(Job::Grouped(f)) => group.push(f),
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        run_group(&conn, group);
    }
}

/// Runs one group of jobs in one transaction (see [`writer_loop`]).
fn run_group(conn: &Connection, group: Vec<GroupedJob>) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut finishers: Vec<Finish> = Vec::with_capacity(group.len());
    let mut in_tx = false;
    for job in group {
        if !in_tx {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, "cannot begin a write transaction");
                drop(job); // its caller gets a worker error
                continue;
            }
            in_tx = true;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            tracing::error!(error = %e, "cannot open a savepoint");
            drop(job);
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| job(conn)));
        if conn.is_autocommit() {
            // SQLite aborted the whole transaction (I/O error, disk full…): everything in it
            // so far is gone, so everyone in it hears the failure.
            let err =
                StoreError::Worker("the write transaction was aborted by the database".into());
            for f in finishers.drain(..) {
                f(Some(&err));
            }
            if let Ok((_, f)) = outcome {
                f(Some(&err));
            }
            in_tx = false;
            continue;
        }
        match outcome {
            Ok((true, finish)) => {
                let _ = conn.execute_batch("RELEASE job");
                finishers.push(finish);
            }
            Ok((false, finish)) => {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                finishers.push(finish);
            }
            Err(_) => {
                // The job's result sender is dropped, so its caller gets a worker error.
                tracing::error!("database job panicked; its writes were rolled back");
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
    }
    if !in_tx {
        return;
    }
    let commit_err = conn.execute_batch("COMMIT").err().map(StoreError::from);
    if commit_err.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for finish in finishers {
        finish(commit_err.as_ref());
    }
}

/// Copies WAL frames into the database file every second, off the commit path; truncates
/// the WAL when it has grown large. Stops when the database is dropped.
/// Checkpoints the WAL once a second off the writer's path. PASSIVE normally (never blocks a
/// commit); TRUNCATE when the WAL has grown past 256 MiB, or when writes have been idle for a
/// few seconds and the WAL holds more than 16 MiB, so an idle server gives the disk back.
fn checkpoint_loop(inner: std::sync::Weak<Inner>, conn: Connection) {
    const TRUNCATE_AT: u64 = 256 * 1024 * 1024;
    const IDLE_TRUNCATE_AT: u64 = 16 * 1024 * 1024;
    const IDLE_TICKS: u32 = 3;
    let mut last_len = 0u64;
    let mut idle_ticks = 0u32;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let wal = inner.config.path.with_extension(
            inner
                .config
                .path
                .extension()
                .map(|e| format!("{}-wal", e.to_string_lossy()))
                .unwrap_or_else(|| "wal".into()),
        );
        drop(inner);
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // The WAL file only grows while writes need more room than it has; an unchanged
        // length after a PASSIVE checkpoint means nothing is being written.
        idle_ticks = if len == last_len { idle_ticks + 1 } else { 0 };
        last_len = len;
        let truncate = len > TRUNCATE_AT || (len > IDLE_TRUNCATE_AT && idle_ticks >= IDLE_TICKS);
        let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        if truncate {
            last_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            idle_ticks = 0;
        }
    }
}

/// Handle to the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.inner.config.path)
            .finish()
    }
}

fn open_connection(config: &DatabaseConfig, write: bool) -> Result<Connection, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: config.path.display().to_string(),
        reason: e.to_string(),
    };
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(&config.path, flags).map_err(open_err)?;
    let sync = match config.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    // case_sensitive_like: MLflow's SQL store compares LIKE case-sensitively (PostgreSQL does
    // natively); ILIKE is written as LOWER(x) LIKE LOWER(y) by callers.
    // wal_autocheckpoint=0: checkpoints (which fsync) run on a background thread instead of
    // stalling whichever commit crosses the threshold.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000; \
         PRAGMA foreign_keys=ON; PRAGMA case_sensitive_like=ON; PRAGMA temp_store=MEMORY; \
         PRAGMA cache_size=-8000; PRAGMA wal_autocheckpoint=0;"
    ))
    .map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl Database {
    /// Opens (creating if needed) the database described by `config`.
    pub fn open(config: DatabaseConfig) -> Result<Self, StoreError> {
        if let Some(parent) = config.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: config.path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let writer = open_connection(&config, true)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS loopml_migrations (\
               domain TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, \
               applied_at INTEGER NOT NULL, PRIMARY KEY (domain, version))",
        )?;
        let checkpointer = open_connection(&config, false)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
        std::thread::Builder::new()
            .name("loopml-db-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::Worker(format!("cannot start the writer thread: {e}")))?;
        let inner = Arc::new(Inner {
            config,
            jobs: tx,
            readers: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("loopml-db-checkpoint".into())
            .spawn(move || checkpoint_loop(weak, checkpointer))
            .map_err(|e| StoreError::Worker(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { inner })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// Name of the backend, for start-up summaries.
    pub fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// Applies the not-yet-applied migrations of `domain`, in order, each in its own transaction.
    pub fn migrate(&self, domain: &str, migrations: &[Migration]) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let domain_owned = domain.to_string();
        let migrations = migrations.to_vec();
        self.inner
            .jobs
            .send(Job::Exclusive(Box::new(move |conn| {
                let _ = tx.send(apply_migrations(conn, &domain_owned, &migrations));
            })))
            .map_err(|_| StoreError::Worker("the writer thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Worker("a migration job panicked".into()))?
    }

    /// Folds the WAL back into the database file and truncates it (on shutdown, so a stopped
    /// server leaves one compact file). Waits for queued writes first.
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.inner
            .jobs
            .send(Job::Exclusive(Box::new(move |conn| {
                let r = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(StoreError::from);
                let _ = tx.send(r);
            })))
            .map_err(|_| StoreError::Worker("the writer thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Worker("the checkpoint job panicked".into()))?
    }

    /// Runs `f` in a write transaction on the writer thread and resolves once it is
    /// committed. Concurrent writes share one commit (group commit) but each runs under its
    /// own savepoint: when `f` returns `Err` only its own writes are rolled back, so a
    /// rejected request never leaves half a write behind.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job = Job::Grouped(Box::new(move |conn: &Connection| {
            let out = f(&Conn(conn));
            let ok = out.is_ok();
            let finish: Finish = Box::new(move |commit_err: Option<&StoreError>| {
                let res = match (out, commit_err) {
                    (Ok(_), Some(e)) => {
                        Err(E::from(StoreError::Worker(format!("commit failed: {e}"))))
                    }
                    (out, _) => out,
                };
                let _ = tx.send(res);
            });
            (ok, finish)
        }));
        let stopped = || E::from(StoreError::Worker("the writer thread has stopped".into()));
        match self.inner.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                // Backpressure: wait for room off the async executor.
                let jobs = self.inner.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|e| E::from(StoreError::Worker(e.to_string())))?
                    .map_err(|_| stopped())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        rx.await
            .map_err(|_| E::from(StoreError::Worker("the write job panicked".into())))?
    }
}

fn apply_migrations(
    conn: &mut Connection,
    domain: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    {
        let applied: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM loopml_migrations WHERE domain = ?1",
            [domain],
            |r| r.get(0),
        )?;
        for (i, m) in migrations.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= applied {
                continue;
            }
            let fail = |e: rusqlite::Error| StoreError::Migration {
                domain: domain.to_string(),
                name: m.name.to_string(),
                reason: e.to_string(),
            };
            let tx = conn.transaction().map_err(fail)?;
            tx.execute_batch(m.sqlite).map_err(fail)?;
            tx.execute(
                "INSERT INTO loopml_migrations (domain, version, name, applied_at) \
                 VALUES (?1, ?2, ?3, CAST(strftime('%s','now') AS INTEGER))",
                rusqlite::params![domain, version, m.name],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            tracing::debug!(domain, migration = m.name, "applied migration");
        }
    }
    Ok(())
}

impl Database {
    /// Runs `f` on a reader connection on the blocking pool (a consistent snapshot).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut v| v.pop());
            let mut conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.config, false)?,
            };
            let out = {
                let tx = conn.transaction().map_err(StoreError::from)?;
                let out = f(&Conn(&tx));
                // A read-only transaction: ending it either way changes nothing.
                drop(tx);
                out
            };
            if let Ok(mut v) = inner.readers.lock()
                && v.len() < inner.config.max_readers
            {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|e| E::from(StoreError::Worker(e.to_string())))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Migration] = &[Migration {
        name: "t",
        sqlite: "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
    }];

    #[tokio::test]
    async fn write_commits_and_failed_write_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(DatabaseConfig::sqlite(dir.path().join("m.db"))).unwrap();
        db.migrate("test", M).unwrap();
        db.migrate("test", M).unwrap(); // idempotent
        db.write(|c| c.execute("INSERT INTO t VALUES (?, ?)", &["a".into(), 1i64.into()]))
            .await
            .unwrap();
        let r: Result<(), StoreError> = db
            .write(|c| {
                c.execute("INSERT INTO t VALUES (?, ?)", &["b".into(), 2i64.into()])?;
                c.execute("INSERT INTO t VALUES (?, ?)", &["a".into(), 3i64.into()])?;
                Ok(())
            })
            .await;
        assert!(r.unwrap_err().is_unique_violation());
        let keys: Vec<String> = db
            .read(|c| c.query("SELECT k FROM t ORDER BY k", &[], |r| r.string(0)))
            .await
            .unwrap();
        assert_eq!(keys, vec!["a".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[allow(clippy::disallowed_methods)] // the test needs truly concurrent writers
    async fn concurrent_writes_share_commits_but_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(DatabaseConfig::sqlite(dir.path().join("m.db"))).unwrap();
        db.migrate("test", M).unwrap();
        let mut handles = Vec::new();
        for i in 0..200i64 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute(
                        "INSERT INTO t VALUES (?, ?)",
                        &[format!("k{i}").into(), i.into()],
                    )?;
                    c.execute(
                        "INSERT INTO t VALUES (?, ?)",
                        &[format!("x{i}").into(), i.into()],
                    )?;
                    if i % 5 == 0 {
                        return Err(StoreError::Constraint(format!("job {i} refuses")));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for h in handles {
            if h.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 160);
        let n: Vec<i64> = db
            .read(|c| c.query("SELECT COUNT(*) FROM t WHERE v % 5 = 0", &[], |r| r.i64(0)))
            .await
            .unwrap();
        assert_eq!(n, vec![0], "failed jobs left rows behind");
        let n: Vec<i64> = db
            .read(|c| c.query("SELECT COUNT(*) FROM t", &[], |r| r.i64(0)))
            .await
            .unwrap();
        assert_eq!(n, vec![320]);
    }

    #[tokio::test]
    async fn like_is_case_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(DatabaseConfig::sqlite(dir.path().join("m.db"))).unwrap();
        let n: Vec<i64> = db
            .read(|c| c.query("SELECT 'ABC' LIKE 'a%'", &[], |r| r.i64(0)))
            .await
            .unwrap();
        assert_eq!(n, vec![0]);
    }
}
