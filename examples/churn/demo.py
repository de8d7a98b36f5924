#!/usr/bin/env python3
"""The client side of run.sh: registry, traffic, monitor and wait steps against a loopml server.

Each subcommand prints what it saw for people and one machine-readable line
`STEP <name> key=value ...` that compat/mlflow/test_churn_demo.py asserts on. A subcommand that
sees an unexpected state exits 1 with the reason on stderr, so run.sh stops there.

    demo.py register --run-id RUN [--model churn] [--alias champion]
    demo.py send --deployment churn --rows 300 --shift 0 --seed 21 --phase reference [--feedback]
    demo.py monitor --name churn-health --phase before --expect ok
    demo.py wait-alert --name churn-health [--timeout 30]
    demo.py pipeline-report [--pipeline churn-retrain] [--after MS] [--timeout 120]
    demo.py window-dataset [--name churn-health]
    demo.py wait-alias --model churn --alias champion --version 2 [--timeout 120]
    demo.py wait-serving --deployment churn --version 2 [--timeout 30]

The server is `--server`, else $LOOPML_SERVER, else $MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import requests

from generate import FEATURES, TARGET, generate

HTTP = requests.Session()


class Unexpected(Exception):
    """The loop is not where it should be: run.sh stops with this message."""


def step(name: str, **kv) -> None:
    fields = " ".join(f"{k}={v}" for k, v in kv.items())
    print(f"STEP {name} {fields}".rstrip(), flush=True)


def call(server: str, method: str, path: str, **kw) -> requests.Response:
    kw.setdefault("timeout", 30)
    try:
        return HTTP.request(method, server + path, **kw)
    except requests.RequestException as e:
        raise Unexpected(f"{method} {path}: {e}") from None


def ok_json(r: requests.Response) -> dict:
    if r.status_code != 200:
        raise Unexpected(f"{r.request.method} {r.url}: HTTP {r.status_code}: {r.text[:500]}")
    return r.json()


def auc(truth: list[int], score: list[float]) -> float:
    """ROC AUC by ranks (ties averaged), without scikit-learn's import time."""
    pairs = sorted(zip(score, truth))
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(t for _, t in pairs)
    neg = len(pairs) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    rank_sum = sum(r for r, (_, t) in zip(ranks, pairs) if t == 1)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


# -- subcommands -------------------------------------------------------------------------------


def cmd_register(a) -> None:
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(f"runs:/{a.run_id}/model", a.model, await_registration_for=30)
    MlflowClient().set_registered_model_alias(a.model, a.alias, mv.version)
    got = MlflowClient().get_model_version_by_alias(a.model, a.alias)
    if str(got.version) != str(mv.version):
        raise Unexpected(f"alias {a.alias} names version {got.version}, not {mv.version}")
    print(f"registered {a.model} version {mv.version} from runs:/{a.run_id}/model; "
          f"@{a.alias} -> {mv.version}")
    step("register", model=a.model, version=mv.version, alias=a.alias, run_id=a.run_id)


def cmd_send(a) -> None:
    df = generate(a.rows, a.shift, a.seed)
    path = f"/invocations?model={a.deployment}"
    versions: dict[str, int] = {}
    request_ids, scores = [], []
    errors = 0
    started = time.monotonic()
    for row in df[FEATURES].itertuples(index=False):
        body = {"dataframe_split": {"columns": FEATURES, "data": [list(row)]}}
        r = call(a.server, "POST", path, json=body)
        if r.status_code != 200:
            errors += 1
            if errors <= 3:
                print(f"  request failed: HTTP {r.status_code}: {r.text[:300]}", file=sys.stderr)
            continue
        v = r.headers.get("x-loopml-model-version", "?")
        versions[v] = versions.get(v, 0) + 1
        request_ids.append(r.headers.get("x-loopml-request-id"))
        scores.append(float(r.json()["predictions"][0]["probabilities"][1]))
    seconds = time.monotonic() - started
    if errors:
        raise Unexpected(f"{errors} of {a.rows} requests to {a.deployment} failed")
    if any(rid is None for rid in request_ids):
        raise Unexpected("an answer had no x-loopml-request-id header")
    truth = df[TARGET].tolist()
    served_auc = auc(truth, scores)
    by_version = ",".join(f"{k}:{n}" for k, n in sorted(versions.items()))
    print(f"sent {a.rows} {a.phase} requests ({'shifted' if a.shift else 'original'} population, "
          f"seed {a.seed}) in {seconds:.1f} s; answered by version {by_version}; "
          f"ROC AUC of the answers {served_auc:.3f}")
    if a.feedback:
        fb = [{"request_id": rid, "truth": str(t)} for rid, t in zip(request_ids, truth)]
        ok_json(call(a.server, "POST", f"/api/2.0/loopml/deployments/{a.deployment}/feedback",
                     json={"feedback": fb}))
        print(f"sent {len(fb)} labels as feedback")
    step("traffic", phase=a.phase, requests=a.rows, versions=by_version,
         auc=f"{served_auc:.4f}", feedback=len(request_ids) if a.feedback else 0)


