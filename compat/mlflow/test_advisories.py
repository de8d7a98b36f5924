"""MLflow's security advisories replayed against loopml, one test per class (the table in
shared/reference/security-anchors.md §2; docs/security.md lists them). Each test sends the
advisory's attack — every spelling of it we know — at every route it could touch, and asserts
both the refusal and that nothing happened: no byte from outside the artifact root in any
answer, a canary file outside the root still there, nothing created or changed. The server runs
with logins on (`--app-name basic-auth`), as a team would expose it."""

from __future__ import annotations

import json
import os
import pickle
import socket
import time
import urllib.parse
import uuid

import pytest
import requests

ADMIN_PW = "advisory-admin-password"
ALICE = ("alice", "alice-password-1")
BOB = ("bob", "bob-password-123")
ADMIN = ("admin", ADMIN_PW)
CANARY = "loopml-canary-7f3a9c"

# Traversal spellings: raw, URL-encoded, double-encoded, backslashes, absolute, doubled dots.
TRAVERSALS = [
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc/passwd",
    "%252e%252e%252f%252e%252e%252fetc/passwd",
    "..%5c..%5c..%5c..%5cetc%5cpasswd",
    "..\\..\\..\\..\\etc\\passwd",
    "....//....//....//etc/passwd",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "0/../../../../canary.txt",
    "0/%2e%2e/%2e%2e/%2e%2e/canary.txt",
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from loopml_server import LoopmlServer

    root = tmp_path_factory.mktemp("advisories")
    # A secret beside the data folder: no answer may ever contain it.
    (root / "canary.txt").write_text(CANARY)
    os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = ADMIN_PW
    try:
        s = LoopmlServer(root / "data", ["--app-name", "basic-auth"])
    finally:
        os.environ.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    for user, pw in (ALICE, BOB):
        r = requests.post(s.url + "/api/2.0/mlflow/users/create", auth=ADMIN,
                          json={"username": user, "password": pw})
        assert r.status_code == 200, r.text
    s.canary = root / "canary.txt"
    yield s
    s.stop()


@pytest.fixture(scope="module")
def owned(srv):
    """alice's experiment and run, with one artifact; bob has the default (READ)."""
    url = srv.url
    exp = requests.post(url + "/api/2.0/mlflow/experiments/create", auth=ALICE,
                        json={"name": f"adv-{uuid.uuid4().hex[:8]}"}).json()["experiment_id"]
    run = requests.post(url + "/api/2.0/mlflow/runs/create", auth=ALICE,
                        json={"experiment_id": exp}).json()["run"]["info"]
    art = run["artifact_uri"].split("mlflow-artifacts:/", 1)[-1].lstrip("/")
    r = requests.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}/notes.txt", data=b"hello",
                     auth=ALICE)
    assert r.status_code == 200, r.text
    return {"exp": exp, "run": run["run_id"], "art": art}


class Raw:
    """An answer to a request sent byte for byte (requests and urllib3 collapse `../` in a
    URL before sending it, which would hide the attack)."""

    def __init__(self, status, body, headers, method, url):
        self.status_code, self.content, self.headers = status, body, headers
        self.text = body.decode("utf-8", "replace")
        self.url, self.request = url, type("R", (), {"method": method})()


def raw(srv, method, path, body=b"", auth=None, headers=None):
    import base64
    import http.client

    h = dict(headers or {})
    if auth:
        h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in h.items():
            c.putheader(k, v)
        c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return Raw(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}, method, path)
    finally:
        c.close()


def no_leak(r: requests.Response):
    body = r.content
    assert CANARY.encode() not in body, (r.status_code, body[:200])
    assert b"root:x:0:0" not in body, (r.status_code, body[:200])
    assert r.status_code < 500, (r.status_code, body[:300])


def refused(r: requests.Response, *codes):
    no_leak(r)
    assert r.status_code in (codes or (400, 403, 404)), (r.request.method, r.url, r.status_code,
                                                        r.text[:300])


