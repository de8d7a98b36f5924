//! Virtual keys, teams and users, managed with LiteLLM's proxy API (`/key/generate`, `/key/info`,
//! `/key/update`, `/key/delete`, `/key/list`, `/key/block`, `/key/unblock`, `/team/new|info|
//! update|delete|list`, `/user/new|info|update|delete|list`) and authenticated with the master
//! key. A key is shown once, when generated; only its SHA-256 is stored (as LiteLLM stores it),
//! so `/key/info` and the spend log name it by that hash (`token`). Each of the three carries
//! `max_budget`, `budget_duration` (its periodic reset), `rpm_limit`, `tpm_limit` and
//! `max_parallel_requests`; a key may also be limited to `models`, expire (`duration`) and be
//! blocked. The records live in the gateway's tables and in memory: a request is admitted
//! from memory, never from the database. Another replica's change is announced on the change
//! bus (and a key not yet in memory is looked up once in the database), so every replica sees
//! it within moments.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::ledger::{Entity, Limits};
use crate::proxy::ApiError;
use loopml_store::Database;

/// The crate's tables.
pub const MIGRATIONS: &[loopml_store::Migration] = &[loopml_store::Migration {
    name: "0001_gateway",
    sqlite: include_str!("../migrations/sqlite/0001_gateway.sql"),
    postgres: include_str!("../migrations/postgres/0001_gateway.sql"),
}];

/// What a key, team or user may spend and how fast.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budget {
    /// USD per period.
    pub max_budget: Option<f64>,
    /// The period, as LiteLLM writes it (`30s`, `10m`, `24h`, `30d`, `1mo`).
    pub budget_duration: Option<String>,
    /// When the current period ends (ms).
    pub budget_reset_at: Option<i64>,
    /// Requests per minute.
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    pub tpm_limit: Option<u64>,
    /// Requests in flight at once.
    pub max_parallel_requests: Option<u64>,
    /// Spend as stored (the live figure is the ledger's).
    pub spend: f64,
}

impl Budget {
    fn limits(&self) -> Limits {
        Limits {
            max_budget: self.max_budget,
            budget_duration_ms: self
                .budget_duration
                .as_deref()
                .and_then(|d| parse_duration(d).ok()),
            rpm: self.rpm_limit,
            tpm: self.tpm_limit,
            parallel: self.max_parallel_requests,
        }
    }

    fn to_json(&self, out: &mut Map<String, Value>, live_spend: Option<f64>) {
        out.insert("spend".into(), json!(live_spend.unwrap_or(self.spend)));
        out.insert("max_budget".into(), json!(self.max_budget));
        out.insert("budget_duration".into(), json!(self.budget_duration));
        out.insert(
            "budget_reset_at".into(),
            json!(self.budget_reset_at.map(iso)),
        );
        out.insert("rpm_limit".into(), json!(self.rpm_limit));
        out.insert("tpm_limit".into(), json!(self.tpm_limit));
        out.insert(
            "max_parallel_requests".into(),
            json!(self.max_parallel_requests),
        );
    }
}

/// A virtual key as stored (without the key itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// SHA-256 of the key, hex.
    pub token: String,
    /// `sk-...` plus its last four characters, for display.
    pub key_name: String,
    /// A name for it.
    pub key_alias: Option<String>,
    /// The user it belongs to.
    pub user_id: Option<String>,
    /// The team it belongs to.
    pub team_id: Option<String>,
    /// Model groups it may call (empty: all).
    pub models: Vec<String>,
    /// Its budget and limits.
    pub budget: Budget,
    /// When it stops working (ms).
    pub expires: Option<i64>,
    /// Whether it is blocked.
    pub blocked: bool,
    /// Free-form metadata.
    pub metadata: Value,
    /// Created (ms).
    pub created_at: i64,
    /// Updated (ms).
    pub updated_at: i64,
}

/// A team.
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    /// Its id.
    pub team_id: String,
    /// A name for it.
    pub team_alias: Option<String>,
    /// Model groups its keys may call (empty: all).
    pub models: Vec<String>,
    /// Its budget and limits (shared by all its keys).
    pub budget: Budget,
    /// Whether its keys are blocked.
    pub blocked: bool,
    /// Free-form metadata.
    pub metadata: Value,
    /// Created (ms).
    pub created_at: i64,
    /// Updated (ms).
    pub updated_at: i64,
}

/// A user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Its id.
    pub user_id: String,
    /// E-mail.
    pub user_email: Option<String>,
    /// LiteLLM's role name (`internal_user`, `proxy_admin`, …), kept as given.
    pub user_role: Option<String>,
    /// Model groups its keys may call (empty: all).
    pub models: Vec<String>,
    /// Its budget and limits (shared by all its keys).
    pub budget: Budget,
    /// Free-form metadata.
    pub metadata: Value,
    /// Created (ms).
    pub created_at: i64,
    /// Updated (ms).
    pub updated_at: i64,
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// ISO-8601 UTC, as LiteLLM's API writes times.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A LiteLLM duration (`30s`, `10m`, `24h`, `30d`, `2w`, `1mo`) in ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 30s, 10m, 24h, 30d or 1mo"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "mo" => 30 * 86_400_000,
        _ => {
            return Err(format!(
                "'{s}' is not a duration such as 30s, 10m, 24h, 30d or 1mo"
            ));
        }
    };
    if n <= 0 {
        return Err(format!("'{s}' must be longer than 0"));
    }
    Ok(n.saturating_mul(unit_ms))
}

