"""Authentication and permissions (issue 20) with the real clients: `mlflow.MlflowClient` with
MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, and MLflow's own
`AuthServiceClient`, against `loopml server --app-name basic-auth`. Users of each permission
level try the guarded operations: allowed ones succeed, denied ones fail with the client's
PERMISSION_DENIED and change nothing."""

import contextlib
import os
import uuid

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient

ADMIN_PW = "admin-password-for-tests"


@contextlib.contextmanager
def as_user(username=None, password=None, token=None):
    """The client's credentials for the block (it reads them at every call)."""
    keys = ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"]
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ.pop(k, None)
    if username is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    if token is not None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def denied(fn, code="PERMISSION_DENIED"):
    with pytest.raises((RestException, MlflowException)) as e:
        fn()
    assert e.value.error_code == code, e.value
    return e.value


@pytest.fixture
def auth_server(start_auth_server):
    return start_auth_server(ADMIN_PW)


@pytest.fixture
def users(auth_server):
    """alice and bob (plain users) created by the admin through AuthServiceClient."""
    pw = {"alice": "alice-password-1", "bob": "bob-password-12"}
    with as_user("admin", ADMIN_PW):
        auth = AuthServiceClient(auth_server.url)
        for name, p in pw.items():
            auth.create_user(name, p)
    return pw


def test_startup_refuses_a_missing_or_weak_admin_password(start_server):
    """GHSA-gq3w-7jj3-x7gr (a shipped default admin password): loopml ships none, and refuses
    to start without one, with a short one or a known default, whichever way logins are on."""
    for flags in (["--auth"], ["--app-name", "basic-auth"]):
        for pw in [None, "short", "password1234"]:
            if pw is None:
                os.environ.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
            else:
                os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = pw
            try:
                with pytest.raises(RuntimeError) as e:
                    start_server(extra_args=flags)
                assert "MLFLOW_AUTH_ADMIN_PASSWORD" in str(e.value)
            finally:
                os.environ.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)


def test_no_credentials_or_a_wrong_password_is_unauthenticated(auth_server, users):
    url = auth_server.url
    r = requests.post(url + "/api/2.0/mlflow/experiments/search", json={})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="mlflow"'
    assert r.json()["error_code"] == "UNAUTHENTICATED"
    # Open without a login, as in MLflow: health and server-info.
    assert requests.get(url + "/health").status_code == 200
    assert requests.get(url + "/api/2.0/mlflow/server-info").status_code != 401
    with as_user():
        denied(lambda: MlflowClient(url).search_experiments(), "UNAUTHENTICATED")
    with as_user("alice", "not-her-password"):
        denied(lambda: MlflowClient(url).search_experiments(), "UNAUTHENTICATED")
    with as_user("nobody", "whatever-password"):
        denied(lambda: MlflowClient(url).search_experiments(), "UNAUTHENTICATED")
    # Error bodies never show a hash or SQL.
    r = requests.post(url + "/api/2.0/mlflow/users/create", auth=("admin", ADMIN_PW),
                      json={"username": "alice", "password": "another-password-1"})
    assert r.status_code == 400 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert "argon2" not in r.text and "INSERT" not in r.text


def test_failed_logins_are_throttled_per_user_only(auth_server, users):
    url = auth_server.url + "/api/2.0/mlflow/experiments/search"
    codes = [requests.post(url, json={}, auth=("bob", f"wrong-{i}")).status_code for i in range(7)]
    assert codes[:5] == [401] * 5 and codes[6] == 429, codes
    # Even the right password waits now; alice is not affected.
    assert requests.post(url, json={}, auth=("bob", users["bob"])).status_code == 429
    assert requests.post(url, json={}, auth=("alice", users["alice"])).status_code == 200


