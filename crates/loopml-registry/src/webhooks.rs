//! Outgoing webhooks with MLflow's webhook API and wire format (`X-MLflow-Signature:
//! v1,<base64 HMAC-SHA256 of "delivery_id.timestamp.payload">`), delivered from the change feed
//! by one background thread: at least once, in feed order per webhook, retried with exponential
//! backoff, every attempt recorded in a delivery log. Each webhook keeps a durable cursor into
//! the feed, so deliveries resume after a restart and nothing committed is skipped.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use loopml_store::outbound::OutboundPolicy;
use loopml_store::{Row, StoreError};
use serde::Serialize;
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::model::RegistryEvent;
use crate::service::{RegistryService, now_ms};
use crate::sql;

/// Attempts per event before it is given up (and logged as failed).
pub const MAX_ATTEMPTS: u32 = 5;
/// Timeout of one delivery request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Events a webhook can subscribe to: MLflow's registry events plus loopml's own.
pub const EVENTS: &[&str] = &[
    "registered_model.created",
    "registered_model.updated",
    "registered_model.renamed",
    "registered_model.deleted",
    "registered_model_tag.set",
    "registered_model_tag.deleted",
    "model_version.created",
    "model_version.updated",
    "model_version.stage_transitioned",
    "model_version.deleted",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
];

/// Whether a webhook receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStatus {
    /// Receives events.
    Active,
    /// Receives nothing; its cursor still moves so re-enabling does not replay old events.
    Disabled,
}

impl WebhookStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Active => "ACTIVE",
            WebhookStatus::Disabled => "DISABLED",
        }
    }
    /// Parses a wire name or enum number.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_uppercase().as_str() {
            "ACTIVE" | "1" => Some(WebhookStatus::Active),
            "DISABLED" | "2" => Some(WebhookStatus::Disabled),
            _ => None,
        }
    }
}

/// A registered webhook (the secret is never returned).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Target URL (http or https).
    pub url: String,
    /// Subscribed events, `entity.action`.
    pub events: Vec<String>,
    /// Status.
    pub status: WebhookStatus,
    /// Created, ms.
    pub creation_timestamp: i64,
    /// Last updated, ms.
    pub last_updated_timestamp: i64,
    /// Last feed sequence number handled.
    pub cursor: i64,
    secret: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Delivery id (sent as `X-MLflow-Delivery-Id`).
    pub delivery_id: String,
    /// Webhook.
    pub webhook_id: String,
    /// Feed sequence number of the event (0 for test deliveries).
    pub event_seq: i64,
    /// Event name.
    pub event: String,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// When, ms.
    pub timestamp: i64,
    /// HTTP status of the answer, when one came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// The start of the receiver's answer (at most 4 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// What went wrong, when something did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the receiver accepted it (2xx).
    pub success: bool,
    /// Round-trip time, ms.
    pub duration_ms: i64,
}

/// What a webhook is created or updated with.
#[derive(Debug, Clone, Default)]
pub struct WebhookSpec {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// URL.
    pub url: Option<String>,
    /// Events.
    pub events: Option<Vec<String>>,
    /// HMAC secret.
    pub secret: Option<String>,
    /// Status.
    pub status: Option<WebhookStatus>,
}

/// Parses `{entity, action}` (MLflow's enum names, any case) into `entity.action`.
pub fn event_name(entity: &str, action: &str) -> Result<String> {
    let name = format!(
        "{}.{}",
        entity.trim().to_ascii_lowercase(),
        action.trim().to_ascii_lowercase()
    );
    if EVENTS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(Error::InvalidParameter(format!(
            "Unknown webhook event '{name}'. Valid events are: {}.",
            EVENTS.join(", ")
        )))
    }
}

/// Checks a webhook URL against the outbound policy (scheme, host, and no loopback,
/// link-local or metadata address, by literal or by what the name resolves to now).
async fn validate_url(policy: OutboundPolicy, url: &str) -> Result<()> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || policy.check_url_resolving(&url))
        .await
        .map_err(|e| Error::Store(StoreError::Worker(e.to_string())))?
        .map_err(|e| Error::InvalidParameter(format!("Invalid webhook URL: {e}")))
}

fn webhook_from_row(r: &Row<'_>) -> Result<Webhook, StoreError> {
    let events: Vec<String> = serde_json::from_str(r.str(4)?).unwrap_or_default();
    Ok(Webhook {
        id: r.string(0)?,
        name: r.string(1)?,
        description: r.opt_string(2)?,
        url: r.string(3)?,
        events,
        secret: r.opt_string(5)?,
        status: WebhookStatus::parse(r.str(6)?).unwrap_or(WebhookStatus::Disabled),
        creation_timestamp: r.i64(7)?,
        last_updated_timestamp: r.i64(8)?,
        cursor: r.i64(9)?,
    })
}

