#!/usr/bin/env python3
"""bench/gateway's report: the Markdown table (stdout) and the results JSON, from run.sh's raw
files. Also `--verdict FILE`: prints one line about a point and exits 0 when it was sustained
(run.sh uses it to step rates up). Standard library only."""

import argparse
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

NAMES = {"direct": "direct", "loopml": "loopml", "loopml-pg": "loopml (PostgreSQL)", "litellm": "LiteLLM"}
# What one request costs at the config's prices: 12 prompt tokens at 1e-6, 5 completion at 2e-6.
COST_PER_REQUEST = 12 * 0.000001 + 5 * 0.000002
# A point whose window saw more than this much CPU used by other processes is "noisy": its
# round is left out of a median when a clean round exists.
NOISY_CORES = 0.3


def sustained(d, cap_ms):
    """(bool, why): achieved >= 95% of the target rate, errors < 1%, p99 <= cap."""
    if not d or "error" in d:
        return False, (d or {}).get("error", "no result")
    if "skipped" in d:
        return False, "skipped: " + d["skipped"]
    rate = d["target_rps"]
    p99 = d["latency_ms"].get("p99")
    why = []
    if d["achieved_rps"] < 0.95 * rate:
        why.append("achieved %.0f%%" % (100 * d["achieved_rps"] / rate))
    if d["error_rate"] >= 0.01:
        why.append("errors %.1f%%" % (100 * d["error_rate"]))
    if p99 is None or p99 > cap_ms:
        why.append("p99 %s ms > %s" % (p99, cap_ms))
    return not why, ", ".join(why)


def describe(d, cap_ms):
    ok, why = sustained(d, cap_ms)
    if "latency_ms" not in d:
        return "NOT sustained: " + why
    lat = d["latency_ms"]
    srv = d.get("processes", {}).get("server") or d.get("processes", {}).get("upstream") or {}
    s = "%.0f/s of %g, p50 %s ms, p99 %s ms, errors %d (%.2f%%), %s CPU %s us/req, other CPU %.2f cores" % (
        d["achieved_rps"], d["target_rps"], lat.get("p50"), lat.get("p99"), d["errors"]["count"],
        100 * d["error_rate"], "server" if "server" in d.get("processes", {}) else "upstream",
        srv.get("cpu_us_per_ok"), d.get("other_cores", 0))
    if d["errors"]["count"]:
        s += " (%s)" % ", ".join("%s %d" % kv for kv in d["errors"]["by_kind"].items())
    return ("sustained: " if ok else "NOT sustained (%s): " % why) + s


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=2):
    if x is None:
        return "—"
    if abs(x) >= 100:
        return "{:,.0f}".format(x)
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.*f" % (digits, x)


def load_raw(raw):
    pts, ladders, servers = {}, {}, {}
    for f in sorted(glob.glob(os.path.join(raw, "r*.json"))):
        name = os.path.basename(f)[:-5]
        try:
            d = json.load(open(f))
        except Exception:
            continue
        m = re.match(r"r(\d+)\.([a-z-]+)\.(json|stream)\.(\d+)$", name)
        if m:
            pts.setdefault((m[2], m[3], int(m[4])), {})[int(m[1])] = d
            continue
        m = re.match(r"r(\d+)\.([a-z-]+)\.(json|stream)\.max\.(\d+)\.t(\d)$", name)
        if m:
            ladders.setdefault((m[2], m[3]), {}).setdefault(int(m[1]), []).append((int(m[4]), int(m[5]), d))
            continue
        m = re.match(r"r(\d+)\.([a-z-]+)\.(json|stream)\.max$", name)
        if m:
            ladders.setdefault((m[2], m[3]), {}).setdefault(int(m[1]), [])
            ladders[(m[2], m[3])].setdefault("max", {})[int(m[1])] = d.get("max_sustained_rps")
            continue
        m = re.match(r"r(\d+)\.([a-z-]+)(\.restart\d+)?\.(server|idle|end|spend|died)$", name)
        if m:
            servers.setdefault((m[2], int(m[1])), {}).setdefault(m[4], []).append(d)
    return pts, ladders, servers


