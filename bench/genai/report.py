#!/usr/bin/env python3
"""Merges the per-server phase JSON written by run.sh into results/<timestamp>.json and prints
the Markdown tables (standard library only). Ratios are loopml vs mlflow: "N× faster" for
times and throughput, "N× less" for memory and CPU."""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

TARGETS = {"ingest": 30, "search": 30, "get": 10, "prompt": 10}


def read(raw, name):
    p = os.path.join(raw, name)
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        return {"error": f"unreadable: {e}"}


def dig(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def mib(kb):
    return None if kb is None else kb / 1024


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(ours, theirs, better):
    """Speed ratio, loopml over mlflow: times ("lower" is better) or throughput ("higher")."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0 or better not in ("lower", "higher"):
        return None, "—"
    r = theirs / ours if better == "lower" else ours / theirs
    if r >= 1:
        return r, (f"{r:.3g}× faster" if r < 1000 else f"{r:,.0f}× faster")
    return r, f"{1 / r:.3g}× slower"


def mem_ratio(ours, theirs):
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None, "—"
    r = theirs / ours
    return r, (f"{r:.3g}× less" if r >= 1 else f"{1 / r:.3g}× more")


def p50(r, key):
    return dig(r, key, "unit_latency", "median_ms")


def rows(res):
    """(label, getter(server results) -> value, better, target key)"""
    return [
        ("trace ingestion: 10-span traces, 8 clients (traces/s)",
         lambda s: dig(s, "main", "ingest", "units_per_s"), "higher", "ingest"),
        ("search_traces `tags.env = 'prod'` over 100,000 traces, max_results 100 (p50 ms)",
         lambda s: p50(s.get("search"), "filter"), "lower", "search"),
        ("search_traces, no filter (p50 ms)",
         lambda s: p50(s.get("search"), "nofilter"), "lower", None),
        ("get_trace of a 200-span trace: GET traces/{id} + GET traces/get (p50 ms)",
         lambda s: p50(s.get("main"), "get_trace"), "lower", "get"),
        ("load_prompt by alias: its 4 HTTP calls (p50 ms)",
         lambda s: p50(s.get("main"), "load_prompt"), "lower", "prompt"),
        ("load_prompt by alias: real client call, cache off (p50 ms)",
         lambda s: p50(s.get("main"), "load_prompt_client"), "lower", None),
    ]


def detail_rows():
    return [
        ("ingestion: wall time (s)", lambda s: dig(s, "main", "ingest", "wall_s"), "lower"),
        ("ingestion: traces stored / sent", lambda s: stored(s), None),
        ("ingestion: POST /v1/traces p50 (ms)",
         lambda s: dig(s, "main", "ingest", "request_latency", "otlp", "median_ms"), "lower"),
        ("ingestion: POST /v1/traces p95 (ms)",
         lambda s: dig(s, "main", "ingest", "request_latency", "otlp", "p95_ms"), "lower"),
        ("ingestion: StartTraceV3 p50 (ms)",
         lambda s: dig(s, "main", "ingest", "request_latency", "start_trace", "median_ms"), "lower"),
        ("ingestion: StartTraceV3 p95 (ms)",
         lambda s: dig(s, "main", "ingest", "request_latency", "start_trace", "p95_ms"), "lower"),
        ("ingestion: server CPU (s)", lambda s: dig(s, "main", "ingest", "server", "cpu_s"), "cpu"),
        ("ingestion: server CPU per trace (ms)", lambda s: per_trace_cpu(s), "cpu"),
        ("ingestion: load generator CPU (s)",
         lambda s: dig(s, "main", "ingest", "server", "loadgen_cpu_s"), None),
        ("search, tag filter: p95 (ms)",
         lambda s: dig(s, "search", "filter", "unit_latency", "p95_ms"), "lower"),
        ("search, no filter: p95 (ms)",
         lambda s: dig(s, "search", "nofilter", "unit_latency", "p95_ms"), "lower"),
        ("search: response size, tag filter (KB)",
         lambda s: kb(dig(s, "search", "filter", "response_bytes", "search")), None),
        ("search: paging all 10,000 prod traces, 500 a page (s)",
         lambda s: dig(s, "search", "count_prod", "paging_s"), "lower"),
        ("seeding 100,000 traces (s)", lambda s: dig(s, "search", "seed", "seed_s"), None),
        ("get_trace: p95 (ms)", lambda s: dig(s, "main", "get_trace", "unit_latency", "p95_ms"), "lower"),
        ("get_trace: GET traces/get p50 (ms)",
         lambda s: dig(s, "main", "get_trace", "request_latency", "trace_get", "median_ms"), "lower"),
        ("get_trace: traces/get response (KB)",
         lambda s: kb(dig(s, "main", "get_trace", "response_bytes", "trace_get")), None),
        ("load_prompt, 4 calls: p95 (ms)",
         lambda s: dig(s, "main", "load_prompt", "unit_latency", "p95_ms"), "lower"),
        ("load_prompt: registered-models/get response (KB)",
         lambda s: kb(dig(s, "main", "load_prompt", "response_bytes", "registered_model_get")), None),
        ("load_prompt, real client: p95 (ms)",
         lambda s: dig(s, "main", "load_prompt_client", "unit_latency", "p95_ms"), "lower"),
        ("peak RSS, search lifetime: Σ VmHWM over the tree (MiB)",
         lambda s: mib(dig(s, "search", "process", "hwm_sum_kb")), "mem"),
        ("peak RSS, ingest/get/prompt lifetime: Σ VmHWM (MiB)",
         lambda s: mib(dig(s, "main", "process", "hwm_sum_kb")), "mem"),
        ("largest single process VmHWM (MiB)",
         lambda s: mib(max_or_none(dig(s, "search", "process", "hwm_max_kb"),
                                   dig(s, "main", "process", "hwm_max_kb"))), "mem"),
        ("peak sampled tree RSS during ingestion (MiB)",
         lambda s: mib(dig(s, "main", "ingest", "server", "peak_rss_kb")), "mem"),
        ("processes", lambda s: dig(s, "main", "process", "procs"), None),
        ("server CPU per search, tag filter (ms)",
         lambda s: per_rep(s, "search", "filter"), "cpu"),
        ("server CPU per get_trace (ms)", lambda s: per_rep(s, "main", "get_trace"), "cpu"),
        ("server CPU per load_prompt, 4 calls (ms)", lambda s: per_rep(s, "main", "load_prompt"), "cpu"),
        ("server CPU, whole ingest/get/prompt lifetime (s)",
         lambda s: dig(s, "main", "process", "cpu_s"), "cpu"),
    ]


def kb(b):
    return None if b is None else b / 1000


def max_or_none(*v):
    v = [x for x in v if x is not None]
    return max(v) if v else None


def stored(s):
    c = dig(s, "main", "ingest", "check")
    if not c:
        return None
    return f"{c['stored']:,} / {c['sent_ok']:,}"


def per_rep(s, phase, case):
    cpu = dig(s, phase, case, "server", "cpu_s")
    n = dig(s, phase, case, "reps")
    return None if cpu is None or not n else cpu / n * 1000


def per_trace_cpu(s):
    cpu = dig(s, "main", "ingest", "server", "cpu_s")
    n = dig(s, "main", "ingest", "units_ok")
    return None if not cpu or not n else cpu / n * 1000


def checks(name, s):
    """Every check of one server, as (what, ok, detail)."""
    out = []
    for phase in ("search", "main"):
        if s.get(phase) is None:
            continue
        if "error" in s[phase]:
            out.append((phase, False, s[phase]["error"]))
    se = s.get("search") or {}
    for case in ("filter", "nofilter"):
        c = dig(se, case, "check")
        if c:
            out.append((f"search {case}", c["ok"], "; ".join(c["problems"])))
        e = dig(se, case, "errors", "count")
        if e:
            out.append((f"search {case} errors", False, str(dig(se, case, "errors", "first"))))
    c = se.get("count_prod")
    if c:
        out.append(("search: paged prod count", c["ok"], f"{c['count']} of {c['expected']}"))
    if dig(se, "seed", "errors", "count"):
        out.append(("seeding", False, str(dig(se, "seed", "errors", "first"))))
    m = s.get("main") or {}
    ing = m.get("ingest")
    if ing:
        c = ing.get("check", {})
        out.append(("ingest: stored = sent, sampled traces' spans", c.get("ok", False),
                    f"stored {c.get('stored')} of {c.get('sent_ok')}; "
                    + "; ".join(p for t in c.get("sampled_traces", []) for p in t["problems"])))
        if ing["errors"]["count"]:
            out.append(("ingest errors", False, f"{ing['errors']['count']}: {ing['errors']['first'][:2]}"))
        if ing.get("partial"):
            out.append(("ingest complete", False, f"stopped at the deadline after {ing['units_ok']} traces"))
    for key, what in (("get_trace", "get_trace: 200 spans as sent"), ("load_prompt", "load_prompt: alias → v2, template")):
        c = dig(m, key, "check")
        if c:
            out.append((what, c["ok"], "; ".join(c["problems"])))
        e = dig(m, key, "errors", "count")
        if e:
            out.append((f"{key} errors", False, str(dig(m, key, "errors", "first"))))
    if "load_prompt_client" in m:
        out.append(("real client load_prompt", m["load_prompt_client"]["ok"], ""))
    cc = dig(m, "client_check", "summary")
    if cc:
        out.append(("real client: trace export, get_trace, load_prompt", cc["ok"], "; ".join(cc["problems"])))
    return out


def machine():
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--servers", default="loopml,mlflow")
    ap.add_argument("--json", required=True)
    ap.add_argument("--params", default="")
    ap.add_argument("--wall-s", type=float)
    a = ap.parse_args()
    servers = [s for s in a.servers.split(",") if s]
    res = {s: {"search": read(a.raw, f"{s}-search.json"), "main": read(a.raw, f"{s}-main.json")}
           for s in servers}
    versions = {}
    with open(a.versions) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                versions[parts[0]] = {"version": parts[1], "command": parts[2]}
    params = dict(kv.split("=", 1) for kv in a.params.split(",") if "=" in kv)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = None

    both = "loopml" in res and "mlflow" in res
    lines = []
    head = "| case | " + " | ".join(servers) + (" | loopml vs mlflow | target | met |" if both else " |")
    lines += [head, "|---|" + "---:|" * len(servers) + ("---:|---:|:---:|" if both else "")]
    summary = []
    for label, get, better, target in rows(res):
        vals = [get(res[s]) for s in servers]
        cells = [fmt(v) for v in vals]
        if both:
            r, text = ratio(get(res["loopml"]), get(res["mlflow"]), better)
            t = TARGETS.get(target)
            met = "—" if t is None or r is None else ("yes" if r >= t else "**no**")
            cells += [text, f"≥ {t}×" if t else "—", met]
            summary.append({"case": label, "loopml": get(res["loopml"]), "mlflow": get(res["mlflow"]),
                            "ratio": r, "target": t, "met": None if t is None or r is None else r >= t})
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["| detail | " + " | ".join(servers) + (" | loopml vs mlflow |" if both else " |"),
              "|---|" + "---:|" * len(servers) + ("---:|" if both else "")]
    for label, get, better in detail_rows():
        vals = [get(res[s]) for s in servers]
        cells = [fmt(v) for v in vals]
        if both:
            o, t = get(res["loopml"]), get(res["mlflow"])
            if better in ("mem", "cpu"):
                cells.append(mem_ratio(o, t)[1] if isinstance(o, (int, float)) else "—")
            elif better and isinstance(o, (int, float)):
                cells.append(ratio(o, t, better)[1])
            else:
                cells.append("—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    all_checks = {}
    for s in servers:
        cs = checks(s, res[s])
        all_checks[s] = [{"check": w, "ok": ok, "detail": d} for w, ok, d in cs]
        bad = [f"{w} ({d})" if d else w for w, ok, d in cs if not ok]
        lines.append(f"_checks, {s}: {len(cs) - len(bad)}/{len(cs)} pass"
                     + (f"; FAILED: {'; '.join(bad)}" if bad else "") + "_")
        lines.append("")
    if both:
        same = []
        for case in ("filter", "nofilter"):
            x = dig(res, "loopml", "search", case, "check", "first_ids")
            y = dig(res, "mlflow", "search", case, "check", "first_ids")
            if x and y:
                same.append(f"{case}: {'same' if x == y else 'DIFFERENT'} first ids")
        x = dig(res, "loopml", "search", "count_prod", "ids_sha")
        y = dig(res, "mlflow", "search", "count_prod", "ids_sha")
        if x and y:
            same.append(f"all 10,000 prod ids in order: {'same' if x == y else 'DIFFERENT'}")
        if same:
            lines.append("_across servers: " + "; ".join(same) + "_")
            lines.append("")
    for s in servers:
        v = versions.get(s)
        if v:
            lines.append(f"- {s}: {v['version']}: `{v['command']}`")
    seed = dig(res, "mlflow", "search", "seed", "method")
    if seed:
        lines.append(f"- mlflow's 100,000 search traces: {seed}")
    seed = dig(res, "loopml", "search", "seed", "method")
    if seed:
        lines.append(f"- loopml's: {seed}")
    if a.wall_s:
        lines.append(f"- wall time of the whole run: {a.wall_s / 60:.1f} min")
    text = "\n".join(lines)
    print(text)

    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"benchmark": "bench/genai", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                   "git": rev, "machine": machine(), "params": params, "wall_s": a.wall_s,
                   "versions": versions, "summary": summary, "checks": all_checks,
                   "table_markdown": text, "results": res}, f, indent=1, default=str)
    failed = [s for s, cs in all_checks.items() if any(not c["ok"] for c in cs)]
    if failed:
        print(f"report: checks failed for {', '.join(failed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
