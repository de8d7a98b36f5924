"""Serving a registered ONNX model, end to end with the real `mlflow` client and `requests`
against the real binary: the model directory `mlflow.onnx.save_model` writes is logged as a run's
artifacts and registered; loopml loads `models:/<name>@champion` and answers the Open Inference
Protocol v2 and MLflow's `/invocations` with the outputs ONNX Runtime gives in Python.

loopml-only endpoints, so skipped under COMPAT_EXTERNAL_URL."""

import json
import os
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from loopml_server import unique

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("COMPAT_EXTERNAL_URL", "").strip()), reason="loopml's serving endpoints")

FIXTURES = Path(__file__).resolve().parents[2] / "crates" / "loopml-serving" / "tests" / "fixtures"


@pytest.fixture(scope="module")
def served(server):
    client = MlflowClient(server.url)
    mlflow.set_experiment(experiment_id=client.create_experiment(unique("serve")))
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(FIXTURES / "mlflow_onnx_model"), "model")
    name = unique("rf")
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    endpoint = unique("ep")
    r = requests.post(f"{server.url}/v2/repository/models/{endpoint}/load",
                      json={"parameters": {"uri": f"models:/{name}@champion"}}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": endpoint, "version": mv.version}
    if os.environ.get("COMPAT_ARTIFACTS_URL", "").strip() and hasattr(server, "data_dir"):
        # Artifacts in an object store: the model was fetched into the server's local cache.
        cache = Path(server.data_dir) / "model-cache"
        assert cache.is_dir() and any((d / "MLmodel").is_file() for d in cache.iterdir()), \
            "the model was not fetched from the artifact store"
    expected = next(m for m in json.loads((FIXTURES / "expected.json").read_text())["models"]
                    if m["file"] == "sk_rf_classifier.onnx")
    return {"endpoint": endpoint, "name": name, "expected": expected, "version": mv.version}


def close(a, b, tol=1e-6):
    return all(abs(x - y) <= tol for x, y in zip(a, b)) and len(a) == len(b)


def test_open_inference_protocol(server, served):
    url, ep, exp = server.url, served["endpoint"], served["expected"]
    assert requests.get(f"{url}/v2/health/live", timeout=10).status_code == 200
    assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    meta = requests.get(f"{url}/v2/models/{ep}", timeout=10).json()
    assert meta["name"] == ep and meta["versions"] == [served["version"]]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert requests.get(f"{url}/v2/models/{ep}/ready", timeout=10).json()["ready"] is True

    rows = exp["test_inputs"]["features"]
    body = {"id": "req-1", "inputs": [
        {"name": "features", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}
    r = requests.post(f"{url}/v2/models/{ep}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "req-1" and r.json()["model_version"] == served["version"]
    assert out["label"]["data"] == exp["onnxruntime"]["label"]["data"]
    want = [x for row in exp["onnxruntime"]["probabilities"]["data"] for x in row]
    assert out["probabilities"]["shape"] == [len(rows), 3]
    assert close(out["probabilities"]["data"], want)
    # Only the outputs asked for; a version path works too.
    body["outputs"] = [{"name": "label"}]
    r = requests.post(f"{url}/v2/models/{ep}/versions/{served['version']}/infer", json=body, timeout=30)
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]


def test_mlflow_scoring_protocol(server, served):
    url, ep, exp = server.url, served["endpoint"], served["expected"]
    rows = exp["test_inputs"]["features"]
    cols = ["a", "b", "c", "d"]
    payloads = [
        ("application/json", json.dumps({"dataframe_split": {"columns": cols, "data": rows}})),
        ("application/json", json.dumps({"dataframe_records": [dict(zip(cols, r)) for r in rows]})),
        ("application/json", json.dumps({"instances": rows})),
        ("application/json", json.dumps({"inputs": {"features": rows}})),
        ("text/csv", "a,b,c,d\n" + "\n".join(",".join(str(x) for x in r) for r in rows)),
    ]
    for ctype, data in payloads:
        r = requests.post(f"{url}/invocations", params={"model": ep}, data=data,
                          headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code == 200, (data[:80], r.text)
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == exp["onnxruntime"]["label"]["data"], data[:80]
        for p, want in zip(preds, exp["onnxruntime"]["probabilities"]["data"]):
            assert close(p["probabilities"], want), data[:80]


def test_bad_requests_get_protocol_errors(server, served):
    url, ep = server.url, served["endpoint"]
    infer = f"{url}/v2/models/{ep}/infer"
    cases = [
        (infer, {"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 400, "'nope'"),
        (infer, {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "'features'"),
        (infer, {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "holds 4"),
        (infer, {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, 400, "'features'"),
        (infer, {"inputs": []}, 400, "missing input 'features'"),
        (f"{url}/v2/models/{unique('none')}/infer", {"inputs": []}, 404, "not loaded"),
        (f"{url}/v2/repository/models/{unique('x')}/load", {"parameters": {"uri": "/etc/passwd"}}, 400, "registry URI"),
        (f"{url}/v2/repository/models/{unique('x')}/load", {"parameters": {"uri": f"models:/{unique('none')}@champion"}}, 404, "not found"),
    ]
    for path, body, status, text in cases:
        r = requests.post(path, json=body, timeout=30)
        assert r.status_code == status, (path, body, r.text)
        assert "error" in r.json() and text in r.json()["error"], (body, r.text)
    r = requests.post(f"{url}/invocations", params={"model": ep}, json={"nope": 1}, timeout=30)
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST", r.text
    r = requests.post(f"{url}/invocations", params={"model": ep}, data="x",
                      headers={"Content-Type": "application/xml"}, timeout=30)
    assert r.status_code == 400 and "content type" in r.json()["message"]
    # Unloading leaves nothing behind.
    other = unique("ep")
    r = requests.post(f"{url}/v2/repository/models/{other}/load",
                      json={"parameters": {"uri": f"models:/{served['name']}/{served['version']}"}}, timeout=30)
    assert r.status_code == 200, r.text
    assert requests.post(f"{url}/v2/repository/models/{other}/unload", timeout=10).status_code == 200
    assert requests.get(f"{url}/v2/models/{other}", timeout=10).status_code == 404


def test_tritonclient_http(server, served):
    """NVIDIA's real client: liveness, readiness, metadata, and inference with binary tensors
    (its default) and with JSON, asking for all outputs or some."""
    import numpy as np
    import tritonclient.http as httpclient

    ep, exp = served["endpoint"], served["expected"]
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(ep)
    meta = client.get_model_metadata(ep)
    assert meta["inputs"][0]["name"] == "features" and meta["platform"] == "onnxruntime_onnx"

    rows = np.array(exp["test_inputs"]["features"], dtype=np.float32)
    want_p = np.array(exp["onnxruntime"]["probabilities"]["data"], dtype=np.float32)
    for binary in (True, False):
        x = httpclient.InferInput("features", list(rows.shape), "FP32")
        x.set_data_from_numpy(rows, binary_data=binary)
        # No outputs named: every output, binary (tritonclient sets binary_data_output).
        res = client.infer(ep, [x], request_id="t1")
        assert res.as_numpy("label").tolist() == exp["onnxruntime"]["label"]["data"]
        assert np.allclose(res.as_numpy("probabilities"), want_p, atol=1e-6)
        # One output named, as JSON or binary.
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        res = client.infer(ep, [x], outputs=[out], model_version=served["version"])
        assert np.allclose(res.as_numpy("probabilities"), want_p, atol=1e-6)
        assert res.as_numpy("label") is None

    bad = httpclient.InferInput("features", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(Exception, match="features"):
        client.infer(ep, [bad])
    client.close()


def test_endpoint_follows_the_alias_with_no_failed_requests(server):
    """An endpoint loaded from models:/name@champion swaps to the version the alias moves to,
    within a second, while requests keep flowing; none fails."""
    import threading
    import time

    client = MlflowClient(server.url)
    mlflow.set_experiment(experiment_id=client.create_experiment(unique("swap")))
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(FIXTURES / "mlflow_onnx_model"), "model")
    name = unique("swap")
    client.create_registered_model(name)
    source = f"runs:/{run.info.run_id}/model"
    v1 = client.create_model_version(name, source, run_id=run.info.run_id)
    v2 = client.create_model_version(name, source, run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", v1.version)
    ep = unique("live")
    r = requests.post(f"{server.url}/v2/repository/models/{ep}/load",
                      json={"parameters": {"uri": f"models:/{name}@champion", "max_batch_size": 8,
                                           "max_queue_delay_us": 500}}, timeout=30)
    assert r.status_code == 200 and r.json()["version"] == v1.version, r.text
    body = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    versions, failures, stop = [], [], threading.Event()

    def hammer():
        s = requests.Session()
        while not stop.is_set():
            resp = s.post(f"{server.url}/v2/models/{ep}/infer", json=body, timeout=30)
            if resp.status_code != 200:
                failures.append(resp.text)
            else:
                versions.append(resp.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    client.set_registered_model_alias(name, "champion", v2.version)
    moved = time.monotonic()
    while time.monotonic() - moved < 5:
        meta = requests.get(f"{server.url}/v2/models/{ep}", timeout=10).json()
        if meta["versions"] == [v2.version]:
            break
        time.sleep(0.02)
    swap_s = time.monotonic() - moved
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert meta["versions"] == [v2.version], meta
    assert swap_s < 1.0, f"swap took {swap_s:.3f} s"
    assert failures == [], failures[:3]
    assert versions and versions[0] == v1.version and versions[-1] == v2.version
    # Batching settings survive the swap.
    cfg = requests.get(f"{server.url}/v2/models/{ep}/config", timeout=10).json()
    assert cfg["max_batch_size"] == 8 and cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 500
