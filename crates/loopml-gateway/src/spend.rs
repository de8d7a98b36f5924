//! The request (spend) log and spend reports. A finished call adds one row to an in-memory
//! batch under a mutex — the database is never on a request's path — and the writer task
//! stores each batch in one transaction every half second: the rows into `gateway_spend_logs`
//! (unless `disable_spend_logs`), each key's, team's and user's spend added to its record, and
//! the day's totals per key, team, user and model group into `gateway_spend_daily`, which the
//! reports read instead of summing the raw log. If the database cannot be written the batch is
//! kept and retried; spend increments are merged, never dropped, and at most
//! [`MAX_PENDING_ROWS`] rows wait (older rows beyond that are dropped and counted). Rows older
//! than the retention (`maximum_spend_logs_retention_period`, default 30 days) are deleted
//! hourly. `/spend/logs`, `/global/spend/report` and `/global/spend` answer as LiteLLM's do.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::keys::{iso, now_ms};
use crate::prices::Usage;
use loopml_store::Database;

/// Rows waiting for the database at most.
pub const MAX_PENDING_ROWS: usize = 100_000;
/// Rows kept in memory for `/spend/logs` when the gateway has no database.
const MEMORY_ROWS: usize = 10_000;
/// Default retention of request rows.
const DEFAULT_RETENTION_MS: i64 = 30 * 86_400_000;

/// A tag unique to this process (reservation ids).
pub fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("{:08x}", rand::random::<u32>()))
}

/// One finished call.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    /// The request id (also `x-request-id`).
    pub request_id: String,
    /// Hash of the key it came with (empty: the master key or no key).
    pub api_key: String,
    /// The key's alias.
    pub key_alias: Option<String>,
    /// The key's user.
    pub user_id: Option<String>,
    /// The key's team.
    pub team_id: Option<String>,
    /// The request's `user` field.
    pub end_user: Option<String>,
    /// `chat/completions`, `completions`, `embeddings`.
    pub call_type: String,
    /// The model group asked for.
    pub model_group: String,
    /// The deployment that answered.
    pub deployment: Option<String>,
    /// The upstream model.
    pub model: Option<String>,
    /// Streamed.
    pub stream: bool,
    /// Tokens.
    pub usage: Usage,
    /// USD.
    pub spend: f64,
    /// Start (ms).
    pub start_ms: i64,
    /// End (ms).
    pub end_ms: i64,
    /// Total time (ms).
    pub latency_ms: f64,
    /// The gateway's own time (ms).
    pub overhead_ms: f64,
    /// `success` or `failure`.
    pub status: &'static str,
    /// HTTP status answered.
    pub http_status: u16,
    /// Why it failed.
    pub error: Option<String>,
    /// The request body (only with `store_prompts_in_spend_logs`).
    pub request_body: Option<String>,
    /// The response body (only with `store_prompts_in_spend_logs`, not for streams).
    pub response_body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Key,
    Team,
    User,
}

impl Kind {
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Kind::Key => ("gateway_keys", "token"),
            Kind::Team => ("gateway_teams", "team_id"),
            Kind::User => ("gateway_users", "user_id"),
        }
    }

    fn of(entity: &str) -> Option<(Kind, &str)> {
        let (k, id) = entity.split_once(':')?;
        Some((
            match k {
                "key" => Kind::Key,
                "team" => Kind::Team,
                "user" => Kind::User,
                _ => return None,
            },
            id,
        ))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Daily {
    requests: i64,
    failures: i64,
    prompt: i64,
    completion: i64,
    spend: f64,
}

/// Per entity: a reset to write first (new period end), then spend to add.
#[derive(Debug, Clone, Copy, Default)]
struct Change {
    reset: Option<i64>,
    add: f64,
}

#[derive(Debug, Default, Clone)]
struct Pending {
    rows: VecDeque<LogEntry>,
    changes: HashMap<(Kind, String), Change>,
    daily: HashMap<DayKey, Daily>,
}

/// A daily total's key: day, key hash, team, user, model group.
type DayKey = (String, String, String, String, String);

impl Daily {
    fn add(&mut self, d: &Daily) {
        self.requests += d.requests;
        self.failures += d.failures;
        self.prompt += d.prompt;
        self.completion += d.completion;
        self.spend += d.spend;
    }
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.changes.is_empty() && self.daily.is_empty()
    }

    /// Puts a batch that failed back in front of what came since.
    fn merge_back(&mut self, old: Pending) -> usize {
        let newer = std::mem::take(&mut self.rows);
        self.rows = old.rows;
        self.rows.extend(newer);
        let mut dropped = 0;
        while self.rows.len() > MAX_PENDING_ROWS {
            self.rows.pop_front();
            dropped += 1;
        }
        for (k, c) in old.changes {
            let e = self.changes.entry(k).or_default();
            if e.reset.is_none() {
                e.reset = c.reset;
                e.add += c.add;
            }
        }
        for (k, d) in old.daily {
            self.daily.entry(k).or_default().add(&d);
        }
        dropped
    }
}

