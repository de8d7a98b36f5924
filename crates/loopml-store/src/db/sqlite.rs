//! The SQLite backend: one writer connection (SQLite allows one writer at a time, so we
//! serialise writers ourselves instead of spinning on `SQLITE_BUSY`) and a small pool of
//! readers, all used from tokio's blocking pool so SQL never runs on the request executor.
//! rusqlite's types stay in this module: errors leave it as [`StoreError`]s.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::{Backend, Conn, ConnInner, DatabaseConfig, Durability, Migration, Value};
use crate::StoreError;

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

/// Maps a rusqlite error onto loopml's: constraint violations by kind, a busy database as
/// "unavailable", everything else with its message.
pub(super) fn map_sqlite(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let text = msg.clone().unwrap_or_else(|| f.to_string());
            match f.code {
                rusqlite::ErrorCode::ConstraintViolation => match f.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => StoreError::Unique(text),
                    _ => StoreError::Constraint(text),
                },
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    StoreError::Unavailable(text)
                }
                _ => StoreError::Database(text),
            }
        }
        _ => StoreError::Database(e.to_string()),
    }
}

fn column_err(idx: usize, e: rusqlite::Error) -> StoreError {
    StoreError::Database(format!("column {idx}: {e}"))
}

pub(super) fn row_i64(r: &rusqlite::Row<'_>, idx: usize) -> Result<i64, StoreError> {
    r.get(idx).map_err(|e| column_err(idx, e))
}
pub(super) fn row_opt_i64(r: &rusqlite::Row<'_>, idx: usize) -> Result<Option<i64>, StoreError> {
    r.get(idx).map_err(|e| column_err(idx, e))
}
pub(super) fn row_f64(r: &rusqlite::Row<'_>, idx: usize) -> Result<f64, StoreError> {
    Ok(row_opt_f64(r, idx)?.unwrap_or(f64::NAN))
}
pub(super) fn row_opt_f64(r: &rusqlite::Row<'_>, idx: usize) -> Result<Option<f64>, StoreError> {
    match r.get_ref(idx).map_err(|e| column_err(idx, e))? {
        ValueRef::Integer(i) => Ok(Some(i as f64)),
        ValueRef::Real(f) => Ok(Some(f)),
        ValueRef::Null => Ok(None),
        _ => r.get(idx).map(Some).map_err(|e| column_err(idx, e)),
    }
}
pub(super) fn row_str<'r>(r: &'r rusqlite::Row<'_>, idx: usize) -> Result<&'r str, StoreError> {
    r.get_ref(idx)
        .map_err(|e| column_err(idx, e))?
        .as_str()
        .map_err(|e| column_err(idx, e.into()))
}
pub(super) fn row_opt_str<'r>(
    r: &'r rusqlite::Row<'_>,
    idx: usize,
) -> Result<Option<&'r str>, StoreError> {
    match r.get_ref(idx).map_err(|e| column_err(idx, e))? {
        ValueRef::Null => Ok(None),
        v => v.as_str().map(Some).map_err(|e| column_err(idx, e.into())),
    }
}

pub(super) fn execute(
    c: &Connection,
    sql: &str,
    params: &[Value<'_>],
) -> Result<usize, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(map_sqlite)?;
    stmt.execute(rusqlite::params_from_iter(params.iter()))
        .map_err(map_sqlite)
}

pub(super) fn query<T>(
    c: &Connection,
    sql: &str,
    params: &[Value<'_>],
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(map_sqlite)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(map_sqlite)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_sqlite)? {
        out.push(f(r)?);
    }
    Ok(out)
}

