"""Model registry through the real client: registered models, versions, stages, aliases, search,
and the exact error codes. Every test here also passes against the real `mlflow server`
(`COMPAT_EXTERNAL_URL`); comments mark where its behaviour is surprising.

The sklearn flows (log_model / register_model, `models:/` URIs, pyfunc) are in
test_registry_models.py."""

import time

import pytest
from mlflow.exceptions import MlflowException

from loopml_server import assert_error, unique

# transition_model_version_stage / get_latest_versions are deprecated in the client.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def expect_error(code, status, fn, *args, **kwargs):
    """The call fails with this MLflow error_code (and the HTTP status the client maps it to)."""
    with pytest.raises(MlflowException) as ex:
        fn(*args, **kwargs)
    got = (ex.value.error_code, ex.value.get_http_status_code())
    assert got == (code, status), f"want {code} {status}, got {got}: {ex.value}"
    return ex.value


@pytest.fixture
def run(client, experiment):
    return client.create_run(experiment)


def source_of(run):
    """A version source inside the run's artifact root (the server checks that it is)."""
    return f"{run.info.artifact_uri}/model"


def new_model(client, prefix="rm", **kw):
    name = unique(prefix)
    client.create_registered_model(name, **kw)
    return name


def add_versions(client, name, run, n, **kw):
    return [client.create_model_version(name, source_of(run), run.info.run_id, **kw) for _ in range(n)]


def stages_of(versions):
    return {mv.current_stage: mv.version for mv in versions}


def tick():
    """Let the millisecond clock move, so last_updated_timestamp orders are unambiguous."""
    time.sleep(0.005)


# -- registered models ------------------------------------------------------------------------


def test_create_and_get_registered_model(client):
    name = unique("rm")
    now = int(time.time() * 1000)
    rm = client.create_registered_model(name, tags={"team": "ml", "k": "v"}, description="first model")
    assert rm.name == name
    assert rm.description == "first model"
    assert rm.tags == {"team": "ml", "k": "v"}
    assert abs(rm.creation_timestamp - now) < 600_000
    assert rm.last_updated_timestamp == rm.creation_timestamp
    assert rm.latest_versions == []
    assert rm.aliases == {}

    got = client.get_registered_model(name)
    assert (got.name, got.description, got.tags) == (name, "first model", {"team": "ml", "k": "v"})
    assert (got.creation_timestamp, got.last_updated_timestamp) == (rm.creation_timestamp, rm.last_updated_timestamp)
    assert got.latest_versions == [] and got.aliases == {}

    expect_error("RESOURCE_ALREADY_EXISTS", 400, client.create_registered_model, name, description="other")
    assert client.get_registered_model(name).description == "first model"
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_registered_model, name + "-missing")


def test_create_without_description_or_tags(client):
    name = unique("rm")
    rm = client.create_registered_model(name)
    # mlflow server omits an unset description (the client reads ""); versions send "".
    assert rm.description == "" and rm.tags == {}
    got = client.get_registered_model(name)
    assert got.description == "" and got.tags == {}


def test_invalid_registered_model_names(client):
    u = unique("bad")
    for bad in [f"a/{u}", f"a:{u}", f"{u}/", f"{u}:1"]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.create_registered_model, bad)
    expect_error("INVALID_PARAMETER_VALUE", 400, client.create_registered_model, "")
    name = new_model(client)
    for bad in [f"x/{u}", f"x:{u}"]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.rename_registered_model, name, bad)
    assert client.get_registered_model(name).name == name


