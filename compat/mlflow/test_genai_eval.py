"""`mlflow.genai.evaluate` with the real client against loopml: custom `@scorer`s and MLflow's
built-in LLM judges whose model is `gateway:/judge` (served by loopml's own gateway from its
model list, in front of a fake OpenAI upstream), over a predict_fn, a DataFrame and an
evaluation dataset (`mlflow.genai.datasets`: create, merge records, read, search, delete).
Results: a run with `<scorer>/mean` metrics, one trace per row with its assessments, and the
judges' tokens on the gateway's spend log."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

mlflow = pytest.importorskip("mlflow")
import mlflow.genai  # noqa: E402


class Judge(BaseHTTPRequestHandler):
    """A fake OpenAI upstream for the judge: 'yes' unless the rubric mentions 'wrong'."""

    calls = 0
    last: dict = {}

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.calls += 1
        Judge.last = body
        prompt = json.dumps(body["messages"])
        verdict = "no" if "wrong" in prompt else "yes"
        data = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant",
                               "content": json.dumps({"result": verdict, "rationale": "checked"})}}],
                           "usage": {"prompt_tokens": 50, "completion_tokens": 10,
                                     "total_tokens": 60}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def judge_upstream():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def genai(start_server, judge_upstream, tmp_path):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: judge
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{judge_upstream}/v1", api_key: sk-up}}
general_settings: {{master_key: sk-admin}}
""")
    srv = start_server(tmp_path / "genai", ["--gateway-config", str(cfg)])
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(srv.url)
    mlflow.set_experiment("genai-eval")
    yield srv
    # Later test files use the session's server through the fluent API.
    mlflow.flush_trace_async_logging()
    mlflow.set_tracking_uri(before)


def test_evaluate_with_code_scorers_and_gateway_judges(genai):
    from mlflow.genai.scorers import Correctness, scorer

    @scorer
    def short(outputs) -> bool:
        return len(outputs) < 20

    @scorer
    def length(outputs) -> int:
        return len(outputs)

    def predict(question: str) -> str:
        return "Paris" if "France" in question else "wrong answer"

    data = [
        {"inputs": {"question": "Capital of France?"}, "expectations": {"expected_response": "Paris"}},
        {"inputs": {"question": "Capital of Peru?"}, "expectations": {"expected_response": "Lima"}},
    ]
    before = Judge.calls
    result = mlflow.genai.evaluate(data=data, predict_fn=predict,
                                   scorers=[short, length, Correctness(model="gateway:/judge")])
    assert Judge.calls - before == 2, "one judge call per row, through the gateway"
    m = result.metrics
    assert m["short/mean"] == 1.0
    assert m["length/mean"] == (5 + 12) / 2
    assert m["correctness/mean"] == 0.5
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["mlflow.runType"] == "genai_evaluate"
    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    assert len(traces) == 2
    for t in traces:
        names = {a.name for a in t.info.assessments}
        assert {"short", "length", "correctness", "expected_response"} <= names, names
    # The judges' tokens are on the gateway's spend log like any call.
    logs = requests.get(genai.url + "/spend/logs", headers={"Authorization": "Bearer sk-admin"},
                        timeout=10).json()
    judged = [r for r in logs if r["model_group"] == "judge"]
    assert len(judged) >= 2 and all(r["total_tokens"] == 60 for r in judged)


def test_evaluation_datasets_and_evaluate_over_one(genai):
    from mlflow.genai.datasets import create_dataset, delete_dataset, get_dataset, search_datasets
    from mlflow.genai.scorers import scorer

    exp = mlflow.get_experiment_by_name("genai-eval").experiment_id
    ds = create_dataset(name="qa_set", experiment_id=[exp], tags={"owner": "ana"})
    assert ds.dataset_id.startswith("d-")
    ds.merge_records([
        {"inputs": {"q": "2+2"}, "expectations": {"answer": "4"}},
        {"inputs": {"q": "3+3"}, "expectations": {"answer": "6"}},
    ])
    # Re-merging the same inputs updates the record instead of adding one.
    ds.merge_records([{"inputs": {"q": "2+2"}, "expectations": {"answer": "four"}}])
    df = get_dataset(dataset_id=ds.dataset_id).to_df()
    assert len(df) == 2
    answers = sorted(r["answer"] for r in df["expectations"])
    assert answers == ["6", "four"]
    found = search_datasets(experiment_ids=[exp], filter_string="name = 'qa_set'")
    assert [d.dataset_id for d in found] == [ds.dataset_id]
    assert get_dataset(name="qa_set").dataset_id == ds.dataset_id

    @scorer
    def exact(outputs, expectations) -> bool:
        return outputs == expectations["answer"]

    result = mlflow.genai.evaluate(data=get_dataset(dataset_id=ds.dataset_id),
                                   predict_fn=lambda q: str(eval(q)),  # noqa: S307 - test input
                                   scorers=[exact])
    assert result.metrics["exact/mean"] == 0.5
    delete_dataset(dataset_id=ds.dataset_id)
    assert not search_datasets(experiment_ids=[exp], filter_string="name = 'qa_set'")


