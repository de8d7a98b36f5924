"""What MLflow's own server tests (tests/tracking/test_rest_tracking.py and
test_model_registry.py of mlflow 3.17.2) expect of a tracking server, asserted in our words:
messages and statuses of invalid requests, the UI's routes (get-artifact, upload-artifact,
search-datasets, the bulk metric histories, promptlab runs, gateway-proxy) and the JSON tags
the client reads back. Each test passes against the real `mlflow server` 3.17.2 too (run with
COMPAT_EXTERNAL_URL pointing at one, started with a local --default-artifact-root); where
loopml answers differently on purpose, docs/tracking.md says why."""

import json
import math

import pytest
import requests

from loopml_server import unique


def post(server, path, body):
    return requests.post(server.url + path, json=body, timeout=30)


def get(server, route, **params):
    return requests.get(server.url + route, params=params, timeout=30)


def bad_request(resp, text):
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert text in body["message"], body["message"]


@pytest.fixture
def run_id(client):
    exp = client.create_experiment(unique("parity"))
    return client.create_run(exp).info.run_id


# ------------------------------------------------------------------ request validation


def test_wrong_types_name_the_parameter_and_its_python_type(server):
    r = post(server, "/api/2.0/mlflow/experiments/create", {"name": "x", "artifact_location": 9.0})
    bad_request(r, "Invalid value 9.0 for parameter 'artifact_location' supplied")
    assert "Value was of type 'float'" in r.json()["message"]
    r = post(server, "/api/2.0/mlflow/experiments/create", {"name": "x", "tags": "5"})
    bad_request(r, "Invalid value \"5\" for parameter 'tags' supplied")
    assert "Value was of type 'str'" in r.json()["message"]


def test_log_batch_names_a_missing_field_by_its_place(server, run_id):
    r = post(
        server,
        "/api/2.0/mlflow/runs/log-batch",
        {"run_id": run_id, "metrics": [{"key": "mae", "value": 2.5}]},
    )
    bad_request(r, "Missing value for required parameter 'metrics[0].timestamp'")
    ok = post(
        server,
        "/api/2.0/mlflow/runs/log-batch",
        {"run_id": run_id, "metrics": [{"key": "mae", "value": 2.5, "timestamp": 123456789}]},
    )
    assert ok.status_code == 200, ok.text


def test_delete_tag_errors(client, run_id):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"Run .+ not found"):
        client.delete_tag("fake_run_id", "taggity")
    with pytest.raises(MlflowException, match="No tag with name: fakeTag"):
        client.delete_tag(run_id, "fakeTag")
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match=f"The run {run_id} must be in"):
        client.delete_tag(run_id, "taggity")


@pytest.mark.parametrize(
    "route",
    ["/api/2.0/mlflow/artifacts/list", "/get-artifact", "/model-versions/get-artifact"],
)
def test_artifact_paths_that_escape_are_invalid_paths(server, run_id, route):
    params = {"run_id": run_id, "name": "model", "version": 1}
    for bad in ["../path", "a/../../b", "/etc/passwd", "..%2f..%2fetc"]:
        r = get(server, route, path=bad, **params)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert r.json()["message"] == "Invalid path"


def test_a_doubled_slash_reaches_the_route(server):
    r = get(server, "//model-versions/get-artifact", name="model", version=1, path="../x")
    assert r.status_code == 400 and r.json()["message"] == "Invalid path"


# ------------------------------------------------------------------ bulk metric histories

BULK = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
INTERVAL = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"


def test_history_bulk_refuses_what_mlflow_refuses(server):
    bad_request(get(server, BULK, metric_key="k"), "must specify at least one run_id")
    bad_request(
        get(server, BULK, run_id=[f"id_{i}" for i in range(1000)], metric_key="k"),
        "GetMetricHistoryBulk request cannot specify more than 100 run_ids",
    )
    bad_request(get(server, BULK, run_id=["123"]), "must specify a metric_key")


