//! Exact admission: budgets, requests per minute, tokens per minute and parallel requests of
//! every key, team and user a call belongs to, checked and reserved in one atomic step before
//! the upstream call and settled with the real usage after. N concurrent requests therefore
//! never spend past a budget by more than what was already in flight when it was reached, and
//! never exceed an RPM at all: each request reserves its estimated cost and tokens, and a
//! request is admitted only while `spend + reserved < max_budget`.
//!
//! One backend holds the counters. In one process it is memory ([`Ledger::local`]): a mutex
//! over a map, no I/O on the request path. Several gateway replicas share Redis
//! ([`Ledger::redis`]): one Lua script checks and reserves every entity of a call at once, so
//! replicas never admit N× a limit. An in-flight reservation in Redis carries a deadline and
//! expires on its own, so a replica that dies mid-request does not leak capacity. If Redis
//! cannot be reached the call falls back to this replica's memory counters (logged and counted
//! in `/metrics`): limits are then per replica until Redis is back, and spend is never lost.
//!
//! Windows are fixed calendar minutes, as LiteLLM's limiter counts them; budgets reset every
//! `budget_duration` from `budget_reset_at`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The limits of one key, team or user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// USD it may spend per budget period (or in all, without a period).
    pub max_budget: Option<f64>,
    /// Length of the budget period in ms.
    pub budget_duration_ms: Option<i64>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub parallel: Option<u64>,
}

impl Limits {
    /// Whether nothing is limited (such an entity needs no counting but its spend).
    pub fn is_empty(&self) -> bool {
        self.max_budget.is_none()
            && self.rpm.is_none()
            && self.tpm.is_none()
            && self.parallel.is_none()
    }
}

/// One entity a call is admitted against: its counter id, limits and stored standing.
#[derive(Debug, Clone)]
pub struct Entity {
    /// `key:<hash>`, `team:<id>` or `user:<id>`.
    pub id: String,
    /// Its limits now.
    pub limits: Limits,
    /// Spend as stored (seeds the counter the first time it is seen).
    pub spend: f64,
    /// When its budget period ends (ms), as stored.
    pub reset_at: Option<i64>,
}

/// Why a call is not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The budget is spent: spend (with what is in flight) reached `max`.
    Budget {
        /// The entity.
        id: String,
        /// Spend so far this period.
        spend: f64,
        /// Its budget.
        max: f64,
    },
    /// The minute's requests are used up.
    Rpm {
        /// The entity.
        id: String,
        /// Its limit.
        limit: u64,
        /// ms until the window resets.
        reset_ms: i64,
    },
    /// The minute's tokens are used up, or this request alone is larger than the limit.
    Tpm {
        /// The entity.
        id: String,
        /// Its limit.
        limit: u64,
        /// ms until the window resets.
        reset_ms: i64,
        /// The request's estimate alone exceeds the limit (retrying cannot help).
        too_large: bool,
    },
    /// Too many requests in flight.
    Parallel {
        /// The entity.
        id: String,
        /// Its limit.
        limit: u64,
    },
}

/// The rate-limit standing of the most specific limited entity, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateStanding {
    /// Requests per minute (if limited) and how many are left.
    pub requests: Option<(u64, u64)>,
    /// Tokens per minute (if limited) and how many are left.
    pub tokens: Option<(u64, u64)>,
    /// ms until the window resets.
    pub reset_ms: i64,
}

/// Capacity reserved for one call; give it back with [`Ledger::settle`].
#[derive(Debug, Clone)]
pub struct Grant {
    /// Reservation id (unique in this process).
    pub id: String,
    /// The entities it was reserved on.
    pub entities: Vec<String>,
    /// Reserved cost (USD) and tokens.
    pub cost: f64,
    /// Reserved tokens.
    pub tokens: u64,
    /// The minute the tokens were counted in.
    pub minute: i64,
    /// Headers to send.
    pub standing: RateStanding,
    /// Entities whose budget period rolled over during this admission: (id, new reset time).
    pub resets: Vec<(String, i64)>,
    /// Whether the reservation is held in Redis (else in this process's memory).
    pub shared: bool,
}

#[derive(Debug, Default)]
struct State {
    spend: f64,
    reserved: f64,
    reset_at: Option<i64>,
    minute: i64,
    requests: u64,
    tokens: u64,
    in_flight: u64,
}

