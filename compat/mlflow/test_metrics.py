"""Metrics, log_batch and the batch limits: history order and paging, latest values,
all-or-nothing batches."""

import math

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from loopml_server import assert_error, metrics_of, params_of, tags_of


def test_log_batch_split_by_client_and_history(client, experiment):
    rid = client.create_run(experiment).info.run_id
    metrics = [Metric("big", float(i), 1000 + i, i) for i in range(1500)]
    params = [Param(f"p{i}", str(i)) for i in range(120)]
    tags = [RunTag(f"t{i}", "v") for i in range(5)]
    client.log_batch(rid, metrics=metrics, params=params, tags=tags)
    hist = client.get_metric_history(rid, "big")
    assert len(hist) == 1500
    assert [m.step for m in hist] == list(range(1500))
    assert [m.value for m in hist[:3]] == [0.0, 1.0, 2.0]
    run = client.get_run(rid)
    assert len(run.data.params) == 120 and run.data.params["p119"] == "119"
    assert all(run.data.tags[f"t{i}"] == "v" for i in range(5))
    assert run.data.metrics["big"] == 1499.0


def test_history_order_timestamp_then_step(client, experiment):
    rid = client.create_run(experiment).info.run_id
    client.log_metric(rid, "h", 3.0, timestamp=30, step=1)
    client.log_metric(rid, "h", 1.0, timestamp=10, step=5)
    client.log_metric(rid, "h", 2.0, timestamp=10, step=2)
    client.log_metric(rid, "h", 4.0, timestamp=5, step=9)
    hist = client.get_metric_history(rid, "h")
    assert [(m.timestamp, m.step, m.value) for m in hist] == [
        (5, 9, 4.0),
        (10, 2, 2.0),
        (10, 5, 1.0),
        (30, 1, 3.0),
    ]
    assert client.get_metric_history(rid, "nothing") == []


def test_latest_value_is_max_step_then_max_timestamp(client, experiment):
    rid = client.create_run(experiment).info.run_id
    client.log_metric(rid, "l", 7.0, timestamp=100, step=3)
    client.log_metric(rid, "l", 1.0, timestamp=10, step=5)
    client.log_metric(rid, "l", 2.0, timestamp=20, step=5)
    client.log_metric(rid, "l", 9.0, timestamp=500, step=4)
    assert client.get_run(rid).data.metrics["l"] == 2.0


def test_non_finite_values_round_trip(client, experiment):
    rid = client.create_run(experiment).info.run_id
    client.log_metric(rid, "pinf", float("inf"), step=0)
    client.log_metric(rid, "ninf", float("-inf"), step=0)
    client.log_metric(rid, "nan", float("nan"), step=0)
    m = client.get_run(rid).data.metrics
    assert m["pinf"] == math.inf and m["ninf"] == -math.inf and math.isnan(m["nan"])
    assert client.get_metric_history(rid, "pinf")[0].value == math.inf
    assert math.isnan(client.get_metric_history(rid, "nan")[0].value)


def test_history_beyond_one_client_page(client, experiment):
    """The client asks for 25000 points per page and follows next_page_token."""
    rid = client.create_run(experiment).info.run_id
    n = 26_000
    for start in range(0, n, 1000):
        client.log_batch(rid, metrics=[Metric("long", float(i), i, i) for i in range(start, start + 1000)])
    hist = client.get_metric_history(rid, "long")
    assert len(hist) == n
    assert hist[0].step == 0 and hist[-1].step == n - 1
    assert len({m.step for m in hist}) == n, "a page boundary repeated or skipped points"


def test_history_paging_raw(server):
    rid = server.new_run()
    server.ok("POST", "runs/log-batch", json={
        "run_id": rid,
        "metrics": [{"key": "pg", "value": i, "timestamp": 100 + i, "step": i} for i in range(20)],
    })
    seen, token, pages = [], None, 0
    while True:
        params = {"run_id": rid, "metric_key": "pg", "max_results": 7}
        if token:
            params["page_token"] = token
        body = server.ok("GET", "metrics/get-history", params=params)
        page = body.get("metrics", [])
        assert len(page) <= 7
        seen += [m["step"] for m in page]
        pages += 1
        token = body.get("next_page_token")
        if not token:
            break
        assert pages < 10
    assert seen == list(range(20))
    assert pages == 3
    assert_error(
        server.api("GET", "metrics/get-history", params={"run_id": rid, "metric_key": "pg", "max_results": 0}),
        400, "INVALID_PARAMETER_VALUE",
    )
    assert server.ok("GET", "metrics/get-history", params={"run_id": rid, "metric_key": "none"}).get("metrics", []) == []


