//! Drives the tracking router in-process against a real SQLite file and artifact folder.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use loopml_store::testing::TestDatabase;
use loopml_tracking::{TrackingService, router};
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: Router,
    _db: TestDatabase,
}

/// The tracking router on a fresh database: SQLite, or PostgreSQL under
/// `LOOPML_TEST_DATABASE_URL`.
fn app() -> App {
    let t = TestDatabase::new();
    let art = loopml_store::testing::test_artifact_store(&t.dir());
    app_on(t, art)
}

/// The tracking router on a fresh database and a local artifact folder (for tests that plant
/// files or symlinks in it).
fn local_app() -> App {
    let t = TestDatabase::new();
    let art = loopml_store::ArtifactStore::local(t.dir().join("art")).unwrap();
    app_on(t, art)
}

fn app_on(t: TestDatabase, art: loopml_store::ArtifactStore) -> App {
    let svc = TrackingService::new(t.database(), art).unwrap();
    App {
        router: router(svc),
        _db: t,
    }
}

impl App {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/2.0/mlflow/{path}"));
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
    async fn new_run(&self, exp: &str) -> String {
        let v = self
            .ok(
                "POST",
                "runs/create",
                Some(json!({"experiment_id": exp, "start_time": 1})),
            )
            .await;
        v["run"]["info"]["run_id"].as_str().unwrap().to_string()
    }
}

fn error_code(v: &Value) -> &str {
    v["error_code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn default_experiment_and_duplicate_names() {
    let a = app();
    let v = a.ok("GET", "experiments/get?experiment_id=0", None).await;
    assert_eq!(v["experiment"]["name"], "Default");
    assert_eq!(v["experiment"]["artifact_location"], "mlflow-artifacts:/0");
    let v = a
        .ok("POST", "experiments/create", Some(json!({"name": "e"})))
        .await;
    assert_eq!(v["experiment_id"], "1");
    let (s, v) = a
        .call("POST", "experiments/create", Some(json!({"name": "e"})))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS")
    );
    let (s, v) = a
        .call("GET", "experiments/get?experiment_id=99", None)
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
    );
    let (s, v) = a
        .call("GET", "experiments/get-by-name?experiment_name=nope", None)
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
    );
}