/// The log writer's state; see the module docs.
#[derive(Debug)]
pub struct SpendLog {
    pending: Mutex<Pending>,
    memory: Mutex<VecDeque<LogEntry>>,
    /// Daily totals when there is no database (a few rows a day per key and model).
    memory_daily: Mutex<HashMap<DayKey, Daily>>,
    wake: tokio::sync::Notify,
    db: Option<Database>,
    keep_rows: bool,
    retention_ms: i64,
    /// Rows dropped because the database was away too long.
    pub dropped: AtomicU64,
    /// Batches that failed and were kept for another try.
    pub failed_batches: AtomicU64,
}

fn day_of(ms: i64) -> String {
    iso(ms).get(..10).unwrap_or_default().to_string()
}

impl SpendLog {
    /// A log on `db` (or in memory only).
    pub fn new(db: Option<Database>, keep_rows: bool, retention_ms: Option<i64>) -> Self {
        SpendLog {
            pending: Mutex::default(),
            memory: Mutex::default(),
            memory_daily: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            db,
            keep_rows,
            retention_ms: retention_ms.unwrap_or(DEFAULT_RETENTION_MS),
            dropped: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
        }
    }

    /// Rows waiting for the database.
    pub fn pending_rows(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rows
            .len()
    }

    /// Records a finished call charged to `entities` (ledger ids).
    pub fn record(&self, entry: LogEntry, entities: &[String]) {
        let day = day_of(entry.start_ms);
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if entry.spend != 0.0 {
            for e in entities {
                if let Some((kind, id)) = Kind::of(e) {
                    p.changes.entry((kind, id.to_string())).or_default().add += entry.spend;
                }
            }
        }
        let d = p
            .daily
            .entry((
                day,
                entry.api_key.clone(),
                entry.team_id.clone().unwrap_or_default(),
                entry.user_id.clone().unwrap_or_default(),
                entry.model_group.clone(),
            ))
            .or_default();
        d.requests += 1;
        d.failures += i64::from(entry.status != "success");
        d.prompt += entry.usage.prompt as i64;
        d.completion += entry.usage.completion as i64;
        d.spend += entry.spend;
        if self.db.is_none() {
            let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= MEMORY_ROWS {
                m.pop_front();
            }
            m.push_back(entry);
        } else if self.keep_rows {
            p.rows.push_back(entry);
            if p.rows.len() > MAX_PENDING_ROWS {
                p.rows.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if p.rows.len() >= 1000 {
                self.wake.notify_one();
            }
        }
    }

    /// Records that an entity's budget period rolled over (its spend starts again from 0).
    pub fn reset(&self, entity: &str, reset_at: i64) {
        if let Some((kind, id)) = Kind::of(entity) {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.changes.insert(
                (kind, id.to_string()),
                Change {
                    reset: Some(reset_at),
                    add: 0.0,
                },
            );
        }
    }

    /// Writes what is pending now; on failure keeps it for the next try.
    pub async fn flush(&self) -> Result<(), loopml_store::StoreError> {
        let Some(db) = &self.db else {
            // Without a database there is nothing to store; spend lives in the ledger.
            let daily = {
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                p.changes.clear();
                std::mem::take(&mut p.daily)
            };
            let mut m = self.memory_daily.lock().unwrap_or_else(|p| p.into_inner());
            for (k, d) in daily {
                m.entry(k).or_default().add(&d);
            }
            return Ok(());
        };
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let batch = std::sync::Arc::new(batch);
        let shared = batch.clone();
        // The batch goes in whole or not at all: an error rolls the transaction back.
        if let Err(e) = db.write(move |c| write_batch(c, &shared)).await {
            self.failed_batches.fetch_add(1, Ordering::Relaxed);
            let batch = std::sync::Arc::try_unwrap(batch).unwrap_or_else(|a| (*a).clone());
            let dropped = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge_back(batch);
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes rows past the retention, a few thousand at a time.
    async fn expire(&self) {
        let Some(db) = &self.db else { return };
        let before = now_ms() - self.retention_ms;
        loop {
            let n = db
                .write(move |c| {
                    c.execute(
                        "DELETE FROM gateway_spend_logs WHERE request_id IN (SELECT request_id \
                         FROM gateway_spend_logs WHERE start_time < ?1 LIMIT 5000)",
                        &[before.into()],
                    )
                })
                .await;
            match n {
                Ok(n) if n >= 5000 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete expired gateway spend logs");
                    break;
                }
            }
        }
    }

    /// The writer: a batch every half second (sooner when a thousand rows wait), expiry every
    /// hour, until the app stops ([`Self::flush`] writes the last batch at shutdown).
    pub async fn run(&self) {
        let mut last_expiry: Option<std::time::Instant> = None;
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            let _ = tokio::time::timeout(backoff, self.wake.notified()).await;
            match self.flush().await {
                Ok(()) => backoff = std::time::Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(error = %e, pending = self.pending_rows(), "gateway spend log: the database cannot be written; keeping the batch");
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                }
            }
            if last_expiry.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(3600)) {
                last_expiry = Some(std::time::Instant::now());
                self.expire().await;
            }
        }
    }

    /// Rows of `/spend/logs`, newest first.
    pub async fn rows(&self, f: Filter) -> Result<Vec<LogEntry>, loopml_store::StoreError> {
        let Some(db) = &self.db else {
            let m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(m
                .iter()
                .rev()
                .filter(|e| f.matches(e))
                .take(f.limit)
                .cloned()
                .collect());
        };
        db.read(move |c| {
            let mut sql = format!("SELECT {ROW_COLUMNS} FROM gateway_spend_logs WHERE 1 = 1");
            let mut p: Vec<loopml_store::Value<'static>> = Vec::new();
            for (col, v) in [
                ("api_key", &f.api_key),
                ("user_id", &f.user_id),
                ("team_id", &f.team_id),
                ("request_id", &f.request_id),
            ] {
                if let Some(v) = v {
                    p.push(v.clone().into());
                    sql.push_str(&format!(" AND {col} = ?{}", p.len()));
                }
            }
            if let Some(s) = f.start_ms {
                p.push(s.into());
                sql.push_str(&format!(" AND start_time >= ?{}", p.len()));
            }
            if let Some(e) = f.end_ms {
                p.push(e.into());
                sql.push_str(&format!(" AND start_time < ?{}", p.len()));
            }
            sql.push_str(&format!(" ORDER BY start_time DESC LIMIT {}", f.limit));
            c.query(&sql, &p, |r| {
                Ok(LogEntry {
                    request_id: r.string(0)?,
                    api_key: r.string(1)?,
                    key_alias: r.opt_string(2)?,
                    user_id: r.opt_string(3)?,
                    team_id: r.opt_string(4)?,
                    end_user: r.opt_string(5)?,
                    call_type: r.string(6)?,
                    model_group: r.string(7)?,
                    deployment: r.opt_string(8)?,
                    model: r.opt_string(9)?,
                    stream: r.i64(10)? != 0,
                    usage: Usage {
                        prompt: r.i64(11)?.max(0) as u64,
                        completion: r.i64(12)?.max(0) as u64,
                        cached: r.i64(13)?.max(0) as u64,
                        cache_write: 0,
                    },
                    spend: r.f64(14)?,
                    start_ms: r.i64(15)?,
                    end_ms: r.i64(16)?,
                    latency_ms: r.f64(17)?,
                    overhead_ms: r.f64(18)?,
                    status: if r.str(19)? == "success" {
                        "success"
                    } else {
                        "failure"
                    },
                    http_status: r.i64(20)?.clamp(0, 999) as u16,
                    error: r.opt_string(21)?,
                    request_body: r.opt_string(22)?,
                    response_body: r.opt_string(23)?,
                })
            })
        })
        .await
    }

    /// Day totals between two days (inclusive), for the reports.
    async fn daily(
        &self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, String, String, String, String, Daily)>, loopml_store::StoreError>
    {
        let Some(db) = &self.db else {
            self.flush().await?;
            let m = self.memory_daily.lock().unwrap_or_else(|p| p.into_inner());
            let mut out: Vec<_> = m
                .iter()
                .filter(|(k, _)| k.0.as_str() >= start && k.0.as_str() <= end)
                .map(|(k, d)| {
                    (
                        k.0.clone(),
                        k.1.clone(),
                        k.2.clone(),
                        k.3.clone(),
                        k.4.clone(),
                        *d,
                    )
                })
                .collect();
            out.sort_by(|a, b| (&a.0, &a.1, &a.2, &a.3, &a.4).cmp(&(&b.0, &b.1, &b.2, &b.3, &b.4)));
            return Ok(out);
        };
        let (s, e) = (start.to_string(), end.to_string());
        db.read(move |c| {
            c.query(
                "SELECT day, api_key, team_id, user_id, model_group, requests, failures, \
                 prompt_tokens, completion_tokens, spend FROM gateway_spend_daily \
                 WHERE day >= ?1 AND day <= ?2 ORDER BY day, api_key, team_id, user_id, model_group",
                &[s.as_str().into(), e.as_str().into()],
                |r| {
                    Ok((
                        r.string(0)?,
                        r.string(1)?,
                        r.string(2)?,
                        r.string(3)?,
                        r.string(4)?,
                        Daily {
                            requests: r.i64(5)?,
                            failures: r.i64(6)?,
                            prompt: r.i64(7)?,
                            completion: r.i64(8)?,
                            spend: r.f64(9)?,
                        },
                    ))
                },
            )
        })
        .await
    }
}

