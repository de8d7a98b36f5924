#!/usr/bin/env python3
"""Models and request rows for bench/serving (run by run.sh with bench/serving/.venv).

Writes into OUT_DIR (default bench/serving/work):

* rf_sklearn/    RandomForestClassifier(100 trees, max_depth 8) on 20 float features, 3 classes,
                 2,000 seeded synthetic rows, saved with mlflow.sklearn.save_model (cloudpickle,
                 signature f0..f19 double -> 3 probabilities, pyfunc_predict_fn="predict_proba"
                 so that mlflow answers with the same numbers as the ONNX servers).
* rf_onnx/       the same forest as an MLflow onnx-flavor directory (mlflow.onnx.save_model), for
                 `mlflow models serve` on the ONNX file (the research note's 570 req/s anchor).
* rf.onnx        the same forest through skl2onnx (zipmap=False, opset 17): input `features`
                 float [N,20]; outputs `label` int64 [N], `probabilities` float [N,3].
* mlp.onnx       the "heavy" model for the batching measurement, built with onnx.helper: a dense
                 MLP 512 -> 2048 -> 2048 -> 10 (MatMul/Add/Relu, float32, dynamic batch dim):
                 input `features` float [N,512], output `logits` float [N,10]. 21 MB of weights
                 read once per call, so a call of 64 rows costs a few times one row, not 64x.
* rows_rf.json   1,000 request rows for the forest (a held-out draw from the same generator).
* rows_mlp.json  1,000 request rows for the MLP (standard normal).
* verify.json    5 rows per model and the reference outputs (sklearn predict_proba for the
                 forest, onnxruntime for the MLP) that verify.py checks each server against.
* models.json    what was made, with versions and the measured single-call costs.

Everything is seeded: re-running gives the same models and rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np

N_FEATURES = 20
N_CLASSES = 3
N_TRAIN = 2000
N_ROWS = 1000
MLP_DIMS = (512, 2048, 2048, 10)
SEED = 20261123


def forest(out: Path) -> dict:
    import pandas as pd
    import sklearn
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    # 2,000 training rows + 1,000 request rows + 5 verification rows from one seeded draw.
    x, y = make_classification(
        n_samples=N_TRAIN + N_ROWS + 5,
        n_features=N_FEATURES,
        n_informative=10,
        n_redundant=4,
        n_classes=N_CLASSES,
        n_clusters_per_class=2,
        random_state=SEED,
    )
    # 4 decimals: short in JSON. Every consumer rounds the decimal to the same float32 (the ONNX
    # servers take FP32; sklearn's trees cast their input to float32).
    x = np.round(x, 4)
    cols = [f"f{i}" for i in range(N_FEATURES)]
    train = pd.DataFrame(x[:N_TRAIN], columns=cols)
    clf = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=SEED, n_jobs=1)
    clf.fit(train, y[:N_TRAIN])
    rows = x[N_TRAIN : N_TRAIN + N_ROWS]
    check = x[N_TRAIN + N_ROWS :]

    # (a) MLflow sklearn flavor
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    sk_dir = out / "rf_sklearn"
    shutil.rmtree(sk_dir, ignore_errors=True)
    example = pd.DataFrame(check[:2], columns=cols)
    signature = infer_signature(example, clf.predict_proba(example))
    mlflow.sklearn.save_model(
        clf,
        str(sk_dir),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        signature=signature,
        pyfunc_predict_fn="predict_proba",
    )

    # (b) skl2onnx, zipmap off: label int64 [N], probabilities float [N,3]
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        clf,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onx.graph.name = "rf"
    rf_path = out / "rf.onnx"
    rf_path.write_bytes(onx.SerializeToString())

    import mlflow.onnx

    onnx_dir = out / "rf_onnx"
    shutil.rmtree(onnx_dir, ignore_errors=True)
    mlflow.onnx.save_model(onx, str(onnx_dir))

    # Reference outputs: sklearn's own predict_proba (what mlflow's pyfunc returns), checked
    # against onnxruntime here so that a failed server check is the server's fault.
    ref = clf.predict_proba(pd.DataFrame(check, columns=cols))
    sess = ort_session(rf_path)
    got = sess.run(["probabilities"], {"features": check.astype(np.float32)})[0]
    diff = float(np.abs(got - ref).max())
    if diff > 1e-5:
        sys.exit(f"gen_models: onnxruntime and sklearn disagree on the forest by {diff}")

    (out / "rows_rf.json").write_text(json.dumps(rows.tolist()))
    return {
        "rf": {
            "trees": 100,
            "max_depth": 8,
            "features": N_FEATURES,
            "classes": N_CLASSES,
            "train_rows": N_TRAIN,
            "onnx_bytes": rf_path.stat().st_size,
            "sklearn_vs_onnxruntime_max_abs_diff": diff,
            "single_call_us": {
                "onnxruntime_python": time_call(sess, {"features": rows[:1].astype(np.float32)}),
                "sklearn_predict_proba": time_sklearn(clf, pd.DataFrame(rows[:1], columns=cols)),
            },
            "columns": cols,
        },
        "verify_rf": {
            "rows": check.tolist(),
            "probabilities": ref.tolist(),
            "labels": clf.predict(pd.DataFrame(check, columns=cols)).tolist(),
        },
        "versions": {
            "scikit-learn": sklearn.__version__,
            "mlflow": mlflow.__version__,
            "skl2onnx": __import__("skl2onnx").__version__,
        },
    }


def mlp(out: Path) -> dict:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    inits, nodes, prev = [], [], "features"
    for i, (a, b) in enumerate(zip(MLP_DIMS[:-1], MLP_DIMS[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(bias, f"B{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"]))
        last = i == len(MLP_DIMS) - 2
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], ["logits" if last else f"h{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", MLP_DIMS[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", MLP_DIMS[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = out / "mlp.onnx"
    path.write_bytes(model.SerializeToString())

    data_rng = np.random.default_rng(SEED + 1)
    # Rounded to 3 decimals: exact enough, and each request body stays ~3.5 KB.
    rows = np.round(data_rng.standard_normal((N_ROWS + 5, MLP_DIMS[0])), 3)
    check = rows[N_ROWS:]
    sess = ort_session(path)
    ref = sess.run(["logits"], {"features": check.astype(np.float32)})[0]
    (out / "rows_mlp.json").write_text(json.dumps(rows[:N_ROWS].tolist()))
    rows32 = rows.astype(np.float32)
    cost = {
        f"batch_{b}": time_call(sess, {"features": rows32[:b]}, reps=20 if b > 1 else 50)
        for b in (1, 8, 16, 32, 64)
    }
    return {
        "mlp": {
            "dims": list(MLP_DIMS),
            "weights": int(sum(np.prod(t.dims) for t in model.graph.initializer)),
            "onnx_bytes": path.stat().st_size,
            "call_us_onnxruntime_python_1_thread": cost,
        },
        "verify_mlp": {"rows": check.tolist(), "logits": ref.tolist()},
    }


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_call(sess, feed, reps=200) -> float:
    for _ in range(5):
        sess.run(None, feed)
    t = time.perf_counter()
    for _ in range(reps):
        sess.run(None, feed)
    return round((time.perf_counter() - t) / reps * 1e6, 1)


def time_sklearn(clf, df, reps=50) -> float:
    for _ in range(3):
        clf.predict_proba(df)
    t = time.perf_counter()
    for _ in range(reps):
        clf.predict_proba(df)
    return round((time.perf_counter() - t) / reps * 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(Path(__file__).resolve().parent / "work"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    info = forest(out)
    info.update(mlp(out))
    verify = {"rf": info.pop("verify_rf"), "mlp": info.pop("verify_mlp")}
    (out / "verify.json").write_text(json.dumps(verify))
    info["versions"]["onnxruntime"] = onnxruntime.__version__
    info["versions"]["onnx"] = __import__("onnx").__version__
    (out / "models.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({k: v for k, v in info.items() if k != "rf"} | {"rf": {k: v for k, v in info["rf"].items() if k != "columns"}}, indent=1))


if __name__ == "__main__":
    main()
