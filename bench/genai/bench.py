#!/usr/bin/env python3
"""Driver of bench/genai: builds the requests MLflow 3.17.2's client sends (OTLP protobuf span
exports, StartTraceV3, trace and prompt reads), hands them to the Rust load generator
(loadgen/, `genload`) for timing, checks every answer, and times the real client where a row
says so. run.sh starts and stops the servers; this file runs the phases against one server:

    bench.py seed-mlflow --db DIR/mlflow.db ...     # before `mlflow server` starts on that file
    bench.py search --server S --url U --pid P ...  # lifetime A: 100k traces, search_traces
    bench.py main   --server S --url U --pid P ...  # lifetime B: ingest, get_trace, prompts,
                                                    # and the real client behind a recording proxy

Each phase prints one JSON object on stdout (run.sh stores it; report.py tabulates). Run with
the venv's python (mlflow 3.17.2, opentelemetry-proto, protobuf, requests).
"""

import argparse
import base64
import datetime
import hashlib
import http.client
import http.server
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GENLOAD = os.environ.get("GENLOAD") or os.path.join(HERE, "loadgen", "target", "release", "genload")

# What MLflow 3.17.2's REST client puts on every request (rest_utils / default request headers).
CLIENT_HEADERS = [("User-Agent", "mlflow-python-client/3.17.2"),
                  ("X-MLflow-Client-Version", "3.17.2")]
OTLP_PATH = "/v1/traces"
TRACES_V3 = "/api/3.0/mlflow/traces"
PROMPT_NAME = "bench-support-prompt"
PROMPT_ALIAS = "prod"
PROMPT_ALIAS_VERSION = 2
SEARCH_FILTER = "tags.env = 'prod'"
PROD_EVERY = 10  # seeded trace i carries env=prod iff i % PROD_EVERY == 0


