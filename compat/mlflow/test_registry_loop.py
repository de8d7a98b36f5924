"""loopml's own registry loop, end to end with the real `mlflow` client and `requests` against
the real binary: lineage (HTTP and `loopml lineage`), model cards (HTML, Markdown, JSON and
`loopml model-card`), the change feed (order, filter, paging, long-poll), MLflow's webhook API
(signature, retry with backoff, delivery log, disabled hooks) and durability of the feed and of
webhooks across a restart.

These endpoints are loopml's, so the module is skipped under COMPAT_EXTERNAL_URL."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import subprocess
import threading
import time
from datetime import datetime
from html.parser import HTMLParser

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities.webhook import WebhookEvent, WebhookStatus
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression

from loopml_server import BIN, assert_error, unique

pytestmark = [
    pytest.mark.skipif(
        bool(os.environ.get("COMPAT_EXTERNAL_URL", "").strip()),
        reason="loopml's own registry endpoints (lineage, cards, feed, delivery log)",
    ),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

API = "/api/2.0/loopml/registry"
REQS = ["scikit-learn", "pandas"]  # explicit: skips the client's slow requirement inference
DESCRIPTION = 'Churn <b>classifier</b> & "friends" <script>x</script>'
LIMITATIONS = "Not for customers outside the EU; trained on 2024 data only."
METRICS = {"accuracy": 0.95, "log_loss": 0.125, "n_iter": 42.0}
PARAMS = {"C": "0.5", "max_iter": "100", "solver": "lbfgs"}


def get(server, path, **params):
    return requests.get(f"{server.url}{API}/{path}", params=params, timeout=30)


def get_ok(server, path, **params):
    r = get(server, path, **params)
    assert r.status_code == 200, f"{path} {params}: {r.status_code} {r.text[:500]}"
    return r


def cli(*args, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "RUST_BACKTRACE"))}
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, env=env)


def num(v: float) -> str:
    """How the card prints a number."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.6f}".rstrip("0").rstrip(".")


# -- the trained, registered model shared by the lineage and card tests --------------------------


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """One training run the way a user writes it: log_input(from_pandas), params, metrics,
    sklearn.log_model(registered_model_name=..., input_example=...). Then alias champion -> 1,
    v1 -> Production, a description and a `limitations` tag on the registered model, and
    v2 registered from the same logged model (so `latest` differs from `champion`)."""
    client = MlflowClient(server.url)
    exp_id = client.create_experiment(unique("loop"))
    mlflow.set_experiment(experiment_id=exp_id)
    name = unique("loopm")
    X = pd.DataFrame({"tenure": np.arange(24.0), "spend": (np.arange(24.0) * 7) % 5})
    y = (X["tenure"] >= 12).astype(int)
    df = X.assign(churned=y)
    # The training file is stored as a dataset version first; logging its sha256 as the
    # dataset's digest links the run's input to those exact bytes (MLflow caps digests at 36
    # characters, so the first 32 hex digits).
    data_name = unique("churn-train")
    csv = tmp_path_factory.mktemp("train") / "train.csv"
    df.to_csv(csv, index=False)
    p = cli("data", "add", str(csv), "--name", data_name, "--server", server.url)
    assert p.returncode == 0, p.stderr
    sha = re.search(r"sha256:([0-9a-f]{64})", p.stdout).group(1)
    ds = mlflow.data.from_pandas(df, source="/data/churn/train.csv", name="churn-train",
                                 targets="churned", digest=sha[:32])
    with mlflow.start_run() as run:
        mlflow.log_input(ds, context="training")
        mlflow.log_params(PARAMS)
        mlflow.log_metrics(METRICS)
        mlflow.set_tag("team", "growth")
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(X, y), name="model", registered_model_name=name,
            input_example=X[:2], pip_requirements=REQS,
        )
    assert info.registered_model_version == "1"
    client.set_registered_model_alias(name, "champion", "1")
    client.transition_model_version_stage(name, "1", "Production")
    client.update_registered_model(name, description=DESCRIPTION)
    client.set_registered_model_tag(name, "limitations", LIMITATIONS)
    mv2 = mlflow.register_model(f"models:/{info.model_id}", name)
    assert mv2.version == "2"
    return {"name": name, "run_id": run.info.run_id, "info": info, "dataset": ds,
            "columns": list(X.columns), "experiment_id": exp_id, "client": client,
            "data_name": data_name, "sha256": sha, "csv": csv}


# -- 1. lineage ------------------------------------------------------------------------------------


