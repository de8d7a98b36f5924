//! Monitors end to end: the real binary serves a deployment, predictions flow into the inference
//! log, a monitor compares windows with a reference dataset version (feature and prediction drift,
//! performance from feedback), results are kept as a time series and exported to `/metrics`, and
//! alerts reach a webhook that was down when they were raised.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{free_port, http, ort_available, start};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn cli(port: u16, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Deterministic pseudo-normal numbers (sum of uniforms from an LCG).
struct Gen(u64);

impl Gen {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

const COLS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
const MEAN: [f64; 4] = [5.8, 3.0, 3.8, 1.2];

fn rows(g: &mut Gen, n: usize, shift: f64) -> Vec<[f64; 4]> {
    (0..n)
        .map(|_| {
            let mut r = [0.0; 4];
            for (j, v) in r.iter_mut().enumerate() {
                *v = ((MEAN[j] + shift * 2.0 + 0.5 * g.normal()) * 100.0).round() / 100.0;
            }
            r
        })
        .collect()
}

/// Sends rows one request each; labels each with `truth(predicted label)` as feedback.
fn send(port: u16, rows: &[[f64; 4]], truth: impl Fn(i64) -> i64) {
    let mut feedback = Vec::new();
    for r in rows {
        let body = json!({"dataframe_split": {"columns": COLS, "data": [r]}}).to_string();
        let reply = http(port, "POST", "/invocations?model=watched", &[], &body);
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let v = reply.json();
        let label = v["predictions"][0]["label"].as_i64().unwrap();
        feedback.push(json!({
            "request_id": reply.headers["x-loopml-request-id"],
            "truth": truth(label).to_string(),
        }));
    }
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/deployments/watched/feedback",
        &[],
        &json!({"feedback": feedback}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// A webhook receiver on `port`, started later (it is down until then).
fn webhook(port: u16, got: Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= h + 4 + len {
                        break Some(buf[h + 4..h + 4 + len].to_vec());
                    }
                }
            };
            if let Some(b) = body {
                got.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&b).unwrap());
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
}

