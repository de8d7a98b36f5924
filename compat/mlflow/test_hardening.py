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
