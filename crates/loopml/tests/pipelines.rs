//! Pipelines tracked on the real `loopml` binary: the parent run and one child run per step
//! with their params, tags, statuses and logs; register, gate and promote against the registry
//! (first model passes, a worse challenger is rejected, a failure before promote moves nothing).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

mod common;

use common::{Server, free_port, http, start};
use loopml_pipelines::{Outcome, Pipeline, RunOptions, RunReport, StepStatus};
use serde_json::Value;

/// GET on the test server: (status, JSON body or null).
fn get_json(port: u16, path: &str) -> (u16, Value) {
    let r = http(port, "GET", path, &[], "");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// What these tests ask of the tracking server.
trait Tracked {
    fn url(&self) -> String;
    fn get(&self, path: &str) -> (u16, Value);
    fn run(&self, run_id: &str) -> Value;
    fn champion(&self) -> Option<String>;
}

impl Tracked for Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        get_json(self.port, path)
    }

    fn run(&self, run_id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"));
        assert_eq!(status, 200, "{v}");
        v["run"].clone()
    }

    fn champion(&self) -> Option<String> {
        let (status, v) =
            self.get("/api/2.0/mlflow/registered-models/alias?name=churn&alias=champion");
        (status == 200).then(|| v["model_version"]["version"].as_str().unwrap().to_string())
    }
}

fn tag(run: &Value, key: &str) -> Option<String> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| t["value"].as_str().unwrap().to_string())
}

fn param(run: &Value, key: &str) -> Option<String> {
    run["data"]["params"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| t["value"].as_str().unwrap().to_string())
}

fn metric(run: &Value, key: &str) -> Option<f64> {
    run["data"]["metrics"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| t["value"].as_f64().unwrap())
}

/// Logs a metric on the step's run through the REST API, as a training script's MLflow client
/// would, and publishes it as a step output.
const TRAIN_PY: &str = r#"
import json, os, sys, time, urllib.request
uri, run = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"]
key, value = sys.argv[1], float(sys.argv[2])
body = json.dumps({"run_id": run, "key": key, "value": value,
                   "timestamp": int(time.time() * 1000), "step": 0}).encode()
req = urllib.request.Request(uri + "/api/2.0/mlflow/runs/log-metric", data=body,
                             headers={"Content-Type": "application/json"})
urllib.request.urlopen(req).read()

def call(method, path, body):
    req = urllib.request.Request(uri + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read() or b"{}")

# The model: below 0.9 in the run's artifacts (runs:/<run>/model, as mlflow 2's
# log_model(artifact_path=) keeps it), else as a logged model named "model" (as mlflow 3's
# log_model(name=) makes it, outside the run's artifacts).
mlmodel = b"flavors:\n  python_function: {loader_module: test}\n"
exp = os.environ["MLFLOW_EXPERIMENT_ID"]
if value < 0.9:
    call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/model/MLmodel", mlmodel)
else:
    m = call("POST", "/api/2.0/mlflow/logged-models", json.dumps(
        {"experiment_id": exp, "name": "model", "source_run_id": run}).encode())["model"]["info"]
    root = m["artifact_uri"].split("mlflow-artifacts:/", 1)[1]
    call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{root}/MLmodel", mlmodel)
with open(os.environ["LOOPML_STEP_OUTPUTS"], "a") as f:
    f.write(f"{key}={value}\n")
with open("train.count", "a") as f:
    f.write("x\n")
print("logged", key, value, "on", run, "in experiment", os.environ["MLFLOW_EXPERIMENT_ID"])
"#;

const PIPELINE: &str = r#"
name: churn-retrain
experiment: churn
params:
  auc: "0.80"
steps:
  - name: prep
    run: echo prepared > data.txt
    outputs: [data.txt]
  - name: train
    needs: [prep]
    run: python3 train.py roc_auc ${params.auc}
    inputs: [train.py, data.txt]
  - name: register
    needs: [train]
    register: {model: churn, from: train, artifact: model}
  - name: gate
    needs: [register]
    gate: {model: churn, alias: champion, challenger: register, metric: roc_auc, margin: 0.01, direction: max}
  - name: smoke
    needs: [gate]
    run: test ! -e fail.flag
    cache: false
  - name: promote
    needs: [smoke]
    promote: {model: churn, alias: champion, version: register}
"#;

async fn run(srv: &Server, p: &Pipeline, auc: &str, fail: bool) -> RunReport {
    let flag = p.dir.join("fail.flag");
    if fail {
        std::fs::write(&flag, "").unwrap();
    } else {
        let _ = std::fs::remove_file(&flag);
    }
    let opts = RunOptions {
        tracking_uri: Some(srv.url()),
        params: BTreeMap::from([("auc".to_string(), auc.to_string())]),
        tags: BTreeMap::from([("trigger".to_string(), "test".to_string())]),
        ..Default::default()
    };
    loopml_pipelines::run(p, &opts).await.unwrap()
}