def log(msg):
    print(f"[genai {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Deterministic content: the same ids, times and text for every server in one run.

def trace_hex(salt, case, i):
    return hashlib.blake2b(f"{salt}/{case}/{i}".encode(), digest_size=16).hexdigest()


def span_hex(tid, k):
    return hashlib.blake2b(f"{tid}/{k}".encode(), digest_size=8).hexdigest()


WORDS = ("the of and to in is for on that with as are by this be from at or an it rate loan "
         "model account customer policy refund invoice shipping order payment balance credit "
         "support agent question answer document retrieval context source summary step tool "
         "result value error retry budget latency token prompt response user system").split()


def text(rng, n_chars):
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def rfc3339(ns):
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.timezone.utc)
    ms = (ns // 1_000_000) % 1000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def duration(ns):
    # protobuf's JSON for google.protobuf.Duration: 0, 3, 6 or 9 fractional digits
    s, rem = divmod(ns, 1_000_000_000)
    if rem == 0:
        return f"{s}s"
    if rem % 1_000_000 == 0:
        return f"{s}.{rem // 1_000_000:03d}s"
    return f"{s}.{rem:09d}s"


# ---------------------------------------------------------------------------------------------
# OTLP protobuf, as mlflow.store.tracking.rest_store.RestStore.log_spans builds it:
# one ResourceSpans (the tracer's resource), one ScopeSpans without a scope, every attribute the
# decoded value of MLflow's JSON-serialised span attribute, converted by
# mlflow.tracing.utils.otlp._set_otel_proto_anyvalue (dicts become kvlist_value, lists
# array_value, str string_value, …).

def set_any(pb, value):
    """Mirror of mlflow.tracing.utils.otlp._set_otel_proto_anyvalue (3.17.2)."""
    from opentelemetry.proto.common.v1.common_pb2 import ArrayValue, KeyValueList
    if value is None:
        pass
    elif isinstance(value, bool):
        pb.bool_value = value
    elif isinstance(value, str):
        pb.string_value = value
    elif isinstance(value, int):
        pb.int_value = value
    elif isinstance(value, float):
        pb.double_value = value
    elif isinstance(value, (list, tuple)):
        arr = ArrayValue()
        for item in value:
            set_any(arr.values.add(), item)
        pb.array_value.CopyFrom(arr)
    elif isinstance(value, dict):
        kv = KeyValueList()
        for k, v in value.items():
            e = kv.values.add()
            e.key = str(k)
            set_any(e.value, v)
        pb.kvlist_value.CopyFrom(kv)
    else:
        pb.string_value = str(value)


# The resource MLflow's tracer provider gives its spans (tracing/provider.py, no OTEL_* env);
# checked against a real export in client_check.
RESOURCE = {"telemetry.sdk.language": "python", "telemetry.sdk.name": "mlflow",
            "telemetry.sdk.version": "3.17.2"}


def otlp_body(spans):
    """spans: dicts with tid, sid, parent (hex or None), name, start, end, attrs, events."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Status
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in RESOURCE.items():
        a = rs.resource.attributes.add()
        a.key = k
        set_any(a.value, v)
    ss = rs.scope_spans.add()
    for s in spans:
        p = ss.spans.add()
        p.trace_id = bytes.fromhex(s["tid"])
        p.span_id = bytes.fromhex(s["sid"])
        p.name = s["name"]
        p.start_time_unix_nano = s["start"]
        p.end_time_unix_nano = s["end"]
        if s["parent"]:
            p.parent_span_id = bytes.fromhex(s["parent"])
        p.status.code = Status.STATUS_CODE_OK
        for k, v in s["attrs"].items():
            a = p.attributes.add()
            a.key = k
            set_any(a.value, v)
        for ev in s.get("events", ()):
            e = p.events.add()
            e.name = ev["name"]
            e.time_unix_nano = ev["time"]
            for k, v in ev["attrs"].items():
                a = e.attributes.add()
                a.key = k
                set_any(a.value, v)
    return req.SerializeToString()


def span(tid, k, parent, name, start, end, span_type, inputs, outputs, extra=None, events=()):
    attrs = {"mlflow.traceRequestId": "tr-" + tid, "mlflow.spanType": span_type,
             "mlflow.spanFunctionName": name, "mlflow.spanInputs": inputs,
             "mlflow.spanOutputs": outputs}
    attrs.update(extra or {})
    return {"tid": tid, "sid": span_hex(tid, k), "parent": parent, "name": name,
            "start": start, "end": end, "attrs": attrs, "events": list(events)}


def start_trace_body(exp, tid, start_ns, dur_ns, name, inputs, outputs, tags, size_bytes,
                     token_usage=None):
    """StartTraceV3 as RestStore.start_trace sends it (message_to_json of the Trace proto)."""
    req_preview = json.dumps(inputs)[:1000]
    resp_preview = json.dumps(outputs)[:1000]
    meta = {
        "mlflow.trace_schema.version": "3",
        "mlflow.traceInputs": req_preview[:250],
        "mlflow.traceOutputs": resp_preview[:250],
        "mlflow.user": "bench",
        "mlflow.source.name": "bench_genai.py",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": "",
        "mlflow.trace.sizeBytes": str(size_bytes),
        "mlflow.trace.sizeStats": json.dumps({"total_size_bytes": size_bytes, "num_spans": 1,
                                              "max": size_bytes, "p25": size_bytes,
                                              "p50": size_bytes, "p75": size_bytes}),
    }
    if token_usage:
        meta["mlflow.trace.tokenUsage"] = json.dumps(token_usage)
    info = {
        "trace_id": "tr-" + tid,
        "trace_location": {"type": "MLFLOW_EXPERIMENT",
                           "mlflow_experiment": {"experiment_id": str(exp)}},
        "request_preview": req_preview,
        "response_preview": resp_preview,
        "request_time": rfc3339(start_ns),
        "execution_duration": duration(dur_ns),
        "state": "OK",
        "trace_metadata": meta,
        "tags": dict(tags, **{"mlflow.traceName": name}),
    }
    return json.dumps({"trace": {"trace_info": info, "spans": []}}).encode()


def otlp_headers(exp):
    return [("Content-Type", "application/x-protobuf"), ("x-mlflow-experiment-id", str(exp))] + CLIENT_HEADERS


def json_headers():
    return [("Content-Type", "application/json")] + CLIENT_HEADERS


def trace_unit(exp, tid, spans, name, inputs, outputs, tags, token_usage=None):
    """A trace as the client logs it: the span export, then StartTraceV3."""
    body = otlp_body(spans)
    root = next(s for s in spans if s["parent"] is None)
    st = start_trace_body(exp, tid, root["start"], root["end"] - root["start"], name, inputs,
                          outputs, tags, len(body), token_usage)
    return [
        req("POST", OTLP_PATH, otlp_headers(exp), body, "otlp"),
        # The stored trace info comes back; spans are in the tracking store (else the real
        # client would upload traces.json as well).
        req("POST", TRACES_V3, json_headers(), st, "start_trace", expect="TRACKING_STORE"),
    ]


def req(method, path, headers, body=b"", label="request", expect=None):
    return (method, path, headers, body, label, expect)


def write_units(path, units):
    n = 0
    with open(path, "wb") as f:
        for u, reqs in enumerate(units):
            for method, rpath, headers, body, label, expect in reqs:
                h = {"unit": u, "method": method, "path": rpath, "headers": headers, "label": label}
                if expect:
                    h["expect"] = expect
                hb = json.dumps(h).encode()
                f.write(struct.pack("<I", len(hb)))
                f.write(hb)
                f.write(struct.pack("<I", len(body)))
                f.write(body)
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# The traces

def agent_trace(salt, i, base_ns, n_spans=10):
    """Trace i of the ingestion case: an agent root and n_spans-1 children of realistic size
    (retrieval, chat model calls with token usage, tools, a parser), ~6 KB of span content."""
    rng = random.Random(f"{salt}/ingest/{i}")
    tid = trace_hex(salt, "ingest", i)
    start = base_ns + i * 1_000_000
    question = text(rng, 80)
    root_in = {"question": question, "session": f"s-{i % 97}"}
    root_out = {"answer": text(rng, 300)}
    kinds = [("retrieve_docs", "RETRIEVER"), ("rerank", "RERANKER"), ("plan", "CHAT_MODEL"),
             ("search_tool", "TOOL"), ("draft", "CHAT_MODEL"), ("calculator", "TOOL"),
             ("embed_query", "EMBEDDING"), ("critique", "CHAT_MODEL"), ("parse_output", "PARSER")]
    root_sid = span_hex(tid, 0)
    children = []
    t = start + 200_000
    usage_total = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for k in range(1, n_spans):
        name, typ = kinds[(k - 1) % len(kinds)]
        d = 3_000_000 + rng.randrange(2_000_000)
        extra = {}
        if typ == "CHAT_MODEL":
            inp = {"messages": [{"role": "system", "content": text(rng, 300)},
                                {"role": "user", "content": question}],
                   "model": "gpt-4o-mini", "temperature": 0.2}
            out = {"id": f"chatcmpl-{i}-{k}", "object": "chat.completion",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text(rng, 250)}}],
                   "usage": {"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180}}
            usage = {"input_tokens": 120, "output_tokens": 60, "total_tokens": 180}
            for key in usage_total:
                usage_total[key] += usage[key]
            extra = {"mlflow.chat.tokenUsage": usage, "mlflow.llm.model": "gpt-4o-mini",
                     "mlflow.message.format": "openai"}
        elif typ == "RETRIEVER":
            inp = {"query": question, "k": 3}
            out = [{"page_content": text(rng, 200), "id": f"d{rng.randrange(10**6)}",
                    "metadata": {"doc_uri": f"doc-{rng.randrange(1000)}"}} for _ in range(3)]
        else:
            inp = {"input": text(rng, 120)}
            out = {"output": text(rng, 150)}
        children.append(span(tid, k, root_sid, name, t, t + d, typ, inp, out, extra))
        t += d + 100_000
    root = span(tid, 0, None, "agent", start, t + 200_000, "AGENT", root_in, root_out)
    tags = {"env": "prod" if i % PROD_EVERY == 0 else "dev", "app": "support-bot"}
    # Spans are exported as they end: the children, then the root.
    return tid, children + [root], "agent", root_in, root_out, tags, usage_total


def seed_trace(salt, i, base_ns):
    """Trace i of the search case: one span. Trace i starts at base + i×10 ms, so "newest
    first" is i descending; i % 10 == 0 carries env=prod, the rest env=dev."""
    tid = trace_hex(salt, "seed", i)
    start = base_ns + i * 10_000_000
    inputs = {"question": f"question {i}"}
    outputs = {"answer": f"answer {i}"}
    root = span(tid, 0, None, "chat", start, start + 5_000_000, "CHAIN", inputs, outputs)
    tags = {"env": "prod" if i % PROD_EVERY == 0 else "dev"}
    return tid, [root], "chat", inputs, outputs, tags, None


BIG_CHAIN = 10  # in the 200-span trace, the root holds chains of 10: a CHAIN span and 9 children


def big_trace(salt, base_ns, n_spans=200):
    """One trace of n_spans spans: a root, then chains of a CHAIN span holding up to 9 children
    (chat model calls, retrievers, tools), 2–3 KB of attributes each, an event on every
    retriever. Spans in end order (children, their chain, …, the root), as exported."""
    rng = random.Random(f"{salt}/big")
    tid = trace_hex(salt, "big", 0)
    start = base_ns
    t = start + 1_000_000
    out_spans = []
    root_sid = span_hex(tid, 0)
    root_in = {"conversation": [{"role": "user", "content": text(rng, 400)}]}
    root_out = {"answer": text(rng, 800)}
    k = 1
    while k < n_spans:
        chain_k = k
        chain_sid = span_hex(tid, chain_k)
        chain_start = t
        t += 100_000
        kids = []
        for k in range(chain_k + 1, min(chain_k + BIG_CHAIN, n_spans)):
            d = 2_000_000 + rng.randrange(3_000_000)
            typ = ("CHAT_MODEL", "RETRIEVER", "TOOL")[k % 3]
            extra, events = {}, []
            if typ == "CHAT_MODEL":
                inp = {"messages": [{"role": "system", "content": text(rng, 700)},
                                    {"role": "user", "content": text(rng, 400)}],
                       "model": "gpt-4o-mini", "temperature": 0.1, "max_tokens": 512}
                out = {"id": f"chatcmpl-big-{k}", "object": "chat.completion", "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text(rng, 1000)}}],
                       "usage": {"prompt_tokens": 300, "completion_tokens": 200, "total_tokens": 500}}
                extra = {"mlflow.chat.tokenUsage": {"input_tokens": 300, "output_tokens": 200,
                                                    "total_tokens": 500},
                         "mlflow.llm.model": "gpt-4o-mini", "mlflow.message.format": "openai"}
            elif typ == "RETRIEVER":
                inp = {"query": text(rng, 200), "k": 4}
                out = [{"page_content": text(rng, 500), "id": f"doc-{k}-{j}",
                        "metadata": {"doc_uri": f"s3://kb/doc-{k}-{j}.md", "score": 0.9 - j / 10}}
                       for j in range(4)]
                events = [{"name": "retrieval.cache_miss", "time": t + 1000,
                           "attrs": {"backend": "hnsw", "candidates": 64}}]
            else:
                inp = {"tool": f"tool_{k % 7}", "arguments": {"q": text(rng, 300), "limit": 10}}
                out = {"result": text(rng, 1500), "status": "ok"}
            kids.append(span(tid, k, chain_sid, f"{typ.lower()}_{k}", t, t + d, typ, inp, out,
                             extra, events))
            t += d + 50_000
        t += 100_000
        chain = span(tid, chain_k, root_sid, f"step_{chain_k // BIG_CHAIN}", chain_start, t,
                     "CHAIN", {"step": chain_k // BIG_CHAIN, "plan": text(rng, 600)},
                     {"summary": text(rng, 900)})
        out_spans += kids + [chain]
        k = chain_k + BIG_CHAIN
        t += 50_000
    root = span(tid, 0, None, "conversation", start, t + 1_000_000, "AGENT", root_in, root_out)
    return tid, out_spans + [root], "conversation", root_in, root_out, {"env": "prod"}, None


def unit_of(exp, t):
    tid, spans, name, inputs, outputs, tags, usage = t
    return trace_unit(exp, tid, spans, name, inputs, outputs, tags, usage)


# ---------------------------------------------------------------------------------------------
# Small HTTP helpers (setup and checks, never timed)

class Http:
    def __init__(self, url):
        import requests
        self.url = url.rstrip("/")
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.headers.update(dict(CLIENT_HEADERS))

    def call(self, method, path, **kw):
        r = self.s.request(method, self.url + path, timeout=600, **kw)
        if r.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else {}

    def create_experiment(self, name):
        return self.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})["experiment_id"]

    def search(self, exp, filt=None, max_results=100, page_token=None):
        body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": str(exp)}}],
                "max_results": max_results, "order_by": ["timestamp_ms DESC"]}
        if filt:
            body["filter"] = filt
        if page_token:
            body["page_token"] = page_token
        return self.call("POST", TRACES_V3 + "/search", json=body)

    def count(self, exp, filt=None):
        """Pages through a search (500 a page); returns (count, ids in order)."""
        ids, token = [], None
        while True:
            r = self.search(exp, filt, 500, token)
            ids += [t["trace_id"] for t in r.get("traces", [])]
            token = r.get("next_page_token")
            if not token:
                return len(ids), ids