const WEBHOOK_COLUMNS: &str = "id, name, description, url, events, secret, status, \
     creation_time, last_updated_time, cursor";

/// ISO-8601 UTC with milliseconds, as in MLflow's payload `timestamp`.
fn iso_time(ms: i64) -> String {
    let t = crate::lineage::format_time(ms);
    format!(
        "{}T{}.{:03}+00:00",
        &t[..10],
        &t[11..19],
        ms.rem_euclid(1000)
    )
}

/// The JSON body MLflow sends: `{entity, action, timestamp, data}` (plus loopml's `seq`).
pub fn payload(event: &RegistryEvent) -> String {
    serde_json::json!({
        "entity": event.entity(),
        "action": event.action(),
        "timestamp": iso_time(event.timestamp),
        "data": event.data,
        "seq": event.seq,
    })
    .to_string()
}

/// MLflow's signature header value for a payload.
pub fn signature(secret: &str, delivery_id: &str, timestamp: &str, payload: &str) -> String {
    type HmacSha256 = Hmac<Sha256>;
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this branch is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(delivery_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// Sends one event to one webhook; returns the delivery record (not yet stored).
fn send(policy: &OutboundPolicy, hook: &Webhook, event: &RegistryEvent, attempt: i64) -> Delivery {
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let body = payload(event);
    let ts = (now_ms() / 1000).to_string();
    let start = Instant::now();
    let refused = |error: String| Delivery {
        delivery_id: delivery_id.clone(),
        webhook_id: hook.id.clone(),
        event_seq: event.seq,
        event: event.event.clone(),
        attempt,
        timestamp: now_ms(),
        status_code: None,
        response_body: None,
        success: false,
        error: Some(error),
        duration_ms: 0,
    };
    // A URL stored before the policy was tightened is checked again here.
    if let Err(e) = policy.check_url(&hook.url) {
        return refused(e.0);
    }
    let agent = policy.agent(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT)),
    );
    let mut req = agent
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("X-MLflow-Delivery-Id", &delivery_id)
        .header("X-MLflow-Timestamp", &ts)
        .header("X-Loopml-Event", &event.event)
        .header("X-Loopml-Event-Seq", &event.seq.to_string());
    if let Some(secret) = hook.secret.as_deref().filter(|s| !s.is_empty()) {
        req = req.header(
            "X-MLflow-Signature",
            &signature(secret, &delivery_id, &ts, &body),
        );
    }
    let (status_code, response_body, error) = match req.send(body.as_bytes()) {
        Ok(mut resp) => {
            let code = resp.status().as_u16();
            let text = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_vec()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok()
                .filter(|t| !t.is_empty());
            let err = (!(200..300).contains(&code)).then(|| format!("receiver answered {code}"));
            (Some(i64::from(code)), text, err)
        }
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return refused(e.to_string());
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    Delivery {
        delivery_id,
        webhook_id: hook.id.clone(),
        event_seq: event.seq,
        event: event.event.clone(),
        attempt,
        timestamp: now_ms(),
        status_code,
        response_body,
        success: error.is_none(),
        error,
        duration_ms: start.elapsed().as_millis() as i64,
    }
}

/// Whether a failed delivery is worth retrying (network trouble, 408, 429, 5xx).
fn retryable(d: &Delivery) -> bool {
    if d.error
        .as_deref()
        .is_some_and(|e| e.starts_with(loopml_store::outbound::REFUSED))
    {
        return false;
    }
    match d.status_code {
        None => true,
        Some(c) => c == 408 || c == 429 || c >= 500,
    }
}

/// Backoff before attempt `n + 1`: 1 s, 2 s, 4 s, … capped at 60 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Wakes the delivery thread when the feed moves.
#[derive(Default)]
pub(crate) struct Wake {
    seq: Mutex<i64>,
    cond: Condvar,
}

impl Wake {
    pub(crate) fn notify(&self, seq: i64) {
        if let Ok(mut s) = self.seq.lock() {
            *s = (*s).max(seq);
        }
        self.cond.notify_all();
    }
    fn wait(&self, seen: i64, max: Duration) -> i64 {
        let Ok(guard) = self.seq.lock() else {
            return seen;
        };
        match self.cond.wait_timeout_while(guard, max, |s| *s <= seen) {
            Ok((g, _)) => *g,
            Err(_) => seen,
        }
    }
}

struct Retry {
    attempts: u32,
    next_at: Instant,
}

impl RegistryService {
    /// Registers a webhook. Its cursor starts at the current end of the feed.
    pub async fn create_webhook(&self, spec: WebhookSpec) -> Result<Webhook> {
        let name = spec
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| Error::missing("name"))?;
        let url = spec.url.ok_or_else(|| Error::missing("url"))?;
        validate_url(self.outbound(), &url).await?;
        let events = spec.events.unwrap_or_default();
        if events.is_empty() {
            return Err(Error::InvalidParameter(
                "Webhook events cannot be empty.".into(),
            ));
        }
        let status = spec.status.unwrap_or(WebhookStatus::Active);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id2 = id.clone();
        self.db_handle()
            .write(move |c| -> Result<()> {
                let now = now_ms();
                let cursor = sql::last_seq(c)?;
                c.execute(
                    &format!(
                        "INSERT INTO registry_webhooks ({WEBHOOK_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)"
                    ),
                    &[
                        (&id2).into(),
                        (&name).into(),
                        spec.description.as_ref().filter(|d| !d.is_empty()).into(),
                        (&url).into(),
                        serde_json::to_string(&events).unwrap_or_default().into(),
                        spec.secret.as_ref().filter(|s| !s.is_empty()).into(),
                        status.as_str().into(),
                        now.into(),
                        cursor.into(),
                    ],
                )?;
                Ok(())
            })
            .await?;
        self.get_webhook(id).await
    }

    /// Gets a webhook.
    pub async fn get_webhook(&self, id: String) -> Result<Webhook> {
        self.db_handle()
            .read(move |c| -> Result<Webhook> {
                c.query_opt(
                    &format!("SELECT {WEBHOOK_COLUMNS} FROM registry_webhooks WHERE id = ?1"),
                    &[(&id).into()],
                    webhook_from_row,
                )?
                .ok_or_else(|| Error::NotFound(format!("Webhook with ID {id} not found.")))
            })
            .await
    }

    /// Lists webhooks, oldest first.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.db_handle()
            .read(|c| -> Result<Vec<Webhook>> {
                Ok(c.query(
                    &format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM registry_webhooks \
                         ORDER BY creation_time, id"
                    ),
                    &[],
                    webhook_from_row,
                )?)
            })
            .await
    }

    /// Changes a webhook; fields left out stay as they are.
    pub async fn update_webhook(&self, id: String, spec: WebhookSpec) -> Result<Webhook> {
        if let Some(url) = &spec.url {
            validate_url(self.outbound(), url).await?;
        }
        if spec.events.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::InvalidParameter(
                "Webhook events cannot be empty.".into(),
            ));
        }
        let mut current = self.get_webhook(id.clone()).await?;
        if let Some(n) = spec.name.filter(|n| !n.trim().is_empty()) {
            current.name = n;
        }
        if let Some(d) = spec.description {
            current.description = Some(d).filter(|d| !d.is_empty());
        }
        if let Some(u) = spec.url {
            current.url = u;
        }
        if let Some(e) = spec.events {
            current.events = e;
        }
        if let Some(s) = spec.secret {
            current.secret = Some(s).filter(|s| !s.is_empty());
        }
        if let Some(s) = spec.status {
            current.status = s;
        }
        let w = current.clone();
        self.db_handle()
            .write(move |c| -> Result<()> {
                c.execute(
                    "UPDATE registry_webhooks SET name = ?2, description = ?3, url = ?4, \
                     events = ?5, secret = ?6, status = ?7, last_updated_time = ?8 WHERE id = ?1",
                    &[
                        (&w.id).into(),
                        (&w.name).into(),
                        w.description.as_ref().into(),
                        (&w.url).into(),
                        serde_json::to_string(&w.events).unwrap_or_default().into(),
                        w.secret.as_ref().into(),
                        w.status.as_str().into(),
                        now_ms().into(),
                    ],
                )?;
                Ok(())
            })
            .await?;
        self.get_webhook(id).await
    }

    /// Deletes a webhook and its delivery log.
    pub async fn delete_webhook(&self, id: String) -> Result<()> {
        self.db_handle()
            .write(move |c| -> Result<()> {
                let n = c.execute(
                    "DELETE FROM registry_webhooks WHERE id = ?1",
                    &[(&id).into()],
                )?;
                if n == 0 {
                    return Err(Error::NotFound(format!("Webhook with ID {id} not found.")));
                }
                c.execute(
                    "DELETE FROM registry_webhook_deliveries WHERE webhook_id = ?1",
                    &[(&id).into()],
                )?;
                Ok(())
            })
            .await
    }

    /// The most recent delivery attempts of a webhook, newest first.
    pub async fn webhook_deliveries(&self, id: String, limit: i64) -> Result<Vec<Delivery>> {
        self.get_webhook(id.clone()).await?;
        self.db_handle()
            .read(move |c| -> Result<Vec<Delivery>> {
                Ok(c.query(
                    "SELECT id, webhook_id, event_seq, event, attempt, time, status_code, error, \
                     success, duration_ms, response_body FROM registry_webhook_deliveries \
                     WHERE webhook_id = ?1 \
                     ORDER BY time DESC, event_seq DESC, attempt DESC LIMIT ?2",
                    &[(&id).into(), limit.clamp(1, 10_000).into()],
                    |r| {
                        Ok(Delivery {
                            delivery_id: r.string(0)?,
                            webhook_id: r.string(1)?,
                            event_seq: r.i64(2)?,
                            event: r.string(3)?,
                            attempt: r.i64(4)?,
                            timestamp: r.i64(5)?,
                            status_code: r.opt_i64(6)?,
                            error: r.opt_string(7)?,
                            success: r.i64(8)? != 0,
                            duration_ms: r.i64(9)?,
                            response_body: r.opt_string(10)?,
                        })
                    },
                )?)
            })
            .await
    }

    /// Sends an example event to a webhook now (MLflow's "test webhook").
    pub async fn test_webhook(&self, id: String, event: Option<String>) -> Result<Delivery> {
        let hook = self.get_webhook(id).await?;
        let event = match event {
            Some(e) => e,
            None => hook.events.first().cloned().ok_or_else(|| {
                Error::InvalidParameter("The webhook has no events to test.".into())
            })?,
        };
        let example = RegistryEvent {
            seq: 0,
            timestamp: now_ms(),
            data: example_data(&event),
            event,
            name: "example_model".into(),
            version: Some(1),
        };
        let policy = self.outbound();
        let d = tokio::task::spawn_blocking(move || send(&policy, &hook, &example, 1))
            .await
            .map_err(|e| Error::Store(StoreError::Worker(e.to_string())))?;
        self.record_delivery(d.clone()).await?;
        Ok(d)
    }

    async fn record_delivery(&self, d: Delivery) -> Result<()> {
        self.db_handle()
            .write(move |c| -> Result<()> {
                c.execute(
                    "INSERT INTO registry_webhook_deliveries (id, webhook_id, event_seq, event, \
                     attempt, time, status_code, error, success, duration_ms, response_body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    &[
                        (&d.delivery_id).into(),
                        (&d.webhook_id).into(),
                        d.event_seq.into(),
                        (&d.event).into(),
                        d.attempt.into(),
                        d.timestamp.into(),
                        d.status_code.into(),
                        d.error.as_ref().into(),
                        d.success.into(),
                        d.duration_ms.into(),
                        d.response_body.as_ref().into(),
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn set_cursor(&self, id: String, cursor: i64) -> Result<()> {
        self.db_handle()
            .write(move |c| -> Result<()> {
                c.execute(
                    "UPDATE registry_webhooks SET cursor = ?2 WHERE id = ?1 AND cursor < ?2",
                    &[(&id).into(), cursor.into()],
                )?;
                Ok(())
            })
            .await
    }

    /// Starts the delivery thread (once per process; it stops when the service is dropped).
    /// Must be called from inside a Tokio runtime.
    pub fn start_webhook_delivery(&self) -> Result<()> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::Store(StoreError::Worker(format!(
                "no Tokio runtime for webhooks: {e}"
            )))
        })?;
        let weak = self.downgrade();
        let wake = self.wake();
        std::thread::Builder::new()
            .name("loopml-webhooks".into())
            .spawn(move || delivery_loop(weak, wake, handle))
            .map_err(|e| Error::Store(StoreError::Worker(format!("cannot start webhooks: {e}"))))?;
        Ok(())
    }
}

