"""Starts the real `loopml server` binary once per session and points the real `mlflow` client
at it. The binary is `$LOOPML_BIN`, or `<repo>/target/release/loopml` when that is unset.

With `COMPAT_EXTERNAL_URL` set, no loopml is started: the client talks to the server already
running at that URL (e.g. the real `mlflow server`, to check that a test is faithful), and tests
that start servers of their own (`start_server`) are skipped."""

import os
import shutil
import tempfile
import uuid

import pytest

from loopml_server import ExternalServer, LoopmlServer

EXTERNAL_URL = os.environ.get("COMPAT_EXTERNAL_URL", "").strip()

# Server bugs must fail fast instead of being retried for minutes, and nothing may leave the
# machine: no telemetry. These are read by the client at call time, so setting them here (before
# any test runs) is enough.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
# Settings from the caller's shell that would send the client elsewhere or change its defaults.
for _var in [
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_ENABLE_ASYNC_LOGGING",
]:
    os.environ.pop(_var, None)


@pytest.fixture(scope="session", autouse=True)
def server():
    """The shared server. Autouse, so no test can fall back to a local ./mlruns store.

    Its data dir is removed afterwards (it holds the large-file artifacts, ~350 MB)."""
    if EXTERNAL_URL:
        srv = ExternalServer(EXTERNAL_URL)
        os.environ["MLFLOW_TRACKING_URI"] = srv.url
        import mlflow

        mlflow.set_tracking_uri(srv.url)
        yield srv
        return
    data_dir = tempfile.mkdtemp(prefix="loopml-compat-")
    try:
        srv = LoopmlServer(data_dir)
        os.environ["MLFLOW_TRACKING_URI"] = srv.url
        import mlflow

        mlflow.set_tracking_uri(srv.url)
        try:
            yield srv
        finally:
            crashed = not srv.alive()
            tail = srv.stderr_tail() if crashed else ""
            srv.stop()
            if crashed:
                pytest.fail(f"the shared loopml server died during the session:\n{tail}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def start_server(tmp_path):
    """Factory for extra, independent servers: `start_server()` or `start_server(data_dir)`.

    Reusing a data_dir restarts a server on the same SQLite file and artifact folder (a new
    port). Every server started here is stopped when the test ends. Skipped under
    COMPAT_EXTERNAL_URL: such a test needs servers it controls."""
    if EXTERNAL_URL:
        pytest.skip("starts its own loopml servers; not possible with COMPAT_EXTERNAL_URL")
    started = []

    def start(data_dir=None, extra_args=None):
        srv = LoopmlServer(data_dir or (tmp_path / f"extra-{len(started)}"), extra_args)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def start_auth_server(start_server):
    """Factory for servers with logins on: `start_auth_server(admin_password, extra_args)` starts
    `loopml server --app-name basic-auth` with MLFLOW_AUTH_ADMIN_PASSWORD set for the start only."""

    def start(password, extra_args=()):
        os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
        try:
            return start_server(extra_args=["--app-name", "basic-auth", *extra_args])
        finally:
            os.environ.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)

    return start


@pytest.fixture
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.url)


@pytest.fixture
def experiment(client):
    """A fresh experiment per test, set as the active one; returns its id."""
    import mlflow

    exp_id = client.create_experiment(f"t-{uuid.uuid4().hex[:12]}")
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@pytest.fixture(autouse=True)
def _end_active_runs():
    """A failing test must not leave a run active for the next one."""
    yield
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
