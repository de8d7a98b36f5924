"""The gateway's provider adapters, driven by the real `openai` and `anthropic` SDKs, in front
of local fakes that speak each provider's own wire format: Anthropic Messages (SSE events,
tool use, cache usage, `overloaded_error`), Gemini `generateContent` (SSE without an end
marker, function calls, `batchEmbedContents`, `RESOURCE_EXHAUSTED`) and Bedrock Converse
(SigV4 checked with botocore's own signer, the binary `vnd.amazon.eventstream` framing with its
CRCs, `ValidationException`)."""

from __future__ import annotations

import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

AWS_KEY, AWS_SECRET, AWS_REGION = "AKIDLOOPMLTEST", "loopml/secret+key", "eu-west-3"


def sse(events):
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        out += b"data: " + json.dumps(data).encode() + b"\n\n"
    return out


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One vnd.amazon.eventstream message (string headers), CRCs included."""
    h = b""
    for k, v in headers.items():
        h += bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
    total = 16 + len(h) + len(payload)
    prelude = struct.pack(">II", total, len(h))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + h + payload
    return body + struct.pack(">I", zlib.crc32(body))


def sigv4_ok(handler, body: bytes) -> bool:
    """Recomputes the request's signature with botocore's SigV4 signer."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = handler.headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {k: handler.headers[k] for k in signed}
    req = AWSRequest(method="POST", url=f"http://{handler.headers['host']}{handler.path}",
                     data=body, headers=headers)
    signer = SigV4Auth(Credentials(AWS_KEY, AWS_SECRET), "bedrock", AWS_REGION)
    req.context["timestamp"] = handler.headers["x-amz-date"]
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    return auth.endswith("Signature=" + expected)