const ROW_COLUMNS: &str = "request_id, api_key, key_alias, user_id, team_id, end_user, call_type, \
    model_group, deployment, model, stream, prompt_tokens, completion_tokens, cached_tokens, \
    spend, start_time, end_time, latency_ms, overhead_ms, status, http_status, error, \
    request_body, response_body";

fn write_batch(c: &loopml_store::Conn<'_>, b: &Pending) -> Result<(), loopml_store::StoreError> {
    let rows: Vec<Vec<loopml_store::Value<'_>>> = b
        .rows
        .iter()
        .map(|e| {
            vec![
                e.request_id.as_str().into(),
                e.api_key.as_str().into(),
                e.key_alias.as_deref().into(),
                e.user_id.as_deref().into(),
                e.team_id.as_deref().into(),
                e.end_user.as_deref().into(),
                e.call_type.as_str().into(),
                e.model_group.as_str().into(),
                e.deployment.as_deref().into(),
                e.model.as_deref().into(),
                e.stream.into(),
                (e.usage.prompt as i64).into(),
                (e.usage.completion as i64).into(),
                (e.usage.cached as i64).into(),
                e.spend.into(),
                e.start_ms.into(),
                e.end_ms.into(),
                e.latency_ms.into(),
                e.overhead_ms.into(),
                e.status.into(),
                i64::from(e.http_status).into(),
                e.error.as_deref().into(),
                e.request_body.as_deref().into(),
                e.response_body.as_deref().into(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        c.execute_many(
            &format!(
                "INSERT INTO gateway_spend_logs ({ROW_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
                 ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
                 ?23, ?24) ON CONFLICT (request_id) DO NOTHING"
            ),
            rows.iter().map(Vec::as_slice),
        )?;
    }
    // Sorted, so concurrent writers (replicas) take row locks in one order: no deadlocks.
    let mut changes: Vec<(&(Kind, String), &Change)> = b.changes.iter().collect();
    changes.sort_by(|a, b| (a.0.0 as u8, &a.0.1).cmp(&(b.0.0 as u8, &b.0.1)));
    for ((kind, id), ch) in changes {
        let (table, col) = kind.table();
        if let Some(at) = ch.reset {
            c.execute(
                &format!("UPDATE {table} SET spend = 0, budget_reset_at = ?2 WHERE {col} = ?1"),
                &[id.as_str().into(), at.into()],
            )?;
        }
        if ch.add != 0.0 {
            c.execute(
                &format!("UPDATE {table} SET spend = spend + ?2 WHERE {col} = ?1"),
                &[id.as_str().into(), ch.add.into()],
            )?;
        }
    }
    let mut daily: Vec<_> = b.daily.iter().collect();
    daily.sort_by(|a, b| a.0.cmp(b.0));
    let rows: Vec<Vec<loopml_store::Value<'_>>> = daily
        .iter()
        .map(|((day, key, team, user, group), d)| {
            vec![
                day.as_str().into(),
                key.as_str().into(),
                team.as_str().into(),
                user.as_str().into(),
                group.as_str().into(),
                d.requests.into(),
                d.failures.into(),
                d.prompt.into(),
                d.completion.into(),
                d.spend.into(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        c.execute_many(
            "INSERT INTO gateway_spend_daily (day, api_key, team_id, user_id, model_group, \
             requests, failures, prompt_tokens, completion_tokens, spend) VALUES (?1, ?2, ?3, \
             ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (day, api_key, team_id, user_id, \
             model_group) DO UPDATE SET requests = gateway_spend_daily.requests + \
             excluded.requests, failures = gateway_spend_daily.failures + excluded.failures, \
             prompt_tokens = gateway_spend_daily.prompt_tokens + excluded.prompt_tokens, \
             completion_tokens = gateway_spend_daily.completion_tokens + \
             excluded.completion_tokens, spend = gateway_spend_daily.spend + excluded.spend",
            rows.iter().map(Vec::as_slice),
        )?;
    }
    Ok(())
}

/// What `/spend/logs` selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Key hash.
    pub api_key: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// Team.
    pub team_id: Option<String>,
    /// One request.
    pub request_id: Option<String>,
    /// From (ms, inclusive).
    pub start_ms: Option<i64>,
    /// To (ms, exclusive).
    pub end_ms: Option<i64>,
    /// At most this many rows.
    pub limit: usize,
}

impl Filter {
    fn matches(&self, e: &LogEntry) -> bool {
        self.api_key.as_ref().is_none_or(|k| &e.api_key == k)
            && self
                .user_id
                .as_ref()
                .is_none_or(|u| e.user_id.as_ref() == Some(u))
            && self
                .team_id
                .as_ref()
                .is_none_or(|t| e.team_id.as_ref() == Some(t))
            && self.request_id.as_ref().is_none_or(|r| &e.request_id == r)
            && self.start_ms.is_none_or(|s| e.start_ms >= s)
            && self.end_ms.is_none_or(|x| e.start_ms < x)
    }
}

/// A row as LiteLLM's `/spend/logs` writes it.
pub fn row_json(e: &LogEntry) -> Value {
    json!({
        "request_id": e.request_id, "call_type": e.call_type, "api_key": e.api_key,
        "spend": e.spend, "total_tokens": e.usage.total(), "prompt_tokens": e.usage.prompt,
        "completion_tokens": e.usage.completion, "startTime": iso(e.start_ms),
        "endTime": iso(e.end_ms), "model": e.model, "model_id": e.deployment,
        "model_group": e.model_group, "user": e.user_id, "team_id": e.team_id,
        "end_user": e.end_user, "status": e.status,
        "metadata": {
            "key_alias": e.key_alias, "cached_tokens": e.usage.cached, "stream": e.stream,
            "latency_ms": e.latency_ms, "overhead_ms": e.overhead_ms,
            "http_status": e.http_status, "error": e.error,
        },
        "messages": e.request_body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()),
        "response": e.response_body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()),
        "cache_hit": "False", "request_tags": [],
    })
}

/// Object keys whose values are never stored in a logged body.
const SECRET_KEYS: &[&str] = &[
    "api_key",
    "apikey",
    "authorization",
    "password",
    "secret",
    "access_token",
    "refresh_token",
    "aws_secret_access_key",
    "aws_session_token",
];

/// A request or response body as stored in the request log: values under secret-looking keys
/// and credential-looking strings (`sk-…`, `AKIA…`, `Bearer …`) inside any text replaced with
/// `[REDACTED]`.
pub fn redact(v: &Value) -> String {
    fn text(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        loop {
            let at = ["sk-", "AKIA", "ASIA", "Bearer "]
                .iter()
                .filter_map(|p| rest.find(p).map(|i| (i, *p)))
                .min();
            let Some((i, prefix)) = at else {
                out.push_str(rest);
                return out;
            };
            let tail = &rest[i + prefix.len()..];
            let len = tail
                .bytes()
                .take_while(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'+')
                })
                .count();
            let word_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
            let long = len >= 16;
            out.push_str(&rest[..i]);
            if word_start && long {
                out.push_str("[REDACTED]");
                rest = &tail[len..];
            } else {
                out.push_str(prefix);
                rest = tail;
            }
        }
    }
    fn walk(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(text(s)),
            Value::Array(a) => Value::Array(a.iter().map(walk).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let secret = SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str());
                        let v = if secret && !v.is_null() {
                            Value::String("[REDACTED]".into())
                        } else {
                            walk(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(v).to_string()
}

/// A date (`YYYY-MM-DD`) or ISO time as ms; `end` moves a bare date to the next midnight.
pub fn parse_day(s: &str, end: bool) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("'{s}' is not a date (YYYY-MM-DD) or an ISO-8601 time"))?;
    let d = if end { d.succ_opt().unwrap_or(d) } else { d };
    Ok(d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0))
}