def monitor_state(server: str, name: str) -> dict:
    return ok_json(call(server, "GET", f"/api/2.0/loopml/monitors/{name}"))


def cmd_monitor(a) -> None:
    m = monitor_state(a.server, a.name)
    latest = m.get("latest") or []
    if not latest:
        raise Unexpected(f"monitor {a.name} has no evaluation")
    status = {r["check"]: r["status"] for r in latest}
    breached = sorted(c for c, s in status.items() if s == "breach")
    overall = "breach" if breached else (
        "ok" if all(s == "ok" for s in status.values()) else "incomplete")
    checks = ",".join(f"{c}:{s}" for c, s in status.items())
    values = ",".join(
        f"{r['check']}:{r['value']:.4f}" for r in latest if isinstance(r.get("value"), (int, float))
    )
    alerts = m.get("alerts") or []
    step("monitor", phase=a.phase, status=overall, checks=checks, values=values,
         breached=",".join(breached) or "-", alerts=len(alerts))
    if overall != a.expect:
        raise Unexpected(f"monitor {a.name} is '{overall}' ({checks}), expected '{a.expect}'")
    for c in a.require_breach or []:
        if status.get(c) != "breach":
            raise Unexpected(f"check {c} is '{status.get(c)}', expected 'breach' ({checks})")


def cmd_wait_alert(a) -> None:
    """Waits until the monitor's newest alert says what became of its pipeline trigger."""
    deadline = time.monotonic() + a.timeout
    while True:
        alerts = ok_json(call(a.server, "GET", "/api/2.0/loopml/alerts",
                              params={"monitor": a.name})).get("alerts") or []
        # Delivered (or given up) alerts have their pipeline field set when the monitor has a
        # pipeline trigger; without one it stays empty.
        if alerts and all(x.get("pipeline") or x.get("status") != "pending" for x in alerts):
            break
        if time.monotonic() > deadline:
            if not alerts:
                raise Unexpected(f"monitor {a.name} raised no alert within {a.timeout} s")
            raise Unexpected(f"the alerts of {a.name} were not delivered within {a.timeout} s: "
                             f"{json.dumps(alerts)[:800]}")
        time.sleep(0.2)
    for x in alerts:
        print(f"alert {x['id']} on {x['check']}: {x['status']}; "
              f"{(x.get('payload') or {}).get('message', '')} | pipeline: {x.get('pipeline')}")
    pipeline = alerts[0].get("pipeline") or "none"
    started = any((x.get("pipeline") or "").startswith("started") for x in alerts)
    step("alert", monitor=a.name, alerts=len(alerts),
         checks=",".join(sorted({x["check"] for x in alerts})),
         pipeline="started" if started else "not-started",
         detail=json.dumps(pipeline))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"alerts": alerts, "started": started}, f)


def search_runs(server: str, experiment: str, filter_string: str) -> list[dict]:
    exp = call(server, "GET", "/api/2.0/mlflow/experiments/get-by-name",
               params={"experiment_name": experiment})
    if exp.status_code != 200:
        return []
    exp_id = exp.json()["experiment"]["experiment_id"]
    body = {"experiment_ids": [exp_id], "filter": filter_string, "max_results": 100,
            "order_by": ["attributes.start_time DESC"]}
    return ok_json(call(server, "POST", "/api/2.0/mlflow/runs/search", json=body)).get("runs", [])


def tags_of(run: dict) -> dict:
    return {t["key"]: t.get("value") for t in run.get("data", {}).get("tags", [])}


def metrics_of(run: dict) -> dict:
    return {m["key"]: m.get("value") for m in run.get("data", {}).get("metrics", [])}