def genload(*args, timeout=None):
    cmd = [GENLOAD, *map(str, args)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"genload {args[0]} failed (rc={p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def search_unit(exp, filt):
    body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": str(exp)}}],
            "max_results": 100, "order_by": ["timestamp_ms DESC"]}
    if filt:
        body["filter"] = filt
    return [req("POST", TRACES_V3 + "/search", json_headers(), json.dumps(body).encode(), "search")]


def get_trace_unit(trace_id):
    # mlflow.get_trace: the trace info, then (spans in the tracking store) the trace with spans.
    return [req("GET", f"{TRACES_V3}/{trace_id}?trace_id={trace_id}", CLIENT_HEADERS, b"", "trace_info"),
            req("GET", f"{TRACES_V3}/get?trace_id={trace_id}&allow_partial=False", CLIENT_HEADERS,
                b"", "trace_get")]


def load_prompt_unit(name, alias):
    # What mlflow.genai.load_prompt("prompts:/name@alias") sends on the calling thread with its
    # cache off (3.17.2, tracking/client.py): parse_prompt_uri resolves the alias
    # (AbstractStore.get_prompt_version: the registered model, to check the prompt tag, then
    # the alias), then the version is loaded the same way (the registered model again, then the
    # model version). Its experiment-link thread then sends one more registered-models/get.
    # Checked against the real client in client_check.
    rm = f"/api/2.0/mlflow/registered-models/get?name={name}"
    return [req("GET", rm, CLIENT_HEADERS, b"", "registered_model_get"),
            req("GET", f"/api/2.0/mlflow/registered-models/alias?name={name}&alias={alias}",
                CLIENT_HEADERS, b"", "registered_model_alias"),
            req("GET", rm, CLIENT_HEADERS, b"", "registered_model_get"),
            req("GET", f"/api/2.0/mlflow/model-versions/get?name={name}&version={PROMPT_ALIAS_VERSION}",
                CLIENT_HEADERS, b"", "model_version_get")]