def test_lineage_chain_matches_what_the_client_logged(server, trained):
    name, rid, info = trained["name"], trained["run_id"], trained["info"]
    client = trained["client"]
    uri = f"models:/{name}@champion"
    r = get_ok(server, "lineage", uri=uri)
    assert r.headers["content-type"].startswith("application/json")
    lin = r.json()
    assert set(lin) == {"model_uri", "registered_model", "model_version", "logged_model", "run",
                        "datasets", "model_file", "deployments", "history", "warnings"}
    assert lin["model_uri"] == uri
    assert lin["warnings"] == [] and lin["deployments"] == []

    assert lin["registered_model"] == {"name": name, "description": DESCRIPTION,
                                       "tags": {"limitations": LIMITATIONS}}

    mv = client.get_model_version(name, "1")
    lm = mlflow.get_logged_model(info.model_id)
    v = lin["model_version"]
    assert (v["version"], v["stage"], v["aliases"], v["status"]) == (1, "Production", ["champion"], "READY")
    assert v["source"] == mv.source == f"models:/{info.model_id}"
    assert v["storage_location"] == lm.artifact_location == client.get_model_version_download_uri(name, "1")
    assert v["creation_timestamp"] == mv.creation_timestamp
    assert v.get("description") in (None, "") and v["tags"] == {}

    assert lin["logged_model"]["model_id"] == info.model_id == lm.model_id
    assert lin["logged_model"]["name"] == "model"
    assert lin["logged_model"]["artifact_uri"] == lm.artifact_location
    assert lin["logged_model"]["status"] == "LOGGED_MODEL_READY"
    assert lin["logged_model"]["metrics"] == {m.key: m.value for m in (lm.metrics or [])}

    run = mlflow.get_run(rid)
    lr = lin["run"]
    assert lr["run_id"] == rid and lr["run_name"] == run.info.run_name
    assert lr["experiment_id"] == trained["experiment_id"] == run.info.experiment_id
    assert lr["experiment_name"] == client.get_experiment(run.info.experiment_id).name
    assert lr["user"] == run.info.user_id and lr["user"]
    assert lr["status"] == "FINISHED"
    assert (lr["start_time"], lr["end_time"]) == (run.info.start_time, run.info.end_time)
    assert lr["params"] == run.data.params == PARAMS
    assert lr["metrics"] == run.data.metrics == METRICS
    assert lr["tags"] == {"team": "growth"}
    # The test runner may or may not be inside a git checkout: compare with what the client sent.
    assert lr.get("git_commit") == run.data.tags.get("mlflow.source.git.commit")
    assert lr.get("source_name") == run.data.tags.get("mlflow.source.name")
    assert lr.get("parent_run_id") is None

    logged = run.inputs.dataset_inputs
    assert len(logged) == 1 and len(lin["datasets"]) == 1
    d, want = lin["datasets"][0], logged[0].dataset
    assert (d["name"], d["digest"], d["source_type"], d["source"]) == (
        want.name, want.digest, want.source_type, want.source)
    assert (d["name"], d["digest"]) == ("churn-train", trained["dataset"].digest)
    assert json.loads(d["source"])["uri"] == "/data/churn/train.csv"
    assert d["context"] == "training" == {t.key: t.value for t in logged[0].tags}["mlflow.data.context"]
    assert d["schema"] == json.loads(want.schema)
    assert d["profile"] == json.loads(want.profile)
    # The logged digest is the stored version's sha256: lineage reaches the actual bytes.
    stored = d["stored"]
    assert stored["reference"] == f"{trained['data_name']}@1"
    assert (stored["digest"], stored["matched_by"], stored["rows"]) == (trained["sha256"], "digest", 24)
    body = requests.get(f"{server.url}{stored['content_path']}", timeout=30).content
    assert hashlib.sha256(body).hexdigest() == trained["sha256"] and body == trained["csv"].read_bytes()

    mf = lin["model_file"]
    assert {"python_function", "sklearn"} <= set(mf["flavors"])
    assert [c["name"] for c in mf["inputs"]] == trained["columns"]
    assert [c["type"] for c in mf["inputs"]] == ["double", "double"]
    assert mf["outputs"] and mf["mlflow_version"] == mlflow.__version__

    hist = lin["history"]
    assert [h["event"] for h in hist] == [
        "model_version.created", "model_version_alias.created", "model_version.stage_transitioned"]
    seqs = [h["seq"] for h in hist]
    assert seqs == sorted(set(seqs))
    assert hist[0]["data"]["version"] == "1" and hist[0]["data"]["run_id"] == rid
    assert hist[0]["data"]["model_id"] == info.model_id
    assert hist[1]["data"]["alias"] == "champion" and hist[1]["data"]["version"] == "1"
    assert (hist[2]["data"]["from_stage"], hist[2]["data"]["to_stage"]) == ("None", "Production")
    assert hist[0]["timestamp"] == mv.creation_timestamp


