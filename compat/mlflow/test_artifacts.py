import hashlib
import json
import os

import mlflow


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_log_list_download(client, experiment, tmp_path):
    hello = tmp_path / "hello.txt"
    hello.write_text("hello world")
    with mlflow.start_run() as r:
        mlflow.log_artifact(str(hello))
        mlflow.log_artifact(str(hello), "sub/dir")
        mlflow.log_text("some notes", "notes/n.txt")
        mlflow.log_dict({"a": 1}, "cfg.json")
    rid = r.info.run_id
    top = client.list_artifacts(rid)
    assert [(f.path, f.is_dir) for f in top] == [
        ("cfg.json", False),
        ("hello.txt", False),
        ("notes", True),
        ("sub", True),
    ]
    assert [f.file_size for f in top if not f.is_dir] == [len(json.dumps({"a": 1}, indent=2)), 11] or top[1].file_size == 11
    assert [f.path for f in client.list_artifacts(rid, "sub")] == ["sub/dir"]
    out = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="sub", dst_path=str(tmp_path / "dl"))
    assert open(os.path.join(out, "dir", "hello.txt")).read() == "hello world"
    assert mlflow.artifacts.load_text(f"runs:/{rid}/notes/n.txt") == "some notes"
    assert mlflow.artifacts.load_dict(f"runs:/{rid}/cfg.json") == {"a": 1}
    assert client.list_artifacts(rid, "missing-dir") == []


def test_log_artifacts_nested_tree(client, experiment, tmp_path):
    src = tmp_path / "tree"
    write(str(src / "a.txt"), "A")
    write(str(src / "d1" / "b.txt"), "B")
    write(str(src / "d1" / "d2" / "c.txt"), "C")
    with mlflow.start_run() as r:
        mlflow.log_artifacts(str(src), "tree")
    out = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path="tree", dst_path=str(tmp_path / "o"))
    got = {}
    for root, _, files in os.walk(out):
        for f in files:
            got[os.path.relpath(os.path.join(root, f), out)] = open(os.path.join(root, f)).read()
    assert got == {"a.txt": "A", os.path.join("d1", "b.txt"): "B", os.path.join("d1", "d2", "c.txt"): "C"}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_file(path, mib):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            block = hashlib.sha256(str(i).encode()).digest() * (1 << 15)  # 1 MiB
            h.update(block)
            f.write(block)
    return h.hexdigest()


def test_large_files_round_trip_streamed(client, experiment, tmp_path, server):
    for mib in (50, 300):
        big = tmp_path / f"big{mib}.bin"
        digest = make_file(str(big), mib)
        with mlflow.start_run() as r:
            mlflow.log_artifact(str(big))
        out = mlflow.artifacts.download_artifacts(
            run_id=r.info.run_id, artifact_path=big.name, dst_path=str(tmp_path / f"dl{mib}")
        )
        assert os.path.getsize(out) == mib << 20
        assert sha256_of(out) == digest
        os.remove(out)
        os.remove(big)
    # the server streamed: its memory stays far below the file size
    with open(f"/proc/{server.proc.pid}/status") as f:
        rss_kib = int(next(l for l in f if l.startswith("VmHWM")).split()[1])
    assert rss_kib < 200 * 1024, f"peak RSS {rss_kib} KiB suggests whole-file buffering"