/// SHA-256 of a key, hex (how keys are stored and named).
pub fn hash_key(key: &str) -> String {
    let d = sha2::Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key: `sk-` and 22 URL-safe characters (128 random bits), as LiteLLM makes them.
fn new_key() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    format!(
        "sk-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn key_name(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// The ledger id of a key, team or user.
pub fn entity_id(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// Keys, teams and users in memory, backed by the gateway's tables.
pub struct Directory {
    keys: RwLock<HashMap<String, Arc<Key>>>,
    teams: RwLock<HashMap<String, Arc<Team>>>,
    users: RwLock<HashMap<String, Arc<User>>>,
    /// Key hashes looked up in the database and not found, with when: not asked again for a
    /// few seconds (a flood of bad keys never reaches the database).
    misses: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    db: Option<Database>,
    bus: Option<loopml_store::ChangeBus>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("persistent", &self.db.is_some())
            .finish_non_exhaustive()
    }
}

/// The change-bus topic keys, teams and users are announced on.
pub const TOPIC: &str = "gateway_keys";

type StoreResult<T> = std::result::Result<T, loopml_store::StoreError>;

fn opt_u64(r: &loopml_store::Row<'_>, i: usize) -> StoreResult<Option<u64>> {
    Ok(r.opt_i64(i)?.map(|v| v.max(0) as u64))
}

fn list_of(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

const KEY_COLUMNS: &str = "token, key_name, key_alias, user_id, team_id, models, max_budget, \
    budget_duration, budget_reset_at, rpm_limit, tpm_limit, max_parallel_requests, spend, \
    expires, blocked, metadata, created_at, updated_at";
const TEAM_COLUMNS: &str = "team_id, team_alias, models, max_budget, budget_duration, \
    budget_reset_at, rpm_limit, tpm_limit, max_parallel_requests, spend, blocked, metadata, \
    created_at, updated_at";
const USER_COLUMNS: &str = "user_id, user_email, user_role, models, max_budget, \
    budget_duration, budget_reset_at, rpm_limit, tpm_limit, max_parallel_requests, spend, \
    metadata, created_at, updated_at";

fn budget_at(r: &loopml_store::Row<'_>, i: usize) -> StoreResult<Budget> {
    Ok(Budget {
        max_budget: r.opt_f64(i)?,
        budget_duration: r.opt_string(i + 1)?,
        budget_reset_at: r.opt_i64(i + 2)?,
        rpm_limit: opt_u64(r, i + 3)?,
        tpm_limit: opt_u64(r, i + 4)?,
        max_parallel_requests: opt_u64(r, i + 5)?,
        spend: r.opt_f64(i + 6)?.unwrap_or(0.0),
    })
}

fn key_row(r: &loopml_store::Row<'_>) -> StoreResult<Key> {
    Ok(Key {
        token: r.string(0)?,
        key_name: r.string(1)?,
        key_alias: r.opt_string(2)?,
        user_id: r.opt_string(3)?,
        team_id: r.opt_string(4)?,
        models: list_of(r.str(5)?),
        budget: budget_at(r, 6)?,
        expires: r.opt_i64(13)?,
        blocked: r.i64(14)? != 0,
        metadata: serde_json::from_str(r.str(15)?).unwrap_or(json!({})),
        created_at: r.i64(16)?,
        updated_at: r.i64(17)?,
    })
}

fn team_row(r: &loopml_store::Row<'_>) -> StoreResult<Team> {
    Ok(Team {
        team_id: r.string(0)?,
        team_alias: r.opt_string(1)?,
        models: list_of(r.str(2)?),
        budget: budget_at(r, 3)?,
        blocked: r.i64(10)? != 0,
        metadata: serde_json::from_str(r.str(11)?).unwrap_or(json!({})),
        created_at: r.i64(12)?,
        updated_at: r.i64(13)?,
    })
}

fn user_row(r: &loopml_store::Row<'_>) -> StoreResult<User> {
    Ok(User {
        user_id: r.string(0)?,
        user_email: r.opt_string(1)?,
        user_role: r.opt_string(2)?,
        models: list_of(r.str(3)?),
        budget: budget_at(r, 4)?,
        metadata: serde_json::from_str(r.str(11)?).unwrap_or(json!({})),
        created_at: r.i64(12)?,
        updated_at: r.i64(13)?,
    })
}

fn budget_params(b: &Budget) -> Vec<loopml_store::Value<'static>> {
    vec![
        b.max_budget.into(),
        b.budget_duration.clone().into(),
        b.budget_reset_at.into(),
        b.rpm_limit.map(|v| v as i64).into(),
        b.tpm_limit.map(|v| v as i64).into(),
        b.max_parallel_requests.map(|v| v as i64).into(),
    ]
}

/// What a lookup of a presented key found.
#[derive(Debug)]
pub enum Lookup {
    /// A stored key.
    Found(Arc<Key>),
    /// No such key.
    Unknown,
    /// The database could not be asked.
    Unavailable(String),
}

impl Directory {
    /// An empty directory; with a database, its tables are migrated (call [`Self::reload`]).
    pub fn new(db: Option<Database>, bus: Option<loopml_store::ChangeBus>) -> StoreResult<Self> {
        if let Some(db) = &db {
            db.migrate("gateway", MIGRATIONS)?;
        }
        Ok(Directory {
            keys: RwLock::default(),
            teams: RwLock::default(),
            users: RwLock::default(),
            misses: std::sync::Mutex::default(),
            db,
            bus,
        })
    }

    /// The database, when the directory is persistent.
    pub fn database(&self) -> Option<&Database> {
        self.db.as_ref()
    }

    /// Reads every key, team and user from the database into memory.
    pub async fn reload(&self) -> StoreResult<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let (keys, teams, users) = db
            .read(|c| {
                let keys = c.query(
                    &format!("SELECT {KEY_COLUMNS} FROM gateway_keys"),
                    &[],
                    key_row,
                )?;
                let teams = c.query(
                    &format!("SELECT {TEAM_COLUMNS} FROM gateway_teams"),
                    &[],
                    team_row,
                )?;
                let users = c.query(
                    &format!("SELECT {USER_COLUMNS} FROM gateway_users"),
                    &[],
                    user_row,
                )?;
                Ok::<_, loopml_store::StoreError>((keys, teams, users))
            })
            .await?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys
            .into_iter()
            .map(|k| (k.token.clone(), Arc::new(k)))
            .collect();
        *self.teams.write().unwrap_or_else(|p| p.into_inner()) = teams
            .into_iter()
            .map(|t| (t.team_id.clone(), Arc::new(t)))
            .collect();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = users
            .into_iter()
            .map(|u| (u.user_id.clone(), Arc::new(u)))
            .collect();
        self.misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// Follows other replicas' changes until the app stops: reloads at once on each
    /// announcement (with Redis), and every [`POLL`] when the tables' fingerprint moved (the
    /// database is the truth; Redis only makes replicas converge in milliseconds).
    pub async fn follow(self: Arc<Self>) {
        let Some(db) = self.db.clone() else { return };
        let mut rx = self.bus.as_ref().map(|b| b.watch(TOPIC));
        let mut seen = fingerprint(&db).await.ok();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let announced = async {
                match rx.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let reload = tokio::select! {
                ok = announced => {
                    if !ok {
                        rx = None;
                    }
                    ok
                }
                _ = tick.tick() => {
                    let now = fingerprint(&db).await.ok();
                    let moved = now.is_some() && now != seen;
                    seen = now.or(seen);
                    moved
                }
            };
            if reload && let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot reload gateway keys after another replica's change");
            }
        }
    }

    fn announce(&self) {
        if let Some(bus) = &self.bus {
            bus.announce(TOPIC, now_ms());
        }
    }

    /// The key with this hash: from memory, else (once in a while) from the database.
    pub async fn key(&self, token: &str) -> Lookup {
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            return Lookup::Found(k.clone());
        }
        let Some(db) = &self.db else {
            return Lookup::Unknown;
        };
        {
            let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
            if misses
                .get(token)
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(5))
            {
                return Lookup::Unknown;
            }
            if misses.len() > 10_000 {
                misses.clear();
            }
        }
        let t = token.to_string();
        let found = db
            .read(move |c| {
                c.query_opt(
                    &format!("SELECT {KEY_COLUMNS} FROM gateway_keys WHERE token = ?1"),
                    &[t.as_str().into()],
                    key_row,
                )
            })
            .await;
        match found {
            Ok(Some(k)) => {
                // A key made on another replica: its team and user may be new here too.
                let _ = self.reload().await;
                let k = Arc::new(k);
                self.keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(k.token.clone(), k.clone());
                Lookup::Found(k)
            }
            Ok(None) => {
                self.misses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(token.to_string(), std::time::Instant::now());
                Lookup::Unknown
            }
            Err(e) => Lookup::Unavailable(e.to_string()),
        }
    }

    /// The display name (`sk-...abcd`) of the key with this hash, if known here.
    pub fn keys_name(&self, token: &str) -> Option<String> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .map(|k| k.key_alias.clone().unwrap_or_else(|| k.key_name.clone()))
    }

    /// A team by id.
    pub fn team(&self, id: &str) -> Option<Arc<Team>> {
        self.teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Option<Arc<User>> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The entities a key's call is admitted against: the key, its team and its user.
    pub fn entities(&self, key: &Key) -> Vec<Entity> {
        let mut out = vec![Entity {
            id: entity_id("key", &key.token),
            limits: key.budget.limits(),
            spend: key.budget.spend,
            reset_at: key.budget.budget_reset_at,
        }];
        if let Some(t) = key.team_id.as_deref().and_then(|t| self.team(t)) {
            out.push(Entity {
                id: entity_id("team", &t.team_id),
                limits: t.budget.limits(),
                spend: t.budget.spend,
                reset_at: t.budget.budget_reset_at,
            });
        }
        if let Some(u) = key.user_id.as_deref().and_then(|u| self.user(u)) {
            out.push(Entity {
                id: entity_id("user", &u.user_id),
                limits: u.budget.limits(),
                spend: u.budget.spend,
                reset_at: u.budget.budget_reset_at,
            });
        }
        out
    }

    fn all_keys(&self) -> Vec<Arc<Key>> {
        let mut v: Vec<Arc<Key>> = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.token).cmp(&(b.created_at, &b.token)));
        v
    }

    async fn save_key(&self, k: &Key, new: bool) -> StoreResult<()> {
        if let Some(db) = &self.db {
            let k = k.clone();
            db.write(move |c| {
                let mut p: Vec<loopml_store::Value<'static>> = vec![
                    k.token.clone().into(),
                    k.key_name.clone().into(),
                    k.key_alias.clone().into(),
                    k.user_id.clone().into(),
                    k.team_id.clone().into(),
                    json!(k.models).to_string().into(),
                ];
                p.extend(budget_params(&k.budget));
                p.extend([
                    k.expires.into(),
                    k.blocked.into(),
                    k.metadata.to_string().into(),
                    k.created_at.into(),
                    k.updated_at.into(),
                    k.budget.spend.into(),
                ]);
                if new {
                    c.execute(
                        "INSERT INTO gateway_keys (token, key_name, key_alias, user_id, team_id, \
                         models, max_budget, budget_duration, budget_reset_at, rpm_limit, \
                         tpm_limit, max_parallel_requests, expires, blocked, metadata, \
                         created_at, updated_at, spend) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                         ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                        &p,
                    )?;
                } else {
                    // Spend is the spend writer's: only an explicit reset writes it here.
                    p.pop();
                    c.execute(
                        "UPDATE gateway_keys SET key_name = ?2, key_alias = ?3, user_id = ?4, \
                         team_id = ?5, models = ?6, max_budget = ?7, budget_duration = ?8, \
                         budget_reset_at = ?9, rpm_limit = ?10, tpm_limit = ?11, \
                         max_parallel_requests = ?12, expires = ?13, blocked = ?14, \
                         metadata = ?15, created_at = ?16, updated_at = ?17 WHERE token = ?1",
                        &p,
                    )?;
                }
                Ok::<_, loopml_store::StoreError>(())
            })
            .await?;
        }
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.token.clone(), Arc::new(k.clone()));
        self.announce();
        Ok(())
    }

    async fn save_team(&self, t: &Team, new: bool) -> StoreResult<()> {
        if let Some(db) = &self.db {
            let t = t.clone();
            db.write(move |c| {
                let mut p: Vec<loopml_store::Value<'static>> = vec![
                    t.team_id.clone().into(),
                    t.team_alias.clone().into(),
                    json!(t.models).to_string().into(),
                ];
                p.extend(budget_params(&t.budget));
                p.extend([
                    t.blocked.into(),
                    t.metadata.to_string().into(),
                    t.created_at.into(),
                    t.updated_at.into(),
                ]);
                if new {
                    c.execute(
                        "INSERT INTO gateway_teams (team_id, team_alias, models, max_budget, \
                         budget_duration, budget_reset_at, rpm_limit, tpm_limit, \
                         max_parallel_requests, blocked, metadata, created_at, updated_at, \
                         spend) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0)",
                        &p,
                    )?;
                } else {
                    c.execute(
                        "UPDATE gateway_teams SET team_alias = ?2, models = ?3, max_budget = ?4, \
                         budget_duration = ?5, budget_reset_at = ?6, rpm_limit = ?7, \
                         tpm_limit = ?8, max_parallel_requests = ?9, blocked = ?10, \
                         metadata = ?11, created_at = ?12, updated_at = ?13 WHERE team_id = ?1",
                        &p,
                    )?;
                }
                Ok::<_, loopml_store::StoreError>(())
            })
            .await?;
        }
        self.teams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.team_id.clone(), Arc::new(t.clone()));
        self.announce();
        Ok(())
    }

    async fn save_user(&self, u: &User, new: bool) -> StoreResult<()> {
        if let Some(db) = &self.db {
            let u = u.clone();
            db.write(move |c| {
                let mut p: Vec<loopml_store::Value<'static>> = vec![
                    u.user_id.clone().into(),
                    u.user_email.clone().into(),
                    u.user_role.clone().into(),
                    json!(u.models).to_string().into(),
                ];
                p.extend(budget_params(&u.budget));
                p.extend([
                    u.metadata.to_string().into(),
                    u.created_at.into(),
                    u.updated_at.into(),
                ]);
                if new {
                    c.execute(
                        "INSERT INTO gateway_users (user_id, user_email, user_role, models, \
                         max_budget, budget_duration, budget_reset_at, rpm_limit, tpm_limit, \
                         max_parallel_requests, metadata, created_at, updated_at, spend) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0)",
                        &p,
                    )?;
                } else {
                    c.execute(
                        "UPDATE gateway_users SET user_email = ?2, user_role = ?3, models = ?4, \
                         max_budget = ?5, budget_duration = ?6, budget_reset_at = ?7, \
                         rpm_limit = ?8, tpm_limit = ?9, max_parallel_requests = ?10, \
                         metadata = ?11, created_at = ?12, updated_at = ?13 WHERE user_id = ?1",
                        &p,
                    )?;
                }
                Ok::<_, loopml_store::StoreError>(())
            })
            .await?;
        }
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(u.user_id.clone(), Arc::new(u.clone()));
        self.announce();
        Ok(())
    }

    async fn delete_rows(
        &self,
        table: &'static str,
        column: &'static str,
        ids: Vec<String>,
    ) -> StoreResult<()> {
        if let Some(db) = &self.db {
            db.write(move |c| {
                for id in &ids {
                    c.execute(
                        &format!("DELETE FROM {table} WHERE {column} = ?1"),
                        &[id.as_str().into()],
                    )?;
                }
                Ok::<_, loopml_store::StoreError>(())
            })
            .await?;
        }
        self.announce();
        Ok(())
    }

    /// Writes an entity's spend (an explicit `spend` in an update).
    async fn write_spend(
        &self,
        table: &'static str,
        column: &'static str,
        id: &str,
        spend: f64,
    ) -> StoreResult<()> {
        if let Some(db) = &self.db {
            let id = id.to_string();
            db.write(move |c| {
                c.execute(
                    &format!("UPDATE {table} SET spend = ?2 WHERE {column} = ?1"),
                    &[id.as_str().into(), spend.into()],
                )
            })
            .await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The management API.

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message.into(),
    )
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        message.into(),
    )
}

