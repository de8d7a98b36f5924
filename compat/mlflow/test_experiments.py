"""Experiments through the real client: create/get, names, search with paging, lifecycle."""

import mlflow
import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from loopml_server import unique


def error_code(excinfo) -> str:
    return excinfo.value.error_code


def test_default_experiment_exists(client):
    e = client.get_experiment("0")
    assert e.name == "Default"
    assert e.artifact_location == "mlflow-artifacts:/0"
    assert e.lifecycle_stage == "active"
    assert client.get_experiment_by_name("Default").experiment_id == "0"


def test_create_get_duplicate_missing(client):
    name = unique("exp-b")
    b = client.create_experiment(name, tags={"team": "x"})
    e = client.get_experiment(b)
    assert e.experiment_id == b
    assert e.name == name
    assert e.tags == {"team": "x"}
    assert e.lifecycle_stage == "active"
    assert e.artifact_location == f"mlflow-artifacts:/{b}"
    assert e.creation_time > 0 and e.last_update_time >= e.creation_time

    with pytest.raises(MlflowException) as ex:
        client.create_experiment(name)
    assert error_code(ex) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as ex:
        client.get_experiment("987654")
    assert error_code(ex) == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_experiment_by_name(unique("nope")) is None
    assert client.get_experiment_by_name(name).experiment_id == b


def test_experiment_ids_are_increasing_integers(client):
    a = client.create_experiment(unique("ids"))
    b = client.create_experiment(unique("ids"))
    assert a.isdigit() and b.isdigit()
    assert int(b) > int(a) > 0


def test_explicit_artifact_location_is_kept(client):
    e = client.create_experiment(unique("loc"), artifact_location="mlflow-artifacts:/custom/place")
    assert client.get_experiment(e).artifact_location == "mlflow-artifacts:/custom/place"
    run = client.create_run(e)
    assert run.info.artifact_uri == f"mlflow-artifacts:/custom/place/{run.info.run_id}/artifacts"


def test_set_experiment_creates_then_reuses():
    name = unique("exp-a")
    first = mlflow.set_experiment(name)
    again = mlflow.set_experiment(name)
    assert first.experiment_id == again.experiment_id
    assert first.name == name
    with mlflow.start_run() as r:
        pass
    assert r.info.experiment_id == first.experiment_id


def test_search_filter_order_and_page_token(client):
    prefix = unique("srch")
    names = [f"{prefix}-{i}" for i in range(5)]
    for i, n in enumerate(names):
        client.create_experiment(n, tags={"kind": "even" if i % 2 == 0 else "odd"})
    flt = f"name LIKE '{prefix}-%'"

    # The outline's exact calls: page of one, then the next page with the token.
    page1 = client.search_experiments(filter_string=flt, order_by=["name DESC"], max_results=1)
    assert [e.name for e in page1] == [names[4]]
    assert page1.token
    page2 = client.search_experiments(
        filter_string=flt, order_by=["name DESC"], max_results=1, page_token=page1.token
    )
    assert [e.name for e in page2] == [names[3]]

    # Walking every page returns each experiment once, in order, and ends without a token.
    seen, token, pages = [], None, 0
    while True:
        page = client.search_experiments(
            filter_string=flt, order_by=["name ASC"], max_results=2, page_token=token
        )
        pages += 1
        seen += [e.name for e in page]
        token = page.token
        if not token:
            break
        assert pages < 10, "page tokens do not terminate"
    assert seen == names
    assert pages == 3

    evens = client.search_experiments(filter_string=f"{flt} AND tags.kind = 'even'")
    assert sorted(e.name for e in evens) == [names[0], names[2], names[4]]


def test_search_like_is_case_sensitive_ilike_is_not(client):
    prefix = unique("CaseExp")
    client.create_experiment(prefix)
    assert client.search_experiments(filter_string=f"name LIKE '{prefix.lower()}'") == []
    assert [e.name for e in client.search_experiments(filter_string=f"name LIKE '{prefix}'")] == [prefix]
    assert [e.name for e in client.search_experiments(filter_string=f"name ILIKE '{prefix.lower()}'")] == [prefix]


@pytest.mark.parametrize("bad", ["foo.bar = 1", "name = 'a' OR name = 'b'", "name >< 'x'"])
def test_search_bad_filter(client, bad):
    with pytest.raises(MlflowException) as ex:
        client.search_experiments(filter_string=bad)
    assert error_code(ex) == "INVALID_PARAMETER_VALUE"


def test_rename_tags_delete_restore(client):
    old, new = unique("to-rename"), unique("renamed")
    e = client.create_experiment(old)
    client.rename_experiment(e, new)
    assert client.get_experiment(e).name == new
    assert client.get_experiment_by_name(old) is None

    client.set_experiment_tag(e, "k", "v")
    client.set_experiment_tag(e, "k", "v2")  # upsert
    assert client.get_experiment(e).tags == {"k": "v2"}
    client.delete_experiment_tag(e, "k")
    assert "k" not in client.get_experiment(e).tags

    client.delete_experiment(e)
    assert client.get_experiment(e).lifecycle_stage == "deleted"
    deleted = [x.experiment_id for x in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    active = [x.experiment_id for x in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    assert e in deleted and e not in active
    with pytest.raises(MlflowException) as ex:
        client.create_experiment(new)
    assert error_code(ex) == "RESOURCE_ALREADY_EXISTS", "names stay taken by deleted experiments"
    with pytest.raises(MlflowException) as ex:
        client.create_run(e)
    assert error_code(ex) == "INVALID_PARAMETER_VALUE", "no new runs in a deleted experiment"

    client.restore_experiment(e)
    assert client.get_experiment(e).lifecycle_stage == "active"
    assert e in [x.experiment_id for x in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    client.create_run(e)
