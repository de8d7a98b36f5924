"""Model registry with real models: mlflow.sklearn.log_model(registered_model_name=...),
mlflow.register_model("runs:/..."), and `models:/` URIs (version, stage, alias, latest) that
download and load with pyfunc. Passes against the real `mlflow server` too (COMPAT_EXTERNAL_URL)."""

import json
import os
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

X = pd.DataFrame({"x": np.arange(20.0)})
# Three tiny models with different decision boundaries, so a URI that resolves to the wrong
# version predicts differently.
MODELS = {
    "v1": LogisticRegression().fit(X, (X["x"] >= 10).astype(int)),
    "v2": LogisticRegression().fit(X, (X["x"] < 10).astype(int)),
    "v3": LogisticRegression().fit(X, (X["x"] >= 4).astype(int)),
}
REQS = ["scikit-learn", "pandas"]  # explicit: skips the client's slow requirement inference


@pytest.fixture(scope="module")
def registered(server):
    """A registered model with three versions built the three client ways:
    v1 and v2 by log_model(registered_model_name=...), v3 by register_model("runs:/<run>/model").
    Then alias champ -> 2 and v1 -> Production."""
    preds = [tuple(m.predict(X)) for m in MODELS.values()]
    assert len(set(preds)) == 3, "the three models must predict differently"
    client = MlflowClient(server.url)
    exp = client.create_experiment(f"reg-{uuid.uuid4().hex[:12]}")
    mlflow.set_experiment(experiment_id=exp)
    name = f"regm-{uuid.uuid4().hex[:10]}"
    out = {"name": name, "experiment_id": exp, "runs": {}, "infos": {}}
    for key in ["v1", "v2"]:
        with mlflow.start_run() as r:
            info = mlflow.sklearn.log_model(MODELS[key], name="model", registered_model_name=name, pip_requirements=REQS)
        out["runs"][key], out["infos"][key] = r.info.run_id, info
    with mlflow.start_run() as r:
        info = mlflow.sklearn.log_model(MODELS["v3"], name="model", pip_requirements=REQS)
    out["runs"]["v3"], out["infos"]["v3"] = r.info.run_id, info
    out["mv3"] = mlflow.register_model(f"runs:/{r.info.run_id}/model", name)
    client.set_registered_model_alias(name, "champ", "2")
    client.transition_model_version_stage(name, "1", "Production")
    return out


def test_log_model_registers_versions(client, registered):
    name, infos, runs = registered["name"], registered["infos"], registered["runs"]
    assert infos["v1"].registered_model_version == "1"
    assert infos["v2"].registered_model_version == "2"
    assert infos["v3"].registered_model_version is None
    for key, version in [("v1", "1"), ("v2", "2")]:
        info = infos[key]
        mv = client.get_model_version(name, version)
        assert (mv.name, mv.version, mv.status) == (name, version, "READY")
        assert mv.source == f"models:/{info.model_id}"
        # The client sends only model_id; the server fills run_id from the logged model's source run.
        assert mv.run_id == runs[key]
        lm = mlflow.get_logged_model(info.model_id)
        assert lm.artifact_location == f"mlflow-artifacts:/{registered['experiment_id']}/models/{info.model_id}/artifacts"
        assert client.get_model_version_download_uri(name, version) == lm.artifact_location
        # The logged model records its versions: the server appends {"name", "version": <int>}
        # when the version is created, then the client appends its own {"version": "<str>"} entry.
        assert json.loads(lm.tags["mlflow.modelVersions"]) == [
            {"name": name, "version": int(version)},
            {"name": name, "version": version},
        ]


def test_register_model_from_runs_uri(client, registered):
    name, info, mv3 = registered["name"], registered["infos"]["v3"], registered["mv3"]
    assert (mv3.name, mv3.version, mv3.status) == (name, "3", "READY")
    # In MLflow 3 the run has no "model" artifact folder, so the client registers models:/<model_id>.
    assert mv3.source == f"models:/{info.model_id}"
    assert mv3.run_id == registered["runs"]["v3"]
    got = client.get_model_version(name, "3")
    assert (got.source, got.run_id) == (mv3.source, mv3.run_id)
    lm = mlflow.get_logged_model(info.model_id)
    assert client.get_model_version_download_uri(name, "3") == lm.artifact_location
    found = client.search_model_versions(f"run_id = '{registered['runs']['v3']}'")
    assert [(m.name, m.version) for m in found] == [(name, "3")]


def test_registered_model_state(client, registered):
    name = registered["name"]
    rm = client.get_registered_model(name)
    assert rm.aliases == {"champ": "2"}
    assert {mv.current_stage: mv.version for mv in rm.latest_versions} == {"Production": "1", "None": "3"}
    assert [m.version for m in client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])] == [
        "3",
        "2",
        "1",
    ]
    assert client.get_model_version_by_alias(name, "champ").aliases == ["champ"]


@pytest.mark.parametrize(
    "suffix, want",
    [("@champ", "v2"), ("/3", "v3"), ("/1", "v1"), ("/Production", "v1"), ("/latest", "v3")],
)
def test_models_uri_download_and_load(registered, tmp_path, suffix, want):
    uri = f"models:/{registered['name']}{suffix}"
    model_id = registered["infos"][want].model_id

    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path))
    files = set(os.listdir(local))
    assert {"MLmodel", "requirements.txt"} <= files, files
    assert any(f.startswith("model.") for f in files), files
    with open(os.path.join(local, "MLmodel")) as f:
        assert f"model_id: {model_id}" in f.read(), f"{uri} resolved to the wrong model"

    loaded = mlflow.pyfunc.load_model(uri)
    assert np.array_equal(np.asarray(loaded.predict(X)), MODELS[want].predict(X)), uri