def test_history_bulk_orders_by_run_then_time_and_caps_the_total(client, server):
    exp = client.create_experiment(unique("bulk"))
    ids = sorted(client.create_run(exp).info.run_id for _ in range(2))
    points = [(1, 2, 10.0), (1, 3, 11.0), (1, 3, 12.0), (2, 3, 12.0)]
    for rid in reversed(ids):
        for ts, step, value in reversed(points):
            client.log_metric(rid, "m", value, timestamp=ts, step=step)
    got = get(server, BULK, run_id=list(reversed(ids)), metric_key="m").json()["metrics"]
    want = [
        {"key": "m", "value": v, "timestamp": ts, "step": st, "run_id": rid}
        for rid in ids
        for ts, st, v in points
    ]
    assert got == want
    capped = get(server, BULK, run_id=ids, metric_key="m", max_results=5).json()["metrics"]
    assert capped == want[:5]
    # A run this server does not hold has no points; it is not an error.
    none = get(server, BULK, run_id=["0" * 32], metric_key="m").json()
    assert none.get("metrics", []) == []


def test_history_interval_refuses_what_mlflow_refuses(server):
    bad_request(get(server, INTERVAL, metric_key="k"), "Missing value for required parameter 'run_ids'")
    bad_request(
        get(server, INTERVAL, run_ids=[f"id_{i}" for i in range(101)], metric_key="k"),
        "GetMetricHistoryBulkInterval request must specify at most 100 run_ids.",
    )
    bad_request(
        get(server, INTERVAL, run_ids=["123"], metric_key="k", max_results=0),
        "max_results must be between 1 and 2500",
    )
    bad_request(
        get(server, INTERVAL, run_ids=["123"], metric_key=""),
        "Missing value for required parameter 'metric_key'",
    )
    bad_request(
        get(server, INTERVAL, run_ids=["123"], metric_key="k", start_step=1, end_step=0),
        "end_step must be greater than start_step. ",
    )
    bad_request(
        get(server, INTERVAL, run_ids=["123"], metric_key="k", start_step=1),
        "If either start step or end step are specified, both must be specified.",
    )


def test_history_interval_samples_each_run_evenly_and_keeps_its_last_point(client, server):
    exp = client.create_experiment(unique("interval"))
    a = client.create_run(exp).info.run_id
    b = client.create_run(exp).info.run_id
    client.log_batch(a, metrics=_metrics("m", range(10)))
    client.log_batch(b, metrics=_metrics("m", range(20)))

    def steps(**params):
        r = get(server, INTERVAL, metric_key="m", **params)
        assert r.status_code == 200, r.text
        out = {}
        for m in r.json().get("metrics", []):
            out.setdefault(m["run_id"], []).append(m["step"])
        return out

    # Ten points into five buckets: each bucket's first point, the last one replacing the fifth.
    assert steps(run_ids=[a], max_results=5) == {a: [0, 2, 4, 6, 9]}
    # Each run is sampled on its own points.
    assert steps(run_ids=[a, b], max_results=5) == {a: [0, 2, 4, 6, 9], b: [0, 4, 8, 12, 19]}
    # A step range narrows the points sampled; fewer than max_results: all of them.
    assert steps(run_ids=[a], start_step=2, end_step=5, max_results=5) == {a: [2, 3, 4, 5]}
    # One point asked for: the last one.
    assert steps(run_ids=[b], max_results=1) == {b: [19]}
    # Many values on one step stay bounded (the old by-step sampling returned them all).
    c = client.create_run(exp).info.run_id
    client.log_batch(c, metrics=[_metric("m", 0, value=float(v), ts=v) for v in range(50)])
    assert len(steps(run_ids=[c], max_results=5)[c]) == 5


def _metric(key, step, value=1.0, ts=1):
    from mlflow.entities import Metric

    return Metric(key, value, ts, step)


def _metrics(key, steps):
    return [_metric(key, s) for s in steps]