class Providers(BaseHTTPRequestHandler):
    """Anthropic at /anthropic, Gemini at /gemini, Bedrock at /bedrock."""

    seen: list[dict] = []

    def log_message(self, *args):
        pass

    def _send(self, status, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.loads(raw)
        Providers.seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.path.startswith("/anthropic/"):
            return self.anthropic(body)
        if self.path.startswith("/gemini/"):
            return self.gemini(body)
        if self.path.startswith("/bedrock/"):
            return self.bedrock(body, raw)
        self._send(404, {"error": "no such fake"})

    # -- Anthropic Messages ---------------------------------------------------------------
    def anthropic(self, body):
        if self.headers.get("x-api-key") != "sk-ant-test" or not self.headers.get("anthropic-version"):
            return self._send(401, {"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}})
        if body["model"] == "claude-overloaded":
            return self._send(529, {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
        assert "max_tokens" in body, "anthropic requires max_tokens"
        usage = {"input_tokens": 11, "output_tokens": 6, "cache_read_input_tokens": 100,
                 "cache_creation_input_tokens": 0}
        tools = body.get("tools") or []
        if tools and not any(m["role"] == "user" and any(b.get("type") == "tool_result"
                                                          for b in m["content"])
                             for m in body["messages"]):
            block = {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"],
                     "input": {"city": "Oslo"}}
            stop = "tool_use"
        else:
            last = body["messages"][-1]["content"][-1]
            text = last.get("text") or last.get("content") or ""
            block = {"type": "text", "text": "claude: " + text}
            stop = "end_turn"
        if not body.get("stream"):
            return self._send(200, {"id": "msg_1", "type": "message", "role": "assistant",
                                    "model": body["model"], "content": [block],
                                    "stop_reason": stop, "usage": usage})
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
            "content": [], "usage": {**usage, "output_tokens": 1}}}),
            ("ping", {"type": "ping"})]
        if block["type"] == "text":
            events += [("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})]
            for piece in (block["text"][:5], block["text"][5:]):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": piece}}))
        else:
            events += [("content_block_start", {"type": "content_block_start", "index": 0,
                        "content_block": {**block, "input": {}}}),
                       ("content_block_delta", {"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
                       ("content_block_delta", {"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'}})]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": 6}}),
                   ("message_stop", {"type": "message_stop"})]
        self._send(200, sse(events), "text/event-stream")

    # -- Gemini ---------------------------------------------------------------------------
    def gemini(self, body):
        if self.headers.get("x-goog-api-key") != "gm-test":
            return self._send(400, {"error": {"code": 400, "message": "API key not valid.",
                                              "status": "INVALID_ARGUMENT"}})
        path = self.path.split("?")[0]
        model = path.split("/models/")[1].split(":")[0]
        if model == "gemini-quota":
            return self._send(429, {"error": {"code": 429, "message": "Resource has been exhausted",
                                              "status": "RESOURCE_EXHAUSTED"}})
        if path.endswith(":batchEmbedContents"):
            return self._send(200, {"embeddings": [
                {"values": [0.5, float(len(r["content"]["parts"][0]["text"]))]}
                for r in body["requests"]]})
        usage = {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}
        decls = (body.get("tools") or [{}])[0].get("functionDeclarations") or []
        answered = any("functionResponse" in p for c in body["contents"] for p in c["parts"])
        if decls and not answered:
            parts = [{"functionCall": {"name": decls[0]["name"], "args": {"city": "Oslo"}}}]
        else:
            text = body["contents"][-1]["parts"][-1].get("text") or json.dumps(
                body["contents"][-1]["parts"][-1].get("functionResponse", {}).get("response"))
            parts = [{"text": "gemini: " + text}]
        if path.endswith(":generateContent"):
            return self._send(200, {"candidates": [{"content": {"role": "model", "parts": parts},
                                                    "finishReason": "STOP", "index": 0}],
                                    "usageMetadata": usage, "modelVersion": model,
                                    "responseId": "resp-1"})
        assert path.endswith(":streamGenerateContent") and "alt=sse" in self.path
        if "text" in parts[0]:
            t = parts[0]["text"]
            chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": t[:4]}]}}]},
                      {"candidates": [{"content": {"role": "model", "parts": [{"text": t[4:]}]},
                                       "finishReason": "STOP"}], "usageMetadata": usage}]
        else:
            chunks = [{"candidates": [{"content": {"role": "model", "parts": parts},
                                       "finishReason": "STOP"}], "usageMetadata": usage}]
        # Gemini's SSE: CRLF-separated, no [DONE].
        out = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
        self._send(200, out, "text/event-stream")

    # -- Bedrock Converse -----------------------------------------------------------------
    def bedrock(self, body, raw):
        if not sigv4_ok(self, raw):
            return self._send(403, {"message": "The request signature we calculated does not "
                                               "match the signature you provided."},
                              headers=[("x-amzn-ErrorType", "InvalidSignatureException")])
        from urllib.parse import unquote

        model = unquote(self.path.split("/model/")[1].split("/")[0])
        if model == "bad-model":
            return self._send(400, {"message": "The provided model identifier is invalid."},
                              headers=[("x-amzn-ErrorType", "ValidationException")])
        assert model == "anthropic.claude-3-5-haiku-20241022-v1:0", model
        usage = {"inputTokens": 8, "outputTokens": 5, "totalTokens": 13}
        tools = (body.get("toolConfig") or {}).get("tools") or []
        answered = any("toolResult" in c for m in body["messages"] for c in m["content"])
        if tools and not answered:
            block = {"toolUse": {"toolUseId": "tooluse_1", "name": tools[0]["toolSpec"]["name"],
                                 "input": {"city": "Oslo"}}}
            stop = "tool_use"
        else:
            last = body["messages"][-1]["content"][-1]
            text = last.get("text") or json.dumps(last.get("toolResult", {}).get("content"))
            block = {"text": "bedrock: " + text}
            stop = "end_turn"
        if self.path.endswith("/converse"):
            return self._send(200, {"output": {"message": {"role": "assistant", "content": [block]}},
                                    "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 5}})
        assert self.path.endswith("/converse-stream")

        def ev(kind, payload):
            return frame({":event-type": kind, ":content-type": "application/json",
                          ":message-type": "event"}, json.dumps(payload).encode())

        out = ev("messageStart", {"role": "assistant", "p": "abc"})
        if "text" in block:
            t = block["text"]
            out += ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t[:5]}})
            out += ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t[5:]}})
        else:
            out += ev("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {
                "toolUseId": "tooluse_1", "name": block["toolUse"]["name"]}}})
            out += ev("contentBlockDelta", {"contentBlockIndex": 0,
                                            "delta": {"toolUse": {"input": '{"city": "Oslo"}'}}})
        out += ev("contentBlockStop", {"contentBlockIndex": 0})
        out += ev("messageStop", {"stopReason": stop})
        out += ev("metadata", {"usage": usage, "metrics": {"latencyMs": 5}})
        self._send(200, out, "application/vnd.amazon.eventstream")