fn store_error(e: loopml_store::StoreError) -> ApiError {
    if e.is_unique_violation() {
        return bad("that id or alias is already taken");
    }
    tracing::warn!(error = %e, "gateway key store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "store_unavailable",
        "the gateway's key store cannot be written now; retry shortly".into(),
    )
}

/// Fields a request may carry that loopml takes but does not act on when empty (LiteLLM's
/// clients send them by default).
const TOLERATED: &[&str] = &[
    "aliases",
    "config",
    "permissions",
    "tags",
    "send_invite_email",
    "guardrails",
    "soft_budget",
    "key_type",
    "allowed_cache_controls",
    "model_max_budget",
    "model_rpm_limit",
    "model_tpm_limit",
];

/// A parsed request body: an object whose every key is checked off as it is read; keys left
/// over are refused by name.
struct Body {
    map: Map<String, Value>,
    seen: Vec<&'static str>,
}

impl Body {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body {
                map: Map::new(),
                seen: Vec::new(),
            });
        }
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(map)) => Ok(Body {
                map,
                seen: Vec::new(),
            }),
            Ok(_) => Err(bad("the request body must be a JSON object")),
            Err(e) => Err(bad(format!("the request body is not JSON: {e}"))),
        }
    }

    fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    fn get(&mut self, k: &'static str) -> Option<&Value> {
        self.seen.push(k);
        self.map.get(k).filter(|v| !v.is_null())
    }

    fn text(&mut self, k: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(bad(format!("\"{k}\" must not be empty"))),
            Some(_) => Err(bad(format!("\"{k}\" must be a string"))),
        }
    }

    fn money(&mut self, k: &'static str) -> Result<Option<f64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
                _ => Err(bad(format!("\"{k}\" must be a number of 0 or more"))),
            },
        }
    }

    fn count(&mut self, k: &'static str) -> Result<Option<u64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(format!("\"{k}\" must be a whole number of 0 or more"))),
        }
    }

    fn duration(&mut self, k: &'static str) -> Result<Option<String>, ApiError> {
        match self.text(k)? {
            None => Ok(None),
            Some(d) => {
                parse_duration(&d).map_err(|e| bad(format!("\"{k}\": {e}")))?;
                Ok(Some(d))
            }
        }
    }

    fn list(&mut self, k: &'static str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("\"{k}\" must be a list of strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad(format!("\"{k}\" must be a list of strings"))),
        }
    }

    fn object(&mut self, k: &'static str) -> Result<Option<Value>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(_) => Err(bad(format!("\"{k}\" must be an object"))),
        }
    }

    fn flag(&mut self, k: &'static str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(format!("\"{k}\" must be true or false"))),
        }
    }

    /// Refuses any key not read, unless it is a tolerated one left empty.
    fn finish(self) -> Result<(), ApiError> {
        let mut extra: Vec<&str> = self
            .map
            .iter()
            .filter(|(k, v)| {
                let tolerated = TOLERATED.contains(&k.as_str()) && is_empty(v);
                !self.seen.contains(&k.as_str()) && !tolerated
            })
            .map(|(k, _)| k.as_str())
            .collect();
        extra.sort_unstable();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(bad(format!(
                "loopml's gateway does not support {}: leave {} out",
                extra
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                if extra.len() == 1 { "it" } else { "them" }
            )))
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(true) => false,
    }
}

