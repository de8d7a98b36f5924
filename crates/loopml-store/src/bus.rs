//! Change notifications between replicas. A replica that commits a change other replicas must
//! act on (a registry event, a deployment) announces it here; with `--redis-url` the note goes
//! out on one Redis pub/sub channel and every other replica wakes at once. Without Redis, or
//! while it is away, nothing is lost: the database stays the truth and each consumer also
//! re-reads it on a short timer, so Redis only makes replicas converge in milliseconds instead
//! of about a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::StoreError;

/// The Redis channel every replica publishes and subscribes on.
const CHANNEL: &str = "loopml:changes";

/// Notes waiting for the Redis connection at most; more are dropped (the timers catch up).
const QUEUE: usize = 1024;

/// Longest pause between reconnection attempts while Redis is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Cross-replica change notifications; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct ChangeBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this process's own notes apart from other replicas'.
    origin: String,
    /// Per topic: the latest sequence number another replica announced.
    topics: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Outgoing notes, for the publisher task; `None` without Redis.
    out: Option<mpsc::Sender<String>>,
    /// Whether the subscriber is connected to Redis now.
    connected: AtomicBool,
    /// Redis URL without its password, for messages.
    describe: String,
}

impl std::fmt::Debug for ChangeBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeBus")
            .field("redis", &self.inner.describe)
            .finish()
    }
}