def cmd_pipeline_report(a) -> None:
    """Waits for the pipeline's parent run (tag loopml.pipeline, no parent) started after
    `--after` to end, then reports its outcome, the gate's verdict and the registered version."""
    deadline = time.monotonic() + a.timeout
    flt = f"tags.`loopml.pipeline` = '{a.pipeline}'"
    while True:
        runs = [r for r in search_runs(a.server, a.experiment, flt)
                if r["info"].get("start_time", 0) >= a.after]
        parents = [r for r in runs if "mlflow.parentRunId" not in tags_of(r)]
        done = [r for r in parents if r["info"]["status"] in ("FINISHED", "FAILED", "KILLED")
                and "loopml.outcome" in tags_of(r)]
        if parents and len(done) == len(parents):
            break
        if time.monotonic() > deadline:
            raise Unexpected(f"no finished run of pipeline {a.pipeline} in experiment "
                             f"{a.experiment} within {a.timeout} s (runs seen: "
                             f"{[(r['info']['run_id'], r['info']['status']) for r in parents]})")
        time.sleep(0.5)
    if len(parents) != 1:
        # Each run registers a version and may promote it: the champion is then whichever
        # finished last, not "the" retrained model.
        described = []
        for p in sorted(parents, key=lambda r: r["info"].get("start_time", 0)):
            t = tags_of(p)
            pid = p["info"]["run_id"]
            versions = [tags_of(r).get("loopml.model_version") for r in runs
                        if tags_of(r).get("mlflow.parentRunId") == pid
                        and tags_of(r).get("loopml.step") == "register"]
            described.append(f"run {pid} (alert {t.get('loopml.alert_id', '-')}, check "
                             f"{t.get('loopml.check', '-')}, {t.get('loopml.outcome')}, "
                             f"registered version {','.join(v or '-' for v in versions) or '-'})")
        step("pipeline", runs=len(parents), outcome="MULTIPLE", started_by=a.started_by)
        raise Unexpected(f"{len(parents)} runs of pipeline {a.pipeline} were started for one "
                         f"breached evaluation, expected 1: " + "; ".join(described))
    parent = parents[0]
    pid = parent["info"]["run_id"]
    outcome = tags_of(parent)["loopml.outcome"]
    children = {tags_of(r).get("loopml.step"): r for r in runs
                if tags_of(r).get("mlflow.parentRunId") == pid}
    for name in sorted(children, key=lambda n: children[n]["info"].get("start_time", 0)):
        r = children[name]
        t = tags_of(r)
        extra = t.get("loopml.message") or ""
        print(f"  step {name:<12} {t.get('loopml.status', r['info']['status']):<10} "
              f"run {r['info']['run_id']}  {extra}".rstrip())
    gate = children.get("gate")
    gate_tags = tags_of(gate) if gate else {}
    gate_metrics = metrics_of(gate) if gate else {}
    register = children.get("register")
    version = tags_of(register).get("loopml.model_version", "-") if register else "-"
    train = children.get("train")
    train_metrics = metrics_of(train) if train else {}
    trigger = tags_of(train).get("loopml.trigger_window", "-") if train else "-"
    verdict = gate_tags.get("loopml.gate", "-")
    print(f"pipeline run {pid}: {outcome}; registered version {version}; gate {verdict} "
          f"(roc_auc challenger {gate_metrics.get('gate.challenger', float('nan')):.4f} vs "
          f"champion {gate_metrics.get('gate.champion', float('nan')):.4f})")
    step("pipeline", run_id=pid, outcome=outcome, gate=verdict, version=version,
         challenger_roc_auc=f"{gate_metrics.get('gate.challenger', float('nan')):.4f}",
         champion_roc_auc=f"{gate_metrics.get('gate.champion', float('nan')):.4f}",
         train_roc_auc=f"{train_metrics.get('roc_auc', float('nan')):.4f}",
         window=trigger, started_by=a.started_by)
    if outcome != "SUCCEEDED":
        raise Unexpected(f"pipeline run {pid} ended {outcome}")
    if verdict != "pass":
        raise Unexpected(f"the gate did not pass: {verdict}")


def cmd_window_dataset(a) -> None:
    """Prints the newest `{monitor}-window` dataset version (what the server stores on a breach
    and passes to the pipelines it starts as LOOPML_WINDOW_DATASET), or nothing."""
    v = ok_json(call(a.server, "GET", "/api/2.0/loopml/datasets",
                     params={"name": f"{a.name}-window"})).get("versions") or []
    if v:
        newest = max(v, key=lambda x: int(x["version"]))
        print(f"{newest['name']}@{newest['version']}")