def clean_rounds(dicts):
    """Rounds where every given point is present and not noisy; all present rounds if none."""
    common = set.intersection(*[set(d) for d in dicts]) if dicts else set()
    ok = {r for r in common if all("latency_ms" in d[r] for d in dicts)}
    clean = {r for r in ok if all(d[r].get("other_cores", 0) <= NOISY_CORES for d in dicts)}
    return sorted(clean or ok)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verdict")
    ap.add_argument("--p99-cap-ms", type=float, default=220)
    ap.add_argument("--raw")
    ap.add_argument("--versions")
    ap.add_argument("--commands")
    ap.add_argument("--targets", default="direct,loopml,litellm")
    ap.add_argument("--modes", default="json,stream")
    ap.add_argument("--rates", default="100,500,2000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", default=".")
    ap.add_argument("--params", default="")
    ap.add_argument("--max-rates", default="25,50,75,150,200,300,400,700,1000,1500,3000,4000,5000,6000,7000,8000,10000,12000,15000,20000")
    ap.add_argument("--json")
    a = ap.parse_args()
    cap = a.p99_cap_ms

    if a.verdict:
        d = json.load(open(a.verdict))
        print(describe(d, cap))
        sys.exit(0 if sustained(d, cap)[0] else 1)

    targets = a.targets.split(",")
    gws = [t for t in targets if t != "direct"]
    modes = a.modes.split(",")
    rates = [int(x) for x in a.rates.split(",")]
    pts, ladders, servers = load_raw(a.raw)
    summary = {"points": {}, "targets": {}}

    # --- added latency per (gateway, mode, rate): per round gateway minus direct, then median
    added = {}
    for t in gws:
        for mode in modes:
            for rate in rates:
                g = pts.get((t, mode, rate), {})
                dr = pts.get(("direct", mode, rate), {})
                rs = clean_rounds([g, dr]) if g and dr else []
                row = {"rounds": rs}
                for key in ("latency_ms", "ttfb_ms"):
                    for q in ("p50", "p90", "p99"):
                        row["%s_%s" % (key[:-3], q)] = med([g[r][key][q] - dr[r][key][q] for r in rs])
                # The verdict and the figures come from the same rounds: the clean ones where
                # there are any (a point skipped or failed in every round has none).
                vr = rs or sorted(g)
                sus = [sustained(g[r], cap)[0] for r in vr]
                row["sustained"] = sum(sus) * 2 > len(sus) if sus else None
                row["sustained_rounds"] = "%d/%d" % (sum(sus), len(sus))
                row["sustained_all_rounds"] = "%d/%d" % (sum(sustained(g[r], cap)[0] for r in g), len(g))
                why = [sustained(g[r], cap)[1] for r in vr if not sustained(g[r], cap)[0]]
                row["why_not"] = why[0] if why else ""
                live = [g[r] for r in vr if "latency_ms" in g[r]]
                row["gateway_p50"] = med([x["latency_ms"]["p50"] for x in live])
                row["gateway_p99"] = med([x["latency_ms"]["p99"] for x in live])
                row["achieved_rps"] = med([x["achieved_rps"] for x in live])
                row["error_rate"] = med([x["error_rate"] for x in live])
                row["cpu_us_per_req"] = med([x["processes"].get("server", {}).get("cpu_us_per_ok") for x in live])
                row["upstream_cpu_us_per_req"] = med([x["processes"].get("upstream", {}).get("cpu_us_per_ok") for x in live])
                row["loadgen_cpu_us_per_req"] = med([x["loadgen_cpu_s"] * 1e6 / x["ok"] for x in live if x["ok"]])
                row["overhead_header_p50"] = med([x["overhead_header_ms"].get("p50") for x in live])
                row["overhead_header_p99"] = med([x["overhead_header_ms"].get("p99") for x in live])
                row["other_cores"] = med([x.get("other_cores") for x in live])
                added[(t, mode, rate)] = row
                summary["points"]["%s/%s/%d" % (t, mode, rate)] = row
    for mode in modes:
        for rate in rates:
            dr = pts.get(("direct", mode, rate), {})
            live = [dr[r] for r in sorted(dr) if "latency_ms" in dr[r]]
            summary["points"]["direct/%s/%d" % (mode, rate)] = {
                "p50": med([x["latency_ms"]["p50"] for x in live]),
                "p99": med([x["latency_ms"]["p99"] for x in live]),
                "ttfb_p99": med([x["ttfb_ms"]["p99"] for x in live]),
                "achieved_rps": med([x["achieved_rps"] for x in live]),
                "sustained_rounds": "%d/%d" % (sum(sustained(x, cap)[0] for x in dr.values()), len(dr)),
                "upstream_cpu_us_per_req": med([x["processes"].get("upstream", {}).get("cpu_us_per_ok") for x in live]),
                "loadgen_cpu_us_per_req": med([x["loadgen_cpu_s"] * 1e6 / x["ok"] for x in live if x["ok"]]),
                "other_cores": med([x.get("other_cores") for x in live]),
            }

    # --- per target: max sustainable rate, memory, start-up, spend check
    for t in targets:
        info = {}
        for mode in modes:
            lad = ladders.get((t, mode), {})
            info["max_rps_" + mode] = med(list(lad.get("max", {}).values()))
            info["max_rps_%s_rounds" % mode] = lad.get("max", {})
        if t != "direct":
            peaks, peaks_sus, peaks_sus_lad, idles, readys, keys, spend_ok = [], [], [], [], [], set(), []
            for r in range(1, a.rounds + 1):
                s = servers.get((t, r), {})
                ps = []
                for (tt, _, _), byr in list(pts.items()):
                    if tt == t and r in byr and "processes" in byr[r]:
                        ps.append(byr[r]["processes"].get("server", {}).get("peak_rss_kb", 0))
                for (tt, _), byr in ladders.items():
                    if tt == t:
                        for (_, _, d) in byr.get(r, []) if isinstance(byr.get(r), list) else []:
                            if "processes" in d:
                                ps.append(d["processes"].get("server", {}).get("peak_rss_kb", 0))
                if ps:
                    peaks.append(max(ps) / 1024)
                sp = [byr[r]["processes"].get("server", {}).get("peak_rss_kb", 0)
                      for (tt, _, _), byr in pts.items()
                      if tt == t and r in byr and "processes" in byr[r] and sustained(byr[r], cap)[0]]
                # A round that searched for the maximum kept its overload's memory for the
                # points after it: those rounds count only when there are no others.
                laddered = any(isinstance(byr.get(r), list) and byr.get(r)
                               for (tt, _), byr in ladders.items() if tt == t)
                if sp:
                    (peaks_sus_lad if laddered else peaks_sus).append(max(sp) / 1024)
                for srv in s.get("server", []):
                    if "idle" in srv:
                        idles.append(srv["idle"]["rss_kb"] / 1024)
                        readys.append(srv["ready_s"])
                        keys.add(srv["key"])
                spent = [x.get("spend") for x in s.get("spend", []) if isinstance(x, dict)]
                if spent:
                    answered = 2 * len(s.get("server", []))  # the check pair
                    for (tt, _, _), byr in pts.items():
                        if tt == t and r in byr:
                            answered += byr[r].get("ok_with_warmup", 0)
                    for (tt, _), byr in ladders.items():
                        if tt == t and isinstance(byr.get(r), list):
                            answered += sum(d.get("ok_with_warmup", 0) for (_, _, d) in byr[r])
                    spend_ok.append({"round": r, "spend": sum(spent), "requests_billed": round(sum(spent) / COST_PER_REQUEST),
                                     "requests_answered": answered})
            # Peaks are the highest over the rounds (the overload steps run in round 1 only).
            peaks_sus = peaks_sus or peaks_sus_lad
            info.update({"peak_rss_mib": max(peaks) if peaks else None,
                         "peak_rss_sustained_mib": max(peaks_sus) if peaks_sus else None, "idle_rss_mib": med(idles), "ready_s": med(readys),
                         "key": sorted(keys), "spend_check": spend_ok})
        summary["targets"][t] = info

    # --- the tables
    out = []
    p = out.append
    ttl = {"json": "JSON", "stream": "stream (to last byte)"}
    head = "| mode | rate (req/s) | direct p50 / p99 (ms) |"
    sep = "|---|---:|---:|"
    for t in gws:
        head += " %s added p50 | %s added p99 |" % (NAMES[t], NAMES[t])
        sep += "---:|---:|"
    if "litellm" in gws and any(t.startswith("loopml") for t in gws):
        head += " LiteLLM / loopml, added p99 |"
        sep += "---:|"
    p("Added latency: gateway minus direct, ms, at the same rate (median over rounds; ✗ = not sustained)")
    p("")
    p(head)
    p(sep)

    def cell(row, key):
        if row is None:
            return "—"
        if row.get("sustained") is False and row.get(key) is None:
            return "✗ (%s)" % row["why_not"][:40]
        v = fmt(row.get(key))
        return v if row.get("sustained") else v + " ✗"

    ratios = []
    for mode in modes:
        for rate in rates:
            d = summary["points"]["direct/%s/%d" % (mode, rate)]
            line = "| %s | %s | %s / %s |" % (ttl[mode], "{:,}".format(rate), fmt(d["p50"]), fmt(d["p99"]))
            for t in gws:
                row = added.get((t, mode, rate))
                line += " %s | %s |" % (cell(row, "latency_p50"), cell(row, "latency_p99"))
            if "litellm" in gws and any(t.startswith("loopml") for t in gws):
                lm = next(t for t in gws if t.startswith("loopml"))
                a_l, a_m = added.get(("litellm", mode, rate)), added.get((lm, mode, rate))
                if a_l and a_m and a_l.get("latency_p99") is not None and a_m.get("latency_p99") is not None:
                    floor = max(a_m["latency_p99"], 0.05)
                    r_ = a_l["latency_p99"] / floor
                    txt = ("≥ " if a_m["latency_p99"] < 0.05 else "") + "%s×" % fmt(r_, 1)
                    if a_l.get("sustained"):
                        ratios.append((r_, mode, rate, a_m["latency_p99"] < 0.05))
                    else:
                        txt += " (LiteLLM ✗)"
                    line += " %s |" % txt
                else:
                    line += " — |"
            p(line)
    if "stream" in modes:
        p("")
        p("Streams, added time to the first byte (ms)")
        p("")
        p("| rate (req/s) |" + "".join(" %s added p50 | %s added p99 |" % (NAMES[t], NAMES[t]) for t in gws))
        p("|---:|" + "---:|---:|" * len(gws))
        for rate in rates:
            p("| %s |" % "{:,}".format(rate) + "".join(
                " %s | %s |" % (cell(added.get((t, "stream", rate)), "ttfb_p50"), cell(added.get((t, "stream", rate)), "ttfb_p99"))
                for t in gws))
    p("")
    p("| | " + " | ".join(NAMES[t] for t in targets) + " |")
    p("|---|" + "---:|" * len(targets))
    T = summary["targets"]
    ladder = [int(x) for x in a.max_rates.split(",")]

    def maxcell(v):
        if v is None:
            return "—"
        if v == 0:
            return "< %s" % "{:,}".format(min(ladder))
        return ("≥ " if v >= max(ladder) else "") + "{:,.0f}".format(v)

    for mode in modes:
        p("| max sustained rate, %s (req/s) | " % mode + " | ".join(
            maxcell(T[t].get("max_rps_" + mode)) for t in targets) + " |")
    for mode in modes:
        for rate in rates:
            vals = []
            for t in targets:
                if t == "direct":
                    v = summary["points"]["direct/%s/%d" % (mode, rate)]["upstream_cpu_us_per_req"]
                    vals.append(fmt(v, 0) + " (upstream)" if v is not None else "—")
                else:
                    row = added.get((t, mode, rate)) or {}
                    v = row.get("cpu_us_per_req")
                    vals.append("—" if v is None else fmt(v, 0) + ("" if row.get("sustained") else " ✗"))
            p("| CPU per request, %s at %s/s (µs) | " % (mode, "{:,}".format(rate)) + " | ".join(vals) + " |")
    p("| peak RSS at the fixed rates it sustained (MiB) | " + " | ".join(
        "—" if t == "direct" else fmt(T[t].get("peak_rss_sustained_mib"), 1) for t in targets) + " |")
    p("| peak RSS over the run, overload steps included (MiB) | " + " | ".join(
        "—" if t == "direct" else fmt(T[t].get("peak_rss_mib"), 1) for t in targets) + " |")
    p("| idle RSS after start-up (MiB) | " + " | ".join(
        "—" if t == "direct" else fmt(T[t].get("idle_rss_mib"), 1) for t in targets) + " |")
    p("| start-up to ready (s) | " + " | ".join(
        "—" if t == "direct" else fmt(T[t].get("ready_s"), 2) for t in targets) + " |")
    for mode in modes:
        for rate in sorted({min(rates), max(rates)}):
            vals = []
            for t in targets:
                row = added.get((t, mode, rate)) if t != "direct" else None
                if row and row.get("overhead_header_p50") is not None:
                    vals.append("%s / %s%s" % (fmt(row["overhead_header_p50"], 3), fmt(row["overhead_header_p99"], 3),
                                               "" if row.get("sustained") else " ✗"))
                else:
                    vals.append("—")
            p("| self-reported overhead p50 / p99, %s at %s/s (ms) | " % (mode, "{:,}".format(rate)) + " | ".join(vals) + " |")
    p("| key used | " + " | ".join("—" if t == "direct" else "; ".join(T[t].get("key", [])) or "—" for t in targets) + " |")

    # --- targets of the issue
    p("")
    p("| target (issue 17) | measured | |")
    p("|---|---|---|")
    lm = next((t for t in gws if t.startswith("loopml")), None)
    if lm:
        for mode in modes:
            row = added.get((lm, mode, 2000))
            if row and row.get("latency_p99") is not None:
                v = row["latency_p99"]
                met = v < 1.0 and row.get("sustained")
                p("| added p99 < 1 ms at 2,000 req/s, keys + budgets + spend log on (%s) | %s ms | %s |" % (
                    mode, fmt(v, 3), "met" if met else "**not met**"))
        if "litellm" in gws:
            if ratios:
                worst = min(ratios)
                p("| ≥ 20× lower added p99 than LiteLLM at every rate LiteLLM sustains | lowest %s%s× (%s, %s/s); LiteLLM sustained %d of %d points | %s |" % (
                    "≥ " if worst[3] else "", fmt(worst[0], 1), worst[1], "{:,}".format(worst[2]), len(ratios),
                    len(modes) * len(rates), "met" if worst[0] >= 20 else "**not met**"))
            else:
                p("| ≥ 20× lower added p99 than LiteLLM at every rate LiteLLM sustains | LiteLLM sustained none of the rates | — |")
        idle = T[lm].get("idle_rss_mib")
        if idle is not None:
            p("| idle RSS < 30 MB | %s MB (%s MiB) | %s |" % (
                fmt(idle * 1.048576, 1), fmt(idle, 1), "met" if idle * 1.048576 < 30 else "**not met**"))
    oth = [r.get("other_cores") for r in summary["points"].values() if r.get("other_cores") is not None]
    if oth:
        p("")
        p("Other CPU during the points (processes other than the gateway, the upstream and the load "
          "generator, plus interrupt time): median %.2f, max %.2f cores; rounds with > %.1f core are "
          "left out of a median when a cleaner round exists." % (statistics.median(oth), max(oth), NOISY_CORES))
    for t in gws:
        for r in range(1, a.rounds + 1):
            for dd in servers.get((t, r), {}).get("died", []):
                p("%s died in round %d (the rest of that round is not measured for it)%s." % (
                    NAMES[t], r, (": " + dd["kernel"].strip().splitlines()[-1][:160]) if dd.get("kernel", "").strip() else ""))
        for s in T[t].get("spend_check", []):
            p("%s round %d: spend recorded %.6f = %d requests billed, %d answered with 200." % (
                NAMES[t], s["round"], s["spend"], s["requests_billed"], s["requests_answered"]))
    text = "\n".join(out)
    print(text)

    if a.json:
        def tsv(path):
            res = {}
            if path and os.path.exists(path):
                for line in open(path):
                    k, _, v = line.rstrip("\n").partition("\t")
                    res[k] = v
            return res

        rawdump = {}
        for f in sorted(glob.glob(os.path.join(a.raw, "*.json"))):
            try:
                rawdump[os.path.basename(f)[:-5]] = json.load(open(f))
            except Exception:
                pass
        try:
            commit = subprocess.run(["git", "-C", a.root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        except Exception:
            commit = ""
        doc = {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "git_commit": commit,
            "params": dict(kv.split("=", 1) for kv in a.params.split(",") if "=" in kv),
            "versions": tsv(a.versions),
            "commands": tsv(a.commands),
            "sustained_rule": "achieved >= 95%% of the target rate, errors < 1%%, p99 <= %s ms" % cap,
            "summary": {"points": summary["points"], "targets": summary["targets"]},
            "table_markdown": text,
            "raw": rawdump,
        }
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        json.dump(doc, open(a.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