def test_cve_2023_30172_6909_traversal_reads(srv, owned):
    """CVE-2023-30172 (`/get-artifact?path=`), CVE-2023-6909 (`\\..\\` on artifact GET):
    every traversal spelling on every read route is refused and serves no outside byte."""
    url, run, art = srv.url, owned["run"], owned["art"]
    for p in TRAVERSALS:
        q = urllib.parse.quote(p, safe="")
        for r in [
            raw(srv, "GET", f"/get-artifact?run_id={run}&path={q}", auth=ALICE),
            raw(srv, "GET", f"/get-artifact?run_id={run}&path={p}", auth=ALICE),
            raw(srv, "GET", f"/api/2.0/mlflow/artifacts/list?run_id={run}&path={q}", auth=ALICE),
            raw(srv, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{art}/{p}", auth=ALICE),
            raw(srv, "GET", f"/api/2.0/mlflow-artifacts/artifacts?path={q}", auth=ALICE),
            raw(srv, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{p}", auth=ADMIN),
            raw(srv, "GET", f"/model-versions/get-artifact?name=x&version=1&path={q}", auth=ADMIN),
        ]:
            no_leak(r)
            if r.status_code == 200:
                # A listing that answers must list nothing outside the root.
                assert "passwd" not in r.text and "canary" not in r.text, (p, r.text[:200])


def test_cve_2023_6831_2024_1560_traversal_deletes_and_writes(srv, owned):
    """CVE-2023-6831 / CVE-2024-1560 (traversal into artifact DELETE, with a double-decoding
    bypass) and the write side: refused, and the canary outside the root survives untouched."""
    url, art = srv.url, owned["art"]
    root = os.path.join(srv.data_dir, "artifacts")
    for p in TRAVERSALS:
        once = urllib.parse.unquote(p)
        # Decoded once (as a server must), `%252e%252e` is the literal name `%2e%2e`: it may be
        # stored, but only inside the root. Everything else is a traversal and is refused.
        # (`{art}//etc/passwd` is `etc/passwd` under the run's folder, also a literal name.)
        literal = not any(seg in ("..", ".") for seg in once.replace("\\", "/").split("/"))
        for method in ("DELETE", "PUT"):
            r = raw(srv, method, f"/api/2.0/mlflow-artifacts/artifacts/{art}/{p}", b"pwned",
                    auth=ADMIN)
            no_leak(r)
            if literal and r.status_code == 200:
                continue
            assert r.status_code in (400, 403, 404), (method, p, r.status_code, r.text[:200])
        assert srv.canary.read_text() == CANARY
    # Nothing was written outside the artifact root.
    outside = [os.path.join(d, f) for d, _, fs in os.walk(os.path.dirname(srv.data_dir))
               for f in fs if "pwned" in f or (f == "passwd" and not
                                                os.path.join(d, f).startswith(root))]
    assert not outside, outside
    for d, _, fs in os.walk(os.path.dirname(srv.data_dir)):
        for f in fs:
            full = os.path.join(d, f)
            if full.startswith(root) or not os.path.isfile(full):
                continue
            with open(full, "rb") as fh:
                assert fh.read(5) != b"pwned", full
    assert srv.canary.read_text() == CANARY


SOURCES = [
    "/etc", "/etc/passwd", "file:///etc", "file:/etc", "file://localhost/etc/passwd",
    "../../../../etc", "mlflow-artifacts:/../../../etc", "mlflow-artifacts:/0/../../..",
    "s3://bucket/../../x", "\\..\\..\\..\\etc", "%5c..%5c..%5cetc", "runs:/../../../etc",
    "models:/../../etc", "http://127.0.0.1/../../etc", "file:///proc/self/environ",
]


def test_cve_2023_1177_2356_2780_2025_11201_2026_2614_model_sources(srv, owned):
    """Local-file read through a model version's `source` (CVE-2023-1177, 2023-2356/2780,
    2025-11201, 2026-2614): every local, relative, backslashed or encoded source is refused,
    with credentials or without, and no version that could serve it exists."""
    url = srv.url
    name = f"adv-model-{uuid.uuid4().hex[:6]}"
    assert requests.post(url + "/api/2.0/mlflow/registered-models/create", auth=ALICE,
                         json={"name": name}).status_code == 200
    for src in SOURCES:
        r = requests.post(url + "/api/2.0/mlflow/model-versions/create", auth=ALICE,
                          json={"name": name, "source": src, "run_id": owned["run"]})
        refused(r, 400)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE", (src, r.text)
        # CVE-2026-2614: the same without any credentials never reaches the handler.
        r = requests.post(url + "/api/2.0/mlflow/model-versions/create",
                          json={"name": name, "source": src})
        refused(r, 401)
    versions = requests.get(url + "/api/2.0/mlflow/model-versions/search", auth=ALICE,
                            params={"filter": f"name='{name}'"}).json()
    assert versions.get("model_versions", []) == [], versions
    r = requests.get(f"{url}/model-versions/get-artifact?name={name}&version=1&path=passwd",
                     auth=ALICE)
    refused(r)


def test_cve_2023_1176_no_file_existence_oracle(srv, owned):
    """CVE-2023-1176: a source naming a file that exists and one that does not get the same
    answer (status and error code), so the server cannot be used to probe its disk."""
    url = srv.url
    name = f"adv-oracle-{uuid.uuid4().hex[:6]}"
    requests.post(url + "/api/2.0/mlflow/registered-models/create", auth=ALICE, json={"name": name})
    answers = []
    for src in [str(srv.canary), str(srv.canary) + ".missing", "/etc/passwd", "/etc/nope-nope"]:
        r = requests.post(url + "/api/2.0/mlflow/model-versions/create", auth=ALICE,
                          json={"name": name, "source": src, "run_id": owned["run"]})
        no_leak(r)
        answers.append((r.status_code, r.json().get("error_code"),
                        r.json().get("message", "").replace(src, "<src>")))
    assert len(set(answers)) == 1, answers


def test_cve_2024_1483_family_artifact_location(srv):
    """CVE-2024-1483/1594/2928/3848/3573: an experiment's `artifact_location` with `#`, `?`,
    `..` or a local path outside the store is refused (MLflow 3.17 still accepts
    `file:///etc`), so no later upload or read can land there."""
    url = srv.url
    for loc in ["file:///etc", "/etc", "file:///tmp/x#frag", "file:///tmp/x?q=1", "../../../etc",
                "mlflow-artifacts:/../../etc", "file://localhost/etc"]:
        r = requests.post(url + "/api/2.0/mlflow/experiments/create", auth=ALICE,
                          json={"name": f"adv-loc-{uuid.uuid4().hex[:8]}", "artifact_location": loc})
        refused(r, 400)


def test_cve_2023_6568_no_reflected_content_type(srv):
    """CVE-2023-6568: a script in the Content-Type is never echoed; errors are JSON."""
    evil = "text/html; <script>alert(document.domain)</script>"
    for path in ["/api/2.0/mlflow/users/create", "/api/2.0/mlflow/experiments/create"]:
        r = requests.post(srv.url + path, data=b'{"name": "x"}', auth=ADMIN,
                          headers={"Content-Type": evil})
        refused(r, 400)
        assert "<script>" not in r.text and r.headers["content-type"].startswith("application/json")
        assert r.headers.get("x-content-type-options") == "nosniff"


def test_cve_2023_43472_drive_by_csrf(srv):
    """CVE-2023-43472: a cross-site form or `text/plain` POST, with or without a foreign
    Origin, is refused and creates nothing."""
    name = f"adv-csrf-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": name, "artifact_location": "file:///tmp/evil"})
    for headers in [{"Content-Type": "text/plain"},
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "application/json", "Origin": "http://evil.example.com"},
                    {"Content-Type": "text/plain", "Origin": "http://evil.example.com"}]:
        r = requests.post(srv.url + "/api/2.0/mlflow/experiments/create", data=body,
                          headers=headers, auth=ADMIN)
        refused(r, 400, 403)
    r = requests.get(srv.url + "/api/2.0/mlflow/experiments/get-by-name",
                     params={"experiment_name": name}, auth=ADMIN)
    assert r.status_code == 404, r.text