def test_owner_default_read_grants_and_deny(auth_server, users):
    url = auth_server.url
    with as_user("alice", users["alice"]):
        alice = MlflowClient(url)
        exp = alice.create_experiment(f"alice-{uuid.uuid4().hex[:8]}")
        run = alice.create_run(exp)
        alice.log_metric(run.info.run_id, "loss", 0.5)
        alice.log_text(run.info.run_id, "alice's notes", "notes.txt")
        # The creator owns it.
        perms = AuthServiceClient(url).get_user_permission("alice", "experiment", exp)
        assert perms.permission == "MANAGE"
    with as_user("bob", users["bob"]):
        bob = MlflowClient(url)
        # Default READ: bob reads alice's experiment and run ...
        assert bob.get_experiment(exp).experiment_id == exp
        assert bob.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
        assert [r.info.run_id for r in bob.search_runs([exp])] == [run.info.run_id]
        # ... but cannot write to it, and nothing changes.
        denied(lambda: bob.log_metric(run.info.run_id, "loss", 9.0))
        denied(lambda: bob.create_run(exp))
        denied(lambda: bob.set_experiment_tag(exp, "owner", "bob"))
        denied(lambda: bob.delete_experiment(exp))
        # Nor grant himself anything.
        denied(lambda: AuthServiceClient(url).grant_user_permission("bob", "experiment", exp, "MANAGE"))
        # Artifacts through the proxy: bob lists and downloads alice's, cannot upload.
        import tempfile
        names = [f.path for f in bob.list_artifacts(run.info.run_id)]
        assert names == ["notes.txt"], names
        got = bob.download_artifacts(run.info.run_id, "notes.txt", tempfile.mkdtemp())
        assert open(got).read() == "alice's notes"
        extra = os.path.join(tempfile.mkdtemp(), "bob.txt")
        with open(extra, "w") as f:
            f.write("bob was here")
        # The artifact client raises requests' HTTPError, not a RestException.
        with pytest.raises(Exception, match="403"):
            bob.log_artifact(run.info.run_id, extra)
        assert [f.path for f in bob.list_artifacts(run.info.run_id)] == ["notes.txt"]
    with as_user("alice", users["alice"]):
        assert alice.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
        assert alice.get_experiment(exp).lifecycle_stage == "active"
        AuthServiceClient(url).grant_user_permission("bob", "experiment", exp, "EDIT")
    with as_user("bob", users["bob"]):
        bob.log_metric(run.info.run_id, "loss", 0.25)
        bob.create_run(exp)
        # EDIT is not delete.
        denied(lambda: bob.delete_experiment(exp))
        denied(lambda: bob.delete_run(run.info.run_id))
    with as_user("alice", users["alice"]):
        auth = AuthServiceClient(url)
        auth.revoke_user_permission("bob", "experiment", exp)
        auth.grant_user_permission("bob", "experiment", exp, "DENY")
        assert auth.get_user_permission("bob", "experiment", exp).permission == "DENY"
    with as_user("bob", users["bob"]):
        denied(lambda: bob.get_experiment(exp))
        denied(lambda: bob.get_run(run.info.run_id))
        # A denied experiment vanishes from searches.
        assert bob.search_runs([exp]) == []
        assert exp not in [e.experiment_id for e in bob.search_experiments()]
    with as_user("admin", ADMIN_PW):
        # Admins pass every check.
        assert MlflowClient(url).get_run(run.info.run_id).data.metrics["loss"] == 0.25


def test_registered_models_follow_the_same_model(auth_server, users):
    url = auth_server.url
    name = f"model-{uuid.uuid4().hex[:8]}"
    with as_user("alice", users["alice"]):
        MlflowClient(url).create_registered_model(name)
    with as_user("bob", users["bob"]):
        bob = MlflowClient(url)
        assert bob.get_registered_model(name).name == name
        denied(lambda: bob.update_registered_model(name, description="bob was here"))
        denied(lambda: bob.delete_registered_model(name))
        denied(lambda: bob.set_registered_model_tag(name, "k", "v"))
    with as_user("alice", users["alice"]):
        m = MlflowClient(url).get_registered_model(name)
        assert m.description in (None, "") and m.tags == {}
        # The legacy 2.0 route user scripts still call.
        r = requests.post(url + "/api/2.0/mlflow/registered-models/permissions/create",
                          auth=("alice", users["alice"]),
                          json={"name": name, "username": "bob", "permission": "EDIT"})
        assert r.status_code == 200, r.text
        assert r.json()["registered_model_permission"]["permission"] == "EDIT"
    with as_user("bob", users["bob"]):
        MlflowClient(url).update_registered_model(name, description="edited")
        denied(lambda: MlflowClient(url).delete_registered_model(name))
    with as_user("alice", users["alice"]):
        MlflowClient(url).delete_registered_model(name)
    with as_user("admin", ADMIN_PW):
        # Its grants went with it: a new model of the same name starts clean.
        assert AuthServiceClient(url).get_user_permission(
            "bob", "registered_model", name).permission == "READ"