#[tokio::test]
async fn post_without_content_type_is_rejected() {
    let a = app();
    let req = Request::builder()
        .method("POST")
        .uri("/api/2.0/mlflow/experiments/create")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    let resp = a.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn failed_batch_writes_nothing() {
    let a = app();
    let run = a.new_run("0").await;
    a.ok(
        "POST",
        "runs/log-parameter",
        Some(json!({"run_id": run, "key": "p", "value": "1"})),
    )
    .await;
    // The param overwrite fails after the metric and the other param were inserted in the
    // same transaction: none of them may remain.
    let (s, v) = a
        .call(
            "POST",
            "runs/log-batch",
            Some(json!({"run_id": run,
                "metrics": [{"key": "m", "value": 1.0, "timestamp": 5, "step": 0}],
                "params": [{"key": "q", "value": "a"}, {"key": "p", "value": "2"}],
                "tags": [{"key": "t", "value": "v"}]})),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Changing param values is not allowed")
    );
    let r = a.ok("GET", &format!("runs/get?run_id={run}"), None).await;
    assert!(r["run"]["data"]["metrics"].as_array().unwrap().is_empty());
    let params = r["run"]["data"]["params"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{params:?}");
    assert!(
        r["run"]["data"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["key"] != "t")
    );
}

#[tokio::test]
async fn batch_limits_and_key_rules() {
    let a = app();
    let run = a.new_run("0").await;
    let metrics: Vec<Value> = (0..1001)
        .map(|i| json!({"key": "m", "value": 1.0, "timestamp": 1, "step": i}))
        .collect();
    let (s, v) = a
        .call(
            "POST",
            "runs/log-batch",
            Some(json!({"run_id": run, "metrics": metrics})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000 metrics")
    );
    for bad in ["bad|name", "../x", "/abs"] {
        let (s, v) = a
            .call(
                "POST",
                "runs/log-metric",
                Some(json!({"run_id": run, "key": bad, "value": 1, "timestamp": 1})),
            )
            .await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            "{bad}"
        );
    }
    let (s, _) = a
        .call(
            "POST",
            "runs/log-metric",
            Some(json!({"run_id": run, "key": "m", "value": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "timestamp is required");
    // Long param values are truncated, not rejected; string int64s and "Infinity" accepted.
    a.ok(
        "POST",
        "runs/log-parameter",
        Some(json!({"run_id": run, "key": "long", "value": "x".repeat(7000)})),
    )
    .await;
    a.ok("POST", "runs/log-metric", Some(json!({"run_id": run, "key": "inf", "value": "Infinity", "timestamp": "5", "step": "7"})))
        .await;
    let r = a.ok("GET", &format!("runs/get?run_id={run}"), None).await;
    let p = &r["run"]["data"]["params"][0];
    assert_eq!(p["value"].as_str().unwrap().len(), 6000);
    let m = &r["run"]["data"]["metrics"][0];
    assert_eq!(
        (m["value"].as_str(), m["step"].as_i64()),
        (Some("Infinity"), Some(7))
    );
}

#[tokio::test]
async fn metric_history_orders_and_pages() {
    let a = app();
    let run = a.new_run("0").await;
    let mut metrics: Vec<Value> = (0..250)
        .rev()
        .map(|i| json!({"key": "loss", "value": i as f64, "timestamp": 1000 + i, "step": i}))
        .collect();
    // The same point twice in one batch (two multi-row INSERT chunks of 200) is stored once.
    metrics.push(json!({"key": "loss", "value": 7.0, "timestamp": 1007, "step": 7}));
    a.ok(
        "POST",
        "runs/log-batch",
        Some(json!({"run_id": run, "metrics": metrics})),
    )
    .await;
    // Duplicate point is stored once.
    a.ok(
        "POST",
        "runs/log-metric",
        Some(json!({"run_id": run, "key": "loss", "value": 0.0, "timestamp": 1000, "step": 0})),
    )
    .await;
    let mut token: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let mut q = format!("metrics/get-history?run_id={run}&metric_key=loss&max_results=100");
        if let Some(t) = &token {
            q.push_str(&format!(
                "&page_token={}",
                t.replace('=', "%3D").replace('+', "%2B")
            ));
        }
        let v = a.ok("GET", &q, None).await;
        all.extend(
            v["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["timestamp"].as_i64().unwrap()),
        );
        match v.get("next_page_token").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(all.len(), 250);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let r = a.ok("GET", &format!("runs/get?run_id={run}"), None).await;
    assert_eq!(
        r["run"]["data"]["metrics"][0]["step"], 249,
        "latest is the largest step"
    );
    let v = a
        .ok(
            "GET",
            &format!("metrics/get-history?run_id={run}&metric_key=none"),
            None,
        )
        .await;
    assert_eq!(v, json!({}));
}

/// Points logged before the narrow metric key (migration 0002) read back the same after it,
/// on either backend; new points extend the same series.
#[tokio::test]
async fn metric_points_from_the_old_schema_survive_migration_0002() {
    let t = TestDatabase::new();
    let db = t.database();
    db.migrate("tracking", &loopml_tracking::MIGRATIONS[..1])
        .unwrap();
    let run = "0123456789abcdef0123456789abcdef";
    db.write(move |c| -> Result<(), loopml_store::StoreError> {
        c.execute(
            "INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time, \
             artifact_uri) VALUES (?, 0, 'old', 'u', 'RUNNING', 1, 'file:///tmp/x')",
            &[run.into()],
        )?;
        for (key, ts, step, value, nan) in [
            ("loss", 10i64, 0i64, 0.5f64, false),
            ("loss", 11, 1, 0.25, false),
            ("loss", 12, 2, 0.0, true),
            ("acc", 10, 0, 0.9, false),
        ] {
            c.execute(
                "INSERT INTO metrics (run_uuid, key, timestamp, step, value, is_nan) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    run.into(),
                    key.into(),
                    ts.into(),
                    step.into(),
                    value.into(),
                    nan.into(),
                ],
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let art = loopml_store::testing::test_artifact_store(&t.dir());
    let a = App {
        router: router(TrackingService::new(db, art).unwrap()),
        _db: t,
    };
    a.ok(
        "POST",
        "runs/log-metric",
        Some(json!({"run_id": run, "key": "loss", "value": 0.125, "timestamp": 13, "step": 3})),
    )
    .await;
    let v = a
        .ok(
            "GET",
            &format!("metrics/get-history?run_id={run}&metric_key=loss"),
            None,
        )
        .await;
    let got: Vec<(i64, String)> = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "0.5".to_string()),
            (1, "0.25".to_string()),
            (2, "\"NaN\"".to_string()),
            (3, "0.125".to_string())
        ]
    );
    let v = a
        .ok(
            "GET",
            &format!("metrics/get-history?run_id={run}&metric_key=acc"),
            None,
        )
        .await;
    assert_eq!(v["metrics"].as_array().unwrap().len(), 1);
}

/// Latest values written before migration 0003 (a separate `latest_metrics` table) move into
/// the series rows: runs/get and metric searches answer the same after it, a series with points
/// but no latest row gets its newest point, and later points still only move forward.
#[tokio::test]
async fn latest_values_survive_migration_0003() {
    let t = TestDatabase::new();
    let db = t.database();
    db.migrate("tracking", &loopml_tracking::MIGRATIONS[..2])
        .unwrap();
    let run = "0123456789abcdef0123456789abcdef";
    db.write(move |c| -> Result<(), loopml_store::StoreError> {
        c.execute(
            "INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time, \
             artifact_uri) VALUES (?, 0, 'old', 'u', 'RUNNING', 1, 'file:///tmp/x')",
            &[run.into()],
        )?;
        c.execute(
            "INSERT INTO metric_series (series_id, run_uuid, key) VALUES (1, ?, 'loss'), \
             (2, ?, 'acc')",
            &[run.into(), run.into()],
        )?;
        c.execute(
            "INSERT INTO metric_points (series_id, timestamp, step, value, is_nan) VALUES \
             (1, 10, 0, 0.5, 0), (1, 11, 5, 0.25, 0), (2, 10, 0, 0.9, 0), (2, 12, 1, 0.8, 0)",
            &[],
        )?;
        // Only loss has a latest row (as every released version wrote it); acc has none.
        c.execute(
            "INSERT INTO latest_metrics (run_uuid, key, value, timestamp, step, is_nan) \
             VALUES (?, 'loss', 0.25, 11, 5, 0)",
            &[run.into()],
        )?;
        Ok(())
    })
    .await
    .unwrap();
    let art = loopml_store::testing::test_artifact_store(&t.dir());
    let a = App {
        router: router(TrackingService::new(db, art).unwrap()),
        _db: t,
    };
    let latest = |v: &Value| -> Vec<(String, f64, i64)> {
        let mut m: Vec<(String, f64, i64)> = v["run"]["data"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["key"].as_str().unwrap().to_string(),
                    m["value"].as_f64().unwrap(),
                    m["step"].as_i64().unwrap(),
                )
            })
            .collect();
        m.sort_by(|a, b| a.0.cmp(&b.0));
        m
    };
    let v = a.ok("GET", &format!("runs/get?run_id={run}"), None).await;
    assert_eq!(
        latest(&v),
        vec![("acc".into(), 0.8, 1), ("loss".into(), 0.25, 5)]
    );
    // An older point leaves the latest alone; a newer one moves it.
    a.ok(
        "POST",
        "runs/log-batch",
        Some(json!({"run_id": run, "metrics": [
            {"key": "loss", "value": 9.0, "timestamp": 99, "step": 4},
            {"key": "acc", "value": 0.95, "timestamp": 13, "step": 2}
        ]})),
    )
    .await;
    let v = a.ok("GET", &format!("runs/get?run_id={run}"), None).await;
    assert_eq!(
        latest(&v),
        vec![("acc".into(), 0.95, 2), ("loss".into(), 0.25, 5)]
    );
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "filter": "metrics.acc > 0.9 and metrics.loss < 0.3"})),
        )
        .await;
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(1), "{v}");
}

