"""Retrieval (RAG) evaluation against the real binary: an HNSW index over a dataset version's
text column, embedded by a gateway embedding model (a fake OpenAI embeddings upstream with a
deterministic bag-of-words embedding), queried over HTTP, and scored on labelled queries
(recall@k, precision@k, MRR, nDCG) as a tracked run the mlflow client reads back."""

from __future__ import annotations

import hashlib
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

mlflow = pytest.importorskip("mlflow")

DIMS = 64


def embed(text: str) -> list[float]:
    v = [0.0] * DIMS
    for w in text.lower().split():
        v[int(hashlib.md5(w.encode()).hexdigest(), 16) % DIMS] += 1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


class Embeddings(BaseHTTPRequestHandler):
    calls = 0

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Embeddings.calls += 1
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = json.dumps({"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(inputs)],
            "usage": {"prompt_tokens": sum(len(t.split()) for t in inputs),
                      "total_tokens": sum(len(t.split()) for t in inputs)}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


DOCS = {
    "d1": "the cat sat on the mat",
    "d2": "dogs chase cats in the park",
    "d3": "stock markets fell sharply today",
    "d4": "the central bank raised interest rates",
    "d5": "a recipe for tomato soup with basil",
}


@pytest.fixture
def rag(start_server, tmp_path):
    srv_up = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=srv_up.serve_forever, daemon=True).start()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: embed
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "http://127.0.0.1:{srv_up.server_address[1]}/v1"}}
    model_info: {{mode: embedding}}
""")
    srv = start_server(tmp_path / "rag", ["--gateway-config", str(cfg)])
    csv = "id,text\n" + "".join(f"{k},{v}\n" for k, v in DOCS.items())
    r = requests.post(f"{srv.url}/api/2.0/loopml/datasets/corpus/versions?format=csv",
                      data=csv.encode(), timeout=30)
    assert r.status_code == 200, r.text
    yield srv
    srv_up.shutdown()


def test_index_query_and_retrieval_metrics_as_a_run(rag):
    api = rag.url + "/api/2.0/loopml/retrieval"
    r = requests.post(api + "/indexes", json={"name": "docs", "dataset": "corpus@1",
                                              "id_column": "id", "text_column": "text",
                                              "embedding_model": "embed"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["index"]["documents"] == 5 and r.json()["index"]["dimensions"] == DIMS
    r = requests.post(api + "/indexes/docs/query", json={"query": "interest rates bank", "k": 2},
                      timeout=30)
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert hits[0]["id"] == "d4" and hits[0]["score"] > hits[1]["score"]

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(rag.url)
    try:
        exp = mlflow.create_experiment("rag-eval")
        check_rag_run(rag, api, exp)
    finally:
        mlflow.set_tracking_uri(before)


def check_rag_run(rag, api, exp):
    r = requests.post(api + "/evaluate", json={
        "index": "docs", "experiment_id": exp, "run_name": "bow-64", "k": [1, 3],
        "queries": [{"query": "cat on a mat", "relevant": ["d1"]},
                    {"query": "markets fell", "relevant": ["d3"]},
                    {"query": "cats and dogs", "relevant": ["d2", "d1"]}]}, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    run = mlflow.get_run(out["run_id"])
    m = run.data.metrics
    assert m["recall_at_3"] == 1.0
    assert m["mrr"] == 1.0
    assert 0 < m["precision_at_3"] <= 1 and 0 < m["ndcg_at_1"] <= 1
    assert run.data.params["embedding_model"] == "embed"
    assert run.data.params["dataset"] == "corpus@1"
    assert run.data.tags["loopml.runType"] == "retrieval_evaluate"
    assert run.info.status == "FINISHED"

    # Bad input gets a clear error.
    r = requests.post(api + "/indexes/nope/query", json={"query": "x"}, timeout=10)
    assert r.status_code == 404
    r = requests.post(api + "/indexes", json={"name": "x", "dataset": "corpus@1",
                                              "text_column": "missing", "embedding_model": "embed"},
                      timeout=10)
    assert r.status_code == 400 and "missing" in r.json()["message"]