def test_cve_2024_4263_edit_cannot_delete_artifacts(srv, owned):
    """CVE-2024-4263: an EDIT user may upload but not delete; the artifact survives."""
    url, art = srv.url, owned["art"]
    r = requests.post(url + "/api/3.0/mlflow/users/permissions/grant", auth=ALICE,
                      json={"username": "bob", "resource_type": "experiment",
                            "resource_id": owned["exp"], "permission": "EDIT"})
    assert r.status_code == 200, r.text
    try:
        assert requests.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}/bob.txt", data=b"b",
                            auth=BOB).status_code == 200
        r = requests.delete(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}/notes.txt", auth=BOB)
        refused(r, 403)
        r = requests.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}/notes.txt", auth=ALICE)
        assert r.status_code == 200 and r.content == b"hello"
    finally:
        requests.post(url + "/api/3.0/mlflow/users/permissions/revoke", auth=ALICE,
                      json={"username": "bob", "resource_type": "experiment",
                            "resource_id": owned["exp"]})


def test_cve_2026_2651_multipart_needs_the_experiment(srv, owned):
    """CVE-2026-2651: the multipart proxy routes check the experiment like a PUT: a READ user
    cannot create, complete or abort an upload over alice's artifact, which stays unchanged."""
    url, art = srv.url, owned["art"]
    for op, body in [("create", {"path": "notes.txt", "num_parts": 1}),
                     ("complete", {"path": "notes.txt", "upload_id": "x", "parts": []}),
                     ("abort", {"path": "notes.txt", "upload_id": "x"})]:
        r = requests.post(f"{url}/api/2.0/mlflow-artifacts/mpu/{op}/{art}", json=body, auth=BOB)
        refused(r, 403)
    r = requests.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}/notes.txt", auth=ALICE)
    assert r.content == b"hello"


