"""The fair gate's scoring: two registered ONNX versions scored on one shared holdout, ROC AUC
of each and a 1000-resample paired bootstrap of the difference.

loopml: `POST /api/2.0/loopml/models/compare` (the dataset version is read from the server's
store; the first call downloads it into the cache, so the timed calls are warm).
Anchor: what a user writes in Python for the same answer: pandas reads the holdout, onnxruntime
runs both models (the same ONNX files), sklearn's roc_auc_score per model and per resample.
Both print their AUCs, so the answers are compared too. Medians of --repeat runs."""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import requests
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "credit"))
from generate import sample  # noqa: E402


def train_and_register(url: str, work: Path) -> list[bytes]:
    import mlflow
    import mlflow.onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    mlflow.set_tracking_uri(url)
    client = mlflow.MlflowClient(url)
    client.create_registered_model("credit")
    train = sample(5000, 2, 2)
    onnx_models = []
    for clf in [LogisticRegression(max_iter=1000), DecisionTreeClassifier(max_depth=8, random_state=0)]:
        model = Pipeline([
            ("prep", ColumnTransformer([("num", "passthrough", ["income", "debt"]),
                                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])])),
            ("clf", clf),
        ]).fit(train[["income", "debt", "region"]], train["default"])
        onx = convert_sklearn(model, initial_types=[
            ("income", FloatTensorType([None, 1])), ("debt", FloatTensorType([None, 1])),
            ("region", StringTensorType([None, 1]))], target_opset={"": 17, "ai.onnx.ml": 3})
        with mlflow.start_run() as run:
            info = mlflow.onnx.log_model(onx, name="model")
        client.create_model_version("credit", info.model_uri, run.info.run_id)
        onnx_models.append(onx.SerializeToString())
    return onnx_models


def python_anchor(path: Path, models: list[bytes], resamples: int) -> tuple[float, float, float]:
    df = pd.read_csv(path)
    feeds = {"income": df[["income"]].to_numpy(np.float32), "debt": df[["debt"]].to_numpy(np.float32),
             "region": df[["region"]].to_numpy(str).astype(object)}
    scores = []
    for m in models:
        sess = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
        prob = sess.run(["output_probability"], feeds)[0]
        scores.append(np.array([p[1] for p in prob]))
    y = df["default"].to_numpy()
    a, b = (roc_auc_score(y, s) for s in scores)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(roc_auc_score(y[idx], scores[1][idx]) - roc_auc_score(y[idx], scores[0][idx]))
    return a, b, float(np.quantile(diffs, 0.05))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--loopml", required=True)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    models = train_and_register(a.url, work)
    holdout = work / "holdout.csv"
    sample(a.rows, 2, 7).to_csv(holdout, index=False)
    subprocess.run([a.loopml, "data", "add", "--name", "holdout", str(holdout), "--server", a.url],
                   check=True, capture_output=True)
    body = {"model": "credit", "versions": ["1", "2"], "dataset": "holdout@1", "label": "default",
            "metric": "roc_auc", "resamples": a.resamples, "confidence": 0.95}
    requests.post(a.url + "/api/2.0/loopml/models/compare", json=body, timeout=600).raise_for_status()
    ours, theirs = [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        r = requests.post(a.url + "/api/2.0/loopml/models/compare", json=body, timeout=600)
        ours.append(time.perf_counter() - t)
        r.raise_for_status()
        got = r.json()
        t = time.perf_counter()
        pa, pb, plow = python_anchor(holdout, models, a.resamples)
        theirs.append(time.perf_counter() - t)
    la, lb = (v["value"] for v in got["versions"])
    print(f"rows={a.rows} resamples={a.resamples}")
    print(f"AUCs   loopml {la:.6f} {lb:.6f} lower {got['difference']['lower']:.4f}")
    print(f"       python {pa:.6f} {pb:.6f} lower {plow:.4f}")
    mo, mp = statistics.median(ours), statistics.median(theirs)
    print(f"median loopml {mo:.3f} s   python (pandas + onnxruntime + sklearn) {mp:.3f} s   "
          f"ratio {mp / mo:.1f}x")


if __name__ == "__main__":
    main()