def test_user_management_through_auth_service_client(auth_server, users):
    url = auth_server.url
    with as_user("admin", ADMIN_PW):
        auth = AuthServiceClient(url)
        u = auth.get_user("alice")
        assert u.username == "alice" and not u.is_admin
        with pytest.raises(RestException) as e:
            auth.create_user("carol", "short")
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        auth.create_user("carol", "carol-password-1")
        auth.update_user_admin("carol", True)
        assert auth.get_user("carol").is_admin
        auth.update_user_password("carol", "carol-password-2")
    with as_user("carol", "carol-password-1"):
        denied(lambda: MlflowClient(url).search_experiments(), "UNAUTHENTICATED")
    with as_user("carol", "carol-password-2"):
        MlflowClient(url).search_experiments()
    with as_user("bob", users["bob"]):
        auth = AuthServiceClient(url)
        # Users see themselves, not others; only admins list or delete users.
        assert auth.get_user("bob").username == "bob"
        denied(lambda: auth.get_user("alice"))
        denied(lambda: auth.delete_user("alice"))
        r = requests.get(url + "/api/2.0/mlflow/users/list", auth=("bob", users["bob"]))
        assert r.status_code == 403
        # A self-service password change needs the current password.
        denied(lambda: auth.update_user_password("bob", "bob-password-99",
                                                 current_password="not-current-pw"))
        auth.update_user_password("bob", "bob-password-99", current_password=users["bob"])
    with as_user("admin", ADMIN_PW):
        AuthServiceClient(url).delete_user("carol")
        with pytest.raises(RestException) as e:
            AuthServiceClient(url).get_user("carol")
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        audit = requests.get(url + "/api/2.0/mlflow/audit", auth=("admin", ADMIN_PW)).json()
        actions = [(e["username"], e["action"], e["resource"]) for e in audit["entries"]]
        assert ("admin", "create_user", "user:carol") in actions
        assert ("admin", "delete_user", "user:carol") in actions
        assert all(ADMIN_PW not in e["detail"] for e in audit["entries"])


def test_bearer_tokens_issue_scope_expire_and_revoke(auth_server, users):
    url = auth_server.url
    r = requests.post(url + "/api/2.0/mlflow/tokens/create", auth=("alice", users["alice"]),
                      json={"name": "ci"})
    assert r.status_code == 200, r.text
    token, info = r.json()["token"], r.json()["token_info"]
    with as_user(token=token):
        c = MlflowClient(url)
        exp = c.create_experiment(f"tok-{uuid.uuid4().hex[:8]}")
        assert c.get_experiment(exp).name.startswith("tok-")
    # A read-only token reads but cannot write.
    ro = requests.post(url + "/api/2.0/mlflow/tokens/create", auth=("alice", users["alice"]),
                       json={"name": "dashboards", "read_only": True}).json()["token"]
    with as_user(token=ro):
        assert MlflowClient(url).get_experiment(exp).experiment_id == exp
        denied(lambda: MlflowClient(url).create_run(exp))
        denied(lambda: MlflowClient(url).create_experiment(f"ro-{uuid.uuid4().hex[:8]}"))
    r = requests.post(url + "/api/2.0/mlflow/tokens/revoke", json={"id": info["id"]},
                      headers={"Authorization": f"Bearer {ro}"})
    assert r.status_code == 403
    # The secret is stored hashed: listing never shows it.
    listed = requests.get(url + "/api/2.0/mlflow/tokens/list", auth=("alice", users["alice"]))
    assert token not in listed.text and info["id"] in listed.text
    # bob cannot revoke alice's token; alice can, and it stops working at once.
    r = requests.post(url + "/api/2.0/mlflow/tokens/revoke", auth=("bob", users["bob"]),
                      json={"id": info["id"]})
    assert r.status_code == 403
    r = requests.post(url + "/api/2.0/mlflow/tokens/revoke", auth=("alice", users["alice"]),
                      json={"id": info["id"]})
    assert r.status_code == 200
    with as_user(token=token):
        denied(lambda: MlflowClient(url).get_experiment(exp), "UNAUTHENTICATED")
    with as_user(token="lml_made_up_token_value_that_does_not_exist_0000"):
        denied(lambda: MlflowClient(url).get_experiment(exp), "UNAUTHENTICATED")