/// Every run ids page of `body` (page size 2), following page tokens to the end.
async fn all_pages(a: &App, mut body: Value) -> Vec<String> {
    body["max_results"] = json!(2);
    let mut out = Vec::new();
    loop {
        let v = a.ok("POST", "runs/search", Some(body.clone())).await;
        let page = v["runs"].as_array().cloned().unwrap_or_default();
        assert!(page.len() <= 2, "{v}");
        out.extend(
            page.iter()
                .map(|r| r["info"]["run_id"].as_str().unwrap().to_string()),
        );
        match v["next_page_token"].as_str() {
            Some(t) => body["page_token"] = json!(t),
            None => return out,
        }
        assert!(out.len() < 100, "paging does not end");
    }
}

/// Keyset page tokens: for every kind of order_by (metric with NaN, ±inf, ties and missing
/// values; param; tag; attribute with NULLs; the default), the pages together are exactly the
/// one-page answer; a run created between two pages does not shift later pages; MLflow's offset
/// tokens still work; a token from another order_by is refused with MLflow's error.
#[tokio::test]
async fn search_runs_keyset_pages_match_one_page() {
    let a = app();
    let values = [
        Some(json!(0.5)),
        Some(json!("NaN")),
        Some(json!(0.5)),
        None,
        Some(json!("-Infinity")),
        Some(json!("Infinity")),
        Some(json!(0.25)),
        None,
        Some(json!(0.5)),
    ];
    for (i, value) in values.iter().enumerate() {
        let v = a
            .ok(
                "POST",
                "runs/create",
                Some(json!({"experiment_id": "0", "start_time": (i % 3) as i64})),
            )
            .await;
        let run = v["run"]["info"]["run_id"].as_str().unwrap().to_string();
        let metrics: Vec<Value> = value
            .iter()
            .map(|v| json!({"key": "m", "value": v, "timestamp": 1, "step": 0}))
            .collect();
        let params: Vec<Value> = (i % 4 != 0)
            .then(|| json!({"key": "p", "value": format!("v{}", i % 3)}))
            .into_iter()
            .collect();
        a.ok(
            "POST",
            "runs/log-batch",
            Some(json!({"run_id": run, "metrics": metrics, "params": params,
                "tags": [{"key": "t", "value": if i % 2 == 0 { "a" } else { "b" }}]})),
        )
        .await;
        if i % 2 == 0 {
            a.ok(
                "POST",
                "runs/update",
                Some(json!({"run_id": run, "status": "FINISHED", "end_time": 100 - i as i64})),
            )
            .await;
        }
    }
    let orders: Vec<Vec<&str>> = vec![
        vec![],
        vec!["metrics.m DESC"],
        vec!["metrics.m ASC"],
        vec!["params.p ASC", "metrics.m DESC"],
        vec!["tags.t DESC"],
        vec!["attributes.end_time ASC"],
        vec!["attributes.run_name DESC"],
    ];
    for order in &orders {
        let body = json!({"experiment_ids": ["0"], "order_by": order});
        let one = a.ok("POST", "runs/search", Some(body.clone())).await;
        let expected: Vec<String> = one["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["info"]["run_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(expected.len(), values.len());
        assert_eq!(all_pages(&a, body).await, expected, "order_by {order:?}");
    }

    // A run created after page 1 (it sorts first: latest start time) does not move page 2.
    let body = json!({"experiment_ids": ["0"], "max_results": 2});
    let first = a.ok("POST", "runs/search", Some(body.clone())).await;
    let token = first["next_page_token"].as_str().unwrap().to_string();
    let before = a
        .ok(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "max_results": 2, "page_token": token})),
        )
        .await;
    a.ok(
        "POST",
        "runs/create",
        Some(json!({"experiment_id": "0", "start_time": 50})),
    )
    .await;
    let after = a
        .ok(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "max_results": 2, "page_token": token})),
        )
        .await;
    assert_eq!(before["runs"], after["runs"]);

    // MLflow's offset token: skip that many.
    let offset = base64::engine::general_purpose::STANDARD.encode(r#"{"offset": 8}"#);
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "page_token": offset})),
        )
        .await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);

    // A token of another order_by, and garbage.
    let (s, v) = a
        .call(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "order_by": ["metrics.m DESC"], "page_token": token})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "INVALID_PARAMETER_VALUE");
    let bad = base64::engine::general_purpose::STANDARD.encode(r#"{"after": [{"x": 1}]}"#);
    let (s, v) = a
        .call(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "page_token": bad})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn search_runs_grammar_order_and_paging() {
    let a = app();
    let mut ids = Vec::new();
    for i in 0..5 {
        let run = a.new_run("0").await;
        let mut metrics =
            vec![json!({"key": "acc", "value": i as f64 / 10.0, "timestamp": 1, "step": 0})];
        if i == 4 {
            metrics.clear(); // run 4 has no acc: sorts last
        }
        a.ok(
            "POST",
            "runs/log-batch",
            Some(json!({"run_id": run, "metrics": metrics,
                "params": [{"key": "lr", "value": if i % 2 == 0 { "0.1" } else { "0.2" }}],
                "tags": [{"key": "team", "value": if i < 2 { "Vision" } else { "nlp" }}]})),
        )
        .await;
        ids.push(run);
    }
    let search = |filter: &str, order: Vec<&str>, max: i64, token: Option<&str>| {
        let mut b = json!({"experiment_ids": ["0"], "filter": filter, "order_by": order, "max_results": max});
        if let Some(t) = token {
            b["page_token"] = json!(t);
        }
        b
    };
    let ids_of = |v: &Value| -> Vec<String> {
        v["runs"].as_array().map_or(vec![], |r| {
            r.iter()
                .map(|x| x["info"]["run_id"].as_str().unwrap().to_string())
                .collect()
        })
    };
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(search(
                "metrics.acc >= 0.1 AND params.lr = '0.1'",
                vec!["metrics.acc DESC"],
                100,
                None,
            )),
        )
        .await;
    assert_eq!(ids_of(&v), vec![ids[2].clone()]);
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(search("tags.team LIKE 'vis%'", vec![], 100, None)),
        )
        .await;
    assert!(ids_of(&v).is_empty(), "LIKE is case-sensitive");
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(search("tags.team ILIKE 'vis%'", vec![], 100, None)),
        )
        .await;
    assert_eq!(ids_of(&v).len(), 2);
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(search(
                &format!("attributes.run_id IN ('{}', '{}')", ids[0], ids[3]),
                vec![],
                100,
                None,
            )),
        )
        .await;
    assert_eq!(ids_of(&v).len(), 2);
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(search("tags.team IS NULL", vec![], 100, None)),
        )
        .await;
    assert_eq!(v, json!({}), "every run has a team tag");
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(search(
                "tags.nothere IS NULL AND tags.team IS NOT NULL",
                vec![],
                100,
                None,
            )),
        )
        .await;
    assert_eq!(ids_of(&v).len(), 5);
    // Order with missing values last, then page through one at a time.
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let v = a
            .ok(
                "POST",
                "runs/search",
                Some(search("", vec!["metrics.acc DESC"], 2, token.as_deref())),
            )
            .await;
        seen.extend(ids_of(&v));
        match v.get("next_page_token").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            ids[3].clone(),
            ids[2].clone(),
            ids[1].clone(),
            ids[0].clone(),
            ids[4].clone()
        ]
    );
    for bad in [
        "metrics.acc > 1 OR metrics.acc < 0",
        "metrics.acc = 'abc'",
        "params.lr > 1",
        "foo.bar = 1",
        "params.lr IN ('a')",
    ] {
        let (s, v) = a
            .call("POST", "runs/search", Some(search(bad, vec![], 10, None)))
            .await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            "{bad}"
        );
    }
    let (s, _) = a
        .call("POST", "runs/search", Some(search("", vec![], 50001, None)))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = a
        .call(
            "POST",
            "runs/search",
            Some(search("", vec![], 10, Some("garbage"))),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deleted_runs_refuse_writes_and_restore() {
    let a = app();
    let run = a.new_run("0").await;
    a.ok("POST", "runs/delete", Some(json!({"run_id": run})))
        .await;
    let (s, v) = a
        .call(
            "POST",
            "runs/log-parameter",
            Some(json!({"run_id": run, "key": "p", "value": "1"})),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
    );
    let v = a
        .ok(
            "POST",
            "runs/search",
            Some(json!({"experiment_ids": ["0"], "run_view_type": "DELETED_ONLY"})),
        )
        .await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    a.ok("POST", "runs/restore", Some(json!({"run_id": run})))
        .await;
    a.ok(
        "POST",
        "runs/update",
        Some(json!({"run_id": run, "run_name": "renamed", "status": "FINISHED", "end_time": 9})),
    )
    .await;
    let r = a.ok("GET", &format!("runs/get?run_id={run}"), None).await;
    assert_eq!(r["run"]["info"]["run_name"], "renamed");
    assert_eq!(r["run"]["info"]["status"], "FINISHED");
    assert!(
        r["run"]["data"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "mlflow.runName" && t["value"] == "renamed")
    );
    let (s, _) = a.call("GET", "runs/get?run_id=doesnotexist", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn artifact_paths_are_confined() {
    let a = app();
    for path in [
        "../etc/passwd",
        "a/../../b",
        "%2Fetc%2Fpasswd",
        "..%2F..%2Fsecret",
    ] {
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))
            .body(Body::from("x"))
            .unwrap();
        let resp = a.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let put = Request::builder()
        .method("PUT")
        .uri("/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/a.txt")
        .body(Body::from("hello"))
        .unwrap();
    assert_eq!(
        a.router.clone().oneshot(put).await.unwrap().status(),
        StatusCode::OK
    );
    let get = Request::builder()
        .uri("/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/a.txt")
        .body(Body::empty())
        .unwrap();
    let resp = a.router.clone().oneshot(get).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"hello");
    let missing = Request::builder()
        .uri("/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/nope.txt")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        a.router.clone().oneshot(missing).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[cfg(unix)]
#[tokio::test]
async fn escaping_symlink_and_ajax_prefix() {
    let a = local_app();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"top secret").unwrap();
    let art = a._db.dir().join("art");
    std::os::unix::fs::symlink(outside.path(), art.join("escape")).unwrap();
    for (method, uri) in [
        (
            "GET",
            "/api/2.0/mlflow-artifacts/artifacts/escape/secret.txt",
        ),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/escape/new.txt"),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=escape"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from("x"))
            .unwrap();
        let resp = a.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method} {uri}");
    }
    assert!(!outside.path().join("new.txt").exists());
    // The UI's /ajax-api prefix serves the same API.
    let req = Request::builder()
        .uri("/ajax-api/2.0/mlflow/experiments/get?experiment_id=0")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        a.router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logged_model_lifecycle() {
    let a = app();
    let run = a.new_run("0").await;
    let v = a
        .ok("POST", "logged-models", Some(json!({"experiment_id": "0", "name": "model", "source_run_id": run,
            "params": [{"key": "C", "value": "1.0"}], "tags": [{"key": "mlflow.user", "value": "me"}]})))
        .await;
    let id = v["model"]["info"]["model_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("m-"));
    assert_eq!(v["model"]["info"]["status"], "LOGGED_MODEL_PENDING");
    assert!(
        v["model"]["info"]["artifact_uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/models/{id}/artifacts"))
    );
    // A source run this server does not hold is recorded as given, as mlflow server does.
    let elsewhere = "fedcba9876543210fedcba9876543210";
    let v = a
        .ok(
            "POST",
            "logged-models",
            Some(json!({"experiment_id": "0", "name": "other", "source_run_id": elsewhere})),
        )
        .await;
    assert_eq!(v["model"]["info"]["source_run_id"], elsewhere);
    let (s, _) = a
        .call(
            "POST",
            "logged-models",
            Some(json!({"experiment_id": "0", "name": "a/b"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    a.ok("POST", "runs/log-batch", Some(json!({"run_id": run, "metrics": [{"key": "acc", "value": 0.9, "timestamp": 1, "step": 0, "model_id": id}]}))).await;
    let v = a
        .ok(
            "PATCH",
            &format!("logged-models/{id}"),
            Some(json!({"model_id": id, "status": "LOGGED_MODEL_READY"})),
        )
        .await;
    assert_eq!(v["model"]["info"]["status"], "LOGGED_MODEL_READY");
    assert_eq!(v["model"]["data"]["metrics"][0]["key"], "acc");
    a.ok(
        "PATCH",
        &format!("logged-models/{id}/tags"),
        Some(json!({"tags": [{"key": "lt", "value": "1"}]})),
    )
    .await;
    let v = a.ok("POST", "logged-models/search", Some(json!({"experiment_ids": ["0"], "filter": "name = 'model' AND metrics.acc > 0.5", "order_by": [{"field_name": "creation_timestamp", "ascending": false}]}))).await;
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    a.ok("DELETE", &format!("logged-models/{id}/tags/lt"), None)
        .await;
    a.ok(
        "DELETE",
        &format!("logged-models/{id}"),
        Some(json!({"model_id": id})),
    )
    .await;
    let (s, v) = a.call("GET", &format!("logged-models/{id}"), None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
    );
}