def test_cve_2026_0545_2652_no_route_skips_authentication(srv):
    """CVE-2026-0545 / 2652: routes outside MLflow's Flask app (FastAPI jobs, OTLP) skipped
    auth. Here every route but the probes answers 401 without credentials, whatever crate
    serves it."""
    url = srv.url
    for method, path in [
        ("POST", "/v1/traces"), ("POST", "/ajax-api/3.0/jobs/search"),
        ("GET", "/api/3.0/mlflow/scorers/list?experiment_id=0"),
        ("POST", "/api/3.0/mlflow/traces"), ("GET", "/api/2.0/mlflow/experiments/search"),
        ("GET", "/ajax-api/2.0/mlflow/experiments/search"), ("GET", "/get-artifact?path=x&run_id=y"),
        ("GET", "/api/2.0/loopml/deployments"), ("POST", "/api/2.0/loopml/deployments"),
        ("GET", "/api/2.0/loopml/monitors"), ("GET", "/api/2.0/loopml/datasets"),
        ("POST", "/v2/models/x/infer"), ("POST", "/invocations"), ("GET", "/metrics"),
        ("POST", "/graphql"), ("GET", "/api/2.0/mlflow/audit"), ("GET", "/version"),
        ("POST", "/api/2.0/mlflow/webhooks"), ("GET", "/api/2.0/loopml/registry/events"),
        ("POST", "/api/3.0/mlflow/roles/create"), ("GET", "/api/2.0/mlflow/users/list"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x"), ("GET", "/"),
    ]:
        r = requests.request(method, url + path, json={} if method != "GET" else None)
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
        no_leak(r)
    for path in ["/health", "/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"]:
        assert requests.get(url + path).status_code == 200


def test_cve_2025_14297_15381_authz_matrix(srv, owned):
    """CVE-2025-14297 (basic-auth bypass) and CVE-2025-15381 (trace and assessment routes
    unchecked): a READ user's writes on alice's experiment, runs and traces are refused, and
    a DENY hides them entirely; nothing changes."""
    url, exp, run = srv.url, owned["exp"], owned["run"]
    trace = requests.post(url + "/api/3.0/mlflow/traces", auth=ALICE, json={"trace": {"trace_info": {
        "trace_id": f"tr-{uuid.uuid4().hex}", "trace_location": {"type": "MLFLOW_EXPERIMENT",
        "mlflow_experiment": {"experiment_id": exp}}, "request_time": "2026-01-01T00:00:00Z",
        "execution_duration": "1s", "state": "OK"}}})
    assert trace.status_code == 200, trace.text
    tid = trace.json()["trace"]["trace_info"]["trace_id"]
    writes = [
        ("POST", "/api/2.0/mlflow/experiments/update", {"experiment_id": exp, "new_name": "x"}),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": exp}),
        ("POST", "/api/2.0/mlflow/experiments/set-experiment-tag",
         {"experiment_id": exp, "key": "k", "value": "v"}),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp}),
        ("POST", "/api/2.0/mlflow/runs/log-metric",
         {"run_id": run, "key": "m", "value": 1, "timestamp": 1}),
        ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": run}),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": run, "key": "k", "value": "v"}),
        ("PATCH", f"/api/3.0/mlflow/traces/{tid}/tags", {"key": "k", "value": "v"}),
        ("POST", f"/api/3.0/mlflow/traces/{tid}/assessments",
         {"assessment": {"assessment_name": "a", "trace_id": tid,
                         "feedback": {"value": True}, "source": {"source_type": "HUMAN"}}}),
        ("POST", "/api/3.0/mlflow/traces/delete-traces",
         {"experiment_id": exp, "max_timestamp_millis": 9999999999999}),
        ("POST", "/api/3.0/mlflow/users/permissions/grant",
         {"username": "bob", "resource_type": "experiment", "resource_id": exp,
          "permission": "MANAGE"}),
    ]
    for method, path, body in writes:
        r = requests.request(method, url + path, json=body, auth=BOB)
        refused(r, 403)
    got = requests.get(url + "/api/2.0/mlflow/experiments/get", params={"experiment_id": exp},
                       auth=ALICE).json()["experiment"]
    assert got["lifecycle_stage"] == "active" and not got["name"].startswith("x")
    r = requests.get(url + "/api/2.0/mlflow/runs/get", params={"run_id": run}, auth=ALICE).json()
    assert r["run"]["info"]["lifecycle_stage"] == "active" and not r["run"]["data"].get("metrics")
    assert requests.get(f"{url}/api/3.0/mlflow/traces/{tid}", auth=ALICE).status_code == 200
    # DENY: not even reads.
    requests.post(url + "/api/3.0/mlflow/users/permissions/grant", auth=ALICE,
                  json={"username": "bob", "resource_type": "experiment", "resource_id": exp,
                        "permission": "DENY"})
    try:
        for path in [f"/api/2.0/mlflow/experiments/get?experiment_id={exp}",
                     f"/api/2.0/mlflow/runs/get?run_id={run}", f"/api/3.0/mlflow/traces/{tid}",
                     f"/get-artifact?run_id={run}&path=notes.txt"]:
            refused(requests.get(url + path, auth=BOB), 403)
        r = requests.post(url + "/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp]},
                          auth=BOB)
        assert r.status_code == 200 and not r.json().get("runs"), r.text
    finally:
        requests.post(url + "/api/3.0/mlflow/users/permissions/revoke", auth=ALICE,
                      json={"username": "bob", "resource_type": "experiment", "resource_id": exp})