def test_traces_are_guarded_by_their_experiment(server, auth_server, users):
    import mlflow

    url = auth_server.url
    with as_user("alice", users["alice"]):
        alice = MlflowClient(url)
        exp = alice.create_experiment(f"traces-{uuid.uuid4().hex[:8]}")
        mlflow.set_tracking_uri(url)
        try:
            mlflow.set_experiment(experiment_id=exp)

            @mlflow.trace
            def answer(q):
                return q.upper()

            answer("hello")
            mlflow.flush_trace_async_logging()
            trace_id = mlflow.get_last_active_trace_id()
            found = mlflow.search_traces(locations=[exp], return_type="list")
            assert [t.info.trace_id for t in found] == [trace_id]
        finally:
            # set_tracking_uri also sets MLFLOW_TRACKING_URI: put the shared server back.
            mlflow.set_tracking_uri(server.url)
            os.environ["MLFLOW_TRACKING_URI"] = server.url
    with as_user("bob", users["bob"]):
        bob = MlflowClient(url)
        # READ by default: bob finds and reads the trace ...
        assert [t.info.trace_id for t in bob.search_traces(locations=[exp])] == [trace_id]
        assert bob.get_trace(trace_id).info.trace_id == trace_id
        # ... but cannot tag it, nor send spans to the experiment.
        denied(lambda: bob.set_trace_tag(trace_id, "reviewed", "bob"))
        r = requests.post(url + "/v1/traces", auth=("bob", users["bob"]), data=b"",
                          headers={"content-type": "application/x-protobuf",
                                   "x-mlflow-experiment-id": exp})
        assert r.status_code == 403
    with as_user("alice", users["alice"]):
        assert "reviewed" not in MlflowClient(url).get_trace(trace_id).info.tags
        AuthServiceClient(url).grant_user_permission("bob", "experiment", exp, "DENY")
    with as_user("bob", users["bob"]):
        denied(lambda: MlflowClient(url).get_trace(trace_id))
        assert list(MlflowClient(url).search_traces(locations=[exp])) == []
    # Without credentials, OTLP ingest is refused too (CVE-2026-2652's class).
    r = requests.post(url + "/v1/traces", data=b"", headers={
        "content-type": "application/x-protobuf", "x-mlflow-experiment-id": exp})
    assert r.status_code == 401


def test_aliases_need_update_to_set_and_delete_to_remove(auth_server, users):
    """A READ user cannot move or drop an alias (the alias route once took READ for both)."""
    url = auth_server.url
    name = f"aliased-{uuid.uuid4().hex[:8]}"
    with as_user("alice", users["alice"]):
        alice = MlflowClient(url)
        run = alice.create_run(alice.create_experiment(f"aliases-{uuid.uuid4().hex[:8]}"))
        alice.create_registered_model(name)
        source = f"runs:/{run.info.run_id}/model"
        v1 = alice.create_model_version(name, source, run_id=run.info.run_id)
        v2 = alice.create_model_version(name, source, run_id=run.info.run_id)
        alice.set_registered_model_alias(name, "prod", v1.version)
    with as_user("bob", users["bob"]):
        bob = MlflowClient(url)
        assert bob.get_model_version_by_alias(name, "prod").version == v1.version
        denied(lambda: bob.set_registered_model_alias(name, "prod", v2.version))
        denied(lambda: bob.delete_registered_model_alias(name, "prod"))
    with as_user("alice", users["alice"]):
        assert alice.get_model_version_by_alias(name, "prod").version == v1.version
        AuthServiceClient(url).grant_user_permission("bob", "registered_model", name, "EDIT")
    with as_user("bob", users["bob"]):
        bob.set_registered_model_alias(name, "prod", v2.version)
        # EDIT moves an alias; removing one needs delete (MANAGE).
        denied(lambda: bob.delete_registered_model_alias(name, "prod"))
    with as_user("alice", users["alice"]):
        assert alice.get_model_version_by_alias(name, "prod").version == v2.version


