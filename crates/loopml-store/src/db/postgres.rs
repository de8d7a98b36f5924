//! The PostgreSQL backend: a bounded pool of `tokio-postgres` connections. Domain closures are
//! synchronous (the seam is shared with SQLite), so each one runs on tokio's blocking pool and
//! drives its statements with `Handle::block_on`; the connections' I/O tasks run on the
//! runtime. Each `read`/`write` is one transaction. Connection trouble (server down,
//! restarting, too many clients, a statement past its deadline) becomes
//! [`StoreError::Unavailable`] quickly, the broken connection is dropped, and the next request
//! opens a fresh one: a restarted server is picked up without restarting loopml.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use super::pg_tls::PgUrl;
use super::placeholders::to_dollar_placeholders;
use super::{Backend, Conn, ConnInner, DatabaseConfig, Durability, Migration, Value};
use crate::StoreError;
use tokio_postgres_rustls::MakeRustlsConnect;

/// An arbitrary, fixed key for the advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK: i64 = 0x6c6f_6f70_6d6c; // "loopml"

/// Statements cached per connection before the cache is cleared.
const STATEMENT_CACHE: usize = 512;

/// Parses and checks a PostgreSQL URL: libpq's TLS options (see [`PgUrl`]) here, the rest
/// by tokio-postgres. Also loads the TLS roots, so a bad `sslrootcert` fails at start-up.
pub(super) fn parse_config(
    url: &str,
) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>), StoreError> {
    let tls = PgUrl::parse(url)?;
    let mut pg = tls.url.parse::<tokio_postgres::Config>().map_err(|e| {
        StoreError::InvalidConfig(format!("invalid PostgreSQL URL {}: {e}", redact(url)))
    })?;
    pg.ssl_mode(tls.ssl_mode());
    Ok((pg, tls.connector()?))
}

