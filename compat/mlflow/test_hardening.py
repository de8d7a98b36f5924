"""Request hygiene on every route, logins or not (issue 20): the Host header against an
allow-list (DNS rebinding: CVE-2025-14279's class), cross-origin writes refused (drive-by CSRF:
CVE-2023-43472's class), and security headers on every answer."""

import time
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
    # NUL anywhere (run names, tags, params, model names, descriptions, query strings) is
    # refused with MLflow's error and stores nothing: PostgreSQL cannot hold it in text.
    run = client.create_run(exp, run_name="clean")
    rid = run.info.run_id
    model = f"m-{uuid.uuid4().hex[:6]}"
    for call in [lambda: client.create_run(exp, run_name="a\x00b"),
                 lambda: client.set_tag(rid, "k", "v\x00"),
                 lambda: client.log_param(rid, "p", "\x00"),
                 lambda: client.update_run(rid, name="x\x00"),
                 lambda: client.create_registered_model(f"{model}\x00"),
                 lambda: client.create_registered_model(model, description="d\x00")]:
        with pytest.raises(MlflowException) as e:
            call()
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "NUL" in e.value.message
    r = requests.get(client._tracking_client.tracking_uri
                     + "/api/2.0/mlflow/registered-models/get", params={"name": "a\x00"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    got = client.get_run(rid)
    assert got.data.tags.get("k") is None and got.data.params == {}
    assert got.info.run_name == "clean"
    assert len(client.search_runs([exp])) == 1
    assert client.search_registered_models(f"name = '{model}'") == []
    # Newlines, tabs and any other Unicode in values round-trip.
    value = "line1\nline2\t‮𝄞 \\u0000 literal"
    client.set_tag(rid, "note", value)
    assert client.get_run(rid).data.tags["note"] == value


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


def test_webhooks_cannot_reach_loopback_link_local_or_metadata(start_server):
    """CVE-2026-2393 (SSRF through a webhook URL), replayed with the real client: every
    spelling of loopback, link-local and cloud metadata is refused with MLflow's error, the
    loopback listener never sees a connection, and nothing is stored. Monitor alert webhooks
    are held to the same rule. `--outbound-allow` lets an operator name a receiver."""
    import socket
    import threading

    import pytest
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.exceptions import MlflowException

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    srv = start_server(extra_args=["--outbound-allow="])
    client = MlflowClient(srv.url)
    event = WebhookEvent("model_version", "created")
    try:
        for url in [f"http://127.0.0.1:{port}/hook", f"http://[::1]:{port}/hook",
                    f"http://0x7f000001:{port}/hook", f"http://2130706433:{port}/hook",
                    f"http://127.1:{port}/hook", f"http://localhost:{port}/hook",
                    f"http://[::ffff:127.0.0.1]:{port}/hook", "http://0.0.0.0/hook",
                    "http://169.254.169.254/latest/meta-data/iam/",
                    "http://[fd00:ec2::254]/latest/", "http://metadata.google.internal/"]:
            with pytest.raises(MlflowException) as e:
                client.create_webhook(name="ssrf", url=url, events=[event])
            assert e.value.error_code == "INVALID_PARAMETER_VALUE", url
            assert "outbound request refused" in e.value.message, (url, e.value.message)
        assert len(client.list_webhooks()) == 0
        # An allowed public name is stored; moving it onto loopback is refused.
        hook = client.create_webhook(name="ok", url="https://hooks.example.invalid/x", events=[event])
        with pytest.raises(MlflowException, match="outbound request refused"):
            client.update_webhook(hook.webhook_id, url=f"http://127.0.0.1:{port}/hook")
        assert client.get_webhook(hook.webhook_id).url == "https://hooks.example.invalid/x"
        # Monitor alert receivers: the same rule, with the monitors API's error.
        spec = ("name: ssrf-mon\ndeployment: none\nreference: r@1\nchecks:\n"
                "  - feature_drift: {drift_share: 0.5}\n"
                "alerts:\n  webhooks: ['http://169.254.169.254/latest/meta-data/']\n")
        r = requests.post(srv.url + "/api/2.0/loopml/monitors", data=spec)
        assert r.status_code == 400, r.text
        assert "outbound request refused" in r.json()["message"]
        time.sleep(0.3)
        assert accepted == [], "a refused webhook reached the loopback listener"
    finally:
        stop.set()
        t.join()
        listener.close()
        for c in accepted:
            c.close()
    # Explicitly allowed, the same loopback receiver is accepted.
    allowed = start_server(extra_args=["--outbound-allow", "127.0.0.1,::1"])
    hook = MlflowClient(allowed.url).create_webhook(
        name="local", url=f"http://127.0.0.1:{port}/hook", events=[event])
    assert hook.url.startswith("http://127.0.0.1:")
    r = requests.get(allowed.url + "/health")
    assert r.status_code == 200
