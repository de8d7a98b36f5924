"""Starts the real `loopml server` binary for the compatibility suite and points the real
`mlflow` client at it."""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("LOOPML_BIN", str(ROOT / "target" / "release" / "loopml"))

# Fail fast instead of retrying for minutes; keep telemetry off.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `loopml server` on a free port with its own data dir."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(data_dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [BIN, "server", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", data_dir],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"loopml exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).text == "OK":
                    return
            except requests.RequestException:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"loopml did not become healthy: {self.read_log()}")
            time.sleep(0.02)

    def read_log(self) -> str:
        with open(os.path.join(self.data_dir, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"{self.url}/api/2.0/mlflow/{path}", timeout=60, **kw)


@pytest.fixture(scope="session")
def server():
    if not os.path.exists(BIN):
        pytest.fail(f"loopml binary not found at {BIN}; run `cargo build --release` first")
    with tempfile.TemporaryDirectory() as d:
        srv = Server(d)
        os.environ["MLFLOW_TRACKING_URI"] = srv.url
        import mlflow

        mlflow.set_tracking_uri(srv.url)
        yield srv
        srv.stop()


@pytest.fixture
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.url)


@pytest.fixture
def experiment(client, request):
    """A fresh experiment per test, set as the active one."""
    import mlflow

    name = f"{request.node.name}-{time.time_ns()}"
    exp_id = client.create_experiment(name)
    mlflow.set_experiment(experiment_id=exp_id)
    yield exp_id
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def fresh_server():
    """An independent server (for crash tests); yields a factory bound to one data dir."""
    with tempfile.TemporaryDirectory() as d:
        started = []

        def start():
            srv = Server(d)
            started.append(srv)
            return srv

        yield start
        for s in started:
            s.stop()
