"""Request hygiene on every route, logins or not (issue 20): the Host header against an
allow-list (DNS rebinding: CVE-2025-14279's class), cross-origin writes refused (drive-by CSRF:
CVE-2023-43472's class), and security headers on every answer."""

import uuid

import requests
from mlflow import MlflowClient


def test_a_foreign_host_is_refused_and_local_ones_are_served(server):
    url = server.url
    port = url.rsplit(":", 1)[1]
    for host in ["evil.example.com", f"evil.example.com:{port}", "8.8.8.8"]:
        for method, path in [("GET", "/health"), ("POST", "/api/2.0/mlflow/experiments/search")]:
            r = requests.request(method, url + path, headers={"Host": host}, json={})
            assert r.status_code == 403, (host, path, r.status_code)
            assert "DNS rebinding" in r.json()["message"]
    for host in [f"localhost:{port}", f"127.0.0.1:{port}", "10.0.0.7", "[::1]"]:
        assert requests.get(url + "/health", headers={"Host": host}).status_code == 200, host


def test_cross_origin_writes_are_refused_and_change_nothing(server):
    url = server.url
    name = f"csrf-{uuid.uuid4().hex[:8]}"
    # What a page on another site would send (text/plain needs no CORS preflight).
    for headers in [{"Origin": "http://evil.example.com", "Content-Type": "text/plain"},
                    {"Origin": "https://evil.example.com", "Content-Type": "application/json"}]:
        r = requests.post(url + "/api/2.0/mlflow/experiments/create", headers=headers,
                          data='{"name": "%s"}' % name)
        assert r.status_code == 403, r.text
        assert r.json()["message"] == "Cross-origin request blocked"
    assert MlflowClient(url).get_experiment_by_name(name) is None
    # Reads from anywhere, and writes from the server's own origin, are served.
    r = requests.get(url + "/api/2.0/mlflow/experiments/search?max_results=1",
                     headers={"Origin": "http://evil.example.com"})
    assert r.status_code == 200
    r = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": name},
                      headers={"Origin": url})
    assert r.status_code == 200, r.text


def test_security_headers_on_every_answer(server):
    for method, path in [("GET", "/health"), ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=0"),
                         ("GET", "/no/such/route")]:
        r = requests.request(method, server.url + path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "SAMEORIGIN", path


def test_allowed_hosts_adds_names_and_patterns(start_server):
    srv = start_server(extra_args=["--allowed-hosts", "ml.example.com,*.corp.example"])
    for host, want in [("ml.example.com", 200), ("a.b.corp.example:443", 200),
                       ("corp.example.evil.com", 403), ("other.example.com", 403)]:
        assert requests.get(srv.url + "/health", headers={"Host": host}).status_code == want, host


def test_nul_is_refused_and_other_unicode_round_trips(client):
    import pytest
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as e:
        client.create_experiment(f"nul-\x00-{uuid.uuid4().hex[:6]}")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    # NFD stays NFD, an RTL override stays, astral characters stay: byte for byte.
    name = f"e\u0301 \u202eright 𝄞 名前 {uuid.uuid4().hex[:6]}"
    exp = client.create_experiment(name)
    assert client.get_experiment(exp).name == name
    assert client.get_experiment_by_name(name).experiment_id == exp


def test_mlflow_writes_must_be_json(server):
    """A write whose body is not declared JSON (a form or `text/plain`, which a page on another
    site can send without a preflight, CVE-2023-43472) is refused even with no Origin header."""
    url = server.url + "/api/2.0/mlflow/experiments/create"
    name = f"plain-{uuid.uuid4().hex[:8]}"
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]:
        r = requests.post(url, data='{"name": "%s"}' % name, headers={"Content-Type": ct})
        assert r.status_code == 400, (ct, r.text)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "application/json" in r.json()["message"]
    r = requests.post(url, data='{"name": "%s"}' % name, headers={"Content-Type": ""})
    assert r.status_code == 400, r.text
    assert MlflowClient(server.url).get_experiment_by_name(name) is None
    # JSON with parameters is JSON.
    r = requests.post(url, data='{"name": "%s"}' % name,
                      headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_oversized_and_deeply_nested_bodies_fail_fast(server):
    import time
    url = server.url + "/api/2.0/mlflow/experiments/create"
    started = time.monotonic()
    r = requests.post(url, data=b'{"name": "' + b"a" * (50 << 20) + b'"}',
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:200]
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert time.monotonic() - started < 5
    # 100,000 levels of nesting: a clear 400, not a crash (MLflow answers 500 RecursionError).
    r = requests.post(url, data="[" * 100_000 + "]" * 100_000,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "recursion" in r.json()["message"], r.text[:200]
    assert requests.get(server.url + "/health").status_code == 200


def test_slow_clients_are_cut_off(start_server):
    """Slowloris: a client that sends its headers a byte at a time is disconnected after
    --client-timeout, and so is a body that stalls; everyone else is served meanwhile."""
    import socket
    import time
    srv = start_server(extra_args=["--client-timeout", "1"])
    host, port = srv.url.rsplit("//", 1)[1].split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na")
    assert requests.get(srv.url + "/health").status_code == 200
    started = time.monotonic()
    for s in (slow, stalled):
        s.settimeout(10)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        # Closed (hyper may answer 408 first); the stalled body gets a 400.
        assert b"200 OK" not in got, got
    assert time.monotonic() - started < 6
    assert MlflowClient(srv.url).search_experiments(max_results=5) is not None