def read_saved(d, i):
    with open(os.path.join(d, f"{i}.body"), "rb") as f:
        return json.loads(f.read())


def ts_ms(rfc):
    return datetime.datetime.fromisoformat(rfc.replace("Z", "+00:00")).timestamp() * 1000


# ---------------------------------------------------------------------------------------------
# seed-mlflow: the 100,000 search traces written through MLflow's own SqlAlchemyStore, in
# process, before the server starts on the file (over HTTP it takes hours on 2 cores).

def cmd_seed_mlflow(a):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import sqlalchemy
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from mlflow.entities.span import Span
    from mlflow.entities.trace_info import TraceInfo
    from mlflow.protos.service_pb2 import StartTraceV3
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # No fsync while seeding (per connection; the file keeps SQLite's default journal mode and
    # the server opens it with its own defaults).
    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _no_fsync(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()

    t0 = time.monotonic()
    # "mlflow-artifacts:/" is the artifact root `mlflow server --serve-artifacts` gives the store.
    store = SqlAlchemyStore(f"sqlite:///{os.path.abspath(a.db)}", "mlflow-artifacts:/")
    exp = store.create_experiment("bench-search")
    t1 = time.monotonic()
    batch = []

    def flush():
        # The server's two handlers' store calls: StartTraceV3 (server/handlers.py:
        # TraceInfo.from_proto, then store.start_trace), then the span export
        # (server/otel_api.py: Span.from_otel_proto, then store.log_spans). StartTraceV3 first,
        # as the real client's async export often delivers them (client_check sees it): on
        # this store a start_trace that merges into an existing trace costs 3× a new one.
        for _, st in batch:
            m = ParseDict(json.loads(st), StartTraceV3())
            store.start_trace(TraceInfo.from_proto(m.trace.trace_info))
        spans = []
        for body, _ in batch:
            r = ExportTraceServiceRequest()
            r.ParseFromString(body)
            for rs in r.resource_spans:
                for ss in rs.scope_spans:
                    spans += [Span.from_otel_proto(p, resource=rs.resource) for p in ss.spans]
        store.log_spans(exp, spans)
        batch.clear()

    for i in range(a.traces):
        u = unit_of(exp, seed_trace(a.salt, i, a.base_ns))
        batch.append((u[0][3], u[1][3]))
        if len(batch) >= 500:
            flush()
        if (i + 1) % 10_000 == 0:
            log(f"seed-mlflow: {i + 1}/{a.traces} traces, {time.monotonic() - t1:.0f} s")
    if batch:
        flush()
    seeded = time.monotonic() - t1
    eng = sqlalchemy.create_engine(f"sqlite:///{os.path.abspath(a.db)}")
    with eng.connect() as c:
        n = c.execute(sqlalchemy.text("SELECT count(*) FROM trace_info WHERE experiment_id = :e"),
                      {"e": int(exp)}).scalar()
        prod = c.execute(sqlalchemy.text(
            "SELECT count(*) FROM trace_tags t JOIN trace_info i ON i.request_id = t.request_id "
            "WHERE i.experiment_id = :e AND t.key = 'env' AND t.value = 'prod'"), {"e": int(exp)}).scalar()
    print(json.dumps({"method": "in process through SqlAlchemyStore before the server starts "
                                "(start_trace per trace, log_spans per 500 traces, synchronous=OFF)",
                      "experiment_id": exp, "traces": a.traces, "stored": n, "stored_prod": prod,
                      "seed_s": round(seeded, 1), "store_init_s": round(t1 - t0, 1)}))


# ---------------------------------------------------------------------------------------------
# search: lifetime A

def expected_seed_ids(salt, n, prod):
    idx = [i for i in range(n - 1, -1, -1) if not prod or i % PROD_EVERY == 0][:100]
    return ["tr-" + trace_hex(salt, "seed", i) for i in idx]


def check_search_page(body, salt, n, prod):
    traces = body.get("traces", [])
    problems = []
    exp_ids = expected_seed_ids(salt, n, prod)
    ids = [t["trace_id"] for t in traces]
    if len(traces) != min(100, len(exp_ids)):
        problems.append(f"{len(traces)} traces returned, expected {min(100, len(exp_ids))}")
    if ids != exp_ids[:len(ids)]:
        bad = next((k for k, (x, y) in enumerate(zip(ids, exp_ids)) if x != y), None)
        problems.append(f"ids differ from the expected newest-first list (first at position {bad})")
    times = [ts_ms(t["request_time"]) for t in traces if "request_time" in t]
    if times != sorted(times, reverse=True):
        problems.append("not in timestamp_ms DESC order")
    if prod and any(t.get("tags", {}).get("env") != "prod" for t in traces):
        problems.append("a trace without tag env=prod")
    for key in ("trace_location", "request_time", "state", "tags", "trace_metadata"):
        if traces and key not in traces[0]:
            problems.append(f"trace_info lacks {key}")
    if traces and "mlflow.trace.spansLocation" not in traces[0].get("tags", {}):
        problems.append("trace_info lacks tag mlflow.trace.spansLocation")
    return {"returned": len(traces), "ok": not problems, "problems": problems,
            "next_page_token": bool(body.get("next_page_token")),
            "first_ids": ids[:3]}


def cmd_search(a):
    out = {"server": a.server, "phase": "search", "traces": a.traces}
    http = Http(a.url)
    work = tempfile.mkdtemp(prefix=f"search-{a.server}-", dir=a.work)
    if a.experiment_id:
        exp = a.experiment_id
        out["seed"] = json.loads(a.seed_json) if a.seed_json else {"method": "pre-seeded"}
    else:
        exp = http.create_experiment("bench-search")
        f = os.path.join(work, "seed.bin")
        t = time.monotonic()
        write_units(f, (unit_of(exp, seed_trace(a.salt, i, a.base_ns)) for i in range(a.traces)))
        log(f"{a.server}: seed file written ({time.monotonic() - t:.1f} s); seeding over HTTP, 8 clients")
        r = genload("replay", "--url", a.url, "--file", f, "--clients", 8, "--watch-pid", a.pid)
        os.unlink(f)
        out["seed"] = {"method": "HTTP: /v1/traces + StartTraceV3 per trace, 8 clients (genload)",
                       "seed_s": r["wall_s"], "traces_per_s": r["units_per_s"],
                       "units_ok": r["units_ok"], "errors": r["errors"], "server": r["server"]}
        if r["errors"]["count"]:
            out["seed"]["problem"] = "errors while seeding"
        out["settle"] = genload("settle", "--pid", a.pid, "--max-s", 60)
    out["experiment_id"] = exp
    for case, filt in (("filter", SEARCH_FILTER), ("nofilter", None)):
        f = os.path.join(work, f"{case}.bin")
        write_units(f, [search_unit(exp, filt)])
        save = os.path.join(work, case)
        log(f"{a.server}: search {case}: {a.warmup} warm-up + {a.reps} timed")
        r = genload("seq", "--url", a.url, "--file", f, "--reps", a.reps, "--warmup", a.warmup,
                    "--save-dir", save, "--watch-pid", a.pid)
        r["check"] = check_search_page(read_saved(save, 0), a.salt, a.traces, filt is not None)
        out[case] = r
        log(f"{a.server}: search {case}: p50 {r['unit_latency'].get('median_ms')} ms, check {r['check']}")
    t = time.monotonic()
    n_prod, ids = http.count(exp, SEARCH_FILTER)
    out["count_prod"] = {"count": n_prod, "expected": len(range(0, a.traces, PROD_EVERY)),
                         "ids_sha": hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12],
                         "paging_s": round(time.monotonic() - t, 1)}
    out["count_prod"]["ok"] = n_prod == out["count_prod"]["expected"]
    log(f"{a.server}: paged count of {SEARCH_FILTER}: {out['count_prod']}")
    out["process"] = genload("proc", "--pid", a.pid)
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# main: lifetime B (ingest, get_trace, prompts, the real client)

