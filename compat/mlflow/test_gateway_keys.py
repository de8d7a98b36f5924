"""The gateway's virtual keys, budgets and limits with the real `openai` SDK against the real
binary: LiteLLM's key API, a budget that holds under 64 concurrent requests, RPM refusals as
`RateLimitError` with `retry-after` and the `x-ratelimit-*` headers, an abandoned stream billed
from the upstream's usage, spend on `/spend/logs` and `/metrics`; on PostgreSQL + Redis (the
scale-out run), one RPM across two replicas and PostgreSQL dying mid-load without a failed
request."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from loopml_server import DATABASE_URL, REDIS_URL

openai = pytest.importorskip("openai")

MASTER = "sk-master-compat"
# $0.001 a prompt token, $0.002 a completion token: an answer (5 + 3 tokens) costs $0.011; a
# request "hi" with max_tokens=3 is reserved at about $0.014.
ANSWER_COST, ESTIMATE = 0.011, 0.0145


class Upstream(BaseHTTPRequestHandler):
    """A fake OpenAI server: 40 ms per answer; streams send a word every 100 ms."""

    protocol_version = "HTTP/1.1"
    streams_finished = 0

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not body.get("stream"):
            time.sleep(0.04)
            data = json.dumps({"id": "c1", "object": "chat.completion", "created": 1,
                               "model": body["model"], "usage": usage, "choices": [
                                   {"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "ok"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            line = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
        try:
            for i, w in enumerate(["one ", "two ", "three"]):
                delta = {"content": w, **({"role": "assistant"} if i == 0 else {})}
                send({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                time.sleep(0.1)
            send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                send({**base, "choices": [], "usage": usage})
            send(b"[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            Upstream.streams_finished += 1
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def upstream():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def config(tmp_path, upstream):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-compat, api_base: "{upstream}/v1", api_key: sk-up}}
    model_info: {{id: chat-1, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
general_settings:
  master_key: {MASTER}
  allow_requests_on_db_unavailable: true
""")
    return cfg


@pytest.fixture
def gateway(start_server, upstream, tmp_path):
    return start_server(tmp_path / "gw", ["--gateway-config", str(config(tmp_path, upstream))])


