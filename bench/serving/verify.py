#!/usr/bin/env python3
"""Checks, before any timing, that a server answers correctly (standard library only).

    verify.py --url http://127.0.0.1:P --format oip|mlflow|mlflow-inputs --model rf|mlp
              [--name NAME] --verify work/verify.json

Sends each of the 5 verification rows as its own batch-1 request (the benchmark's shape) and
then all 5 in one request, and compares the answer with the reference in verify.json: sklearn's
predict_proba for the forest (tolerance 1e-5; also the ONNX servers' labels), onnxruntime's
logits for the MLP (tolerance 1e-4: GEMM results may differ in the last bits between batch
sizes). Prints one JSON line; exits 1 on a mismatch or a failed request.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request

TOL = {"rf": 1e-5, "mlp": 1e-4}


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
        return json.loads(r.read())


def call(a, rows: list[list[float]]) -> tuple[list[list[float]], list | None]:
    """(rows of probabilities or logits, labels or None) from one request of `rows`."""
    width = len(rows[0])
    if a.format == "oip":
        flat = [v for r in rows for v in r]
        body = {"inputs": [{"name": "features", "shape": [len(rows), width], "datatype": "FP32", "data": flat}]}
        out = post(f"{a.url}/v2/models/{a.name}/infer", body)
        by_name = {o["name"]: o for o in out["outputs"]}
        key = "probabilities" if a.model == "rf" else "logits"
        t = by_name[key]
        cols = t["shape"][1]
        data = t["data"]
        vals = [data[i * cols : (i + 1) * cols] for i in range(len(rows))]
        labels = by_name["label"]["data"] if "label" in by_name else None
        return vals, labels
    if a.format == "mlflow":
        body = {"dataframe_split": {"columns": [f"f{i}" for i in range(width)], "data": rows}}
        out = post(f"{a.url}/invocations", body)["predictions"]
        # sklearn flavor with predict_fn predict_proba: a list of rows
        return out, None
    body = {"inputs": {"features": rows}}
    out = post(f"{a.url}/invocations", body)["predictions"]
    key = "probabilities" if a.model == "rf" else "logits"
    return out[key], out.get("label")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--format", choices=["oip", "mlflow", "mlflow-inputs"], required=True)
    ap.add_argument("--model", choices=["rf", "mlp"], required=True)
    ap.add_argument("--name", help="model name in the URL (default: --model)")
    ap.add_argument("--verify", required=True)
    a = ap.parse_args()
    a.name = a.name or a.model
    ref = json.load(open(a.verify))[a.model]
    rows = ref["rows"]
    want = ref["probabilities"] if a.model == "rf" else ref["logits"]
    want_labels = ref.get("labels")
    got, labels = [], []
    for r in rows:
        v, l = call(a, [r])
        got += v
        labels += l or []
    batch, batch_labels = call(a, rows)
    worst = 0.0
    for g in (got, batch):
        for gr, wr in zip(g, want, strict=True):
            for x, y in zip(gr, wr, strict=True):
                worst = max(worst, abs(x - y))
    ok = worst <= TOL[a.model]
    label_ok = None
    if want_labels is not None and labels:
        label_ok = labels == want_labels and (batch_labels is None or batch_labels == want_labels)
        ok = ok and label_ok
    print(json.dumps({"ok": ok, "rows": len(rows), "max_abs_diff": worst, "tolerance": TOL[a.model],
                      "labels_ok": label_ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one line for run.sh's log
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
