"""MLflow's prompt registry with the real client (`mlflow.genai`): text and chat prompts with
response_format and model_config, versions, commit messages, tags, aliases (`@prod`,
`@latest`), load_prompt by every URI form, search_prompts, deletion; prompts and models never
leak into each other's searches."""

from __future__ import annotations

import uuid

import pytest

mlflow = pytest.importorskip("mlflow")
import mlflow.genai  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


@pytest.fixture
def name():
    return f"qa_{uuid.uuid4().hex[:8]}"


def test_text_and_chat_prompts_versions_aliases_and_loads(server, experiment, name):
    mlflow.set_tracking_uri(server.url)
    p1 = mlflow.genai.register_prompt(name=name, template="Answer {{question}} briefly.",
                                      commit_message="first", tags={"team": "support"})
    assert p1.version == 1 and p1.variables == {"question"}
    chat = [{"role": "system", "content": "You are kind."},
            {"role": "user", "content": "{{question}}"}]
    p2 = mlflow.genai.register_prompt(
        name=name, template=chat, commit_message="chat form",
        response_format={"type": "object", "properties": {"answer": {"type": "string"}}},
        model_config={"model_name": "gpt-4o-mini", "temperature": 0.1})
    assert p2.version == 2

    got = mlflow.genai.load_prompt(f"prompts:/{name}/2")
    assert got.template == chat and got.commit_message == "chat form"
    assert got.response_format["properties"]["answer"]["type"] == "string"
    assert got.model_config["temperature"] == 0.1
    assert got.format(question="why?")[1] == {"role": "user", "content": "why?"}
    assert mlflow.genai.load_prompt(name, version=1).template == "Answer {{question}} briefly."

    mlflow.genai.set_prompt_alias(name, alias="prod", version=1)
    assert mlflow.genai.load_prompt(f"prompts:/{name}@prod").version == 1
    assert mlflow.genai.load_prompt(f"prompts:/{name}@latest").version == 2
    assert mlflow.genai.load_prompt(name).version == 2
    assert mlflow.genai.load_prompt(f"prompts:/{name}@nope", allow_missing=True) is None
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.genai.load_prompt(f"prompts:/{name}@nope")
    mlflow.genai.delete_prompt_alias(name, "prod")
    assert mlflow.genai.load_prompt(f"prompts:/{name}@prod", allow_missing=True) is None


def test_prompts_and_models_stay_apart_in_searches(server, experiment, name):
    mlflow.set_tracking_uri(server.url)
    mlflow.genai.register_prompt(name=name, template="Hi {{x}}")
    client = MlflowClient(server.url)
    model = f"model_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model)
    prompts = [p.name for p in mlflow.genai.search_prompts(filter_string=f"name = '{name}'")]
    assert prompts == [name]
    assert model not in [p.name for p in mlflow.genai.search_prompts()]
    models = [m.name for m in client.search_registered_models()]
    assert model in models and name not in models
    # Prompt tags: set, read, delete; the prompt marker is not shown as a user tag.
    mlflow.genai.set_prompt_tag(name, "owner", "ana")
    tags = mlflow.genai.get_prompt_tags(name)
    assert tags["owner"] == "ana" and "mlflow.prompt.is_prompt" not in tags
    mlflow.genai.delete_prompt_tag(name, "owner")
    assert "owner" not in mlflow.genai.get_prompt_tags(name)


def test_prompt_sources_and_deletion(server, experiment, name):
    mlflow.set_tracking_uri(server.url)
    client = MlflowClient(server.url)
    mlflow.genai.register_prompt(name=name, template="v1 {{a}}")
    mlflow.genai.register_prompt(name=name, template="v2 {{a}}")
    # A model version of a prompt with a real source is refused, as mlflow server does.
    r = server.api("POST", "model-versions/create", json={
        "name": name, "source": "/etc/passwd",
        "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"},
                 {"key": "mlflow.prompt.text", "value": "x"}]})
    assert r.status_code == 400 and "Invalid prompt source" in r.json()["message"]
    client.delete_prompt_version(name, "1")
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.genai.load_prompt(name, version=1)
    assert mlflow.genai.load_prompt(name, version=2).template == "v2 {{a}}"
    client.delete_prompt_version(name, "2")
    client.delete_prompt(name)
    assert mlflow.genai.search_prompts(filter_string=f"name = '{name}'") == []