def test_history_interval_keeps_nan_values(client, server):
    exp = client.create_experiment(unique("nan"))
    rid = client.create_run(exp).info.run_id
    client.log_metric(rid, "m", float("nan"), step=0)
    client.log_metric(rid, "m", 1.5, step=1)
    r = get(server, INTERVAL, run_ids=[rid], metric_key="m").json()["metrics"]
    assert [m["step"] for m in r] == [0, 1]
    assert math.isnan(float(r[0]["value"])) and r[1]["value"] == 1.5


# ------------------------------------------------------------------ datasets, uploads, promptlab

SEARCH_DATASETS = "/ajax-api/2.0/mlflow/experiments/search-datasets"


def test_search_datasets_lists_each_dataset_with_its_context(client, server):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    bad_request(post(server, SEARCH_DATASETS, {}), "must specify at least one experiment_id")
    bad_request(
        post(server, SEARCH_DATASETS, {"experiment_ids": [str(i) for i in range(21)]}),
        "SearchDatasets request cannot specify more than 20 experiment_ids",
    )
    exp = client.create_experiment(unique("datasets"))
    rid = client.create_run(exp).info.run_id
    train = Dataset(name="train", digest="d1", source_type="local", source="s")
    other = Dataset(name="other", digest="d2", source_type="local", source="s")
    client.log_inputs(
        rid,
        [
            DatasetInput(train, tags=[InputTag("mlflow.data.context", "training")]),
            DatasetInput(other, tags=[]),
        ],
    )
    r = post(server, SEARCH_DATASETS, {"experiment_ids": [exp]})
    assert r.status_code == 200, r.text
    got = sorted(r.json()["dataset_summaries"], key=lambda d: d["digest"])
    assert got == [
        {"experiment_id": exp, "name": "train", "digest": "d1", "context": "training"},
        {"experiment_id": exp, "name": "other", "digest": "d2"},
    ]


UPLOAD = "/ajax-api/2.0/mlflow/upload-artifact"


def test_upload_artifact_then_get_it(server, run_id):
    def up(params, data=None):
        return requests.post(server.url + UPLOAD, params=params, data=data, timeout=30)

    bad_request(up({}), "Request must specify run_uuid.")
    bad_request(up({"run_uuid": run_id}), "Request must specify path.")
    bad_request(up({"run_uuid": run_id, "path": ""}), "Request must specify path.")
    bad_request(up({"run_uuid": run_id, "path": "../test.txt"}), "Invalid path")
    bad_request(up({"run_uuid": run_id, "path": "test.txt"}), "Request must specify data.")
    assert up({"run_uuid": run_id, "path": "dir/test.txt"}, "hello world").status_code == 200
    r = get(server, "/get-artifact", run_uuid=run_id, path="dir/test.txt")
    assert r.status_code == 200 and r.text == "hello world"
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    listed = get(server, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path="dir").json()
    assert [f["path"] for f in listed["files"]] == ["dir/test.txt"]


PROMPTLAB = "/ajax-api/2.0/mlflow/runs/create-promptlab-run"


def test_promptlab_run_requires_its_fields_in_order(server):
    body = {}
    for field, value in [
        ("experiment_id", "123"),
        ("prompt_template", "t"),
        ("prompt_parameters", [{"key": "k", "value": "v"}]),
        ("model_route", "r"),
        ("model_input", "i"),
        ("mlflow_version", None),
    ]:
        bad_request(post(server, PROMPTLAB, body), f"CreatePromptlabRun request must specify {field}.")
        body[field] = value


