"""Deployments of registered models, driven by the real `mlflow` client and `requests` against
the real binary: a canary between `@champion` and a fixed version made over HTTP, its split,
`/invocations` through it, the alias moving under load (zero failed requests), lineage listing
the deployment, the inference log read back with pandas, and a restart keeping the deployment.

loopml-only endpoints, so skipped under COMPAT_EXTERNAL_URL."""

import io
import os
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from loopml_server import unique

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("COMPAT_EXTERNAL_URL", "").strip()), reason="loopml's serving endpoints")

FIXTURES = Path(__file__).resolve().parents[2] / "crates" / "loopml-serving" / "tests" / "fixtures"
API = "/api/2.0/loopml/deployments"
ROW = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def register_versions(url):
    """Three versions of one registered model (the same files), @champion on the first."""
    client = MlflowClient(url)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        mlflow.set_experiment(experiment_id=client.create_experiment(unique("deploy")))
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(FIXTURES / "mlflow_onnx_model"), "model")
    finally:
        mlflow.set_tracking_uri(previous)
    name = unique("churn")
    client.create_registered_model(name)
    source = f"runs:/{run.info.run_id}/model"
    v1 = client.create_model_version(name, source, run_id=run.info.run_id)
    v2 = client.create_model_version(name, source, run_id=run.info.run_id)
    v3 = client.create_model_version(name, source, run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", v1.version)
    return client, name, (v1.version, v2.version, v3.version)


def canary(dep, name, candidate_version, percent):
    return {
        "name": dep,
        "variants": [
            {"name": "stable", "model": f"models:/{name}@champion"},
            {"name": "candidate", "model": f"models:/{name}/{candidate_version}"},
        ],
        "policy": {"strategy": "canary", "percent": percent,
                   "rollback": {"max_error_rate": 0.2, "min_requests": 20}},
    }


def test_canary_of_registered_versions_follows_the_alias_and_logs(server):
    url = server.url
    client, name, (v1, v2, v3) = register_versions(url)
    dep = unique("dep")
    r = requests.post(f"{url}{API}", json=canary(dep, name, v3, 30), timeout=60)
    assert r.status_code == 201, r.text
    st = r.json()
    assert st["strategy"] == "canary" and st["status"] == "active"
    assert [v["model_version"] for v in st["variants"]] == [v1, v3]
    # Creating it again is a conflict; bad specs are refused with the reason.
    r = requests.post(f"{url}{API}", json=canary(dep, name, v3, 30), timeout=30)
    assert r.status_code == 409 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    r = requests.post(f"{url}{API}", json=canary(unique("d"), name, v3, 130), timeout=30)
    assert r.status_code == 400 and "between 0 and 100" in r.json()["message"]
    r = requests.post(f"{url}{API}", json=canary(unique("d"), name, 99, 10), timeout=30)
    assert r.status_code == 404, r.text

    # The split, from the response headers; the deployment answers OIP and /invocations alike.
    s = requests.Session()
    n, to_candidate = 600, 0
    for i in range(n):
        if i % 2:
            resp = s.post(f"{url}/v2/models/{dep}/infer", json=ROW, timeout=30)
        else:
            resp = s.post(f"{url}/invocations?model={dep}", timeout=30,
                          json={"dataframe_split": {"columns": ["a", "b", "c", "d"],
                                                    "data": [[1, 2, 3, 4]]}})
        assert resp.status_code == 200, resp.text
        to_candidate += resp.headers["x-loopml-variant"] == "candidate"
        assert resp.headers["x-loopml-model-version"] == (
            v3 if resp.headers["x-loopml-variant"] == "candidate" else v1)
    sd = (n * 0.3 * 0.7) ** 0.5
    assert abs(to_candidate - n * 0.3) <= 5 * sd, to_candidate

    # Lineage of v3 lists the deployment serving it.
    lin = requests.get(f"{url}/api/2.0/loopml/registry/lineage",
                       params={"uri": f"models:/{name}/{v3}", "format": "json"}, timeout=30).json()
    assert {"deployment": dep, "variant": "candidate", "strategy": "canary"}.items() <= \
        lin["deployments"][0].items(), lin["deployments"]

    # Moving @champion swaps the stable variant under load, with no failed request.
    failures, stop = [], threading.Event()
    seen = []

    def hammer():
        hs = requests.Session()
        while not stop.is_set():
            resp = hs.post(f"{url}/v2/models/{dep}/infer", json=ROW,
                           headers={"x-loopml-variant": "stable"}, timeout=30)
            if resp.status_code != 200:
                failures.append(resp.text)
            else:
                seen.append(resp.headers["x-loopml-model-version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    client.set_registered_model_alias(name, "champion", v2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not seen or seen[-1] != v2):
        time.sleep(0.02)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert failures == [], failures[:3]
    assert seen[0] == v1 and seen[-1] == v2

    # Ground truth by request id; the log comes back as Parquet that pandas reads.
    resp = s.post(f"{url}/v2/models/{dep}/infer", json=ROW, timeout=30)
    rid = resp.headers["x-loopml-request-id"]
    r = requests.post(f"{url}{API}/{dep}/feedback", json={"request_id": rid, "truth": 1}, timeout=30)
    assert r.json() == {"accepted": 1, "unmatched": 0}
    # An id this server never answered is kept but reported, not silently taken.
    r = requests.post(f"{url}{API}/{dep}/feedback", json={"request_id": "never-answered", "truth": 0},
                      timeout=30)
    assert r.json()["accepted"] == 1 and r.json()["unmatched"] == 1, r.json()
    assert r.json()["unmatched_request_ids"] == ["never-answered"], r.json()
    r = requests.get(f"{url}{API}/{dep}/log", params={"feedback": "true", "since": "1h"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    df = pd.read_parquet(io.BytesIO(r.content))
    assert len(df) >= n + len(seen) + 1
    assert {"request_id", "timestamp", "variant", "model_version", "latency_us", "features_0",
            "out_label", "out_probabilities_0", "truth"} <= set(df.columns), df.columns
    row = df[df.request_id == rid].iloc[0]
    assert row.truth == "1" and row.features_3 == 4.0
    # DataFrame requests keep their column names.
    assert {"a", "b", "c", "d"} <= set(df.columns)

    # Metrics carry the deployment, variant and version.
    text = requests.get(f"{url}/metrics", timeout=10).text
    assert f'loopml_inference_requests_total{{deployment="{dep}",variant="candidate",model_version="{v3}",status="ok"}}' in text

    # Promote the candidate; delete.
    r = requests.post(f"{url}{API}/{dep}/promote", timeout=30)
    assert r.json()["strategy"] == "single" and r.json()["variants"][0]["name"] == "candidate"
    assert requests.delete(f"{url}{API}/{dep}", timeout=30).status_code == 200
    assert requests.post(f"{url}/v2/models/{dep}/infer", json=ROW, timeout=30).status_code == 404


def test_deployments_survive_a_restart(start_server, tmp_path):
    data = tmp_path / "data"
    srv = start_server(data)
    _, name, (v1, _v2, v3) = register_versions(srv.url)
    dep = unique("kept")
    r = requests.post(f"{srv.url}{API}", json=canary(dep, name, v3, 40), timeout=60)
    assert r.status_code == 201, r.text
    r = requests.post(f"{srv.url}{API}/{dep}/traffic", json={"percent": 10}, timeout=30)
    assert r.json()["spec"]["policy"]["percent"] == 10
    s = requests.Session()
    for _ in range(50):
        assert s.post(f"{srv.url}/v2/models/{dep}/infer", json=ROW, timeout=30).status_code == 200
    srv.stop()
    srv = start_server(data)
    st = requests.get(f"{srv.url}{API}/{dep}", timeout=30).json()
    assert st["spec"]["policy"]["percent"] == 10
    assert sum(v["requests"] for v in st["variants"]) == 50
    assert [v["model_version"] for v in st["variants"]] == [v1, v3]
    assert any("traffic set to 10" in e["message"] for e in st["events"])
    assert requests.post(f"{srv.url}/v2/models/{dep}/infer", json=ROW, timeout=30).status_code == 200
    log = requests.get(f"{srv.url}{API}/{dep}/log", params={"format": "json"}, timeout=30).json()
    assert log["count"] == 51
