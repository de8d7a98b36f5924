//! Drives the registry (and the tracking routes it leans on) in-process against a real SQLite
//! file and artifact folder.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use loopml_registry::RegistryService;
use loopml_store::testing::TestDatabase;
use loopml_tracking::TrackingService;
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: Router,
    registry: RegistryService,
    _db: TestDatabase,
}

/// Tracking and registry on a fresh database: SQLite, or PostgreSQL under
/// `LOOPML_TEST_DATABASE_URL`.
fn app() -> App {
    let t = TestDatabase::new();
    let db = t.database();
    let art = loopml_store::testing::test_artifact_store(&t.dir());
    let tracking = TrackingService::new(db.clone(), art).unwrap();
    let registry = RegistryService::new(db, tracking.clone()).unwrap();
    App {
        router: loopml_tracking::router(tracking).merge(loopml_registry::router(registry.clone())),
        registry,
        _db: t,
    }
}

impl App {
    async fn raw(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let uri = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/api/2.0/mlflow/{path}")
        };
        let (status, bytes) = self.raw(method, &uri, body).await;
        let v = if bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, StatusCode::OK, "{method} {path}: {v}");
        v
    }
    async fn err(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let (s, v) = self.call(method, path, body).await;
        assert_ne!(s, StatusCode::OK, "{method} {path} should fail: {v}");
        (s, v["error_code"].as_str().unwrap_or("").to_string())
    }
    async fn new_run(&self) -> String {
        let v = self
            .ok(
                "POST",
                "runs/create",
                Some(json!({"experiment_id": "0", "start_time": 1})),
            )
            .await;
        v["run"]["info"]["run_id"].as_str().unwrap().to_string()
    }
    async fn model(&self, name: &str) {
        self.ok(
            "POST",
            "registered-models/create",
            Some(json!({"name": name})),
        )
        .await;
    }
    async fn version(&self, name: &str, run: &str) -> String {
        let v = self
            .ok(
                "POST",
                "model-versions/create",
                Some(json!({"name": name, "source": format!("runs:/{run}/model"), "run_id": run})),
            )
            .await;
        assert_eq!(v["model_version"]["status"], "READY");
        v["model_version"]["version"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn registered_model_lifecycle() {
    let app = app();
    let v = app
        .ok(
            "POST",
            "registered-models/create",
            Some(json!({"name": "churn", "description": "d", "tags": [{"key": "team", "value": "a"}]})),
        )
        .await;
    assert_eq!(v["registered_model"]["name"], "churn");
    assert_eq!(v["registered_model"]["tags"][0]["value"], "a");
    let (s, code) = app
        .err(
            "POST",
            "registered-models/create",
            Some(json!({"name": "churn"})),
        )
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS")
    );
    for bad in ["a/b", "a:b", ""] {
        let (s, code) = app
            .err(
                "POST",
                "registered-models/create",
                Some(json!({"name": bad})),
            )
            .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
        );
    }
    let run = app.new_run().await;
    assert_eq!(app.version("churn", &run).await, "1");
    assert_eq!(app.version("churn", &run).await, "2");
    app.ok(
        "POST",
        "registered-models/rename",
        Some(json!({"name": "churn", "new_name": "churn2"})),
    )
    .await;
    let (s, code) = app
        .err("GET", "registered-models/get?name=churn", None)
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
    );
    let v = app
        .ok("GET", "model-versions/get?name=churn2&version=2", None)
        .await;
    assert_eq!(v["model_version"]["name"], "churn2");
    // Deleting a version never frees its number.
    app.ok(
        "DELETE",
        "model-versions/delete",
        Some(json!({"name": "churn2", "version": "2"})),
    )
    .await;
    assert_eq!(app.version("churn2", &run).await, "3");
    let (s, code) = app
        .err("GET", "model-versions/get?name=churn2&version=abc", None)
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
    );
    app.ok(
        "DELETE",
        "registered-models/delete",
        Some(json!({"name": "churn2"})),
    )
    .await;
    let (s, _) = app
        .err("GET", "model-versions/get?name=churn2&version=1", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stages_aliases_and_latest() {
    let app = app();
    let run = app.new_run().await;
    app.model("m").await;
    for _ in 0..3 {
        app.version("m", &run).await;
    }
    app.ok(
        "POST",
        "model-versions/transition-stage",
        Some(json!({"name": "m", "version": "1", "stage": "production"})),
    )
    .await;
    let v = app
        .ok(
            "POST",
            "model-versions/transition-stage",
            Some(json!({"name": "m", "version": "2", "stage": "Production", "archive_existing_versions": true})),
        )
        .await;
    assert_eq!(v["model_version"]["current_stage"], "Production");
    let v = app
        .ok("GET", "model-versions/get?name=m&version=1", None)
        .await;
    assert_eq!(v["model_version"]["current_stage"], "Archived");
    let (s, _) = app
        .err(
            "POST",
            "model-versions/transition-stage",
            Some(json!({"name": "m", "version": "1", "stage": "Bogus"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = app
        .ok(
            "POST",
            "registered-models/get-latest-versions",
            Some(json!({"name": "m", "stages": ["Production"]})),
        )
        .await;
    assert_eq!(v["model_versions"].as_array().unwrap().len(), 1);
    assert_eq!(v["model_versions"][0]["version"], "2");

    app.ok(
        "POST",
        "registered-models/alias",
        Some(json!({"name": "m", "alias": "champion", "version": "1"})),
    )
    .await;
    app.ok(
        "POST",
        "registered-models/alias",
        Some(json!({"name": "m", "alias": "champion", "version": "3"})),
    )
    .await;
    let v = app
        .ok("GET", "registered-models/alias?name=m&alias=champion", None)
        .await;
    assert_eq!(v["model_version"]["version"], "3");
    assert_eq!(v["model_version"]["aliases"], json!(["champion"]));
    let v = app
        .ok("GET", "registered-models/alias?name=m&alias=latest", None)
        .await;
    assert_eq!(v["model_version"]["version"], "3");
    let (s, code) = app
        .err("GET", "registered-models/alias?name=m&alias=nope", None)
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
    );
    for reserved in ["latest", "v1", "V22"] {
        let (s, _) = app
            .err(
                "POST",
                "registered-models/alias",
                Some(json!({"name": "m", "alias": reserved, "version": "1"})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
    let (s, code) = app
        .err(
            "POST",
            "registered-models/alias",
            Some(json!({"name": "m", "alias": "x", "version": "99"})),
        )
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
    );
    let v = app.ok("GET", "registered-models/get?name=m", None).await;
    assert_eq!(
        v["registered_model"]["aliases"],
        json!([{"alias": "champion", "version": "3"}])
    );
    // Deleting the version an alias points at removes the alias.
    app.ok(
        "DELETE",
        "model-versions/delete",
        Some(json!({"name": "m", "version": "3"})),
    )
    .await;
    let (_, code) = app
        .err("GET", "registered-models/alias?name=m&alias=champion", None)
        .await;
    assert_eq!(code, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn search_filters_orders_and_pages() {
    let app = app();
    let run = app.new_run().await;
    for i in 0..7 {
        app.model(&format!("model-{i}")).await;
        app.version(&format!("model-{i}"), &run).await;
    }
    app.ok(
        "POST",
        "registered-models/create",
        Some(json!({"name": "prompt-1", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]})),
    )
    .await;
    app.ok(
        "POST",
        "registered-models/set-tag",
        Some(json!({"name": "model-3", "key": "team", "value": "x"})),
    )
    .await;
    // The client's prompt rewrite hides prompts and keeps untagged models.
    let q = "registered-models/search?filter=name%20LIKE%20%27%25-1%27%20AND%20tag.%60mlflow.prompt.is_prompt%60%20%21%3D%20%27true%27";
    let v = app.ok("GET", q, None).await;
    let names: Vec<&str> = v["registered_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["model-1"]);
    let v = app
        .ok(
            "GET",
            "registered-models/search?filter=tags.team%3D%27x%27",
            None,
        )
        .await;
    assert_eq!(v["registered_models"][0]["name"], "model-3");
    assert_eq!(v["registered_models"].as_array().unwrap().len(), 1);
    // Paging collects every model once, in name order.
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let v = app
            .ok(
                "GET",
                &format!(
                    "registered-models/search?max_results=3&order_by=name%20DESC&page_token={token}"
                ),
                None,
            )
            .await;
        for m in v["registered_models"].as_array().unwrap() {
            seen.push(m["name"].as_str().unwrap().to_string());
        }
        match v["next_page_token"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("model-{i}")).collect();
    assert_eq!(seen, expected);
    let (s, _) = app
        .err("GET", "registered-models/search?max_results=1001", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .err("GET", "registered-models/search?filter=name%20OR%20x", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    app.version("model-2", &run).await;
    let v = app
        .ok(
            "GET",
            "model-versions/search?filter=name%3D%27model-2%27&order_by=version_number%20ASC",
            None,
        )
        .await;
    let versions: Vec<&str> = v["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2"]);
    let v = app
        .ok(
            "GET",
            &format!(
                "model-versions/search?filter=run_id%3D%27{run}%27%20AND%20version_number%20%3E%201"
            ),
            None,
        )
        .await;
    assert_eq!(v["model_versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sources_are_checked_against_their_run() {
    let app = app();
    app.model("m").await;
    let run = app.new_run().await;
    let other = app.new_run().await;
    // runs:/ source of another run than run_id.
    let (s, code) = app
        .err(
            "POST",
            "model-versions/create",
            Some(json!({"name": "m", "source": format!("runs:/{other}/model"), "run_id": run})),
        )
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
    );
    // mlflow-artifacts source outside the run's artifact root.
    let (s, _) = app
        .err(
            "POST",
            "model-versions/create",
            Some(json!({"name": "m", "source": format!("mlflow-artifacts:/0/{other}/artifacts/model"), "run_id": run})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = app
        .ok(
            "POST",
            "model-versions/create",
            Some(json!({"name": "m", "source": format!("mlflow-artifacts:/0/{run}/artifacts/model"), "run_id": run})),
        )
        .await;
    assert_eq!(v["model_version"]["version"], "1");
    for bad in ["/etc/passwd", "file:///etc", "runs:/../x", "s3://b/../../x"] {
        let (s, _) = app
            .err(
                "POST",
                "model-versions/create",
                Some(json!({"name": "m", "source": bad, "run_id": run})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Unknown registered model.
    let (s, code) = app
        .err(
            "POST",
            "model-versions/create",
            Some(json!({"name": "nope", "source": format!("runs:/{run}/model"), "run_id": run})),
        )
        .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
    );
    // A registered model version as the source resolves to its storage location.
    let v = app
        .ok(
            "POST",
            "model-versions/create",
            Some(json!({"name": "m", "source": "models:/m/1"})),
        )
        .await;
    assert_eq!(v["model_version"]["run_id"], run.as_str());
    let v = app
        .ok(
            "GET",
            "model-versions/get-download-uri?name=m&version=2",
            None,
        )
        .await;
    assert_eq!(
        v["artifact_uri"],
        format!("mlflow-artifacts:/0/{run}/artifacts/model")
    );
}

#[tokio::test]
async fn feed_orders_events_and_long_poll_wakes_within_a_second() {
    let app = app();
    let run = app.new_run().await;
    app.model("m").await;
    app.version("m", &run).await;
    app.version("m", &run).await;
    let v = app
        .ok("GET", "/api/2.0/loopml/registry/events?after=0", None)
        .await;
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "registered_model.created",
            "model_version.created",
            "model_version.created"
        ]
    );
    let last = v["last_seq"].as_i64().unwrap();
    assert_eq!(v["next_after"].as_i64().unwrap(), last);

    // A long-poll waiting for the next event returns as soon as the alias moves.
    let registry = app.registry.clone();
    #[allow(clippy::disallowed_methods)] // test: a concurrent subscriber
    let poll = tokio::spawn(async move {
        let start = Instant::now();
        let (events, _) = registry
            .events(last, 10, None, Duration::from_secs(10))
            .await
            .unwrap();
        (events, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let moved = Instant::now();
    app.ok(
        "POST",
        "registered-models/alias",
        Some(json!({"name": "m", "alias": "champion", "version": "2"})),
    )
    .await;
    let (events, _) = poll.await.unwrap();
    let latency = moved.elapsed();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "model_version_alias.created");
    assert_eq!(events[0].data["version"], "2");
    assert!(latency < Duration::from_secs(1), "{latency:?}");

    // Setting the same alias again is not a change; moving it is, with the previous version.
    app.ok(
        "POST",
        "registered-models/alias",
        Some(json!({"name": "m", "alias": "champion", "version": "2"})),
    )
    .await;
    app.ok(
        "POST",
        "registered-models/alias",
        Some(json!({"name": "m", "alias": "champion", "version": "1"})),
    )
    .await;
    let v = app
        .ok(
            "GET",
            &format!("/api/2.0/loopml/registry/events?after={}", events[0].seq),
            None,
        )
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["data"]["previous_version"], "2");
    let (s, _) = app
        .err("GET", "/api/2.0/loopml/registry/events?wait_s=999", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concurrent_alias_moves_leave_one_consistent_answer() {
    let app = app();
    let run = app.new_run().await;
    app.model("m").await;
    for _ in 0..8 {
        app.version("m", &run).await;
    }
    let mut handles = Vec::new();
    for v in 1..=8 {
        let r = app.registry.clone();
        #[allow(clippy::disallowed_methods)] // test: concurrent writers
        handles.push(tokio::spawn(async move {
            r.set_alias("m".into(), "champion".into(), v).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mv = app
        .registry
        .get_model_version_by_alias("m".into(), "champion".into())
        .await
        .unwrap();
    // The feed's last alias event names the version the alias ends on.
    let (events, _) = app
        .registry
        .events(0, 1000, Some("m".into()), Duration::ZERO)
        .await
        .unwrap();
    let last_alias = events
        .iter()
        .rev()
        .find(|e| e.event == "model_version_alias.created")
        .unwrap();
    assert_eq!(last_alias.version, Some(mv.version));
    let m = app.registry.get_registered_model("m".into()).await.unwrap();
    assert_eq!(m.aliases.len(), 1);
}
