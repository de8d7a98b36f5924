//! What authentication and authorization read on every request, remembered: a user's stored
//! credential, a token's owner, a grant, a user's visibility of a resource type. A request
//! that hits the cache reads no table (the < 50 µs per-request budget of issue 20).
//!
//! Freshness: every change this process makes to users, grants or tokens empties the cache
//! at once and is announced on the change bus; another replica's announcement (with
//! `--redis-url`) empties it too, and without Redis an entry is trusted for [`TTL`] at most,
//! so a revocation made on one replica holds on every replica within that time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::permission::Permission;
use crate::service::Visibility;
use crate::store::{Credential, User};

/// How long an entry is trusted without a change note.
pub const TTL: Duration = Duration::from_secs(2);

/// Entries per map at most (a spray of made-up names cannot grow memory without bound).
const MAX_ENTRIES: usize = 50_000;

/// The change-bus topic auth changes are announced on.
pub const TOPIC: &str = "auth";

/// A token's owner and scope.
#[derive(Debug, Clone)]
pub(crate) struct TokenEntry {
    pub user: User,
    pub read_only: bool,
    /// Epoch milliseconds; `None` never expires.
    pub expires_at: Option<i64>,
}

/// One map of entries stamped with when they were read.
struct Timed<K, V> {
    map: HashMap<K, (Instant, V)>,
}

impl<K: Hash + Eq, V: Clone> Timed<K, V> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        self.map
            .get(k)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&mut self, k: K, v: V) {
        if self.map.len() >= MAX_ENTRIES {
            self.map.retain(|_, (at, _)| at.elapsed() < TTL);
            if self.map.len() >= MAX_ENTRIES {
                self.map.clear();
            }
        }
        self.map.insert(k, (Instant::now(), v));
    }
}

struct Maps {
    credentials: Timed<String, Credential>,
    tokens: Timed<String, TokenEntry>,
    grants: Timed<(i64, String, String), Option<Permission>>,
    visibility: Timed<(i64, String), Visibility>,
    /// Another replica's announcements; `None` without a shared bus.
    notes: Option<watch::Receiver<i64>>,
}

impl Maps {
    fn new(notes: Option<watch::Receiver<i64>>) -> Self {
        Self {
            credentials: Timed::new(),
            tokens: Timed::new(),
            grants: Timed::new(),
            visibility: Timed::new(),
            notes,
        }
    }

    fn clear(&mut self) {
        let notes = self.notes.take();
        *self = Maps::new(notes);
    }

    /// Empties the maps when another replica announced a change since the last look.
    fn catch_up(&mut self) {
        let changed = self
            .notes
            .as_mut()
            .is_some_and(|rx| rx.has_changed().unwrap_or(false));
        if changed {
            if let Some(rx) = self.notes.as_mut() {
                rx.mark_unchanged();
            }
            self.clear();
        }
    }
}

/// The cache; see the module docs.
pub(crate) struct Cache {
    maps: Mutex<Maps>,
    bus: Mutex<Option<loopml_store::ChangeBus>>,
}

impl Cache {
    /// An empty cache that no other replica reaches (until [`Cache::set_bus`]).
    pub fn new() -> Self {
        Self {
            maps: Mutex::new(Maps::new(None)),
            bus: Mutex::new(None),
        }
    }

    /// Announces this process's changes on `bus` and follows other replicas' notes.
    pub fn set_bus(&self, bus: loopml_store::ChangeBus) {
        let rx = bus.watch(TOPIC);
        self.with(|m| {
            m.notes = Some(rx);
            m.clear();
        });
        *self.bus.lock().unwrap_or_else(|p| p.into_inner()) = Some(bus);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Maps) -> T) -> T {
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m.catch_up();
        f(&mut m)
    }

    /// Forgets everything and tells the other replicas to (after a change to users, grants
    /// or tokens).
    pub fn changed(&self) {
        self.with(Maps::clear);
        if let Some(bus) = self.bus.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            bus.announce(TOPIC, crate::store::now_ms());
        }
    }

    pub fn credential(&self, username: &str) -> Option<Credential> {
        self.with(|m| m.credentials.get(&username.to_string()))
    }

    pub fn put_credential(&self, username: &str, c: Credential) {
        self.with(|m| m.credentials.put(username.to_string(), c));
    }

    pub fn token(&self, hash: &str) -> Option<TokenEntry> {
        self.with(|m| m.tokens.get(&hash.to_string()))
    }

    pub fn put_token(&self, hash: &str, t: TokenEntry) {
        self.with(|m| m.tokens.put(hash.to_string(), t));
    }

    pub fn grant(&self, user: i64, t: &str, r: &str) -> Option<Option<Permission>> {
        self.with(|m| m.grants.get(&(user, t.to_string(), r.to_string())))
    }

    pub fn put_grant(&self, user: i64, t: &str, r: &str, p: Option<Permission>) {
        self.with(|m| m.grants.put((user, t.to_string(), r.to_string()), p));
    }

    pub fn visibility(&self, user: i64, t: &str) -> Option<Visibility> {
        self.with(|m| m.visibility.get(&(user, t.to_string())))
    }

    pub fn put_visibility(&self, user: i64, t: &str, v: Visibility) {
        self.with(|m| m.visibility.put((user, t.to_string()), v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 7,
            username: "ada".into(),
            is_admin: false,
        }
    }

    #[test]
    fn a_change_empties_every_map() {
        let c = Cache::new();
        c.put_grant(7, "experiment", "1", Some(Permission::Edit));
        c.put_visibility(7, "experiment", Visibility::AllBut(vec![]));
        c.put_token(
            "h",
            TokenEntry {
                user: user(),
                read_only: false,
                expires_at: None,
            },
        );
        assert_eq!(c.grant(7, "experiment", "1"), Some(Some(Permission::Edit)));
        c.changed();
        assert_eq!(c.grant(7, "experiment", "1"), None);
        assert!(c.visibility(7, "experiment").is_none());
        assert!(c.token("h").is_none());
    }

    #[tokio::test]
    async fn another_replicas_note_empties_it() {
        // A local bus delivers nothing by itself; a note from "another replica" is what the
        // subscriber would deliver, so drive the watch channel the bus hands out.
        let bus = loopml_store::ChangeBus::local();
        let c = Cache::new();
        c.set_bus(bus.clone());
        c.put_grant(7, "experiment", "1", None);
        assert_eq!(c.grant(7, "experiment", "1"), Some(None));
        bus.notify_local(TOPIC, 5);
        assert_eq!(c.grant(7, "experiment", "1"), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let c = Cache::new();
        for i in 0..(MAX_ENTRIES + 10) {
            c.put_grant(1, "experiment", &i.to_string(), None);
        }
        assert!(c.with(|m| m.grants.map.len()) <= MAX_ENTRIES);
    }
}