def test_promptlab_run_is_a_finished_run_with_its_table(client, server):
    exp = client.create_experiment(unique("promptlab"))
    r = post(
        server,
        PROMPTLAB,
        {
            "experiment_id": exp,
            "run_name": "my_run_name",
            "prompt_template": "Say {{ word }}",
            "prompt_parameters": [{"key": "word", "value": "hi"}],
            "model_route": "chat",
            "model_parameters": [{"key": "temperature", "value": "0.1"}],
            "model_input": "Say hi",
            "model_output": "hi",
            "model_output_parameters": [{"key": "latency", "value": "100"}],
            "mlflow_version": "3.17.2",
            "user_id": "username",
            "start_time": 456,
        },
    )
    assert r.status_code == 200, r.text
    run = r.json()["run"]
    assert run["info"]["run_name"] == "my_run_name"
    assert run["info"]["experiment_id"] == exp
    assert run["info"]["user_id"] == "username"
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["start_time"] == 456
    params = run["data"]["params"]
    for kv in [
        {"key": "model_route", "value": "chat"},
        {"key": "prompt_template", "value": "Say {{ word }}"},
        {"key": "temperature", "value": "0.1"},
    ]:
        assert kv in params
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.loggedArtifacts"] == '[{"path": "eval_results_table.json", "type": "table"}]'
    assert tags["mlflow.runSourceType"] == "PROMPT_ENGINEERING"
    rid = run["info"]["run_id"]
    table = get(server, "/get-artifact", run_id=rid, path="eval_results_table.json").json()
    assert table == {
        "columns": ["word", "prompt", "output", "latency"],
        "data": [["hi", "Say hi", "hi", "100"]],
    }
    files = {f.path for f in client.list_artifacts(rid, "model")}
    assert {"model/MLmodel", "model/parameters.yaml"} <= files


def test_gateway_proxy_without_a_deployments_server_lists_nothing(server):
    r = get(server, "/ajax-api/2.0/mlflow/gateway-proxy")
    assert r.status_code == 200 and r.json() == {"endpoints": []}


# ------------------------------------------------------------------ tags the client reads back


def test_log_model_history_tag(client, server, run_id):
    model = {
        "run_id": run_id,
        "artifact_path": "model",
        "utc_time_created": "2026-01-01 00:00:00.000000",
        "model_uuid": "abc",
        "flavors": {"python_function": {"loader_module": "x", "config": {"a": 1}}},
    }
    r = post(server, "/api/2.0/mlflow/runs/log-model", {"run_id": run_id, "model_json": json.dumps(model)})
    assert r.status_code == 200, r.text
    second = dict(model, artifact_path="other", model_uuid="def")
    post(server, "/api/2.0/mlflow/runs/log-model", {"run_id": run_id, "model_json": json.dumps(second)})
    history = json.loads(client.get_run(run_id).data.tags["mlflow.log-model.history"])
    assert [h["artifact_path"] for h in history] == ["model", "other"]
    assert history[0] == {
        "run_id": run_id,
        "artifact_path": "model",
        "utc_time_created": "2026-01-01 00:00:00.000000",
        "model_uuid": "abc",
        "flavors": {"python_function": {"loader_module": "x"}},
    }
    missing = post(server, "/api/2.0/mlflow/runs/log-model", {"run_id": run_id, "model_json": "{}"})
    bad_request(missing, "Model json is missing mandatory fields")
    bad_json = post(server, "/api/2.0/mlflow/runs/log-model", {"run_id": run_id, "model_json": "{x"})
    bad_request(bad_json, "is not a valid JSON")


def test_model_versions_tag_of_a_logged_model_is_python_json(client, server):
    import mlflow

    exp = client.create_experiment(unique("mvtag"))
    rid = client.create_run(exp).info.run_id
    lm = client.create_logged_model(exp, name="m", source_run_id=rid)
    name = unique("reg")
    client.create_registered_model(name)
    client.create_model_version(name, f"models:/{lm.model_id}", run_id=rid, model_id=lm.model_id)
    tag = mlflow.get_logged_model(lm.model_id).tags["mlflow.modelVersions"]
    assert tag == json.dumps([{"name": name, "version": 1}])


# ------------------------------------------------------------------ GraphQL (the MLflow UI's queries)


def graphql(server, query, **extra):
    r = requests.post(
        server.url + "/graphql",
        json={"query": query, **extra},
        headers={"content-type": "application/json; charset=utf-8"},
        timeout=30,
    )
    return r