/// The URL with any password replaced, for logs.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl ChangeBus {
    /// A bus that reaches no other process (no Redis): announcements are dropped, and
    /// consumers rely on their timers.
    pub fn local() -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: uuid::Uuid::new_v4().simple().to_string(),
                topics: Mutex::default(),
                out: None,
                connected: AtomicBool::new(false),
                describe: String::new(),
            }),
        }
    }

    /// A bus over the Redis server at `url` (`redis://[user:pass@]host:port[/db]`). Checks the
    /// URL only; the connections are made in the background and remade whenever Redis comes
    /// back, so a replica starts, and keeps working, while Redis is down. Must be called
    /// inside the Tokio runtime.
    pub fn redis(url: &str) -> Result<Self, StoreError> {
        if url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("rediss://")
        {
            // The notes carry no data (a topic and a number), so TLS is left out of the build;
            // say so instead of the driver's "feature is not enabled".
            return Err(StoreError::InvalidConfig(format!(
                "--redis-url {}: TLS to Redis (rediss://) is not supported by this build; \
                 use redis:// on a private network, or a TLS tunnel beside the replica",
                redact(url)
            )));
        }
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::InvalidConfig(format!("invalid --redis-url: {e}")))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let bus = Self {
            inner: Arc::new(Inner {
                origin: uuid::Uuid::new_v4().simple().to_string(),
                topics: Mutex::default(),
                out: Some(tx),
                connected: AtomicBool::new(false),
                describe: redact(url),
            }),
        };
        // Both tasks end when the last handle of the bus is dropped.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(publisher(client.clone(), rx, bus.inner.describe.clone()));
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(subscriber(client, Arc::downgrade(&bus.inner)));
        Ok(bus)
    }

    /// True when this bus is backed by Redis (whether or not it is reachable right now).
    pub fn is_shared(&self) -> bool {
        self.inner.out.is_some()
    }

    /// True while the subscription to Redis is up.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Tells the other replicas that `topic` moved to `seq` (fire and forget: never waits for
    /// Redis, never fails).
    pub fn announce(&self, topic: &str, seq: i64) {
        if let Some(out) = &self.inner.out {
            let _ = out.try_send(format!("{topic} {seq} {}", self.inner.origin));
        }
    }

    /// Wakes this process's watchers of `topic` as if another replica had announced `seq`
    /// (for tests, and for a consumer that wants its followers to re-read at once).
    pub fn notify_local(&self, topic: &str, seq: i64) {
        let topics = self
            .inner
            .topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = topics.get(topic) {
            tx.send_modify(|cur| *cur = seq);
        }
    }

    /// The latest `seq` other replicas announced for `topic`; `changed()` fires on each.
    pub fn watch(&self, topic: &str) -> watch::Receiver<i64> {
        let mut topics = self
            .inner
            .topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        topics
            .entry(topic.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

impl Inner {
    /// Delivers one note from Redis to the topic's watchers (other replicas' notes only).
    fn deliver(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let (Some(topic), Some(seq), Some(origin)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if origin == self.origin {
            return;
        }
        let seq = seq.parse().unwrap_or(0);
        let topics = self
            .topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = topics.get(topic) {
            // Every note wakes the watchers, even one with an older number (a restarted
            // replica's counter), so each is acted on.
            tx.send_modify(|cur| *cur = seq);
        }
    }
}

async fn publisher(client: redis::Client, mut rx: mpsc::Receiver<String>, describe: String) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    while let Some(note) = rx.recv().await {
        if conn.is_none() {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(redis = %describe, error = %e, "cannot publish a change note; replicas catch up on their timers");
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&note)
                .query_async(c)
                .await;
            if let Err(e) = sent {
                tracing::debug!(redis = %describe, error = %e, "publishing a change note failed");
                conn = None;
            }
        }
    }
}

async fn subscriber(client: redis::Client, inner: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let Some(describe) = inner.upgrade().map(|i| i.describe.clone()) else {
            return;
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        let pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                if !warned {
                    tracing::warn!(redis = %describe, error = %e, "Redis is unreachable: replicas converge on their timers (about a second) until it is back");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Some(i) = inner.upgrade() {
            i.connected.store(true, Ordering::Relaxed);
        }
        tracing::info!(redis = %describe, "change notes from other replicas arrive through Redis");
        warned = false;
        backoff = Duration::from_millis(100);
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Some(i) = inner.upgrade() else {
                return;
            };
            if let Ok(payload) = msg.get_payload::<String>() {
                i.deliver(&payload);
            }
        }
        if let Some(i) = inner.upgrade() {
            i.connected.store(false, Ordering::Relaxed);
            // Notes may have been missed while the link was down: wake everyone once so
            // they re-read the database.
            let topics = i
                .topics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for tx in topics.values() {
                tx.send_modify(|_| {});
            }
        }
        tracing::warn!(redis = %describe, "lost the Redis subscription; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_urls_are_refused_with_the_reason() {
        let e = ChangeBus::redis("rediss://:secret@redis.example:6380").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("rediss://") && msg.contains("not supported"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "the password is redacted: {msg}");
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("redis://:s3cret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn bad_urls_are_refused() {
        let e = ChangeBus::redis("http://nope").unwrap_err().to_string();
        assert!(e.contains("--redis-url"), "{e}");
    }

    #[tokio::test]
    async fn notes_from_others_wake_watchers_and_our_own_do_not() {
        let bus = ChangeBus::local();
        let mut rx = bus.watch("registry");
        bus.inner
            .deliver(&format!("registry 7 {}", bus.inner.origin));
        assert!(!rx.has_changed().unwrap(), "our own note came back");
        bus.inner.deliver("registry 9 someone-else");
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 9);
        bus.inner.deliver("deployments 3 someone-else");
        assert!(!rx.has_changed().unwrap(), "another topic");
        bus.inner.deliver("garbage");
    }

    /// Two buses on a real Redis (`LOOPML_TEST_REDIS_URL`, started by scripts/redis.sh):
    /// a note announced on one wakes the other's watcher within milliseconds.
    #[tokio::test]
    async fn two_replicas_hear_each_other_through_redis() {
        let Ok(url) = std::env::var("LOOPML_TEST_REDIS_URL") else {
            return;
        };
        let (a, b) = (
            ChangeBus::redis(&url).unwrap(),
            ChangeBus::redis(&url).unwrap(),
        );
        let mut rx = b.watch("registry");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(a.is_connected() && b.is_connected()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never connected to {url}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sent = std::time::Instant::now();
        a.announce("registry", 42);
        tokio::time::timeout(Duration::from_secs(2), rx.changed())
            .await
            .expect("the note never arrived")
            .unwrap();
        assert_eq!(*rx.borrow(), 42);
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "{:?}",
            sent.elapsed()
        );
    }
}
