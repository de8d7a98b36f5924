#!/usr/bin/env python3
"""Collects the per-server JSON written by run.sh into one results file and prints Markdown tables.

Standard library only (runs on the system python3). Ratios compare loopml with each anchor:
"N× faster" / "N× slower" for times and throughput, "N× less" / "N× more" for memory.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

# Ratio columns: (ours, theirs, heading). Each appears when both servers ran.
PAIRS = [
    ("loopml", "mlflow", "loopml vs mlflow"),
    ("loopml", "fasttrackml", "loopml vs fasttrackml"),
    ("loopml-pg", "mlflow-pg", "loopml-pg vs mlflow-pg"),
    ("loopml-pg2", "loopml-pg", "2 loopml replicas vs 1 (pg)"),
]


def read_json(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def load(raw, server, workload):
    path = os.path.join(raw, f"{server}-{workload}.json")
    if not os.path.exists(path):
        return None
    try:
        r = read_json(path)
    except (ValueError, IndexError) as e:
        return {"error": f"unreadable result: {e}"}
    settle = os.path.join(raw, f"{server}-{workload}.settle.json")
    if os.path.exists(settle):
        try:
            r["settle_before_start"] = read_json(settle)
        except (ValueError, IndexError):
            pass
    return r


def machine():
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            info["mem_gib"] = round(kb / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def git_rev(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------------------------------------
# Metric extraction: (label, function(result) -> number or None, better: "lower"|"higher", kind)

def dig(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def mib(kb):
    return None if kb is None else kb / 1024


def cold_median(r, *path):
    reps = (r or {}).get("reps") or []
    vals = [dig(x, *path) for x in reps]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def ingest_wall(r):
    """Wall time; for a run stopped at the deadline, the full run's time at the measured rate."""
    if r.get("partial") and r.get("batches_per_s"):
        return r["expected_batches"] / r["batches_per_s"]
    return r.get("wall_s")


WORKLOADS = {
    "ingest": {
        "title": "(a) ingest: {ingest_clients} clients × {ingest_runs} runs × {ingest_steps} "
                 "log-batch calls × {ingest_metrics} metrics",
        "rows": [
            ("wall time (s)", ingest_wall, "lower", "time"),
            ("log-batch calls/s", lambda r: r.get("batches_per_s"), "higher", "time"),
            ("log-batch p50 (ms)", lambda r: dig(r, "log_batch_latency", "median_ms"), "lower", "time"),
            ("log-batch p95 (ms)", lambda r: dig(r, "log_batch_latency", "p95_ms"), "lower", "time"),
            ("peak RSS (MiB)", lambda r: mib(dig(r, "memory", "peak_rss_kb")), "lower", "mem"),
            ("PSS at end (MiB)", lambda r: mib(dig(r, "memory", "end_pss_kb")), "lower", "mem"),
            ("server CPU (s)", lambda r: dig(r, "memory", "server_cpu_s"), "lower", "cpu"),
            ("load generator CPU (s)", lambda r: dig(r, "memory", "loadgen_cpu_s"), None, "count"),
        ],
    },
    "search": {
        "title": "(b) search: {search_runs} runs (10 metrics, 10 params, 5 tags); {search_queries} × "
                 "runs/search `metrics.m1 > 0.5 AND params.p1 = 'x'` order by `metrics.m2 DESC`, "
                 "max_results 1000",
        "rows": [
            ("search p50 (ms)", lambda r: dig(r, "latency", "median_ms"), "lower", "time"),
            ("search p95 (ms)", lambda r: dig(r, "latency", "p95_ms"), "lower", "time"),
            ("runs returned", lambda r: r.get("returned_runs"), None, "count"),
            ("populate (s)", lambda r: r.get("populate_s"), "lower", "time"),
            ("peak RSS (MiB)", lambda r: mib(dig(r, "memory", "peak_rss_kb")), "lower", "mem"),
        ],
    },
    "history": {
        "title": "(c) metric history: {history_points} points of one metric, GET metrics/get-history "
                 "max_results=25000 following next_page_token, {history_reps} fetches",
        "rows": [
            ("fetch p50 (ms)", lambda r: dig(r, "latency", "median_ms"), "lower", "time"),
            ("fetch p95 (ms)", lambda r: dig(r, "latency", "p95_ms"), "lower", "time"),
            ("pages per fetch", lambda r: r.get("pages_per_fetch"), None, "count"),
            ("log points (s)", lambda r: r.get("log_s"), "lower", "time"),
            ("peak RSS (MiB)", lambda r: mib(dig(r, "memory", "peak_rss_kb")), "lower", "mem"),
        ],
    },
    "coldstart": {
        "title": "(d) cold start: spawn → first 200 on {ready_path}, fresh data dir; idle memory "
                 "2 s later, and again once the process tree is idle (<10% of a core for 1 s); "
                 "median of {cold_reps}",
        "rows": [
            ("start to ready (ms)", lambda r: cold_median(r, "ready", "ready_ms"), "lower", "time"),
            ("idle RSS (MiB)", lambda r: mib(cold_median(r, "idle", "rss_kb")), "lower", "mem"),
            ("idle PSS (MiB)", lambda r: mib(cold_median(r, "idle", "pss_kb")), "lower", "mem"),
            ("processes", lambda r: cold_median(r, "idle", "procs"), None, "count"),
            # At least 1,000 by construction (two quiet 500 ms windows), so no ratio.
            ("settled after (ms)", lambda r: cold_median(r, "settle", "settle_ms"), None, "count"),
            ("settled RSS (MiB)", lambda r: mib(cold_median(r, "settled", "rss_kb")), "lower", "mem"),
            ("settled PSS (MiB)", lambda r: mib(cold_median(r, "settled", "pss_kb")), "lower", "mem"),
        ],
    },
}


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float) and not v.is_integer():
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return f"{int(v):,}"