@pytest.fixture(scope="module")
def fakes():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Providers)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    from loopml_server import LoopmlServer

    d = tmp_path_factory.mktemp("providers")
    cfg = d / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: claude
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "{fakes}/anthropic", api_key: sk-ant-test}}
  - model_name: claude-busy
    litellm_params: {{model: anthropic/claude-overloaded, api_base: "{fakes}/anthropic", api_key: sk-ant-test}}
  - model_name: gemini
    litellm_params: {{model: gemini/gemini-2.5-flash, api_base: "{fakes}/gemini", api_key: gm-test}}
  - model_name: gemini-quota
    litellm_params: {{model: gemini/gemini-quota, api_base: "{fakes}/gemini", api_key: gm-test}}
  - model_name: gemini-embed
    litellm_params: {{model: gemini/text-embedding-004, api_base: "{fakes}/gemini", api_key: gm-test}}
    model_info: {{mode: embedding}}
  - model_name: bedrock
    litellm_params:
      model: bedrock/converse/anthropic.claude-3-5-haiku-20241022-v1:0
      aws_access_key_id: {AWS_KEY}
      aws_secret_access_key: "{AWS_SECRET}"
      aws_region_name: {AWS_REGION}
      aws_bedrock_runtime_endpoint: "{fakes}/bedrock"
  - model_name: bedrock-bad
    litellm_params:
      model: bedrock/bad-model
      aws_access_key_id: {AWS_KEY}
      aws_secret_access_key: "{AWS_SECRET}"
      aws_region_name: {AWS_REGION}
      aws_bedrock_runtime_endpoint: "{fakes}/bedrock"
router_settings: {{num_retries: 0}}
general_settings: {{master_key: sk-gw}}
""")
    srv = LoopmlServer(d / "data", ["--gateway-config", str(cfg)])
    yield srv
    srv.stop()


TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}}]


@pytest.mark.parametrize("model", ["claude", "gemini", "bedrock"])
def test_chat_streams_and_tool_calls_through_each_provider(gateway, model):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gw", max_retries=0)
    r = client.chat.completions.create(model=model, max_tokens=64, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    assert r.choices[0].message.content.endswith(": hello"), r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0

    chunks = list(client.chat.completions.create(
        model=model, max_tokens=64, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "streamed"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith(": streamed"), text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    # A tool call, answered, then the final reply: each provider's own tool format both ways.
    msgs = [{"role": "user", "content": "weather in Oslo?"}]
    r = client.chat.completions.create(model=model, max_tokens=64, messages=msgs, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    msgs += [r.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"temp": -3}'}]
    r = client.chat.completions.create(model=model, max_tokens=64, messages=msgs, tools=TOOLS)
    assert "-3" in r.choices[0].message.content, r

    # The same tool call streamed.
    chunks = list(client.chat.completions.create(
        model=model, max_tokens=64, stream=True, tools=TOOLS,
        messages=[{"role": "user", "content": "weather in Oslo?"}]))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in (c.choices[0].delta.tool_calls or []))
    assert json.loads(args) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_anthropic_cache_usage_reaches_the_openai_answer(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gw", max_retries=0)
    r = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert r.usage.prompt_tokens == 111  # 11 fresh + 100 read from the cache
    assert r.usage.prompt_tokens_details.cached_tokens == 100
    sent = [s for s in Providers.seen if s["path"] == "/anthropic/v1/messages"][-1]
    assert sent["body"]["max_tokens"] == 4096, "a default output limit is always sent"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"


def test_provider_errors_come_back_in_openais_shape(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gw", max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gemini-quota", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["message"] == "Resource has been exhausted"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="bedrock-bad", messages=[{"role": "user", "content": "x"}])
    assert "model identifier is invalid" in e.value.body["message"]
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="claude-busy", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 529 and e.value.body["message"] == "Overloaded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude", n=2, messages=[{"role": "user", "content": "x"}])
    assert "one choice" in e.value.body["message"]


def test_gemini_embeddings(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gw", max_retries=0)
    r = client.embeddings.create(model="gemini-embed", input=["ab", "abcd"])
    assert [d.embedding for d in r.data] == [[0.5, 2.0], [0.5, 4.0]]
    assert r.usage.prompt_tokens > 0


@pytest.mark.parametrize("model", ["gemini", "bedrock"])
def test_anthropic_sdk_reaches_gemini_and_bedrock(gateway, model):
    """Inbound Anthropic Messages, outbound another provider: translated both ways."""
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-gw", max_retries=0)
    m = client.messages.create(model=model, max_tokens=64,
                               messages=[{"role": "user", "content": "hi there"}])
    assert m.content[0].text.endswith(": hi there")
    assert m.usage.input_tokens > 0
    with client.messages.stream(model=model, max_tokens=64,
                                messages=[{"role": "user", "content": "streamed"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.endswith(": streamed")
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["claude", "gemini", "bedrock"])
def test_anthropic_sdk_streams_tool_use(gateway, model):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-gw", max_retries=0)
    tools = [{"name": "weather", "description": "Weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    with client.messages.stream(model=model, max_tokens=64, tools=tools,
                                messages=[{"role": "user", "content": "weather in Oslo?"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    use = [b for b in final.content if b.type == "tool_use"][0]
    assert use.name == "weather" and use.input == {"city": "Oslo"}
    assert final.usage.output_tokens > 0