def decode_any(v):
    """A trace-JSON AnyValue (protobuf JSON, snake_case) → Python value."""
    if not isinstance(v, dict) or not v:
        return None
    if "string_value" in v:
        return v["string_value"]
    if "bool_value" in v:
        return v["bool_value"]
    if "int_value" in v:
        return int(v["int_value"])
    if "double_value" in v:
        return float(v["double_value"])
    if "array_value" in v:
        return [decode_any(x) for x in v["array_value"].get("values", [])]
    if "kvlist_value" in v:
        return {e["key"]: decode_any(e.get("value")) for e in v["kvlist_value"].get("values", [])}
    return None


def check_trace(body, t):
    """The `traces/get` answer against the trace sent: every span, its parent, times and
    attributes (typed, as sent)."""
    tid, spans, *_ = t
    problems = []
    got = body.get("trace", {})
    got_spans = got.get("spans", [])
    if got.get("trace_info", {}).get("trace_id") != "tr-" + tid:
        problems.append("trace_info.trace_id differs")
    if len(got_spans) != len(spans):
        problems.append(f"{len(got_spans)} spans returned, {len(spans)} sent")
    by_id = {}
    for s in got_spans:
        try:
            by_id[base64.b64decode(s["span_id"]).hex()] = s
        except Exception:
            problems.append(f"span_id not base64: {s.get('span_id')!r}")
            break
    mismatched = 0
    for s in spans:
        g = by_id.get(s["sid"])
        if g is None:
            problems.append(f"span {s['name']} missing")
            continue
        parent = base64.b64decode(g.get("parent_span_id") or "").hex() or None
        attrs = {e["key"]: decode_any(e.get("value")) for e in g.get("attributes", [])}
        sent = {k: v for k, v in s["attrs"].items()}
        ok = (g.get("name") == s["name"] and parent == s["parent"]
              and int(g.get("start_time_unix_nano", 0)) == s["start"]
              and int(g.get("end_time_unix_nano", 0)) == s["end"]
              and all(attrs.get(k) == v for k, v in sent.items())
              and len(g.get("events", [])) == len(s.get("events", [])))
        if not ok:
            mismatched += 1
            if mismatched <= 3:
                diff = [k for k, v in sent.items() if attrs.get(k) != v]
                problems.append(f"span {s['name']} differs (attributes {diff[:5]}, "
                                f"parent {parent == s['parent']}, name {g.get('name') == s['name']})")
    if mismatched > 3:
        problems.append(f"{mismatched} spans differ in all")
    return {"spans": len(got_spans), "ok": not problems, "problems": problems}