def test_rename_registered_model(client, run):
    old = new_model(client, tags={"t": "1"}, description="desc")
    add_versions(client, old, run, 2)
    client.set_registered_model_alias(old, "champ", "2")
    new = unique("renamed")

    client.rename_registered_model(old, new)
    got = client.get_registered_model(new)
    assert (got.name, got.description, got.tags) == (new, "desc", {"t": "1"})
    assert got.aliases == {"champ": "2"}
    assert stages_of(got.latest_versions) == {"None": "2"}
    for v in ["1", "2"]:
        mv = client.get_model_version(new, v)
        assert (mv.name, mv.version, mv.run_id) == (new, v, run.info.run_id)
    assert client.get_model_version_by_alias(new, "champ").version == "2"
    assert [m.version for m in client.search_model_versions(f"name = '{new}'")] == ["2", "1"]

    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_registered_model, old)
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version, old, "1")
    assert client.search_model_versions(f"name = '{old}'") == []
    assert client.search_registered_models(f"name = '{old}'") == []

    # Numbering continues under the new name.
    assert add_versions(client, new, run, 1)[0].version == "3"

    taken = new_model(client)
    expect_error("RESOURCE_ALREADY_EXISTS", 400, client.rename_registered_model, new, taken)
    assert client.get_model_version(new, "3").name == new
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.rename_registered_model, old, unique("x"))

    # The old name is free again and starts from version 1.
    client.create_registered_model(old)
    assert add_versions(client, old, run, 1)[0].version == "1"


def test_update_registered_model_description(client):
    name = new_model(client, description="before")
    created = client.get_registered_model(name)
    tick()
    updated = client.update_registered_model(name, description="after")
    assert updated.name == name and updated.description == "after"
    got = client.get_registered_model(name)
    assert got.description == "after"
    assert got.creation_timestamp == created.creation_timestamp
    assert got.last_updated_timestamp > created.last_updated_timestamp
    client.update_registered_model(name, description="")
    assert client.get_registered_model(name).description == ""
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.update_registered_model, name + "-x", description="d")


def test_delete_registered_model_deletes_versions(client, run):
    name = new_model(client, tags={"a": "b"})
    add_versions(client, name, run, 2)
    client.set_registered_model_alias(name, "champ", "1")

    client.delete_registered_model(name)
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_registered_model, name)
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version, name, "1")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version_by_alias, name, "champ")
    assert client.search_model_versions(f"name = '{name}'") == []
    assert client.search_registered_models(f"name = '{name}'") == []
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.delete_registered_model, name)

    # Re-created under the same name: nothing survives, numbering restarts.
    client.create_registered_model(name)
    got = client.get_registered_model(name)
    assert got.tags == {} and got.aliases == {} and got.latest_versions == []
    assert add_versions(client, name, run, 1)[0].version == "1"


def test_registered_model_tags(client):
    name = new_model(client, tags={"keep": "1"})
    client.set_registered_model_tag(name, "k", "v")
    client.set_registered_model_tag(name, "k", "v2")
    client.set_registered_model_tag(name, "empty", "")
    assert client.get_registered_model(name).tags == {"keep": "1", "k": "v2", "empty": ""}
    client.delete_registered_model_tag(name, "k")
    assert client.get_registered_model(name).tags == {"keep": "1", "empty": ""}
    client.delete_registered_model_tag(name, "never-set")  # mlflow server: no error
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.set_registered_model_tag, name + "-x", "k", "v")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.delete_registered_model_tag, name + "-x", "keep")


# -- searching registered models --------------------------------------------------------------


@pytest.fixture
def four_models(client):
    prefix = unique("srch")
    names = {k: f"{prefix}-{k}" for k in "abcd"}
    client.create_registered_model(names["a"], tags={"team": "x", "tier": "1"})
    client.create_registered_model(names["b"], tags={"team": "y"})
    client.create_registered_model(names["c"], tags={"team": "x", "tier": "2"})
    client.create_registered_model(names["d"])
    return prefix, names


def rm_names(client, filter_string=None, **kw):
    return [m.name for m in client.search_registered_models(filter_string, **kw)]


