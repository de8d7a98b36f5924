#!/usr/bin/env python3
"""Populates an MLflow SQLite database in-process through MLflow's own SqlAlchemyStore classes,
before `mlflow server` is started on that file. Writes the same data as `loadgen
registry-populate` writes over HTTP (see README.md, "Data"); both must stay in step.

Run with the mlflow venv's python:
    populate_mlflow.py --db DIR/mlflow.db --models 1000 --versions 20
Prints one JSON object on stdout: {"method": "store", "populate_s": ..., "writes": ...}.
Populating over HTTP takes ~10 min at full size on 2 cores (~35 writes/s); this takes a few.
"""

import argparse
import json
import os
import sys
import time

TEAMS = "abcdefghijklmnopqrst"  # 20 teams: model i belongs to TEAMS[i % 20]


def model_name(i):
    return f"bench-model-{i:05d}"


def champion_version(i, versions):
    return 1 + (i * 7 + 3) % versions


def commit_tag(i, k, versions):
    return f"{((i * versions + k) * 2654435761) & 0xFFFFFFFF:08x}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="path of the SQLite file (created)")
    ap.add_argument("--uri", help="a SQLAlchemy database URI instead (postgresql://...)")
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=20)
    a = ap.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    t_import = time.monotonic()
    from mlflow.entities import RunTag
    from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    import sqlalchemy

    # Commits without fsync while populating (per connection; nothing about it is stored in the
    # file, which stays in SQLite's default rollback-journal mode): ~60 writes/s become several
    # hundred. The server later opens the file with its own defaults.
    if not a.uri:
        @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
        def _no_fsync(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=OFF")
            cur.close()

    if not (a.db or a.uri):
        ap.error("one of --db and --uri is required")
    uri = a.uri or f"sqlite:///{os.path.abspath(a.db)}"
    t0 = time.monotonic()
    # "mlflow-artifacts:/" is the default artifact root `mlflow server --artifacts-destination`
    # gives the tracking store, so experiments get the locations the server would give them.
    tracking = TrackingStore(uri, "mlflow-artifacts:/")
    registry = RegistryStore(uri)
    t_init = time.monotonic()

    exp_id = tracking.create_experiment("bench-registry")
    writes = 1
    now = int(time.time() * 1000)
    for i in range(a.models):
        name = model_name(i)
        team = TEAMS[i % len(TEAMS)]
        run_name = f"train-{i:05d}"
        run = tracking.create_run(exp_id, "bench", now, [RunTag("mlflow.runName", run_name)],
                                  run_name)
        run_id = run.info.run_id
        registry.create_registered_model(
            name,
            tags=[RegisteredModelTag("team", team), RegisteredModelTag("owner", f"user-{i % 37}")],
            description=f"benchmark model {i}",
        )
        for k in range(1, a.versions + 1):
            registry.create_model_version(
                name,
                f"runs:/{run_id}/models/v{k}",
                run_id=run_id,
                tags=[
                    ModelVersionTag("team", team),
                    ModelVersionTag("dataset", f"ds-{k % 5}"),
                    ModelVersionTag("commit", commit_tag(i, k, a.versions)),
                ],
            )
        registry.set_registered_model_alias(name, "champion", str(champion_version(i, a.versions)))
        writes += 3 + a.versions
        if (i + 1) % 100 == 0:
            print(f"populate_mlflow: {i + 1}/{a.models} models, "
                  f"{time.monotonic() - t_init:.0f} s", file=sys.stderr)
    t1 = time.monotonic()
    print(json.dumps({
        "method": "store",
        "populate_s": round(t1 - t_init, 3),
        "init_s": round(t_init - t0, 3),
        "import_s": round(t0 - t_import, 3),
        "writes": writes,
        "writes_per_s": round(writes / (t1 - t_init), 1),
        "models": a.models,
        "versions": a.versions,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
