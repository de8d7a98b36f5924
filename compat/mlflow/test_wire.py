"""Wire edges with raw HTTP: what the real server does with requests the client (or a careless
caller) can send. Error codes are those of MLflow 3 (see the wire reference, sections 1 and 7).
The log-batch size limits live in test_metrics.py."""

import http.client
import json

import pytest
import requests

from loopml_server import assert_error, metrics_of, params_of, tags_of, unique


def raw(server, method, path, body=None):
    """A request sent byte for byte: `requests` would normalise `..` segments away."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_health(server):
    r = requests.get(server.url + "/health", timeout=5)
    assert r.status_code == 200 and r.text.strip() == "OK"


def test_version_is_the_mlflow_version_the_client_gates_on(server):
    """The client reads /version to decide what the server supports (spans need >= 3.4), so it
    reports the MLflow version loopml speaks; loopml's own version is beside it."""
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds
    from packaging.version import Version

    RestStore._get_server_version.cache_clear()
    assert RestStore._get_server_version(MlflowHostCreds(server.url)) == Version("3.17.2")
    r = requests.get(server.url + "/api/2.0/loopml/version", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["mlflow_version"] == "3.17.2" and Version(body["version"]) >= Version("0.1.0")


@pytest.mark.parametrize(
    "path,payload,message",
    [
        ("experiments/create", {"name": 123}, "Invalid value 123 for parameter 'name'"),
        (
            "experiments/create",
            {"name": "e", "artifact_location": 9.0, "tags": [{"key": "k", "value": "v"}]},
            "Invalid value 9.0 for parameter 'artifact_location'",
        ),
        ("experiments/create", {"name": "e", "tags": "5"}, "Invalid value \\\"5\\\" for parameter 'tags'"),
        (
            "runs/log-metric",
            {"run_id": 31, "key": "m", "value": 41, "timestamp": 59, "step": 26},
            "Invalid value 31 for parameter 'run_id' supplied",
        ),
        ("runs/log-parameter", {"run_id": 31, "key": "p", "value": "41"}, "Invalid value 31 for parameter 'run_id' supplied"),
    ],
)
def test_wrongly_typed_fields_are_named_as_mlflow_names_them(server, path, payload, message):
    """A number where MLflow's proto has a string is refused before anything is looked up (a
    run id 31 is not "run 31 not found"), in mlflow server's words (MLflow's own
    test_create_experiment_validation / test_log_metric_validation check these texts)."""
    r = server.api("POST", path, json=payload)
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    assert message in r.text, r.text


def test_wrongly_typed_fields_of_an_existing_run(server):
    run_id = server.new_run()
    for payload, message in [
        ({"run_id": run_id, "key": 31, "value": 41, "timestamp": 59, "step": 26}, "Invalid value 31 for parameter 'key' supplied"),
        ({"run_id": run_id, "key": "foo", "value": 31, "timestamp": 59, "step": "foo"}, "Invalid value \\\"foo\\\" for parameter 'step' supplied"),
        ({"run_id": run_id, "key": "foo", "value": 31, "timestamp": "foo", "step": 41}, "Invalid value \\\"foo\\\" for parameter 'timestamp' supplied"),
    ]:
        r = server.api("POST", "runs/log-metric", json=payload)
        assert_error(r, 400, "INVALID_PARAMETER_VALUE")
        assert message in r.text, r.text
    run = server.ok("GET", "runs/get", params={"run_id": run_id})["run"]
    assert run["data"].get("metrics", []) == []


def test_post_without_content_type(server):
    name = unique("no-ctype")
    r = requests.post(server.url + "/api/2.0/mlflow/experiments/create", data=json.dumps({"name": name}), timeout=10)
    assert "Content-Type" not in r.request.headers
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    r = server.api("GET", "experiments/get-by-name", params={"experiment_name": name})
    assert_error(r, 404, "RESOURCE_DOES_NOT_EXIST")


def test_malformed_json_and_missing_fields(server):
    r = server.api("POST", "runs/log-batch", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    assert "run_id" in assert_error(server.api("GET", "runs/get"), 400, "INVALID_PARAMETER_VALUE")["message"]
    assert "name" in assert_error(server.api("POST", "experiments/create", json={}), 400, "INVALID_PARAMETER_VALUE")["message"]
    rid = server.new_run()
    body = assert_error(
        server.api("POST", "runs/log-metric", json={"run_id": rid, "key": "m", "value": 1.0}),
        400, "INVALID_PARAMETER_VALUE",
    )
    assert "timestamp" in body["message"]
    assert_error(
        server.api("POST", "runs/log-metric", json={"run_id": rid, "key": "m", "value": "abc", "timestamp": 1}),
        400, "INVALID_PARAMETER_VALUE",
    )


def test_unknown_endpoint(server):
    assert_error(server.api("GET", "no/such/thing"), 404, "ENDPOINT_NOT_FOUND")


def test_long_values_are_truncated(server):
    rid = server.new_run()
    server.ok("POST", "runs/log-parameter", json={"run_id": rid, "key": "long", "value": "x" * 6999 + "y"})
    server.ok("POST", "runs/set-tag", json={"run_id": rid, "key": "longtag", "value": "t" * 9000})
    run = server.get_run(rid)
    assert params_of(run)["long"] == "x" * 6000
    assert tags_of(run)["longtag"] == "t" * 8000


def test_key_length_limits(server):
    rid = server.new_run()
    server.ok("POST", "runs/set-tag", json={"run_id": rid, "key": "k" * 250, "value": "v"})
    assert_error(server.api("POST", "runs/set-tag", json={"run_id": rid, "key": "k" * 251, "value": "v"}), 400, "INVALID_PARAMETER_VALUE")
    assert_error(server.api("POST", "runs/log-parameter", json={"run_id": rid, "key": "p" * 251, "value": "v"}), 400, "INVALID_PARAMETER_VALUE")
    assert_error(
        server.api("POST", "runs/log-metric", json={"run_id": rid, "key": "m" * 251, "value": 1, "timestamp": 1}),
        400, "INVALID_PARAMETER_VALUE",
    )
    tags = tags_of(server.get_run(rid))
    assert "k" * 250 in tags and "k" * 251 not in tags


@pytest.mark.parametrize("bad", ["bad|name", "../x", "/lead", "a//b", ".", "a/../b", "semi;colon"])
def test_bad_metric_keys(server, bad):
    rid = server.new_run()
    r = server.api("POST", "runs/log-metric", json={"run_id": rid, "key": bad, "value": 1, "timestamp": 1})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    r = server.api("POST", "runs/log-batch", json={"run_id": rid, "metrics": [{"key": bad, "value": 1, "timestamp": 1}]})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    assert metrics_of(server.get_run(rid)) == {}


def test_odd_but_valid_keys(server):
    rid = server.new_run()
    key = "a/b c:d-e.f_g9"
    server.ok("POST", "runs/log-metric", json={"run_id": rid, "key": key, "value": 1, "timestamp": 1})
    server.ok("POST", "runs/log-parameter", json={"run_id": rid, "key": key, "value": "v"})
    run = server.get_run(rid)
    assert metrics_of(run) == {key: 1} and params_of(run) == {key: "v"}


def test_non_finite_strings_and_string_int64s(server):
    rid = server.new_run()
    for key, value in [("pinf", "Infinity"), ("ninf", "-Infinity"), ("nan", "NaN")]:
        server.ok("POST", "runs/log-metric", json={"run_id": rid, "key": key, "value": value, "timestamp": "5", "step": "7"})
    server.ok("POST", "runs/log-batch", json={
        "run_id": rid, "metrics": [{"key": "s", "value": 2.5, "timestamp": "1795413406043", "step": "3"}]})
    hist = server.history(rid, "pinf")
    assert [(m["value"], m["timestamp"], m["step"]) for m in hist] == [("Infinity", 5, 7)]
    assert metrics_of(server.get_run(rid)) == {"pinf": "Infinity", "ninf": "-Infinity", "nan": "NaN", "s": 2.5}
    assert [(m["timestamp"], m["step"]) for m in server.history(rid, "s")] == [(1795413406043, 3)]


def test_enum_integers_accepted(server):
    rid = server.new_run()
    server.ok("POST", "runs/update", json={"run_id": rid, "status": 3, "end_time": 10})  # 3 = FINISHED
    info = server.get_run(rid)["info"]
    assert info["status"] == "FINISHED" and int(info["end_time"]) == 10


def test_run_name_disagreeing_with_tag(server):
    r = server.api("POST", "runs/create", json={
        "experiment_id": "0", "run_name": "one", "tags": [{"key": "mlflow.runName", "value": "two"}]})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")


def test_experiment_validation(server):
    assert_error(server.api("POST", "experiments/create", json={"name": ""}), 400, "INVALID_PARAMETER_VALUE")
    assert_error(server.api("POST", "experiments/create", json={"name": "n" * 501}), 400, "INVALID_PARAMETER_VALUE")
    exp = server.ok("POST", "experiments/create", json={"name": unique("tagval")})["experiment_id"]
    server.ok("POST", "experiments/set-experiment-tag", json={"experiment_id": exp, "key": "ok", "value": "v" * 20000})
    assert_error(
        server.api("POST", "experiments/set-experiment-tag", json={"experiment_id": exp, "key": "big", "value": "v" * 20001}),
        400, "INVALID_PARAMETER_VALUE",
    )
    assert_error(server.api("GET", "experiments/get", params={"experiment_id": "424242"}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_search_max_results_bounds(server):
    assert_error(server.api("POST", "experiments/search", json={"max_results": 0}), 400, "INVALID_PARAMETER_VALUE")
    assert_error(
        server.api("POST", "runs/search", json={"experiment_ids": ["0"], "max_results": 50001}),
        400, "INVALID_PARAMETER_VALUE",
    )
    assert server.ok("POST", "runs/search", json={}).get("runs", []) == []


def test_server_info_promises_the_multipart_it_serves(server):
    r = requests.get(server.url + "/api/3.0/mlflow/server-info", timeout=5)
    assert r.status_code == 200
    info = r.json()
    # The client then sends files >= MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE through mpu/*
    # and downloads large ones in parallel ranges from presigned/*.
    assert info["multipart_uploads_enabled"] is True
    assert info["multipart_downloads_enabled"] is True
    assert not info.get("artifacts_presigned_only")


# -- artifact proxy -------------------------------------------------------------------------------


def test_artifact_list_of_missing_dir(server):
    r = requests.get(server.artifacts_url("artifacts"), params={"path": "0/nothing/here"}, timeout=10)
    assert r.status_code == 200
    assert r.json().get("files", []) == []


def test_artifact_missing_file_is_404_json(server):
    r = requests.get(server.artifacts_url("artifacts/0/nothing/here.txt"), timeout=10)
    assert_error(r, 404, "RESOURCE_DOES_NOT_EXIST")


def test_artifact_put_get_list_raw(server):
    rel = f"0/{unique('raw')}/artifacts/f.txt"
    assert requests.put(server.artifacts_url(f"artifacts/{rel}"), data=b"payload", timeout=10).status_code == 200
    r = requests.get(server.artifacts_url(f"artifacts/{rel}"), timeout=10)
    assert r.status_code == 200 and r.content == b"payload"
    listing = requests.get(server.artifacts_url("artifacts"), params={"path": rel.rsplit("/", 1)[0]}, timeout=10).json()
    assert [(f["path"], f["is_dir"], int(f["file_size"])) for f in listing["files"]] == [("f.txt", False, 7)]


@pytest.mark.parametrize(
    "path",
    [
        "0/../../etc/passwd",
        "0/a/../../../x",
        "0/a/%2E%2E/%2E%2E/%2E%2E/x",
        "0/a/..%2F..%2F..%2Fx",
        "..",
    ],
)
@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_artifact_dot_dot_rejected(server, method, path):
    status, body = raw(server, method, "/api/2.0/mlflow-artifacts/artifacts/" + path, b"x" if method == "PUT" else None)
    assert status == 400, (method, path, status, body[:200])
    assert json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("path", ["../", "0/../..", "/etc", "/tmp/x"])
def test_artifact_list_traversal_and_absolute_rejected(server, path):
    r = requests.get(server.artifacts_url("artifacts"), params={"path": path}, timeout=10)
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")


def test_artifact_absolute_path_rejected(server):
    for method in ["PUT", "GET"]:
        status, body = raw(server, method, "/api/2.0/mlflow-artifacts/artifacts/%2Fetc%2Fpasswd", b"x" if method == "PUT" else None)
        assert status == 400, (method, status, body[:200])
        assert json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"


def test_multipart_upload_raw_protocol(server):
    """mpu/create → PUT each part to the URL it hands out → mpu/complete, as MLflow's client does."""
    d = f"0/{unique('mpu')}/artifacts/sub"
    r = requests.post(server.artifacts_url(f"mpu/create/{d}"), json={"path": "/tmp/local/f.bin", "num_parts": 2}, timeout=10)
    assert r.status_code == 200, r.text
    create = r.json()
    assert [c["part_number"] for c in create["credentials"]] == [1, 2]
    parts = [b"a" * (5 << 20), b"the end"]
    done = []
    for cred, data in zip(reversed(create["credentials"]), reversed(parts)):
        put = requests.put(cred["url"], data=data, headers=cred.get("headers", {}), timeout=30)
        assert put.status_code == 200, put.text
        assert put.headers["ETag"]
        done.append({"part_number": cred["part_number"], "etag": put.headers["ETag"], "url": cred["url"]})
    r = requests.post(server.artifacts_url(f"mpu/complete/{d}"),
                      json={"path": "/tmp/local/f.bin", "upload_id": create["upload_id"], "parts": done}, timeout=30)
    assert r.status_code == 200, r.text
    got = requests.get(server.artifacts_url(f"artifacts/{d}/f.bin"), timeout=30)
    assert got.content == parts[0] + parts[1]
    # A range of it, as the parallel downloader asks.
    part = requests.get(server.artifacts_url(f"artifacts/{d}/f.bin"), headers={"Range": "bytes=5242878-5242882"}, timeout=10)
    assert part.status_code == 206 and part.content == b"aathe"[:5]
    assert part.headers["Content-Range"] == f"bytes 5242878-5242882/{len(parts[0]) + 7}"
    outside = requests.get(server.artifacts_url(f"artifacts/{d}/f.bin"), headers={"Range": "bytes=99999999-"}, timeout=10)
    assert outside.status_code == 416 and outside.headers["Content-Range"] == f"bytes */{len(parts[0]) + 7}"
    presigned = requests.get(server.artifacts_url(f"presigned/{d}/f.bin"), timeout=10).json()
    assert presigned["file_size"] == len(parts[0]) + 7
    assert requests.get(presigned["url"], headers={"Range": "bytes=-7", **presigned["headers"]}, timeout=10).content == b"the end"


def test_multipart_upload_bad_input(server):
    d = f"0/{unique('mpu')}/artifacts"
    assert_error(requests.post(server.artifacts_url(f"mpu/create/{d}"), json={"num_parts": 2}, timeout=10),
                 400, "INVALID_PARAMETER_VALUE")
    assert_error(requests.post(server.artifacts_url(f"mpu/create/{d}"), json={"path": "f", "num_parts": 0}, timeout=10),
                 400, "INVALID_PARAMETER_VALUE")
    assert_error(requests.post(server.artifacts_url(f"mpu/create/{d}"), json={"path": "f", "num_parts": 10001}, timeout=10),
                 400, "INVALID_PARAMETER_VALUE")
    status, body = raw(server, "POST", f"/api/2.0/mlflow-artifacts/mpu/create/0/%2E%2E/%2E%2E/x", b'{"path": "f"}')
    assert status == 400 and json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"
    create = requests.post(server.artifacts_url(f"mpu/create/{d}"), json={"path": "f.bin", "num_parts": 1}, timeout=10).json()
    url = create["credentials"][0]["url"]
    assert_error(requests.put(url.replace("part_number=1", "part_number=0"), data=b"x", timeout=10), 400, "INVALID_PARAMETER_VALUE")
    assert_error(requests.put(url.replace("part_number=1", "part_number=abc"), data=b"x", timeout=10), 400, "INVALID_PARAMETER_VALUE")
    etag = requests.put(url, data=b"x", timeout=10).headers["ETag"]
    # Parts must be 1..N without gaps.
    r = requests.post(server.artifacts_url(f"mpu/complete/{d}"),
                      json={"path": "f.bin", "upload_id": create["upload_id"], "parts": [{"part_number": 2, "etag": etag}]}, timeout=10)
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    r = requests.post(server.artifacts_url(f"mpu/complete/{d}"), json={"path": "f.bin", "parts": []}, timeout=10)
    assert_error(r, 400, "INVALID_PARAMETER_VALUE")
    r = requests.post(server.artifacts_url(f"mpu/abort/{d}"), json={"path": "f.bin", "upload_id": create["upload_id"]}, timeout=10)
    assert r.status_code == 200, r.text
    assert requests.get(server.artifacts_url(f"artifacts/{d}/f.bin"), timeout=10).status_code == 404
    # presigned/ of a missing file, or of a path that escapes the root.
    assert_error(requests.get(server.artifacts_url(f"presigned/{d}/none.bin"), timeout=10), 404, "RESOURCE_DOES_NOT_EXIST")
    status, body = raw(server, "GET", "/api/2.0/mlflow-artifacts/presigned/0/%2E%2E/%2E%2E/etc/passwd")
    assert status == 400 and json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"
    # A Range this server does not serve (several ranges) gets the whole file, as HTTP allows.
    rel = f"0/{unique('rng')}/artifacts/r.txt"
    requests.put(server.artifacts_url(f"artifacts/{rel}"), data=b"0123456789", timeout=10)
    whole = requests.get(server.artifacts_url(f"artifacts/{rel}"), headers={"Range": "bytes=0-1,4-5"}, timeout=10)
    assert whole.status_code == 200 and whole.content == b"0123456789"