def test_search_registered_models_filters(client, four_models):
    prefix, n = four_models
    everything = [n["a"], n["b"], n["c"], n["d"]]
    # The default order is name ASC.
    assert rm_names(client, f"name LIKE '{prefix}-%'") == everything
    assert rm_names(client, f"name LIKE '%{prefix[-10:]}-_'") == everything
    assert rm_names(client, f"name ILIKE '{prefix.upper()}-%'") == everything
    assert rm_names(client, f"name = '{n['b']}'") == [n["b"]]
    assert rm_names(client, f"name = \"{n['b']}\"") == [n["b"]]
    assert rm_names(client, f"name IN ('{n['c']}', '{n['a']}', '{prefix}-zz')") == [n["a"], n["c"]]
    assert rm_names(client, f"name LIKE '{prefix}-%' AND name != '{n['a']}'") == everything[1:]
    assert rm_names(client, f"name LIKE '{prefix}-%' AND tags.team = 'x'") == [n["a"], n["c"]]
    assert rm_names(client, f"name LIKE '{prefix}-%' AND tags.team = 'x' AND tags.tier = '2'") == [n["c"]]
    assert rm_names(client, f"name LIKE '{prefix}-%' AND tags.`tier` LIKE '%'") == [n["a"], n["c"]]
    assert rm_names(client, f"name LIKE '{prefix}-%' AND tags.team != 'x'") == [n["b"]]
    assert rm_names(client, f"name = '{prefix}-nope'") == []


def test_search_registered_models_order_by(client, four_models):
    prefix, n = four_models
    flt = f"name LIKE '{prefix}-%'"
    assert rm_names(client, flt, order_by=["name DESC"]) == [n["d"], n["c"], n["b"], n["a"]]
    assert rm_names(client, flt, order_by=["name ASC"]) == [n["a"], n["b"], n["c"], n["d"]]
    for k in "cab":
        tick()
        client.update_registered_model(n[k], description=f"touched {k}")
    assert rm_names(client, flt, order_by=["last_updated_timestamp DESC"]) == [n["b"], n["a"], n["c"], n["d"]]
    assert rm_names(client, flt, order_by=["last_updated_timestamp ASC"]) == [n["d"], n["c"], n["a"], n["b"]]


def test_search_registered_models_pagination(client):
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in reversed(names):
        client.create_registered_model(name)
    flt = f"name LIKE '{prefix}-%'"

    for order, want in [(None, names), (["name DESC"], names[::-1])]:
        seen, sizes, token = [], [], None
        while True:
            page = client.search_registered_models(flt, max_results=2, order_by=order, page_token=token)
            seen += [m.name for m in page]
            sizes.append(len(page))
            token = page.token
            if not token:
                break
            assert len(sizes) < 10, "page tokens do not terminate"
        assert seen == want, order
        assert sizes == [2, 2, 1]

    # mlflow looks one row ahead: an exactly full last page carries no token.
    page = client.search_registered_models(flt, max_results=5)
    assert [m.name for m in page] == names and not page.token
    page = client.search_registered_models(flt, max_results=4)
    assert len(page) == 4 and page.token
    rest = client.search_registered_models(flt, max_results=4, page_token=page.token)
    assert [m.name for m in rest] == names[4:] and not rest.token


def test_search_registered_models_invalid(client):
    for bad in [
        "nme = 'x'",
        "name = x",
        "name = 'a' OR name = 'b'",
        "tags.k > '1'",
        "creation_timestamp > 5",
        "name LIKE",
    ]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.search_registered_models, bad)
    expect_error("INVALID_PARAMETER_VALUE", 400, client.search_registered_models, order_by=["foo ASC"])
    expect_error("INVALID_PARAMETER_VALUE", 400, client.search_registered_models, max_results=1001)
    assert isinstance(client.search_registered_models(max_results=1000), list)


