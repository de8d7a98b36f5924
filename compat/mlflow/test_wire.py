"""Raw HTTP edges the client relies on (or that a careless client could hit)."""

import http.client
import json

import requests


def new_run(server):
    r = server.api("POST", "runs/create", json={"experiment_id": "0"})
    assert r.status_code == 200
    return r.json()["run"]["info"]["run_id"]


def test_post_without_content_type(server):
    r = requests.post(server.url + "/api/2.0/mlflow/experiments/create", data='{"name": "x"}')
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_batch_limits(server):
    rid = new_run(server)
    r = server.api("POST", "runs/log-batch", json={
        "run_id": rid, "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "runs/log-batch", json={
        "run_id": rid, "params": [{"key": f"p{i}", "value": "v"} for i in range(101)]})
    assert r.status_code == 400
    r = server.api("POST", "runs/log-batch", json={
        "run_id": rid, "params": [{"key": "dup", "value": "1"}, {"key": "dup", "value": "2"}]})
    assert r.status_code == 400
    assert server.api("GET", f"runs/get?run_id={rid}").json()["run"]["data"].get("params", []) == []


def test_value_limits_and_key_rules(server):
    rid = new_run(server)
    assert server.api("POST", "runs/log-parameter", json={"run_id": rid, "key": "long", "value": "x" * 7000}).status_code == 200
    params = server.api("GET", f"runs/get?run_id={rid}").json()["run"]["data"]["params"]
    assert len(params[0]["value"]) == 6000
    r = server.api("POST", "runs/set-tag", json={"run_id": rid, "key": "k" * 251, "value": "v"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    for bad in ["bad|name", "../x"]:
        r = server.api("POST", "runs/log-metric", json={"run_id": rid, "key": bad, "value": 1, "timestamp": 1})
        assert r.status_code == 400, bad
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "runs/log-metric", json={"run_id": rid, "key": "inf", "value": "Infinity", "timestamp": "5", "step": "7"})
    assert r.status_code == 200
    m = server.api("GET", f"runs/get?run_id={rid}").json()["run"]["data"]["metrics"][0]
    assert m["value"] == "Infinity" and m["step"] == 7 and m["timestamp"] == 5
    r = server.api("POST", "runs/log-metric", json={"run_id": rid, "key": "s", "value": "abc", "timestamp": 1})
    assert r.status_code == 400


def test_artifact_edges(server):
    base = server.url + "/api/2.0/mlflow-artifacts"
    r = requests.get(base + "/artifacts", params={"path": "0/nothing/here"})
    assert r.status_code == 200 and r.json().get("files", []) == []
    r = requests.get(base + "/artifacts/0/nothing/here.txt")
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # requests normalises literal dot segments away, so send those with http.client.
    for bad in ["0/../../etc/passwd", "0/a/%2E%2E/%2E%2E/%2E%2E/x", "0/a/..%2F..%2F..%2Fx"]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("PUT", "/api/2.0/mlflow-artifacts/artifacts/" + bad, body=b"x")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 400, bad
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    r = requests.get(base + "/artifacts", params={"path": "../"})
    assert r.status_code == 400
    r = requests.get(base + "/artifacts", params={"path": "/etc"})
    assert r.status_code == 400
    r = requests.post(base + "/mpu/create/0/x", json={"path": "f", "num_parts": 2})
    assert r.status_code == 501 and r.json()["error_code"] == "NOT_IMPLEMENTED"


def test_unknown_endpoint_and_missing_params(server):
    r = server.api("GET", "no/such/thing")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    r = server.api("GET", "runs/get")
    assert r.status_code == 400 and "run_id" in r.json()["message"]
    r = server.api("POST", "experiments/create", json={})
    assert r.status_code == 400 and "name" in r.json()["message"]
    r = server.api("POST", "runs/log-batch", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
