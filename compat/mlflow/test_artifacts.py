"""Artifacts through the mlflow-artifacts proxy: log, list, download, nested trees, odd names,
and large files streamed both ways (compared by sha256, never held whole in memory)."""

import hashlib
import os

import mlflow

CHUNK = 1 << 20  # 1 MiB


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
    sizes = {f.path: f.file_size for f in top}
    assert sizes["hello.txt"] == 11
    cfg = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="cfg.json", dst_path=str(tmp_path / "c"))
    assert sizes["cfg.json"] == os.path.getsize(cfg)
    assert [(f.path, f.is_dir) for f in client.list_artifacts(rid, "sub")] == [("sub/dir", True)]
    assert [(f.path, f.file_size) for f in client.list_artifacts(rid, "sub/dir")] == [("sub/dir/hello.txt", 11)]

    out = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="sub", dst_path=str(tmp_path / "dl"))
    with open(os.path.join(out, "dir", "hello.txt"), "rb") as f:
        assert f.read() == b"hello world"
    assert mlflow.artifacts.load_text(f"runs:/{rid}/notes/n.txt") == "some notes"
    assert mlflow.artifacts.load_dict(f"runs:/{rid}/cfg.json") == {"a": 1}
    assert client.list_artifacts(rid, "missing-dir") == []


def test_log_artifacts_nested_tree(client, experiment, tmp_path):
    src = tmp_path / "tree"
    files = {
        "a.txt": b"A",
        "d1/b.txt": b"B" * 1000,
        "d1/d2/c.bin": bytes(range(256)) * 3,
        "d1/d2/d3/deep.txt": b"deep",
        "e/empty.txt": b"",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    with mlflow.start_run() as r:
        mlflow.log_artifacts(str(src), "tree")
        mlflow.log_artifacts(str(src))  # at the root too
    rid = r.info.run_id

    assert [(f.path, f.is_dir) for f in client.list_artifacts(rid, "tree/d1")] == [
        ("tree/d1/b.txt", False),
        ("tree/d1/d2", True),
    ]
    for where in ["tree", None]:
        out = mlflow.artifacts.download_artifacts(
            run_id=rid, artifact_path=where, dst_path=str(tmp_path / f"out-{where}")
        )
        got = {}
        for root, _, names in os.walk(out):
            for n in names:
                full = os.path.join(root, n)
                with open(full, "rb") as f:
                    got[os.path.relpath(full, out).replace(os.sep, "/")] = f.read()
        if where is None:
            got = {k: v for k, v in got.items() if not k.startswith("tree/")}
        assert got == files, where


def test_overwrite_and_odd_names(client, experiment):
    with mlflow.start_run() as r:
        mlflow.log_text("first", "o/over.txt")
        mlflow.log_text("second", "o/over.txt")
        mlflow.log_text("spaces and ünïcödé", "dir with space/ünï cödé (1)+x.txt")
        mlflow.log_text("pct", "p/100% sure.txt")
    rid = r.info.run_id
    assert mlflow.artifacts.load_text(f"runs:/{rid}/o/over.txt") == "second"
    assert [f.path for f in client.list_artifacts(rid, "dir with space")] == ["dir with space/ünï cödé (1)+x.txt"]
    assert mlflow.artifacts.load_text(f"runs:/{rid}/dir with space/ünï cödé (1)+x.txt") == "spaces and ünïcödé"
    assert mlflow.artifacts.load_text(f"runs:/{rid}/p/100% sure.txt") == "pct"


def _write_file(path, mib: int) -> str:
    """Writes `mib` MiB of non-repeating-per-MiB bytes in 1 MiB chunks; returns the sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            block = hashlib.sha256(i.to_bytes(8, "little")).digest() * (CHUNK // 32)
            h.update(block)
            f.write(block)
    return h.hexdigest()


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _round_trip(client, tmp_path, mib):
    big = tmp_path / f"big{mib}.bin"
    digest = _write_file(big, mib)
    try:
        with mlflow.start_run() as r:
            mlflow.log_artifact(str(big), "blobs")
        listed = client.list_artifacts(r.info.run_id, "blobs")
        assert [(f.path, f.file_size) for f in listed] == [(f"blobs/{big.name}", mib * CHUNK)]
        out = mlflow.artifacts.download_artifacts(
            run_id=r.info.run_id, artifact_path=f"blobs/{big.name}", dst_path=str(tmp_path / "dl")
        )
        try:
            assert os.path.getsize(out) == mib * CHUNK
            assert _sha256(out) == digest
        finally:
            os.remove(out)
    finally:
        os.remove(big)


def test_50mb_round_trip(client, experiment, tmp_path):
    _round_trip(client, tmp_path, 50)


def test_300mb_streamed_round_trip(client, experiment, tmp_path, server):
    _round_trip(client, tmp_path, 300)
    rss = server.peak_rss_kib()  # None where there is no /proc
    # A server that buffers the body would have peaked above the file size.
    assert rss is None or rss < 200 * 1024, f"server peak RSS {rss} KiB after a 300 MiB file: it did not stream"


def test_client_multipart_upload_and_parallel_download(client, experiment, tmp_path, monkeypatch):
    """With the client's thresholds lowered, a 12 MiB file goes up through mpu/* in 5 MiB parts
    and comes down in parallel 3 MiB ranges from the URL presigned/* hands out."""
    from mlflow.store.artifact import http_artifact_repo

    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(1 << 20))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 << 20))
    monkeypatch.setenv("MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE", str(1 << 20))
    monkeypatch.setenv("MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE", str(3 << 20))
    used = {"upload": 0, "download": 0}
    repo = http_artifact_repo.HttpArtifactRepository
    real_up, real_down = repo._try_multipart_upload, repo._multipart_download

    def spy_up(self, *a, **kw):
        used["upload"] += 1
        return real_up(self, *a, **kw)

    def spy_down(self, *a, **kw):
        used["download"] += 1
        return real_down(self, *a, **kw)

    monkeypatch.setattr(repo, "_try_multipart_upload", spy_up)
    monkeypatch.setattr(repo, "_multipart_download", spy_down)
    big = tmp_path / "mpu.bin"
    data = os.urandom((12 << 20) + 12345)
    big.write_bytes(data)
    with mlflow.start_run() as r:
        mlflow.log_artifact(str(big), "parts")
    assert used["upload"] == 1, "the client did not take the multipart path"
    listed = client.list_artifacts(r.info.run_id, "parts")
    assert [(f.path, f.file_size) for f in listed] == [("parts/mpu.bin", len(data))]
    out = mlflow.artifacts.download_artifacts(
        run_id=r.info.run_id, artifact_path="parts/mpu.bin", dst_path=str(tmp_path / "dl")
    )
    assert used["download"] == 1, "the client did not download in parallel ranges"
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(data).hexdigest()