def test_deployments_follow_the_registered_models_they_serve(auth_server, users):
    """Deploying, promoting and deleting need update/delete on every model a deployment serves;
    reading it needs read; a user who cannot read the model does not see the deployment."""
    import mlflow
    from pathlib import Path

    url = auth_server.url
    fixtures = Path(__file__).resolve().parents[2] / "crates" / "loopml-serving" / "tests" / "fixtures"
    api = url + "/api/2.0/loopml/deployments"
    name = f"served-{uuid.uuid4().hex[:8]}"
    dep = f"dep-{uuid.uuid4().hex[:8]}"
    alice_auth = ("alice", users["alice"])
    bob_auth = ("bob", users["bob"])
    with as_user("alice", users["alice"]):
        alice = MlflowClient(url)
        exp = alice.create_experiment(f"deploy-{uuid.uuid4().hex[:8]}")
        run = alice.create_run(exp)
        alice.log_artifacts(run.info.run_id, str(fixtures / "mlflow_onnx_model"), "model")
        alice.create_registered_model(name)
        source = f"runs:/{run.info.run_id}/model"
        v1 = alice.create_model_version(name, source, run_id=run.info.run_id)
        v2 = alice.create_model_version(name, source, run_id=run.info.run_id)
    spec = {"name": dep, "variants": [
        {"name": "stable", "model": f"models:/{name}/{v1.version}"},
        {"name": "candidate", "model": f"models:/{name}/{v2.version}"}],
        "policy": {"strategy": "canary", "percent": 10}}
    # bob (READ on the model by default) cannot deploy it ...
    r = requests.post(api, json=spec, auth=bob_auth)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", r.text
    assert requests.get(f"{api}/{dep}", auth=("admin", ADMIN_PW)).status_code == 404
    # ... alice (MANAGE, the creator) can.
    r = requests.post(api, json=spec, auth=alice_auth)
    assert r.status_code == 201, r.text
    # bob reads it (and its inference metadata), but calling it needs USE on the model (in the
    # Open Inference Protocol's error shape on /v2, MLflow's on /invocations) ...
    assert requests.get(f"{api}/{dep}", auth=bob_auth).status_code == 200
    assert dep in [d["name"] for d in requests.get(api, auth=bob_auth).json()["deployments"]]
    assert requests.get(f"{url}/v2/models/{dep}", auth=bob_auth).status_code == 200
    row = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    r = requests.post(f"{url}/v2/models/{dep}/infer", json=row, auth=bob_auth)
    assert r.status_code == 403 and "error" in r.json() and "error_code" not in r.json(), r.text
    r = requests.post(f"{url}/invocations?model={dep}", json={"inputs": [[1, 2, 3, 4]]},
                      auth=bob_auth)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", r.text
    r = requests.post(f"{url}/v2/models/{dep}/infer", json=row)
    assert r.status_code == 401 and "error" in r.json(), r.text
    assert requests.post(f"{url}/v2/models/{dep}/infer", json=row, auth=alice_auth).status_code == 200
    # ... which a grant gives him; he still cannot move its traffic, promote or delete it.
    with as_user("alice", users["alice"]):
        AuthServiceClient(url).grant_user_permission("bob", "registered_model", name, "USE")
    assert requests.post(f"{url}/v2/models/{dep}/infer", json=row, auth=bob_auth).status_code == 200
    for path, body in [("traffic", {"percent": 90}), ("promote", {}), ("rollback", {})]:
        r = requests.post(f"{api}/{dep}/{path}", json=body, auth=bob_auth)
        assert r.status_code == 403, (path, r.text)
    assert requests.delete(f"{api}/{dep}", auth=bob_auth).status_code == 403
    r = requests.put(f"{api}/{dep}", json={**spec, "policy": {"strategy": "canary", "percent": 50}},
                     auth=bob_auth)
    assert r.status_code == 403, r.text
    status = requests.get(f"{api}/{dep}", auth=alice_auth).json()
    assert status["spec"]["policy"]["percent"] == 10, status
    # Denied on the model: the deployment is out of bob's sight.
    with as_user("alice", users["alice"]):
        auth = AuthServiceClient(url)
        auth.revoke_user_permission("bob", "registered_model", name)
        auth.grant_user_permission("bob", "registered_model", name, "DENY")
    assert requests.get(f"{api}/{dep}", auth=bob_auth).status_code == 403
    assert requests.post(f"{url}/v2/models/{dep}/infer", json=row, auth=bob_auth).status_code == 403
    assert dep not in [d["name"] for d in requests.get(api, auth=bob_auth).json()["deployments"]]
    # With EDIT bob moves traffic; deleting still needs MANAGE.
    with as_user("alice", users["alice"]):
        auth = AuthServiceClient(url)
        auth.revoke_user_permission("bob", "registered_model", name)
        auth.grant_user_permission("bob", "registered_model", name, "EDIT")
    r = requests.post(f"{api}/{dep}/traffic", json={"percent": 30}, auth=bob_auth)
    assert r.status_code == 200, r.text
    assert requests.delete(f"{api}/{dep}", auth=bob_auth).status_code == 403
    assert requests.delete(f"{api}/{dep}", auth=alice_auth).status_code == 200
    # The audit log says who did what; refused attempts change nothing and are not entries.
    audit = requests.get(url + "/api/2.0/mlflow/audit", auth=("admin", ADMIN_PW)).json()
    done = [(e["username"], e["action"], e["resource"], e["detail"]) for e in audit["entries"]]
    assert ("alice", "create_model_version", f"model_version:{name}/{v2.version}", "") in done, done
    assert ("alice", "create_deployment", f"deployment:{dep}", "") in done, done
    assert ("bob", "set_deployment_traffic", f"deployment:{dep}", "percent=30") in done, done
    assert ("alice", "delete_deployment", f"deployment:{dep}", "") in done, done
    assert not [e for e in done if e[0] == "bob" and e[1] != "set_deployment_traffic"], done
    # Append-only and admins' only: a user cannot read it, and no route rewrites it.
    assert requests.get(url + "/api/2.0/mlflow/audit", auth=bob_auth).status_code == 403
    assert requests.delete(url + "/api/2.0/mlflow/audit", auth=("admin", ADMIN_PW)).status_code in (404, 405)


