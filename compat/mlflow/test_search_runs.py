"""search_runs: the filter grammar, order_by with missing values last, and page tokens."""

import mlflow
import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException


@pytest.fixture
def runs(client, experiment):
    """Four finished runs with deterministic start times (a oldest, bare newest).

    run   m     p    t      n
    a     0.5   "1"  xyz    9
    b     2.5   "1"  xya    10
    c     1.0   "2"  abc    -
    bare  -     -    -      -
    """
    rows = [("a", 0.5, "1", "xyz", 9.0), ("b", 2.5, "1", "xya", 10.0), ("c", 1.0, "2", "abc", None)]
    ids = {}
    for i, (name, m, p, t, n) in enumerate(rows):
        rid = client.create_run(experiment, start_time=1_000 + i, run_name=f"run-{name}", tags={"t": t}).info.run_id
        client.log_metric(rid, "m", m, timestamp=1, step=0)
        if n is not None:
            client.log_metric(rid, "n", n, timestamp=1, step=0)
        client.log_param(rid, "p", p)
        client.set_terminated(rid, "FINISHED")
        ids[name] = rid
    bare = client.create_run(experiment, start_time=2_000, run_name="bare").info.run_id
    client.set_terminated(bare, "FINISHED")
    ids["bare"] = bare
    return experiment, ids


def found(client, exp, flt="", **kw):
    return [r.info.run_id for r in client.search_runs([exp], flt, **kw)]


def test_outline_filter_and_order(client, runs):
    exp, r = runs
    got = found(
        client, exp,
        "metrics.m > 0 AND params.p = '1' AND tags.t LIKE 'xy%' AND attributes.status = 'FINISHED'",
        order_by=["metrics.m DESC", "attributes.start_time ASC"],
    )
    assert got == [r["b"], r["a"]]


def test_metric_comparators_are_numeric(client, runs):
    exp, r = runs
    assert set(found(client, exp, "metrics.m = 1")) == {r["c"]}
    assert set(found(client, exp, "metrics.m != 1")) == {r["a"], r["b"]}
    assert set(found(client, exp, "metrics.m > 0.5")) == {r["b"], r["c"]}
    assert set(found(client, exp, "metrics.m >= 0.5")) == {r["a"], r["b"], r["c"]}
    assert set(found(client, exp, "metrics.m < 2.5")) == {r["a"], r["c"]}
    assert set(found(client, exp, "metrics.m <= 2.5")) == {r["a"], r["b"], r["c"]}
    # 10 > 9 numerically, though "10" < "9" as strings
    assert found(client, exp, "metrics.n > 9") == [r["b"]]


def test_param_tag_and_attribute_comparators(client, runs):
    exp, r = runs
    assert set(found(client, exp, "params.p = '1'")) == {r["a"], r["b"]}
    assert set(found(client, exp, "params.p != '1'")) == {r["c"]}
    assert set(found(client, exp, "tags.t = 'abc'")) == {r["c"]}
    assert set(found(client, exp, "tags.t != 'abc'")) == {r["a"], r["b"]}
    assert set(found(client, exp, "tags.t LIKE 'xy_'")) == {r["a"], r["b"]}
    assert set(found(client, exp, "tags.t LIKE '%z'")) == {r["a"]}
    assert found(client, exp, "attributes.run_name = 'run-c'") == [r["c"]]
    assert set(found(client, exp, "attributes.run_name LIKE 'run-%'")) == {r["a"], r["b"], r["c"]}
    assert set(found(client, exp, "attributes.start_time >= 1001")) == {r["b"], r["c"], r["bare"]}
    assert set(found(client, exp, "attributes.status != 'RUNNING'")) == set(r.values())
    assert found(client, exp, "attributes.status = 'RUNNING'") == []


def test_like_is_case_sensitive_ilike_is_not(client, runs):
    exp, r = runs
    assert found(client, exp, "tags.t LIKE 'XY%'") == []
    assert set(found(client, exp, "tags.t ILIKE 'XY%'")) == {r["a"], r["b"]}
    assert found(client, exp, "params.p LIKE '2'") == [r["c"]]
    assert set(found(client, exp, "attributes.run_name ILIKE 'RUN-%'")) == {r["a"], r["b"], r["c"]}