def admin(srv, path, body=None, method="POST"):
    r = requests.request(method, srv.url + path, json=body,
                         headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def chat(client):
    return client.chat.completions.create(model="chat", max_tokens=3,
                                          messages=[{"role": "user", "content": "hi"}])


def test_a_budget_holds_under_64_concurrent_requests(gateway):
    key = admin(gateway, "/key/generate", {"max_budget": 0.1, "key_alias": "budget"})["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)

    def one(_):
        try:
            chat(client)
            return "ok"
        except openai.BadRequestError as e:
            assert e.body["type"] == "budget_exceeded", e.body
            return "budget"

    with ThreadPoolExecutor(64) as pool:
        outcomes = list(pool.map(one, range(128)))
    ok = outcomes.count("ok")
    assert ok >= 8, outcomes
    assert ok * ANSWER_COST <= 0.1 + ESTIMATE, f"{ok} answered past a $0.1 budget"
    info = admin(gateway, f"/key/info?key={key}", method="GET")["info"]
    assert abs(info["spend"] - ok * ANSWER_COST) < 1e-9, info
    # Spent out. Reservations are estimates, so the burst may stop a little short of the
    # budget; a few more calls use up what is left, and then every call is refused before it
    # reaches the upstream, the spend never past the budget plus one estimate.
    refused = None
    for _ in range(20):
        try:
            chat(client)
            ok += 1
        except openai.BadRequestError as e:
            refused = e
            break
    assert refused is not None, "the budget was never enforced"
    assert "Budget has been exceeded" in refused.body["message"]
    assert ok * ANSWER_COST <= 0.1 + ESTIMATE, f"{ok} answered past a $0.1 budget"
    with pytest.raises(openai.BadRequestError):
        chat(client)


def test_rpm_is_refused_with_retry_after_and_the_ratelimit_headers(gateway):
    key = admin(gateway, "/key/generate", {"rpm_limit": 3})["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert float(raw.headers["x-loopml-overhead-ms"]) >= 0
    assert raw.headers["x-request-id"]
    chat(client), chat(client)
    with pytest.raises(openai.RateLimitError) as e:
        chat(client)
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    # A key may be scoped to models and revoked; the master key is not a virtual key.
    admin(gateway, "/key/delete", {"keys": [key]})
    with pytest.raises(openai.AuthenticationError):
        chat(client)


def test_an_abandoned_stream_is_billed_and_spend_is_on_logs_and_metrics(gateway):
    key = admin(gateway, "/key/generate", {"key_alias": "streamer"})["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    finished = Upstream.streams_finished
    stream = client.chat.completions.create(model="chat", stream=True,
                                            messages=[{"role": "user", "content": "go"}])
    first = next(iter(stream))
    assert first.choices[0].delta.content == "one "
    stream.close()  # the client leaves after the first word
    deadline = time.monotonic() + 10
    while True:
        logs = admin(gateway, f"/spend/logs?api_key={key}", method="GET")
        if logs:
            break
        assert time.monotonic() < deadline, "the abandoned stream was never billed"
        time.sleep(0.2)
    row = logs[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 3), row
    assert abs(row["spend"] - ANSWER_COST) < 1e-9
    assert Upstream.streams_finished == finished + 1, "the upstream stream was read to its end"

    chat(client)
    report = admin(gateway, "/global/spend/report?group_by=api_key", method="GET")
    assert any(g["api_key"] == row["api_key"] for day in report for g in day["api_keys"]), report
    m = requests.get(gateway.url + "/metrics", timeout=10).text
    for name in ["loopml_gateway_requests_total", "loopml_gateway_spend_usd_total",
                 "loopml_gateway_tokens_total", "loopml_gateway_overhead_seconds_bucket",
                 "loopml_gateway_request_duration_seconds_bucket"]:
        assert name in m, name
    assert "loopml_http_requests_total" in m or "loopml_" in m


def test_keys_and_spend_survive_a_restart(start_server, upstream, tmp_path):
    cfg = config(tmp_path, upstream)
    srv = start_server(tmp_path / "restart", ["--gateway-config", str(cfg)])
    key = admin(srv, "/key/generate", {"max_budget": 1.0})["key"]
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        chat(client)
    srv.stop()  # SIGTERM: the last spend batch is written
    srv = start_server(tmp_path / "restart", ["--gateway-config", str(cfg)])
    info = admin(srv, f"/key/info?key={key}", method="GET")["info"]
    assert abs(info["spend"] - 3 * ANSWER_COST) < 1e-9, info
    assert len(admin(srv, f"/spend/logs?api_key={key}", method="GET")) == 3
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
    chat(client)


@pytest.mark.skipif(not (DATABASE_URL and REDIS_URL),
                    reason="needs COMPAT_DATABASE_URL and COMPAT_REDIS_URL (the scale-out run)")
def test_rpm_across_two_replicas_sharing_redis(start_server, upstream, tmp_path):
    cfg = config(tmp_path, upstream)
    a = start_server(tmp_path / "shared", ["--gateway-config", str(cfg)])
    b = start_server(tmp_path / "shared", ["--gateway-config", str(cfg)])
    key = admin(a, "/key/generate", {"rpm_limit": 10})["key"]
    clients = [openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0) for s in (a, b)]

    def one(i):
        try:
            chat(clients[i % 2])
            return 200
        except openai.RateLimitError:
            return 429

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(30)))
    assert statuses.count(200) == 10, statuses


POSTGRES_SH = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "postgres.sh")


@pytest.mark.skipif(not DATABASE_URL, reason="needs COMPAT_DATABASE_URL (PostgreSQL)")
def test_postgres_dying_mid_load_fails_no_request_and_loses_no_spend(start_server, upstream,
                                                                    tmp_path):
    def pg(action):
        subprocess.run(["bash", POSTGRES_SH, action], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    srv = start_server(tmp_path / "pgdown",
                       ["--gateway-config", str(config(tmp_path, upstream))])
    key = admin(srv, "/key/generate", {"max_budget": 100.0})["key"]
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
    chat(client)  # the key is in memory from here on
    results: list[str] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                chat(client)
                results.append("ok")
            except openai.APIError as e:
                results.append(f"{getattr(e, 'status_code', '?')}: {e}")

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        pg("kill")
        during = len(results)
        time.sleep(2.0)
        served_while_down = len(results) - during
    finally:
        pg("start")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    failed = [r for r in results if r != "ok"]
    assert not failed, failed[:5]
    assert served_while_down > 10, "requests stalled while PostgreSQL was down"
    # The queued spend reaches the database once it is back.
    deadline = time.monotonic() + 20
    while True:
        r = requests.get(srv.url + f"/spend/logs?api_key={key}&limit=10000",
                         headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)
        if r.status_code == 200 and len(r.json()) == len(results) + 1:
            break
        assert time.monotonic() < deadline, f"{r.status_code}: {len(r.json()) if r.ok else r.text}"
        time.sleep(0.5)
    info = admin(srv, f"/key/info?key={key}", method="GET")["info"]
    assert abs(info["spend"] - (len(results) + 1) * ANSWER_COST) < 1e-6, info