def test_lineage_uri_forms_resolve_to_the_right_version(server, trained):
    name, info = trained["name"], trained["info"]
    for query, version in [
        ({"uri": f"models:/{name}@champion"}, 1),
        ({"uri": f"models:/{name}/1"}, 1),
        ({"uri": f"models:/{name}/Production"}, 1),
        ({"uri": f"models:/{name}/latest"}, 2),
        ({"uri": f"models:/{name}/2"}, 2),
        ({"name": name, "version": "1"}, 1),
        ({"name": name, "version": "2"}, 2),
        ({"name": name}, 2),
    ]:
        lin = get_ok(server, "lineage", **query).json()
        assert lin["model_version"]["version"] == version, query
        if "uri" in query:
            assert lin["model_uri"] == query["uri"]
    v2 = get_ok(server, "lineage", uri=f"models:/{name}/2").json()
    # v2 was registered from the logged model: same run, same logged model, same datasets.
    assert v2["run"]["run_id"] == trained["run_id"]
    assert v2["logged_model"]["model_id"] == info.model_id
    assert v2["model_version"]["aliases"] == [] and v2["model_version"]["stage"] == "None"
    assert [h["event"] for h in v2["history"]] == ["model_version.created"]

    assert_error(get(server, "lineage", uri=f"models:/{unique('nope')}@champion"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_error(get(server, "lineage", uri=f"models:/{name}/99"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_error(get(server, "lineage", uri=f"models:/{name}@nosuchalias"), 400, "INVALID_PARAMETER_VALUE")
    assert_error(get(server, "lineage"), 400, "INVALID_PARAMETER_VALUE")
    assert_error(get(server, "lineage", uri="bogus"), 400, "INVALID_PARAMETER_VALUE")
    assert_error(get(server, "lineage", name=name, version="abc"), 400, "INVALID_PARAMETER_VALUE")
    assert_error(get(server, "lineage", uri=f"models:/{name}/1", format="xml"), 400, "INVALID_PARAMETER_VALUE")


def test_lineage_text_and_cli(server, trained):
    name, rid = trained["name"], trained["run_id"]
    uri = f"models:/{name}@champion"
    lin = get_ok(server, "lineage", uri=uri).json()
    digest = lin["datasets"][0]["digest"]
    r = get_ok(server, "lineage", uri=uri, format="text")
    assert r.headers["content-type"].startswith("text/plain")
    for fact in [rid, digest, "champion", "Production", trained["info"].model_id, "churn-train"]:
        assert fact in r.text, fact

    p = cli("lineage", uri, "--server", server.url)
    assert p.returncode == 0, p.stderr
    assert p.stdout == r.text
    for fact in [rid, digest, "champion"]:
        assert fact in p.stdout

    p = cli("lineage", uri, "--json", "--server", server.url)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == lin

    p = cli("lineage", f"models:/{unique('nope')}@champion", "--server", server.url)
    assert p.returncode != 0
    assert "RESOURCE_DOES_NOT_EXIST" in p.stderr
    assert p.stdout == ""



def test_lineage_links_logged_datasets_by_source_and_digest_prefix(server, tmp_path):
    """A dataset logged with loopml's content URL as its source (and MLflow's own digest) links to
    that version; a 12-digit prefix of the sha256 links too; anything else is reported as a gap."""
    client = MlflowClient(server.url)
    mlflow.set_experiment(experiment_id=client.create_experiment(unique("link")))
    name = unique("feat")
    df = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) % 3})
    csv = tmp_path / "feat.csv"
    df.to_csv(csv, index=False)
    p = cli("data", "add", str(csv), "--name", name, "--server", server.url)
    assert p.returncode == 0, p.stderr
    sha = re.search(r"sha256:([0-9a-f]{64})", p.stdout).group(1)
    by_source = mlflow.data.from_pandas(
        df, source=f"{server.url}/api/2.0/loopml/datasets/{name}@1/content", name="by-source")
    by_prefix = mlflow.data.from_pandas(df, source="s3://bucket/feat.csv", name="by-prefix",
                                        digest=f"sha256:{sha[:12]}")
    unknown = mlflow.data.from_pandas(df.assign(c=1.0), source="/elsewhere.csv", name="unknown")
    with mlflow.start_run() as run:
        mlflow.log_input(by_source, context="training")
        mlflow.log_input(by_prefix, context="validation")
        mlflow.log_input(unknown, context="test")
        mlflow.log_text("placeholder", "model/notes.txt")
    model = unique("linked")
    client.create_registered_model(model)
    client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    lin = get_ok(server, "lineage", uri=f"models:/{model}/1").json()
    by_name = {d["name"]: d for d in lin["datasets"]}
    assert by_name["by-source"]["stored"]["reference"] == f"{name}@1"
    assert by_name["by-source"]["stored"]["matched_by"] == "source"
    assert by_name["by-prefix"]["stored"]["reference"] == f"{name}@1"
    assert by_name["by-prefix"]["stored"]["matched_by"] == "digest"
    assert by_name["by-prefix"]["stored"]["digest"] == sha
    assert "stored" not in by_name["unknown"]
    gaps = [w for w in lin["warnings"] if "matches no stored dataset version" in w]
    assert len(gaps) == 1 and "unknown" in gaps[0], lin["warnings"]
    text = get_ok(server, "lineage", uri=f"models:/{model}/1", format="text").text
    assert f"stored as {name}@1" in text and "matched by source" in text
    card = get_ok(server, "model-card", uri=f"models:/{model}/1", format="md").text
    assert f"`{name}@1`" in card


# -- 2. model cards --------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class CardParser(HTMLParser):
    """Checks that every opened non-void tag is closed, in order; collects text, tables, attrs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.decls, self.attrs = [], [], [], []
        self.tags, self.text, self.tables = [], [], []
        self._table = self._row = self._cell = None

    def handle_decl(self, decl):
        self.decls.append(decl)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self._table = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.errors.append(f"self-closed non-void <{tag}/>")

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element </{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> while <{self.stack[-1] if self.stack else None}> is open")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._table.append(self._row)
        elif tag == "table":
            self.tables.append(self._table)

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, *head):
        found = [t for t in self.tables if t and tuple(t[0]) == head]
        assert len(found) >= 1, f"no table with header {head}: {[t[0] for t in self.tables if t]}"
        return found[0][1:]


def parse_card(page: str) -> CardParser:
    assert page.startswith("<!DOCTYPE html>")
    p = CardParser()
    p.feed(page)
    p.close()
    assert p.errors == [], p.errors[:5]
    assert p.stack == [], f"unclosed tags: {p.stack}"
    assert p.decls == ["DOCTYPE html"]
    for t in ("html", "head", "body", "title"):
        assert p.tags.count(t) == 1, t
    return p


def test_model_card_html_is_well_formed_and_complete(server, trained):
    name = trained["name"]
    lin = get_ok(server, "lineage", uri=f"models:/{name}@champion").json()
    r = get_ok(server, "model-card", uri=f"models:/{name}@champion", format="html")
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    card = parse_card(page)
    text = "".join(card.text)

    # Self-contained: no scripts, no external resources of any kind.
    assert "script" not in card.tags and "link" not in card.tags and "img" not in card.tags
    assert not [a for a in card.attrs if a[1] in ("src", "srcset", "action")]
    assert not [a for a in card.attrs if a[1] == "href" and re.match(r"\s*(https?:)?//", a[2])]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "url(" not in page and "@import" not in page

    # The user's text is escaped, not injected: the parser reads it back verbatim.
    assert DESCRIPTION in text
    assert "<b>classifier</b>" not in page and "<script>x</script>" not in page
    assert LIMITATIONS in text
    assert name in text and "champion" in text and "Production" in text

    metrics = {k: v for k, v in card.table("metric", "value")}
    want = {**lin["run"]["metrics"], **lin["logged_model"]["metrics"]}
    assert metrics == {k: num(v) for k, v in want.items()}
    assert metrics["accuracy"] == "0.95" and metrics["log_loss"] == "0.125" and metrics["n_iter"] == "42"
    assert {k: v for k, v in card.table("parameter", "value")} == PARAMS

    ds = card.table("dataset", "digest", "context", "source", "rows", "stored version")
    digest = trained["dataset"].digest
    assert [(row[0], row[1], row[2]) for row in ds] == [("churn-train", digest, "training")]
    assert ds[0][4] == "24" and ds[0][5] == f"{trained['data_name']}@1"
    assert [row[0] for row in card.table("name", "type", "required")][:2] == trained["columns"]
    assert trained["run_id"] in text


def test_model_card_markdown_json_and_errors(server, trained):
    name = trained["name"]
    uri = f"models:/{name}@champion"
    r = get_ok(server, "model-card", uri=uri, format="md")
    assert r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith(f"# Model card: {name} version 1")
    assert DESCRIPTION in md and LIMITATIONS in md
    for k, v in METRICS.items():
        assert f"| {k} | {num(v)} |" in md
    for k, v in PARAMS.items():
        assert f"| {k} | {v} |" in md
    assert f"`{trained['dataset'].digest}`" in md
    assert trained["run_id"] in md and "@champion" in md
    assert get_ok(server, "model-card", uri=uri, format="markdown").text == md

    lin = get_ok(server, "lineage", uri=uri).json()
    assert get_ok(server, "model-card", uri=uri, format="json").json() == lin
    # The default format is HTML.
    assert get_ok(server, "model-card", uri=uri).text.startswith("<!DOCTYPE html>")

    # A version tag overrides the registered model's for the narrative.
    trained["client"].set_model_version_tag(name, "2", "limitations", "v2 only: beta")
    md2 = get_ok(server, "model-card", name=name, version="2", format="md").text
    assert "v2 only: beta" in md2 and LIMITATIONS not in md2

    for bad in ["pdf", "HTM", "text"]:
        assert_error(get(server, "model-card", uri=uri, format=bad), 400, "INVALID_PARAMETER_VALUE")
    assert_error(get(server, "model-card", uri=f"models:/{unique('nope')}/1", format="md"),
                 404, "RESOURCE_DOES_NOT_EXIST")


def test_model_card_cli(server, trained, tmp_path):
    uri = f"models:/{trained['name']}@champion"
    out = tmp_path / "card.html"
    p = cli("model-card", uri, "--format", "html", "-o", str(out), "--server", server.url)
    assert p.returncode == 0, p.stderr
    page = out.read_text(encoding="utf-8")
    assert page == get_ok(server, "model-card", uri=uri, format="html").text
    parse_card(page)

    p = cli("model-card", uri, "--server", server.url)  # Markdown to stdout by default
    assert p.returncode == 0, p.stderr
    assert p.stdout == get_ok(server, "model-card", uri=uri, format="md").text

    p = cli("model-card", uri, "--format", "pdf", "--server", server.url)
    assert p.returncode != 0 and "INVALID_PARAMETER_VALUE" in p.stderr


# -- 3. change feed --------------------------------------------------------------------------------


def last_seq(server):
    return get_ok(server, "events", limit=1).json()["last_seq"]


def new_model(client, versions=1, prefix="feed"):
    """A registered model with `versions` versions (sources inside a fresh run's artifacts)."""
    exp = client.create_experiment(unique("feedexp"))
    run = client.create_run(exp)
    src = f"{run.info.artifact_uri}/model"
    name = unique(prefix)
    client.create_registered_model(name)
    for _ in range(versions):
        client.create_model_version(name, src, run.info.run_id)
    return name, run, src


def test_feed_order_filter_and_paging(server, client):
    base = last_seq(server)
    a, run, src = new_model(client, versions=2, prefix="feeda")
    b, _, _ = new_model(client, versions=1, prefix="feedb")
    client.set_registered_model_alias(a, "prod", "1")
    client.set_registered_model_alias(a, "prod", "2")
    client.set_registered_model_alias(a, "prod", "2")  # no change: no event
    client.set_model_version_tag(a, "1", "k", "v")
    client.transition_model_version_stage(a, "2", "Staging")
    client.set_registered_model_alias(b, "x", "1")
    client.delete_registered_model_alias(a, "prod")
    client.update_registered_model(a, description="now documented")

    page = get_ok(server, "events", after=base, name=a, limit=1000).json()
    evs = page["events"]
    assert [(e["event"], e.get("version")) for e in evs] == [
        ("registered_model.created", None),
        ("model_version.created", "1"),
        ("model_version.created", "2"),
        ("model_version_alias.created", "1"),
        ("model_version_alias.created", "2"),
        ("model_version_tag.set", "1"),
        ("model_version.stage_transitioned", "2"),
        ("model_version_alias.deleted", "2"),
        ("registered_model.updated", None),
    ]
    seqs = [e["seq"] for e in evs]
    assert all(x < y for x, y in zip(seqs, seqs[1:])) and seqs[0] > base
    assert page["next_after"] == seqs[-1] and page["last_seq"] >= seqs[-1]
    for e in evs:
        assert e["name"] == a and e["data"]["name"] == a
        assert e["event"] == f"{e['entity']}.{e['action']}"
        assert isinstance(e["timestamp"], int) and e["timestamp"] > 1_600_000_000_000
    ts = [e["timestamp"] for e in evs]
    assert ts == sorted(ts)
    assert evs[1]["data"]["source"] == src and evs[1]["data"]["run_id"] == run.info.run_id
    assert evs[3]["data"] == {"name": a, "alias": "prod", "version": "1", "previous_version": None}
    assert evs[4]["data"] == {"name": a, "alias": "prod", "version": "2", "previous_version": "1"}
    assert evs[5]["data"]["key"] == "k" and evs[5]["data"]["value"] == "v"
    assert (evs[6]["data"]["from_stage"], evs[6]["data"]["to_stage"]) == ("None", "Staging")
    assert evs[7]["data"]["alias"] == "prod"
    assert evs[8]["data"]["description"] == "now documented"

    # Unfiltered, the two models interleave in commit order; the filter is exactly a subset.
    everything = get_ok(server, "events", after=base, limit=10000).json()["events"]
    all_seqs = [e["seq"] for e in everything]
    assert all(x < y for x, y in zip(all_seqs, all_seqs[1:]))
    assert [e for e in everything if e["name"] == a] == evs
    b_events = get_ok(server, "events", after=base, name=b).json()["events"]
    assert [e for e in everything if e["name"] == b] == b_events
    assert [e["event"] for e in b_events] == [
        "registered_model.created", "model_version.created", "model_version_alias.created"]
    assert b_events[0]["seq"] > evs[2]["seq"] and b_events[-1]["seq"] < evs[-2]["seq"]

    # Paging with `limit` and `next_after` walks the same list.
    walked, after = [], base
    while True:
        p = get_ok(server, "events", after=after, name=a, limit=2).json()
        assert len(p["events"]) <= 2
        if not p["events"]:
            assert p["next_after"] == after
            break
        walked += p["events"]
        after = p["next_after"]
    assert walked == evs


def test_feed_long_poll_wakes_on_alias_move(server, client):
    name, _, _ = new_model(client, versions=2, prefix="poll")
    client.set_registered_model_alias(name, "champion", "1")
    after = last_seq(server)
    result = {}

    def poll():
        t0 = time.monotonic()
        r = get(server, "events", after=after, name=name, wait_s=10)
        result.update(resp=r, started=t0, returned=time.monotonic())

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.4)  # the poll is waiting
    assert not result, "the long-poll returned before anything changed"
    before_set = time.monotonic()
    client.set_registered_model_alias(name, "champion", "2")
    set_returned = time.monotonic()
    t.join(12)
    assert result, "the long-poll did not return"
    assert result["resp"].status_code == 200, result["resp"].text
    assert result["returned"] >= before_set
    assert result["returned"] - set_returned < 1.0, result["returned"] - set_returned
    evs = result["resp"].json()["events"]
    assert len(evs) == 1
    e = evs[0]
    assert e["event"] == "model_version_alias.created" and e["seq"] > after
    assert e["data"] == {"name": name, "alias": "champion", "version": "2", "previous_version": "1"}
    assert e["version"] == "2"


def test_feed_empty_long_poll_and_bad_params(server, client):
    name, _, _ = new_model(client, versions=1, prefix="idle")
    after = last_seq(server)
    t0 = time.monotonic()
    body = get_ok(server, "events", after=after, name=name, wait_s=1).json()
    took = time.monotonic() - t0
    assert 0.9 <= took < 2.5, took
    assert body["events"] == [] and body["next_after"] == after and body["last_seq"] >= after

    t0 = time.monotonic()
    assert get_ok(server, "events", after=after, name=name).json()["events"] == []
    assert time.monotonic() - t0 < 0.5  # no wait_s: answers at once

    for params in [{"wait_s": 999}, {"wait_s": -1}, {"wait_s": "soon"}, {"after": -1},
                   {"after": "x"}, {"limit": 0}, {"limit": 10001}]:
        assert_error(get(server, "events", **params), 400, "INVALID_PARAMETER_VALUE")


# -- 4. webhooks -----------------------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint recording every POST. `status(n)` answers the n-th request (from 1)."""

    def __init__(self, status=lambda n: 200):
        self.status = status
        self.requests = []
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.cond:
                    outer.requests.append({"t": time.monotonic(), "path": self.path,
                                           "headers": {k.lower(): v for k, v in self.headers.items()},
                                           "body": body})
                    code = outer.status(len(outer.requests))
                    outer.cond.notify_all()
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, n, timeout=8.0):
        with self.cond:
            self.cond.wait_for(lambda: len(self.requests) >= n, timeout)
            assert len(self.requests) >= n, f"{len(self.requests)} of {n} webhook requests arrived"
            return list(self.requests)

    def bodies(self):
        with self.cond:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(**kw):
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def assert_signed(req, secret):
    h = req["headers"]
    content = f"{h['x-mlflow-delivery-id']}.{h['x-mlflow-timestamp']}.{req['body'].decode('utf-8')}"
    want = "v1," + base64.b64encode(hmac.new(secret.encode(), content.encode(), hashlib.sha256).digest()).decode()
    assert h["x-mlflow-signature"] == want
    assert h["content-type"].startswith("application/json")
    assert abs(int(h["x-mlflow-timestamp"]) - time.time()) < 60


