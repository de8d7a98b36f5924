"""The LLM gateway with the real `openai` SDK (sync, async and streaming) in front of a fake
OpenAI-compatible upstream that speaks the real wire format (JSON, SSE chunks with a usage
chunk, error bodies), configured with a LiteLLM proxy config.yaml."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")


class Upstream(BaseHTTPRequestHandler):
    """A fake OpenAI server: echoes the last user message; model `down` answers 503."""

    seen: list[dict] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Upstream.seen.append({"path": self.path, "body": body,
                              "auth": self.headers.get("Authorization")})
        if body["model"] == "down":
            return self._send(503, {"error": {"message": "overloaded", "type": "server_error",
                                              "param": None, "code": None}})
        if self.path.endswith("/embeddings"):
            return self._send(200, {"object": "list", "model": body["model"], "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}})
        text = "echo: " + body["messages"][-1]["content"]
        if body.get("stream"):
            chunks = [{"role": "assistant", "content": "echo: "}, {"content": body["messages"][-1]["content"]}]
            out = b""
            for i, delta in enumerate(chunks):
                out += b"data: " + json.dumps({
                    "id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode() + b"\n\n"
            out += b"data: " + json.dumps({
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode() + b"\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                out += b"data: " + json.dumps({
                    "id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                    "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2,
                                             "total_tokens": 6}}).encode() + b"\n\n"
            out += b"data: [DONE]\n\n"
            return self._send(200, out, "text/event-stream")
        return self._send(200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}})


@pytest.fixture(scope="module")
def upstream():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def gateway(start_server, upstream, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: chat
    litellm_params: {{model: openai/down, api_base: "{upstream}/v1", api_key: sk-up, weight: 100}}
  - model_name: chat
    litellm_params: {{model: hosted_vllm/echo-1, api_base: "{upstream}/v1", weight: 1}}
  - model_name: embed
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "{upstream}/v1"}}
    model_info: {{mode: embedding}}
router_settings:
  num_retries: 2
general_settings:
  master_key: sk-gateway
""")
    srv = start_server(extra_args=["--gateway-config", str(cfg)])
    return srv


def test_openai_sdk_chat_models_and_embeddings(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gateway", max_retries=0)
    models = sorted(m.id for m in client.models.list())
    assert models == ["chat", "embed"]
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}])
    done = raw.parse()
    assert done.choices[0].message.content == "echo: hello"
    assert done.usage.total_tokens == 6
    # The heavy deployment answered 503; the other one took the request.
    assert raw.headers["x-loopml-deployment"] == "chat-1"
    assert float(raw.headers["x-loopml-overhead-ms"]) >= 0
    emb = client.embeddings.create(model="embed", input="hi")
    assert emb.data[0].embedding == [0.1, 0.2, 0.3]


def test_openai_sdk_streams_and_async(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gateway", max_retries=0)
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "stream me"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    # Usage was asked for upstream even though the client did not ask (the gateway bills it),
    # and kept from the client, as OpenAI does when it is not asked for.
    assert Upstream.seen[-1]["body"]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)
    chunks = list(client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.total_tokens == 6 and chunks[-1].choices == []

    async def go():
        a = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-gateway", max_retries=0)
        answers = await asyncio.gather(*[
            a.chat.completions.create(model="chat", messages=[{"role": "user", "content": str(i)}])
            for i in range(8)])
        return [r.choices[0].message.content for r in answers]

    assert asyncio.run(go()) == [f"echo: {i}" for i in range(8)]


def test_openai_sdk_sees_openai_errors(gateway):
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gateway", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    assert "chat, embed" in str(e.value)
    # The deployment's own key went upstream, not the gateway's.
    assert any(s["auth"] == "Bearer sk-up" for s in Upstream.seen)


def test_anthropic_sdk_through_v1_messages(gateway):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-gateway", max_retries=0)
    msg = client.messages.create(
        model="chat", max_tokens=64, system="be brief",
        messages=[{"role": "user", "content": "hello"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 2)
    # The system prompt reached the upstream as OpenAI's system message.
    assert Upstream.seen[-1]["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    with client.messages.stream(model="chat", max_tokens=64,
                                messages=[{"role": "user", "content": "flow"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: flow"
    assert final.usage.output_tokens == 2 and final.stop_reason == "end_turn"
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_bad_requests_get_each_protocols_error_shape(gateway):
    import requests

    h = {"Authorization": "Bearer sk-gateway", "Content-Type": "application/json"}
    r = requests.post(gateway.url + "/v1/chat/completions", data="{nope", headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    r = requests.post(gateway.url + "/v1/chat/completions", json={"messages": []}, headers=h, timeout=10)
    assert r.status_code == 400 and "model" in r.json()["error"]["message"], r.text
    r = requests.post(gateway.url + "/v1/messages", json={"model": "chat", "messages": []},
                      headers=h, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and "max_tokens" in r.json()["error"]["message"], r.text
    r = requests.post(gateway.url + "/v1/messages", data="{nope", headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