def test_unknown_gateway_endpoint_is_mlflows_error(genai):
    r = requests.post(genai.url + "/gateway/mlflow/v1/chat/completions",
                      json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                      timeout=10)
    assert r.status_code == 404
    assert r.json()["detail"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_the_gateway_renders_a_registered_prompt_by_alias(genai):
    openai = pytest.importorskip("openai")
    name = "support_prompt"
    mlflow.genai.register_prompt(
        name=name, template=[{"role": "system", "content": "You help with {{product}}."},
                             {"role": "user", "content": "{{question}}"}],
        model_config={"temperature": 0.3, "max_tokens": 40})
    mlflow.genai.register_prompt(name=name, template="v2: {{question}} about {{product}}")
    mlflow.genai.set_prompt_alias(name, alias="prod", version=1)
    client = openai.OpenAI(base_url=genai.url + "/v1", api_key="sk-admin", max_retries=0)
    vars_ = {"product": "loopml", "question": "How do I log a run?"}
    client.chat.completions.create(model="judge", messages=[], extra_body={
        "prompt_id": f"prompts:/{name}@prod", "prompt_variables": vars_})
    sent = Judge.last
    assert sent["messages"] == [{"role": "system", "content": "You help with loopml."},
                                {"role": "user", "content": "How do I log a run?"}]
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 40
    assert "prompt_id" not in sent
    # Moving the alias changes what the application sends, with no deploy.
    mlflow.genai.set_prompt_alias(name, alias="prod", version=2)
    client.chat.completions.create(model="judge", messages=[], extra_body={
        "prompt_id": f"prompts:/{name}@prod", "prompt_variables": vars_})
    assert Judge.last["messages"] == [
        {"role": "user", "content": "v2: How do I log a run? about loopml"}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="judge", messages=[], extra_body={
            "prompt_id": f"prompts:/{name}@prod", "prompt_variables": {"product": "x"}})
    assert "question" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="judge", messages=[], extra_body={
            "prompt_id": "prompts:/nope@prod"})


def test_evaluate_over_existing_traces(genai):
    from mlflow.genai.scorers import scorer

    @mlflow.trace
    def app(question: str) -> str:
        return "yes" if "?" in question else "no"

    app("is it?")
    app("statement")
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces()
    assert len(traces) >= 2

    @scorer
    def said_yes(outputs) -> bool:
        return outputs == "yes"

    result = mlflow.genai.evaluate(data=traces, scorers=[said_yes])
    assert result.metrics["said_yes/mean"] == 0.5
    scored = mlflow.search_traces(filter_string="feedback.said_yes = 'true'", return_type="list")
    assert len(scored) == 1


def test_scorer_registry_keeps_judges_and_refuses_code(genai):
    from mlflow.genai.scorers import Guidelines, delete_scorer, get_scorer, list_scorers, scorer

    exp = mlflow.get_experiment_by_name("genai-eval").experiment_id
    g = Guidelines(name="polite", guidelines=["Be polite."], model="gateway:/judge")
    g.register(name="polite", experiment_id=exp)
    Guidelines(name="polite", guidelines=["Be very polite."], model="gateway:/judge").register(
        name="polite", experiment_id=exp)
    names = [s.name for s in list_scorers(experiment_id=exp)]
    assert names == ["polite"]
    latest = get_scorer(name="polite", experiment_id=exp)
    assert latest.guidelines == ["Be very polite."], "the latest version"

    @scorer
    def code(outputs) -> bool:
        return True

    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        code.register(name="code", experiment_id=exp)
    assert "code" in str(e.value).lower()
    delete_scorer(name="polite", experiment_id=exp, version="all")
    assert list_scorers(experiment_id=exp) == []