fn example_data(event: &str) -> serde_json::Value {
    let mut data = serde_json::json!({"name": "example_model"});
    if event.starts_with("model_version") {
        data["version"] = "1".into();
    }
    match event {
        "model_version.created" => {
            data["source"] = "models:/m-example".into();
            data["run_id"] = "abcd1234abcd5678".into();
            data["tags"] = serde_json::json!({"example_key": "example_value"});
            data["description"] = "An example model version".into();
        }
        "registered_model.created" => {
            data["tags"] = serde_json::json!({"example_key": "example_value"});
            data["description"] = "An example registered model".into();
        }
        e if e.ends_with("tag.set") => {
            data["key"] = "example_key".into();
            data["value"] = "example_value".into();
        }
        e if e.ends_with("tag.deleted") => data["key"] = "example_key".into(),
        e if e.starts_with("model_version_alias") => data["alias"] = "example_alias".into(),
        _ => {}
    }
    data
}

/// The lease that makes one process deliver webhooks (replicas would otherwise each deliver
/// every event).
const DELIVERY_LEASE: &str = "webhook-delivery";
/// How long the delivery lease lasts without renewal; one delivery attempt is bounded by the
/// 5 s request timeout, and the lease is renewed before each.
const DELIVERY_LEASE_TTL: Duration = Duration::from_secs(30);