def check_prompt(bodies):
    problems = []
    rm = bodies[0].get("registered_model", {})
    tags_rm = {t["key"]: t["value"] for t in rm.get("tags", [])}
    if tags_rm.get("mlflow.prompt.is_prompt") != "true":
        problems.append("registered model lacks mlflow.prompt.is_prompt=true")
    for i, what in ((1, "alias"), (3, "model-versions/get")):
        mv = bodies[i].get("model_version", {})
        tags_mv = {t["key"]: t["value"] for t in mv.get("tags", [])}
        if str(mv.get("version")) != str(PROMPT_ALIAS_VERSION):
            problems.append(f"{what} gives version {mv.get('version')}, expected {PROMPT_ALIAS_VERSION}")
        if tags_mv.get("mlflow.prompt.text") != prompt_template(PROMPT_ALIAS_VERSION):
            problems.append(f"{what}: mlflow.prompt.text differs from the registered template")
    return {"ok": not problems, "problems": problems,
            "version": bodies[1].get("model_version", {}).get("version")}


def prompt_template(v):
    rng = random.Random(f"prompt/{v}")
    return (f"You are a support agent (v{v}). " + text(rng, 1500) +
            "\n\nCustomer: {{question}}\nContext: {{context}}\nAnswer briefly.")


def mlflow_client(url):
    os.environ["MLFLOW_TRACKING_URI"] = url
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(k, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    import mlflow
    mlflow.set_tracking_uri(url)
    return mlflow


def prompt_setup(url):
    """Registers the prompt with the real client: 3 versions, alias prod → version 2."""
    mlflow = mlflow_client(url)
    for v in (1, 2, 3):
        mlflow.genai.register_prompt(PROMPT_NAME, prompt_template(v), commit_message=f"v{v}",
                                     tags={"team": "support"})
    mlflow.genai.set_prompt_alias(PROMPT_NAME, alias=PROMPT_ALIAS, version=PROMPT_ALIAS_VERSION)


def time_real_load_prompt(url, reps, warmup):
    """mlflow.genai.load_prompt by alias, the client cache off
    (MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS=0): wall time per call, in this process."""
    os.environ["MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS"] = "0"
    mlflow = mlflow_client(url)
    uri = f"prompts:/{PROMPT_NAME}@{PROMPT_ALIAS}"
    for _ in range(warmup):
        mlflow.genai.load_prompt(uri)
    lat = []
    p = None
    for _ in range(reps):
        t = time.perf_counter()
        p = mlflow.genai.load_prompt(uri)
        lat.append(time.perf_counter() - t)
        # The call returns before its experiment-link thread's GET; let it finish so calls
        # do not pile up (it would be a real client's load too, just not in this number).
        for th in threading.enumerate():
            if th.name.startswith("link_prompt_to_experiment_thread"):
                th.join()
    ok = p is not None and int(p.version) == PROMPT_ALIAS_VERSION and p.template == prompt_template(PROMPT_ALIAS_VERSION)
    return {"unit_latency": summarize(lat), "ok": ok, "version": getattr(p, "version", None)}


def summarize(v):
    v = sorted(v)
    n = len(v)
    return {"n": n, "median_ms": round(statistics.median(v) * 1e3, 3),
            "p95_ms": round(v[min(n - 1, int(0.95 * n + 0.999) - 1)] * 1e3, 3),
            "min_ms": round(v[0] * 1e3, 3), "mean_ms": round(sum(v) / n * 1e3, 3)}


def cmd_main(a):
    out = {"server": a.server, "phase": "main"}
    http = Http(a.url)
    work = tempfile.mkdtemp(prefix=f"main-{a.server}-", dir=a.work)

    # (1) ingestion: 10-span traces, 8 clients
    exp = http.create_experiment("bench-ingest")
    f = os.path.join(work, "ingest.bin")
    t = time.monotonic()
    n = write_units(f, (unit_of(exp, agent_trace(a.salt, i, a.base_ns, a.spans)) for i in range(a.traces)))
    log(f"{a.server}: ingest file: {n} traces of {a.spans} spans ({os.path.getsize(f) / 1e6:.1f} MB, "
        f"{time.monotonic() - t:.1f} s); replaying with {a.clients} clients")
    r = genload("replay", "--url", a.url, "--file", f, "--clients", a.clients,
                "--deadline-s", a.deadline_s, "--watch-pid", a.pid)
    out["ingest_bytes"] = os.path.getsize(f)
    os.unlink(f)
    log(f"{a.server}: ingest: {r['units_ok']} traces in {r['wall_s']} s = {r['units_per_s']}/s, "
        f"errors {r['errors']['count']}")
    # The server may still be writing (mlflow answers before... nothing is async in loopml):
    # count after it settles.
    genload("settle", "--pid", a.pid, "--max-s", 60)
    stored, ids = http.count(exp)
    sample = random.Random(1).sample(range(r["units_ok"]), min(3, r["units_ok"])) if r["units_ok"] else []
    spans_ok = []
    for i in sample:
        tr = agent_trace(a.salt, i, a.base_ns, a.spans)
        body = http.call("GET", f"{TRACES_V3}/get?trace_id=tr-{tr[0]}&allow_partial=False")
        spans_ok.append(check_trace(body, tr))
    r["check"] = {"stored": stored, "sent_ok": r["units_ok"], "ok": stored == r["units_ok"]
                  and all(c["ok"] for c in spans_ok), "sampled_traces": spans_ok}
    out["ingest"] = r
    log(f"{a.server}: ingest check: {stored} stored; sampled traces {[c['ok'] for c in spans_ok]}")

    # (2) get_trace of a 200-span trace
    exp_get = http.create_experiment("bench-get")
    big = big_trace(a.salt, a.base_ns, a.big_spans)
    f = os.path.join(work, "big.bin")
    write_units(f, [unit_of(exp_get, big)])
    out["big_trace_otlp_bytes"] = len(otlp_body(big[1]))
    r = genload("replay", "--url", a.url, "--file", f, "--clients", 1)
    if r["errors"]["count"]:
        raise RuntimeError(f"logging the {a.big_spans}-span trace failed: {r['errors']}")
    genload("settle", "--pid", a.pid, "--max-s", 30)
    f = os.path.join(work, "get.bin")
    write_units(f, [get_trace_unit("tr-" + big[0])])
    save = os.path.join(work, "get")
    log(f"{a.server}: get_trace ({a.big_spans} spans): {a.get_warmup} warm-up + {a.get_reps} timed")
    r = genload("seq", "--url", a.url, "--file", f, "--reps", a.get_reps, "--warmup", a.get_warmup,
                "--save-dir", save, "--watch-pid", a.pid)
    r["check"] = check_trace(read_saved(save, 1), big)
    info = read_saved(save, 0).get("trace", {}).get("trace_info", {})
    if info.get("tags", {}).get("mlflow.trace.spansLocation") != "TRACKING_STORE":
        r["check"]["ok"] = False
        r["check"]["problems"].append("trace info lacks spansLocation=TRACKING_STORE "
                                      "(the client would then read traces.json instead)")
    out["get_trace"] = r
    log(f"{a.server}: get_trace p50 {r['unit_latency'].get('median_ms')} ms, check {r['check']}")

    # (3) prompts: registered with the real client, loaded by alias
    prompt_setup(a.url)
    f = os.path.join(work, "prompt.bin")
    write_units(f, [load_prompt_unit(PROMPT_NAME, PROMPT_ALIAS)])
    save = os.path.join(work, "prompt")
    log(f"{a.server}: load_prompt by alias: {a.prompt_warmup} warm-up + {a.prompt_reps} timed")
    r = genload("seq", "--url", a.url, "--file", f, "--reps", a.prompt_reps, "--warmup",
                a.prompt_warmup, "--save-dir", save, "--watch-pid", a.pid)
    r["check"] = check_prompt([read_saved(save, i) for i in range(4)])
    out["load_prompt"] = r
    log(f"{a.server}: load_prompt p50 {r['unit_latency'].get('median_ms')} ms, check {r['check']}")
    stop = os.path.join(work, "watch.stop")
    w = subprocess.Popen([GENLOAD, "watch", "--pid", str(a.pid), "--stop-file", stop],
                         stdout=subprocess.PIPE, text=True)
    r = time_real_load_prompt(a.url, a.prompt_reps, a.prompt_warmup)
    open(stop, "w").close()
    r["server"] = json.loads(w.communicate()[0])
    out["load_prompt_client"] = r
    log(f"{a.server}: real client load_prompt p50 {r['unit_latency']['median_ms']} ms ok={r['ok']}")

    # (4) the real client once, behind a recording proxy: what it sends for a trace, get_trace
    # and load_prompt, and whether this server satisfies it
    out["client_check"] = client_check(a.url, "tr-" + big[0], big)
    log(f"{a.server}: client check: {json.dumps(out['client_check']['summary'])}")
    out["process"] = genload("proc", "--pid", a.pid)
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# client-check: the real mlflow client behind a recording proxy

class Recorder:
    def __init__(self, upstream):
        self.upstream = upstream.replace("http://", "").rstrip("/")
        self.calls = []
        self.lock = threading.Lock()
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                c = http.client.HTTPConnection(rec.upstream, timeout=600)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                with rec.lock:
                    rec.calls.append({"method": self.command, "path": self.path,
                                      "content_type": self.headers.get("Content-Type"),
                                      "experiment_header": self.headers.get("x-mlflow-experiment-id"),
                                      "user_agent": self.headers.get("User-Agent"),
                                      "request_bytes": len(body), "status": r.status,
                                      "body": body, "response": data})
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                c.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def take(self):
        with self.lock:
            c, self.calls = self.calls, []
        return c


def route(c):
    return f"{c['method']} {c['path'].split('?')[0]}"


def client_check(url, big_id, big):
    rec = Recorder(url)
    mlflow = mlflow_client(rec.url)
    os.environ["MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS"] = "0"
    res = {"summary": {}}
    problems = []

    # (a) a traced function with 9 children, synchronous export
    exp = mlflow.set_experiment("bench-client-check").experiment_id
    rec.take()

    @mlflow.trace(span_type="TOOL")
    def child(k, q):
        return {"k": k, "out": q[::-1]}

    @mlflow.trace(span_type="AGENT")
    def agent(question):
        return {"answer": [child(k, question) for k in range(9)][0]}

    agent("what is the refund policy?")
    mlflow.flush_trace_async_logging()
    # Export happens as spans end (a batch processor may hold them a moment): wait for the
    # root's StartTraceV3, then a little longer for stragglers.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with rec.lock:
            if any(route(c) == f"POST {TRACES_V3}" for c in rec.calls):
                break
        time.sleep(0.1)
    time.sleep(1.0)
    calls = rec.take()
    res["trace_calls"] = [route(c) for c in calls]
    otlp = [c for c in calls if c["path"].startswith(OTLP_PATH)]
    starts = [c for c in calls if route(c) == f"POST {TRACES_V3}"]
    if otlp:
        rs = parse_otlp(otlp[0]["body"]).resource_spans[0]
        sp = list(rs.scope_spans[0].spans)
        tool = next((x for x in sp if x.name == "child"), sp[-1])
        res["otlp"] = {
            "content_type": otlp[0]["content_type"], "experiment_header": otlp[0]["experiment_header"],
            "user_agent": otlp[0]["user_agent"], "status": otlp[0]["status"],
            "resource": {a.key: a.value.WhichOneof("value") for a in rs.resource.attributes},
            "resource_values": {a.key: str(getattr(a.value, a.value.WhichOneof("value")))
                                for a in rs.resource.attributes},
            "scope_set": rs.scope_spans[0].HasField("scope"),
            "spans": len(sp),
            "attribute_kinds": {a.key: a.value.WhichOneof("value") for a in tool.attributes},
            "status_code": tool.status.code,
            "otlp_requests": len(otlp),
            "spans_per_request": [sum(len(ss.spans) for rs_ in parse_otlp(c["body"]).resource_spans
                                      for ss in rs_.scope_spans) for c in otlp],
        }
        want = {k: str(v) for k, v in RESOURCE.items()}
        if res["otlp"]["resource_values"] != want:
            problems.append(f"client resource {res['otlp']['resource_values']} != ours {want}")
        ours = set_any_kinds()
        diff = {k: (v, ours.get(k)) for k, v in res["otlp"]["attribute_kinds"].items()
                if k in ours and ours[k] != v}
        if diff:
            problems.append(f"our OTLP attribute kinds differ from the client's: {diff}")
        if res["otlp"]["content_type"] != "application/x-protobuf":
            problems.append(f"client OTLP content type {res['otlp']['content_type']}")
    else:
        problems.append(f"the client sent no OTLP export (calls: {res['trace_calls']})")
    if starts:
        st = json.loads(starts[0]["body"])
        ti = st.get("trace", {}).get("trace_info", {})
        res["start_trace"] = {"keys": sorted(st.get("trace", {}).keys()), "trace_info_keys": sorted(ti),
                              "metadata_keys": sorted(ti.get("trace_metadata", {})),
                              "request_time": ti.get("request_time"),
                              "execution_duration": ti.get("execution_duration"),
                              "status": starts[0]["status"],
                              "response_has_spans_location": b"TRACKING_STORE" in starts[0]["response"]}
        if not res["start_trace"]["response_has_spans_location"]:
            problems.append("StartTraceV3 answer lacks spansLocation=TRACKING_STORE")
    else:
        problems.append("the client sent no StartTraceV3")
    if any(c["status"] != 200 for c in calls):
        problems.append(f"non-200 during trace export: {[(route(c), c['status']) for c in calls if c['status'] != 200]}")
    if any("artifacts" in c["path"] for c in calls):
        problems.append("the client uploaded traces.json as well (double storage)")
    tid = mlflow.get_last_active_trace_id()
    t = mlflow.get_trace(tid)
    n_spans = len(t.data.spans) if t else 0
    if n_spans != 10:
        problems.append(f"the client's own 10-span trace reads back with {n_spans} spans")
    rec.take()

    # (b) mlflow.get_trace of the 200-span trace
    t = mlflow.get_trace(big_id)
    calls = rec.take()
    res["get_trace_calls"] = [f"{c['method']} {c['path']}" for c in calls]
    timed = [f"{m} {pth}" for m, pth, *_ in get_trace_unit(big_id)]
    if res["get_trace_calls"] != timed:
        problems.append(f"get_trace calls {res['get_trace_calls']} != the timed {timed}")
    sent_inputs = {s["name"]: s["attrs"]["mlflow.spanInputs"] for s in big[1]}
    got = {s.name: s.inputs for s in t.data.spans} if t else {}
    if len(got) != len(sent_inputs) or any(got.get(k) != v for k, v in sent_inputs.items()):
        bad = [k for k, v in sent_inputs.items() if got.get(k) != v][:3]
        problems.append(f"get_trace: {len(got)} spans; span.inputs differ for {bad}")

    # (c) load_prompt by alias, cache off
    rec.take()
    p = mlflow.genai.load_prompt(f"prompts:/{PROMPT_NAME}@{PROMPT_ALIAS}")
    for th in threading.enumerate():
        if th.name.startswith("link_prompt_to_experiment_thread"):
            th.join()
    calls = rec.take()
    res["load_prompt_calls"] = [f"{c['method']} {c['path']}" for c in calls]
    timed = [f"{m} {pth}" for m, pth, *_ in load_prompt_unit(PROMPT_NAME, PROMPT_ALIAS)]
    seen = res["load_prompt_calls"]
    if seen[:len(timed)] != timed:
        problems.append(f"load_prompt calls {seen} do not start with the timed {timed}")
    if p is None or int(p.version) != PROMPT_ALIAS_VERSION:
        problems.append(f"load_prompt returned {p}")
    res["problems"] = problems
    res["summary"] = {"ok": not problems, "problems": problems, "trace_calls": res["trace_calls"],
                      "load_prompt_calls": seen}
    rec.srv.shutdown()
    return res


def parse_otlp(body):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    r = ExportTraceServiceRequest()
    r.ParseFromString(body)
    return r


def set_any_kinds():
    """The AnyValue kinds our generator gives a TOOL span's attributes."""
    tr = agent_trace("x", 0, 0)
    sp = next(x for x in tr[1] if x["attrs"]["mlflow.spanType"] == "TOOL")
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    kinds = {}
    for k, v in sp["attrs"].items():
        pb = AnyValue()
        set_any(pb, v)
        kinds[k] = pb.WhichOneof("value")
    return kinds


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--salt", required=True, help="makes the trace ids of one run")
    common.add_argument("--base-ns", type=int, required=True, help="start time of trace 0")

    s = sub.add_parser("seed-mlflow", parents=[common])
    s.add_argument("--db", required=True)
    s.add_argument("--traces", type=int, default=100_000)

    for name in ("search", "main"):
        s = sub.add_parser(name, parents=[common])
        s.add_argument("--server", required=True)
        s.add_argument("--url", required=True)
        s.add_argument("--pid", required=True, type=int)
        s.add_argument("--work", default=tempfile.gettempdir())
    s = sub.choices["search"]
    s.add_argument("--traces", type=int, default=100_000)
    s.add_argument("--experiment-id", help="already seeded (mlflow, in process)")
    s.add_argument("--seed-json", help="the seed-mlflow output, kept in the result")
    s.add_argument("--reps", type=int, default=50)
    s.add_argument("--warmup", type=int, default=5)
    s = sub.choices["main"]
    s.add_argument("--traces", type=int, default=5000)
    s.add_argument("--spans", type=int, default=10)
    s.add_argument("--clients", type=int, default=8)
    s.add_argument("--deadline-s", type=int, default=900)
    s.add_argument("--big-spans", type=int, default=200)
    s.add_argument("--get-reps", type=int, default=100)
    s.add_argument("--get-warmup", type=int, default=10)
    s.add_argument("--prompt-reps", type=int, default=200)
    s.add_argument("--prompt-warmup", type=int, default=20)
    a = ap.parse_args()
    {"seed-mlflow": cmd_seed_mlflow, "search": cmd_search, "main": cmd_main}[a.cmd](a)


if __name__ == "__main__":
    main()
