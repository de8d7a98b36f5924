"""Start and stop the real `loopml server` binary, and talk raw HTTP to it.

Used by conftest.py (the shared session server) and by tests that need a server of their own
(the kill -9 test). Nothing here mocks the server: every helper drives the binary over loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("LOOPML_BIN") or str(ROOT / "target" / "release" / "loopml")
HEALTH_TIMEOUT_S = 10.0


def unique(prefix: str) -> str:
    """A name no other test (or earlier session on a reused server) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env() -> dict[str, str]:
    # A stray LOOPML_* variable (LOOPML_CONFIG, LOOPML_PORT, ...) in the caller's shell must not
    # reconfigure the server under test; the flags below say everything it needs.
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}


# With COMPAT_DATABASE_URL set to a PostgreSQL admin URL (scripts/postgres.sh prints one), every
# data_dir gets a PostgreSQL database of its own instead of its SQLite file: the same suite then
# proves the PostgreSQL backend. Reusing a data_dir reuses its database, as it reuses the file.
DATABASE_URL = os.environ.get("COMPAT_DATABASE_URL", "").strip()


def _postgres_for(data_dir: str) -> str:
    """The PostgreSQL URL for `data_dir`'s database, created on first use."""
    import hashlib

    marker = os.path.join(data_dir, "postgres.url")
    if os.path.exists(marker):
        return Path(marker).read_text().strip()
    name = "loopml_compat_" + hashlib.sha1(data_dir.encode()).hexdigest()[:16]
    base, _, query = DATABASE_URL.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    subprocess.run(
        ["psql", DATABASE_URL, "-qAtc", f"DROP DATABASE IF EXISTS {name}", "-c",
         f"CREATE DATABASE {name}"],
        check=True, stdout=subprocess.DEVNULL,
    )
    url = f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")
    Path(marker).write_text(url)
    return url


# With COMPAT_ARTIFACTS_URL set to an object-store URL (scripts/s3.sh's bucket, e.g.
# s3://loopml-test, with the AWS_* variables it prints in the environment), every data_dir keeps
# its artifacts under a prefix of its own there instead of its artifacts/ folder.
ARTIFACTS_URL = os.environ.get("COMPAT_ARTIFACTS_URL", "").strip().rstrip("/")


# With COMPAT_REDIS_URL set (scripts/redis.sh prints one), servers on PostgreSQL also get
# --redis-url: change notes between replicas go through Redis instead of the timers.
REDIS_URL = os.environ.get("COMPAT_REDIS_URL", "").strip()


def _artifacts_for(data_dir: str) -> str:
    import hashlib

    return f"{ARTIFACTS_URL}/compat-" + hashlib.sha1(data_dir.encode()).hexdigest()[:16]


