//! Leases: a named right to do something that must happen once across every process on one
//! database (the monitor scheduler, webhook delivery, an alert-triggered pipeline). A lease is
//! a row in `loopml_leases`; taking or renewing it is one conditional upsert, so two replicas
//! racing for it cannot both win (the row lock decides on PostgreSQL, the single writer on
//! SQLite). A holder that dies simply stops renewing, and another takes over once the lease
//! expires.
//!
//! Expiry compares wall clocks of different machines: keep TTLs far above their skew (seconds,
//! not milliseconds).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Database, Migration};
use crate::StoreError;

/// The store's own tables (domain `store`): leases.
pub const STORE_MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_leases",
    sqlite: "CREATE TABLE loopml_leases (\
               name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL\
             ) WITHOUT ROWID;",
    postgres: "CREATE TABLE loopml_leases (\
                 name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL\
               );",
}];

/// This process's identity as a lease holder: host, pid and start time.
pub fn lease_holder() -> &'static str {
    static HOLDER: OnceLock<String> = OnceLock::new();
    HOLDER.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{host}:{}:{started:x}", std::process::id())
    })
}

/// Set once this process has given its leases up for good (it is shutting down): it takes no
/// lease again, so a background loop still running cannot win one back in its last moments.
static GIVEN_UP: AtomicBool = AtomicBool::new(false);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Database {
    /// Takes or renews the lease `name` for this process for `ttl`; `false` when another
    /// process holds it. Call it again before each unit of work: holding it is only promised
    /// until `ttl` after the last successful call.
    pub async fn try_lease(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.try_lease_as(name, lease_holder(), ttl).await
    }

    /// [`Database::try_lease`] for an explicit holder (tests, or several workers in one process).
    pub async fn try_lease_as(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if GIVEN_UP.load(Ordering::SeqCst) && holder == lease_holder() {
            return Ok(false);
        }
        let (name, holder) = (name.to_string(), holder.to_string());
        let now = now_ms();
        let expires = now.saturating_add(ttl.as_millis() as i64);
        self.write(move |c| {
            let n = c.execute(
                "INSERT INTO loopml_leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE loopml_leases.holder = excluded.holder OR loopml_leases.expires_at < ?4",
                &[
                    name.as_str().into(),
                    holder.as_str().into(),
                    expires.into(),
                    now.into(),
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Gives the lease up now (a draining process), if this process holds it.
    pub async fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        self.release_lease_as(name, lease_holder()).await
    }

    /// [`Database::release_lease`] for an explicit holder.
    pub async fn release_lease_as(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c| {
            c.execute(
                "DELETE FROM loopml_leases WHERE name = ? AND holder = ?",
                &[name.as_str().into(), holder.as_str().into()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Gives up every lease this process holds and takes none again (graceful shutdown), so
    /// another replica takes over at once instead of after the leases expire.
    pub async fn release_all_leases(&self) -> Result<(), StoreError> {
        GIVEN_UP.store(true, Ordering::SeqCst);
        let holder = lease_holder().to_string();
        self.write(move |c| {
            c.execute(
                "DELETE FROM loopml_leases WHERE holder = ?",
                &[holder.as_str().into()],
            )
            .map(|_| ())
        })
        .await
    }
}