fn delivery_loop(weak: Weak<crate::service::Inner>, wake: Arc<Wake>, rt: tokio::runtime::Handle) {
    let mut retries: HashMap<String, Retry> = HashMap::new();
    let mut seen = 0;
    let mut leader = false;
    loop {
        let Some(service) = RegistryService::upgrade(&weak) else {
            return;
        };
        let hold = |leader: &mut bool| {
            let held = rt
                .block_on(
                    service
                        .db_handle()
                        .try_lease(DELIVERY_LEASE, DELIVERY_LEASE_TTL),
                )
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot renew the webhook delivery lease");
                    false
                });
            if held != *leader {
                tracing::info!(delivering = held, "webhook delivery lease changed hands");
                // Retry timers were this process's view; the new holder starts fresh.
                *leader = held;
            }
            held
        };
        if !hold(&mut leader) {
            retries.clear();
            drop(service);
            seen = wake.wait(seen, Duration::from_secs(1));
            continue;
        }
        let hooks = rt.block_on(service.list_webhooks()).unwrap_or_default();
        let mut next_wake = Duration::from_secs(1);
        'hooks: for hook in hooks {
            if let Some(r) = retries.get(&hook.id) {
                let now = Instant::now();
                if r.next_at > now {
                    next_wake = next_wake.min(r.next_at - now);
                    continue;
                }
            }
            let events = rt
                .block_on(service.events(hook.cursor, 100, None, Duration::ZERO))
                .map(|(e, _)| e)
                .unwrap_or_default();
            let mut cursor = hook.cursor;
            for event in events {
                let wanted =
                    hook.status == WebhookStatus::Active && hook.events.contains(&event.event);
                if !wanted {
                    cursor = event.seq;
                    continue;
                }
                let attempt = retries.get(&hook.id).map_or(1, |r| r.attempts + 1);
                if !hold(&mut leader) {
                    if cursor > hook.cursor {
                        let _ = rt.block_on(service.set_cursor(hook.id.clone(), cursor));
                    }
                    break 'hooks;
                }
                let d = send(&service.outbound(), &hook, &event, i64::from(attempt));
                let ok = d.success;
                let give_up = !ok && (!retryable(&d) || attempt >= MAX_ATTEMPTS);
                if !ok {
                    tracing::warn!(webhook = %hook.id, url = %hook.url, event = %event.event,
                        seq = event.seq, attempt, error = ?d.error, give_up, "webhook delivery failed");
                }
                let _ = rt.block_on(service.record_delivery(d));
                if ok || give_up {
                    retries.remove(&hook.id);
                    cursor = event.seq;
                } else {
                    let wait = backoff(attempt);
                    retries.insert(
                        hook.id.clone(),
                        Retry {
                            attempts: attempt,
                            next_at: Instant::now() + wait,
                        },
                    );
                    next_wake = next_wake.min(wait);
                    break;
                }
            }
            if cursor > hook.cursor {
                let _ = rt.block_on(service.set_cursor(hook.id.clone(), cursor));
            }
        }
        drop(service);
        seen = wake.wait(seen, next_wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_mlflows_scheme() {
        // Computed with Python: hmac.new(b"s3cret", b"d1.1700000000.{}", sha256), base64.
        assert_eq!(
            signature("s3cret", "d1", "1700000000", "{}"),
            "v1,zanuGVyPdkCH5t63rF48cWGMLFZ3sNRiNHn6qebAxZ8="
        );
    }

    #[test]
    fn events_and_urls() {
        assert_eq!(
            event_name("MODEL_VERSION_ALIAS", "CREATED").unwrap(),
            "model_version_alias.created"
        );
        assert!(event_name("model_version", "exploded").is_err());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
        assert_eq!(iso_time(1_795_000_000_123), "2026-11-18T11:06:40.123+00:00");
    }
}
