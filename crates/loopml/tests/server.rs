//! End-to-end: start the real `loopml` binary on a free port and talk HTTP to it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> (Server, Duration) {
    let port = free_port();
    let t0 = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopml"));
    cmd.args(["server", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let server = Server { child, port };
    loop {
        if let Ok((200, body)) = http(port, "GET", "/health", None) {
            assert_eq!(body, "OK");
            return (server, t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `loopml db copy` refuses what it cannot do, naming why, with exit 2 and nothing written;
/// `loopml db migrate` creates and lists the schema of an embedded database.
#[test]
fn bad_artifact_destinations_and_redis_urls_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (flag, value, says) in [
        (
            "--artifacts-destination",
            "ftp://host/x",
            "unsupported scheme 'ftp'",
        ),
        ("--artifacts-destination", "s3://bucket/../up", "'..'"),
        (
            "--artifacts-destination",
            "s3:///nobucket",
            "names no bucket",
        ),
        ("--redis-url", "http://not-redis", "invalid --redis-url"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
            .args(["server", "--port", "0", "--data-dir", data, flag, value])
            .env_remove("LOOPML_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn db_commands_refuse_bad_input_and_migrate_lists_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loopml.db");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let missing = dir.path().join("nothing.db");
    let db_s = db.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "db",
                "copy",
                "--from",
                missing.to_str().unwrap(),
                "--to",
                "postgres://db/x",
            ],
            "no such SQLite file",
        ),
        (
            vec![
                "db",
                "copy",
                "--from",
                "postgres://db/x",
                "--to",
                "postgres://db/y",
            ],
            "--from must be a SQLite database",
        ),
        (
            vec![
                "db",
                "copy",
                "--from",
                db_s,
                "--to",
                "sqlite:///tmp/other.db",
            ],
            "--to must be a PostgreSQL database",
        ),
        (
            vec!["db", "copy", "--from", db_s, "--to", "mysql://db/x"],
            "unsupported database URL scheme",
        ),
        (
            vec![
                "db",
                "migrate",
                "--database-url",
                "postgres://db:notaport/x",
            ],
            "invalid PostgreSQL URL",
        ),
    ] {
        if args.contains(&db_s) {
            std::fs::write(&db, b"").unwrap(); // the file exists (copy checks --to next)
        }
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!missing.exists(), "a refused copy created its source");
    std::fs::remove_file(&db).unwrap();
    let url = format!("sqlite://{db_s}");
    let (code, out, err) = run(&["db", "migrate", "--database-url", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("new)"), "{out}");
    for domain in [
        "store", "data", "tracking", "registry", "serving", "monitor",
    ] {
        assert!(
            out.contains(&format!("  {domain} ")),
            "{domain} missing: {out}"
        );
    }
    assert!(out.contains("0002_metric_series"), "{out}");
    // Again: nothing new.
    let (code, out, _) = run(&["db", "migrate", "--database-url", &url]);
    assert_eq!(code, Some(0));
    assert!(out.contains("(0 new)"), "{out}");
}

#[test]
fn a_bad_database_url_is_refused_at_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (url, says) in [
        (
            "mysql://db/loopml",
            "unsupported database URL scheme 'mysql://'",
        ),
        ("postgres://db:notaport/loopml", "invalid PostgreSQL URL"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
            .args(["server", "--port", "0", "--data-dir"])
            .arg(dir.path())
            .args(["--database-url", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{url}: {err}");
    }
}

#[test]
fn starts_fast_and_serves_default_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, took) = start(dir.path(), &[]);
    assert!(took < Duration::from_secs(2), "start-up took {took:?}");
    let (status, body) = http(
        srv.port,
        "GET",
        "/api/2.0/mlflow/experiments/get?experiment_id=0",
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"name\":\"Default\""), "{body}");
    // Readiness follows the database (up here); liveness is /health above.
    assert_eq!(
        http(srv.port, "GET", "/ready", None).unwrap(),
        (200, "OK".into())
    );
    let (status, body) = http(srv.port, "GET", "/api/2.0/mlflow/no-such-endpoint", None).unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("ENDPOINT_NOT_FOUND"), "{body}");
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: abc123\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.to_ascii_lowercase().contains("x-request-id: abc123"),
        "{raw}"
    );
    assert!(dir.path().join("loopml.db").exists());
    assert!(dir.path().join("artifacts").is_dir());
}

/// SIGTERM drains: readiness fails at once while requests are still answered for the
/// shutdown delay, then the process exits cleanly; nothing acknowledged is lost.
#[test]
fn sigterm_fails_readiness_first_then_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _) = start(dir.path(), &[("LOOPML_SHUTDOWN_DELAY", "1.5")]);
    let (status, body) = http(
        srv.port,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(r#"{"name":"before-sigterm"}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let pid = srv.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    // Draining: /ready says so, /health and the API still answer.
    let mut saw_draining = false;
    while t0.elapsed() < Duration::from_millis(1200) {
        if let Ok((503, body)) = http(srv.port, "GET", "/ready", None) {
            assert!(body.contains("shutting down"), "{body}");
            saw_draining = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw_draining, "/ready did not turn 503 on SIGTERM");
    assert_eq!(http(srv.port, "GET", "/health", None).unwrap().0, 200);
    let (status, body) = http(
        srv.port,
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=before-sigterm",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "still serving while draining: {body}");
    let st = loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "exit status {st}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "exited before the shutdown delay: {:?}",
        t0.elapsed()
    );
    // Stopped for good: the port is closed, and the write is there after a restart.
    assert!(http(srv.port, "GET", "/health", None).is_err());
    let (srv2, _) = start(dir.path(), &[]);
    let (status, _) = http(
        srv2.port,
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=before-sigterm",
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
}

#[test]
fn flags_beat_env_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("loopml.toml");
    std::fs::write(
        &cfg,
        "[server]\nport = 1111\nhost = \"127.0.0.1\"\ndurability = \"full\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(["config", "--port", "2222", "--config"])
        .arg(&cfg)
        .env("LOOPML_PORT", "3333")
        .env("LOOPML_DATA_DIR", "/tmp/from-env")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("port        = 2222"), "{text}");
    assert!(text.contains("data_dir    = /tmp/from-env"), "{text}");
    assert!(text.contains("durability  = Full"), "{text}");
    std::fs::write(&cfg, "[server]\nprot = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(["config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "unknown keys in loopml.toml are rejected"
    );
}

#[test]
fn acknowledged_batches_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _) = start(dir.path(), &[]);
    let port = srv.port;
    let (_, body) = http(
        port,
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(r#"{"experiment_id":"0"}"#),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run = v["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, run) = (stop.clone(), run.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let metrics: Vec<String> = (0..20)
                    .map(|j| format!(r#"{{"key":"k{j}","value":{i},"timestamp":{i},"step":{i}}}"#))
                    .collect();
                let body = format!(r#"{{"run_id":"{run}","metrics":[{}]}}"#, metrics.join(","));
                match http(port, "POST", "/api/2.0/mlflow/runs/log-batch", Some(&body)) {
                    Ok((200, _)) => acked.push(i),
                    _ => break,
                }
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    // SIGKILL: no chance to flush or shut down cleanly.
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(
        acked.len() > 10,
        "only {} batches were acknowledged",
        acked.len()
    );
    let (srv2, _) = start(dir.path(), &[]);
    for key in ["k0", "k19"] {
        let (status, body) = http(
            srv2.port,
            "GET",
            &format!("/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key={key}"),
            None,
        )
        .unwrap();
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let steps: std::collections::HashSet<i64> = v["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["step"].as_i64().unwrap())
            .collect();
        for i in &acked {
            assert!(
                steps.contains(&(*i as i64)),
                "acknowledged batch {i} lost for {key}"
            );
        }
    }
}

fn cli(port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn data_commands_add_list_show_get() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = start(&dir.path().join("data"), &[]);
    let csv = dir.path().join("train.csv");
    std::fs::write(&csv, "age,city\n31,Paris\n45,Rome\n27,Paris\n").unwrap();
    let file = csv.to_str().unwrap();
    let (ok, out, err) = cli(srv.port, &["data", "add", file, "--name", "churn"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("churn@1  sha256:"), "{out}");
    assert!(out.contains("3 rows × 2 columns"), "{out}");
    // The same bytes again are the same version.
    let (_, again, _) = cli(srv.port, &["data", "add", file, "--name", "churn"]);
    assert!(again.starts_with("churn@1 "), "{again}");
    std::fs::write(&csv, "age,city\n31,Paris\n45,Rome\n").unwrap();
    let (_, v2, _) = cli(srv.port, &["data", "add", file, "--name", "churn"]);
    assert!(v2.starts_with("churn@2 "), "{v2}");

    let (ok, list, _) = cli(srv.port, &["data", "list"]);
    assert!(
        ok && list.contains("churn@2") && list.contains("churn@1"),
        "{list}"
    );
    let (ok, show, _) = cli(srv.port, &["data", "show", "churn@1"]);
    assert!(
        ok && show.contains("age") && show.contains("Paris (2)"),
        "{show}"
    );
    let (ok, json, _) = cli(srv.port, &["data", "show", "churn@1", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["profile"]["columns"][0]["numeric"]["max"], 45.0);

    let out_file = dir.path().join("copy.csv");
    let (ok, _, err) = cli(
        srv.port,
        &["data", "get", "churn@1", "-o", out_file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "age,city\n31,Paris\n45,Rome\n27,Paris\n"
    );

    // Bad input: a clear error, nothing stored.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let (ok, _, err) = cli(
        srv.port,
        &["data", "add", empty.to_str().unwrap(), "--name", "x"],
    );
    assert!(!ok && err.contains("empty"), "{err}");
    let (ok, _, err) = cli(srv.port, &["data", "show", "nope@1"]);
    assert!(!ok && err.contains("RESOURCE_DOES_NOT_EXIST"), "{err}");
    let (ok, _, err) = cli(srv.port, &["data", "add", file, "--name", "../evil"]);
    assert!(!ok && err.contains("invalid dataset name"), "{err}");
}

#[test]
fn data_drift_validate_and_suggest_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, shift: f64| {
        let mut body = String::from("amount,plan\n");
        for i in 0..400 {
            let x = ((i * 37) % 100) as f64 + shift;
            body.push_str(&format!("{x},{}\n", ["basic", "pro"][i % 2]));
        }
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let r = write("ref.csv", 0.0);
    let same = write("same.csv", 0.0);
    let shifted = write("cur.csv", 60.0);
    let bin = env!("CARGO_BIN_EXE_loopml");
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();

    let ok = run(&[
        "data",
        "drift",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        same.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let html = dir.path().join("drift.html");
    let out = run(&[
        "data",
        "drift",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        shifted.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "dataset drift exits 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("K-S p_value") && text.contains("DRIFT"),
        "{text}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<svg") && page.contains("amount")
    );

    let suite = dir.path().join("suite.yaml");
    let suggested = run(&["data", "suggest", r.to_str().unwrap()]);
    assert!(suggested.status.success());
    std::fs::write(&suite, &suggested.stdout).unwrap();
    let good = run(&[
        "data",
        "validate",
        same.to_str().unwrap(),
        "--suite",
        suite.to_str().unwrap(),
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    let json = dir.path().join("v.json");
    let bad = run(&[
        "data",
        "validate",
        shifted.to_str().unwrap(),
        "--suite",
        suite.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["success"], false);
    let missing = run(&[
        "data",
        "drift",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        "nope.csv",
    ]);
    assert_eq!(
        missing.status.code(),
        Some(2),
        "errors exit 2, drift exits 1"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.csv"));
    let bad_spec = run(&[
        "data",
        "drift",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        same.to_str().unwrap(),
        "--column-method",
        "amount",
    ]);
    assert_eq!(bad_spec.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_spec.stderr).contains("COLUMN=VALUE"));
    let per_column = run(&[
        "data",
        "drift",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        shifted.to_str().unwrap(),
        "--column-method",
        "amount=psi",
        "--column-threshold",
        "amount=100",
    ]);
    let text = String::from_utf8_lossy(&per_column.stdout);
    assert!(text.contains("PSI"), "{text}");
}

#[test]
fn checks_of_stored_versions_run_on_the_server_and_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = start(&dir.path().join("data"), &[]);
    let p = |name: &str, body: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, body).unwrap();
        f.to_str().unwrap().to_string()
    };
    let r = p("r.csv", "id,amount,plan\n1,10,a\n2,20,b\n3,30,a\n4,40,c\n");
    let c = p("c.csv", "id,amount,plan\n1,100,a\n2,200,z\n3,300,a\n4,,c\n");
    let plans = p("plans.csv", "plan\na\nb\nc\n");
    for (file, name) in [(&r, "sales"), (&c, "sales"), (&plans, "plans")] {
        let (ok, _, err) = cli(srv.port, &["data", "add", file, "--name", name]);
        assert!(ok, "{err}");
    }
    let suite = p(
        "suite.yaml",
        "name: sales\nexpectations:\n  \
         - expect_column_values_to_not_be_null: {column: amount}\n  \
         - expect_column_values_to_be_in_set: {column: plan, value_set_from: {dataset: plans@1, column: plan}}\n",
    );
    let html = dir.path().join("v.html");
    let (ok, out, err) = cli(
        srv.port,
        &[
            "data",
            "validate",
            "sales@1",
            "--suite",
            &suite,
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("stored as check 1 of sales@1"), "{out}");
    assert!(std::fs::read_to_string(&html).unwrap().contains("Passed"));
    let (ok, out, _) = cli(
        srv.port,
        &["data", "validate", "sales@2", "--suite", &suite],
    );
    assert!(
        !ok && out.contains("✗ expect_column_values_to_be_in_set plan"),
        "{out}"
    );
    let json = dir.path().join("d.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args([
            "data",
            "drift",
            "--reference",
            "sales@1",
            "--current",
            "sales@2",
        ])
        .args(["--json", json.to_str().unwrap()])
        .args(["--server", &format!("http://127.0.0.1:{}", srv.port)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "dataset drift exits 1");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["reference"], "sales@1");
    assert_eq!(report["current"], "sales@2");

    let (ok, diff, err) = cli(srv.port, &["data", "diff", "sales@1", "sales@2"]);
    assert!(ok, "{err}");
    assert!(diff.starts_with("sales@1 → sales@2\nrows: 4 → 4"), "{diff}");
    assert!(diff.contains("amount"), "{diff}");

    // The version's history of checks, newest first, and each one reopened.
    let (status, body) = http(
        srv.port,
        "GET",
        "/api/2.0/loopml/datasets/sales@2/checks",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = list["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["drift", "validation"]);
    assert_eq!(list["checks"][0]["against"], "sales@1");
    assert_eq!(list["checks"][1]["success"], false);
    let (_, all) = http(
        srv.port,
        "GET",
        "/api/2.0/loopml/datasets/sales/checks?kind=validation",
        None,
    )
    .unwrap();
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["checks"].as_array().unwrap().len(), 2);
    let id = list["checks"][1]["id"].as_i64().unwrap();
    let (status, body) = http(
        srv.port,
        "GET",
        &format!("/api/2.0/loopml/dataset-checks/{id}"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let check: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        check["result"]["results"][1]["result"]["unexpected_count"],
        1
    );
    assert!(check["definition"].as_str().unwrap().contains("plans@1"));

    // Bad input: protocol errors, nothing stored.
    let bad = [
        (
            "POST",
            "/api/2.0/loopml/datasets/sales@1/validations",
            "name: x\nexpectations:\n  - expect_column_values_to_be_in_set: {column: plan, value_set_from: {file: /etc/passwd, column: root}}\n",
            400,
            "server's disk",
        ),
        (
            "POST",
            "/api/2.0/loopml/datasets/sales@1/validations",
            "name: x\nexpectations:\n  - expect_column_values_to_be_in_set: {column: plan, value_set_from: {dataset: ../x, column: p}}\n",
            400,
            "invalid dataset name",
        ),
        (
            "POST",
            "/api/2.0/loopml/datasets/sales@9/validations",
            "name: x\nexpectations: []\n",
            404,
            "sales@9",
        ),
        (
            "POST",
            "/api/2.0/loopml/datasets/sales@1/drift",
            "{\"reference\": \"sales@9\"}",
            404,
            "sales@9",
        ),
        (
            "POST",
            "/api/2.0/loopml/datasets/sales@1/drift",
            "{\"reference\": \"sales@2\", \"method\": \"nope\"}",
            400,
            "unknown drift method",
        ),
        (
            "POST",
            "/api/2.0/loopml/datasets/sales@1/drift",
            "{\"referense\": \"sales@2\"}",
            400,
            "unknown field",
        ),
        (
            "GET",
            "/api/2.0/loopml/dataset-checks/999",
            "",
            404,
            "does not exist",
        ),
        (
            "GET",
            "/api/2.0/loopml/datasets/sales@2/diff",
            "",
            400,
            "against",
        ),
        (
            "GET",
            "/api/2.0/loopml/datasets/sales@2/diff?against=nope@1",
            "",
            404,
            "nope@1",
        ),
        (
            "GET",
            "/api/2.0/loopml/datasets/sales/checks?kind=x",
            "",
            400,
            "unknown check kind",
        ),
    ];
    for (method, path, body, want, text) in bad {
        let (status, answer) = http(srv.port, method, path, Some(body)).unwrap();
        assert_eq!(status, want, "{path}: {answer}");
        assert!(
            answer.contains(text) && answer.contains("error_code"),
            "{path}: {answer}"
        );
    }
    let (_, after) = http(
        srv.port,
        "GET",
        "/api/2.0/loopml/datasets/sales/checks",
        None,
    )
    .unwrap();
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after["checks"].as_array().unwrap().len(), 3);
}

#[test]
fn serve_runs_models_alone_and_names_a_missing_runtime() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loopml-serving/tests/fixtures");
    let model = format!("rf={}", fixtures.join("sk_rf_classifier.onnx").display());
    // A runtime that is not there: a clear error naming the fix, exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args([
            "serve",
            "--port",
            "0",
            "--model",
            &model,
            "--ort-lib",
            "/nonexistent/libort.so",
            "--data-dir",
        ])
        .arg(std::env::temp_dir().join("loopml-missing-ort-test"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/libort.so") && err.contains("setup-ort.sh"),
        "{err}"
    );
    if loopml_serving_available().is_none() {
        return;
    }
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--model",
            &model,
            "--data-dir",
        ])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server { child, port };
    let t0 = Instant::now();
    while !matches!(http(port, "GET", "/ping", None), Ok((200, _))) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = http(
        port,
        "POST",
        "/v2/models/rf/infer",
        Some(r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1.140625,2.8125,30.15625,0.734375]}]}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["outputs"][0]["name"], "label");
    // No tracking store in `serve`.
    let (status, _) = http(
        port,
        "GET",
        "/api/2.0/mlflow/experiments/get?experiment_id=0",
        None,
    )
    .unwrap();
    assert_eq!(status, 404);
}

/// ONNX Runtime's library, when installed (CI: required).
fn loopml_serving_available() -> Option<()> {
    common::ort_available().then_some(())
}

#[test]
fn port_zero_prints_where_it_listens_as_one_json_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(["server", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "listening", "{line}");
    let url = v["url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "{line}");
    assert_eq!(v["address"], format!("127.0.0.1:{port}"));
    let (status, body) = http(port, "GET", "/health", None).unwrap();
    assert_eq!((status, body.trim()), (200, "OK"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_server_serves_the_llm_gateway_from_a_litellm_config() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "model_list:\n  - model_name: chat\n    litellm_params: {model: openai/gpt-4o-mini, \
         api_base: 'http://127.0.0.1:9/v1', api_key: os.environ/LOOPML_TEST_UPSTREAM_KEY}\n\
         litellm_settings:\n  success_callback: [langfuse]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(["server", "--port", "0", "--gateway-config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("LOOPML_TEST_UPSTREAM_KEY", "sk-upstream")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port: u16 = v["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = http(port, "GET", "/v1/models", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\":\"chat\""), "{body}");
    // The upstream is not there: an OpenAI-shaped 502 after the retries, fast.
    let (status, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(r#"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#),
    )
    .unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("upstream_unavailable"),
        "{body}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("litellm_settings.success_callback") && err.contains("not supported"),
        "unsupported keys are reported by name: {err}"
    );
    // A config that names an unset variable stops the server with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(["server", "--port", "0", "--gateway-config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .env_remove("LOOPML_TEST_UPSTREAM_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOOPML_TEST_UPSTREAM_KEY is not set"), "{err}");
}

#[test]
fn loopml_gateway_runs_the_gateway_alone_from_litellms_config() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "model_list:\n  - {model_name: m, litellm_params: {model: openai/x, api_base: 'http://127.0.0.1:9/v1'}}\n\
         general_settings: {master_key: sk-admin}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopml"))
        .args(["gateway", "--port", "0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port: u16 = v["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http(port, "GET", "/health", None).unwrap().0, 200);
    // The master key guards the models list; other paths are OpenAI-shaped 404s.
    let (status, body) = http(port, "GET", "/v1/models", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(port, "GET", "/api/2.0/mlflow/experiments/search", None).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}
