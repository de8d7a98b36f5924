"""MLflow 3 logged models: mlflow.sklearn.log_model, pyfunc round trip, tags, search, lifecycle."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression


@pytest.fixture
def data():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    y = [0, 0, 0, 1, 1, 1]
    return X, y


def test_sklearn_log_model_and_pyfunc_round_trip(client, experiment, data):
    X, y = data
    with mlflow.start_run() as r:
        mlflow.log_param("C", 1.0)
        model = LogisticRegression().fit(X, y)
        # Explicit requirements skip the client's slow (client-side only) import sniffing;
        # test_autolog.py covers the inferred path.
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X.head(2), pip_requirements=["scikit-learn", "pandas"]
        )
        mlflow.log_metric("val_acc", 0.75, model_id=info.model_id)
    rid = r.info.run_id

    assert info.model_id.startswith("m-") and len(info.model_id) == 34
    lm = mlflow.get_logged_model(info.model_id)
    assert lm.status == LoggedModelStatus.READY
    assert lm.name == "model"
    assert lm.experiment_id == experiment
    assert lm.source_run_id == rid
    assert lm.artifact_location == f"mlflow-artifacts:/{experiment}/models/{info.model_id}/artifacts"
    assert lm.params.get("C") == "1.0", "log_model copies the run's params onto the model"
    assert [(m.key, m.value, m.run_id) for m in lm.metrics] == [("val_acc", 0.75, rid)]

    run = client.get_run(rid)
    assert [o.model_id for o in run.outputs.model_outputs] == [info.model_id]

    files = {f.path for f in client.list_logged_model_artifacts(info.model_id)}
    assert {"MLmodel", "requirements.txt", "python_env.yaml", "input_example.json"} <= files, files
    assert any(f.startswith("model.") for f in files), f"no serialized model file in {files}"
    mlmodel = mlflow.artifacts.load_text(f"{lm.artifact_location}/MLmodel")
    assert f"model_id: {info.model_id}" in mlmodel and "sklearn" in mlmodel

    found = mlflow.search_logged_models(experiment_ids=[experiment], filter_string="name = 'model'", output_format="list")
    assert [m.model_id for m in found] == [info.model_id]

    want = model.predict(X)
    for uri in [info.model_uri, f"models:/{info.model_id}", f"runs:/{rid}/model"]:
        loaded = mlflow.pyfunc.load_model(uri)
        assert np.array_equal(np.asarray(loaded.predict(X[["x"]])), want), uri
    reloaded = mlflow.sklearn.load_model(info.model_uri)
    assert np.array_equal(reloaded.predict_proba(X), model.predict_proba(X))


def test_logged_model_tags_external_finalize_delete(client, experiment):
    m = mlflow.create_external_model(name="ext-model", tags={"a": "1"}, model_type="agent")
    assert m.model_id.startswith("m-")
    assert m.tags.get("a") == "1" and m.model_type == "agent"
    client.set_logged_model_tags(m.model_id, {"lt": "1", "a": "2"})
    assert {k: v for k, v in mlflow.get_logged_model(m.model_id).tags.items() if not k.startswith("mlflow.")} == {
        "a": "2",
        "lt": "1",
    }
    client.delete_logged_model_tag(m.model_id, "lt")
    assert "lt" not in mlflow.get_logged_model(m.model_id).tags

    failed = mlflow.create_external_model(name="will-fail")
    client.finalize_logged_model(failed.model_id, LoggedModelStatus.FAILED)
    assert mlflow.get_logged_model(failed.model_id).status == LoggedModelStatus.FAILED
    client.finalize_logged_model(m.model_id, "READY")
    assert mlflow.get_logged_model(m.model_id).status == LoggedModelStatus.READY

    client.delete_logged_model(m.model_id)
    with pytest.raises(MlflowException) as ex:
        mlflow.get_logged_model(m.model_id)
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    remaining = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert [x.model_id for x in remaining] == [failed.model_id]


def test_logged_model_more_than_100_params(experiment):
    params = {f"p{i:03d}": str(i) for i in range(150)}
    m = mlflow.create_external_model(name="many-params", params=params)
    assert mlflow.get_logged_model(m.model_id).params == params


def test_missing_logged_model(client):
    with pytest.raises(MlflowException) as ex:
        client.get_logged_model("m-" + "0" * 32)
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_search_logged_models_paging_and_order(client, experiment):
    ids = [mlflow.create_external_model(name=f"pg-{i}").model_id for i in range(3)]
    order = [{"field_name": "name", "ascending": False}]
    seen, token, pages = [], None, 0
    while True:
        page = client.search_logged_models(experiment_ids=[experiment], order_by=order, max_results=2, page_token=token)
        seen += [m.model_id for m in page]
        pages += 1
        token = page.token
        if not token:
            break
        assert pages < 10, "page tokens do not terminate"
    assert seen == ids[::-1]
    assert pages == 2
