//! Webhook delivery end to end: a local receiver that fails once, then accepts. Checks MLflow's
//! signature scheme, the retry after the failure, ordering and the delivery log.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // test code: the receiver runs on its own task

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use loopml_registry::RegistryService;
use loopml_registry::webhooks::{WebhookSpec, signature};
use loopml_store::outbound::{OutboundPolicy, REFUSED};
use loopml_store::testing::TestDatabase;
use loopml_tracking::TrackingService;

#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    fail_first: Arc<Mutex<u32>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    r.calls.lock().unwrap().push((headers, body));
    let mut fail = r.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

async fn start_receiver(fail_first: u32) -> (String, Receiver) {
    let r = Receiver {
        fail_first: Arc::new(Mutex::new(fail_first)),
        ..Receiver::default()
    };
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), r)
}

/// A registry on a fresh database (SQLite, or PostgreSQL under `LOOPML_TEST_DATABASE_URL`);
/// the database lives as long as the returned guard.
fn service(dir: &std::path::Path) -> (RegistryService, TestDatabase) {
    let t = TestDatabase::new();
    let db = t.database();
    let art = loopml_store::testing::test_artifact_store(dir);
    let tracking = TrackingService::new(db.clone(), art).unwrap();
    let reg = RegistryService::new(db, tracking).unwrap();
    // The receivers here listen on loopback, which the default policy refuses.
    reg.set_outbound_policy(OutboundPolicy::parse(&["127.0.0.1"]).unwrap());
    (reg, t)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_delivery_with_retry_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _db) = service(dir.path());
    reg.start_webhook_delivery().unwrap();
    let (url, rx) = start_receiver(1).await;
    let hook = reg
        .create_webhook(WebhookSpec {
            name: Some("deploy".into()),
            url: Some(url),
            events: Some(vec![
                "model_version_alias.created".into(),
                "model_version.created".into(),
            ]),
            secret: Some("s3cret".into()),
            ..WebhookSpec::default()
        })
        .await
        .unwrap();
    // Events before the webhook existed are not replayed; the registered model's creation is
    // not subscribed.
    reg.create_registered_model("m".into(), vec![], None)
        .await
        .unwrap();
    let run = reg
        .tracking()
        .create_run(0, None, None, None, vec![])
        .await
        .unwrap();
    let rid = run.info.run_id.clone();
    reg.create_model_version(loopml_registry::NewModelVersion {
        name: "m".into(),
        source: format!("runs:/{rid}/model"),
        run_id: Some(rid),
        ..Default::default()
    })
    .await
    .unwrap();
    reg.set_alias("m".into(), "champion".into(), 1)
        .await
        .unwrap();

    // First attempt of the first event gets a 503, the retry (after ~1 s) succeeds, then the
    // alias event follows in order.
    let calls = rx.calls.clone();
    wait_for("three deliveries", || calls.lock().unwrap().len() >= 3).await;
    let calls = rx.calls.lock().unwrap().clone();
    let events: Vec<String> = calls
        .iter()
        .map(|(_, b)| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            format!(
                "{}.{}",
                v["entity"].as_str().unwrap(),
                v["action"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "model_version.created",
            "model_version.created",
            "model_version_alias.created"
        ]
    );
    for (headers, body) in &calls {
        let id = headers["x-mlflow-delivery-id"].to_str().unwrap();
        let ts = headers["x-mlflow-timestamp"].to_str().unwrap();
        let sig = headers["x-mlflow-signature"].to_str().unwrap();
        assert_eq!(sig, signature("s3cret", id, ts, body));
    }
    let alias: serde_json::Value = serde_json::from_str(&calls[2].1).unwrap();
    assert_eq!(alias["data"]["alias"], "champion");
    assert_eq!(alias["data"]["version"], "1");

    // Each attempt is logged right after the receiver answers.
    let mut log = Vec::new();
    for _ in 0..200 {
        log = reg.webhook_deliveries(hook.id.clone(), 10).await.unwrap();
        if log.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.len(), 3);
    let failed: Vec<_> = log.iter().filter(|d| !d.success).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status_code, Some(503));
    assert_eq!(failed[0].attempt, 1);
    assert!(log.iter().any(|d| d.success && d.attempt == 2));

    // The cursor is durable: nothing is re-sent once everything was delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = reg.get_webhook(hook.id.clone()).await.unwrap();
    assert!(h.cursor >= 3, "cursor {}", h.cursor);
    assert_eq!(rx.calls.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_rejected_and_test_delivery_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _db) = service(dir.path());
    for (url, events) in [
        ("ftp://x/y", vec!["model_version.created".to_string()]),
        ("http://127.0.0.1:9/x", vec![]),
    ] {
        let err = reg
            .create_webhook(WebhookSpec {
                name: Some("x".into()),
                url: Some(url.into()),
                events: Some(events),
                ..WebhookSpec::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code_and_status().0, "INVALID_PARAMETER_VALUE");
    }
    // Nothing listens on port 9: the test delivery reports the failure instead of erroring.
    let hook = reg
        .create_webhook(WebhookSpec {
            name: Some("down".into()),
            url: Some("http://127.0.0.1:9/x".into()),
            events: Some(vec!["model_version_alias.created".into()]),
            ..WebhookSpec::default()
        })
        .await
        .unwrap();
    let d = reg.test_webhook(hook.id.clone(), None).await.unwrap();
    assert!(!d.success);
    assert!(d.error.is_some());
    assert_eq!(
        reg.webhook_deliveries(hook.id.clone(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    reg.delete_webhook(hook.id.clone()).await.unwrap();
    assert_eq!(
        reg.get_webhook(hook.id)
            .await
            .unwrap_err()
            .code_and_status()
            .0,
        "RESOURCE_DOES_NOT_EXIST"
    );
}

/// CVE-2026-2393 (SSRF through a webhook URL): under the default policy every loopback,
/// link-local and metadata spelling is refused when stored, and the loopback receiver never
/// sees a connection, neither from a create nor from a test delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_refuses_loopback_and_metadata_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestDatabase::new();
    let db = t.database();
    let art = loopml_store::testing::test_artifact_store(dir.path());
    let tracking = TrackingService::new(db.clone(), art).unwrap();
    let reg = RegistryService::new(db, tracking).unwrap();
    let (url, receiver) = start_receiver(0).await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for bad in [
        url.clone(),
        format!("http://[::1]:{port}/hook"),
        format!("http://0x7f000001:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://metadata.google.internal/computeMetadata/v1/".to_string(),
    ] {
        let err = reg
            .create_webhook(WebhookSpec {
                name: Some("ssrf".into()),
                url: Some(bad.clone()),
                events: Some(vec!["model_version.created".into()]),
                ..WebhookSpec::default()
            })
            .await
            .unwrap_err();
        let (code, _) = err.code_and_status();
        assert_eq!(code, "INVALID_PARAMETER_VALUE", "{bad}");
        assert!(err.to_string().contains(REFUSED), "{bad}: {err}");
    }
    // A public name is stored; changing it to loopback later is refused too.
    let hook = reg
        .create_webhook(WebhookSpec {
            name: Some("ok".into()),
            url: Some("http://hooks.example.invalid/x".into()),
            events: Some(vec!["model_version.created".into()]),
            ..WebhookSpec::default()
        })
        .await
        .unwrap();
    let err = reg
        .update_webhook(
            hook.id.clone(),
            WebhookSpec {
                url: Some(url.clone()),
                ..WebhookSpec::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains(REFUSED), "{err}");
    assert!(reg.list_webhooks().await.unwrap().len() == 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.calls.lock().unwrap().is_empty());
}