pub(super) fn query_opt<T>(
    c: &Connection,
    sql: &str,
    params: &[Value<'_>],
    f: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(map_sqlite)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(map_sqlite)?;
    match rows.next().map_err(map_sqlite)? {
        Some(r) => Ok(Some(f(r)?)),
        None => Ok(None),
    }
}

pub(super) fn execute_many<'p, I>(c: &Connection, sql: &str, rows: I) -> Result<usize, StoreError>
where
    I: IntoIterator<Item = &'p [Value<'p>]>,
{
    let mut stmt = c.prepare_cached(sql).map_err(map_sqlite)?;
    let mut n = 0;
    for params in rows {
        n += stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(map_sqlite)?;
    }
    Ok(n)
}

fn conn(c: &Connection) -> Conn<'_> {
    Conn(ConnInner::Sqlite(c))
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
    path: std::path::PathBuf,
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
    let commit_err = conn.execute_batch("COMMIT").err().map(map_sqlite);
    if commit_err.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for finish in finishers {
        finish(commit_err.as_ref());
    }
}

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
        let wal = inner.path.with_extension(
            inner
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

/// The SQLite database handle; cheap to clone.
#[derive(Clone)]
pub(super) struct SqliteDb {
    inner: Arc<Inner>,
}

fn open_connection(
    config: &DatabaseConfig,
    path: &Path,
    write: bool,
) -> Result<Connection, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
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

impl SqliteDb {
    /// Opens (creating if needed) the SQLite file of `config`.
    pub(super) fn open(config: DatabaseConfig) -> Result<Self, StoreError> {
        let Backend::Sqlite { path } = &config.backend else {
            return Err(StoreError::InvalidConfig(
                "not a SQLite configuration".into(),
            ));
        };
        let path = path.clone();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let writer = open_connection(&config, &path, true)?;
        writer
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS loopml_migrations (\
               domain TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, \
               applied_at INTEGER NOT NULL, PRIMARY KEY (domain, version))",
            )
            .map_err(map_sqlite)?;
        let checkpointer = open_connection(&config, &path, false)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
        std::thread::Builder::new()
            .name("loopml-db-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::Worker(format!("cannot start the writer thread: {e}")))?;
        let inner = Arc::new(Inner {
            config,
            path,
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

    /// The configuration it was opened with.
    pub(super) fn config(&self) -> &DatabaseConfig {
        &self.inner.config
    }

    /// Applies the not-yet-applied migrations of `domain` on the writer thread.
    pub(super) fn migrate(&self, domain: &str, migrations: &[Migration]) -> Result<(), StoreError> {
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

    /// Folds the WAL back into the database file and truncates it; waits for queued writes.
    pub(super) fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.inner
            .jobs
            .send(Job::Exclusive(Box::new(move |conn| {
                let r = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(map_sqlite);
                let _ = tx.send(r);
            })))
            .map_err(|_| StoreError::Worker("the writer thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Worker("the checkpoint job panicked".into()))?
    }

    /// Runs `f` in a write transaction on the writer thread and resolves once it is
    /// committed. Concurrent writes share one commit (group commit) but each runs under its
    /// own savepoint: when `f` returns `Err` only its own writes are rolled back.
    pub(super) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job = Job::Grouped(Box::new(move |conn: &Connection| {
            let out = f(&self::conn(conn));
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
    for (i, m) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        let fail = |e: rusqlite::Error| StoreError::Migration {
            domain: domain.to_string(),
            name: m.name.to_string(),
            reason: e.to_string(),
        };
        // IMMEDIATE takes the write lock first, so another process migrating the same file
        // waits, then sees the version applied and skips it.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let applied: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM loopml_migrations WHERE domain = ?1 AND version = ?2",
                rusqlite::params![domain, version],
                |r| r.get(0),
            )
            .map_err(fail)?;
        if applied > 0 {
            continue;
        }
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
    Ok(())
}

impl SqliteDb {
    /// Runs `f` on a reader connection on the blocking pool (a consistent snapshot).
    pub(super) async fn read<T, E, F>(&self, f: F) -> Result<T, E>
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
                None => open_connection(&inner.config, &inner.path, false)?,
            };
            let out = {
                let tx = conn.transaction().map_err(map_sqlite)?;
                let out = f(&self::conn(&tx));
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