/// The URL with its password replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    // A password can also sit in the query string.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => kv.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{query}")
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Maps a driver error onto loopml's.
fn map_pg(e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let msg = match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        };
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Unique(msg);
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION
            || *code == SqlState::NOT_NULL_VIOLATION
            || *code == SqlState::CHECK_VIOLATION
            || *code == SqlState::EXCLUSION_VIOLATION
        {
            return StoreError::Constraint(msg);
        }
        let class = code.code().get(..2).unwrap_or("");
        // 22: data exception — a value PostgreSQL cannot hold or convert (a NUL in text, an
        // out-of-range number, an over-long string): the request's fault, answered 400 (on
        // SQLite the same value is stored), never a 500.
        if class == "22" {
            return StoreError::Constraint(format!("the value cannot be stored: {msg}"));
        }
        // 08: connection exception; 57: operator intervention (shutdown, cancel, timeout);
        // 53: insufficient resources (too many connections); 40: serialization failure or
        // deadlock (retry).
        if matches!(class, "08" | "57" | "53" | "40") {
            return StoreError::Unavailable(format!("PostgreSQL: {msg}"));
        }
        return StoreError::Database(format!("PostgreSQL: {msg} [{}]", code.code()));
    }
    // The driver's Display leaves out the cause (e.g. which certificate check failed).
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    if e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || msg.contains("TLS")
    {
        return StoreError::Unavailable(format!("PostgreSQL connection lost: {msg}"));
    }
    StoreError::Database(format!("PostgreSQL: {msg}"))
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // The server infers each parameter's type from the statement; bind ours to it the way
        // SQLite's type affinity would, so domain SQL binds the same values on both backends.
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::NUMERIC => Numeric::encode_i64(*i, out),
                _ if is_text(ty) => i.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(format!("cannot bind an integer to a {ty} parameter").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 if f.fract() == 0.0 && f.is_finite() => {
                    Value::Int(*f as i64).to_sql(ty, out)
                }
                _ if is_text(ty) => f.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(format!("cannot bind the number {f} to a {ty} parameter").into()),
            },
            Value::Text(s) => match *ty {
                _ if is_text(ty) => s.as_ref().to_sql(&Type::TEXT, out),
                Type::INT8 | Type::INT4 | Type::INT2 => match s.trim().parse::<i64>() {
                    Ok(i) => Value::Int(i).to_sql(ty, out),
                    Err(_) => Err(format!("'{s}' is not an integer").into()),
                },
                Type::FLOAT8 | Type::FLOAT4 => match s.trim().parse::<f64>() {
                    Ok(f) => Value::Real(f).to_sql(ty, out),
                    Err(_) => Err(format!("'{s}' is not a number").into()),
                },
                _ => Err(format!("cannot bind text to a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// PostgreSQL `NUMERIC` (what `SUM` and `AVG` of integers return), read as a double.
struct Numeric(f64);

impl Numeric {
    /// Writes an integer in NUMERIC's binary form (base-10000 digits).
    fn encode_i64(
        v: i64,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        let mut digits = Vec::new();
        let mut n = v.unsigned_abs();
        while n > 0 {
            digits.push((n % 10_000) as i16);
            n /= 10_000;
        }
        digits.reverse();
        let weight = digits.len() as i16 - 1;
        out.put_i16(digits.len() as i16);
        out.put_i16(weight.max(0));
        out.put_u16(if v < 0 { 0x4000 } else { 0 });
        out.put_u16(0);
        for d in digits {
            out.put_i16(d);
        }
        Ok(IsNull::No)
    }
}

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated NUMERIC".into())
        };
        let ndigits = word(0)? as usize;
        let weight = word(1)? as i16;
        let sign = word(2)?;
        match sign {
            0xC000 => return Ok(Numeric(f64::NAN)),
            0xD000 => return Ok(Numeric(f64::INFINITY)),
            0xF000 => return Ok(Numeric(f64::NEG_INFINITY)),
            _ => {}
        }
        let mut v = 0f64;
        for i in 0..ndigits {
            let d = f64::from(word(4 + i)?);
            v += d * 10_000f64.powi(i32::from(weight) - i as i32);
        }
        Ok(Numeric(if sign == 0x4000 { -v } else { v }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

fn column_err(idx: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("column {idx}: {e}"))
}

fn column_type(r: &tokio_postgres::Row, idx: usize) -> Result<Type, StoreError> {
    r.columns()
        .get(idx)
        .map(|c| c.type_().clone())
        .ok_or_else(|| column_err(idx, "no such column"))
}

pub(super) fn row_opt_i64(r: &tokio_postgres::Row, idx: usize) -> Result<Option<i64>, StoreError> {
    let e = |e| column_err(idx, e);
    Ok(match column_type(r, idx)? {
        Type::INT8 => r.try_get::<_, Option<i64>>(idx).map_err(e)?,
        Type::INT4 => r.try_get::<_, Option<i32>>(idx).map_err(e)?.map(i64::from),
        Type::INT2 => r.try_get::<_, Option<i16>>(idx).map_err(e)?.map(i64::from),
        Type::BOOL => r.try_get::<_, Option<bool>>(idx).map_err(e)?.map(i64::from),
        Type::NUMERIC => match r.try_get::<_, Option<Numeric>>(idx).map_err(e)? {
            Some(Numeric(f)) if f.fract() == 0.0 && f.is_finite() => Some(f as i64),
            Some(Numeric(f)) => return Err(column_err(idx, format!("{f} is not an integer"))),
            None => None,
        },
        other => {
            return Err(column_err(
                idx,
                format!("expected an integer, found {other}"),
            ));
        }
    })
}

pub(super) fn row_i64(r: &tokio_postgres::Row, idx: usize) -> Result<i64, StoreError> {
    row_opt_i64(r, idx)?.ok_or_else(|| column_err(idx, "unexpected NULL"))
}

pub(super) fn row_f64(r: &tokio_postgres::Row, idx: usize) -> Result<f64, StoreError> {
    Ok(row_opt_f64(r, idx)?.unwrap_or(f64::NAN))
}

pub(super) fn row_opt_f64(r: &tokio_postgres::Row, idx: usize) -> Result<Option<f64>, StoreError> {
    let e = |e| column_err(idx, e);
    Ok(match column_type(r, idx)? {
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(idx).map_err(e)?,
        Type::FLOAT4 => r.try_get::<_, Option<f32>>(idx).map_err(e)?.map(f64::from),
        Type::NUMERIC => r
            .try_get::<_, Option<Numeric>>(idx)
            .map_err(e)?
            .map(|n| n.0),
        _ => row_opt_i64(r, idx)?.map(|i| i as f64),
    })
}

pub(super) fn row_opt_str(r: &tokio_postgres::Row, idx: usize) -> Result<Option<&str>, StoreError> {
    r.try_get::<_, Option<&str>>(idx)
        .map_err(|e| column_err(idx, e))
}

pub(super) fn row_str(r: &tokio_postgres::Row, idx: usize) -> Result<&str, StoreError> {
    row_opt_str(r, idx)?.ok_or_else(|| column_err(idx, "unexpected NULL"))
}

/// Opens one connection with `tls`, within `timeout` (`Err(None)` when it ran out); its
/// socket I/O runs on the runtime until the client is dropped.
fn connect_with<T>(
    pg: &tokio_postgres::Config,
    tls: T,
    handle: &Handle,
    timeout: Duration,
) -> Result<Client, Option<tokio_postgres::Error>>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let connect = pg.connect(tls);
    let (client, connection) = handle
        .block_on(async { tokio::time::timeout(timeout, connect).await })
        .map_err(|_| None)?
        .map_err(Some)?;
    handle.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// One pooled connection and its prepared statements.
struct PgConn {
    client: Client,
    statements: RefCell<HashMap<String, Statement>>,
}

/// What kind of transaction a closure runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxKind {
    /// A read-only snapshot (REPEATABLE READ, READ ONLY).
    Read,
    /// A read-write transaction (READ COMMITTED).
    Write,
}

/// A connection inside one transaction, as seen by domain SQL.
pub(super) struct Session<'c> {
    conn: &'c PgConn,
    handle: &'c Handle,
    deadline: Duration,
    broken: Cell<bool>,
    /// The transaction's BEGIN, not sent yet: it travels pipelined with the first statement,
    /// saving a round trip per transaction (and is never sent if the closure runs none).
    begin: Cell<Option<&'static str>>,
    /// Statements held for the COMMIT ([`Conn::execute_at_commit`]).
    deferred: RefCell<Vec<(Statement, Vec<Value<'static>>)>>,
}

impl Session<'_> {
    /// Runs one driver future with the client-side deadline; connection trouble marks the
    /// session broken so its connection is not pooled again.
    fn wait<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let deadline = self.deadline;
        let begin = self.begin.take();
        let client = &self.conn.client;
        let fut = async move {
            match begin {
                // Both requests go out before either answer is awaited (tokio-postgres
                // pipelines concurrent requests on one connection, in poll order).
                Some(b) => {
                    let (began, out) = futures::future::join(client.batch_execute(b), fut).await;
                    began?;
                    out
                }
                None => fut.await,
            }
        };
        match self
            .handle
            .block_on(async { tokio::time::timeout(deadline, fut).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let err = map_pg(&e);
                if matches!(err, StoreError::Unavailable(_)) {
                    self.broken.set(true);
                }
                Err(err)
            }
            Err(_) => {
                self.broken.set(true);
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {} s",
                    self.deadline.as_secs()
                )))
            }
        }
    }

    pub(super) fn defer(&self, statements: &[(&str, &[Value<'_>])]) -> Result<(), StoreError> {
        for (sql, params) in statements {
            let stmt = self.statement(sql)?;
            Self::check_arity(&stmt, params)?;
            let owned = params.iter().cloned().map(Value::into_owned).collect();
            self.deferred.borrow_mut().push((stmt, owned));
        }
        Ok(())
    }

    /// Sends the held statements (pipelined), then `last` when given, in one round trip; the
    /// first failure in order wins.
    fn flush(&self, last: Option<&'static str>) -> Result<(), StoreError> {
        let held = std::mem::take(&mut *self.deferred.borrow_mut());
        if held.is_empty() {
            return match last {
                Some(sql) => self.wait(self.conn.client.batch_execute(sql)),
                None => Ok(()),
            };
        }
        let client = &self.conn.client;
        let bound: Vec<Vec<&(dyn ToSql + Sync)>> =
            held.iter().map(|(_, p)| Self::params(p)).collect();
        let futs = held
            .iter()
            .zip(&bound)
            .map(|((stmt, _), p)| client.execute(stmt, p));
        let (outcomes, end) = self.wait(async move {
            let (outcomes, end) = futures::future::join(futures::future::join_all(futs), async {
                match last {
                    Some(sql) => client.batch_execute(sql).await.map(Some),
                    None => Ok(None),
                }
            })
            .await;
            Ok::<_, tokio_postgres::Error>((outcomes, end))
        })?;
        for o in outcomes.into_iter().chain(std::iter::once(end.map(|_| 0))) {
            if let Err(e) = o {
                let err = map_pg(&e);
                if matches!(err, StoreError::Unavailable(_)) {
                    self.broken.set(true);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.conn.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = to_dollar_placeholders(sql);
        let stmt = self
            .wait(self.conn.client.prepare(&translated))
            .map_err(|e| match e {
                // A statement the server cannot prepare is a bug: say which one.
                StoreError::Database(m) => {
                    let head: String = sql.chars().take(160).collect();
                    StoreError::Database(format!("{m} in `{head}`"))
                }
                other => other,
            })?;
        let mut cache = self.conn.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    fn params<'v>(params: &'v [Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
    }

    fn check_arity(stmt: &Statement, params: &[Value<'_>]) -> Result<(), StoreError> {
        if stmt.params().len() != params.len() {
            return Err(StoreError::Database(format!(
                "the statement takes {} parameters, {} were given",
                stmt.params().len(),
                params.len()
            )));
        }
        Ok(())
    }

    pub(super) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError> {
        self.flush(None)?;
        let stmt = self.statement(sql)?;
        Self::check_arity(&stmt, params)?;
        let n = self.wait(self.conn.client.execute(&stmt, &Self::params(params)))?;
        Ok(n as usize)
    }

    pub(super) fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.flush(None)?;
        let stmt = self.statement(sql)?;
        Self::check_arity(&stmt, params)?;
        self.wait(self.conn.client.query(&stmt, &Self::params(params)))
    }

    pub(super) fn execute_many<'p, I>(&self, sql: &str, rows: I) -> Result<usize, StoreError>
    where
        I: IntoIterator<Item = &'p [Value<'p>]>,
    {
        self.flush(None)?;
        let stmt = self.statement(sql)?;
        let rows: Vec<&[Value<'_>]> = rows.into_iter().collect();
        for r in &rows {
            Self::check_arity(&stmt, r)?;
        }
        let bound: Vec<Vec<&(dyn ToSql + Sync)>> = rows.iter().map(|r| Self::params(r)).collect();
        // Futures polled together are pipelined by tokio-postgres: one round trip for all.
        let client = &self.conn.client;
        let futs = bound.iter().map(|p| client.execute(&stmt, p));
        let counts = self.wait(futures::future::try_join_all(futs))?;
        Ok(counts.into_iter().sum::<u64>() as usize)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.wait(self.conn.client.batch_execute(sql))
    }

    /// Streams `data` (COPY text format) into `COPY ... FROM STDIN`; returns the rows loaded.
    pub(super) fn copy_in(&self, sql: &str, data: bytes::Bytes) -> Result<u64, StoreError> {
        self.flush(None)?;
        use futures::SinkExt;
        let client = &self.conn.client;
        self.wait(async move {
            let sink = client.copy_in::<_, bytes::Bytes>(sql).await?;
            futures::pin_mut!(sink);
            sink.send(data).await?;
            sink.finish().await
        })
    }
}

struct PgInner {
    config: DatabaseConfig,
    pg: tokio_postgres::Config,
    /// The TLS connector (`None`: `sslmode=disable`).
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<PgConn>>,
    permits: Arc<Semaphore>,
}

/// The PostgreSQL database handle; cheap to clone.
#[derive(Clone)]
pub(super) struct PgDb {
    inner: Arc<PgInner>,
}

impl PgDb {
    /// Prepares the pool; connects lazily.
    pub(super) fn open(config: DatabaseConfig) -> Result<Self, StoreError> {
        let Backend::Postgres { url } = &config.backend else {
            return Err(StoreError::InvalidConfig(
                "not a PostgreSQL configuration".into(),
            ));
        };
        let (mut pg, tls) = parse_config(url)?;
        if pg.get_application_name().is_none() {
            pg.application_name("loopml");
        }
        pg.connect_timeout(config.acquire_timeout);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        let mut options = pg.get_options().unwrap_or("").to_string();
        options.push_str(&format!(
            " -c statement_timeout={}",
            config.statement_timeout.as_millis()
        ));
        if config.durability == Durability::Full {
            options.push_str(" -c synchronous_commit=on");
        }
        pg.options(options.trim());
        let size = config.max_readers.max(1);
        Ok(Self {
            inner: Arc::new(PgInner {
                tls,
                config,
                pg,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size)),
            }),
        })
    }

    pub(super) fn config(&self) -> &DatabaseConfig {
        &self.inner.config
    }

    /// Drops idle connections (shutdown).
    pub(super) fn close_idle(&self) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.clear();
        }
    }

    fn connect(inner: &PgInner, handle: &Handle) -> Result<PgConn, StoreError> {
        let timeout = inner.config.acquire_timeout;
        let failed = |e: tokio_postgres::Error| match map_pg(&e) {
            StoreError::Database(m) => StoreError::Unavailable(m),
            other => other,
        };
        let too_slow = || {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL within {} s",
                timeout.as_secs()
            ))
        };
        let client = match &inner.tls {
            None => connect_with(&inner.pg, NoTls, handle, timeout),
            Some(tls) => connect_with(&inner.pg, tls.clone(), handle, timeout),
        }
        .map_err(|e| e.map_or_else(too_slow, failed))?;
        Ok(PgConn {
            client,
            statements: RefCell::new(HashMap::new()),
        })
    }

    /// Runs `f` in one transaction on a pooled connection.
    pub(super) async fn run<T, E, F>(&self, kind: TxKind, f: F) -> Result<T, E>
    where
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let wait = inner.config.acquire_timeout;
        let permit =
            match tokio::time::timeout(wait, Arc::clone(&inner.permits).acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(E::from(StoreError::Worker("the pool is closed".into()))),
                Err(_) => {
                    return Err(E::from(StoreError::Unavailable(format!(
                        "all {} PostgreSQL connections stayed busy for {} s",
                        inner.config.max_readers,
                        wait.as_secs()
                    ))));
                }
            };
        let handle = Handle::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = inner.idle.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) if !c.client.is_closed() => c,
                _ => Self::connect(&inner, &handle)?,
            };
            let session = Session {
                conn: &conn,
                handle: &handle,
                deadline: inner.config.statement_timeout + Duration::from_secs(5),
                broken: Cell::new(false),
                begin: Cell::new(Some(match kind {
                    TxKind::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                    TxKind::Write => "BEGIN",
                })),
                deferred: RefCell::new(Vec::new()),
            };
            let out = f(&Conn(ConnInner::Postgres(&session)));
            let had_deferred = !session.deferred.borrow().is_empty();
            let end = match (&out, kind) {
                // Writes held in a read-only snapshot: send them, so their error is reported
                // instead of the writes vanishing.
                (Ok(_), TxKind::Read) if had_deferred => {
                    let sent = session.flush(None);
                    let _ = session.batch("ROLLBACK");
                    sent
                }
                // Held statements go out with the COMMIT (and the BEGIN, if nothing else ran).
                (Ok(_), TxKind::Write) if had_deferred => {
                    match session.flush(Some("COMMIT")) {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            // A held statement failed: the server ended the transaction at
                            // the COMMIT (as a rollback); make sure nothing stays open.
                            let _ = session.batch("ROLLBACK");
                            Err(e)
                        }
                    }
                }
                _ if session.begin.take().is_some() => {
                    // No statement ran: no transaction was ever opened.
                    Ok(())
                }
                (Ok(_), TxKind::Write) => session.batch("COMMIT"),
                _ => session.batch("ROLLBACK"),
            };
            let out = match (out, end) {
                (Ok(_), Err(e)) if kind == TxKind::Write || had_deferred => Err(E::from(e)),
                (out, _) => out,
            };
            if !session.broken.get()
                && !conn.client.is_closed()
                && let Ok(mut idle) = inner.idle.lock()
            {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| E::from(StoreError::Worker(e.to_string())))?
    }

    /// Applies `domain`'s migrations under the migration advisory lock, on a thread of its
    /// own (this is called from synchronous constructors, possibly on the async executor).
    pub(super) fn migrate(&self, domain: &str, migrations: &[Migration]) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let domain = domain.to_string();
        let migrations = migrations.to_vec();
        std::thread::Builder::new()
            .name("loopml-db-migrate".into())
            .spawn(move || -> Result<(), StoreError> {
                // A worker thread drives the connection's I/O while this thread blocks on it
                // (a current-thread runtime would not drive I/O under Handle::block_on).
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::Worker(format!("cannot start a runtime: {e}")))?;
                let handle = rt.handle().clone();
                let conn = Self::connect(&inner, &handle)?;
                let session = Session {
                    conn: &conn,
                    handle: &handle,
                    deadline: Duration::from_secs(600),
                    broken: Cell::new(false),
                    begin: Cell::new(None),
                    deferred: RefCell::new(Vec::new()),
                };
                apply_migrations(&session, &domain, &migrations)
            })
            .map_err(|e| StoreError::Worker(format!("cannot start the migration thread: {e}")))?
            .join()
            .map_err(|_| StoreError::Worker("the migration thread panicked".into()))?
    }
}