def cmd_wait_alias(a) -> None:
    deadline = time.monotonic() + a.timeout
    started = time.monotonic()
    last = None
    while True:
        r = call(a.server, "GET", "/api/2.0/mlflow/registered-models/alias",
                 params={"name": a.model, "alias": a.alias})
        if r.status_code == 200:
            last = r.json()["model_version"]["version"]
            if str(last) == str(a.version):
                break
        if time.monotonic() > deadline:
            raise Unexpected(f"alias {a.model}@{a.alias} still names version {last} after "
                             f"{a.timeout} s (expected {a.version})")
        time.sleep(0.5)
    print(f"{a.model}@{a.alias} -> version {a.version} "
          f"(seen after {time.monotonic() - started:.1f} s)")
    step("alias", model=a.model, alias=a.alias, version=a.version)


def cmd_wait_serving(a) -> None:
    df = generate(50, 1, 99)
    deadline = time.monotonic() + a.timeout
    started = time.monotonic()
    sent = 0
    seen: dict[str, int] = {}
    while True:
        row = df[FEATURES].iloc[sent % len(df)].tolist()
        r = call(a.server, "POST", f"/invocations?model={a.deployment}",
                 json={"dataframe_split": {"columns": FEATURES, "data": [row]}})
        sent += 1
        if r.status_code != 200:
            raise Unexpected(f"request {sent} to {a.deployment} failed: HTTP {r.status_code}: "
                             f"{r.text[:300]}")
        v = r.headers.get("x-loopml-model-version", "?")
        seen[v] = seen.get(v, 0) + 1
        if v == str(a.version):
            break
        if time.monotonic() > deadline:
            raise Unexpected(f"{a.deployment} still answers with versions {seen} after "
                             f"{a.timeout} s (expected {a.version})")
        time.sleep(0.05)
    # A few more: every answer from now on must come from the new version.
    for i in range(20):
        row = df[FEATURES].iloc[i].tolist()
        r = call(a.server, "POST", f"/invocations?model={a.deployment}",
                 json={"dataframe_split": {"columns": FEATURES, "data": [row]}})
        v = r.headers.get("x-loopml-model-version", "?")
        if r.status_code != 200 or v != str(a.version):
            raise Unexpected(f"after the swap, request {i} got HTTP {r.status_code} from "
                             f"version {v}")
    print(f"{a.deployment} answers with version {a.version} "
          f"(after {sent} requests, {time.monotonic() - started:.2f} s; then 20 of 20)")
    step("serving", deployment=a.deployment, version=a.version, requests_until_swap=sent)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=os.environ.get("LOOPML_SERVER")
                    or os.environ.get("MLFLOW_TRACKING_URI"))
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("register")
    p.add_argument("--run-id", required=True)
    p.add_argument("--model", default="churn")
    p.add_argument("--alias", default="champion")
    p.set_defaults(fn=cmd_register)

    p = sub.add_parser("send")
    p.add_argument("--deployment", default="churn")
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--shift", type=int, choices=[0, 1], default=0)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--phase", default="reference")
    p.add_argument("--feedback", action="store_true", help="send the labels as feedback")
    p.set_defaults(fn=cmd_send)

    p = sub.add_parser("monitor")
    p.add_argument("--name", default="churn-health")
    p.add_argument("--phase", required=True)
    p.add_argument("--expect", choices=["ok", "breach"], required=True)
    p.add_argument("--require-breach", action="append", metavar="CHECK")
    p.set_defaults(fn=cmd_monitor)

    p = sub.add_parser("wait-alert")
    p.add_argument("--name", default="churn-health")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--out", help="write the alerts here as JSON")
    p.set_defaults(fn=cmd_wait_alert)

    p = sub.add_parser("pipeline-report")
    p.add_argument("--pipeline", default="churn-retrain")
    p.add_argument("--experiment", default="churn")
    p.add_argument("--after", type=int, default=0, help="only runs started at or after (epoch ms)")
    p.add_argument("--started-by", default="-")
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(fn=cmd_pipeline_report)

    p = sub.add_parser("window-dataset")
    p.add_argument("--name", default="churn-health", help="the monitor")
    p.set_defaults(fn=cmd_window_dataset)

    p = sub.add_parser("wait-alias")
    p.add_argument("--model", default="churn")
    p.add_argument("--alias", default="champion")
    p.add_argument("--version", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(fn=cmd_wait_alias)

    p = sub.add_parser("wait-serving")
    p.add_argument("--deployment", default="churn")
    p.add_argument("--version", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(fn=cmd_wait_serving)

    a = ap.parse_args(argv)
    if not a.server:
        ap.error("no server: pass --server or set LOOPML_SERVER / MLFLOW_TRACKING_URI")
    a.server = a.server.rstrip("/")
    try:
        a.fn(a)
    except Unexpected as e:
        print(f"demo.py {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