def test_latest_versions_per_stage(client, run):
    name = new_model(client)
    add_versions(client, name, run, 5)
    client.transition_model_version_stage(name, "1", "Archived")
    client.transition_model_version_stage(name, "2", "Staging")
    client.transition_model_version_stage(name, "3", "Production")
    client.transition_model_version_stage(name, "4", "Staging")
    want = {"Archived": "1", "Staging": "4", "Production": "3", "None": "5"}

    rm = client.get_registered_model(name)
    assert stages_of(rm.latest_versions) == want and len(rm.latest_versions) == 4
    for mv in rm.latest_versions:
        assert (mv.name, mv.run_id, mv.status) == (name, run.info.run_id, "READY")
    [found] = client.search_registered_models(f"name = '{name}'")
    assert stages_of(found.latest_versions) == want and len(found.latest_versions) == 4

    assert stages_of(client.get_latest_versions(name)) == want
    assert [mv.version for mv in client.get_latest_versions(name, ["Production"])] == ["3"]
    assert stages_of(client.get_latest_versions(name, ["staging", "PRODUCTION"])) == {"Staging": "4", "Production": "3"}
    assert client.get_latest_versions(name, ["None"])[0].version == "5"
    expect_error("INVALID_PARAMETER_VALUE", 400, client.get_latest_versions, name, ["bogus"])
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_latest_versions, name + "-x", ["Production"])

    # A deleted version no longer counts; its stage falls back to the next one or disappears.
    client.delete_model_version(name, "5")
    client.delete_model_version(name, "4")
    assert stages_of(client.get_registered_model(name).latest_versions) == {
        "Archived": "1",
        "Staging": "2",
        "Production": "3",
    }


# -- model versions ---------------------------------------------------------------------------


def test_create_model_version_fields(client, run, server):
    name = new_model(client)
    src, rid = source_of(run), run.info.run_id
    mv = client.create_model_version(name, src, rid, tags={"t": "1", "u": ""}, description="v1 desc")
    assert (mv.name, mv.version, mv.status, mv.current_stage) == (name, "1", "READY", "None")
    assert (mv.source, mv.run_id, mv.description) == (src, rid, "v1 desc")
    assert mv.tags == {"t": "1", "u": ""}
    assert mv.aliases == []
    assert mv.run_link == ""
    assert mv.creation_timestamp == mv.last_updated_timestamp > 0

    got = client.get_model_version(name, "1")
    for field in ["name", "version", "status", "current_stage", "source", "run_id", "description", "tags",
                  "creation_timestamp", "last_updated_timestamp", "aliases", "run_link"]:
        assert getattr(got, field) == getattr(mv, field), field

    # Raw: the version is READY in the create response itself (nothing for the client to poll),
    # and version numbers travel as strings.
    body = server.ok("POST", "model-versions/create", json={"name": name, "source": src, "run_id": rid})
    raw = body["model_version"]
    assert (raw["name"], raw["version"], raw["status"], raw["current_stage"]) == (name, "2", "READY", "None")
    assert (raw["source"], raw["run_id"]) == (src, rid)
    # mlflow server: a version created without a description reads back as "" (not absent).
    assert client.get_model_version(name, "2").description == ""
    # The registered model's last_updated_timestamp becomes the new version's creation time.
    assert client.get_registered_model(name).last_updated_timestamp == raw["creation_timestamp"]

    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version, name, "9")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version, name + "-x", "1")
    assert client.get_model_version_download_uri(name, "1") == src
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version_download_uri, name, "9")


def test_runs_source_of_a_run_not_on_this_server(client, server):
    """mlflow server registers runs:/<id>/model when run_id names the same run, without looking
    the run up (MLflow's own registry tests rely on it). Without run_id, loopml (unlike mlflow,
    which refuses) takes the run from the source, so that run must exist."""
    name = new_model(client)
    rid = "0123456789abcdef0123456789abcdef"
    mv = client.create_model_version(name, f"runs:/{rid}/model", rid)
    assert (mv.version, mv.source, mv.run_id) == ("1", f"runs:/{rid}/model", rid)
    r = server.api("POST", "model-versions/create", json={"name": name, "source": f"runs:/{rid}/model"})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    r = server.api("POST", "model-versions/create", json={"name": name, "source": f"runs:/{rid}/model", "run_id": "f" * 32})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]


def test_update_model_version_description(client, run):
    name = new_model(client)
    [mv] = add_versions(client, name, run, 1, description="old")
    tick()
    updated = client.update_model_version(name, "1", description="new")
    assert (updated.name, updated.version, updated.description) == (name, "1", "new")
    got = client.get_model_version(name, "1")
    assert got.description == "new"
    assert got.creation_timestamp == mv.creation_timestamp
    assert got.last_updated_timestamp > mv.last_updated_timestamp
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.update_model_version, name, "2", description="x")


