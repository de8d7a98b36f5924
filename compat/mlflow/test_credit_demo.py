"""The credit demo (examples/credit/run.sh): string features and skl2onnx's default ZipMap
outputs, served as they are; a fair gate scores champion and challenger on one shared holdout,
promotes the retrained v2 that beats v1 there, and rejects a v3 whose own run logged a perfect
(training-set) AUC but which is worse on the holdout. Then a server restarted on the demo's data
tells the same story from what it stored."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests

from loopml_server import BIN, ROOT, LoopmlServer
from test_churn_demo import one, parse_steps

RUN_SH = ROOT / "examples" / "credit" / "run.sh"
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if os.environ.get("COMPAT_EXTERNAL_URL", "").strip():
        pytest.skip("the demo starts its own loopml server")
    work = tmp_path_factory.mktemp("credit") / "work"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "LOOPML_")) or k == "LOOPML_ORT_LIB"}
    env["LOOPML_BIN"] = BIN
    env["CREDIT_WORK_DIR"] = str(work)
    started = time.monotonic()
    proc = subprocess.run(["bash", str(RUN_SH)], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, (
        f"run.sh exited {proc.returncode} after {seconds:.0f} s\n--- stdout ---\n"
        f"{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    return {"steps": parse_steps(proc.stdout), "work": work, "seconds": seconds}


def test_the_fair_gate_promotes_on_shared_data_and_rejects_flattering_numbers(demo):
    s = demo["steps"]
    assert [n for n, _ in s] == ["server", "first", "serve", "retrain", "flattering", "after", "done"]
    first = one(s, "first")
    assert (first["outcome"], first["version"], first["champion"]) == ("SUCCEEDED", "1", "-")
    # The default ZipMap outputs and a string column, served unchanged.
    serve = one(s, "serve")
    assert serve["version"] == "1" and serve["label"] in ("0", "1")
    assert 0.0 <= float(serve["p_default"]) <= 1.0

    retrain = one(s, "retrain")
    assert (retrain["gate"], retrain["version"], retrain["champion"]) == ("SUCCEEDED", "2", "1")
    assert retrain["rows"] == "1000" and retrain["dataset"] == "credit-holdout@2"
    assert float(retrain["challenger_holdout_auc"]) > float(retrain["champion_holdout_auc"])
    assert float(retrain["bound"]) >= 0.0, "the improvement is not noise"

    flat = one(s, "flattering")
    assert (flat["exit"], flat["gate"], flat["version"], flat["champion"]) == ("3", "REJECTED", "3", "2")
    # Its own run's number beats the champion's own number: the old gate would have promoted it.
    assert float(flat["own_v3"]) > float(flat["own_v2"])
    # On the same holdout it is clearly worse.
    assert float(flat["challenger_holdout_auc"]) < float(flat["champion_holdout_auc"]) - 0.05
    assert float(flat["bound"]) < 0.0
    assert one(s, "after")["version"] == "2"
    assert demo["seconds"] < 120, "the demo should take under two minutes"


def test_stored_state_keeps_both_verdicts(demo):
    srv = LoopmlServer(demo["work"] / "data")
    try:
        api = srv.url + "/api/2.0"
        champ = requests.get(api + "/mlflow/registered-models/alias",
                             params={"name": "credit", "alias": "champion"}, timeout=10).json()
        assert champ["model_version"]["version"] == "2"
        exp = requests.get(api + "/mlflow/experiments/get-by-name",
                           params={"experiment_name": "credit"}, timeout=10).json()["experiment"]
        runs = requests.post(api + "/mlflow/runs/search", timeout=30, json={
            "experiment_ids": [exp["experiment_id"]],
            "filter": "tags.`loopml.step` = 'gate'", "max_results": 10}).json()["runs"]
        verdicts = []
        for r in runs:
            tags = {t["key"]: t["value"] for t in r["data"]["tags"]}
            metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
            verdicts.append((tags["loopml.gate"], tags["loopml.gate.dataset"], metrics["gate.rows"]))
        # Each verdict names the exact holdout version it was measured on.
        assert sorted(verdicts) == [
            ("pass", "credit-holdout@1", 1000), ("pass", "credit-holdout@2", 1000),
            ("reject", "credit-holdout@2", 1000)], verdicts
        holdouts = [v for v in requests.get(api + "/loopml/datasets", timeout=10).json()["versions"]
                    if v["name"] == "credit-holdout"]
        assert sorted(v["version"] for v in holdouts) == [1, 2], holdouts
    finally:
        srv.stop()