def test_cve_2025_1473_1474_11200_signup_and_weak_passwords(srv):
    """CVE-2025-1473/1474 (CSRF on signup, empty passwords) and CVE-2025-11200 (weak
    passwords): there is no unauthenticated signup, short or empty passwords are refused, and a
    brute force is slowed down for that user only."""
    url = srv.url
    for path in ["/signup", "/api/2.0/mlflow/users/create-ui", "/api/2.0/mlflow/users/create"]:
        r = requests.post(url + path, data={"username": "mallory", "password": "x" * 20})
        refused(r, 400, 401, 403, 404)
    for pw in ["", "short", "elevenchars"]:
        r = requests.post(url + "/api/2.0/mlflow/users/create", auth=ADMIN,
                          json={"username": f"weak-{uuid.uuid4().hex[:6]}", "password": pw})
        refused(r, 400)
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    requests.post(url + "/api/2.0/mlflow/users/create", auth=ADMIN,
                  json={"username": victim, "password": "victim-password-1"})
    codes = [requests.get(url + "/api/2.0/mlflow/users/current", auth=(victim, f"guess-{i}"))
             .status_code for i in range(8)]
    assert codes[:5] == [401] * 5 and 429 in codes, codes
    # Another user is not slowed down.
    assert requests.get(url + "/api/2.0/mlflow/users/current", auth=ALICE).status_code == 200


def test_cve_2025_14279_dns_rebinding(srv):
    """CVE-2025-14279: a foreign Host is refused before any handler runs."""
    for host in ["evil.example.com", "evil.example.com:5000", "127.0.0.1.nip.io"]:
        r = requests.get(srv.url + "/api/2.0/mlflow/experiments/search", auth=ADMIN,
                         headers={"Host": host})
        refused(r, 403)


def test_cve_2025_0453_graphql_batches_are_bounded(srv):
    """CVE-2025-0453: a GraphQL batch or a deep query cannot pin the server; probes stay fast."""
    q = {"query": "query { mlflowSearchRuns(input: {experimentIds: [\"0\"]}) { runs { info { runId } } } }"}
    started = time.monotonic()
    r = requests.post(srv.url + "/graphql", json=[q] * 2000, auth=ADMIN)
    no_leak(r)
    assert r.status_code in (200, 400, 413), r.status_code
    deep = "query { " + "a { " * 500 + "b" + " }" * 500 + " }"
    r2 = requests.post(srv.url + "/graphql", json={"query": deep}, auth=ADMIN)
    no_leak(r2)
    assert r2.status_code in (200, 400), r2.status_code
    assert time.monotonic() - started < 10
    t = time.monotonic()
    assert requests.get(srv.url + "/health").status_code == 200
    assert time.monotonic() - t < 1