def deliveries(server, webhook_id, at_least=0, timeout=5.0):
    """The delivery log, newest first. The server records an attempt right after the receiver
    answers, so a test that just saw the request waits for the record (`at_least`)."""
    deadline = time.monotonic() + timeout
    while True:
        log = get_ok(server, f"webhooks/{webhook_id}/deliveries").json()["deliveries"]
        if len(log) >= at_least or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


ALIAS_CREATED = WebhookEvent("model_version_alias", "created")
VERSION_CREATED = WebhookEvent("model_version", "created")


def test_webhook_retry_signature_and_delivery_log(server, client, receivers):
    name, run, src = new_model(client, versions=2, prefix="hook")
    client.set_registered_model_alias(name, "champion", "1")
    rx = receivers(status=lambda n: 500 if n == 1 else 200)  # the first request fails
    hook = client.create_webhook(name=unique("wh"), url=rx.url, events=[ALIAS_CREATED, VERSION_CREATED],
                                 secret="s", description="loop test")
    hook_ids = [hook.webhook_id]
    try:
        assert hook.status == WebhookStatus.ACTIVE and hook.url == rx.url
        assert set(hook.events) == {ALIAS_CREATED, VERSION_CREATED} and hook.secret is None
        got = client.get_webhook(hook.webhook_id)
        assert (got.webhook_id, got.name, got.url, got.description, got.status) == (
            hook.webhook_id, hook.name, rx.url, "loop test", WebhookStatus.ACTIVE)
        assert set(got.events) == set(hook.events)
        assert hook.webhook_id in [w.webhook_id for w in client.list_webhooks()]

        t_set = time.monotonic()
        client.set_registered_model_alias(name, "champion", "2")  # move the alias
        reqs = rx.wait_for(2)
        first, second = reqs[0], reqs[1]
        # Only events after the webhook was created are delivered: the first request is the move.
        assert first["t"] - t_set < 2.0
        assert 0.9 <= second["t"] - first["t"] < 4.0, "retried after the 1 s backoff"
        assert first["body"] == second["body"]
        assert first["headers"]["x-mlflow-delivery-id"] != second["headers"]["x-mlflow-delivery-id"]
        for req in (first, second):
            assert req["path"] == "/hook"
            assert_signed(req, "s")
        payload = json.loads(second["body"])
        assert payload["entity"] == "model_version_alias" and payload["action"] == "created"
        assert payload["data"]["name"] == name and payload["data"]["alias"] == "champion"
        assert payload["data"]["version"] == "2" and payload["data"].get("previous_version") == "1"
        assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
        seq = payload.get("seq")

        log = deliveries(server, hook.webhook_id, at_least=2)
        log = sorted(log, key=lambda d: d["attempt"])
        assert [(d["attempt"], d.get("status_code"), d["success"]) for d in log] == [(1, 500, False), (2, 200, True)]
        assert [d["delivery_id"] for d in log] == [r["headers"]["x-mlflow-delivery-id"] for r in (first, second)]
        assert {d["event"] for d in log} == {"model_version_alias.created"}
        assert {d["webhook_id"] for d in log} == {hook.webhook_id}
        if seq is not None:
            assert {d["event_seq"] for d in log} == {seq}

        # A new version is delivered at once (no retry state left behind).
        client.create_model_version(name, src, run.info.run_id)
        third = rx.wait_for(3)[2]
        assert_signed(third, "s")
        p3 = json.loads(third["body"])
        assert (p3["entity"], p3["action"]) == ("model_version", "created")
        assert p3["data"]["name"] == name and p3["data"]["version"] == "3"
        assert p3["data"]["source"] == src and p3["data"]["run_id"] == run.info.run_id

        # MLflow's test_webhook sends an example payload now.
        result = client.test_webhook(hook.webhook_id)
        assert result.success and result.response_status == 200
        example = rx.wait_for(4)[3]
        assert_signed(example, "s")
        pe = json.loads(example["body"])
        assert (pe["entity"], pe["action"]) == ("model_version_alias", "created")
        assert pe["data"]["alias"] == "example_alias" and pe["data"]["name"] == "example_model"
        result = client.test_webhook(hook.webhook_id, event=VERSION_CREATED)
        assert result.success
        pe = json.loads(rx.wait_for(5)[4]["body"])
        assert (pe["entity"], pe["action"]) == ("model_version", "created")

        # Disabled: receives nothing. A second, active webhook (processed after it) is the clock.
        off = client.update_webhook(hook.webhook_id, status=WebhookStatus.DISABLED)
        assert off.status == WebhookStatus.DISABLED and set(off.events) == set(hook.events)
        assert client.get_webhook(hook.webhook_id).status == WebhookStatus.DISABLED
        time.sleep(0.01)
        clock = receivers()
        probe = client.create_webhook(name=unique("probe"), url=clock.url, events=[ALIAS_CREATED])
        hook_ids.append(probe.webhook_id)
        n_before = len(rx.requests)
        log_before = len(deliveries(server, hook.webhook_id))
        client.set_registered_model_alias(name, "champion", "3")
        assert json.loads(clock.wait_for(1)[0]["body"])["data"]["version"] == "3"
        assert "x-mlflow-signature" not in clock.requests[0]["headers"]  # no secret, no signature
        time.sleep(0.3)
        assert len(rx.requests) == n_before
        assert len(deliveries(server, hook.webhook_id)) == log_before

        # Re-enabled: only new events arrive; what happened while disabled is not replayed.
        client.update_webhook(hook.webhook_id, status=WebhookStatus.ACTIVE)
        client.set_registered_model_alias(name, "champion", "1")
        new = json.loads(rx.wait_for(n_before + 1)[n_before]["body"])
        assert new["data"]["version"] == "1" and new["data"].get("previous_version") == "3"
        time.sleep(0.3)
        assert len(rx.requests) == n_before + 1

        # Deleted: gone from get/list; its delivery log with it.
        for wid in list(hook_ids):
            client.delete_webhook(wid)
            hook_ids.remove(wid)
        with pytest.raises(MlflowException) as ex:
            client.get_webhook(hook.webhook_id)
        assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert hook.webhook_id not in [w.webhook_id for w in client.list_webhooks()]
        assert_error(get(server, f"webhooks/{hook.webhook_id}/deliveries"), 404, "RESOURCE_DOES_NOT_EXIST")
    finally:
        for wid in hook_ids:
            client.delete_webhook(wid)