def test_delete_model_version_numbers_never_reused(client, run):
    name = new_model(client)
    add_versions(client, name, run, 3)
    client.delete_model_version(name, "3")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version, name, "3")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.delete_model_version, name, "3")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.set_model_version_tag, name, "3", "k", "v")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.update_model_version, name, "3", description="x")
    assert add_versions(client, name, run, 1)[0].version == "4"
    client.delete_model_version(name, "1")
    client.delete_model_version(name, "4")
    assert add_versions(client, name, run, 1)[0].version == "5"
    versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number ASC"])
    assert [m.version for m in versions] == ["2", "5"]
    assert stages_of(client.get_registered_model(name).latest_versions) == {"None": "5"}
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.delete_model_version, name + "-x", "1")


def test_model_version_tags(client, run):
    name = new_model(client)
    add_versions(client, name, run, 2, tags={"keep": "1"})
    client.set_model_version_tag(name, "1", "k", "v")
    client.set_model_version_tag(name, "1", "k", "v2")
    assert client.get_model_version(name, "1").tags == {"keep": "1", "k": "v2"}
    assert client.get_model_version(name, "2").tags == {"keep": "1"}
    assert [m.version for m in client.search_model_versions(f"name = '{name}' AND tags.k = 'v2'")] == ["1"]
    client.delete_model_version_tag(name, "1", "k")
    assert client.get_model_version(name, "1").tags == {"keep": "1"}
    assert client.search_model_versions(f"name = '{name}' AND tags.k = 'v2'") == []
    client.delete_model_version_tag(name, "1", "never-set")  # mlflow server: no error
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.set_model_version_tag, name, "7", "k", "v")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.delete_model_version_tag, name, "7", "keep")


def test_search_model_versions(client, experiment):
    r1, r2 = client.create_run(experiment), client.create_run(experiment)
    prefix = unique("mvs")
    a, b = f"{prefix}-a", f"{prefix}-b"
    client.create_registered_model(a)
    client.create_registered_model(b)
    client.create_model_version(a, source_of(r1), r1.info.run_id, tags={"env": "prod"})
    client.create_model_version(a, source_of(r2), r2.info.run_id, tags={"env": "dev"})
    client.create_model_version(a, source_of(r1), r1.info.run_id, tags={"env": "prod", "x": "1"})
    client.create_model_version(b, source_of(r2), r2.info.run_id)

    def found(flt, **kw):
        return [(m.name, m.version) for m in client.search_model_versions(flt, **kw)]

    # Default order: last_updated_timestamp DESC, then name ASC, then version DESC.
    assert found(f"name = '{a}'") == [(a, "3"), (a, "2"), (a, "1")]
    assert found(f"name = '{a}'", order_by=["version_number DESC"]) == [(a, "3"), (a, "2"), (a, "1")]
    assert found(f"name = '{a}'", order_by=["version_number ASC"]) == [(a, "1"), (a, "2"), (a, "3")]
    assert found(f"name = '{a}'", order_by=["creation_timestamp ASC"]) == [(a, "1"), (a, "2"), (a, "3")]
    assert found(f"run_id = '{r1.info.run_id}'") == [(a, "3"), (a, "1")]
    assert sorted(found(f"run_id = '{r2.info.run_id}'")) == [(a, "2"), (b, "1")]
    assert sorted(found(f"run_id IN ('{r1.info.run_id}', '{r2.info.run_id}')")) == [(a, "1"), (a, "2"), (a, "3"), (b, "1")]
    assert found(f"name = '{a}' AND tags.env = 'prod'") == [(a, "3"), (a, "1")]
    assert found(f"name = '{a}' AND tags.env = 'prod' AND tags.x = '1'") == [(a, "3")]
    assert found(f"tags.env = 'dev' AND run_id = '{r2.info.run_id}'") == [(a, "2")]
    assert found(f"name = '{a}' AND version_number > 1") == [(a, "3"), (a, "2")]
    assert found(f"name = '{a}' AND version_number = 2") == [(a, "2")]
    assert found(f"name = '{a}' AND version_number <= 2", order_by=["version_number ASC"]) == [(a, "1"), (a, "2")]
    assert sorted(found(f"source_path = '{source_of(r2)}'")) == [(a, "2"), (b, "1")]
    assert sorted(found(f"name LIKE '{prefix}-%'")) == [(a, "1"), (a, "2"), (a, "3"), (b, "1")]
    assert sorted(found(f"name ILIKE '{prefix.upper()}-%'")) == [(a, "1"), (a, "2"), (a, "3"), (b, "1")]
    assert found(f"name IN ('{b}', '{a}')", order_by=["name DESC", "version_number ASC"]) == [
        (b, "1"), (a, "1"), (a, "2"), (a, "3"),
    ]

    # Paging over a stable order.
    seen, sizes, token = [], [], None
    while True:
        page = client.search_model_versions(
            f"name LIKE '{prefix}-%'", max_results=3, order_by=["name ASC", "version_number ASC"], page_token=token
        )
        seen += [(m.name, m.version) for m in page]
        sizes.append(len(page))
        token = page.token
        if not token:
            break
        assert len(sizes) < 10, "page tokens do not terminate"
    assert seen == [(a, "1"), (a, "2"), (a, "3"), (b, "1")] and sizes == [3, 1]

    # Deleted versions are not found.
    client.delete_model_version(a, "2")
    assert found(f"run_id = '{r2.info.run_id}'") == [(b, "1")]
    assert found(f"name = '{a}'", order_by=["version_number DESC"]) == [(a, "3"), (a, "1")]


