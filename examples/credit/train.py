"""Trains a credit-default model on a CSV with a string column and logs it as ONNX.

`--model logreg` (default): one-hot region + the two numbers, logistic regression.
`--model tree`: an unpruned decision tree on the same columns — it fits its training rows
perfectly and generalises worse. The run logs `roc_auc` measured on a split of its own data
(`--in-sample` measures it on the training rows themselves, the flattering number a hurried
user logs), so versions' own numbers come from different data; the pipeline's gate scores them
on one shared holdout instead. skl2onnx's defaults are kept: one input per column (region as a
string), outputs `output_label` and a ZipMap `output_probability`."""

import argparse

import mlflow
import mlflow.onnx
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

FEATURES = ["income", "debt", "region"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="logreg", choices=["logreg", "tree"])
    p.add_argument("--in-sample", action="store_true")
    a = p.parse_args()
    df = pd.read_csv(a.data)
    train, test = train_test_split(df, test_size=0.25, random_state=0, stratify=df["default"])
    clf = LogisticRegression(max_iter=1000) if a.model == "logreg" else DecisionTreeClassifier(
        random_state=0)
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("num", "passthrough", ["income", "debt"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ])),
        ("clf", clf),
    ]).fit(train[FEATURES], train["default"])
    scored = train if a.in_sample else test
    auc = roc_auc_score(scored["default"], model.predict_proba(scored[FEATURES])[:, 1])
    onx = convert_sklearn(
        model,
        initial_types=[
            ("income", FloatTensorType([None, 1])),
            ("debt", FloatTensorType([None, 1])),
            ("region", StringTensorType([None, 1])),
        ],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    with mlflow.start_run():  # the pipeline step's run (MLFLOW_RUN_ID)
        mlflow.log_params({"model": a.model, "in_sample": a.in_sample, "rows": len(train)})
        mlflow.log_metric("roc_auc", auc)
        mlflow.onnx.log_model(onx, name="model")
    print(f"trained {a.model}: roc_auc {auc:.3f} ({'training rows' if a.in_sample else 'own test split'})")


if __name__ == "__main__":
    main()
