#!/usr/bin/env python3
"""Trains the churn model on a CSV from generate.py and logs it to MLflow (loopml) as ONNX.

The model is a scikit-learn Pipeline (StandardScaler + LogisticRegression), converted with
skl2onnx into one FLOAT input `features` of shape [rows, 6] (columns in generate.FEATURES
order) and two outputs, `label` and `probabilities` (no ZipMap), and logged as an MLflow ONNX
model under the run's artifact path `model` (what `runs:/<run>/model` and the pipeline's
`register` step point at). Metrics `roc_auc` and `accuracy` are measured on a held-out split of
the same data: the pipeline's gate compares `roc_auc` between challenger and champion.

Inside a loopml pipeline step `MLFLOW_RUN_ID` is set and the step's run is used; run alone it
starts a run of its own in `--experiment`. Prints `train: run_id=… roc_auc=… accuracy=…`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np
import pandas as pd

from generate import FEATURES, TARGET


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="training CSV (generate.py's output)")
    ap.add_argument("--experiment", default="churn",
                    help="MLflow experiment when run alone (default churn)")
    ap.add_argument("--dataset-name", default=None,
                    help="name of the logged dataset input (default: the file's stem)")
    ap.add_argument("--test-size", type=float, default=0.25, help="held-out share (default 0.25)")
    ap.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = ap.parse_args(argv)

    # Heavy imports after argument parsing, so --help is instant.
    import mlflow
    import onnx
    import warnings
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # Hints about integer columns and ambiguous local sources do not concern this example.
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    df = pd.read_csv(args.data)
    missing = [c for c in FEATURES + [TARGET] if c not in df.columns]
    if missing:
        print(f"train: {args.data} lacks columns {missing}", file=sys.stderr)
        return 2
    train, test = train_test_split(
        df, test_size=args.test_size, random_state=args.seed, stratify=df[TARGET]
    )
    x_train = train[FEATURES].astype(np.float32)
    x_test = test[FEATURES].astype(np.float32)
    model = Pipeline([
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(C=args.C, max_iter=1000)),
    ]).fit(x_train, train[TARGET])
    proba = model.predict_proba(x_test)[:, 1]
    roc_auc = float(roc_auc_score(test[TARGET], proba))
    accuracy = float(accuracy_score(test[TARGET], model.predict(x_test)))

    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(model.named_steps["clf"]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onx.doc_string = "churn: " + ", ".join(FEATURES) + " -> label, probabilities"
    onnx.checker.check_model(onx)
    # The served model must answer what scikit-learn answers.
    import onnxruntime as ort

    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_proba = sess.run(["probabilities"], {"features": x_test.to_numpy()})[0][:, 1]
    gap = float(np.max(np.abs(onnx_proba - proba)))
    if gap > 1e-4:
        print(f"train: ONNX and scikit-learn disagree by {gap:.2e}", file=sys.stderr)
        return 1

    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(args.experiment)
    with mlflow.start_run() as run:
        digest = sha256(args.data)
        name = args.dataset_name or os.path.splitext(os.path.basename(args.data))[0]
        # The first 32 hex digits of the file's sha256: loopml links the input to the stored
        # dataset version with the same bytes (`loopml data add`), so lineage reaches the data.
        ds = mlflow.data.from_pandas(df, source=os.path.abspath(args.data), name=name,
                                     targets=TARGET, digest=digest[:32])
        mlflow.log_input(ds, context="training")
        mlflow.log_params({
            "model": "StandardScaler+LogisticRegression",
            "C": args.C,
            "test_size": args.test_size,
            "rows": len(df),
            "features": ",".join(FEATURES),
        })
        mlflow.log_metrics({
            "roc_auc": roc_auc,
            "accuracy": accuracy,
            "churn_rate": float(df[TARGET].mean()),
        })
        window = os.environ.get("LOOPML_WINDOW_DATASET")
        if window:
            # Set when a monitor's alert started this retraining: the window that drifted.
            mlflow.set_tag("loopml.trigger_window", window)
        signature = infer_signature(x_test.head(5), model.predict_proba(x_test.head(5)))
        # An MLflow 3 logged model named "model": the pipeline's `register` step finds it by
        # name from the run (as mlflow.register_model("runs:/<run>/model") would).
        mlflow.onnx.log_model(onx, name="model", signature=signature,
                              save_as_external_data=False)
        run_id = run.info.run_id

    outputs = os.environ.get("LOOPML_STEP_OUTPUTS")
    if outputs:
        with open(outputs, "a") as f:
            f.write(f"run_id={run_id}\nroc_auc={roc_auc:.6f}\naccuracy={accuracy:.6f}\n")
    print(f"train: run_id={run_id} roc_auc={roc_auc:.4f} accuracy={accuracy:.4f} "
          f"rows={len(df)} data={args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