fn checks(eval: &Value) -> HashMap<String, String> {
    eval["evaluation"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["check"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn monitors_catch_drift_and_bad_performance_and_alerts_survive_a_down_webhook() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../loopml-serving/tests/fixtures/sk_rf_classifier.onnx");
    let dep = dir.path().join("watched.yaml");
    std::fs::write(
        &dep,
        format!(
            "name: watched\nvariants:\n  - {{name: main, model: '{}'}}\npolicy: {{strategy: single}}\n",
            model.display()
        ),
    )
    .unwrap();
    let server = start(&dir.path().join("data"), &[dep]);
    let port = server.port;
    let mut g = Gen(7);

    // The reference: training-like data as a dataset version.
    let reference = dir.path().join("reference.csv");
    let mut csv = format!("{},species\n", COLS.join(","));
    for r in rows(&mut g, 600, 0.0) {
        csv.push_str(&format!("{},{},{},{},x\n", r[0], r[1], r[2], r[3]));
    }
    std::fs::write(&reference, csv).unwrap();
    let (code, out, err) = cli(
        port,
        &[
            "data",
            "add",
            "--name",
            "iris-ref",
            reference.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // Bad monitors are refused with MLflow-shaped errors.
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/monitors",
        &[],
        "name: m\ndeployment: watched\nreference: nope@1\nchecks: [{feature_drift: {}}]\n",
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error_code"], "RESOURCE_DOES_NOT_EXIST");
    assert!(r.json()["message"].as_str().unwrap().contains("nope"));
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/monitors",
        &[],
        "name: m\ndeployment: watched\nreference: iris-ref\nchecks: []\n",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_code"], "INVALID_PARAMETER_VALUE");
    assert_eq!(
        http(port, "GET", "/api/2.0/loopml/monitors/none", &[], "").status,
        404
    );
    assert_eq!(
        http(port, "GET", "/api/2.0/loopml/alerts?status=lost", &[], "").status,
        400
    );

    let hook_port = free_port();
    let monitor = format!(
        "name: iris-health\ndeployment: watched\nreference: iris-ref@1\ntarget: species\n\
         window: {{rows: 200}}\nmin_rows: 100\nchecks:\n  - feature_drift: {{drift_share: 0.5}}\n\
         \x20 - prediction_drift: {{column: out_label}}\n\
         \x20 - performance: {{metric: accuracy, prediction: out_label, min: 0.8}}\n\
         alerts:\n  webhooks: ['http://127.0.0.1:{hook_port}/alerts']\n"
    );
    let r = http(port, "POST", "/api/2.0/loopml/monitors", &[], &monitor);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Too few predictions: insufficient, not a false alarm.
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/monitors/iris-health/evaluate",
        &[],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        checks(&r.json()).values().all(|s| s == "insufficient"),
        "{}",
        r.json()
    );

    // Healthy traffic, labelled correctly: every check passes.
    send(port, &rows(&mut g, 200, 0.0), |l| l);
    let r = http(
        port,
        "POST",
        "/api/2.0/loopml/monitors/iris-health/evaluate",
        &[],
        "{}",
    );
    let healthy = r.json();
    assert_eq!(healthy["evaluation"]["rows"], 200, "{healthy}");
    assert_eq!(healthy["evaluation"]["labelled_rows"], 200, "{healthy}");
    let c = checks(&healthy);
    assert_eq!(c["feature_drift"], "ok", "{healthy}");
    assert_eq!(c["prediction_drift"], "ok", "{healthy}");
    assert_eq!(c["performance_accuracy"], "ok", "{healthy}");
    assert!(healthy["alerts"].as_array().unwrap().is_empty());

    // Shifted traffic whose labels disagree with the model: drift and bad accuracy.
    send(port, &rows(&mut g, 200, 1.0), |l| 1 - l.min(1));
    let (code, out, err) = cli(port, &["monitor", "evaluate", "iris-health"]);
    assert_eq!(code, 1, "breached checks exit 1: {out}{err}");
    assert!(
        out.contains("feature_drift") && out.contains("breach"),
        "{out}"
    );
    assert!(out.contains("ALERT"), "{out}");
    let alerts = http(
        port,
        "GET",
        "/api/2.0/loopml/alerts?monitor=iris-health",
        &[],
        "",
    )
    .json();
    let alerts = alerts["alerts"].as_array().unwrap().clone();
    let raised: Vec<&str> = alerts
        .iter()
        .map(|a| a["check"].as_str().unwrap())
        .collect();
    assert!(
        raised.contains(&"feature_drift") && raised.contains(&"performance_accuracy"),
        "{raised:?}"
    );

    // The webhook is down: alerts stay pending with the error; once it is up they arrive.
    let t0 = Instant::now();
    loop {
        let a = http(
            port,
            "GET",
            "/api/2.0/loopml/alerts?monitor=iris-health",
            &[],
            "",
        )
        .json();
        if a["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["attempts"].as_i64().unwrap() >= 1)
        {
            for x in a["alerts"].as_array().unwrap() {
                assert_eq!(x["status"], "pending", "{x}");
                assert!(x["last_error"].as_str().unwrap().contains("/alerts"), "{x}");
            }
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no delivery attempt: {a}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    webhook(hook_port, Arc::clone(&got));
    let t0 = Instant::now();
    loop {
        let a = http(
            port,
            "GET",
            "/api/2.0/loopml/alerts?monitor=iris-health&status=delivered",
            &[],
            "",
        )
        .json();
        if a["alerts"].as_array().unwrap().len() == alerts.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "alerts not delivered: {a}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        alerts.len(),
        "each alert delivered once: {got:?}"
    );
    assert!(
        got.iter().all(
            |b| b["alert"]["monitor"] == "iris-health" && b["alert"]["deployment"] == "watched"
        )
    );

    // Still breached, but within the cooldown: no new alert. The time series keeps every run.
    let again = http(
        port,
        "POST",
        "/api/2.0/loopml/monitors/iris-health/evaluate",
        &[],
        "{}",
    )
    .json();
    assert_eq!(checks(&again)["feature_drift"], "breach");
    assert!(again["alerts"].as_array().unwrap().is_empty(), "{again}");
    let series = http(
        port,
        "GET",
        "/api/2.0/loopml/monitors/iris-health/results?check=feature_drift",
        &[],
        "",
    )
    .json();
    let statuses: Vec<&str> = series["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["breach", "breach", "ok", "insufficient"],
        "newest first"
    );

    // Gauges on /metrics; status over the CLI.
    let m = String::from_utf8(http(port, "GET", "/metrics", &[], "").body).unwrap();
    assert!(
        m.contains("loopml_monitor_breached{monitor=\"iris-health\",check=\"feature_drift\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("loopml_monitor_breached{monitor=\"iris-health\",check=\"prediction_drift\"}"),
        "{m}"
    );
    assert!(
        m.contains("loopml_inference_requests_total"),
        "serving metrics still there"
    );
    assert_eq!(m.matches("# EOF").count(), 1);
    let (code, out, err) = cli(port, &["monitor", "status", "iris-health"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("performance_accuracy") && out.contains("delivered"),
        "{out}"
    );

    // A check that cannot be evaluated is not a pass: `monitor evaluate` exits 3, and after
    // `error_after` errors in a row the check raises an alert of its own, which never starts
    // the pipeline.
    let broken = "name: broken\ndeployment: watched\nreference: iris-ref@1\ntarget: species\n\
                  window: {rows: 200}\nmin_rows: 100\nchecks:\n\
                  \x20 - performance: {metric: accuracy, prediction: no_such_column, min: 0.8}\n\
                  alerts:\n  error_after: 2\n  cooldown: 1s\n";
    let r = http(port, "POST", "/api/2.0/loopml/monitors", &[], broken);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (code, out, err) = cli(port, &["monitor", "evaluate", "broken"]);
    assert_eq!(code, 3, "an errored check exits 3: {out}{err}");
    assert!(
        out.contains("error") && !out.contains("ALERT"),
        "one error is not yet an alert: {out}"
    );
    let (code, out, err) = cli(port, &["monitor", "evaluate", "broken"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("ALERT"),
        "the second error in a row alerts: {out}"
    );
    let alerts = http(
        port,
        "GET",
        "/api/2.0/loopml/alerts?monitor=broken",
        &[],
        "",
    )
    .json();
    let alerts = alerts["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["payload"]["status"], "error", "{alerts:?}");
    assert!(
        alerts[0]["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be evaluated 2 times in a row"),
        "{alerts:?}"
    );
    assert!(
        alerts[0]["pipeline"]
            .as_str()
            .unwrap()
            .starts_with("not started"),
        "{alerts:?}"
    );

    // An alert that starts a pipeline records how that run ended: a failed step with its
    // reason, a gate's rejection with both scores.
    let suite = dir.path().join("never.yaml");
    std::fs::write(
        &suite,
        "name: never\nexpectations:\n  - expect_column_values_to_be_between: \
         {column: sepal_length, min_value: 100, max_value: 200}\n",
    )
    .unwrap();
    let failing = dir.path().join("failing.yaml");
    std::fs::write(
        &failing,
        "name: failing\nsteps:\n  - {name: boom, run: 'echo the data is bad >&2; exit 4'}\n",
    )
    .unwrap();
    // A champion (version 1) whose run logged m = 0.5 and a challenger (2) with m = 0.1.
    for (i, value) in [0.5, 0.1].into_iter().enumerate() {
        let run = http(
            port,
            "POST",
            "/api/2.0/mlflow/runs/create",
            &[],
            &json!({"experiment_id": "0"}).to_string(),
        )
        .json();
        let rid = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
        let r = http(
            port,
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            &[],
            &json!({"run_id": rid, "key": "m", "value": value, "timestamp": 1}).to_string(),
        );
        assert_eq!(r.status, 200);
        if i == 0 {
            http(
                port,
                "POST",
                "/api/2.0/mlflow/registered-models/create",
                &[],
                r#"{"name": "retrained"}"#,
            );
        }
        let r = http(
            port,
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            &[],
            &json!({"name": "retrained", "source": format!("runs:/{rid}/model"), "run_id": rid})
                .to_string(),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    http(
        port,
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        &[],
        r#"{"name": "retrained", "alias": "champion", "version": "1"}"#,
    );
    let rejecting = dir.path().join("rejecting.yaml");
    std::fs::write(
        &rejecting,
        "name: rejecting\nsteps:\n  - {name: gate, gate: {model: retrained, challenger: '2', metric: m}}\n",
    )
    .unwrap();
    for (name, pipeline, want) in [
        ("fails", &failing, "failed at step `boom`"),
        ("rejects", &rejecting, "rejected by the gate `gate`"),
    ] {
        let spec = format!(
            "name: {name}\ndeployment: watched\nreference: iris-ref@1\ntarget: species\n\
             window: {{rows: 200}}\nmin_rows: 100\nchecks:\n  - data_quality: {{suite: '{}'}}\n\
             alerts:\n  pipeline: {{file: '{}'}}\n",
            suite.display(),
            pipeline.display()
        );
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, spec).unwrap();
        let (code, out, err) = cli(port, &["monitor", "apply", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = cli(port, &["monitor", "evaluate", name]);
        assert_eq!(code, 1, "{out}{err}");
        let t0 = Instant::now();
        let alert = loop {
            let a = http(
                port,
                "GET",
                &format!("/api/2.0/loopml/alerts?monitor={name}"),
                &[],
                "",
            )
            .json();
            let first = a["alerts"][0].clone();
            if first["pipeline_outcome"].is_string() {
                break first;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no outcome recorded: {a}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let outcome = alert["pipeline_outcome"].as_str().unwrap();
        assert!(outcome.starts_with(want), "{alert}");
        assert!(alert["pipeline_run"].is_string(), "{alert}");
        if name == "fails" {
            assert!(outcome.contains("exit"), "the reason is kept: {alert}");
        } else {
            assert!(
                outcome.contains("0.1") && outcome.contains("0.5"),
                "both scores: {alert}"
            );
        }
        let (code, out, _) = cli(port, &["monitor", "status", name]);
        assert_eq!(code, 0);
        assert!(out.contains(want), "status shows the outcome: {out}");
    }
    server.stop();
}
