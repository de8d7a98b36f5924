//! End-to-end deployments: the real binary serves deployment files; traffic splits are checked
//! statistically over HTTP, rollouts (canary rollback, blue-green switch under load, promote),
//! shadow copies, the bandit, the inference log (JSON and Parquet, feedback joined, nothing lost
//! on graceful shutdown) and `/metrics`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{Reply, http, ort_available, start};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

const ROW: &str = r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1.140625,2.8125,30.15625,0.734375]}]}"#;

fn infer(port: u16, ep: &str, headers: &[(&str, &str)]) -> Reply {
    http(
        port,
        "POST",
        &format!("/v2/models/{ep}/infer"),
        headers,
        ROW,
    )
}

/// |observed - expected| within 5 standard deviations of a binomial count.
fn near(observed: usize, n: usize, p: f64) -> bool {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (observed as f64 - n as f64 * p).abs() <= 5.0 * sd.max(1.0)
}

fn write_deployments(dir: &Path) -> Vec<PathBuf> {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loopml-serving/tests/fixtures");
    let rf = fx.join("sk_rf_classifier.onnx");
    let xgb = fx.join("xgb_classifier.onnx");
    let gb5 = fx.join("sk_gb_regressor.onnx"); // takes 5 features: 4-feature requests fail
    let two = |a: &Path, b: &Path| {
        format!(
            "variants:\n  - {{name: a, model: '{}'}}\n  - {{name: b, model: '{}'}}\n",
            a.display(),
            b.display()
        )
    };
    let files = [
        (
            "canary",
            format!(
                "name: canary\n{}policy: {{strategy: canary, percent: 20}}\n",
                two(&rf, &xgb)
            ),
        ),
        (
            "ab",
            format!(
                "name: ab\n{}policy: {{strategy: ab, weights: {{a: 1, b: 1}}, key_header: x-user-id}}\n",
                two(&rf, &xgb)
            ),
        ),
        (
            "shadow",
            format!(
                "name: shadow\n{}policy: {{strategy: shadow}}\n",
                two(&rf, &xgb)
            ),
        ),
        (
            "bandit",
            format!(
                "name: bandit\n{}policy: {{strategy: bandit, algorithm: thompson}}\n",
                two(&rf, &xgb)
            ),
        ),
        (
            "bluegreen",
            format!(
                "name: bluegreen\n{}policy: {{strategy: blue_green, active: a}}\n",
                two(&rf, &xgb)
            ),
        ),
        (
            "badcanary",
            format!(
                "name: badcanary\n{}policy: {{strategy: canary, percent: 50, rollback: {{max_error_rate: 0.5, min_requests: 10, window: 20}}}}\n",
                two(&rf, &gb5)
            ),
        ),
    ];
    files
        .iter()
        .map(|(name, text)| {
            let p = dir.join(format!("{name}.yaml"));
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

#[test]
fn deployments_split_traffic_roll_out_log_and_export_metrics() {
    if !ort_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let files = write_deployments(tmp.path());
    let data = tmp.path().join("data");
    let server = start(&data, &files);
    let port = server.port;
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();

    // Canary: 20% to the candidate.
    let n = 1500;
    let mut b = 0;
    for _ in 0..n {
        let r = infer(port, "canary", &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        b += usize::from(r.variant() == "b");
    }
    *sent.entry("canary").or_default() += n;
    assert!(near(b, n, 0.2), "canary sent {b}/{n} to the candidate");
    // Adjusted live.
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/deployments/canary/traffic",
        &[],
        r#"{"percent": 60}"#,
    );
    assert_eq!(r.status, 200);
    let b = (0..600)
        .filter(|_| infer(port, "canary", &[]).variant() == "b")
        .count();
    *sent.entry("canary").or_default() += 600;
    assert!(near(b, 600, 0.6), "after 60%: {b}/600");

    // A/B: sticky per user, even split over users.
    let mut per_user = HashMap::new();
    for u in 0..400 {
        let user = format!("user-{u}");
        for _ in 0..2 {
            let v = infer(port, "ab", &[("x-user-id", &user)]).variant();
            assert_eq!(
                per_user.entry(user.clone()).or_insert_with(|| v.clone()),
                &v,
                "user {user} moved"
            );
        }
    }
    *sent.entry("ab").or_default() += 800;
    let a_users = per_user.values().filter(|v| *v == "a").count();
    assert!(near(a_users, 400, 0.5), "{a_users}/400 users on a");

    // Shadow: callers only see the primary; every request is mirrored and logged.
    let mut ids = Vec::new();
    for _ in 0..30 {
        let r = infer(port, "shadow", &[]);
        assert_eq!(r.variant(), "a");
        assert_eq!(r.json()["model_name"], "shadow.a");
        ids.push(r.headers["x-loopml-request-id"].clone());
    }
    *sent.entry("shadow").or_default() += 30;

    // Bandit: rewarding arm b pulls traffic to it.
    let mut late_b = 0;
    for i in 0..400 {
        let r = infer(port, "bandit", &[]);
        let v = r.variant();
        let reward = if v == "b" { 1.0 } else { 0.0 };
        let id = &r.headers["x-loopml-request-id"];
        let fb = http(
            port,
            "POST",
            "/api/2.0/loopml/deployments/bandit/feedback",
            &[],
            &json!({"request_id": id, "reward": reward}).to_string(),
        );
        assert_eq!(fb.status, 200, "{}", String::from_utf8_lossy(&fb.body));
        if i >= 300 {
            late_b += usize::from(v == "b");
        }
    }
    *sent.entry("bandit").or_default() += 400;
    assert!(
        late_b >= 90,
        "bandit sent only {late_b}/100 late requests to the rewarded arm"
    );

    // Blue-green: switch under load with zero failed requests.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let count = Arc::new(AtomicUsize::new(0));
    let hammer: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failures, count) =
                (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&count));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if infer(port, "bluegreen", &[]).status != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/deployments/bluegreen/switch",
        &[],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["spec"]["policy"]["active"], "b");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for h in hammer {
        h.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    *sent.entry("bluegreen").or_default() += count.load(Ordering::Relaxed);
    assert!((0..20).all(|_| infer(port, "bluegreen", &[]).variant() == "b"));
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/deployments/bluegreen/rollback",
        &[],
        "",
    );
    assert_eq!(r.json()["spec"]["policy"]["active"], "a");
    assert!((0..20).all(|_| infer(port, "bluegreen", &[]).variant() == "a"));
    *sent.entry("bluegreen").or_default() += 40;

    // A failing candidate is rolled back on its own; callers then only reach the stable one.
    for _ in 0..80 {
        infer(port, "badcanary", &[]);
    }
    let st = http(
        port,
        "GET",
        "/api/2.0/loopml/deployments/badcanary",
        &[],
        "",
    )
    .json();
    assert_eq!(st["status"], "rolled_back", "{st}");
    assert!(
        st["rollback_reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{st}"
    );
    assert_eq!(st["spec"]["policy"]["percent"], 0.0);
    assert!((0..30).all(|_| infer(port, "badcanary", &[]).status == 200));

    // Status and promote.
    let st = http(port, "GET", "/api/2.0/loopml/deployments/canary", &[], "").json();
    let total: u64 = st["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2100);
    assert!(st["variants"][0]["p99_latency_ms"].as_f64().unwrap() > 0.0);
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/deployments/canary/promote",
        &[],
        "",
    );
    assert_eq!(r.json()["strategy"], "single");
    assert!((0..20).all(|_| infer(port, "canary", &[]).variant() == "b"));
    *sent.entry("canary").or_default() += 20;

    // The inference log: answered rows with features and outputs, shadow rows apart.
    let log = http(
        port,
        "GET",
        "/api/2.0/loopml/deployments/shadow/log?format=json",
        &[],
        "",
    )
    .json();
    let rows = log["rows"].as_array().unwrap();
    let primary: Vec<&Value> = rows.iter().filter(|r| r["shadow"] == false).collect();
    let mirrored: Vec<&Value> = rows.iter().filter(|r| r["shadow"] == true).collect();
    assert_eq!(primary.len(), 30);
    assert_eq!(mirrored.len(), 30, "{log}");
    assert!(mirrored.iter().all(
        |r| r["variant"] == "b" && ids.contains(&r["request_id"].as_str().unwrap().to_string())
    ));
    let first = primary[0];
    assert_eq!(first["features_0"], 1.140625);
    assert_eq!(first["features_3"], 0.734375);
    assert!(
        first["out_label"].is_i64() && first["out_probabilities_2"].is_f64(),
        "{first}"
    );
    assert_eq!(first["status"], 200);

    // Ground truth joins the log by request id.
    let fb = http(port, "POST", "/api/2.0/loopml/deployments/shadow/feedback", &[], &json!({"feedback": [{"request_id": ids[0], "truth": 2}, {"request_id": ids[1], "truth": "1"}]}).to_string());
    assert_eq!(fb.json()["accepted"], 2);
    assert_eq!(fb.json()["unmatched"], 0, "{}", fb.json());
    let log = http(
        port,
        "GET",
        "/api/2.0/loopml/deployments/shadow/log?format=json&feedback=true&shadow=false",
        &[],
        "",
    )
    .json();
    let truth: HashMap<String, Value> = log["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap().to_string(),
                r["truth"].clone(),
            )
        })
        .collect();
    assert_eq!(truth[&ids[0]], "2");
    assert_eq!(truth[&ids[1]], "1");
    assert_eq!(truth[&ids[2]], Value::Null);

    // Parquet, filtered by variant and time.
    let p = http(
        port,
        "GET",
        "/api/2.0/loopml/deployments/canary/log?variant=b&since=1h",
        &[],
        "",
    );
    assert_eq!(p.status, 200);
    assert_eq!(&p.body[..4], b"PAR1");
    let future = http(
        port,
        "GET",
        "/api/2.0/loopml/deployments/canary/log?format=json&since=2099-01-01T00:00:00Z",
        &[],
        "",
    )
    .json();
    assert_eq!(future["count"], 0);

    // Bad input: clear errors in the loopml shape.
    for (method, path, body, status) in [
        (
            "POST",
            "/api/2.0/loopml/deployments/canary/traffic",
            r#"{"percent": 150}"#,
            400,
        ),
        ("POST", "/api/2.0/loopml/deployments/ab/switch", "", 400),
        ("POST", "/api/2.0/loopml/deployments/nope/rollback", "", 404),
        (
            "POST",
            "/api/2.0/loopml/deployments/bandit/feedback",
            r#"{"request_id": "x", "reward": 3}"#,
            400,
        ),
        (
            "POST",
            "/api/2.0/loopml/deployments/bandit/feedback",
            r#"{"request_id": "never-seen", "reward": 1}"#,
            404,
        ),
        (
            "GET",
            "/api/2.0/loopml/deployments/canary/log?since=yesterday",
            "",
            400,
        ),
        ("GET", "/api/2.0/loopml/deployments/..%2Fx/log", "", 400),
        (
            "POST",
            "/api/2.0/loopml/deployments",
            "name: x\nvariants: [{name: a, model: /etc/passwd}]",
            400,
        ),
        (
            "POST",
            "/api/2.0/loopml/deployments",
            "name: x\nvariants: []",
            400,
        ),
    ] {
        let r = http(port, method, path, &[], body);
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if status != 404 || path.contains("deployments") {
            assert!(r.json()["message"].is_string());
        }
    }

    // Metrics.
    let m = http(port, "GET", "/metrics", &[], "");
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(text.contains("loopml_inference_requests_total{deployment=\"ab\",variant=\"a\",model_version=\"1\",status=\"ok\"}"), "{text}");
    assert!(
        text.contains("loopml_inference_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("loopml_inference_batch_size_count{model=\"shadow.b\""),
        "{text}"
    );
    assert!(
        text.contains("loopml_shadow_requests_total{deployment=\"shadow\",variant=\"b\""),
        "{text}"
    );
    assert!(
        text.contains("loopml_deployment_rollbacks_total{deployment=\"badcanary\"} 1"),
        "{text}"
    );
    assert!(text.contains("loopml_models_loaded 12"), "{text}");
    assert!(text.contains("status=\"client_error\""), "{text}");

    // Graceful shutdown writes every record: after a restart the log holds them all.
    server.stop();
    let server = start(&data, &files);
    for (dep, n) in sent {
        let log = http(
            server.port,
            "GET",
            &format!("/api/2.0/loopml/deployments/{dep}/log?format=json&shadow=false"),
            &[],
            "",
        )
        .json();
        assert_eq!(log["count"].as_u64().unwrap() as usize, n, "{dep}");
    }
}