/// The admission counters; see the module docs.
pub struct Ledger {
    local: Mutex<HashMap<String, State>>,
    redis: Option<RedisCounters>,
    next: AtomicU64,
    /// Times Redis could not be reached and memory counted instead.
    pub fallbacks: AtomicU64,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("shared", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

fn minute_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(60_000)
}

fn next_minute_ms(now_ms: i64) -> i64 {
    (minute_of(now_ms) + 1) * 60_000 - now_ms
}

/// Rolls a budget period over when it ended: returns the new end.
fn roll(reset_at: i64, duration: i64, now: i64) -> i64 {
    if duration <= 0 || reset_at > now {
        return reset_at;
    }
    let periods = (now - reset_at) / duration + 1;
    reset_at + periods * duration
}

impl Ledger {
    /// Counters in this process's memory (one gateway process).
    pub fn local() -> Self {
        Ledger {
            local: Mutex::default(),
            redis: None,
            next: AtomicU64::new(1),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Counters shared by every replica on the Redis server at `url`.
    pub fn redis(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis-url: {e}"))?;
        Ok(Ledger {
            redis: Some(RedisCounters {
                client,
                conn: tokio::sync::Mutex::new(None),
                down: AtomicBool::new(false),
            }),
            ..Self::local()
        })
    }

    /// Whether replicas share these counters.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Checks every entity's limits and, if all admit the call, reserves `cost` and `tokens` on
    /// each, atomically.
    pub async fn reserve(
        &self,
        entities: &[Entity],
        cost: f64,
        tokens: u64,
        now_ms: i64,
        deadline_ms: i64,
    ) -> Result<Grant, Refusal> {
        let id = format!(
            "{}-{}",
            crate::spend::process_tag(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        if let Some(r) = &self.redis {
            match r
                .reserve(&id, entities, cost, tokens, now_ms, deadline_ms)
                .await
            {
                Ok(outcome) => return outcome,
                Err(e) => self.redis_failed(r, &e),
            }
        }
        self.reserve_local(id, entities, cost, tokens, now_ms)
    }

    fn redis_failed(&self, r: &RedisCounters, e: &redis::RedisError) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if !r.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "gateway counters: Redis does not answer; counting in this replica's memory until it does (limits are per replica meanwhile)");
        }
    }

    fn reserve_local(
        &self,
        id: String,
        entities: &[Entity],
        cost: f64,
        tokens: u64,
        now: i64,
    ) -> Result<Grant, Refusal> {
        let minute = minute_of(now);
        let reset_ms = next_minute_ms(now);
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let mut resets = Vec::new();
        // Check everything first: nothing is reserved unless every entity admits the call.
        for e in entities {
            let s = map.entry(e.id.clone()).or_insert_with(|| State {
                spend: e.spend,
                reset_at: e.reset_at,
                ..State::default()
            });
            if let (Some(d), Some(at)) = (e.limits.budget_duration_ms, s.reset_at)
                && at <= now
            {
                s.reset_at = Some(roll(at, d, now));
                s.spend = 0.0;
                resets.push((e.id.clone(), roll(at, d, now)));
            }
            if s.minute != minute {
                s.minute = minute;
                s.requests = 0;
                s.tokens = 0;
            }
            refusal(
                e,
                s.spend,
                s.reserved,
                s.requests,
                s.tokens,
                s.in_flight,
                tokens,
                reset_ms,
            )?;
        }
        let mut standing = RateStanding {
            reset_ms,
            ..RateStanding::default()
        };
        for e in entities {
            if let Some(s) = map.get_mut(&e.id) {
                s.reserved += cost;
                s.requests += 1;
                s.tokens += tokens;
                s.in_flight += 1;
                tighten(&mut standing, &e.limits, s.requests, s.tokens);
            }
        }
        Ok(Grant {
            id,
            entities: entities.iter().map(|e| e.id.clone()).collect(),
            cost,
            tokens,
            minute,
            standing,
            resets,
            shared: false,
        })
    }

    /// Gives a grant's reservation back and counts what the call really cost and used.
    pub async fn settle(&self, grant: &Grant, cost: f64, tokens: u64) {
        if grant.shared
            && let Some(r) = &self.redis
        {
            match r.settle(grant, cost, tokens).await {
                Ok(()) => {
                    r.down.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    // The reservation expires in Redis by its deadline; the spend is counted
                    // here and reaches the database through the spend log.
                    self.redis_failed(r, &e);
                }
            }
        }
        self.settle_local(grant, cost, tokens);
    }

    /// [`Self::settle`] for a grant held in memory (no await).
    pub fn settle_local(&self, grant: &Grant, cost: f64, tokens: u64) {
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for id in &grant.entities {
            let s = map.entry(id.clone()).or_default();
            if !grant.shared {
                s.reserved = (s.reserved - grant.cost).max(0.0);
                s.in_flight = s.in_flight.saturating_sub(1);
                if s.minute == grant.minute {
                    s.tokens = (s.tokens + tokens).saturating_sub(grant.tokens);
                }
            }
            s.spend += cost;
        }
    }

    /// Sets an entity's spend and period end (a `/key/update` that sets `spend`, or a reset).
    pub async fn set_spend(&self, id: &str, spend: f64, reset_at: Option<i64>) {
        {
            let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
            let s = map.entry(id.to_string()).or_default();
            s.spend = spend;
            s.reset_at = reset_at;
        }
        if let Some(r) = &self.redis
            && let Err(e) = r.set_spend(id, spend, reset_at).await
        {
            self.redis_failed(r, &e);
        }
    }

    /// Forgets an entity (deleted).
    pub async fn forget(&self, id: &str) {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(r) = &self.redis
            && let Err(e) = r.forget(id).await
        {
            self.redis_failed(r, &e);
        }
    }

    /// An entity's live spend this period (`None`: never counted here).
    pub async fn spend(&self, id: &str) -> Option<f64> {
        if let Some(r) = &self.redis {
            match r.spend(id).await {
                Ok(Some(s)) => return Some(s),
                Ok(None) => {}
                Err(e) => self.redis_failed(r, &e),
            }
        }
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|s| s.spend)
    }
}

/// The first limit of `e` the call would break, given its standing.
#[allow(clippy::too_many_arguments)]
fn refusal(
    e: &Entity,
    spend: f64,
    reserved: f64,
    requests: u64,
    used_tokens: u64,
    in_flight: u64,
    tokens: u64,
    reset_ms: i64,
) -> Result<(), Refusal> {
    let l = &e.limits;
    if let Some(max) = l.max_budget
        && spend + reserved >= max
    {
        return Err(Refusal::Budget {
            id: e.id.clone(),
            spend,
            max,
        });
    }
    if let Some(rpm) = l.rpm
        && requests + 1 > rpm
    {
        return Err(Refusal::Rpm {
            id: e.id.clone(),
            limit: rpm,
            reset_ms,
        });
    }
    if let Some(tpm) = l.tpm
        && used_tokens + tokens > tpm
    {
        return Err(Refusal::Tpm {
            id: e.id.clone(),
            limit: tpm,
            reset_ms,
            too_large: tokens > tpm,
        });
    }
    if let Some(p) = l.parallel
        && in_flight + 1 > p
    {
        return Err(Refusal::Parallel {
            id: e.id.clone(),
            limit: p,
        });
    }
    Ok(())
}

/// Keeps the smallest remaining allowance across entities for the headers.
fn tighten(s: &mut RateStanding, l: &Limits, requests: u64, tokens: u64) {
    if let Some(rpm) = l.rpm {
        let left = rpm.saturating_sub(requests);
        if s.requests.is_none_or(|(_, r)| left < r) {
            s.requests = Some((rpm, left));
        }
    }
    if let Some(tpm) = l.tpm {
        let left = tpm.saturating_sub(tokens);
        if s.tokens.is_none_or(|(_, r)| left < r) {
            s.tokens = Some((tpm, left));
        }
    }
}

/// The Redis side of the ledger.
struct RedisCounters {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    down: AtomicBool,
}

/// Checks then reserves on every entity of a call, atomically (Redis runs a script alone).
/// KEYS: per entity its hash. ARGV: now, minute, reservation id, cost, tokens, deadline, then
/// per entity budget, duration, rpm, tpm, parallel (-1: none), seed spend, seed reset (-1).
/// Per entity the hash holds `spend` and `reset_at`; `<key>:m:<minute>` counts the minute's
/// requests `r` and tokens `t` (and expires after three minutes); the sorted set `<key>:res`
/// holds in-flight reservations `<id>|<cost>|<tokens>` scored by their deadline.
const RESERVE: &str = r#"
local now = tonumber(ARGV[1]); local minute = ARGV[2]; local rid = ARGV[3]
local cost = tonumber(ARGV[4]); local tok = tonumber(ARGV[5]); local deadline = tonumber(ARGV[6])
local n = #KEYS
local resets = {}
local standing = {}
for i = 1, n do
  local k = KEYS[i]; local b = 6 + (i - 1) * 7
  local budget = tonumber(ARGV[b+1]); local dur = tonumber(ARGV[b+2])
  local rpm = tonumber(ARGV[b+3]); local tpm = tonumber(ARGV[b+4]); local par = tonumber(ARGV[b+5])
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'spend', ARGV[b+6], 'reset_at', ARGV[b+7])
  end
  local reset_at = tonumber(redis.call('HGET', k, 'reset_at') or '-1')
  if dur > 0 and reset_at >= 0 and reset_at <= now then
    reset_at = reset_at + (math.floor((now - reset_at) / dur) + 1) * dur
    redis.call('HSET', k, 'spend', 0, 'reset_at', reset_at)
    table.insert(resets, i); table.insert(resets, tostring(reset_at))
  end
  local spend = tonumber(redis.call('HGET', k, 'spend') or '0')
  redis.call('ZREMRANGEBYSCORE', k .. ':res', '-inf', now)
  local held = redis.call('ZRANGE', k .. ':res', 0, -1)
  local reserved = 0
  for _, m in ipairs(held) do
    local c = string.match(m, '|([^|]+)|')
    reserved = reserved + (tonumber(c) or 0)
  end
  local reqs = tonumber(redis.call('HGET', k .. ':m:' .. minute, 'r') or '0')
  local toks = tonumber(redis.call('HGET', k .. ':m:' .. minute, 't') or '0')
  if budget >= 0 and spend + reserved >= budget then
    return {0, i, 'budget', tostring(spend), tostring(budget)}
  end
  if rpm >= 0 and reqs + 1 > rpm then return {0, i, 'rpm', tostring(rpm)} end
  if tpm >= 0 and toks + tok > tpm then return {0, i, 'tpm', tostring(tpm)} end
  if par >= 0 and #held + 1 > par then return {0, i, 'parallel', tostring(par)} end
  standing[i] = {reqs + 1, toks + tok}