def ratio(ours, theirs, better, kind):
    if better is None or ours in (None, 0) or theirs in (None, 0):
        return "—"
    r = theirs / ours if better == "lower" else ours / theirs
    good, bad = ("less", "more") if kind in ("mem", "cpu") else ("faster", "slower")
    word, x = (good, r) if r >= 1 else (bad, 1 / r)
    num = f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"
    return f"{num}× {word}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--servers", required=True)
    ap.add_argument("--scale", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()

    servers = [s for s in a.servers.split(",") if s]
    params = dict(kv.split("=", 1) for kv in a.params.split(","))
    versions = {}
    with open(a.versions) as f:
        for line in f:
            name, version, cmd = line.rstrip("\n").split("\t")
            versions[name] = {"version": version, "command": cmd}

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scale": float(a.scale),
        "params": params,
        "machine": machine(),
        "git_commit": git_rev(root),
        "servers": versions,
        "workloads": {},
    }
    out = []
    out.append(f"## loopml tracking benchmark — {results['date']}")
    m = results["machine"]
    out.append("")
    out.append(f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('mem_gib', '?')} GiB; "
               f"BENCH_SCALE={a.scale}; servers without `-pg` on SQLite, `-pg` ones on one local "
               f"PostgreSQL 15 (a fresh database each; its own CPU and memory are not in the "
               f"server columns), 127.0.0.1, load generator in Rust (ureq, keep-alive).")
    for s in servers:
        v = versions.get(s, {})
        out.append(f"- **{s}** {v.get('version', '?')}: `{v.get('command', '?')}`")

    pairs = [p for p in PAIRS if p[0] in servers and p[1] in servers]
    cols = servers + [h for _, _, h in pairs]
    for wl, spec in WORKLOADS.items():
        per = {s: load(a.raw, s, wl) for s in servers}
        if all(v is None for v in per.values()):
            continue
        results["workloads"][wl] = per
        out.append("")
        out.append("### " + spec["title"].format(**params))
        out.append("")
        out.append("| metric | " + " | ".join(cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for label, fn, better, kind in spec["rows"]:
            vals = {}
            for s in servers:
                r = per.get(s)
                vals[s] = None if not r or "error" in r else fn(r)
            cells = [fmt(vals[s]) for s in servers]
            if label.startswith("wall time"):
                cells = [c + (" (est.)" if (per.get(s) or {}).get("partial") else "")
                         for c, s in zip(cells, servers)]
            for ours, theirs, _ in pairs:
                cells.append(ratio(vals.get(ours), vals.get(theirs), better, kind))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        notes = []
        for s in servers:
            r = per.get(s)
            if r is None:
                notes.append(f"{s}: no result")
            elif "error" in r:
                notes.append(f"{s}: FAILED — {r['error']}")
            else:
                errs = dig(r, "errors", "count")
                if errs:
                    notes.append(f"{s}: {errs} request errors, e.g. {dig(r, 'errors', 'first')[:1]}")
                if r.get("partial"):
                    notes.append(f"{s}: stopped at the deadline after {r.get('batches')} of "
                                 f"{r.get('expected_batches')} batches in {r.get('wall_s')} s; its "
                                 f"wall time is estimated from the measured rate")
        if wl == "search":
            ok = {s: per[s] for s in servers if per.get(s) and "error" not in per[s]}
            counts = {s: r.get("total_matches") for s, r in ok.items()}
            expected = next((r.get("expected_matches") for r in ok.values()), None)
            same = len(set(counts.values())) <= 1
            hashes = {r.get("order_hash") for r in ok.values()}
            checks = all(all(dig(r, "checks").values()) for r in ok.values())
            notes.append(
                f"sanity: matching runs per server {counts} (expected {expected}): "
                f"{'same' if same else 'DIFFERENT'}; per-server checks (count, m2 order, filter) "
                f"{'pass' if checks else 'FAIL: ' + json.dumps({s: r.get('checks') for s, r in ok.items()})}; "
                f"order of returned runs {'identical' if len(hashes) <= 1 else 'differs'} across servers")
        if wl == "history":
            for s in servers:
                r = per.get(s)
                if r and "error" not in r:
                    c = r.get("checks", {})
                    if not (c.get("points_ok") and c.get("steps_ok")):
                        notes.append(f"{s}: history check failed {c}")
            ok = [s for s in servers if per.get(s) and "error" not in per[s]]
            if ok:
                notes.append(f"sanity: {params['history_points']} points returned by "
                             f"{', '.join(ok)}, every step present")
        for n in notes:
            out.append("")
            out.append(f"_{n}_")

    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