def test_evaluation_datasets_follow_their_experiments(auth_server, users):
    """MLflow 3's evaluation datasets: read, update and delete need that permission on every
    experiment the dataset is linked to; creating one needs update on them."""
    url = auth_server.url
    base = url + "/api/3.0/mlflow/datasets"
    alice_auth = ("alice", users["alice"])
    bob_auth = ("bob", users["bob"])
    with as_user("alice", users["alice"]):
        exp = MlflowClient(url).create_experiment(f"evals-{uuid.uuid4().hex[:8]}")
    body = {"name": "qa", "experiment_ids": [exp]}
    r = requests.post(base + "/create", json=body, auth=bob_auth)
    assert r.status_code == 403, r.text
    r = requests.post(base + "/create", json=body, auth=alice_auth)
    assert r.status_code == 200, r.text
    ds = r.json()["dataset"]["dataset_id"]
    records = {"records": '[{"inputs": {"q": "2+2"}, "expectations": {"a": "4"}}]'}
    assert requests.post(f"{base}/{ds}/records", json=records, auth=alice_auth).status_code == 200
    # bob reads (default READ) but cannot add records, tag, unlink or delete.
    assert requests.get(f"{base}/{ds}", auth=bob_auth).status_code == 200
    assert requests.get(f"{base}/{ds}/records", auth=bob_auth).status_code == 200
    assert requests.post(f"{base}/{ds}/records", json=records, auth=bob_auth).status_code == 403
    assert requests.delete(f"{base}/{ds}", auth=bob_auth).status_code == 403
    r = requests.post(f"{base}/{ds}/remove-experiments", json={"experiment_ids": [exp]},
                      auth=bob_auth)
    assert r.status_code == 403, r.text
    import json
    got = requests.get(f"{base}/{ds}/records", auth=alice_auth).json()
    assert len(json.loads(got["records"])) == 1, got
    with as_user("alice", users["alice"]):
        AuthServiceClient(url).grant_user_permission("bob", "experiment", exp, "DENY")
    assert requests.get(f"{base}/{ds}", auth=bob_auth).status_code == 403
    assert requests.delete(f"{base}/{ds}", auth=alice_auth).status_code == 200