def test_run_id_in_and_not_in(client, runs):
    exp, r = runs
    assert found(client, exp, f"attributes.run_id IN ('{r['c']}', '{r['a']}')", order_by=["metrics.m ASC"]) == [r["a"], r["c"]]
    assert set(found(client, exp, f"attributes.run_id NOT IN ('{r['c']}', '{r['a']}')")) == {r["b"], r["bare"]}
    assert found(client, exp, f"attributes.run_id IN ('{r['b']}') AND metrics.m > 2") == [r["b"]]


def test_is_null_and_is_not_null(client, runs):
    exp, r = runs
    assert set(found(client, exp, "tags.nothere IS NULL")) == set(r.values())
    assert set(found(client, exp, "tags.t IS NOT NULL")) == {r["a"], r["b"], r["c"]}
    assert found(client, exp, "tags.t IS NULL") == [r["bare"]]
    assert found(client, exp, "params.p IS NULL") == [r["bare"]]
    assert set(found(client, exp, "params.p IS NOT NULL")) == {r["a"], r["b"], r["c"]}


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.m = 'abc'",
        "metrics.m > 1 OR metrics.m < 0",
        "params.p > '1'",
        "params.p = 1",
        "metrics.m IS NULL",
        "foo.bar = 1",
        "attributes.nope = 'x'",
        "metrics.m >",
        "(metrics.m > 1)",
    ],
)
def test_bad_filters(client, runs, bad):
    exp, _ = runs
    with pytest.raises(MlflowException) as ex:
        client.search_runs([exp], bad)
    assert ex.value.error_code == "INVALID_PARAMETER_VALUE"


def test_order_by_missing_values_last(client, runs):
    exp, r = runs
    assert found(client, exp, order_by=["metrics.m DESC"]) == [r["b"], r["c"], r["a"], r["bare"]]
    assert found(client, exp, order_by=["metrics.m ASC"]) == [r["a"], r["c"], r["b"], r["bare"]]
    # ties (here: both runs without n) fall back to start_time DESC
    assert found(client, exp, order_by=["metrics.n ASC"]) == [r["a"], r["b"], r["bare"], r["c"]]
    assert found(client, exp, order_by=["metrics.n DESC"]) == [r["b"], r["a"], r["bare"], r["c"]]
    assert found(client, exp, order_by=["params.p DESC", "metrics.m DESC"]) == [r["c"], r["b"], r["a"], r["bare"]]
    assert found(client, exp, order_by=["tags.t ASC"]) == [r["c"], r["b"], r["a"], r["bare"]]
    assert found(client, exp, order_by=["attributes.run_name DESC"]) == [r["c"], r["b"], r["a"], r["bare"]]


def test_default_order_is_newest_first(client, runs):
    exp, r = runs
    assert found(client, exp) == [r["bare"], r["c"], r["b"], r["a"]]


@pytest.mark.parametrize("page_size", [1, 3])
def test_pagination_with_page_token(client, runs, page_size):
    exp, r = runs
    want = [r["b"], r["c"], r["a"], r["bare"]]
    seen, token, pages = [], None, 0
    while True:
        page = client.search_runs([exp], order_by=["metrics.m DESC"], max_results=page_size, page_token=token)
        assert len(page) <= page_size
        seen += [x.info.run_id for x in page]
        pages += 1
        token = page.token
        if not token:
            break
        assert pages < 10, "page tokens do not terminate"
    assert seen == want
    assert pages == -(-len(want) // page_size)


def test_search_across_experiments_and_view_types(client, runs):
    exp, r = runs
    other = client.create_experiment(f"other-{exp}")
    o = client.create_run(other, start_time=5_000).info.run_id
    assert set(found(client, exp, "") + [o]) == set(
        x.info.run_id for x in client.search_runs([exp, other], "")
    )
    client.delete_run(r["a"])
    assert r["a"] not in found(client, exp)
    assert found(client, exp, run_view_type=ViewType.DELETED_ONLY) == [r["a"]]
    assert set(found(client, exp, run_view_type=ViewType.ALL)) == set(r.values())


def test_fluent_search_runs_dataframe(runs):
    exp, r = runs
    df = mlflow.search_runs(experiment_ids=[exp])
    assert len(df) == 4
    for col in ["run_id", "status", "start_time", "metrics.m", "params.p", "tags.t"]:
        assert col in df.columns, col
    row = df.set_index("run_id").loc[r["b"]]
    assert row["metrics.m"] == 2.5 and row["params.p"] == "1" and row["tags.t"] == "xya"
    filtered = mlflow.search_runs(experiment_ids=[exp], filter_string="metrics.m > 0.7")
    assert set(filtered["run_id"]) == {r["b"], r["c"]}
