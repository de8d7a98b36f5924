#!/usr/bin/env python3
"""Collects the per-server JSON written by bench/registry/run.sh into one results file and prints
Markdown tables. Standard library only (runs on the system python3).

Ratios compare loopml with mlflow: "N× faster" / "N× slower" for times and throughput, "N× less" /
"N× more" for memory and CPU.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

TARGET = 30.0  # the target: loopml ≥ 30× mlflow on both workloads


def read_json(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def load(raw, server, part):
    path = os.path.join(raw, f"{server}-{part}.json")
    if not os.path.exists(path):
        return None
    try:
        return read_json(path)
    except (ValueError, IndexError) as e:
        return {"error": f"unreadable {part} result: {e}"}


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


def dig(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def mib(kb):
    return None if kb is None else kb / 1024


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not v.is_integer():
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return f"{int(v):,}"


def factor(ours, theirs, better):
    """How many times better loopml is (>1 better, <1 worse), or None."""
    if better is None or not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
        return None
    if ours <= 0 or theirs <= 0:
        return None
    return theirs / ours if better == "lower" else ours / theirs


def ratio_text(f, kind):
    if f is None:
        return "—"
    good, bad = ("less", "more") if kind in ("mem", "cpu") else ("faster", "slower")
    word, x = (good, f) if f >= 1 else (bad, 1 / f)
    num = f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"
    return f"{num}× {word}"


def query_rows(w):
    """Rows for workload w (search|alias): (label, fn(query result), better, kind)."""
    def lat(phase, q):
        return lambda r: dig(r, w, phase, "latency", q)

    def qps(phase):
        return lambda r: dig(r, w, phase, "qps")

    return [
        ("sequential p50 (ms)", lat("seq", "median_ms"), "lower", "time"),
        ("sequential p95 (ms)", lat("seq", "p95_ms"), "lower", "time"),
        ("sequential p50, new connection per query (ms)", lat("seq_fresh", "median_ms"), "lower", "time"),
        ("sequential p95, new connection per query (ms)", lat("seq_fresh", "p95_ms"), "lower", "time"),
        ("{clients} clients: queries/s", qps("conc"), "higher", "time"),
        ("{clients} clients: p50 (ms)", lat("conc", "median_ms"), "lower", "time"),
        ("{clients} clients: p95 (ms)", lat("conc", "p95_ms"), "lower", "time"),
        ("{clients} clients, new connection per query: queries/s", qps("conc_fresh"), "higher", "time"),
        ("{clients} clients, new connection per query: p50 (ms)", lat("conc_fresh", "median_ms"), "lower", "time"),
        ("{clients} clients, new connection per query: p95 (ms)", lat("conc_fresh", "p95_ms"), "lower", "time"),
    ]


SECTIONS = [
    ("search",
     "(a) search_model_versions: GET model-versions/search `filter=name='<random model>'` "
     "max_results=10000 (20 versions per answer); {queries} sequential queries, then {clients} "
     "clients × {per_client}",
     query_rows("search")),
    ("alias",
     "(b) get_model_version_by_alias: GET registered-models/alias `name=<random model>&alias=champion`; "
     "{queries} sequential queries, then {clients} clients × {per_client}",
     query_rows("alias")),
    ("broad",
     "(c) broad search: GET model-versions/search `filter=tags.team='<random team>'` "
     "max_results=1000 over all {total_versions} versions; {broad_queries} sequential queries",
     [
         ("sequential p50 (ms)", lambda r: dig(r, "broad", "seq", "latency", "median_ms"), "lower", "time"),
         ("sequential p95 (ms)", lambda r: dig(r, "broad", "seq", "latency", "p95_ms"), "lower", "time"),
         ("versions per answer (mean)", lambda r: dig(r, "broad", "seq", "returned_per_query"), None, "count"),
     ]),
]

SETUP_ROWS = [
    ("populate method", lambda s: dig(s, "populate", "method"), None, "count"),
    ("populate (s)", lambda s: dig(s, "populate", "populate_s"), "lower", "time"),
    ("populate writes/s", lambda s: dig(s, "populate", "writes_per_s"), "higher", "time"),
    ("data on disk (MiB)", lambda s: mib(dig(s, "disk", "disk_kb")), "lower", "mem"),
    ("start to ready on the populated data (ms)", lambda s: dig(s, "ready", "ready_ms"), "lower", "time"),
    ("idle RSS before queries (MiB)", lambda s: mib(dig(s, "idle", "rss_kb")), "lower", "mem"),
    ("idle PSS before queries (MiB)", lambda s: mib(dig(s, "idle", "pss_kb")), "lower", "mem"),
    ("processes", lambda s: dig(s, "idle", "procs"), None, "count"),
    ("peak RSS during queries (MiB)", lambda s: mib(dig(s, "query", "memory", "peak_rss_kb")), "lower", "mem"),
    ("PSS after queries (MiB)", lambda s: mib(dig(s, "query", "memory", "end_pss_kb")), "lower", "mem"),
    ("server CPU during queries (s)", lambda s: dig(s, "query", "memory", "server_cpu_s"), "lower", "cpu"),
    ("load generator CPU during queries (s)", lambda s: dig(s, "query", "memory", "loadgen_cpu_s"), None, "count"),
]


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
    params["total_versions"] = f"{int(params['models']) * int(params['versions']):,}"
    versions = {}
    with open(a.versions) as f:
        for line in f:
            name, version, cmd = line.rstrip("\n").split("\t")
            versions[name] = {"version": version, "command": cmd}

    per = {}
    for s in servers:
        per[s] = {
            "populate": load(a.raw, s, "populate"),
            "disk": load(a.raw, s, "disk"),
            "ready": load(a.raw, s, "query.ready"),
            "settle": load(a.raw, s, "query.settle"),
            "idle": load(a.raw, s, "idle"),
            "query": load(a.raw, s, "query"),
        }

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scale": float(a.scale),
        "params": params,
        "machine": machine(),
        "git_commit": git_rev(root),
        "servers": versions,
        "results": per,
    }

    out = []
    out.append(f"## loopml model registry benchmark — {results['date']}")
    m = results["machine"]
    out.append("")
    out.append(f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('mem_gib', '?')} GiB; "
               f"BENCH_SCALE={a.scale}: {int(params['models']):,} registered models × "
               f"{params['versions']} versions ({params['total_versions']}), alias `champion` on one "
               f"version each; servers on {'PostgreSQL 15 (scripts/postgres.sh, a fresh database each)' if any(x.endswith('-pg') for x in servers) else 'SQLite'}, 127.0.0.1; load generator in Rust (ureq, "
               f"keep-alive unless a row says otherwise).")
    for s in servers:
        v = versions.get(s, {})
        out.append(f"- **{s}** {v.get('version', '?')}: `{v.get('command', '?')}`")

    # The pair compared: on SQLite loopml vs mlflow, on PostgreSQL loopml-pg vs mlflow-pg.
    ours = "loopml" if "loopml" in servers else "loopml-pg"
    theirs = "mlflow" if "mlflow" in servers else "mlflow-pg"
    compare = ours in servers and theirs in servers
    cols = servers + ([f"{ours} vs {theirs}"] if compare else [])

    def ok_query(s):
        q = per[s]["query"]
        return q if q and "error" not in q else None

    verdicts = []
    for key, title, rows in SECTIONS:
        if not any(ok_query(s) and key in ok_query(s) for s in servers) and \
                not any(per[s]["query"] and "error" in per[s]["query"] for s in servers):
            continue
        out.append("")
        out.append("### " + title.format(**params))
        out.append("")
        out.append("| metric | " + " | ".join(cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for label, fn, better, kind in rows:
            vals = {s: (fn(ok_query(s)) if ok_query(s) else None) for s in servers}
            cells = [fmt(vals[s]) for s in servers]
            if compare:
                cells.append(ratio_text(factor(vals[ours], vals[theirs], better), kind))
            out.append(f"| {label.format(**params)} | " + " | ".join(cells) + " |")
        if compare and key in ("search", "alias") and ok_query(ours) and ok_query(theirs):
            lq, mq = ok_query(ours), ok_query(theirs)
            ka = factor(dig(lq, key, "seq", "latency", "median_ms"),
                        dig(mq, key, "seq", "latency", "median_ms"), "lower")
            # Each server at its best: the lower p50 of keep-alive and new-connection queries.
            def best(r):
                xs = [dig(r, key, p, "latency", "median_ms") for p in ("seq", "seq_fresh")]
                xs = [x for x in xs if x]
                return min(xs) if xs else None
            bb = factor(best(lq), best(mq), "lower")
            tput = factor(max(filter(None, [dig(lq, key, p, "qps") for p in ("conc", "conc_fresh")]), default=None),
                          max(filter(None, [dig(mq, key, p, "qps") for p in ("conc", "conc_fresh")]), default=None),
                          "higher")
            met = lambda f: "—" if f is None else ("met" if f >= TARGET else "NOT met")
            line = (f"target ≥ {TARGET:.0f}×: sequential p50 keep-alive {ratio_text(ka, 'time')} "
                    f"({met(ka)}); each server's best sequential p50 (keep-alive or new connection) "
                    f"{ratio_text(bb, 'time')} ({met(bb)}); best {params['clients']}-client "
                    f"throughput {ratio_text(tput, 'time')} ({met(tput)})")
            out.append("")
            out.append(f"_{line}_")
            verdicts.append({"workload": key, "p50_keepalive": ka, "p50_best_of_each": bb,
                             "throughput_best_of_each": tput})
        notes = []
        for s in servers:
            q = per[s]["query"]
            if q is None:
                if key == "search":
                    notes.append(f"{s}: no result")
            elif "error" in q:
                if key == "search":
                    notes.append(f"{s}: FAILED — {q['error']}")
            else:
                sec = q.get(key) or {}
                wrong = sum((sec.get(p) or {}).get("wrong", 0) for p in ("seq", "seq_fresh", "conc", "conc_fresh"))
                checked = sum((sec.get(p) or {}).get("verified", 0) for p in ("seq", "seq_fresh", "conc", "conc_fresh"))
                if wrong:
                    first = next((x for p in ("seq", "seq_fresh", "conc", "conc_fresh")
                                  for x in (sec.get(p) or {}).get("wrong_first", [])), "")
                    notes.append(f"{s}: {wrong} WRONG answers of {checked} checked, e.g. {first[:300]}")
                else:
                    what = {"search": f"{params['versions']} versions of the asked model, each "
                                      f"version once",
                            "alias": "the asked model's champion version, with aliases [champion]",
                            "broad": "the expected number of versions, all of the asked team"}[key]
                    notes.append(f"{s}: {checked} answers checked in full: {what}")
        if notes:
            out.append("")
            out.append("_sanity: " + "; ".join(notes) + "_")

    # Setup and memory
    out.append("")
    out.append("### populate, start-up and memory")
    out.append("")
    out.append("| metric | " + " | ".join(cols) + " |")
    out.append("|---|" + "---:|" * len(cols))
    for label, fn, better, kind in SETUP_ROWS:
        vals = {s: fn(per[s]) for s in servers}
        cells = [fmt(vals[s]) for s in servers]
        if compare:
            # Populate methods differ (mlflow in-process by default): no ratio for populate rows.
            b = None if label.startswith("populate") and params.get("mlflow_populate") != "http" else better
            cells.append(ratio_text(factor(vals[ours], vals[theirs], b), kind))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    pm = {"http": f"over HTTP, {params['clients']} clients: runs/create, registered-models/create, "
                  f"{params['versions']} × model-versions/create, registered-models/alias per model",
          "store": "in-process through mlflow's SqlAlchemyStore (tracking + model registry) before "
                   "the server starts (SQLite: synchronous=OFF while populating)"}
    methods = {s: dig(per[s], "populate", "method") for s in servers}
    out.append("")
    used = {m for m in methods.values() if m}
    if len(used) == 1 and len(methods) > 1:
        how = f"all servers {pm.get(used.pop(), '?')}"
    else:
        how = "; ".join(f"{s} {pm.get(mth, '?')}" for s, mth in methods.items() if mth)
    out.append(f"_populate: {how}. Queries run on a server started afterwards on the populated "
               f"data._")
    results["verdicts"] = verdicts

    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