def test_cve_2026_2393_webhook_ssrf(srv):
    """CVE-2026-2393: webhooks to loopback, link-local or metadata in any spelling are refused
    (this server runs with the tests' `--outbound-allow 127.0.0.1`, so only the other
    spellings and addresses are checked here; test_hardening.py checks 127.0.0.1 itself)."""
    for target in ["http://[::1]:9/h", "http://169.254.169.254/latest/meta-data/",
                   "http://metadata.google.internal/computeMetadata/v1/", "http://0.0.0.0/h",
                   "http://[::ffff:169.254.169.254]/h", "http://0xa9fea9fe/h",
                   "http://100.100.100.200/h", "http://localhost.:9/h"]:
        r = requests.post(srv.url + "/api/2.0/mlflow/webhooks", auth=ADMIN,
                          json={"name": "h", "url": target,
                                "events": [{"entity": "model_version", "action": "created"}]})
        refused(r, 400)
    listed = requests.get(srv.url + "/api/2.0/mlflow/webhooks", auth=ADMIN).json()
    assert not listed.get("webhooks"), listed


def test_cve_2024_37052_pickles_are_never_loaded(srv, owned, tmp_path):
    """CVE-2024-37052..60: unpickling an uploaded model runs its code. loopml serves ONNX
    only: deploying a pickled model is refused and the pickle never runs (it would create a
    file)."""
    marker = tmp_path / "pickle-ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    url, art = srv.url, owned["art"]
    mlmodel = ("artifact_path: model\nflavors:\n  python_function:\n    loader_module: "
               "mlflow.sklearn\n    model_path: model.pkl\n  sklearn:\n    pickled_model: "
               "model.pkl\n    serialization_format: cloudpickle\n")
    for name, data in [("MLmodel", mlmodel.encode()), ("model.pkl", pickle.dumps(Evil()))]:
        assert requests.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}/evil/{name}",
                            data=data, auth=ALICE).status_code == 200
    model = f"adv-pickle-{uuid.uuid4().hex[:6]}"
    requests.post(url + "/api/2.0/mlflow/registered-models/create", auth=ALICE, json={"name": model})
    v = requests.post(url + "/api/2.0/mlflow/model-versions/create", auth=ALICE,
                      json={"name": model, "source": f"runs:/{owned['run']}/evil",
                            "run_id": owned["run"]})
    assert v.status_code == 200, v.text
    r = requests.post(url + "/api/2.0/loopml/deployments", auth=ALICE, json={
        "name": f"evil-{uuid.uuid4().hex[:6]}",
        "variants": [{"name": "only", "model": f"models:/{model}/1"}]})
    refused(r, 400, 422)
    assert not marker.exists()


def test_owasp_basics_headers_and_bodies(srv):
    """The OWASP-style basics: a huge header, conflicting framing, a malformed Basic header,
    JSON bombs (depth, keys, huge exponent) — each refused promptly, never a 500."""
    url = srv.url
    r = requests.get(url + "/api/2.0/mlflow/experiments/search", auth=ADMIN,
                     headers={"X-Big": "a" * 100_000})
    assert r.status_code == 431, r.status_code
    r = requests.get(url + "/api/2.0/mlflow/experiments/search",
                     headers={"Authorization": "Basic !!!"})
    refused(r, 401)
    for body in [b"[" * 10_000 + b"]" * 10_000, b'{"name": 1e999999}',
                 ("{" + ",".join(f'"k{i}": {i}' for i in range(200_000)) + "}").encode()]:
        t = time.monotonic()
        r = requests.post(url + "/api/2.0/mlflow/experiments/create", data=body, auth=ADMIN,
                          headers={"Content-Type": "application/json"})
        refused(r, 400)
        assert time.monotonic() - t < 2
    # Content-Length and Transfer-Encoding together (request smuggling): refused.
    host, port = "127.0.0.1", srv.port
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        head = s.recv(200)
    assert head.startswith(b"HTTP/1.1 4"), head