def test_graphql_echo_and_errors(server):
    r = graphql(server, 'query testQuery {test(inputString: "abc") { output }}', operationName="testQuery")
    assert r.status_code == 200 and r.json() == {"data": {"test": {"output": "abc"}}, "errors": None}
    r = graphql(server, "query { nope }").json()
    assert r["data"] is None and r["errors"] == ["Cannot query field 'nope' on type 'Query'."]
    r = graphql(server, 'query { mlflowGetRun(input: {runId: "nope"}) { run { info { runId } } } }').json()
    assert r["data"] == {"mlflowGetRun": None} and "not found" in r["errors"][0]
    many = " ".join(f'a{i}: test(inputString: "x") {{ output }}' for i in range(11))
    r = graphql(server, "query { " + many + " }").json()
    assert r["data"] is None and "at most 10 root fields" in r["errors"][0]


def test_graphql_experiment_and_run_with_its_experiment_and_versions(client, server):
    name = unique("gql")
    client.create_registered_model(name)
    exp = client.create_experiment(name)
    run = client.create_run(exp)
    rid = run.info.run_id
    client.create_model_version(name, f"runs:/{rid}/model", rid)
    r = graphql(
        server,
        'query q { mlflowGetExperiment(input: {experimentId: "' + exp + '"}) { experiment { name } } }',
    ).json()
    assert r == {"data": {"mlflowGetExperiment": {"experiment": {"name": name}}}, "errors": None}
    query = (
        'query testQuery @component(name: "Test") { mlflowGetRun(input: {runId: "%s"}) '
        "{ run { info { status startTime } experiment { name } modelVersions { name version } } } }"
    ) % rid
    r = graphql(server, query, operationName="testQuery").json()
    assert r["errors"] is None
    got = r["data"]["mlflowGetRun"]["run"]
    assert got["info"]["status"] == run.info.status
    assert got["info"]["startTime"] == str(run.info.start_time)  # 64-bit integers are strings
    assert got["experiment"]["name"] == name
    assert got["modelVersions"] == [{"name": name, "version": "1"}]


def test_graphql_chart_history_and_nan(client, server):
    exp = client.create_experiment(unique("gqlm"))
    rid = client.create_run(exp).info.run_id
    for i in range(10):
        client.log_metric(rid, "metric_0", i, step=i)
    client.log_metric(rid, "nan_metric", float("nan"), step=0)
    query = (
        'query { mlflowGetMetricHistoryBulkInterval(input: {runIds: ["%s"], metricKey: "metric_0"}) '
        "{ metrics { key timestamp value step } } }"
    ) % rid
    r = graphql(server, query).json()
    metrics = r["data"]["mlflowGetMetricHistoryBulkInterval"]["metrics"]
    assert [m["value"] for m in metrics] == [float(i) for i in range(10)]
    assert [m["step"] for m in metrics] == [str(i) for i in range(10)]
    # A NaN metric is null in the run's data (GraphQL's Float cannot hold it).
    run = graphql(
        server,
        'query { mlflowGetRun(input: {runId: "%s"}) { run { data { metrics { key value } } } } }' % rid,
    ).json()
    assert run["errors"] is None
    values = {m["key"]: m["value"] for m in run["data"]["mlflowGetRun"]["run"]["data"]["metrics"]}
    assert values == {"metric_0": 9.0, "nan_metric": None}


def test_graphql_search_runs_newest_first(client, server):
    exp = client.create_experiment(unique("gqls"))
    first = client.create_run(exp).info.run_id
    second = client.create_run(exp).info.run_id
    query = (
        'mutation testMutation { mlflowSearchRuns(input: { experimentIds: ["%s"] }) '
        "{ runs { info { runId } } } }"
    ) % exp
    r = graphql(server, query, operationName="testMutation").json()
    assert r["data"]["mlflowSearchRuns"]["runs"] == [
        {"info": {"runId": second}},
        {"info": {"runId": first}},
    ]