def test_search_model_versions_invalid(client):
    for bad in [
        "foo = 'x'",
        "current_stage = 'None'",  # mlflow server: stage is not searchable
        "version_number = 'abc'",
        "version_number = 1.5",
        "tags.k > '1'",
        "name = 'a' OR name = 'b'",
    ]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.search_model_versions, bad)
    expect_error("INVALID_PARAMETER_VALUE", 400, client.search_model_versions, "name = 'x'", order_by=["foo DESC"])
    expect_error("INVALID_PARAMETER_VALUE", 400, client.search_model_versions, max_results=200_001)


# -- stages -----------------------------------------------------------------------------------


def test_transition_stage_any_case(client, run):
    name = new_model(client)
    [mv] = add_versions(client, name, run, 1)
    last = mv.last_updated_timestamp
    for given, want in [("staging", "Staging"), ("PRODUCTION", "Production"), ("archived", "Archived"),
                        ("none", "None"), ("Staging", "Staging"), ("None", "None")]:
        tick()
        out = client.transition_model_version_stage(name, "1", given)
        assert (out.name, out.version, out.current_stage) == (name, "1", want), given
        assert out.last_updated_timestamp > last
        last = out.last_updated_timestamp
        assert client.get_model_version(name, "1").current_stage == want
    for bad in ["bogus", "Prod", "Deleted_Internal"]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.transition_model_version_stage, name, "1", bad)
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.transition_model_version_stage, name, "2", "Staging")
    assert client.get_model_version(name, "1").current_stage == "None"


def test_archive_existing_versions(client, run):
    name = new_model(client)
    add_versions(client, name, run, 4)
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "Production")  # archive_existing_versions=False
    client.transition_model_version_stage(name, "3", "Staging")

    def stage_map():
        return {m.version: m.current_stage for m in client.search_model_versions(f"name = '{name}'")}

    assert stage_map() == {"1": "Production", "2": "Production", "3": "Staging", "4": "None"}
    # Two versions in Production: only the newest is the "latest" one.
    assert [m.version for m in client.get_latest_versions(name, ["Production"])] == ["2"]

    out = client.transition_model_version_stage(name, "4", "production", archive_existing_versions=True)
    assert out.current_stage == "Production"
    assert stage_map() == {"1": "Archived", "2": "Archived", "3": "Staging", "4": "Production"}
    assert [m.version for m in client.get_latest_versions(name, ["Production"])] == ["4"]

    client.transition_model_version_stage(name, "1", "Staging", archive_existing_versions=True)
    assert stage_map() == {"1": "Staging", "2": "Archived", "3": "Archived", "4": "Production"}
    assert stages_of(client.get_registered_model(name).latest_versions) == {
        "Staging": "1",
        "Archived": "3",
        "Production": "4",
    }