end
local out = {1}
for i = 1, n do
  local k = KEYS[i]
  redis.call('ZADD', k .. ':res', deadline, rid .. '|' .. ARGV[4] .. '|' .. ARGV[5])
  local w = k .. ':m:' .. minute
  redis.call('HINCRBY', w, 'r', 1)
  redis.call('HINCRBY', w, 't', tok)
  redis.call('PEXPIRE', w, 180000)
  table.insert(out, standing[i][1]); table.insert(out, standing[i][2])
end
table.insert(out, #resets / 2)
for _, v in ipairs(resets) do table.insert(out, v) end
return out
"#;

/// Gives a reservation back and counts the real cost: ARGV reservation member, minute, cost,
/// tokens reserved, tokens used.
const SETTLE: &str = r#"
for i = 1, #KEYS do
  local k = KEYS[i]
  redis.call('ZREM', k .. ':res', ARGV[1])
  redis.call('HINCRBYFLOAT', k, 'spend', ARGV[3])
  local d = tonumber(ARGV[5]) - tonumber(ARGV[4])
  local w = k .. ':m:' .. ARGV[2]
  if d ~= 0 and redis.call('EXISTS', w) == 1 then
    redis.call('HINCRBY', w, 't', d)
  end
end
return 1
"#;

fn opt_arg<T: ToString>(v: Option<T>) -> String {
    v.map_or("-1".to_string(), |v| v.to_string())
}

fn redis_key(id: &str) -> String {
    format!("loopml:gw:{id}")
}

impl RedisCounters {
    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let mut c = self.conn.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let fresh = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "connecting to Redis timed out"))
        })??;
        *c = Some(fresh.clone());
        Ok(fresh)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut c = self.conn().await?;
        let r = tokio::time::timeout(std::time::Duration::from_secs(2), cmd.query_async(&mut c))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "Redis timed out")))?;
        if r.is_err() {
            *self.conn.lock().await = None;
        } else {
            self.down.store(false, Ordering::Relaxed);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn reserve(
        &self,
        rid: &str,
        entities: &[Entity],
        cost: f64,
        tokens: u64,
        now: i64,
        deadline: i64,
    ) -> redis::RedisResult<Result<Grant, Refusal>> {
        let minute = minute_of(now);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RESERVE).arg(entities.len());
        for e in entities {
            cmd.arg(redis_key(&e.id));
        }
        cmd.arg(now)
            .arg(minute)
            .arg(rid)
            .arg(cost.to_string())
            .arg(tokens)
            .arg(deadline);
        for e in entities {
            let l = &e.limits;
            cmd.arg(opt_arg(l.max_budget))
                .arg(opt_arg(l.budget_duration_ms))
                .arg(opt_arg(l.rpm))
                .arg(opt_arg(l.tpm))
                .arg(opt_arg(l.parallel))
                .arg(e.spend.to_string())
                .arg(opt_arg(e.reset_at));
        }
        let out: Vec<redis::Value> = self.run(&cmd).await?;
        let int = |v: Option<&redis::Value>| -> i64 {
            match v {
                Some(redis::Value::Int(i)) => *i,
                Some(redis::Value::BulkString(b)) => {
                    String::from_utf8_lossy(b).parse().unwrap_or(0)
                }
                _ => 0,
            }
        };
        let text = |v: Option<&redis::Value>| -> String {
            match v {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(redis::Value::Int(i)) => i.to_string(),
                _ => String::new(),
            }
        };
        let reset_ms = next_minute_ms(now);
        if int(out.first()) == 0 {
            let i = (int(out.get(1)) - 1).max(0) as usize;
            let id = entities.get(i).map(|e| e.id.clone()).unwrap_or_default();
            let num = |v: Option<&redis::Value>| text(v).parse::<f64>().unwrap_or(0.0);
            return Ok(Err(match text(out.get(2)).as_str() {
                "budget" => Refusal::Budget {
                    id,
                    spend: num(out.get(3)),
                    max: num(out.get(4)),
                },
                "rpm" => Refusal::Rpm {
                    id,
                    limit: num(out.get(3)) as u64,
                    reset_ms,
                },
                "tpm" => {
                    let limit = num(out.get(3)) as u64;
                    Refusal::Tpm {
                        id,
                        limit,
                        reset_ms,
                        too_large: tokens > limit,
                    }
                }
                _ => Refusal::Parallel {
                    id,
                    limit: num(out.get(3)) as u64,
                },
            }));
        }
        let mut standing = RateStanding {
            reset_ms,
            ..RateStanding::default()
        };
        for (i, e) in entities.iter().enumerate() {
            let reqs = int(out.get(1 + 2 * i)) as u64;
            let toks = int(out.get(2 + 2 * i)) as u64;
            tighten(&mut standing, &e.limits, reqs, toks);
        }
        let at = 1 + 2 * entities.len();
        let n = int(out.get(at)).max(0) as usize;
        let mut resets = Vec::new();
        for j in 0..n {
            let i = (int(out.get(at + 1 + 2 * j)) - 1).max(0) as usize;
            if let Some(e) = entities.get(i) {
                resets.push((
                    e.id.clone(),
                    text(out.get(at + 2 + 2 * j)).parse().unwrap_or(0),
                ));
            }
        }
        Ok(Ok(Grant {
            id: format!("{rid}|{}|{tokens}", cost),
            entities: entities.iter().map(|e| e.id.clone()).collect(),
            cost,
            tokens,
            minute,
            standing,
            resets,
            shared: true,
        }))
    }

    async fn settle(&self, g: &Grant, cost: f64, tokens: u64) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SETTLE).arg(g.entities.len());
        for id in &g.entities {
            cmd.arg(redis_key(id));
        }
        cmd.arg(&g.id)
            .arg(g.minute)
            .arg(cost.to_string())
            .arg(g.tokens)
            .arg(tokens);
        let _: i64 = self.run(&cmd).await?;
        Ok(())
    }

    async fn set_spend(
        &self,
        id: &str,
        spend: f64,
        reset_at: Option<i64>,
    ) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(redis_key(id))
            .arg("spend")
            .arg(spend.to_string())
            .arg("reset_at")
            .arg(opt_arg(reset_at));
        let _: i64 = self.run(&cmd).await?;
        Ok(())
    }

    async fn forget(&self, id: &str) -> redis::RedisResult<()> {
        let k = redis_key(id);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&k).arg(format!("{k}:res"));
        let _: i64 = self.run(&cmd).await?;
        Ok(())
    }

    async fn spend(&self, id: &str) -> redis::RedisResult<Option<f64>> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(redis_key(id)).arg("spend");
        let v: Option<String> = self.run(&cmd).await?;
        Ok(v.and_then(|s| s.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(limits: Limits) -> Entity {
        Entity {
            id: "key:k".into(),
            limits,
            spend: 0.0,
            reset_at: None,
        }
    }

    #[tokio::test]
    async fn a_budget_admits_while_spend_and_reservations_stay_under_it() {
        let l = Ledger::local();
        let e = [key(Limits {
            max_budget: Some(1.0),
            ..Limits::default()
        })];
        // Three concurrent calls reserving 0.4 each: the third sees 0.8 < 1.0 and is admitted,
        // a fourth sees 1.2 and is not.
        let g: Vec<Grant> = futures::future::join_all((0..3).map(|_| l.reserve(&e, 0.4, 10, 0, 1)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(matches!(
            l.reserve(&e, 0.4, 10, 0, 1).await,
            Err(Refusal::Budget { .. })
        ));
        // Settled cheaper than estimated: capacity comes back.
        for grant in &g {
            l.settle(grant, 0.1, 5).await;
        }
        assert!((l.spend("key:k").await.unwrap() - 0.3).abs() < 1e-9);
        assert!(l.reserve(&e, 0.4, 10, 0, 1).await.is_ok());
    }

    #[tokio::test]
    async fn rpm_tpm_and_parallel_refuse_with_the_window_reset() {
        let l = Ledger::local();
        let e = [key(Limits {
            rpm: Some(2),
            tpm: Some(100),
            parallel: Some(5),
            ..Limits::default()
        })];
        let now = 60_000 * 10 + 15_000;
        let g = l.reserve(&e, 0.0, 30, now, now + 1).await.unwrap();
        assert_eq!(g.standing.requests, Some((2, 1)));
        assert_eq!(g.standing.tokens, Some((100, 70)));
        assert_eq!(g.standing.reset_ms, 45_000);
        assert!(matches!(
            l.reserve(&e, 0.0, 80, now, now + 1).await,
            Err(Refusal::Tpm {
                too_large: false,
                ..
            })
        ));
        assert!(matches!(
            l.reserve(&e, 0.0, 101, now, now + 1).await,
            Err(Refusal::Tpm {
                too_large: true,
                ..
            })
        ));
        l.reserve(&e, 0.0, 10, now, now + 1).await.unwrap();
        assert!(matches!(
            l.reserve(&e, 0.0, 1, now, now + 1).await,
            Err(Refusal::Rpm {
                reset_ms: 45_000,
                ..
            })
        ));
        // The next minute starts afresh.
        assert!(l.reserve(&e, 0.0, 1, now + 60_000, now).await.is_ok());
        let p = [key(Limits {
            parallel: Some(1),
            ..Limits::default()
        })];
        let l = Ledger::local();
        let g = l.reserve(&p, 0.0, 1, now, now).await.unwrap();
        assert!(matches!(
            l.reserve(&p, 0.0, 1, now, now).await,
            Err(Refusal::Parallel { limit: 1, .. })
        ));
        l.settle(&g, 0.0, 1).await;
        assert!(l.reserve(&p, 0.0, 1, now, now).await.is_ok());
    }

    #[tokio::test]
    async fn a_refusal_by_one_entity_reserves_nothing_on_the_others() {
        let l = Ledger::local();
        let team = Entity {
            id: "team:t".into(),
            limits: Limits {
                rpm: Some(1),
                ..Limits::default()
            },
            spend: 0.0,
            reset_at: None,
        };
        let a = key(Limits {
            rpm: Some(10),
            ..Limits::default()
        });
        l.reserve(&[a.clone(), team.clone()], 0.0, 1, 0, 1)
            .await
            .unwrap();
        assert!(l.reserve(&[a.clone(), team], 0.0, 1, 0, 1).await.is_err());
        let g = l.reserve(&[a], 0.0, 1, 0, 1).await.unwrap();
        // Only the first admitted call counted on the key.
        assert_eq!(g.standing.requests, Some((10, 8)));
    }

    #[tokio::test]
    async fn budget_periods_roll_over() {
        let l = Ledger::local();
        let e = [Entity {
            id: "key:k".into(),
            limits: Limits {
                max_budget: Some(1.0),
                budget_duration_ms: Some(1000),
                ..Limits::default()
            },
            spend: 5.0,
            reset_at: Some(10_000),
        }];
        assert!(l.reserve(&e, 0.1, 1, 9_999, 1).await.is_err());
        let g = l.reserve(&e, 0.1, 1, 12_500, 1).await.unwrap();
        assert_eq!(g.resets, vec![("key:k".to_string(), 13_000)]);
        assert_eq!(roll(10_000, 1000, 10_000), 11_000);
    }
}