@pytest.mark.parametrize(
    "what, body",
    [
        ("1001 metrics", {"metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]}),
        ("101 params", {"params": [{"key": f"p{i}", "value": "v"} for i in range(101)]}),
        ("101 tags", {"tags": [{"key": f"t{i}", "value": "v"} for i in range(101)]}),
        ("1001 in total", {
            "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1000)],
            "params": [{"key": "one", "value": "v"}],
        }),
    ],
)
def test_batch_limits(server, what, body):
    rid = server.new_run()
    assert_error(server.api("POST", "runs/log-batch", json={"run_id": rid, **body}), 400, "INVALID_PARAMETER_VALUE")
    run = server.get_run(rid)
    assert not metrics_of(run) and not params_of(run), f"{what}: a rejected batch wrote data"
    assert not [t for t in tags_of(run) if not t.startswith("mlflow.")], f"{what}: a rejected batch wrote tags"


def test_batch_at_the_limits_is_accepted(server):
    rid = server.new_run()
    server.ok("POST", "runs/log-batch", json={
        "run_id": rid,
        "metrics": [{"key": "edge", "value": i, "timestamp": 1, "step": i} for i in range(1000)],
    })
    server.ok("POST", "runs/log-batch", json={
        "run_id": rid,
        "params": [{"key": f"p{i}", "value": "v"} for i in range(100)],
        "tags": [{"key": f"t{i}", "value": "v"} for i in range(100)],
    })
    assert len(server.history(rid, "edge")) == 1000
    assert len(params_of(server.get_run(rid))) == 100


def _poisoned_batch(params):
    return {
        "metrics": [{"key": "half", "value": 1.0, "timestamp": 1, "step": s} for s in range(10)],
        "params": params,
        "tags": [{"key": "half-tag", "value": "x"}],
    }


def test_duplicate_param_key_in_batch_writes_nothing(server):
    rid = server.new_run()
    body = _poisoned_batch([{"key": "ok", "value": "1"}, {"key": "dup", "value": "1"}, {"key": "dup", "value": "2"}])
    assert_error(server.api("POST", "runs/log-batch", json={"run_id": rid, **body}), 400, "INVALID_PARAMETER_VALUE")
    run = server.get_run(rid)
    assert params_of(run) == {}
    assert "half" not in metrics_of(run) and server.history(rid, "half") == []
    assert "half-tag" not in tags_of(run)


def test_param_overwrite_in_batch_writes_nothing(server, client):
    rid = server.new_run()
    server.ok("POST", "runs/log-parameter", json={"run_id": rid, "key": "p", "value": "1"})
    body = _poisoned_batch([{"key": "fresh", "value": "new"}, {"key": "p", "value": "2"}])
    assert_error(server.api("POST", "runs/log-batch", json={"run_id": rid, **body}), 400, "INVALID_PARAMETER_VALUE")
    run = server.get_run(rid)
    assert params_of(run) == {"p": "1"}
    assert server.history(rid, "half") == []
    assert "half-tag" not in tags_of(run)
    # the same batch through the client raises the same code
    with pytest.raises(MlflowException) as ex:
        client.log_batch(rid, params=[Param("p", "3")], metrics=[Metric("half", 1.0, 1, 0)])
    assert ex.value.error_code == "INVALID_PARAMETER_VALUE"
    assert server.history(rid, "half") == []
    # re-sending an unchanged param value alongside new data is fine
    server.ok("POST", "runs/log-batch", json={"run_id": rid, **_poisoned_batch([{"key": "p", "value": "1"}])})
    assert len(server.history(rid, "half")) == 10


def test_batch_for_missing_run(server):
    assert_error(
        server.api("POST", "runs/log-batch", json={"run_id": "f" * 32, "metrics": [{"key": "m", "value": 1, "timestamp": 1}]}),
        404, "RESOURCE_DOES_NOT_EXIST",
    )