class LoopmlServer:
    """One `loopml server` process on a free loopback port, with `data_dir` as its data folder.

    The process runs with `data_dir` as its working directory, so no `./loopml.toml` of the
    caller is picked up. Its stdout and stderr go to files in `data_dir`.
    """

    def __init__(self, data_dir: str | os.PathLike, extra_args: list[str] | None = None):
        self.data_dir = str(data_dir)
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""
        self._start()

    # -- process control ---------------------------------------------------------------------

    def _start(self) -> None:
        if not os.path.isfile(BIN):
            raise RuntimeError(
                f"loopml binary not found at {BIN}; run `cargo build --release` or set LOOPML_BIN"
            )
        os.makedirs(self.data_dir, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._stdout = open(os.path.join(self.data_dir, "server.stdout"), "ab")
            self._stderr = open(os.path.join(self.data_dir, "server.stderr"), "ab")
            self._stderr_offset = self._stderr.tell()
            args = [BIN, "server", "--host", "127.0.0.1", "--port", str(self.port),
                    "--data-dir", self.data_dir, *self.extra_args]
            # The tests' webhook and alert receivers listen on loopback, which loopml refuses
            # to call by default (SSRF guard); a test that checks the guard passes its own.
            if not any(a.startswith("--outbound-allow") for a in self.extra_args):
                args += ["--outbound-allow", "127.0.0.1"]
            # A data folder whose SQLite state was made by another process (the churn demo's own
            # server) is reopened as it is.
            made_on_sqlite = os.path.exists(os.path.join(self.data_dir, "loopml.db")) and not (
                os.path.exists(os.path.join(self.data_dir, "postgres.url")))
            if DATABASE_URL and not made_on_sqlite:
                args += ["--database-url", _postgres_for(self.data_dir)]
                if REDIS_URL:
                    args += ["--redis-url", REDIS_URL]
            if ARTIFACTS_URL and not made_on_sqlite:
                args += ["--artifacts-destination", _artifacts_for(self.data_dir)]
            self.proc = subprocess.Popen(
                args,
                cwd=self.data_dir,
                env=_server_env(),
                stdout=self._stdout,
                stderr=self._stderr,
                stdin=subprocess.DEVNULL,
            )
            try:
                self._wait_healthy()
                return
            except _DiedEarly as died:
                self._close_logs()
                # Another process may have taken the port between free_port() and bind.
                if attempt < 2 and "in use" in died.stderr.lower():
                    continue
                raise RuntimeError(
                    f"loopml server exited with status {died.status} before /health answered.\n"
                    f"--- server stderr ---\n{died.stderr}"
                ) from None

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            status = self.proc.poll()
            if status is not None:
                raise _DiedEarly(status, self.stderr_tail())
            try:
                r = requests.get(self.url + "/health", timeout=1)
                if r.status_code == 200 and r.text.strip() == "OK":
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                tail = self.stderr_tail()
                self.stop()
                raise RuntimeError(
                    f"loopml server did not answer /health with OK within {HEALTH_TIMEOUT_S} s.\n"
                    f"--- server stderr ---\n{tail}"
                )
            time.sleep(0.02)

    def stderr_tail(self, limit: int = 6000) -> str:
        try:
            with open(os.path.join(self.data_dir, "server.stderr"), "rb") as f:
                f.seek(self._stderr_offset)
                return f.read().decode(errors="replace")[-limit:]
        except OSError as e:
            return f"<could not read server stderr: {e}>"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no shutdown hooks, no flush; what was acknowledged must already be durable."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_logs()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_logs()

    def _close_logs(self) -> None:
        for f in (getattr(self, "_stdout", None), getattr(self, "_stderr", None)):
            if f is not None and not f.closed:
                f.close()

    def peak_rss_kib(self) -> int | None:
        """Peak resident memory of the server process (Linux only), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    # -- raw HTTP ------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kw) -> requests.Response:
        """A raw call to `/api/2.0/mlflow/<path>`."""
        kw.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}/api/2.0/mlflow/{path}", **kw)

    def ok(self, method: str, path: str, **kw) -> dict:
        """A raw call that must succeed with a JSON object body; returns the body."""
        r = self.api(method, path, **kw)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:500]}"
        body = r.json() if r.content else {}
        assert isinstance(body, dict), f"{method} {path}: body is not a JSON object: {r.text[:200]}"
        return body

    def artifacts_url(self, rel: str = "") -> str:
        return f"{self.url}/api/2.0/mlflow-artifacts/{rel}"

    def new_run(self, experiment_id: str = "0") -> str:
        body = self.ok("POST", "runs/create", json={"experiment_id": experiment_id, "start_time": 1})
        return body["run"]["info"]["run_id"]

    def get_run(self, run_id: str) -> dict:
        return self.ok("GET", "runs/get", params={"run_id": run_id})["run"]

    def history(self, run_id: str, key: str) -> list[dict]:
        """Full metric history of one key, following page tokens."""
        out, token = [], None
        while True:
            params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
            if token:
                params["page_token"] = token
            body = self.ok("GET", "metrics/get-history", params=params)
            out += body.get("metrics", [])
            token = body.get("next_page_token")
            if not token:
                return out


class ExternalServer(LoopmlServer):
    """A server someone else runs at `url` (`COMPAT_EXTERNAL_URL`, e.g. the real `mlflow server`,
    to prove a test faithful). Nothing is started or stopped; the raw-HTTP helpers work as usual."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.port = urllib.parse.urlsplit(self.url).port or 80
        self.data_dir = ""
        self.proc = None
        try:
            r = requests.get(self.url + "/health", timeout=10)
            ok = r.status_code == 200
        except requests.RequestException as e:
            ok, r = False, e
        if not ok:
            raise RuntimeError(f"COMPAT_EXTERNAL_URL={url}: /health did not answer 200 ({r})")

    def stderr_tail(self, limit: int = 6000) -> str:
        return "<external server: no stderr>"

    def alive(self) -> bool:
        return True

    def kill9(self) -> None:
        raise RuntimeError("cannot kill an external server")

    def stop(self) -> None:
        pass

    def peak_rss_kib(self) -> int | None:
        return None


class _DiedEarly(Exception):
    def __init__(self, status: int, stderr: str):
        super().__init__(status)
        self.status = status
        self.stderr = stderr


def assert_error(resp: requests.Response, status: int, error_code: str) -> dict:
    """The response is an MLflow error: this HTTP status and a JSON body with this error_code."""
    assert resp.status_code == status, f"want {status} {error_code}, got {resp.status_code}: {resp.text[:500]}"
    body = resp.json()
    assert isinstance(body, dict), resp.text[:200]
    assert body.get("error_code") == error_code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def params_of(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run.get("data", {}).get("params", [])}


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}


def metrics_of(run: dict) -> dict[str, object]:
    return {m["key"]: m["value"] for m in run.get("data", {}).get("metrics", [])}
