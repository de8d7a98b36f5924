"""Runs through the real client: the fluent run block, system tags, lifecycle, nesting."""

import math

import mlflow
import pytest
from mlflow.entities import RunStatus, ViewType
from mlflow.exceptions import MlflowException


def test_run_block_params_metrics_tags(client, experiment):
    with mlflow.start_run(run_name="r1", tags={"t": "xyz"}) as r:
        rid = r.info.run_id
        assert r.info.status == "RUNNING"
        mlflow.log_param("p", 1)
        mlflow.log_param("p", 1)  # same value again is fine
        with pytest.raises(MlflowException) as ex:
            mlflow.log_param("p", 2)
        assert ex.value.error_code == "INVALID_PARAMETER_VALUE"
        mlflow.log_params({"a": "x", "b": 2})
        mlflow.log_metric("m", 1.5, step=0)
        mlflow.log_metric("nanm", float("nan"))
        mlflow.log_metrics({"m": 2.5, "acc": 0.9}, step=1)
        mlflow.set_tag("gone", "1")
        mlflow.set_tags({"k1": "v1", "k2": "v2"})
        mlflow.set_tag("k2", "v2b")  # upsert
        client.delete_tag(rid, "gone")

    run = client.get_run(rid)
    assert len(rid) == 32 and all(c in "0123456789abcdef" for c in rid)
    assert run.info.status == "FINISHED"
    assert run.info.end_time and run.info.end_time >= run.info.start_time > 0
    assert run.info.run_name == "r1"
    assert run.info.experiment_id == experiment
    assert run.info.lifecycle_stage == "active"
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment}/{rid}/artifacts"
    assert run.data.metrics["m"] == 2.5 and run.data.metrics["acc"] == 0.9
    assert math.isnan(run.data.metrics["nanm"])
    assert run.data.params == {"p": "1", "a": "x", "b": "2"}
    tags = run.data.tags
    assert tags["t"] == "xyz" and tags["k1"] == "v1" and tags["k2"] == "v2b"
    assert "gone" not in tags
    assert tags["mlflow.runName"] == "r1"
    with pytest.raises(MlflowException) as ex:
        client.delete_tag(rid, "never-set")
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_system_tags_from_the_client_are_stored(client, experiment):
    from mlflow.tracking.context.registry import resolve_tags

    expected = resolve_tags()  # what start_run sends for this process
    with mlflow.start_run() as r:
        pass
    tags = client.get_run(r.info.run_id).data.tags
    for key in ["mlflow.user", "mlflow.source.name", "mlflow.source.type"]:
        assert key in expected, f"client did not resolve {key}"
        assert tags.get(key) == expected[key], key
    assert client.get_run(r.info.run_id).info.user_id == expected["mlflow.user"]


def test_explicit_system_tags_round_trip(client, experiment):
    sys_tags = {
        "mlflow.user": "alice",
        "mlflow.source.name": "train.py",
        "mlflow.source.type": "JOB",
        "mlflow.source.git.commit": "abc123",
        "mlflow.note.content": "notes **markdown**",
    }
    run = client.create_run(experiment, tags=sys_tags, start_time=1234)
    got = client.get_run(run.info.run_id)
    for k, v in sys_tags.items():
        assert got.data.tags[k] == v, k
    assert got.info.user_id == "alice"
    assert got.info.start_time == 1234


def test_generated_run_name(client, experiment):
    run = client.create_run(experiment)
    name = run.info.run_name
    assert name and name.count("-") == 2 and name.rsplit("-", 1)[1].isdigit()
    got = client.get_run(run.info.run_id)
    assert got.info.run_name == name
    assert got.data.tags["mlflow.runName"] == name


def test_missing_run(client):
    with pytest.raises(MlflowException) as ex:
        client.get_run("0123456789abcdef0123456789abcdef")
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_terminate_delete_restore_rename(client, experiment):
    rid = client.create_run(experiment).info.run_id
    client.set_terminated(rid, "FAILED", end_time=99999)
    info = client.get_run(rid).info
    assert info.status == "FAILED" and info.end_time == 99999

    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    for write in [
        lambda: client.log_param(rid, "p", "1"),
        lambda: client.log_metric(rid, "m", 1.0),
        lambda: client.set_tag(rid, "k", "v"),
    ]:
        with pytest.raises(MlflowException) as ex:
            write()
        assert ex.value.error_code == "INVALID_PARAMETER_VALUE"
    assert rid not in [r.info.run_id for r in client.search_runs([experiment])]
    deleted = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [rid]

    client.restore_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "active"
    client.update_run(rid, name="renamed")
    r = client.get_run(rid)
    assert r.info.run_name == "renamed" and r.data.tags["mlflow.runName"] == "renamed"
    assert r.info.status == "FAILED", "update_run(name=) must not touch the status"

    client.set_tag(rid, "mlflow.runName", "via-tag")
    assert client.get_run(rid).info.run_name == "via-tag"


def test_update_run_status_only(client, experiment):
    run = client.create_run(experiment, run_name="keep-me")
    rid = run.info.run_id
    client.update_run(rid, status=RunStatus.to_string(RunStatus.KILLED))
    r = client.get_run(rid)
    assert r.info.status == "KILLED"
    assert r.info.run_name == "keep-me", "update_run(status=) must not touch the name"
    assert r.data.tags["mlflow.runName"] == "keep-me"


def test_nested_runs_set_parent_run_id(client, experiment):
    with mlflow.start_run() as parent:
        with mlflow.start_run(nested=True) as child:
            with mlflow.start_run(nested=True) as grandchild:
                pass
    p, c, g = parent.info.run_id, child.info.run_id, grandchild.info.run_id
    assert client.get_run(c).data.tags["mlflow.parentRunId"] == p
    assert client.get_run(g).data.tags["mlflow.parentRunId"] == c
    assert "mlflow.parentRunId" not in client.get_run(p).data.tags
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{p}'")
    assert [r.info.run_id for r in children] == [c]
    for rid in (p, c, g):
        assert client.get_run(rid).info.status == "FINISHED"


def test_failed_block_marks_run_failed(client, experiment):
    with pytest.raises(ZeroDivisionError):
        with mlflow.start_run() as r:
            1 / 0
    assert client.get_run(r.info.run_id).info.status == "FAILED"
