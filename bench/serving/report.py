#!/usr/bin/env python3
"""Merges bench/serving's raw per-case JSON into one results file and prints the Markdown tables
(standard library only). Called by run.sh."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

LABELS = {
    "mlflow-sklearn": ("`mlflow models serve`, sklearn pyfunc", "rf", "–"),
    "mlflow-onnx": ("`mlflow models serve`, onnx flavor", "rf", "–"),
    "rawort-rf": ("raw axum + ort (floor)", "rf", "–"),
    "rawort-rf-threads": ("raw axum + ort, per-session threads (same threading as loopml)", "rf", "–"),
    "loopml-rf": ("loopml", "rf", "off"),
    "loopml-rf-batch": ("loopml", "rf", "on"),
    "rawort-mlp": ("raw axum + ort (floor)", "mlp", "–"),
    "loopml-mlp": ("loopml", "mlp", "off"),
    "loopml-mlp-batch": ("loopml", "mlp", "on"),
}


def load(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def us(v) -> str:
    if v is None:
        return "–"
    if v >= 100_000:
        return f"{v / 1000:,.0f} ms"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def rate(v) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


# A round whose window saw more than this much CPU used by other processes (core-seconds per
# second: 0.1 = a tenth of a core on average) is left out of the median when a cleaner round of
# the same point exists. Idle, this machine shows 0-0.07.
NOISY_OTHER_CPU = 0.1


def noisy(p: dict) -> bool:
    other = p.get("memory", {}).get("other_cpu_s", 0.0) or 0.0
    return other / max(p.get("duration_s", 1.0), 1e-9) > NOISY_OTHER_CPU


def merge(points: list) -> dict | None:
    """Median over the clean rounds of one (case, concurrency) point (all rounds if none is
    clean, flagged)."""
    done = [p for p in points if p and "req_per_s" in p]
    if not done:
        return next((p for p in points if p), None)
    clean = [p for p in done if not noisy(p)]
    ok = clean or done
    med = statistics.median

    def per_req(p, k):
        m = p.get("memory", {})
        return m[k] / max(p["requests"], 1) * 1e6 if m.get(k) is not None else None

    def med_of(vals):
        vals = [v for v in vals if v is not None]
        return med(vals) if vals else None

    return {
        "rounds": len(ok),
        "rounds_run": len(points),
        "rounds_left_out_noisy": len(done) - len(clean) if clean else 0,
        "all_rounds_noisy": not clean,
        "req_per_s": med([p["req_per_s"] for p in ok]),
        "req_per_s_min": min(p["req_per_s"] for p in ok),
        "req_per_s_max": max(p["req_per_s"] for p in ok),
        "req_per_s_rounds": [p["req_per_s"] for p in ok],
        "latency_us": {q: med_of([p["latency_us"].get(q) for p in ok]) for q in ("p50", "p90", "p99", "p999", "mean")},
        "errors": sum(p["errors"]["count"] for p in done) + sum(1 for p in points if p and "req_per_s" not in p),
        "server_cpu_us_per_req": med_of([per_req(p, "server_cpu_s") for p in ok]),
        "loadgen_cpu_us_per_req": med_of([per_req(p, "loadgen_cpu_s") for p in ok]),
        "other_cpu_s": med_of([p.get("memory", {}).get("other_cpu_s", 0.0) for p in ok]) or 0.0,
        "steal_cpu_s": med_of([p.get("memory", {}).get("steal_cpu_s", 0.0) for p in ok]) or 0.0,
        "peak_rss_kb": max(p.get("memory", {}).get("peak_rss_kb", 0) for p in ok),
    }


def machine() -> dict:
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info["loadavg_at_end"] = os.getloadavg()[0]
    return info


def git(root: str) -> dict:
    def run(*a):
        try:
            return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty_paths": [l[3:] for l in run("status", "--porcelain", "--untracked-files=no").splitlines()][:50],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    for a in ("raw", "versions", "commands", "cases", "concurrency", "rounds", "models", "root", "params", "json"):
        ap.add_argument(f"--{a}", required=True)
    a = ap.parse_args()
    raw = Path(a.raw)
    cases = a.cases.split(",")
    concs = [int(c) for c in a.concurrency.split(",")]
    versions = dict(l.split("\t", 1) for l in Path(a.versions).read_text().splitlines() if "\t" in l)
    commands = dict(l.split("\t", 1) for l in Path(a.commands).read_text().splitlines() if "\t" in l)
    params = dict(kv.split("=", 1) for kv in a.params.split(","))

    rounds = int(a.rounds)
    results = {}
    for c in cases:
        per_round = []
        for i in range(1, rounds + 1):
            r = {k: load(raw / f"{c}.r{i}.{k}.json") for k in ("case", "ready", "settle", "idle", "verify")}
            r["points"] = {str(n): load(raw / f"{c}.r{i}.c{n}.json") for n in concs}
            per_round.append(r)
        results[c] = {"rounds": per_round, "points": {str(n): merge([r["points"][str(n)] for r in per_round]) for n in concs}}

    def point(c, n):
        p = (results.get(c) or {}).get("points", {}).get(str(n))
        return p if p and "req_per_s" in p else None

    def rps(c, n):
        p = point(c, n)
        return p["req_per_s"] if p else None

    # ---- main table
    out = []
    out.append(f"Batch-1 requests, {params['seconds']} s per point (mlflow {params['mlflow_seconds']} s) after "
               f"{params['warmup_s']} s warm-up; load generator on the same {machine()['nproc']} cores. "
               + (f"Median of {rounds} rounds (each case started fresh in every round, cases run round-robin); "
                  "req/s also shows the lowest and highest round; \"rounds\": how many rounds the median is "
                  f"over (a round in which other processes used more than {NOISY_OTHER_CPU} of a core is left out "
                  "when a cleaner one exists; ! = every round was noisy). " if rounds > 1 else "")
               + "CPU/req: CPU time of the server's process tree and of the load generator per "
               "completed request, over the measured window. Other CPU: CPU seconds charged to other processes "
               "in the window (the machine's user+system time from /proc/stat minus the server's and the load "
               "generator's; median over rounds; well above 0 means something else was running).")
    out.append("")
    out.append("| server | model | batching | conc. | req/s | p50 | p90 | p99 | errors | server CPU/req | loadgen CPU/req | other CPU | rounds | peak RSS |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        label, model, batching = LABELS[c]
        r = results[c]
        bad = [x for x in r["rounds"] if (x.get("case") or {}).get("error") or not (x.get("verify") or {}).get("ok")]
        if len(bad) == len(r["rounds"]):
            x = bad[0]
            why = (x.get("case") or {}).get("error") or f"wrong answers: {x.get('verify')}"
            out.append(f"| {label} | {model} | {batching} | – | {why} | | | | | | | | | |")
            continue
        for n in concs:
            p = point(c, n)
            if not p:
                err = (r["points"].get(str(n)) or {}).get("error", "no result")
                out.append(f"| {label} | {model} | {batching} | {n} | failed: {err[:80]} | | | | | | | | | |")
                continue
            lat = p["latency_us"]
            spread = f" ({rate(p['req_per_s_min'])}–{rate(p['req_per_s_max'])})" if p["rounds"] > 1 else ""
            out.append(
                f"| {label} | {model} | {batching} | {n} | **{rate(p['req_per_s'])}**{spread} | {us(lat['p50'])} | "
                f"{us(lat['p90'])} | {us(lat['p99'])} | {p['errors']} | "
                f"{us(p['server_cpu_us_per_req'])} | {us(p['loadgen_cpu_us_per_req'])} | "
                f"{p['other_cpu_s']:.2f} s | {p['rounds']}/{p['rounds_run']}{' !' if p['all_rounds_noisy'] else ''} | "
                f"{p['peak_rss_kb'] / 1024:,.0f} MB |"
            )

    # ---- ratios
    ratios = {}

    def ratio_line(key, title, num, den, target=None, only=None):
        cells, vals = [], {}
        for n in only or concs:
            x, y = rps(num, n), rps(den, n)
            if x is None or y is None or y == 0:
                cells.append(f"c={n}: –")
                continue
            v = x / y
            vals[str(n)] = round(v, 3)
            mark = ""
            if target is not None:
                mark = " ✓" if v >= target else " ✗"
            cells.append(f"c={n}: **{v:,.2f}×**{mark}" if v < 10 else f"c={n}: **{v:,.0f}×**{mark}")
        if not vals:
            return
        ratios[key] = {"numerator": num, "denominator": den, "target": target, "by_concurrency": vals}
        t = f" (target ≥ {target}×)" if target is not None else ""
        out.append(f"- {title}{t}: " + ", ".join(cells))

    out.append("")
    out.append("Throughput ratios (req/s ÷ req/s, same concurrency):")
    out.append("")
    ratio_line("loopml_vs_mlflow_sklearn", "loopml / `mlflow models serve` (sklearn), forest",
               "loopml-rf", "mlflow-sklearn", 50)
    ratio_line("loopml_batch_vs_mlflow_sklearn", "loopml with batching / `mlflow models serve` (sklearn), forest",
               "loopml-rf-batch", "mlflow-sklearn", 50)
    ratio_line("loopml_vs_mlflow_onnx", "loopml / `mlflow models serve` (onnx flavor), forest",
               "loopml-rf", "mlflow-onnx")
    ratio_line("loopml_vs_rawort_rf", "loopml / raw axum + ort, forest", "loopml-rf", "rawort-rf", 0.8)
    ratio_line("loopml_vs_rawort_threads_rf",
               "loopml / raw axum + ort with loopml's per-session threads, forest (what the machinery costs)",
               "loopml-rf", "rawort-rf-threads")
    ratio_line("loopml_vs_rawort_mlp", "loopml / raw axum + ort, MLP (batching off)", "loopml-mlp", "rawort-mlp", 0.8)
    c64 = [max(concs)]
    ratio_line("mlp_batching_on_vs_off", f"loopml MLP, batching on / off at c={max(concs)}",
               "loopml-mlp-batch", "loopml-mlp", 3, only=c64)
    ratio_line("mlp_batching_on_vs_off_all", "loopml MLP, batching on / off, every concurrency",
               "loopml-mlp-batch", "loopml-mlp")
    ratio_line("mlp_batching_vs_rawort", "loopml MLP with batching / raw axum + ort MLP",
               "loopml-mlp-batch", "rawort-mlp")
    ratio_line("rf_batching_on_vs_off", "loopml forest, batching on / off", "loopml-rf-batch", "loopml-rf")

    out.append("")
    out.append("Correctness (checked before timing; 5 rows one by one and as one batch of 5, against sklearn's "
               "predict_proba for the forest and onnxruntime for the MLP):")
    out.append("")
    for c in cases:
        vs = [x.get("verify") or {} for x in results[c]["rounds"]]
        ok = all(v.get("ok") for v in vs)
        worst = max((v.get("max_abs_diff") or 0.0 for v in vs), default=None)
        labels = all(v.get("labels_ok") for v in vs)
        rd = [(x.get("ready") or {}).get("ready_ms") for x in results[c]["rounds"]]
        rd = [v for v in rd if v is not None]
        idle = [(x.get("idle") or {}).get("rss_kb") or 0 for x in results[c]["rounds"]]
        out.append(f"- {c}: {'ok' if ok else 'FAILED'} in {sum(bool(v.get('ok')) for v in vs)}/{len(vs)} round(s), "
                   f"max abs diff {worst:.2g}{', labels equal' if labels else ''}; ready "
                   f"{statistics.median(rd):,.0f} ms after spawn (median); idle RSS "
                   f"{max(idle) / 1024:,.0f} MB" if rd else f"- {c}: not ready")

    print("\n".join(out))

    doc = {
        "benchmark": "bench/serving",
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git(a.root),
        "versions": versions,
        "commands": commands,
        "params": params,
        "models": load(Path(a.models)),
        "cases": results,
        "ratios": ratios,
        "table_markdown": "\n".join(out),
    }
    Path(a.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
