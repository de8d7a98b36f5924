"""The fair gate, as a new user builds a credit-default loop: string features, skl2onnx's default
ZipMap outputs, two registered versions whose own runs logged numbers measured on different data.
The gate scores both on one shared dataset version, in loopml, with the models it serves, and
rejects the challenger whose own-run number is higher but whose score on the shared data is
lower; with a confidence bound, a gate on a handful of rows does not promote on noise."""

import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import requests

from loopml_server import BIN, unique

pytest.importorskip("skl2onnx")


def cli(*args, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "RUST_BACKTRACE"))}
    return subprocess.run(
        [BIN, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def credit(n, seed, flip=0.0):
    """Defaults driven by debt ratio and region; `flip` mislabels a share of rows."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n).clip(5)
    debt = rng.normal(20, 10, n).clip(0)
    region = rng.choice(["north", "south", "east"], n)
    logit = 4 * (debt / income) - 1.5 + np.where(region == "south", 0.8, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    if flip:
        m = rng.random(n) < flip
        y[m] = 1 - y[m]
    return pd.DataFrame({"income": income, "debt": debt, "region": region, "default": y})


def onnx_of(model):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return convert_sklearn(
        model,
        initial_types=[
            ("income", FloatTensorType([None, 1])),
            ("debt", FloatTensorType([None, 1])),
            ("region", StringTensorType([None, 1])),
        ],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


def pipeline(features):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    parts = []
    num = [f for f in features if f != "region"]
    if num:
        parts.append(("num", "passthrough", num))
    if "region" in features:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]))
    return Pipeline([("prep", ColumnTransformer(parts)), ("clf", LogisticRegression(max_iter=500))])


@pytest.fixture(scope="module")
def credit_model(server, tmp_path_factory):
    """v1 (champion): a good model whose run logged roc_auc 0.70 on old data; v2 (challenger):
    a model that only knows the region, whose run logged a flattering 0.99."""
    import mlflow
    import mlflow.onnx
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    name = unique("credit")
    exp = client.create_experiment(unique("credit-exp"))
    train = credit(3000, 1)
    versions = []
    for features, own_auc in [(["income", "debt", "region"], 0.70), (["region"], 0.99)]:
        model = pipeline(features).fit(train[["income", "debt", "region"]], train["default"])
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_metric("roc_auc", own_auc)
            info = mlflow.onnx.log_model(onnx_of(model), name="model")
        mv = client.create_model_version(name, info.model_uri, run.info.run_id) if versions else None
        if mv is None:
            client.create_registered_model(name)
            mv = client.create_model_version(name, info.model_uri, run.info.run_id)
        versions.append(mv.version)
    client.set_registered_model_alias(name, "champion", versions[0])

    data = tmp_path_factory.mktemp("credit")
    holdout = data / "holdout.csv"
    credit(800, 2).to_csv(holdout, index=False)
    small = data / "small.csv"
    credit(30, 3).to_csv(small, index=False)
    refs = {}
    for label, path in [("holdout", holdout), ("small", small)]:
        ds = unique(f"credit-{label}")
        p = cli("data", "add", str(path), "--name", ds, "--server", server.url)
        assert p.returncode == 0, p.stdout + p.stderr
        refs[label] = f"{ds}@1"
    return {"name": name, "versions": versions, "refs": refs, "dir": data}


def compare(server, **body):
    return requests.post(server.url + "/api/2.0/loopml/models/compare", json=body, timeout=120)


def test_compare_scores_both_versions_on_the_same_rows(server, credit_model):
    m = credit_model
    r = compare(
        server,
        model=m["name"],
        versions=["champion", m["versions"][1]],
        dataset=m["refs"]["holdout"],
        label="default",
        metric="roc_auc",
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["rows"] == 800 and got["labelled_rows"] == 800
    champ, chall = got["versions"]
    assert champ["requested"] == "champion" and champ["version"] == m["versions"][0]
    # skl2onnx's default ZipMap output is found without naming it.
    assert champ["column"] == "out_output_probability_1"
    assert champ["value"] > chall["value"] + 0.05, got
    d = got["difference"]
    assert abs(d["value"] - (chall["value"] - champ["value"])) < 1e-9
    assert d["lower"] <= d["value"] <= d["upper"] and d["upper"] < 0, d
    # Label metrics read the label output; the same request gives the same bounds.
    acc = compare(server, model=m["name"], versions=m["versions"], dataset=m["refs"]["holdout"],
                  label="default", metric="accuracy").json()
    assert acc["versions"][0]["column"] == "out_output_label"
    assert 0.5 < acc["versions"][0]["value"] <= 1.0
    again = compare(server, model=m["name"], versions=m["versions"], dataset=m["refs"]["holdout"],
                    label="default", metric="accuracy").json()
    assert again["difference"] == acc["difference"]


def test_compare_explains_bad_requests(server, credit_model):
    m = credit_model
    base = dict(model=m["name"], versions=m["versions"], dataset=m["refs"]["holdout"],
                label="default", metric="roc_auc")
    r = compare(server, **{**base, "label": "nope"})
    assert r.status_code == 400 and "income, debt, region, default" in r.json()["message"], r.text
    r = compare(server, **{**base, "score": "out_nope"})
    assert r.status_code == 400 and "out_output_probability_1" in r.json()["message"], r.text
    r = compare(server, **{**base, "dataset": "no-such-data@1"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.text
    r = compare(server, **{**base, "versions": ["99"]})
    assert r.status_code in (400, 404) and "99" in r.json()["message"], r.text
    r = compare(server, **{**base, "metric": "auc"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text


def run_gate(server, credit_model, tmp_path, score_on):
    m = credit_model
    (tmp_path / "pipeline.yaml").write_text(
        f"""name: credit-gate
steps:
  - name: gate
    gate:
      model: {m['name']}
      challenger: "{m['versions'][1]}"
      metric: roc_auc
      margin: 0.0
{score_on}
  - name: promote
    needs: [gate]
    promote: {{model: {m['name']}, version: "{m['versions'][1]}"}}
"""
    )
    return cli("pipeline", "run", "pipeline.yaml", "--server", server.url, "--json",
               cwd=str(tmp_path))


def test_own_run_numbers_would_promote_the_worse_model(server, credit_model, tmp_path):
    # The old mode compares each version's own logged number (0.99 vs 0.70): it passes.
    p = run_gate(server, credit_model, tmp_path, "")
    assert p.returncode == 0, p.stdout + p.stderr
    client_alias = requests.get(
        server.url + "/api/2.0/mlflow/registered-models/alias",
        params={"name": credit_model["name"], "alias": "champion"}, timeout=10).json()
    assert client_alias["model_version"]["version"] == credit_model["versions"][1]
    # Put the good model back for the fair gate's tests.
    requests.post(server.url + "/api/2.0/mlflow/registered-models/alias", json={
        "name": credit_model["name"], "alias": "champion",
        "version": credit_model["versions"][0]}, timeout=10).raise_for_status()


def test_the_fair_gate_rejects_it_on_shared_data(server, credit_model, tmp_path):
    on = f"      score_on: {{dataset: \"{credit_model['refs']['holdout']}\", label: default, confidence: 0.95}}"
    p = run_gate(server, credit_model, tmp_path, on)
    assert p.returncode == 3, "a rejected gate exits 3: " + p.stdout + p.stderr
    assert "REJECT" in p.stdout + p.stderr and credit_model["refs"]["holdout"] in p.stdout + p.stderr
    import json

    # Step logs come first; the report is the JSON document at the end.
    report = json.loads(p.stdout[p.stdout.index("\n{\n") + 1 :])
    gate = next(s for s in report["steps"] if s["name"] == "gate")
    assert gate["status"] == "REJECTED"
    assert float(gate["outputs"]["champion_value"]) > float(gate["outputs"]["challenger_value"])
    assert gate["outputs"]["rows"] == "800" and gate["outputs"]["dataset"] == credit_model["refs"]["holdout"]
    run = requests.get(server.url + "/api/2.0/mlflow/runs/get", params={"run_id": gate["run_id"]},
                       timeout=10).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    metrics = {x["key"]: x["value"] for x in run["data"]["metrics"]}
    assert tags["loopml.gate"] == "reject" and tags["loopml.gate.dataset"] == credit_model["refs"]["holdout"]
    assert metrics["gate.rows"] == 800 and metrics["gate.champion"] > metrics["gate.challenger"]


def test_too_few_rows_reject_whatever_the_scores(server, credit_model, tmp_path):
    on = f"      score_on: {{dataset: \"{credit_model['refs']['small']}\", label: default, min_rows: 100}}"
    p = run_gate(server, credit_model, tmp_path, on)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "has 30 labelled rows; the gate needs at least 100" in p.stdout + p.stderr
