"""MLflow tracing with the real client against loopml: `@mlflow.trace` and `mlflow.start_span`
through OTLP `/v1/traces` and StartTraceV3, get_trace with typed span attributes, search by
tag / status / span name / run / metadata, tags, update_current_trace (session, user),
deletion; autologged OpenAI calls with token usage; plain OpenTelemetry exports (the real
`opentelemetry-proto` protobuf, and OTLP/JSON); assessments (feedback, expectations, update,
override, delete, search by feedback)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import AssessmentSource  # noqa: E402


@pytest.fixture
def traced(server, experiment):
    mlflow.set_tracking_uri(server.url)
    return experiment


def flush():
    # Trace export is asynchronous by default: wait for it.
    mlflow.flush_trace_async_logging()


def test_traced_functions_are_stored_once_and_read_back_typed(traced, server):
    @mlflow.trace(span_type="RETRIEVER")
    def retrieve(q):
        return [{"doc": "d1", "score": 0.9}]

    @mlflow.trace(name="pipeline")
    def answer(question: str, k: int = 2):
        docs = retrieve(question)
        with mlflow.start_span(name="llm", span_type="LLM") as s:
            s.set_inputs({"prompt": question, "k": k})
            s.set_outputs({"text": "42"})
            s.set_attribute("temperature", 0.2)
        mlflow.update_current_trace(tags={"env": "test"},
                                    metadata={"mlflow.trace.session": "sess-1",
                                              "mlflow.trace.user": "alice"})
        return {"answer": "42", "docs": docs}

    answer("what is up")
    flush()
    trace_id = mlflow.get_last_active_trace_id()
    t = mlflow.get_trace(trace_id)
    assert t is not None
    assert t.info.state == "OK"
    assert t.info.tags["env"] == "test"
    assert t.info.tags["mlflow.traceName"] == "pipeline"
    assert t.info.trace_metadata["mlflow.trace.session"] == "sess-1"
    names = sorted(s.name for s in t.data.spans)
    assert names == ["llm", "pipeline", "retrieve"]
    root = next(s for s in t.data.spans if s.name == "pipeline")
    assert root.inputs == {"question": "what is up", "k": 2}
    assert root.outputs["answer"] == "42"
    llm = next(s for s in t.data.spans if s.name == "llm")
    assert llm.span_type == "LLM"
    assert llm.inputs == {"prompt": "what is up", "k": 2}
    assert llm.get_attribute("temperature") == 0.2
    assert llm.parent_id == root.span_id
    # Stored once: the client never uploaded traces.json as a second copy.
    assert t.info.tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"
    art = requests.get(server.url + "/api/2.0/mlflow-artifacts/artifacts/"
                       f"{traced}/traces/{trace_id}/artifacts/traces.json", timeout=10)
    assert art.status_code == 404

    found = mlflow.search_traces(filter_string="tags.env = 'test'", return_type="list")
    assert [x.info.trace_id for x in found] == [trace_id]
    assert mlflow.search_traces(filter_string="span.name = 'llm'", return_type="list")
    assert mlflow.search_traces(filter_string="span.type = 'RETRIEVER'", return_type="list")
    assert mlflow.search_traces(
        filter_string="request_metadata.`mlflow.trace.user` = 'alice'", return_type="list")
    assert not mlflow.search_traces(filter_string="status = 'ERROR'", return_type="list")
    df = mlflow.search_traces()
    assert len(df) == 1 and df["trace_id"][0] == trace_id


def test_search_pages_newest_first_and_tags_and_deletion(traced):
    client = MlflowClient()

    @mlflow.trace
    def step(i):
        return i * 2

    for i in range(7):
        step(i)
    flush()
    ids = [t.info.trace_id for t in mlflow.search_traces(return_type="list")]
    assert len(ids) == 7
    times = [t.info.request_time for t in mlflow.search_traces(return_type="list")]
    assert times == sorted(times, reverse=True)
    page = client.search_traces(locations=[traced], max_results=3)
    assert len(page) == 3 and page.token
    rest = client.search_traces(locations=[traced], max_results=10, page_token=page.token)
    assert len(rest) == 4
    assert {t.info.trace_id for t in page} | {t.info.trace_id for t in rest} == set(ids)

    mlflow.set_trace_tag(ids[0], "reviewed", "yes")
    assert mlflow.get_trace(ids[0]).info.tags["reviewed"] == "yes"
    mlflow.delete_trace_tag(ids[0], "reviewed")
    assert "reviewed" not in mlflow.get_trace(ids[0]).info.tags
    n = client.delete_traces(experiment_id=traced, trace_ids=ids[:2])
    assert n == 2
    assert len(mlflow.search_traces(return_type="list")) == 5
    n = client.delete_traces(experiment_id=traced, max_timestamp_millis=int(time.time() * 1000),
                             max_traces=2)
    assert n == 2
    assert len(mlflow.search_traces(return_type="list")) == 3


def test_traces_in_a_run_are_found_by_run(traced):
    @mlflow.trace
    def f(x):
        return x

    with mlflow.start_run() as run:
        f(1)
    f(2)
    flush()
    in_run = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    assert len(in_run) == 1
    assert in_run[0].info.trace_metadata["mlflow.sourceRun"] == run.info.run_id


def test_errors_are_traced_as_errors(traced):
    @mlflow.trace
    def boom():
        raise ValueError("nope")

    with pytest.raises(ValueError):
        boom()
    flush()
    t = mlflow.search_traces(filter_string="status = 'ERROR'", return_type="list")
    assert len(t) == 1
    span = t[0].data.spans[0]
    assert span.status.status_code.value == "ERROR"
    assert any(e.name == "exception" for e in span.events)


class FakeOpenAI(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                           "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "hello"}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": 3,
                                     "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_autologged_openai_calls_carry_token_usage(traced):
    openai = pytest.importorskip("openai")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        mlflow.openai.autolog()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                               api_key="sk-x", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hi"}])
        flush()
    finally:
        mlflow.openai.autolog(disable=True)
        srv.shutdown()
    t = mlflow.search_traces(return_type="list")[0]
    usage = t.info.token_usage
    assert usage["input_tokens"] == 12 and usage["output_tokens"] == 3
    span = t.data.spans[0]
    assert span.span_type == "CHAT_MODEL"
    assert span.outputs["choices"][0]["message"]["content"] == "hello"


def _otlp_protobuf(trace_id: bytes, name: str) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    now = time.time_ns()
    root = Span(trace_id=trace_id, span_id=b"\x01" * 8, name=name, start_time_unix_nano=now,
                end_time_unix_nano=now + 5_000_000, status=Status(code=1),
                attributes=[KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")),
                            KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=40)),
                            KeyValue(key="gen_ai.usage.output_tokens", value=AnyValue(int_value=10))])
    child = Span(trace_id=trace_id, span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8, name="child",
                 start_time_unix_nano=now + 1, end_time_unix_nano=now + 2)
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name",
                                               value=AnyValue(string_value="go-service"))]),
        scope_spans=[ScopeSpans(spans=[root, child])])])
    return req.SerializeToString()


def test_plain_opentelemetry_exports_become_searchable_traces(traced, server):
    import gzip

    tid = uuid.uuid4().bytes
    r = requests.post(server.url + "/v1/traces", data=gzip.compress(_otlp_protobuf(tid, "otel-root")),
                      headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                               "x-mlflow-experiment-id": traced}, timeout=10)
    assert r.status_code == 200, r.text
    t = mlflow.get_trace("tr-" + tid.hex())
    assert t.info.tags["service.name"] == "go-service"
    assert t.info.tags["mlflow.traceName"] == "otel-root"
    assert t.info.token_usage["input_tokens"] == 40
    assert len(t.data.spans) == 2
    # OTLP/JSON, hex ids.
    jid = uuid.uuid4().hex
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": jid, "spanId": "00000000000000aa", "name": "json-root",
        "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns() + 1000),
        "attributes": [{"key": "user.tier", "value": {"stringValue": "gold"}}]}]}]}]}
    r = requests.post(server.url + "/v1/traces", json=body,
                      headers={"x-mlflow-experiment-id": traced}, timeout=10)
    assert r.status_code == 200, r.text
    found = mlflow.search_traces(filter_string="span.attributes.user.tier = 'gold'",
                                 return_type="list")
    assert [x.info.trace_id for x in found] == ["tr-" + jid]
    # Bad input: a clear error, nothing stored.
    r = requests.post(server.url + "/v1/traces", data=b"\xff\x00garbage",
                      headers={"Content-Type": "application/x-protobuf",
                               "x-mlflow-experiment-id": traced}, timeout=10)
    assert r.status_code == 400 and "detail" in r.json()
    r = requests.post(server.url + "/v1/traces", json=body, timeout=10)
    assert r.status_code == 422


def test_assessments_feedback_expectations_override_and_search(traced):
    @mlflow.trace
    def qa(q):
        return "A:" + q

    qa("hi")
    qa("bye")
    flush()
    first, second = [t.info.trace_id for t in mlflow.search_traces(return_type="list")]
    fb = mlflow.log_feedback(trace_id=first, name="helpful", value=True, rationale="good",
                             source=AssessmentSource(source_type="HUMAN", source_id="alice@x.com"))
    assert fb.assessment_id.startswith("a-")
    mlflow.log_feedback(trace_id=second, name="helpful", value=False)
    mlflow.log_expectation(trace_id=first, name="expected", value="A:hi")
    mlflow.log_expectation(trace_id=first, name="facts", value=["f1", "f2"])
    got = mlflow.get_assessment(first, fb.assessment_id)
    assert got.value is True and got.rationale == "good"
    t = mlflow.get_trace(first)
    assert {a.name for a in t.info.assessments} == {"helpful", "expected", "facts"}
    facts = next(a for a in t.info.assessments if a.name == "facts")
    assert facts.value == ["f1", "f2"]

    hits = mlflow.search_traces(filter_string="feedback.helpful = 'true'", return_type="list")
    assert [h.info.trace_id for h in hits] == [first]
    new = mlflow.override_feedback(trace_id=first, assessment_id=fb.assessment_id, value=False,
                                   rationale="on second thought")
    old = mlflow.get_assessment(first, fb.assessment_id)
    assert old.valid is False
    assert mlflow.get_assessment(first, new.assessment_id).value is False
    assert not mlflow.search_traces(filter_string="feedback.helpful = 'true'", return_type="list")

    from mlflow.entities import Feedback

    mlflow.update_assessment(trace_id=first, assessment_id=new.assessment_id,
                             assessment=Feedback(name="helpful", value=True, rationale="fixed"))
    assert mlflow.get_assessment(first, new.assessment_id).rationale == "fixed"
    mlflow.delete_assessment(trace_id=first, assessment_id=new.assessment_id)
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.get_assessment(first, new.assessment_id)
