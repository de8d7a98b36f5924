import mlflow
import pytest
from mlflow.exceptions import MlflowException


@pytest.fixture
def three_runs(client, experiment):
    ids = []
    for i, (m, p, t) in enumerate([(0.5, "1", "xyz"), (2.5, "1", "xya"), (1.0, "2", "abc")]):
        with mlflow.start_run(run_name=f"run{i}", tags={"t": t}) as r:
            mlflow.log_metric("m", m)
            mlflow.log_param("p", p)
        ids.append(r.info.run_id)
    with mlflow.start_run(run_name="bare") as r:
        pass
    ids.append(r.info.run_id)
    return experiment, ids


def ids(runs):
    return [r.info.run_id for r in runs]


def test_filter_grammar(client, three_runs):
    exp, (a, b, c, bare) = three_runs
    got = client.search_runs(
        [exp],
        "metrics.m > 0 AND params.p = '1' AND tags.t LIKE 'xy%' AND attributes.status = 'FINISHED'",
        order_by=["metrics.m DESC", "attributes.start_time ASC"],
    )
    assert ids(got) == [b, a]
    assert ids(client.search_runs([exp], f"attributes.run_id IN ('{c}', '{a}')", order_by=["metrics.m ASC"])) == [a, c]
    assert set(ids(client.search_runs([exp], "tags.nothere IS NULL"))) == {a, b, c, bare}
    assert set(ids(client.search_runs([exp], "tags.t IS NOT NULL"))) == {a, b, c}
    assert ids(client.search_runs([exp], "tags.t LIKE 'XY%'")) == []
    assert set(ids(client.search_runs([exp], "tags.t ILIKE 'XY%'"))) == {a, b}
    assert set(ids(client.search_runs([exp], "params.p != '1'"))) == {c}
    assert ids(client.search_runs([exp], "metrics.m >= 2.5")) == [b]
    assert set(ids(client.search_runs([exp], "metrics.m <= 1"))) == {a, c}
    assert ids(client.search_runs([exp], "attributes.run_name = 'run2'")) == [c]
    assert set(ids(client.search_runs([exp], "attributes.start_time > 0 and status != 'RUNNING'"))) == {a, b, c, bare}


@pytest.mark.parametrize(
    "bad",
    ["metrics.m = 'abc'", "metrics.m > 1 OR metrics.m < 0", "params.p > 1", "foo.bar = 1", "(metrics.m > 1)"],
)
def test_bad_filters(client, three_runs, bad):
    exp, _ = three_runs
    with pytest.raises(MlflowException) as ex:
        client.search_runs([exp], bad)
    assert ex.value.error_code == "INVALID_PARAMETER_VALUE"


def test_order_missing_last_and_pagination(client, three_runs):
    exp, (a, b, c, bare) = three_runs
    assert ids(client.search_runs([exp], order_by=["metrics.m DESC"])) == [b, c, a, bare]
    assert ids(client.search_runs([exp], order_by=["metrics.m ASC"])) == [a, c, b, bare]
    seen, token = [], None
    while True:
        page = client.search_runs([exp], order_by=["metrics.m DESC"], max_results=1, page_token=token)
        seen += ids(page)
        token = page.token
        if not token:
            break
    assert seen == [b, c, a, bare]


def test_search_runs_dataframe(three_runs):
    exp, _ = three_runs
    df = mlflow.search_runs(experiment_ids=[exp])
    assert len(df) == 4
    for col in ["metrics.m", "params.p", "tags.t", "run_id", "status"]:
        assert col in df.columns, col