/// Budget fields of a create or update body onto `b`.
/// Reads the budget fields of a create or update body into `b`; true when the budget period
/// changed (a new `budget_duration`), so the live counter's period end must follow.
fn read_budget(
    body: &mut Body,
    b: &mut Budget,
    now: i64,
    creating: bool,
) -> Result<bool, ApiError> {
    let mut period_changed = false;
    for k in ["max_budget"] {
        if body.has(k) {
            b.max_budget = body.money("max_budget")?;
        }
    }
    if body.has("budget_duration") {
        let d = body.duration("budget_duration")?;
        if d != b.budget_duration || creating {
            period_changed = true;
            b.budget_reset_at = d
                .as_deref()
                .and_then(|d| parse_duration(d).ok())
                .map(|ms| now + ms);
        }
        b.budget_duration = d;
    }
    if body.has("rpm_limit") {
        b.rpm_limit = body.count("rpm_limit")?;
    }
    if body.has("tpm_limit") {
        b.tpm_limit = body.count("tpm_limit")?;
    }
    if body.has("max_parallel_requests") {
        b.max_parallel_requests = body.count("max_parallel_requests")?;
    }
    Ok(period_changed)
}

/// How often a replica checks the key tables for other replicas' changes.
const POLL: Duration = Duration::from_secs(2);