def test_webhook_validation(server, client):
    with pytest.raises(MlflowException) as ex:
        client.create_webhook(name=unique("bad"), url="ftp://example.com/x", events=[ALIAS_CREATED])
    assert ex.value.error_code == "INVALID_PARAMETER_VALUE"
    r = requests.post(f"{server.url}/api/2.0/mlflow/webhooks", timeout=30, json={
        "name": unique("bad"), "url": "http://127.0.0.1:9/x",
        "events": [{"entity": "MODEL_VERSION", "action": "EXPLODED"}]})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    r = requests.post(f"{server.url}/api/2.0/mlflow/webhooks", timeout=30,
                      json={"name": unique("bad"), "url": "http://127.0.0.1:9/x", "events": []})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    with pytest.raises(MlflowException) as ex:
        client.get_webhook("0" * 32)
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as ex:
        client.delete_webhook("0" * 32)
    assert ex.value.error_code == "RESOURCE_DOES_NOT_EXIST"


# -- 5. durability ---------------------------------------------------------------------------------


def test_feed_and_webhooks_survive_a_restart(start_server, tmp_path, receivers):
    data_dir = tmp_path / "data"
    srv = start_server(data_dir)
    c1 = MlflowClient(srv.url)
    name, _, _ = new_model(c1, versions=2, prefix="durable")
    down = {"on": True}
    rx = receivers(status=lambda n: 503 if down["on"] else 200)
    hook = c1.create_webhook(name=unique("dur"), url=rx.url, events=[ALIAS_CREATED], secret="k")
    c1.set_registered_model_alias(name, "champion", "1")
    failed = rx.wait_for(1)[0]  # attempt 1 fails; the event stays undelivered
    seq = json.loads(failed["body"]).get("seq")
    before = get_ok(srv, "events", name=name).json()
    assert [e["event"] for e in before["events"]] == [
        "registered_model.created", "model_version.created", "model_version.created",
        "model_version_alias.created"]
    srv.stop()

    down["on"] = False
    srv2 = start_server(data_dir)  # same SQLite file, new process and port
    c2 = MlflowClient(srv2.url)
    after = get_ok(srv2, "events", name=name).json()
    assert after["events"] == before["events"]  # same seq, timestamps and data
    assert after["last_seq"] == before["last_seq"]
    got = c2.get_webhook(hook.webhook_id)
    assert (got.name, got.url, got.status, set(got.events)) == (hook.name, rx.url, WebhookStatus.ACTIVE, {ALIAS_CREATED})
    assert [w.webhook_id for w in c2.list_webhooks()] == [hook.webhook_id]

    # The durable cursor did not move past the failed event: it is delivered after the restart.
    redelivered = rx.wait_for(2)[1]
    assert redelivered["body"] == failed["body"]
    assert_signed(redelivered, "k")
    log = deliveries(srv2, hook.webhook_id, at_least=2)
    assert sorted((d.get("status_code"), d["success"]) for d in log) == [(200, True), (503, False)]
    if seq is not None:
        assert {d["event_seq"] for d in log} == {seq}

    # New events continue the sequence and are delivered too.
    c2.set_registered_model_alias(name, "champion", "2")
    newest = json.loads(rx.wait_for(3)[2]["body"])
    assert newest["data"]["version"] == "2" and newest["data"]["previous_version"] == "1"
    evs = get_ok(srv2, "events", name=name).json()["events"]
    assert evs[:-1] == before["events"] and evs[-1]["seq"] > before["last_seq"]
    time.sleep(0.3)
    assert len(rx.requests) == 3  # nothing delivered twice


# -- lineage history follows the model itself (renames, re-created names) ---------------------------


def test_lineage_history_of_a_recreated_model(server, client):
    name, run, src = new_model(client, versions=1, prefix="recreate")
    client.set_registered_model_alias(name, "old", "1")
    client.delete_registered_model(name)
    client.create_registered_model(name)
    client.create_model_version(name, src, run.info.run_id)
    lin = get_ok(server, "lineage", uri=f"models:/{name}/1").json()
    assert lin["model_version"]["aliases"] == []
    assert [h["event"] for h in lin["history"]] == ["model_version.created"]


def test_lineage_history_survives_a_rename(server, client):
    name, _, _ = new_model(client, versions=1, prefix="rename")
    client.set_registered_model_alias(name, "champion", "1")
    client.rename_registered_model(name, name + "-new")
    lin = get_ok(server, "lineage", uri=f"models:/{name}-new@champion").json()
    assert [h["event"] for h in lin["history"]] == ["model_version.created", "model_version_alias.created"]
