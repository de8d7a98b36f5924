import math

import mlflow
import pytest
from mlflow.exceptions import MlflowException


def test_run_lifecycle_params_metrics_tags(client, experiment):
    with mlflow.start_run(run_name="r1", tags={"t": "xyz"}) as r:
        rid = r.info.run_id
        mlflow.log_param("p", 1)
        with pytest.raises(MlflowException) as ex:
            mlflow.log_param("p", 2)
        assert ex.value.error_code == "INVALID_PARAMETER_VALUE"
        mlflow.log_params({"a": "x", "b": 2})
        mlflow.log_metric("m", 1.5, step=0)
        mlflow.log_metric("nanm", float("nan"))
        mlflow.log_metrics({"m": 2.5, "acc": 0.9}, step=1)
        mlflow.set_tag("gone", "1")
        mlflow.set_tags({"k1": "v1", "k2": "v2"})
        client.delete_tag(rid, "gone")
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.info.end_time
    assert run.info.run_name == "r1"
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment}/{rid}/artifacts"
    assert run.data.metrics["m"] == 2.5 and run.data.metrics["acc"] == 0.9
    assert math.isnan(run.data.metrics["nanm"])
    assert run.data.params == {"p": "1", "a": "x", "b": "2"}
    tags = run.data.tags
    assert tags["t"] == "xyz" and tags["k1"] == "v1" and "gone" not in tags
    # system tags the client sends are stored and returned
    for k in ["mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.runName"]:
        assert k in tags, k
    assert tags["mlflow.runName"] == "r1"
    with pytest.raises(MlflowException) as ex:
        client.delete_tag(rid, "never-set")
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_generated_run_name(client, experiment):
    run = client.create_run(experiment)
    assert run.info.run_name and run.info.run_name.count("-") == 2
    assert run.data.tags["mlflow.runName"] == run.info.run_name


def test_missing_run(client):
    with pytest.raises(MlflowException) as ex:
        client.get_run("0123456789abcdef0123456789abcdef")
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_terminate_delete_restore_rename(client, experiment):
    run = client.create_run(experiment)
    rid = run.info.run_id
    client.set_terminated(rid, "FAILED")
    assert client.get_run(rid).info.status == "FAILED"
    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as ex:
        client.log_param(rid, "p", "1")
    assert ex.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_run(rid)
    client.update_run(rid, name="renamed")
    r = client.get_run(rid)
    assert r.info.run_name == "renamed" and r.data.tags["mlflow.runName"] == "renamed"


def test_nested_runs(client, experiment):
    with mlflow.start_run() as parent:
        with mlflow.start_run(nested=True) as child:
            pass
    assert client.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_log_batch_split_and_history(client, experiment):
    from mlflow.entities import Metric, Param, RunTag

    rid = client.create_run(experiment).info.run_id
    metrics = [Metric("big", float(i), 1000 + i, i) for i in range(1500)]
    params = [Param(f"p{i}", str(i)) for i in range(120)]
    tags = [RunTag(f"t{i}", "v") for i in range(5)]
    client.log_batch(rid, metrics=metrics, params=params, tags=tags)
    hist = client.get_metric_history(rid, "big")
    assert len(hist) == 1500
    assert [m.step for m in hist] == list(range(1500))
    run = client.get_run(rid)
    assert len(run.data.params) == 120 and run.data.metrics["big"] == 1499.0


def test_metric_history_order_timestamp_then_step(client, experiment):
    rid = client.create_run(experiment).info.run_id
    client.log_metric(rid, "h", 3.0, timestamp=30, step=1)
    client.log_metric(rid, "h", 1.0, timestamp=10, step=5)
    client.log_metric(rid, "h", 2.0, timestamp=10, step=2)
    hist = client.get_metric_history(rid, "h")
    assert [(m.timestamp, m.step) for m in hist] == [(10, 2), (10, 5), (30, 1)]
    # latest value = largest step
    assert client.get_run(rid).data.metrics["h"] == 1.0
    assert client.get_metric_history(rid, "nothing") == []


def test_log_inputs_dataset(client, experiment):
    import pandas as pd

    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    ds = mlflow.data.from_pandas(df, name="train-ds", targets="y")
    with mlflow.start_run() as r:
        mlflow.log_input(ds, context="training")
        mlflow.log_input(ds, context="training")  # deduplicated
    run = client.get_run(r.info.run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    d = inputs[0].dataset
    assert d.name == "train-ds" and d.digest == ds.digest and d.source_type
    assert d.schema and d.profile
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    found = client.search_runs([experiment], "datasets.name = 'train-ds' AND datasets.context = 'training'")
    assert [x.info.run_id for x in found] == [r.info.run_id]
