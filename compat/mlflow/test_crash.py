"""Acknowledged writes survive kill -9 of the server."""

import threading
import time

import requests


def test_acknowledged_batches_survive_kill_9(fresh_server):
    srv = fresh_server()
    rid = srv.api("POST", "runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
    acked, stop = [], threading.Event()

    def writer():
        s = requests.Session()
        i = 0
        while not stop.is_set():
            body = {"run_id": rid, "metrics": [{"key": f"k{j}", "value": i, "timestamp": i, "step": i} for j in range(50)],
                    "params": [{"key": f"p{i}", "value": str(i)}]}
            try:
                r = s.post(f"{srv.url}/api/2.0/mlflow/runs/log-batch", json=body, timeout=5)
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            acked.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.5)
    srv.kill9()
    stop.set()
    t.join()
    assert len(acked) > 20, f"only {len(acked)} batches acknowledged before the kill"

    srv2 = fresh_server()
    run = srv2.api("GET", f"runs/get?run_id={rid}").json()["run"]
    params = {p["key"] for p in run["data"].get("params", [])}
    steps = {m["step"] for m in srv2.api("GET", f"metrics/get-history?run_id={rid}&metric_key=k49").json()["metrics"]}
    for i in acked:
        assert f"p{i}" in params, f"batch {i}: param lost"
        assert i in steps, f"batch {i}: metric lost"
    # every surviving batch is whole: its 50 metrics and its param, or nothing
    for i in steps:
        assert f"p{i}" in params
