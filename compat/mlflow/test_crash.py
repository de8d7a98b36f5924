"""Durability: every log_batch the server acknowledged (HTTP 200) survives `kill -9`, and a
batch is all-or-nothing, both when it fails validation and when the process dies under it."""

import threading
import time

import requests

from loopml_server import assert_error, params_of, tags_of

METRICS_PER_BATCH = 20


def batch_body(rid: str, i: int) -> dict:
    # Batch i owns metric keys b{i}-0..b{i}-19 (all at step i), param p{i} and tag t{i}, so
    # what survives can be traced back to the batch that wrote it.
    return {
        "run_id": rid,
        "metrics": [
            {"key": f"b{i}-{j}", "value": float(i * 100 + j), "timestamp": 1_000 + i, "step": i}
            for j in range(METRICS_PER_BATCH)
        ],
        "params": [{"key": f"p{i}", "value": str(i)}],
        "tags": [{"key": f"t{i}", "value": str(i)}],
    }


def assert_batches_intact(srv, rid: str, acked, unacked) -> tuple[dict, dict]:
    """Every acknowledged batch is stored whole, and every other one is whole or absent, never
    half-written. Returns the run's params and tags."""
    run = srv.get_run(rid)
    params, tags = params_of(run), tags_of(run)
    metrics = {m["key"] for m in run.get("data", {}).get("metrics", [])}
    lost = []
    for i in acked:
        hist = srv.history(rid, f"b{i}-{METRICS_PER_BATCH - 1}")
        if [(m["step"], m["value"]) for m in hist] != [(i, float(i * 100 + METRICS_PER_BATCH - 1))]:
            lost.append(f"batch {i}: metric history {hist}")
        if params.get(f"p{i}") != str(i) or tags.get(f"t{i}") != str(i):
            lost.append(f"batch {i}: param/tag missing")
    assert not lost, f"{len(lost)} acknowledged batches lost or damaged: {lost[:5]}"
    for i in unacked:
        present = [f"b{i}-{j}" in metrics for j in range(METRICS_PER_BATCH)]
        whole = all(present) and params.get(f"p{i}") == str(i) and tags.get(f"t{i}") == str(i)
        absent = not any(present) and f"p{i}" not in params and f"t{i}" not in tags
        assert whole or absent, f"batch {i} half-written: metrics {present}"
    return params, tags


def test_acknowledged_batches_survive_kill_9(start_server, tmp_path):
    data_dir = tmp_path / "crash-data"
    srv = start_server(data_dir)
    rid = srv.new_run()
    srv.ok("POST", "runs/log-parameter", json={"run_id": rid, "key": "fixed", "value": "1"})

    # Two batches that fail validation: nothing of either may be written.
    dup = batch_body(rid, 900_001)
    dup["params"] = [{"key": "dup", "value": "1"}, {"key": "dup", "value": "2"}]
    assert_error(srv.api("POST", "runs/log-batch", json=dup), 400, "INVALID_PARAMETER_VALUE")
    overwrite = batch_body(rid, 900_002)
    overwrite["params"] = [{"key": "new-in-bad-batch", "value": "x"}, {"key": "fixed", "value": "2"}]
    assert_error(srv.api("POST", "runs/log-batch", json=overwrite), 400, "INVALID_PARAMETER_VALUE")

    acked: list[int] = []
    sent: list[int] = []
    stop = threading.Event()
    failure: list[str] = []

    def writer():
        session = requests.Session()
        i = 0
        while not stop.is_set():
            sent.append(i)
            try:
                r = session.post(f"{srv.url}/api/2.0/mlflow/runs/log-batch", json=batch_body(rid, i), timeout=10)
            except requests.RequestException:
                return  # the server is gone: batch i is unacknowledged
            if r.status_code != 200:
                if srv.alive():
                    failure.append(f"batch {i}: {r.status_code} {r.text[:300]}")
                return
            acked.append(i)
            i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(1.5)
    srv.kill9()
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive(), "writer thread hung after the kill"
    assert not failure, failure
    assert len(acked) >= 5, f"only {len(acked)} batches acknowledged in 1.5 s"

    srv2 = start_server(data_dir)  # same SQLite file and artifact folder, new process
    # The batch in flight at the kill (if any) is whole or absent, never half-written.
    params, tags = assert_batches_intact(srv2, rid, acked, set(sent) - set(acked))

    # The rejected batches left nothing behind, across the restart too.
    assert params.get("fixed") == "1"
    for bad in (900_001, 900_002):
        assert srv2.history(rid, f"b{bad}-0") == [], f"rejected batch {bad} wrote metrics"
        assert f"t{bad}" not in tags, f"rejected batch {bad} wrote a tag"
    assert "dup" not in params and "new-in-bad-batch" not in params

    # And the restarted server keeps accepting writes to the same run.
    srv2.ok("POST", "runs/log-batch", json=batch_body(rid, 999_999))
    assert len(srv2.history(rid, "b999999-0")) == 1
