"""The API fuzzer: schemathesis (from PyPI) drives every operation of the OpenAPI document the
server publishes at /openapi.json (MLflow's REST API from MLflow's own protocol buffers, and
loopml's routes: scripts/gen-openapi.py) with generated valid and invalid requests, and fails on
any 5xx. Run twice: with no logins (every handler is reached) and as a regular user behind
`--app-name basic-auth` (the auth layer parses every body first). The document itself must name
only routes the server serves."""

import base64
import os
import subprocess
import sys
import tempfile

import requests

ADMIN_PW = "api-fuzz-admin-password"


def schemathesis(url: str, examples: int, headers: dict | None = None) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    cmd = [exe, "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
           "-n", str(examples), "--generation-deterministic", "--request-timeout", "10",
           "--phases", "coverage,fuzzing", "--no-color"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    # Its working files (.schemathesis/) go to a scratch folder, not the checkout.
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=scratch)
    out = done.stdout + done.stderr
    # The failures (with a curl line to reproduce each) come before the long warnings list.
    failures = out[out.find("= FAILURES ="):][:8000] if "= FAILURES =" in out else out[-6000:]
    assert done.returncode == 0, failures
    assert " passed" in out and "Server error" not in out, out[-3000:]


def test_the_document_names_only_served_routes(server):
    doc = requests.get(server.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.") and len(doc["paths"]) > 60
    missing = []
    for path, ops in doc["paths"].items():
        concrete = "/".join("p1" if seg.startswith("{") else seg for seg in path.split("/"))
        for method in ops:
            r = requests.request(method.upper(), server.url + concrete,
                                 json={} if method != "get" else None)
            if r.status_code == 405 or (r.status_code == 404 and "ENDPOINT_NOT_FOUND" in r.text):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"/openapi.json names routes the server does not serve: {missing}"


def test_no_generated_request_gets_a_server_error(start_server):
    srv = start_server()
    schemathesis(srv.url, 20)
    assert requests.get(srv.url + "/health").status_code == 200


def test_no_generated_request_gets_a_server_error_behind_auth(start_auth_server):
    srv = start_auth_server(ADMIN_PW)
    r = requests.post(srv.url + "/api/2.0/mlflow/users/create", auth=("admin", ADMIN_PW),
                      json={"username": "fuzzer", "password": "fuzzer-password-1"})
    assert r.status_code == 200, r.text
    basic = base64.b64encode(b"fuzzer:fuzzer-password-1").decode()
    schemathesis(srv.url, 10, {"Authorization": f"Basic {basic}"})
