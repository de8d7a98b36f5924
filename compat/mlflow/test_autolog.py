"""mlflow.autolog() with scikit-learn, end to end: params, metrics, tags, inputs, the logged
model, its artifacts, and loading it back."""

import mlflow
import numpy as np
import pytest
from mlflow.entities import LoggedModelStatus
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


@pytest.fixture
def autolog():
    mlflow.autolog()
    yield
    mlflow.autolog(disable=True)


def test_autolog_logistic_regression(client, experiment, autolog):
    X, y = load_iris(return_X_y=True, as_frame=True)
    with mlflow.start_run() as r:
        clf = LogisticRegression(max_iter=300, C=0.5).fit(X, y)
    rid = r.info.run_id
    run = client.get_run(rid)

    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["max_iter"] == "300" and p["C"] == "0.5" and "solver" in p
    m = run.data.metrics
    for key in ["training_accuracy_score", "training_f1_score", "training_precision_score", "training_recall_score"]:
        assert key in m, key
    assert m["training_accuracy_score"] == pytest.approx(clf.score(X, y))
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    assert run.data.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert run.inputs.dataset_inputs, "autolog records the training dataset"

    run_files = {f.path for f in client.list_artifacts(rid)}
    assert "estimator.html" in run_files, run_files
    html = mlflow.artifacts.load_text(f"runs:/{rid}/estimator.html")
    assert "LogisticRegression" in html

    assert len(run.outputs.model_outputs) == 1, "autolog logs exactly one model"
    model_id = run.outputs.model_outputs[0].model_id
    lm = mlflow.get_logged_model(model_id)
    assert lm.status == LoggedModelStatus.READY
    assert lm.source_run_id == rid
    assert lm.params.get("max_iter") == "300"
    assert {x.key for x in lm.metrics} >= {"training_accuracy_score"}, "training metrics attach to the model"
    model_files = {f.path for f in client.list_logged_model_artifacts(model_id)}
    assert {"MLmodel", "requirements.txt", "python_env.yaml"} <= model_files, model_files
    assert any(f.startswith("model.") for f in model_files), f"no serialized model file in {model_files}"
    assert "scikit-learn" in mlflow.artifacts.load_text(f"{lm.artifact_location}/requirements.txt")

    preds = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(X.head(10))
    assert np.array_equal(np.asarray(preds), clf.predict(X.head(10)))
