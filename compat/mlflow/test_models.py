import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression


@pytest.fixture
def data():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    y = [0, 0, 0, 1, 1, 1]
    return X, y


def test_sklearn_log_model_and_load(client, experiment, data):
    X, y = data
    with mlflow.start_run() as r:
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("acc", 1.0)
        model = LogisticRegression().fit(X, y)
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2))
    assert info.model_id.startswith("m-")
    lm = mlflow.get_logged_model(info.model_id)
    assert str(lm.status) in ("READY", "LoggedModelStatus.READY") or lm.status.to_proto() == 2
    assert lm.artifact_location.endswith(f"/models/{info.model_id}/artifacts")
    assert lm.source_run_id == r.info.run_id
    assert lm.params.get("C") == "1.0"
    run = client.get_run(r.info.run_id)
    assert run.outputs.model_outputs[0].model_id == info.model_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment], filter_string="name = 'model'", output_format="list"
    )
    assert [m.model_id for m in found] == [info.model_id]
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert list(loaded.predict(X)) == list(model.predict(X))
    # runs:/ URI of the model directory also resolves through the artifact proxy
    files = [f.path for f in client.list_artifacts(r.info.run_id)]
    assert isinstance(files, list)


def test_logged_model_tags_external_finalize_delete(client, experiment):
    from mlflow.entities import LoggedModelStatus

    m = mlflow.create_external_model(name="ext-model")
    client.set_logged_model_tags(m.model_id, {"lt": "1"})
    assert mlflow.get_logged_model(m.model_id).tags["lt"] == "1"
    client.delete_logged_model_tag(m.model_id, "lt")
    assert "lt" not in mlflow.get_logged_model(m.model_id).tags
    client.finalize_logged_model(m.model_id, LoggedModelStatus.READY)
    client.delete_logged_model(m.model_id)
    with pytest.raises(MlflowException) as ex:
        mlflow.get_logged_model(m.model_id)
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_autolog_sklearn_end_to_end(client, experiment):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    mlflow.autolog()
    try:
        with mlflow.start_run() as r:
            LogisticRegression(max_iter=300).fit(X, y)
    finally:
        mlflow.autolog(disable=True)
    run = client.get_run(r.info.run_id)
    assert run.data.params["max_iter"] == "300"
    assert run.data.metrics["training_accuracy_score"] > 0.9
    assert run.data.tags.get("estimator_name") == "LogisticRegression"
    assert run.outputs.model_outputs, "autolog logs the model"
    model_id = run.outputs.model_outputs[0].model_id
    lm = mlflow.get_logged_model(model_id)
    assert lm.metrics, "autolog attaches training metrics to the logged model"
    arts = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert "estimator.html" in arts
    assert run.inputs.dataset_inputs, "autolog records the training dataset"
    preds = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(X.head(3))
    assert len(preds) == 3
