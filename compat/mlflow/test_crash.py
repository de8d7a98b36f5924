"""Durability: every log_batch the server acknowledged (HTTP 200) survives `kill -9`, and a
batch is all-or-nothing, both when it fails validation and when the process dies under it."""

import os
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


def test_kill_9_loop_during_concurrent_ingest(start_server, tmp_path):
    """The kill -9 contract under load, five times over: four log-batch writers on their own
    runs, one registry writer (model versions) and one artifact writer run at once; the server
    is killed at a random moment, restarted on the same data, and after every restart every
    acknowledged write is there (batches whole, versions, artifacts byte for byte), nothing is
    half-written, a run's latest metric equals the last of its history, and writing goes on."""
    import random

    rng = random.Random(20)
    data_dir = tmp_path / "kill-loop"
    srv = start_server(data_dir)
    runs = [srv.new_run() for _ in range(4)]
    model = "kill-loop-model"
    srv.ok("POST", "registered-models/create", json={"name": model})
    acked: dict[str, list[int]] = {r: [] for r in runs}
    sent: dict[str, list[int]] = {r: [] for r in runs}
    versions: list[str] = []
    artifacts: dict[str, bytes] = {}
    art_run = srv.get_run(runs[0])["info"]["artifact_uri"].split("mlflow-artifacts:/", 1)[1]
    failures: list[str] = []
    counter = {"batch": 0, "art": 0}
    lock = threading.Lock()

    def next_id(kind):
        with lock:
            counter[kind] += 1
            return counter[kind]

    def batch_writer(url, rid, stop):
        s = requests.Session()
        while not stop.is_set():
            i = next_id("batch")
            sent[rid].append(i)
            try:
                r = s.post(f"{url}/api/2.0/mlflow/runs/log-batch", json=batch_body(rid, i), timeout=10)
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            acked[rid].append(i)

    def registry_writer(url, stop):
        s = requests.Session()
        while not stop.is_set():
            try:
                r = s.post(f"{url}/api/2.0/mlflow/model-versions/create", timeout=10,
                           json={"name": model, "source": f"runs:/{runs[1]}/model", "run_id": runs[1]})
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            versions.append(r.json()["model_version"]["version"])

    def artifact_writer(url, stop):
        s = requests.Session()
        while not stop.is_set():
            n = next_id("art")
            body = (f"artifact {n} " * rng.randint(1, 2000)).encode()
            try:
                r = s.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art_run}/kill/{n}.txt",
                          data=body, timeout=10)
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            artifacts[f"kill/{n}.txt"] = body

    for cycle in range(5):
        stop = threading.Event()
        threads = [threading.Thread(target=batch_writer, args=(srv.url, r, stop), daemon=True) for r in runs]
        threads += [threading.Thread(target=registry_writer, args=(srv.url, stop), daemon=True),
                    threading.Thread(target=artifact_writer, args=(srv.url, stop), daemon=True)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.4, 1.2))
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), f"cycle {cycle}: a writer hung after the kill"
        srv = start_server(data_dir)
        for rid in runs:
            assert_batches_intact(srv, rid, acked[rid], set(sent[rid]) - set(acked[rid]))
            run = srv.get_run(rid)
            for m in run["data"].get("metrics", [])[:50]:
                hist = srv.history(rid, m["key"])
                last = max(hist, key=lambda h: (h["step"], h["timestamp"], h["value"]))
                assert m["value"] == last["value"], (cycle, m, last)
        listed = srv.ok("GET", "model-versions/search", params={"filter": f"name='{model}'",
                                                                 "max_results": 10000})
        stored = {v["version"] for v in listed.get("model_versions", [])}
        assert set(versions) <= stored, f"cycle {cycle}: versions lost {set(versions) - stored}"
        for path, body in list(artifacts.items())[-40:]:
            r = requests.get(f"{srv.url}/api/2.0/mlflow-artifacts/artifacts/{art_run}/{path}")
            assert r.status_code == 200 and r.content == body, (cycle, path, r.status_code)
    total = sum(len(a) for a in acked.values())
    assert total >= 40, f"only {total} batches acknowledged over five cycles"
    assert versions and artifacts
    # The store reopened cleanly every time and still takes writes.
    srv.ok("POST", "runs/log-batch", json=batch_body(runs[0], 10_000_000))
    if not os.environ.get("COMPAT_DATABASE_URL", "").strip():
        import sqlite3

        srv.stop()
        db = sqlite3.connect(os.path.join(str(data_dir), "loopml.db"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
