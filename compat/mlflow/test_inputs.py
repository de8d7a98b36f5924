"""Run inputs: datasets logged with mlflow.log_input, model inputs, and dataset search."""

import mlflow
import pandas as pd
from mlflow.entities import LoggedModelInput

from loopml_server import assert_error


def test_log_input_dataset(client, experiment):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.0]})
    ds = mlflow.data.from_pandas(df, name="train-ds", targets="y")
    with mlflow.start_run() as r:
        mlflow.log_input(ds, context="training")
        mlflow.log_input(ds, context="training")  # same (name, digest): deduplicated
    run = client.get_run(r.info.run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    d, sent = inputs[0].dataset, ds._to_mlflow_entity()
    assert d.name == "train-ds"
    assert d.digest == ds.digest
    assert (d.source_type, d.source, d.schema, d.profile) == (sent.source_type, sent.source, sent.schema, sent.profile)
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}


def test_two_datasets_and_search_by_dataset(client, experiment):
    train = mlflow.data.from_pandas(pd.DataFrame({"x": [1.0, 2.0]}), name="train-ds")
    evals = mlflow.data.from_pandas(pd.DataFrame({"x": [5.0, 6.0, 7.0]}), name="eval-ds")
    with mlflow.start_run() as r1:
        mlflow.log_input(train, context="training")
        mlflow.log_input(evals, context="eval")
    with mlflow.start_run() as r2:
        mlflow.log_input(train, context="training")
    with mlflow.start_run():
        pass
    inputs = client.get_run(r1.info.run_id).inputs.dataset_inputs
    assert sorted((i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"]) for i in inputs) == [
        ("eval-ds", "eval"),
        ("train-ds", "training"),
    ]

    def ids(flt):
        return {x.info.run_id for x in client.search_runs([experiment], flt)}

    assert ids("datasets.name = 'train-ds'") == {r1.info.run_id, r2.info.run_id}
    assert ids("datasets.name = 'eval-ds'") == {r1.info.run_id}
    assert ids("datasets.context = 'eval'") == {r1.info.run_id}
    assert ids(f"datasets.digest = '{train.digest}' AND datasets.context = 'training'") == {r1.info.run_id, r2.info.run_id}
    assert ids("datasets.name LIKE 'eval%'") == {r1.info.run_id}


def test_model_inputs(client, experiment):
    model = mlflow.create_external_model(name="input-model")
    rid = client.create_run(experiment).info.run_id
    client.log_inputs(rid, models=[LoggedModelInput(model.model_id)])
    run = client.get_run(rid)
    assert [m.model_id for m in run.inputs.model_inputs] == [model.model_id]


def test_dataset_limits_raw(server):
    rid = server.new_run()

    def log(**dataset):
        ds = {"name": "d", "digest": "abc", "source_type": "local", "source": "{}", **dataset}
        return server.api("POST", "runs/log-inputs", json={"run_id": rid, "datasets": [{"tags": [], "dataset": ds}]})

    assert log().status_code == 200
    assert_error(log(digest="x" * 37), 400, "INVALID_PARAMETER_VALUE")
    assert_error(log(name="n" * 501), 400, "INVALID_PARAMETER_VALUE")
    run = server.get_run(rid)
    assert [i["dataset"]["name"] for i in run["inputs"]["dataset_inputs"]] == ["d"]