def test_graphql_artifacts_with_fragments(client, server, tmp_path):
    exp = client.create_experiment(unique("gqla"))
    rid = client.create_run(exp).info.run_id
    f = tmp_path / "test.txt"
    f.write_text("hello world")
    client.log_artifact(rid, str(f))
    client.log_artifact(rid, str(f), "testDir")
    query = (
        "fragment FilesFragment on MlflowListArtifactsResponse { files { path isDir fileSize } }\n"
        'query testQuery { file: mlflowListArtifacts(input: { runId: "%s" }) { ...FilesFragment } '
        'subdir: mlflowListArtifacts(input: { runId: "%s", path: "testDir" }) { ...FilesFragment } }'
    ) % (rid, rid)
    r = graphql(server, query, operationName="testQuery").json()
    assert r["data"]["file"]["files"] == [
        {"path": "test.txt", "isDir": False, "fileSize": "11"},
        {"path": "testDir", "isDir": True, "fileSize": "0"},
    ]
    assert r["data"]["subdir"]["files"] == [{"path": "testDir/test.txt", "isDir": False, "fileSize": "11"}]


def test_graphql_search_datasets(client, server):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    exp = client.create_experiment(unique("gqld"))
    rid = client.create_run(exp).info.run_id
    client.log_inputs(
        rid,
        [
            DatasetInput(Dataset("ds-1", "12345", "script", "test"), tags=[]),
            DatasetInput(
                Dataset("ds-2", "12346", "script", "test"),
                tags=[InputTag("mlflow.data.context", "training")],
            ),
        ],
    )
    query = (
        'mutation { mlflowSearchDatasets(input: {experimentIds: ["%s"]}) '
        "{ datasetSummaries { experimentId name digest context } } }"
    ) % exp
    r = graphql(server, query).json()
    got = sorted(r["data"]["mlflowSearchDatasets"]["datasetSummaries"], key=lambda d: d["digest"])
    assert got == [
        {"experimentId": exp, "name": "ds-1", "digest": "12345", "context": ""},
        {"experimentId": exp, "name": "ds-2", "digest": "12346", "context": "training"},
    ]


def test_graphql_variables(client, server):
    exp = client.create_experiment(unique("gqlv"))
    r = graphql(
        server,
        "query q($id: String) { mlflowGetExperiment(input: {experimentId: $id}) { experiment { name } } }",
        variables={"id": exp},
    ).json()
    assert r["errors"] is None and r["data"]["mlflowGetExperiment"]["experiment"]["name"].startswith("gqlv")


@pytest.mark.skipif(
    bool(__import__("os").environ.get("COMPAT_EXTERNAL_URL")),
    reason="mlflow server answers a batch with an HTML 500; loopml refuses it with a 400",
)
def test_graphql_batch_is_refused_and_the_server_stays_up(server):
    one = {"query": '{ test(inputString: "x") { output } }'}
    r = requests.post(server.url + "/graphql", json=[one] * 1000, timeout=30)
    assert r.status_code == 400 and r.json()["data"] is None
    assert "batching is not supported" in r.json()["errors"][0]
    deep = "{ mlflowGetRun(input: {runId: \"x\"}) { run { " + "data { " * 12 + "}" * 14
    r = graphql(server, deep)
    assert r.status_code in (200, 400) and r.json()["data"] is None
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


# ------------------------------------------------------------------ logged models