fn apply_migrations(
    s: &Session<'_>,
    domain: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    s.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let result = (|| {
        s.batch(
            "CREATE TABLE IF NOT EXISTS loopml_migrations (\
               domain TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, \
               applied_at BIGINT NOT NULL, PRIMARY KEY (domain, version))",
        )?;
        let applied = s
            .query(
                "SELECT COALESCE(MAX(version), 0) FROM loopml_migrations WHERE domain = ?",
                &[domain.into()],
            )?
            .first()
            .map(|r| row_i64(r, 0))
            .transpose()?
            .unwrap_or(0);
        for (i, m) in migrations.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= applied {
                continue;
            }
            let fail = |e: StoreError| StoreError::Migration {
                domain: domain.to_string(),
                name: m.name.to_string(),
                reason: e.to_string(),
            };
            s.batch("BEGIN").map_err(fail)?;
            let step = (|| {
                s.batch(m.postgres)?;
                s.execute(
                    "INSERT INTO loopml_migrations (domain, version, name, applied_at) \
                     VALUES (?, ?, ?, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))",
                    &[domain.into(), version.into(), m.name.into()],
                )?;
                s.batch("COMMIT")
            })();
            if let Err(e) = step {
                let _ = s.batch("ROLLBACK");
                return Err(fail(e));
            }
            tracing::debug!(domain, migration = m.name, "applied migration");
        }
        Ok(())
    })();
    let unlock = s.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    result.and(unlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://loopml:s3cret@db:5432/loopml?sslmode=disable"),
            "postgres://loopml:***@db:5432/loopml?sslmode=disable"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact("postgresql://u@h/d?password=x&application_name=a"),
            "postgresql://u@h/d?password=***&application_name=a"
        );
    }

    #[test]
    fn numeric_round_trips() {
        for v in [
            0i64,
            1,
            -1,
            9999,
            10_000,
            123_456_789,
            -987_654_321_012,
            i64::MAX,
        ] {
            let mut buf = BytesMut::new();
            Numeric::encode_i64(v, &mut buf).unwrap();
            let back = Numeric::from_sql(&Type::NUMERIC, &buf).unwrap();
            assert_eq!(back.0, v as f64, "{v}");
        }
    }
}