# -- aliases ----------------------------------------------------------------------------------


def test_aliases(client, run):
    name = new_model(client)
    add_versions(client, name, run, 3)

    client.set_registered_model_alias(name, "champ", "1")
    mv = client.get_model_version_by_alias(name, "champ")
    assert (mv.name, mv.version, mv.aliases) == (name, "1", ["champ"])
    assert client.get_model_version(name, "1").aliases == ["champ"]
    assert client.get_registered_model(name).aliases == {"champ": "1"}

    # Moving an alias: same alias, another version.
    client.set_registered_model_alias(name, "challenger", "2")
    client.set_registered_model_alias(name, "champ", "2")
    mv = client.get_model_version_by_alias(name, "champ")
    assert mv.version == "2" and sorted(mv.aliases) == ["challenger", "champ"]
    assert client.get_model_version(name, "1").aliases == []
    assert client.get_registered_model(name).aliases == {"champ": "2", "challenger": "2"}
    [found] = client.search_registered_models(f"name = '{name}'")
    assert found.aliases == {"champ": "2", "challenger": "2"}
    # Setting the same alias again is a no-op.
    client.set_registered_model_alias(name, "champ", "2")
    assert client.get_registered_model(name).aliases == {"champ": "2", "challenger": "2"}

    client.delete_registered_model_alias(name, "challenger")
    assert client.get_registered_model(name).aliases == {"champ": "2"}
    assert client.get_model_version(name, "2").aliases == ["champ"]
    client.delete_registered_model_alias(name, "challenger")  # mlflow server: deleting a missing alias is fine

    # mlflow server: an unknown alias is INVALID_PARAMETER_VALUE (400), not RESOURCE_DOES_NOT_EXIST.
    expect_error("INVALID_PARAMETER_VALUE", 400, client.get_model_version_by_alias, name, "challenger")
    expect_error("INVALID_PARAMETER_VALUE", 400, client.get_model_version_by_alias, name, "CHAMP")  # case-sensitive
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_model_version_by_alias, name + "-x", "champ")
    # "latest" is reserved but resolvable: the highest live version.
    assert client.get_model_version_by_alias(name, "latest").version == "3"

    for reserved in ["latest", "LATEST", "v1", "V12"]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.set_registered_model_alias, name, reserved, "1")
    for bad in ["has space", "a/b", "a.b"]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.set_registered_model_alias, name, bad, "1")
    client.set_registered_model_alias(name, "Mixed-Case_9", "3")
    assert client.get_model_version_by_alias(name, "Mixed-Case_9").version == "3"
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.set_registered_model_alias, name, "ghost", "9")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.set_registered_model_alias, name + "-x", "ghost", "1")
    assert "ghost" not in client.get_registered_model(name).aliases

    # Deleting a version removes its aliases.
    client.delete_model_version(name, "2")
    assert client.get_registered_model(name).aliases == {"Mixed-Case_9": "3"}
    expect_error("INVALID_PARAMETER_VALUE", 400, client.get_model_version_by_alias, name, "champ")
    assert client.get_model_version_by_alias(name, "latest").version == "3"


# -- bad input --------------------------------------------------------------------------------


