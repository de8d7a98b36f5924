"""The churn demo (examples/churn/run.sh) end to end: train v1 → register → deploy as champion →
traffic → drifted traffic → monitor alert → the pipeline retrains → gate passes → v2 promoted →
serving answers with v2.

run.sh starts a loopml server of its own (the binary under test, `$LOOPML_BIN`) and prints a
`STEP <name> key=value …` line per transition; this test asserts every one of them, then
restarts a server on the demo's data folder and checks the same story from the stored state:
registry, alias, gate metrics, alerts, pipeline runs, datasets and the restored deployment.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import json
import time

import pytest
import requests

from loopml_server import BIN, ROOT, LoopmlServer

RUN_SH = ROOT / "examples" / "churn" / "run.sh"
TIMEOUT_S = 300
FEATURES = ["tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
            "data_gb"]


def parse_steps(stdout: str) -> list[tuple[str, dict[str, str]]]:
    steps = []
    for line in stdout.splitlines():
        if not line.startswith("STEP "):
            continue
        parts = shlex.split(line[len("STEP "):])
        name, fields = parts[0], {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            fields[k] = v
        steps.append((name, fields))
    return steps


def one(steps, name: str, **match) -> dict[str, str]:
    found = [f for n, f in steps if n == name and all(f.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one STEP {name} {match}, got {found}"
    return found[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if os.environ.get("COMPAT_EXTERNAL_URL", "").strip():
        pytest.skip("the demo starts its own loopml server")
    work = tmp_path_factory.mktemp("churn") / "work"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "LOOPML_")) or k == "LOOPML_ORT_LIB"}
    env["LOOPML_BIN"] = BIN
    env["CHURN_WORK_DIR"] = str(work)
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(RUN_SH)], env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"run.sh did not finish within {TIMEOUT_S} s; last output:\n{out[-4000:]}")
    seconds = time.monotonic() - started
    why = [line for line in proc.stderr.splitlines()
           if line.startswith(("FAILED:", "demo.py ", "train: "))]
    assert proc.returncode == 0, (
        f"run.sh exited {proc.returncode} after {seconds:.0f} s: " + "\n".join(why) +
        "\n--- stdout (tail) ---\n"
        f"{proc.stdout[-6000:]}\n--- stderr (tail) ---\n{proc.stderr[-4000:]}"
    )
    return {"steps": parse_steps(proc.stdout), "stdout": proc.stdout, "work": work,
            "seconds": seconds}


def test_every_transition_of_the_loop(demo):
    s = demo["steps"]
    order = [n for n, _ in s]
    # The transitions, in the order the story tells them.
    expected = ["server", "data", "train", "register", "serving", "deploy", "traffic", "monitor",
                "traffic", "monitor", "alert", "pipeline", "alias", "serving", "traffic", "done"]
    assert order == expected, order

    assert one(s, "data")["reference"] == "churn-train@1"

    v1 = one(s, "train", model="v1")
    assert float(v1["roc_auc"]) > 0.75, v1

    reg = one(s, "register")
    assert (reg["model"], reg["version"], reg["alias"]) == ("churn", "1", "champion")
    assert reg["run_id"] == v1["run_id"]

    assert one(s, "deploy")["version"] == "1"
    assert one(s, "serving", version="1")["deployment"] == "churn"

    # Traffic from the training population: served by v1, which still ranks it well.
    ref = one(s, "traffic", phase="reference")
    assert ref["versions"] == "1:300" and ref["feedback"] == "300"
    assert float(ref["auc"]) >= 0.7, ref

    before = one(s, "monitor", phase="before")
    assert before["status"] == "ok", before
    assert before["checks"] == "feature_drift:ok,data_quality:ok,performance_roc_auc:ok"
    assert before["alerts"] == "0"

    # The shifted population: still served by v1, which now ranks it no better than chance.
    drifted = one(s, "traffic", phase="drifted")
    assert drifted["versions"] == "1:300" and drifted["feedback"] == "300"
    assert float(drifted["auc"]) < 0.6, drifted

    after = one(s, "monitor", phase="after")
    assert after["status"] == "breach", after
    assert after["checks"] == "feature_drift:breach,data_quality:ok,performance_roc_auc:breach"
    assert after["breached"] == "feature_drift,performance_roc_auc"

    alert = one(s, "alert")
    assert alert["monitor"] == "churn-health" and int(alert["alerts"]) >= 1
    # The server itself starts the retraining pipeline from the alert.
    assert alert["pipeline"] == "started", alert

    p = one(s, "pipeline")
    assert p["started_by"] == "server", p
    assert (p["outcome"], p["gate"], p["version"]) == ("SUCCEEDED", "pass", "2"), p
    assert float(p["challenger_roc_auc"]) >= float(p["champion_roc_auc"]), p
    assert abs(float(p["champion_roc_auc"]) - float(v1["roc_auc"])) < 1e-3, (p, v1)
    assert p["window"] == "churn-health-window@1", p

    assert one(s, "alias")["version"] == "2"
    assert one(s, "serving", version="2")["deployment"] == "churn"
    post = one(s, "traffic", phase="after-retrain")
    assert post["versions"] == "2:300", post
    # v2 learned the new relationship: it ranks the shifted population well again.
    assert float(post["auc"]) >= 0.7, post

    assert float(one(s, "done")["seconds"]) < 120, "the demo should take under two minutes"


def test_stored_state_tells_the_same_story(demo):
    """A server restarted on the demo's data folder holds the whole loop."""
    srv = LoopmlServer(demo["work"] / "data")
    try:
        api = srv.url + "/api/2.0"

        def get(path, **params):
            r = requests.get(api + path, params=params, timeout=30)
            assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:400]}"
            return r.json()

        champion = get("/mlflow/registered-models/alias", name="churn", alias="champion")
        assert champion["model_version"]["version"] == "2"
        versions = get("/mlflow/model-versions/search", filter="name='churn'")["model_versions"]
        assert sorted(v["version"] for v in versions) == ["1", "2"], versions

        def run_of(version):
            mv = get("/mlflow/model-versions/get", name="churn", version=version)["model_version"]
            return get("/mlflow/runs/get", run_id=mv["run_id"])["run"]

        def metric(run, key):
            return {m["key"]: m["value"] for m in run["data"]["metrics"]}[key]

        # train.py logs an MLflow 3 logged model (log_model(name="model")); the pipeline's
        # register step found it from the run, as mlflow.register_model("runs:/…") does.
        mv2 = get("/mlflow/model-versions/get", name="churn", version="2")["model_version"]
        assert mv2["model_id"].startswith("m-"), mv2
        assert mv2["source"] == f"models:/{mv2['model_id']}", mv2

        r1, r2 = run_of("1"), run_of("2")
        assert metric(r2, "roc_auc") >= metric(r1, "roc_auc")
        tags2 = {t["key"]: t["value"] for t in r2["data"].get("tags", [])}
        assert tags2.get("loopml.step") == "train" and tags2.get("loopml.pipeline") == "churn-retrain"
        assert tags2.get("loopml.trigger_window") == "churn-health-window@1"

        # The pipeline run: started by alert, succeeded, gate passed.
        exp = get("/mlflow/experiments/get-by-name", experiment_name="churn")["experiment"]
        r = requests.post(api + "/mlflow/runs/search", timeout=30, json={
            "experiment_ids": [exp["experiment_id"]],
            "filter": "tags.`loopml.pipeline` = 'churn-retrain'", "max_results": 100})
        assert r.status_code == 200, r.text
        runs = r.json()["runs"]
        tags = [{t["key"]: t["value"] for t in x["data"].get("tags", [])} for x in runs]
        parents = [t for t in tags if "mlflow.parentRunId" not in t]
        assert len(parents) == 1, parents
        assert parents[0]["loopml.outcome"] == "SUCCEEDED"
        assert parents[0].get("loopml.monitor") == "churn-health"
        gates = [t for t in tags if t.get("loopml.step") == "gate"]
        assert [g["loopml.gate"] for g in gates] == ["pass"]

        alerts = get("/loopml/alerts", monitor="churn-health")["alerts"]
        checks = {c.strip() for a in alerts for c in a["check"].split(",")}
        assert {"feature_drift", "performance_roc_auc"} <= checks, alerts
        assert all(a["status"] == "delivered" for a in alerts), alerts
        started = [a for a in alerts if (a.get("pipeline") or "").startswith("started")]
        assert len(started) == 1, alerts
        # The alert says how the run it started ended, and which run that was.
        parent_ids = [
            x["info"]["run_id"] for x, t in zip(runs, tags) if "mlflow.parentRunId" not in t
        ]
        assert started[0]["pipeline_outcome"] == "succeeded", started
        assert started[0]["pipeline_run"] == parent_ids[0], (started, parent_ids)

        names = {v["name"] + "@" + str(v["version"]) for v in get("/loopml/datasets")["versions"]}
        assert {"churn-train@1", "churn-fresh@1", "churn-health-window@1"} <= names, names

        # The breached window is training data: the labels that came as feedback, in the
        # reference's target column, and the description says how many rows have one.
        window = get("/loopml/datasets/churn-health-window@1")
        columns = [c["name"] for c in window["schema"]] if isinstance(window.get("schema"), list) \
            else list((window.get("schema") or {}).keys())
        assert "churned" in columns and "truth" not in columns, window
        assert "300 predictions, 300 labelled" in (window.get("source") or ""), window
        # It is an input of the pipeline run that it started, so lineage needs no user code.
        parent = next(x for x, t in zip(runs, tags) if "mlflow.parentRunId" not in t)
        inputs = parent["inputs"]["dataset_inputs"]
        assert [(d["dataset"]["name"], d["tags"][0]["value"]) for d in inputs] == [
            ("churn-health-window", "window")
        ], inputs
        assert {t["key"]: t["value"] for t in parent["data"]["tags"]}["mlflow.user"] == (
            f"loopml (alert {started[0]['id']})"
        )
        # Code inputs are the step's code, not datasets.
        train = next(x for x, t in zip(runs, tags) if t.get("loopml.step") == "train")
        train_tags = {t["key"]: t["value"] for t in train["data"]["tags"]}
        code = json.loads(train_tags["loopml.code"])
        assert {c["path"] for c in code} == {"train.py", "generate.py"}, code
        data_inputs = [d["dataset"]["name"] for d in train["inputs"].get("dataset_inputs", [])]
        assert not any(n.endswith(".py") for n in data_inputs), data_inputs

        # The deployment came back with the server and follows the alias to v2.
        body = {"dataframe_split": {"columns": FEATURES, "data": [[5, 95.0, 3, 1, 28, 20.5]]}}
        deadline = time.monotonic() + 20
        while True:
            r = requests.post(srv.url + "/invocations", params={"model": "churn"}, json=body,
                              timeout=30)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert r.headers["x-loopml-model-version"] == "2"
    finally:
        srv.stop()
