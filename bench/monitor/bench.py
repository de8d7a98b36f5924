#!/usr/bin/env python3
"""Driver of bench/monitor (run.sh starts the server): writes a 100k-row reference of 20
numeric features, sends 100k predictions (half the features shifted) to the served forest in
batches through /invocations (so they land in the inference log with their column names), adds
the reference as a dataset version, applies a monitor with one feature_drift check over a
100k-row window, evaluates it BENCH_REPEAT times (wall time over HTTP and the server's own
evaluation time), then runs Evidently's DataDriftPreset on the same reference and the window
file the monitor wrote, and prints the table and the ratio."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd


def call(url, method="GET", body=None, ctype="application/json"):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": ctype})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"{}")


def main():
    ap = argparse.ArgumentParser()
    for a in ("--url", "--loopml", "--work", "--evidently", "--venv-python", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    cols = [f"f{i}" for i in range(20)]
    rng = np.random.default_rng(3)
    ref = pd.DataFrame(rng.normal(size=(a.rows, 20)).astype("float32"), columns=cols)
    ref_file = os.path.join(a.work, "reference.parquet")
    ref.to_parquet(ref_file)
    cur = rng.normal(size=(a.rows, 20)).astype("float32")
    cur[:, :10] += 0.3
    for _ in range(600):  # wait for the server
        try:
            call(a.url + "/health")
            break
        except Exception:
            time.sleep(0.1)
    t0 = time.perf_counter()
    batch = 2000
    for i in range(0, a.rows, batch):
        body = json.dumps({"dataframe_split": {"columns": cols, "data": cur[i:i + batch].tolist()}})
        call(a.url + "/invocations?model=scored", "POST", body)
    send_s = time.perf_counter() - t0
    print(f"[bench] sent {a.rows} predictions in {send_s:.1f} s", file=sys.stderr)
    subprocess.run([a.loopml, "data", "add", "--name", "bench-ref", ref_file, "--server", a.url],
                   check=True, stdout=subprocess.DEVNULL)
    monitor = {"name": "bench", "deployment": "scored", "reference": "bench-ref@1",
               "window": {"rows": a.rows}, "min_rows": 1000,
               "checks": [{"feature_drift": {"drift_share": 0.5}}]}
    call(a.url + "/api/2.0/loopml/monitors", "POST", json.dumps(monitor))
    walls, servers, evals = [], [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        r = call(a.url + "/api/2.0/loopml/monitors/bench/evaluate", "POST", "{}")
        walls.append(time.perf_counter() - t)
        servers.append(r["evaluation"]["seconds"])
        evals.append(r["evaluation"])
    e = evals[-1]
    res = e["results"][0]
    assert e["rows"] == a.rows, e["rows"]
    drifted = sorted(c["column"] for c in res["details"]["columns"] if c["drifted"])
    window = os.path.join(a.work, "data", "monitor", "windows", "bench.parquet")
    design = os.path.join(a.work, "design.json")
    with open(design, "w") as f:
        json.dump({"numerical_columns": cols, "categorical_columns": []}, f)
    ev_out = os.path.join(a.work, "evidently.json")
    t = time.perf_counter()
    subprocess.run([a.venv_python, a.evidently, ref_file, window, "--columns", design, "--out", ev_out],
                   check=True, stdout=subprocess.DEVNULL)
    ev_wall = time.perf_counter() - t
    with open(ev_out) as f:
        ev = json.load(f)
    ev_drifted = sorted(c for c, v in ev["columns"].items() if v.get("drifted"))
    med_wall, med_server = statistics.median(walls), statistics.median(servers)
    out = {
        "rows": a.rows, "columns": 20, "repeat": a.repeat,
        "loopml": {"wall_s": walls, "server_s": servers, "median_wall_s": med_wall,
                   "median_server_s": med_server, "drifted": drifted, "status": res["status"]},
        "evidently": {"wall_s": ev_wall, "seconds": ev.get("seconds", {}), "drifted": ev_drifted},
        "verdicts_agree": drifted == ev_drifted,
        "machine": os.uname().nodename, "cpus": os.cpu_count(),
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    ev_compute = ev.get("seconds", {}).get("report")
    print(f"Drift check over a {a.rows:,}-prediction window, 20 numeric columns "
          f"({os.cpu_count()} CPUs; median of {a.repeat} loopml evaluations)\n")
    print("| tool | what is timed | seconds |")
    print("|---|---|---|")
    print(f"| loopml monitor | `POST …/monitors/bench/evaluate` (log read, window written, drift of 20 columns), wall | **{med_wall:.3f}** |")
    print(f"| loopml monitor | the server's own evaluation time | {med_server:.3f} |")
    print(f"| Evidently 0.7 DataDriftPreset | process wall (import, read both Parquet files, report) | {ev_wall:.3f} |")
    if ev_compute:
        print(f"| Evidently 0.7 DataDriftPreset | `Report.run` only (data already in pandas) | {ev_compute:.3f} |")
    print()
    print(f"- target: under 1 s: {'✓' if med_wall < 1.0 else '✗'} ({med_wall:.3f} s)")
    print(f"- Evidently / loopml: {ev_wall / med_wall:.1f}× (wall), {(ev_compute or 0) / med_wall:.1f}× (Evidently's report alone vs loopml's whole evaluation)")
    print(f"- drifted columns: loopml {len(drifted)}, Evidently {len(ev_drifted)}; verdicts agree: {drifted == ev_drifted}")
    print(f"- results: {a.out}")


if __name__ == "__main__":
    main()