def test_create_model_version_bad_input(client, run, experiment):
    missing = unique("missing")
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.create_model_version, missing, source_of(run), run.info.run_id)
    expect_error("RESOURCE_DOES_NOT_EXIST", 404, client.get_registered_model, missing)

    name = new_model(client)
    other = client.create_run(experiment)
    # mlflow server checks the source against the run: an mlflow-artifacts source must lie inside
    # the artifact root of the run named by run_id, and may not climb out with "..".
    for src, rid in [
        (source_of(run), other.info.run_id),
        (source_of(run), None),
        (source_of(run), "f" * 32),
        (f"{run.info.artifact_uri}/../../x", run.info.run_id),
        ("/etc/passwd", run.info.run_id),
    ]:
        expect_error("INVALID_PARAMETER_VALUE", 400, client.create_model_version, name, src, rid)
    assert client.search_model_versions(f"name = '{name}'") == []
    assert client.create_model_version(name, source_of(run), run.info.run_id).version == "1"


def test_registry_errors_raw(server, client, run):
    """Exact HTTP statuses and error codes on the wire."""
    name = new_model(client)
    add_versions(client, name, run, 1)
    ghost = unique("ghost")
    cases = [
        ("GET", "registered-models/get", {"params": {"name": ghost}}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "registered-models/create", {"json": {"name": name}}, 400, "RESOURCE_ALREADY_EXISTS"),
        ("POST", "registered-models/create", {"json": {}}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "registered-models/create", {"json": {"name": "a/" + ghost}}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "registered-models/rename", {"json": {"name": ghost, "new_name": ghost + "2"}}, 404,
         "RESOURCE_DOES_NOT_EXIST"),
        ("DELETE", "registered-models/delete", {"json": {"name": ghost}}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", "model-versions/get", {"params": {"name": name, "version": "abc"}}, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "model-versions/get", {"params": {"name": name, "version": "1.5"}}, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "model-versions/get", {"params": {"name": name}}, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "model-versions/get", {"params": {"name": name, "version": "9"}}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", "model-versions/get", {"params": {"name": name, "version": "0"}}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", "model-versions/get", {"params": {"name": ghost, "version": "1"}}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "model-versions/create",
         {"json": {"name": ghost, "source": source_of(run), "run_id": run.info.run_id}}, 404,
         "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "model-versions/transition-stage",
         {"json": {"name": name, "version": "1", "stage": "bogus", "archive_existing_versions": False}}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("GET", "registered-models/alias", {"params": {"name": name, "alias": "nope"}}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("GET", "registered-models/alias", {"params": {"name": ghost, "alias": "nope"}}, 404,
         "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "registered-models/alias", {"json": {"name": name, "alias": "latest", "version": "1"}}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("POST", "registered-models/alias", {"json": {"name": name, "alias": "a1", "version": "9"}}, 404,
         "RESOURCE_DOES_NOT_EXIST"),
        ("GET", "registered-models/search", {"params": {"filter": "nme = 'x'"}}, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "registered-models/search", {"params": {"max_results": 1001}}, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "model-versions/search", {"params": {"filter": "foo = 'x'"}}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "registered-models/get-latest-versions", {"json": {"name": name, "stages": ["bogus"]}}, 400,
         "INVALID_PARAMETER_VALUE"),
    ]
    for method, path, kw, status, code in cases:
        assert_error(server.api(method, path, **kw), status, code)

    # Rename answers with the renamed model.
    renamed = server.ok("POST", "registered-models/rename", json={"name": name, "new_name": ghost})
    assert renamed["registered_model"]["name"] == ghost
    name = ghost

    # The wire shape of a version and a registered model.
    mv = server.ok("GET", "model-versions/get", params={"name": name, "version": "1"})["model_version"]
    assert mv["version"] == "1" and mv["status"] == "READY" and mv["current_stage"] == "None"
    assert isinstance(mv["creation_timestamp"], int) and isinstance(mv["last_updated_timestamp"], int)
    rm = server.ok("GET", "registered-models/get", params={"name": name})["registered_model"]
    assert rm["name"] == name and [v["version"] for v in rm["latest_versions"]] == ["1"]
    assert server.ok("GET", "registered-models/search", params={"filter": f"name = '{ghost}-none'"}).get(
        "registered_models", []
    ) == []