/// Rows and latest change of the key, team and user tables: moves on any insert, update or
/// delete.
async fn fingerprint(db: &Database) -> StoreResult<Vec<(i64, i64)>> {
    db.read(|c| {
        ["gateway_keys", "gateway_teams", "gateway_users"]
            .iter()
            .map(|t| {
                c.query_opt(
                    &format!("SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM {t}"),
                    &[],
                    |r| Ok((r.i64(0)?, r.i64(1)?)),
                )
                .map(|v| v.unwrap_or((0, 0)))
            })
            .collect::<StoreResult<Vec<_>>>()
    })
    .await
}

/// The management API over the gateway.
pub(crate) mod api {
    use super::*;
    use crate::proxy::Gateway;
    use axum::extract::{Query, State};
    use axum::http::HeaderMap;
    use axum::response::{IntoResponse, Response};

    type Answer = Result<Response, ApiError>;

    fn ok(v: Value) -> Answer {
        Ok(axum::Json(v).into_response())
    }

    async fn key_json(g: &Gateway, k: &Key) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("token".into(), json!(k.token));
        m.insert("key_name".into(), json!(k.key_name));
        m.insert("key_alias".into(), json!(k.key_alias));
        m.insert("user_id".into(), json!(k.user_id));
        m.insert("team_id".into(), json!(k.team_id));
        m.insert("models".into(), json!(k.models));
        let live = g.ledger().spend(&entity_id("key", &k.token)).await;
        k.budget.to_json(&mut m, live);
        m.insert("expires".into(), json!(k.expires.map(iso)));
        m.insert("blocked".into(), json!(k.blocked));
        m.insert("metadata".into(), k.metadata.clone());
        m.insert("created_at".into(), json!(iso(k.created_at)));
        m.insert("updated_at".into(), json!(iso(k.updated_at)));
        m
    }

    async fn team_json(g: &Gateway, t: &Team) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("team_id".into(), json!(t.team_id));
        m.insert("team_alias".into(), json!(t.team_alias));
        m.insert("models".into(), json!(t.models));
        let live = g.ledger().spend(&entity_id("team", &t.team_id)).await;
        t.budget.to_json(&mut m, live);
        m.insert("blocked".into(), json!(t.blocked));
        m.insert("metadata".into(), t.metadata.clone());
        m.insert("members_with_roles".into(), json!([]));
        m.insert("created_at".into(), json!(iso(t.created_at)));
        m.insert("updated_at".into(), json!(iso(t.updated_at)));
        m
    }

    async fn user_json(g: &Gateway, u: &User) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("user_id".into(), json!(u.user_id));
        m.insert("user_email".into(), json!(u.user_email));
        m.insert("user_role".into(), json!(u.user_role));
        m.insert("models".into(), json!(u.models));
        let live = g.ledger().spend(&entity_id("user", &u.user_id)).await;
        u.budget.to_json(&mut m, live);
        m.insert("metadata".into(), u.metadata.clone());
        m.insert("created_at".into(), json!(iso(u.created_at)));
        m.insert("updated_at".into(), json!(iso(u.updated_at)));
        m
    }

    /// The stored hash of a key given raw (`sk-…`) or as its hash.
    fn token_of(given: &str) -> String {
        if given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit()) {
            given.to_ascii_lowercase()
        } else {
            hash_key(given)
        }
    }

    async fn find_key(g: &Gateway, given: &str) -> Result<Arc<Key>, ApiError> {
        match g.directory().key(&token_of(given)).await {
            Lookup::Found(k) => Ok(k),
            Lookup::Unknown => Err(not_found("no such key")),
            Lookup::Unavailable(_) => Err(store_error(loopml_store::StoreError::Unavailable(
                "key store".into(),
            ))),
        }
    }

    fn check_refs(g: &Gateway, team: Option<&str>, user: Option<&str>) -> Result<(), ApiError> {
        if let Some(t) = team
            && g.directory().team(t).is_none()
        {
            return Err(bad(format!(
                "team_id '{t}' does not exist: create it with /team/new first"
            )));
        }
        let _ = user;
        Ok(())
    }

    fn check_models(g: &Gateway, models: &[String]) -> Result<(), ApiError> {
        let known = g.config().model_names();
        for m in models {
            if m != "all-proxy-models" && m != "*" && !known.contains(&m.as_str()) {
                return Err(bad(format!(
                    "model '{m}' is not a model_name of this gateway (they are {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// `POST /key/generate`.
    pub async fn generate(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let (k, raw) = prepare_key(&g, &mut b, None).await?;
        b.finish()?;
        ok(Value::Object(store_key(&g, &k, &raw).await?))
    }

    /// A new key from a body (also `/user/new`'s key), checked but not stored yet; with the
    /// raw key, shown once.
    async fn prepare_key(
        g: &Gateway,
        b: &mut Body,
        user: Option<String>,
    ) -> Result<(Key, String), ApiError> {
        let now = now_ms();
        let raw = match b.text("key")? {
            Some(k) if !k.starts_with("sk-") => {
                return Err(bad("a custom \"key\" must start with sk-"));
            }
            Some(k) if k.len() < 20 => {
                return Err(bad("a custom \"key\" must be at least 20 characters"));
            }
            Some(k) => k,
            None => new_key(),
        };
        let user_id = match user {
            Some(u) => Some(u),
            None => b.text("user_id")?,
        };
        let team_id = b.text("team_id")?;
        check_refs(g, team_id.as_deref(), user_id.as_deref())?;
        let models = b.list("models")?.unwrap_or_default();
        check_models(g, &models)?;
        let mut budget = Budget::default();
        read_budget(b, &mut budget, now, true)?;
        let expires = b
            .duration("duration")?
            .map(|d| now + parse_duration(&d).unwrap_or(0));
        let key = Key {
            token: hash_key(&raw),
            key_name: key_name(&raw),
            key_alias: b.text("key_alias")?,
            user_id,
            team_id,
            models,
            budget,
            expires,
            blocked: b.flag("blocked")?.unwrap_or(false),
            metadata: b.object("metadata")?.unwrap_or(json!({})),
            created_at: now,
            updated_at: now,
        };
        if let Some(alias) = &key.key_alias
            && g.directory()
                .all_keys()
                .iter()
                .any(|k| k.key_alias.as_ref() == Some(alias))
        {
            return Err(bad(format!(
                "a key with key_alias '{alias}' already exists"
            )));
        }
        if matches!(g.directory().key(&key.token).await, Lookup::Found(_)) {
            return Err(bad("that key already exists"));
        }
        Ok((key, raw))
    }

    /// Stores a prepared key; answers it once, raw, with its record.
    async fn store_key(g: &Gateway, key: &Key, raw: &str) -> Result<Map<String, Value>, ApiError> {
        g.directory()
            .save_key(key, true)
            .await
            .map_err(store_error)?;
        let mut out = key_json(g, key).await;
        out.insert("key".into(), json!(raw));
        out.insert("token_id".into(), json!(key.token));
        out.insert("expires".into(), json!(key.expires.map(iso)));
        Ok(out)
    }

    /// `POST /key/update`.
    pub async fn update(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let given = b.text("key")?.ok_or_else(|| bad("\"key\" is required"))?;
        let mut k = (*find_key(&g, &given).await?).clone();
        let now = now_ms();
        if b.has("key_alias") {
            k.key_alias = b.text("key_alias")?;
        }
        if b.has("team_id") {
            k.team_id = b.text("team_id")?;
        }
        if b.has("user_id") {
            k.user_id = b.text("user_id")?;
        }
        check_refs(&g, k.team_id.as_deref(), k.user_id.as_deref())?;
        if b.has("models") {
            k.models = b.list("models")?.unwrap_or_default();
            check_models(&g, &k.models)?;
        }
        let period_changed = read_budget(&mut b, &mut k.budget, now, false)?;
        if b.has("duration") {
            k.expires = b
                .duration("duration")?
                .map(|d| now + parse_duration(&d).unwrap_or(0));
        }
        if b.has("blocked") {
            k.blocked = b.flag("blocked")?.unwrap_or(false);
        }
        if b.has("metadata") {
            k.metadata = b.object("metadata")?.unwrap_or(json!({}));
        }
        let spend = if b.has("spend") {
            b.money("spend")?
        } else {
            None
        };
        b.finish()?;
        k.updated_at = now;
        g.directory()
            .save_key(&k, false)
            .await
            .map_err(store_error)?;
        let id = entity_id("key", &k.token);
        follow_budget(
            &g,
            ("gateway_keys", "token", &k.token),
            &id,
            &k.budget,
            spend,
            period_changed,
        )
        .await?;
        ok(json!({"key": given, "info": key_json(&g, &k).await}))
    }

    /// After an update: a `spend` given is written to the stored row and the live counter; a
    /// new budget period moves the live counter's period end (its spend kept).
    async fn follow_budget(
        g: &Gateway,
        (table, column, key): (&'static str, &'static str, &str),
        id: &str,
        budget: &Budget,
        spend: Option<f64>,
        period_changed: bool,
    ) -> Result<(), ApiError> {
        if let Some(s) = spend {
            g.directory()
                .write_spend(table, column, key, s)
                .await
                .map_err(store_error)?;
            g.ledger().set_spend(id, s, budget.budget_reset_at).await;
        } else if period_changed {
            let live = g.ledger().spend(id).await.unwrap_or(budget.spend);
            g.ledger().set_spend(id, live, budget.budget_reset_at).await;
        }
        Ok(())
    }

    /// `GET /key/info?key=` (without `key`: the calling key's own).
    pub async fn info(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Answer {
        let caller = g.caller_key(&headers).await?;
        let k = match (q.get("key"), caller) {
            (Some(given), None) => find_key(&g, given).await?,
            (Some(given), Some(own)) if token_of(given) == own.token => own,
            (None, Some(own)) => own,
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    "forbidden",
                    "a virtual key may read only its own info".into(),
                ));
            }
            (None, None) => return Err(bad("\"key\" is required")),
        };
        let given = q.get("key").cloned().unwrap_or_else(|| k.token.clone());
        ok(json!({"key": given, "info": key_json(&g, &k).await}))
    }

    /// `POST /key/delete` with `keys` and/or `key_aliases`.
    pub async fn delete(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let keys = b.list("keys")?.unwrap_or_default();
        let aliases = b.list("key_aliases")?.unwrap_or_default();
        b.finish()?;
        if keys.is_empty() && aliases.is_empty() {
            return Err(bad("give \"keys\" or \"key_aliases\" to delete"));
        }
        let mut tokens = Vec::new();
        let mut deleted = Vec::new();
        for given in &keys {
            let k = find_key(&g, given).await?;
            tokens.push(k.token.clone());
            deleted.push(given.clone());
        }
        for alias in &aliases {
            let k = g
                .directory()
                .all_keys()
                .into_iter()
                .find(|k| k.key_alias.as_ref() == Some(alias))
                .ok_or_else(|| not_found(format!("no key has key_alias '{alias}'")))?;
            tokens.push(k.token.clone());
            deleted.push(alias.clone());
        }
        g.directory()
            .delete_rows("gateway_keys", "token", tokens.clone())
            .await
            .map_err(store_error)?;
        {
            let mut m = g
                .directory()
                .keys
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for t in &tokens {
                m.remove(t);
            }
        }
        for t in &tokens {
            g.ledger().forget(&entity_id("key", t)).await;
        }
        ok(json!({"deleted_keys": deleted}))
    }

    async fn set_blocked(g: &Gateway, headers: &HeaderMap, body: &[u8], blocked: bool) -> Answer {
        g.admin(headers)?;
        let mut b = Body::parse(body)?;
        let given = b.text("key")?.ok_or_else(|| bad("\"key\" is required"))?;
        b.finish()?;
        let mut k = (*find_key(g, &given).await?).clone();
        k.blocked = blocked;
        k.updated_at = now_ms();
        g.directory()
            .save_key(&k, false)
            .await
            .map_err(store_error)?;
        ok(Value::Object(key_json(g, &k).await))
    }

    /// `POST /key/block`.
    pub async fn block(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        set_blocked(&g, &headers, &body, true).await
    }

    /// `POST /key/unblock`.
    pub async fn unblock(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        set_blocked(&g, &headers, &body, false).await
    }

    fn page_args(q: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
        let n = |k: &str, d: usize| -> Result<usize, ApiError> {
            match q.get(k) {
                None => Ok(d),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad(format!("\"{k}\" must be a whole number of 1 or more"))),
            }
        };
        Ok((n("page", 1)?, n("size", 10)?.min(1000)))
    }

    /// `GET /key/list?page=&size=&user_id=&team_id=&key_alias=&return_full_object=`.
    pub async fn list(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Answer {
        g.admin(&headers)?;
        let (page, size) = page_args(&q)?;
        let full = q.get("return_full_object").is_some_and(|v| v == "true");
        let keys: Vec<Arc<Key>> = g
            .directory()
            .all_keys()
            .into_iter()
            .filter(|k| {
                q.get("user_id")
                    .is_none_or(|u| k.user_id.as_ref() == Some(u))
            })
            .filter(|k| {
                q.get("team_id")
                    .is_none_or(|t| k.team_id.as_ref() == Some(t))
            })
            .filter(|k| {
                q.get("key_alias")
                    .is_none_or(|a| k.key_alias.as_ref() == Some(a))
            })
            .collect();
        let total = keys.len();
        let mut out = Vec::new();
        for k in keys.iter().skip((page - 1) * size).take(size) {
            out.push(if full {
                Value::Object(key_json(&g, k).await)
            } else {
                json!(k.token)
            });
        }
        ok(json!({
            "keys": out, "total_count": total, "current_page": page,
            "total_pages": total.div_ceil(size),
        }))
    }

    /// `POST /team/new`.
    pub async fn team_new(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let now = now_ms();
        let team_id = b
            .text("team_id")?
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if g.directory().team(&team_id).is_some() {
            return Err(bad(format!("team_id '{team_id}' already exists")));
        }
        let models = b.list("models")?.unwrap_or_default();
        check_models(&g, &models)?;
        let mut budget = Budget::default();
        read_budget(&mut b, &mut budget, now, true)?;
        let _ = b.get("members_with_roles");
        let t = Team {
            team_id,
            team_alias: b.text("team_alias")?,
            models,
            budget,
            blocked: b.flag("blocked")?.unwrap_or(false),
            metadata: b.object("metadata")?.unwrap_or(json!({})),
            created_at: now,
            updated_at: now,
        };
        if b.map
            .get("members_with_roles")
            .is_some_and(|v| !is_empty(v))
        {
            return Err(bad(
                "\"members_with_roles\" is not supported: give each member's key the team_id",
            ));
        }
        b.finish()?;
        g.directory()
            .save_team(&t, true)
            .await
            .map_err(store_error)?;
        ok(Value::Object(team_json(&g, &t).await))
    }

    /// `POST /team/update`.
    pub async fn team_update(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let id = b
            .text("team_id")?
            .ok_or_else(|| bad("\"team_id\" is required"))?;
        let mut t = (*g
            .directory()
            .team(&id)
            .ok_or_else(|| not_found(format!("no team '{id}'")))?)
        .clone();
        let now = now_ms();
        if b.has("team_alias") {
            t.team_alias = b.text("team_alias")?;
        }
        if b.has("models") {
            t.models = b.list("models")?.unwrap_or_default();
            check_models(&g, &t.models)?;
        }
        let period_changed = read_budget(&mut b, &mut t.budget, now, false)?;
        if b.has("blocked") {
            t.blocked = b.flag("blocked")?.unwrap_or(false);
        }
        if b.has("metadata") {
            t.metadata = b.object("metadata")?.unwrap_or(json!({}));
        }
        let spend = if b.has("spend") {
            b.money("spend")?
        } else {
            None
        };
        b.finish()?;
        t.updated_at = now;
        g.directory()
            .save_team(&t, false)
            .await
            .map_err(store_error)?;
        let id = entity_id("team", &t.team_id);
        follow_budget(
            &g,
            ("gateway_teams", "team_id", &t.team_id),
            &id,
            &t.budget,
            spend,
            period_changed,
        )
        .await?;
        ok(json!({"team_id": t.team_id, "data": team_json(&g, &t).await}))
    }

    /// `GET /team/info?team_id=`.
    pub async fn team_info(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Answer {
        g.admin(&headers)?;
        let id = q
            .get("team_id")
            .ok_or_else(|| bad("\"team_id\" is required"))?;
        let t = g
            .directory()
            .team(id)
            .ok_or_else(|| not_found(format!("no team '{id}'")))?;
        let mut keys = Vec::new();
        for k in g.directory().all_keys() {
            if k.team_id.as_ref() == Some(id) {
                keys.push(Value::Object(key_json(&g, &k).await));
            }
        }
        ok(
            json!({"team_id": id, "team_info": team_json(&g, &t).await, "keys": keys,
                  "team_memberships": []}),
        )
    }

    /// `GET /team/list`.
    pub async fn team_list(State(g): State<Gateway>, headers: HeaderMap) -> Answer {
        g.admin(&headers)?;
        let mut teams: Vec<Arc<Team>> = g
            .directory()
            .teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        teams.sort_by(|a, b| (a.created_at, &a.team_id).cmp(&(b.created_at, &b.team_id)));
        let mut out = Vec::new();
        for t in &teams {
            out.push(Value::Object(team_json(&g, t).await));
        }
        ok(Value::Array(out))
    }

    /// `POST /team/delete` with `team_ids`; the teams' keys stay, without a team.
    pub async fn team_delete(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let ids = b
            .list("team_ids")?
            .ok_or_else(|| bad("\"team_ids\" is required"))?;
        b.finish()?;
        for id in &ids {
            if g.directory().team(id).is_none() {
                return Err(not_found(format!("no team '{id}'")));
            }
        }
        for k in g.directory().all_keys() {
            if k.team_id.as_ref().is_some_and(|t| ids.contains(t)) {
                let mut k = (*k).clone();
                k.team_id = None;
                k.updated_at = now_ms();
                g.directory()
                    .save_key(&k, false)
                    .await
                    .map_err(store_error)?;
            }
        }
        g.directory()
            .delete_rows("gateway_teams", "team_id", ids.clone())
            .await
            .map_err(store_error)?;
        {
            let mut m = g
                .directory()
                .teams
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                m.remove(id);
            }
        }
        for id in &ids {
            g.ledger().forget(&entity_id("team", id)).await;
        }
        ok(json!({"deleted_teams": ids}))
    }

    /// `POST /user/new` (with a key for the user unless `auto_create_key` is false).
    pub async fn user_new(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let now = now_ms();
        let user_id = b
            .text("user_id")?
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if g.directory().user(&user_id).is_some() {
            return Err(bad(format!("user_id '{user_id}' already exists")));
        }
        let models = b.list("models")?.unwrap_or_default();
        check_models(&g, &models)?;
        let mut budget = Budget::default();
        read_budget(&mut b, &mut budget, now, true)?;
        let u = User {
            user_id: user_id.clone(),
            user_email: b.text("user_email")?,
            user_role: b.text("user_role")?,
            models,
            budget,
            metadata: b.object("metadata")?.unwrap_or(json!({})),
            created_at: now,
            updated_at: now,
        };
        let make_key = b.flag("auto_create_key")?.unwrap_or(true);
        let team = b.text("team_id")?;
        let _ = b.get("teams");
        if b.map.get("teams").is_some_and(|v| !is_empty(v)) {
            return Err(bad(
                "\"teams\" is not supported: give the user's keys a team_id",
            ));
        }
        // Key fields (key_alias, duration) go to the user's first key.
        let mut key_body = Body {
            map: Map::new(),
            seen: Vec::new(),
        };
        for k in ["key_alias", "duration"] {
            if let Some(v) = b.get(k).cloned() {
                key_body.map.insert(k.to_string(), v);
            }
        }
        if let Some(t) = &team {
            check_refs(&g, Some(t), None)?;
            key_body.map.insert("team_id".into(), json!(t));
        }
        b.finish()?;
        // The key is checked before the user is stored, so a bad key field stores nothing.
        let key = match make_key {
            true => Some(prepare_key(&g, &mut key_body, Some(user_id)).await?),
            false => None,
        };
        g.directory()
            .save_user(&u, true)
            .await
            .map_err(store_error)?;
        let mut out = user_json(&g, &u).await;
        if let Some((key, raw)) = key {
            let k = store_key(&g, &key, &raw).await?;
            for (name, v) in [
                ("key", "key"),
                ("token", "token"),
                ("key_name", "key_name"),
                ("expires", "expires"),
            ] {
                if let Some(x) = k.get(v) {
                    out.insert(name.into(), x.clone());
                }
            }
        }
        ok(Value::Object(out))
    }

    /// `POST /user/update`.
    pub async fn user_update(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let id = b
            .text("user_id")?
            .ok_or_else(|| bad("\"user_id\" is required"))?;
        let mut u = (*g
            .directory()
            .user(&id)
            .ok_or_else(|| not_found(format!("no user '{id}'")))?)
        .clone();
        let now = now_ms();
        if b.has("user_email") {
            u.user_email = b.text("user_email")?;
        }
        if b.has("user_role") {
            u.user_role = b.text("user_role")?;
        }
        if b.has("models") {
            u.models = b.list("models")?.unwrap_or_default();
            check_models(&g, &u.models)?;
        }
        let period_changed = read_budget(&mut b, &mut u.budget, now, false)?;
        if b.has("metadata") {
            u.metadata = b.object("metadata")?.unwrap_or(json!({}));
        }
        let spend = if b.has("spend") {
            b.money("spend")?
        } else {
            None
        };
        b.finish()?;
        u.updated_at = now;
        g.directory()
            .save_user(&u, false)
            .await
            .map_err(store_error)?;
        let id = entity_id("user", &u.user_id);
        follow_budget(
            &g,
            ("gateway_users", "user_id", &u.user_id),
            &id,
            &u.budget,
            spend,
            period_changed,
        )
        .await?;
        ok(Value::Object(user_json(&g, &u).await))
    }

    /// `GET /user/info?user_id=`.
    pub async fn user_info(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Answer {
        g.admin(&headers)?;
        let id = q
            .get("user_id")
            .ok_or_else(|| bad("\"user_id\" is required"))?;
        let u = g
            .directory()
            .user(id)
            .ok_or_else(|| not_found(format!("no user '{id}'")))?;
        let mut keys = Vec::new();
        let mut teams: Vec<String> = Vec::new();
        for k in g.directory().all_keys() {
            if k.user_id.as_ref() == Some(id) {
                if let Some(t) = &k.team_id
                    && !teams.contains(t)
                {
                    teams.push(t.clone());
                }
                keys.push(Value::Object(key_json(&g, &k).await));
            }
        }
        ok(
            json!({"user_id": id, "user_info": user_json(&g, &u).await, "keys": keys,
                  "teams": teams}),
        )
    }

    /// `GET /user/list`.
    pub async fn user_list(
        State(g): State<Gateway>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Answer {
        g.admin(&headers)?;
        let (page, size) = page_args(&q)?;
        let mut users: Vec<Arc<User>> = g
            .directory()
            .users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        users.sort_by(|a, b| (a.created_at, &a.user_id).cmp(&(b.created_at, &b.user_id)));
        let total = users.len();
        let mut out = Vec::new();
        for u in users.iter().skip((page - 1) * size).take(size) {
            out.push(Value::Object(user_json(&g, u).await));
        }
        ok(
            json!({"users": out, "total": total, "page": page, "page_size": size,
                  "total_pages": total.div_ceil(size)}),
        )
    }

    /// `POST /user/delete` with `user_ids`; their keys are deleted with them.
    pub async fn user_delete(
        State(g): State<Gateway>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        g.admin(&headers)?;
        let mut b = Body::parse(&body)?;
        let ids = b
            .list("user_ids")?
            .ok_or_else(|| bad("\"user_ids\" is required"))?;
        b.finish()?;
        for id in &ids {
            if g.directory().user(id).is_none() {
                return Err(not_found(format!("no user '{id}'")));
            }
        }
        let tokens: Vec<String> = g
            .directory()
            .all_keys()
            .iter()
            .filter(|k| k.user_id.as_ref().is_some_and(|u| ids.contains(u)))
            .map(|k| k.token.clone())
            .collect();
        g.directory()
            .delete_rows("gateway_keys", "token", tokens.clone())
            .await
            .map_err(store_error)?;
        g.directory()
            .delete_rows("gateway_users", "user_id", ids.clone())
            .await
            .map_err(store_error)?;
        {
            let mut m = g
                .directory()
                .keys
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for t in &tokens {
                m.remove(t);
            }
            let mut m = g
                .directory()
                .users
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                m.remove(id);
            }
        }
        for t in &tokens {
            g.ledger().forget(&entity_id("key", t)).await;
        }
        for id in &ids {
            g.ledger().forget(&entity_id("user", id)).await;
        }
        ok(json!({"deleted_users": ids, "deleted_keys": tokens}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_litellm_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("1mo"), Ok(30 * 86_400_000));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("5y").unwrap_err().contains("30d"));
        assert!(parse_duration("d").is_err());
    }

    #[test]
    fn keys_are_stored_by_hash_and_shown_by_their_tail() {
        let k = new_key();
        assert!(k.starts_with("sk-") && k.len() == 25, "{k}");
        assert_eq!(hash_key("sk-1234").len(), 64);
        assert_ne!(hash_key(&k), hash_key(&new_key()));
        assert_eq!(key_name("sk-abcdefgh"), "sk-...efgh");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn unknown_fields_are_refused_by_name_and_empty_tolerated_ones_pass() {
        let mut b =
            Body::parse(br#"{"models": [], "aliases": {}, "colour": "red", "zz": 1}"#).unwrap();
        b.list("models").unwrap();
        let e = b.finish().unwrap_err();
        let (_, m) = e.parts();
        assert!(m.contains("\"colour\", \"zz\""), "{m}");
        let mut b = Body::parse(br#"{"max_budget": -1}"#).unwrap();
        assert!(b.money("max_budget").is_err());
    }
}