def test_logged_model_files_for_the_ui(client, server, tmp_path):
    exp = client.create_experiment(unique("lmfiles"))
    lm = client.create_logged_model(exp, name="m")
    (tmp_path / "sub").mkdir()
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "sub" / "w.bin").write_bytes(b"\x00\x01")
    client.log_model_artifacts(lm.model_id, str(tmp_path))
    base = f"/ajax-api/2.0/mlflow/logged-models/{lm.model_id}/artifacts"
    r = get(server, base + "/files", artifact_file_path="MLmodel")
    assert r.status_code == 200 and r.text == "flavors: {}\n"
    assert get(server, base + "/files", artifact_file_path="../x").json()["message"] == "Invalid path"
    listing = get(server, f"/api/2.0/mlflow/logged-models/{lm.model_id}/artifacts/directories")
    assert listing.status_code == 200, listing.text
    files = {f["path"]: f for f in listing.json()["files"]}
    assert set(files) == {"MLmodel", "sub"} and files["sub"]["is_dir"] is True
    assert listing.json()["root_uri"] == lm.artifact_location
    sub = get(
        server,
        f"/api/2.0/mlflow/logged-models/{lm.model_id}/artifacts/directories",
        artifact_directory_path="sub",
    ).json()
    assert [(f["path"], int(f["file_size"])) for f in sub["files"]] == [("sub/w.bin", 2)]


def test_logged_model_search_orders_by_latest_metric_then_newest(client, server):
    from mlflow.entities import Metric

    exp = client.create_experiment(unique("lmorder"))
    rid = client.create_run(exp).info.run_id
    models = [client.create_logged_model(exp, name=f"m{i}") for i in range(3)]
    # m0: latest acc 0.5 (an older, higher value does not count); m1: 0.9 on two datasets; m2: none.
    client.log_batch(
        rid,
        metrics=[
            Metric("acc", 0.99, 1, 0, model_id=models[0].model_id),
            Metric("acc", 0.5, 2, 1, model_id=models[0].model_id),
            Metric("acc", 0.9, 1, 0, model_id=models[1].model_id, dataset_name="a", dataset_digest="1"),
            Metric("acc", 0.9, 2, 0, model_id=models[1].model_id, dataset_name="b", dataset_digest="2"),
        ],
    )
    found = client.search_logged_models([exp], order_by=[{"field_name": "metrics.acc", "ascending": False}])
    assert [m.name for m in found] == ["m1", "m0", "m2"]
    newest_first = client.search_logged_models([exp])
    assert [m.name for m in newest_first] == ["m2", "m1", "m0"]


# ------------------------------------------------------------------ registry flows (test_model_registry.py)


def _now():
    import time

    return int(time.time() * 1000)


def test_registry_timestamps_follow_mlflow(client):
    import time

    name = unique("ts")
    client.create_registered_model(name)
    created = client.get_registered_model(name).creation_timestamp
    rid = __import__("uuid").uuid4().hex
    time.sleep(0.01)
    t1 = _now()
    client.create_model_version(name, f"runs:/{rid}/model", rid)
    rm = client.get_registered_model(name)
    assert rm.creation_timestamp == created and rm.last_updated_timestamp >= t1  # a new version
    time.sleep(0.01)
    t2 = _now()
    client.transition_model_version_stage(name, "1", "Staging")
    assert client.get_registered_model(name).last_updated_timestamp >= t2  # a stage change
    assert client.get_model_version(name, "1").last_updated_timestamp >= t2
    time.sleep(0.01)
    t3 = _now()
    client.update_model_version(name, "1", description="d")
    assert client.get_model_version(name, "1").last_updated_timestamp >= t3
    assert client.get_registered_model(name).last_updated_timestamp < t3  # not a description


