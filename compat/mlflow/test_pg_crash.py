"""PostgreSQL crashing under load (`pg_ctl stop -m immediate`, what a killed database or a lost
node looks like): writers get fast 503 TEMPORARILY_UNAVAILABLE answers, never a hang; every
acknowledged log_batch survives; no batch is half-written; and the same loopml process serves
writes again once PostgreSQL is back, without a restart. Runs when COMPAT_DATABASE_URL names the
PostgreSQL that scripts/postgres.sh manages (scripts/test.sh)."""

import os
import subprocess
import threading
import time

import pytest
import requests

from loopml_server import DATABASE_URL
from test_crash import assert_batches_intact, batch_body

pytestmark = pytest.mark.skipif(not DATABASE_URL, reason="needs COMPAT_DATABASE_URL (PostgreSQL)")

POSTGRES_SH = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "postgres.sh")


def pg(action: str) -> None:
    subprocess.run(["bash", POSTGRES_SH, action], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


def test_postgres_crash_mid_ingest_loses_no_acknowledged_batch(start_server, tmp_path):
    srv = start_server(tmp_path / "pg-crash")
    rid = srv.new_run()
    acked: list[int] = []
    unacked: list[int] = []
    failures: list[tuple[int, float]] = []  # (status, seconds the answer took)
    others: list[str] = []
    stop = threading.Event()
    counter = iter(range(1_000_000))
    lock = threading.Lock()

    def writer():
        session = requests.Session()
        while not stop.is_set():
            with lock:
                i = next(counter)
            t0 = time.monotonic()
            try:
                r = session.post(f"{srv.url}/api/2.0/mlflow/runs/log-batch", json=batch_body(rid, i),
                                 timeout=30)
            except requests.RequestException as e:
                others.append(f"batch {i}: {e}")
                return
            took = time.monotonic() - t0
            if r.status_code == 200:
                acked.append(i)
            else:
                unacked.append(i)
                failures.append((r.status_code, took))
                if r.status_code != 503 or r.json().get("error_code") != "TEMPORARILY_UNAVAILABLE":
                    others.append(f"batch {i}: {r.status_code} {r.text[:300]}")
                time.sleep(0.05)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        before = len(acked)
        pg("kill")  # pg_ctl stop -m immediate: no shutdown checkpoint, clients cut off
        time.sleep(1.5)
        during = len(failures)
        pg("start")
        # The same loopml process recovers: writes succeed again within a few seconds.
        deadline = time.monotonic() + 20
        while len(acked) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
        pg("start")  # whatever happened, leave the shared server running
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert not others, others[:5]
    assert before >= 5, f"only {before} batches acknowledged before the crash"
    assert during >= 1, "no request saw the database down"
    assert max(took for _, took in failures) < 10, f"slow failure answers: {failures[:5]}"
    assert len(acked) >= before + 20, f"no recovery: {len(acked) - before} batches after restart"

    # A batch refused (or in flight at the crash) is whole or absent, never partial.
    assert_batches_intact(srv, rid, acked, unacked)
