import mlflow
import pytest
from mlflow.exceptions import MlflowException


def code(exc):
    return exc.value.error_code


def test_default_experiment(client):
    e = client.get_experiment("0")
    assert e.name == "Default"
    assert e.artifact_location == "mlflow-artifacts:/0"


def test_create_get_duplicate_and_missing(client):
    b = client.create_experiment("exp-b", tags={"team": "x"})
    e = client.get_experiment(b)
    assert e.name == "exp-b" and e.tags == {"team": "x"} and e.lifecycle_stage == "active"
    assert e.artifact_location == f"mlflow-artifacts:/{b}"
    with pytest.raises(MlflowException) as ex:
        client.create_experiment("exp-b")
    assert code(ex) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as ex:
        client.get_experiment("987654")
    assert code(ex) == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_experiment_by_name("nope-does-not-exist") is None
    assert client.get_experiment_by_name("exp-b").experiment_id == b


def test_set_experiment_creates_then_reuses(server):
    first = mlflow.set_experiment("exp-a")
    again = mlflow.set_experiment("exp-a")
    assert first.experiment_id == again.experiment_id


def test_search_filter_order_and_pages(client):
    for n in ["srch-1", "srch-2", "srch-3"]:
        client.create_experiment(n, tags={"kind": "search" if n != "srch-3" else "other"})
    page1 = client.search_experiments(filter_string="name LIKE 'srch-%'", order_by=["name DESC"], max_results=1)
    assert [e.name for e in page1] == ["srch-3"]
    assert page1.token
    page2 = client.search_experiments(
        filter_string="name LIKE 'srch-%'", order_by=["name DESC"], max_results=1, page_token=page1.token
    )
    assert [e.name for e in page2] == ["srch-2"]
    tagged = client.search_experiments(filter_string="tags.kind = 'search'")
    assert sorted(e.name for e in tagged) == ["srch-1", "srch-2"]
    assert client.search_experiments(filter_string="name LIKE 'SRCH-%'") == []
    assert len(client.search_experiments(filter_string="name ILIKE 'SRCH-%'")) == 3
    with pytest.raises(MlflowException) as ex:
        client.search_experiments(filter_string="foo.bar = 1")
    assert code(ex) == "INVALID_PARAMETER_VALUE"


def test_rename_tags_delete_restore(client):
    from mlflow.entities import ViewType

    e = client.create_experiment("to-rename")
    client.rename_experiment(e, "renamed-exp")
    assert client.get_experiment(e).name == "renamed-exp"
    client.set_experiment_tag(e, "k", "v")
    assert client.get_experiment(e).tags["k"] == "v"
    client.delete_experiment_tag(e, "k")
    assert "k" not in client.get_experiment(e).tags
    client.delete_experiment(e)
    assert client.get_experiment(e).lifecycle_stage == "deleted"
    names = [x.name for x in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    assert "renamed-exp" in names
    with pytest.raises(MlflowException) as ex:
        client.create_experiment("renamed-exp")
    assert code(ex) == "RESOURCE_ALREADY_EXISTS", "names stay taken by deleted experiments"
    with pytest.raises(MlflowException) as ex:
        client.create_run(e)
    assert code(ex) == "INVALID_PARAMETER_VALUE"
    client.restore_experiment(e)
    assert client.get_experiment(e).lifecycle_stage == "active"