def test_model_version_search_orders_and_filters(client):
    import time

    prefix = unique("mvs")
    names = [f"{prefix}{i:02}" for i in range(4)]
    rid = __import__("uuid").uuid4().hex
    for n in names:
        client.create_registered_model(n)
    made = []
    for n in names + names[:2]:
        time.sleep(0.002)
        made.append(client.create_model_version(n, f"runs:/{rid}/model", rid))
    found = client.search_model_versions(f"name LIKE '{prefix}%'")
    assert [(m.name, m.version) for m in found] == [(m.name, m.version) for m in reversed(made)]
    by_name = client.search_model_versions(f"name LIKE '{prefix}%'", order_by=["name DESC"])
    assert [(m.name, m.version) for m in by_name] == sorted(
        [(m.name, m.version) for m in made], reverse=True
    )
    by_number = client.search_model_versions(f"name LIKE '{prefix}%'", order_by=["version_number DESC"])
    assert [(m.name, m.version) for m in by_number] == sorted(
        [(m.name, m.version) for m in made], key=lambda p: (-int(p[1]), p[0])
    )
    pages, token = [], None
    while True:
        page = client.search_model_versions(f"name LIKE '{prefix}%'", max_results=4, page_token=token)
        pages.extend((m.name, m.version) for m in page)
        token = page.token
        if not token:
            break
    assert pages == [(m.name, m.version) for m in reversed(made)]
    other = __import__("uuid").uuid4().hex
    client.create_model_version(names[0], f"runs:/{other}/another", other)
    assert [m.version for m in client.search_model_versions(f"source_path = 'runs:/{other}/another'")] == ["3"]
    assert [m.version for m in client.search_model_versions(f"run_id = '{other}'")] == ["3"]


def test_model_version_errors_and_numbers(client):
    from mlflow.exceptions import MlflowException

    name = unique("mve")
    client.create_registered_model(name)
    rid = __import__("uuid").uuid4().hex
    for _ in range(3):
        client.create_model_version(name, f"runs:/{rid}/model", rid)
    with pytest.raises(MlflowException, match="Parameter 'version' must be an integer, got 'something not correct'."):
        client.get_model_version(name=name, version="something not correct")
    client.delete_model_version(name, "1")
    with pytest.raises(MlflowException, match=r"Model Version .+ not found"):
        client.delete_model_version(name, "1")
    with pytest.raises(MlflowException, match=r"Model Version .+ not found"):
        client.update_model_version(name=name, version=1, description="x")
    with pytest.raises(MlflowException, match=r"Model Version .+ not found"):
        client.transition_model_version_stage(name=name, version=1, stage="Staging")
    client.delete_model_version(name, "3")
    assert client.create_model_version(name, f"runs:/{rid}/model", rid).version == "4"
    client.rename_registered_model(name, name + "-2")
    with pytest.raises(MlflowException, match=f"Registered Model with name={name} not found"):
        client.get_registered_model(name)


def test_latest_versions_per_stage(client):
    name = unique("latest")
    client.create_registered_model(name)
    rid = __import__("uuid").uuid4().hex
    for version, stage in [("1", "Archived"), ("2", "Production"), ("3", "Archived"), ("4", "Production"), ("5", "Staging"), ("6", "Staging"), ("7", "None")]:
        assert client.create_model_version(name, f"runs:/{rid}/model", rid).version == version
        if stage != "None":
            client.transition_model_version_stage(name, version, stage=stage)

    def latest(stages):
        return {m.current_stage: m.version for m in client.get_latest_versions(name, stages)}

    assert latest(["None"]) == {"None": "7"}
    assert latest(["None", "Staging"]) == {"None": "7", "Staging": "6"}
    everything = {"Production": "4", "Staging": "6", "Archived": "3", "None": "7"}
    assert latest(None) == everything and latest([]) == everything


def test_copy_model_version_keeps_what_mlflow_keeps(client):
    name = unique("copy")
    client.create_registered_model(name)
    rid = __import__("uuid").uuid4().hex
    src = client.create_model_version(name, f"runs:/{rid}/model", rid, description="dummy", tags={"hello": "world"})
    client.set_registered_model_alias(name, "test_alias", "1")
    copy = client.copy_model_version(f"models:/{name}@test_alias", name)
    assert copy.version == "2"
    got = client.get_model_version(name, "2")
    assert got.source == f"models:/{name}/1"
    assert got.description == "dummy" and got.run_id == rid and got.tags == {"hello": "world"}
    assert client.get_model_version_download_uri(name, "2") == src.source
    assert client.get_model_version_download_uri(name, "1") == src.source