def test_the_gateway_is_behind_loopml_auth(start_auth_server, tmp_path):
    """With --auth on, the gateway lets no anonymous caller through even without a master
    key: loopml users call models with their password or token (the provider never sees
    them), admins manage virtual keys, and every refusal is in OpenAI's error shape."""
    import time

    import openai

    from test_gateway import Upstream
    from http.server import ThreadingHTTPServer
    import threading

    up = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: chat
    litellm_params: {{model: hosted_vllm/echo-1, api_base: "http://127.0.0.1:{up.server_address[1]}/v1", api_key: sk-up}}
""")
    srv = start_auth_server(ADMIN_PW, ["--gateway-config", str(cfg)])
    url = srv.url
    with as_user("admin", ADMIN_PW):
        AuthServiceClient(url).create_user("carol", "carol-password-1")
    msg = [{"role": "user", "content": "hi"}]
    chat = {"model": "chat", "messages": msg}
    try:
        # Nobody: 401 in OpenAI's shape, to the SDK an AuthenticationError.
        r = requests.post(url + "/v1/chat/completions", json=chat)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="sk-made-up", max_retries=0
                          ).chat.completions.create(model="chat", messages=msg)
        # A client cannot claim to be someone by sending the auth layer's own header.
        r = requests.post(url + "/v1/chat/completions", json=chat,
                          headers={"x-loopml-principal": "admin:admin"})
        assert r.status_code == 401, r.text
        r = requests.post(url + "/key/generate", json={},
                          headers={"x-loopml-principal": "admin:admin"})
        assert r.status_code in (400, 401), r.text
        # A wrong password: 401, OpenAI's shape.
        r = requests.post(url + "/v1/chat/completions", json=chat, auth=("carol", "nope-nope-nope"))
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", r.text
        # carol with her password, then with a token through the real SDK.
        Upstream.seen.clear()
        r = requests.post(url + "/v1/chat/completions", json=chat,
                          auth=("carol", "carol-password-1"))
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: hi"
        token = requests.post(url + "/api/2.0/mlflow/tokens/create",
                              auth=("carol", "carol-password-1"), json={"name": "sdk"}).json()["token"]
        sdk = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)
        assert sdk.chat.completions.create(model="chat", messages=msg).choices[0].message.content == "echo: hi"
        # The provider got the deployment's key, never carol's credentials.
        assert Upstream.seen and all(s["auth"] == "Bearer sk-up" for s in Upstream.seen), Upstream.seen
        # carol may not manage keys; the admin may, and the new key works.
        r = requests.post(url + "/key/generate", json={},
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error", r.text
        r = requests.post(url + "/key/generate", json={"key_alias": "ci"}, auth=("admin", ADMIN_PW))
        assert r.status_code == 200, r.text
        key = r.json()["key"]
        assert openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0
                             ).chat.completions.create(model="chat", messages=msg).choices
        r = requests.post(url + "/key/delete", json={"keys": [key]}, auth=("admin", ADMIN_PW))
        assert r.status_code == 200, r.text
        audit = requests.get(url + "/api/2.0/mlflow/audit", auth=("admin", ADMIN_PW)).json()
        done = [(e["username"], e["action"], e["resource"]) for e in audit["entries"]]
        assert ("admin", "issue_gateway_key", "gateway_key:ci") in done, done
        assert [e for e in done if e[1] == "delete_gateway_key"], done
        assert key not in str(audit) and token not in str(audit)
        # Her calls are metered as hers.
        for _ in range(50):
            logs = requests.get(url + "/spend/logs", params={"user_id": "carol"},
                                auth=("admin", ADMIN_PW))
            if logs.status_code == 200 and len(logs.json()) >= 2:
                break
            time.sleep(0.1)
        assert logs.status_code == 200 and len(logs.json()) >= 2, logs.text
    finally:
        up.shutdown()


def test_roles_through_auth_service_client(auth_server, users):
    """MLflow 3's roles with the client's own role methods: a role's permissions reach every
    user holding it, a role's DENY vetoes, unassigning ends it; only admins manage roles."""
    url = auth_server.url
    with as_user("alice", users["alice"]):
        alice = MlflowClient(url)
        exp = alice.create_experiment(f"roles-{uuid.uuid4().hex[:8]}")
        run = alice.create_run(exp)
    with as_user("bob", users["bob"]):
        bob_auth = AuthServiceClient(url)
        denied(lambda: bob_auth.create_role("default", "sneaky"))
        denied(lambda: MlflowClient(url).log_metric(run.info.run_id, "m", 1.0))
    with as_user("admin", ADMIN_PW):
        admin = AuthServiceClient(url)
        role = admin.create_role("default", "writers", description="log anywhere")
        assert role.name == "writers" and role.workspace == "default" and role.permissions == []
        rp = admin.add_role_permission(role.id, "experiment", "*", "EDIT")
        assert (rp.resource_type, rp.resource_pattern, rp.permission) == ("experiment", "*", "EDIT")
        with pytest.raises(RestException) as e:
            admin.add_role_permission(role.id, "experiment", "*", "NO_PERMISSIONS")
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        a = admin.assign_role("bob", role.id)
        assert a.role_id == role.id
        assert [r.name for r in admin.list_user_roles("bob")] == ["writers"]
        assert [x.role_id for x in admin.list_role_users(role.id)] == [role.id]
        assert "writers" in [r.name for r in admin.list_roles("default")]
        assert admin.get_role(role.id).permissions[0].permission == "EDIT"
    with as_user("bob", users["bob"]):
        # The role lets bob log to alice's run, at once.
        MlflowClient(url).log_metric(run.info.run_id, "m", 1.0)
        assert [r.name for r in AuthServiceClient(url).list_user_roles("bob")] == ["writers"]
    with as_user("admin", ADMIN_PW):
        deny = admin.create_role("default", "no-secrets")
        admin.add_role_permission(deny.id, "experiment", exp, "DENY")
        admin.assign_role("bob", deny.id)
    with as_user("bob", users["bob"]):
        denied(lambda: MlflowClient(url).get_experiment(exp))
    with as_user("admin", ADMIN_PW):
        admin.unassign_role("bob", deny.id)
        admin.update_role_permission(rp.id, "READ")
        admin.update_role(role.id, name="readers")
    with as_user("bob", users["bob"]):
        assert MlflowClient(url).get_experiment(exp).experiment_id == exp
        denied(lambda: MlflowClient(url).log_metric(run.info.run_id, "m", 2.0))
    with as_user("admin", ADMIN_PW):
        admin.remove_role_permission(rp.id)
        admin.delete_role(role.id)
        with pytest.raises(RestException) as e:
            admin.get_role(role.id)
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_experiment_search_pages_are_full_and_walk_readable_rows_once(auth_server, users):
    """The grant predicate is in the SQL: with experiments DENY'd in between, every page of
    `search_experiments(max_results=2)` is full and the page tokens walk each readable
    experiment exactly once, none of the denied ones."""
    url = auth_server.url
    tag = uuid.uuid4().hex[:6]
    with as_user("alice", users["alice"]):
        alice = MlflowClient(url)
        ids = [alice.create_experiment(f"page-{tag}-{i}") for i in range(9)]
        for e in ids[1::2]:
            r = requests.post(url + "/api/3.0/mlflow/users/permissions/grant",
                              auth=("alice", users["alice"]),
                              json={"username": "bob", "resource_type": "experiment",
                                    "resource_id": e, "permission": "DENY"})
            assert r.status_code == 200, r.text
    readable = set(ids[0::2])
    with as_user("bob", users["bob"]):
        bob = MlflowClient(url)
        seen, token, pages = [], None, []
        while True:
            page = bob.search_experiments(filter_string=f"name LIKE 'page-{tag}-%'",
                                          max_results=2, page_token=token)
            pages.append(len(page))
            seen += [e.experiment_id for e in page]
            token = page.token
            if not token:
                break
    assert sorted(seen) == sorted(readable), (seen, readable)
    assert len(seen) == len(set(seen))
    assert all(n == 2 for n in pages[:-1]), pages