fn status(r: &RunReport, step: &str) -> StepStatus {
    r.step(step).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_runs_gate_and_promote_against_the_registry() {
    let data = tempfile::tempdir().unwrap();
    let srv = start(data.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), TRAIN_PY).unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE).unwrap();
    let p = Pipeline::load(&dir.path().join("pipeline.yaml")).unwrap();
    let trained = || {
        std::fs::read_to_string(dir.path().join("train.count"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    // 1. The first model: no champion, so it passes the gate and is promoted.
    let r = run(&srv, &p, "0.80", false).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(srv.champion().as_deref(), Some("1"));
    assert_eq!(r.step("register").unwrap().outputs["version"], "1");
    let parent_id = r.run_id.clone().unwrap();
    let parent = srv.run(&parent_id);
    assert_eq!(parent["info"]["status"], "FINISHED");
    assert_eq!(parent["info"]["run_name"], "churn-retrain");
    assert_eq!(param(&parent, "auc").as_deref(), Some("0.80"));
    assert_eq!(tag(&parent, "loopml.outcome").as_deref(), Some("SUCCEEDED"));
    assert_eq!(tag(&parent, "trigger").as_deref(), Some("test"));
    let (_, exp) = srv.get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=churn");
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(parent["info"]["experiment_id"], exp_id.as_str());
    for s in &r.steps {
        let child = srv.run(s.run_id.as_ref().unwrap());
        assert_eq!(child["info"]["status"], "FINISHED", "{}", s.name);
        assert_eq!(child["info"]["run_name"], s.name.as_str());
        assert_eq!(
            tag(&child, "mlflow.parentRunId").as_deref(),
            Some(parent_id.as_str())
        );
        assert_eq!(tag(&child, "loopml.step").as_deref(), Some(s.name.as_str()));
        assert_eq!(
            tag(&child, "loopml.step.kind").as_deref(),
            Some(s.kind.as_str())
        );
        assert_eq!(tag(&child, "loopml.cache_key"), s.cache_key);
    }
    let train_id = r.step("train").unwrap().run_id.clone().unwrap();
    let train = srv.run(&train_id);
    assert_eq!(
        metric(&train, "roc_auc"),
        Some(0.80),
        "the script logged into its step run"
    );
    assert_eq!(
        param(&train, "command").as_deref(),
        Some("python3 train.py roc_auc 0.80")
    );
    let mut inputs: Vec<String> = train["inputs"]["dataset_inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dataset"]["name"].as_str().unwrap().to_string())
        .collect();
    inputs.sort();
    // train.py is the step's code, not its data: a tag with its digest, not a dataset input.
    assert_eq!(inputs, vec!["data.txt"]);
    let code: Value = serde_json::from_str(&tag(&train, "loopml.code").unwrap()).unwrap();
    assert_eq!(code[0]["path"], "train.py", "{code}");
    assert_eq!(code[0]["digest"].as_str().unwrap().len(), 64, "{code}");
    assert!(tag(&train, "mlflow.user").is_some());
    let ds = &train["inputs"]["dataset_inputs"][0]["dataset"];
    assert_eq!(ds["digest"].as_str().unwrap().len(), 12);
    assert_eq!(ds["source_type"], "local");
    let source: Value = serde_json::from_str(ds["source"].as_str().unwrap()).unwrap();
    assert!(source["uri"].as_str().unwrap().starts_with('/'), "{source}");
    // The step's log is the run's artifact logs/train.txt.
    let reply = http(
        srv.port,
        "GET",
        &format!(
            "/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{train_id}/artifacts/logs/train.txt"
        ),
        &[],
        "",
    );
    let (code, log) = (
        reply.status,
        String::from_utf8_lossy(&reply.body).to_string(),
    );
    assert_eq!(code, 200, "{log}");
    assert!(log.contains("logged roc_auc 0.8 on"), "{log}");
    let (_, mv) = srv.get("/api/2.0/mlflow/model-versions/get?name=churn&version=1");
    assert_eq!(mv["model_version"]["run_id"], train_id.as_str());
    assert_eq!(
        mv["model_version"]["source"],
        format!("runs:/{train_id}/model").as_str()
    );
    let gate = srv.run(r.step("gate").unwrap().run_id.as_ref().unwrap());
    assert_eq!(metric(&gate, "gate.challenger"), Some(0.80));
    assert_eq!(
        metric(&gate, "gate.champion"),
        None,
        "there was no champion"
    );

    // 2. A challenger that is not better by the margin is rejected; the alias stays.
    let r = run(&srv, &p, "0.805", false).await;
    assert_eq!(r.outcome, Outcome::Rejected, "{r:#?}");
    assert_eq!(r.exit_code(), 3);
    assert_eq!(status(&r, "gate"), StepStatus::Rejected);
    assert_eq!(status(&r, "smoke"), StepStatus::Skipped);
    assert_eq!(status(&r, "promote"), StepStatus::Skipped);
    assert!(
        r.step("gate")
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("REJECT")
    );
    assert_eq!(r.step("register").unwrap().outputs["version"], "2");
    assert_eq!(srv.champion().as_deref(), Some("1"));
    let gate = srv.run(r.step("gate").unwrap().run_id.as_ref().unwrap());
    assert_eq!(metric(&gate, "gate.challenger"), Some(0.805));
    assert_eq!(metric(&gate, "gate.champion"), Some(0.80));
    assert_eq!(tag(&gate, "loopml.status").as_deref(), Some("REJECTED"));
    let promote = srv.run(r.step("promote").unwrap().run_id.as_ref().unwrap());
    assert_eq!(promote["info"]["status"], "KILLED");
    let parent = srv.run(r.run_id.as_ref().unwrap());
    assert_eq!(tag(&parent, "loopml.outcome").as_deref(), Some("REJECTED"));

    // 3. A better challenger, but a step before promote fails: nothing moves.
    let r = run(&srv, &p, "0.95", true).await;
    assert_eq!(r.outcome, Outcome::Failed, "{r:#?}");
    assert_eq!(status(&r, "gate"), StepStatus::Succeeded);
    assert_eq!(status(&r, "smoke"), StepStatus::Failed);
    assert_eq!(status(&r, "promote"), StepStatus::Skipped);
    assert_eq!(srv.champion().as_deref(), Some("1"));
    let parent = srv.run(r.run_id.as_ref().unwrap());
    assert_eq!(parent["info"]["status"], "FAILED");
    let smoke = srv.run(r.step("smoke").unwrap().run_id.as_ref().unwrap());
    assert_eq!(smoke["info"]["status"], "FAILED");

    // 4. The same challenger without the failure is promoted.
    let before = trained();
    let r = run(&srv, &p, "0.95", false).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(r.step("register").unwrap().outputs["version"], "4");
    assert_eq!(srv.champion().as_deref(), Some("4"));
    assert_eq!(r.step("promote").unwrap().outputs["previous"], "1");
    // Its inputs are the same as in run 3: train is cached, and register uses the model of the
    // run that executed it.
    assert_eq!(status(&r, "train"), StepStatus::Cached);
    assert_eq!(trained(), before, "a cached step does not execute");
    let cached = srv.run(r.step("train").unwrap().run_id.as_ref().unwrap());
    assert_eq!(cached["info"]["status"], "FINISHED");
    assert_eq!(tag(&cached, "loopml.cached").as_deref(), Some("true"));
    let original = tag(&cached, "loopml.cached_from").unwrap();
    assert_eq!(r.step("train").unwrap().outputs["run_id"], original);
    let (_, mv) = srv.get("/api/2.0/mlflow/model-versions/get?name=churn&version=4");
    assert_eq!(mv["model_version"]["run_id"], original.as_str());
    // That run logged its model as an mlflow 3 logged model: register found it by name.
    let model_id = mv["model_version"]["model_id"].as_str().unwrap_or_default();
    assert!(model_id.starts_with("m-"), "{mv}");
    assert_eq!(
        mv["model_version"]["source"],
        format!("models:/{model_id}").as_str()
    );

    // 5. A run that logged no model cannot be registered: the step says why.
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        PIPELINE.replace("artifact: model", "artifact: missing"),
    )
    .unwrap();
    let p = Pipeline::load(&dir.path().join("pipeline.yaml")).unwrap();
    let r = run(&srv, &p, "0.95", false).await;
    assert_eq!(r.outcome, Outcome::Failed, "{r:#?}");
    let msg = r
        .step("register")
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        msg.contains("has no MLmodel file under `missing` and logged no model named `missing`"),
        "{msg}"
    );
    assert_eq!(srv.champion().as_deref(), Some("4"));
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "name: p\nsteps:\n  - {name: a, run: touch ran}\n",
    )
    .unwrap();
    let p = Pipeline::load(&dir.path().join("pipeline.yaml")).unwrap();
    let opts = RunOptions {
        tracking_uri: Some(format!("http://127.0.0.1:{}", free_port())),
        ..Default::default()
    };
    let e = loopml_pipelines::run(&p, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reach the server"), "{e}");
    assert!(!dir.path().join("ran").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenger_without_the_metric_fails_the_gate_and_literal_versions_promote() {
    let data = tempfile::tempdir().unwrap();
    let srv = start(data.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), TRAIN_PY).unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"name: edge
steps:
  - {name: train, run: python3 train.py accuracy 0.7, inputs: [train.py]}
  - {name: register, needs: [train], register: {model: edge, from: train}}
  - {name: gate, needs: [register], gate: {model: edge, challenger: register, metric: roc_auc}}
  - {name: promote, needs: [gate], promote: {model: edge, version: register}}
  - {name: pin, needs: [register], promote: {model: edge, alias: pinned, version: 1}}
  - {name: lost, run: 'true', inputs: [nope.csv]}
"#,
    )
    .unwrap();
    let p = Pipeline::load(&dir.path().join("pipeline.yaml")).unwrap();
    let opts = RunOptions {
        tracking_uri: Some(srv.url()),
        ..Default::default()
    };
    let r = loopml_pipelines::run(&p, &opts).await.unwrap();
    assert_eq!(r.outcome, Outcome::Failed, "{r:#?}");
    let gate = r.step("gate").unwrap();
    assert_eq!(gate.status, StepStatus::Failed);
    let m = gate.message.clone().unwrap();
    assert!(m.contains("version 1 has no metric `roc_auc`"), "{m}");
    assert_eq!(status(&r, "promote"), StepStatus::Skipped);
    assert_eq!(status(&r, "pin"), StepStatus::Succeeded);
    let (code, _) = srv.get("/api/2.0/mlflow/registered-models/alias?name=edge&alias=champion");
    assert_ne!(code, 200, "no champion was set");
    let (code, v) = srv.get("/api/2.0/mlflow/registered-models/alias?name=edge&alias=pinned");
    assert_eq!(code, 200);
    assert_eq!(v["model_version"]["version"], "1");
    // A step that fails before its command starts still has a (failed) run saying why.
    let lost = r.step("lost").unwrap();
    assert!(
        lost.message.as_ref().unwrap().contains("input `nope.csv`"),
        "{lost:?}"
    );
    let lost_run = srv.run(lost.run_id.as_ref().unwrap());
    assert_eq!(lost_run["info"]["status"], "FAILED");
    assert!(
        tag(&lost_run, "loopml.message")
            .unwrap()
            .contains("nope.csv")
    );
    let gate_run = srv.run(gate.run_id.as_ref().unwrap());
    assert_eq!(gate_run["info"]["status"], "FAILED");
    assert_eq!(
        srv.run(r.run_id.as_ref().unwrap())["info"]["status"],
        "FAILED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_champion_without_the_metric_rejects_unless_told_to_pass() {
    let data = tempfile::tempdir().unwrap();
    let srv = start(data.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), TRAIN_PY).unwrap();
    let write = |name: &str, body: &str| {
        std::fs::write(dir.path().join(name), body).unwrap();
        Pipeline::load(&dir.path().join(name)).unwrap()
    };
    // v1 becomes the champion without ever logging roc_auc.
    let first = write(
        "first.yaml",
        r#"name: first
steps:
  - {name: train, run: python3 train.py accuracy 0.7, inputs: [train.py]}
  - {name: register, needs: [train], register: {model: churn, from: train}}
  - {name: promote, needs: [register], promote: {model: churn, version: register}}
"#,
    );
    let gated = |extra: &str| {
        format!(
            r#"name: gated
steps:
  - {{name: train, run: python3 train.py roc_auc 0.8, inputs: [train.py], cache: false}}
  - {{name: register, needs: [train], register: {{model: churn, from: train}}}}
  - {{name: gate, needs: [register], gate: {{model: churn, challenger: register, metric: roc_auc{extra}}}}}
  - {{name: promote, needs: [gate], promote: {{model: churn, version: register}}}}
"#
        )
    };
    let opts = RunOptions {
        tracking_uri: Some(srv.url()),
        ..Default::default()
    };
    let r = loopml_pipelines::run(&first, &opts).await.unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(srv.champion().as_deref(), Some("1"));

    // By default there is nothing to compare with: the challenger is rejected, saying why.
    let strict = write("strict.yaml", &gated(""));
    let r = loopml_pipelines::run(&strict, &opts).await.unwrap();
    assert_eq!(r.outcome, Outcome::Rejected, "{r:#?}");
    let m = r.step("gate").unwrap().message.clone().unwrap_or_default();
    assert!(
        m.contains("the champion `churn@champion` (version 1) has no metric `roc_auc`")
            && m.contains("champion_without_metric: pass"),
        "{m}"
    );
    assert_eq!(status(&r, "promote"), StepStatus::Skipped);
    assert_eq!(srv.champion().as_deref(), Some("1"));

    // The old behaviour, asked for: the challenger passes and is promoted.
    let lenient = write("lenient.yaml", &gated(", champion_without_metric: pass"));
    let r = loopml_pipelines::run(&lenient, &opts).await.unwrap();
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
    assert_eq!(srv.champion().as_deref(), Some("3"));
}