/// The spend routes.
pub(crate) mod api {
    /// One group of a day in the report: its name and totals per model.
    type Group = (String, Vec<(String, super::Daily)>);
    use super::*;
    use crate::proxy::{ApiError, Gateway};
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};

    fn bad(m: String) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            m,
        )
    }

    fn unavailable(e: loopml_store::StoreError) -> ApiError {
        tracing::warn!(error = %e, "gateway spend log read");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "store_unavailable",
            "the spend log cannot be read now; retry shortly".into(),
        )
    }

    /// `GET /spend/logs?api_key=&user_id=&team_id=&request_id=&start_date=&end_date=&limit=`.
    pub async fn logs(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<Response, ApiError> {
        g.admin(&headers)?;
        let limit = match q.get("limit") {
            None => 1000,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| bad("\"limit\" must be 1 to 10000".into()))?,
        };
        let f = Filter {
            api_key: q.get("api_key").map(|k| {
                if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) {
                    k.to_ascii_lowercase()
                } else {
                    crate::keys::hash_key(k)
                }
            }),
            user_id: q.get("user_id").cloned(),
            team_id: q.get("team_id").cloned(),
            request_id: q.get("request_id").cloned(),
            start_ms: q
                .get("start_date")
                .map(|s| parse_day(s, false))
                .transpose()
                .map_err(bad)?,
            end_ms: q
                .get("end_date")
                .map(|s| parse_day(s, true))
                .transpose()
                .map_err(bad)?,
            limit,
        };
        // A row just written may still wait in the batch: flush first so a caller sees its own
        // requests (this is the admin API, not the request path).
        let _ = g.spend_log().flush().await;
        let rows = g.spend_log().rows(f).await.map_err(unavailable)?;
        Ok(axum::Json(Value::Array(rows.iter().map(row_json).collect())).into_response())
    }

    fn days(q: &HashMap<String, String>) -> Result<(String, String), ApiError> {
        let today = day_of(now_ms());
        let start = q
            .get("start_date")
            .cloned()
            .unwrap_or_else(|| today.clone());
        let end = q.get("end_date").cloned().unwrap_or(today);
        for d in [&start, &end] {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| bad(format!("'{d}' is not a date (YYYY-MM-DD)")))?;
        }
        Ok((start, end))
    }

    /// `GET /global/spend/report?start_date=&end_date=&group_by=team|api_key|user|customer`.
    pub async fn report(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Result<Response, ApiError> {
        g.admin(&headers)?;
        let (start, end) = days(&q)?;
        let by = q.get("group_by").map(String::as_str).unwrap_or("team");
        if !matches!(by, "team" | "api_key" | "user" | "customer") {
            return Err(bad(format!(
                "group_by '{by}' is not team, api_key, user or customer"
            )));
        }
        let _ = g.spend_log().flush().await;
        let rows = g
            .spend_log()
            .daily(&start, &end)
            .await
            .map_err(unavailable)?;
        // day → group → model → totals
        let mut out: Vec<(String, Vec<Group>)> = Vec::new();
        for (day, key, team, user, model, d) in rows {
            let group = match by {
                "api_key" => key,
                "team" => team,
                _ => user,
            };
            if out.last().is_none_or(|(x, _)| x != &day) {
                out.push((day.clone(), Vec::new()));
            }
            let Some((_, groups)) = out.last_mut() else {
                continue;
            };
            let gi = match groups.iter().position(|(n, _)| n == &group) {
                Some(i) => i,
                None => {
                    groups.push((group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            let models = &mut groups[gi].1;
            match models.iter_mut().find(|(m, _)| m == &model) {
                Some((_, t)) => {
                    t.requests += d.requests;
                    t.prompt += d.prompt;
                    t.completion += d.completion;
                    t.spend += d.spend;
                }
                None => models.push((model, d)),
            }
        }
        let list_name = match by {
            "api_key" => "api_keys",
            "team" => "teams",
            _ => "users",
        };
        let body: Vec<Value> = out
            .into_iter()
            .map(|(day, groups)| {
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(name, models)| {
                        let total: f64 = models.iter().map(|(_, d)| d.spend).sum();
                        let input: i64 = models.iter().map(|(_, d)| d.prompt).sum();
                        let output: i64 = models.iter().map(|(_, d)| d.completion).sum();
                        let details: Vec<Value> = models
                            .iter()
                            .map(|(m, d)| {
                                json!({"model": m, "spend": d.spend,
                                       "total_tokens": d.prompt + d.completion,
                                       "requests": d.requests})
                            })
                            .collect();
                        match by {
                            "api_key" => json!({"api_key": name, "total_cost": total,
                                "total_input_tokens": input, "total_output_tokens": output,
                                "model_details": details}),
                            "team" => json!({"team_name": if name.is_empty() { "Unassigned".to_string() } else { name },
                                "total_spend": total, "metadata": details}),
                            _ => json!({"user_id": name, "total_spend": total,
                                "metadata": details}),
                        }
                    })
                    .collect();
                json!({"group_by_day": day, list_name: groups})
            })
            .collect();
        Ok(axum::Json(Value::Array(body)).into_response())
    }

    /// `GET /global/spend`: everything spent (as the daily totals hold it).
    pub async fn total(State(g): State<Gateway>, headers: HeaderMap) -> Result<Response, ApiError> {
        g.admin(&headers)?;
        let _ = g.spend_log().flush().await;
        let rows = g
            .spend_log()
            .daily("0000-01-01", "9999-12-31")
            .await
            .map_err(unavailable)?;
        let spend: f64 = rows.iter().map(|r| r.5.spend).sum();
        Ok(axum::Json(json!({"spend": spend, "max_budget": null})).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_goes_back_in_front_and_a_newer_reset_wins() {
        let mut now = Pending::default();
        now.changes.insert(
            (Kind::Key, "a".into()),
            Change {
                reset: None,
                add: 2.0,
            },
        );
        now.changes.insert(
            (Kind::Key, "b".into()),
            Change {
                reset: Some(5),
                add: 1.0,
            },
        );
        now.rows.push_back(LogEntry {
            request_id: "new".into(),
            ..LogEntry::default()
        });
        let mut old = Pending::default();
        old.changes.insert(
            (Kind::Key, "a".into()),
            Change {
                reset: Some(3),
                add: 1.0,
            },
        );
        old.changes.insert(
            (Kind::Key, "b".into()),
            Change {
                reset: None,
                add: 7.0,
            },
        );
        old.rows.push_back(LogEntry {
            request_id: "old".into(),
            ..LogEntry::default()
        });
        assert_eq!(now.merge_back(old), 0);
        let a = now.changes[&(Kind::Key, "a".to_string())];
        assert_eq!((a.reset, a.add), (Some(3), 3.0));
        // b was reset after the old batch's spend: that spend belongs to the old period.
        let b = now.changes[&(Kind::Key, "b".to_string())];
        assert_eq!((b.reset, b.add), (Some(5), 1.0));
        assert_eq!(now.rows[0].request_id, "old");
    }

    #[test]
    fn dates_parse_as_days_or_times() {
        assert_eq!(parse_day("1970-01-02", false), Ok(86_400_000));
        assert_eq!(parse_day("1970-01-01", true), Ok(86_400_000));
        assert_eq!(parse_day("1970-01-01T00:00:01Z", false), Ok(1000));
        assert!(parse_day("yesterday", false).is_err());
    }

    #[test]
    fn logged_bodies_hide_credentials() {
        let v = serde_json::json!({"messages": [{"role": "user",
            "content": "my key is sk-proj-abcdefghijklmnopqrstu and AKIAIOSFODNN7EXAMPLE, task-force ok"}],
            "api_key": "sk-whatever", "metadata": {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz"}});
        let out = redact(&v);
        assert!(!out.contains("abcdefghijklmnopqrstu"), "{out}");
        assert!(!out.contains("IOSFODNN7"), "{out}");
        assert!(!out.contains("sk-whatever"), "{out}");
        assert!(out.contains("task-force ok"), "ordinary words stay: {out}");
        assert_eq!(out.matches("[REDACTED]").count(), 4, "{out}");
    }
}
