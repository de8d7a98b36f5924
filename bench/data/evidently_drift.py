#!/usr/bin/env python3
"""Evidently 0.7 side of bench/data: DataDriftPreset on reference.parquet vs current.parquet.

File -> result, as a user would run it: read both Parquet files with pandas, declare the 40
numeric and 10 categorical columns explicitly (DataDefinition), run
Report([DataDriftPreset()], include_tests=True), and take each column's verdict from the
snapshot. Writes JSON: per column {method, score, threshold, drifted}, plus the drifted count and
share and the dataset-drift verdict, and the time spent reading vs computing.

Where the verdict comes from (evidently 0.7.23 source, metrics/column_statistics.py and
presets/drift.py): DataDriftPreset expands into DriftedColumnsCount(drift_share) plus one
ValueDrift(column, method, threshold) per column. A ValueDrift's value is the raw score
(p-value or distance); with include_tests=True ValueDriftCalculation attaches a test
"Value Drift for column <c>" whose status is FAIL when that column drifted (drift.drift_detected
from the legacy get_one_column_drift) and SUCCESS otherwise; its metric config carries the
resolved method display name and threshold. DriftedColumnsCount's value is {count, share} and
its automatic test is share < drift_share (FAIL = dataset drift). include_tests only adds these
result objects; the drift computation is the same with or without it.

Usage: evidently_drift.py REF.parquet CUR.parquet --columns design.json --out result.json
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("DO_NOT_TRACK", "1")

t_start = time.perf_counter()

import pandas as pd  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402
import evidently  # noqa: E402

TEST_PREFIX = "Value Drift for column "


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("current")
    ap.add_argument("--columns", required=True, help="design.json from gen.py (column lists)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.columns) as f:
        design = json.load(f)
    num, cat = design["numerical_columns"], design["categorical_columns"]

    t_import = time.perf_counter()
    ref = pd.read_parquet(a.reference)
    cur = pd.read_parquet(a.current)
    t_read = time.perf_counter()

    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    ref_ds = Dataset.from_pandas(ref, data_definition=definition)
    cur_ds = Dataset.from_pandas(cur, data_definition=definition)
    report = Report([DataDriftPreset()], include_tests=True)
    snapshot = report.run(cur_ds, ref_ds)
    t_run = time.perf_counter()

    d = snapshot.dict()
    columns, dataset = {}, {}
    for m in d["metrics"]:
        cfg = m.get("config", {})
        typ = cfg.get("type", "")
        if typ.endswith(":ValueDrift"):
            columns[cfg["column"]] = {
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": m["value"],
            }
        elif typ.endswith(":DriftedColumnsCount"):
            dataset = {
                "drifted_columns": m["value"]["count"],
                "share": m["value"]["share"],
                "drift_share": cfg.get("drift_share"),
            }
    for t in d["tests"]:
        name = t.get("name", "")
        if name.startswith(TEST_PREFIX):
            col = name[len(TEST_PREFIX):]
            columns.setdefault(col, {})["drifted"] = t["status"] == "FAIL"
            columns[col]["test_status"] = t["status"]
        elif "Drifted Columns" in name:
            dataset["dataset_drift"] = t["status"] == "FAIL"
    missing = [c for c in num + cat if c not in columns or "drifted" not in columns[c]]
    if missing:
        sys.exit(f"evidently_drift.py: no verdict for columns {missing}")
    t_end = time.perf_counter()

    out = {
        "tool": "evidently",
        "version": evidently.__version__,
        "pandas": pd.__version__,
        "reference_rows": len(ref),
        "current_rows": len(cur),
        "columns": columns,
        **dataset,
        "seconds": {
            "import": round(t_import - t_start, 3),
            "read": round(t_read - t_import, 3),
            "report": round(t_run - t_read, 3),
            "extract": round(t_end - t_run, 3),
            "total_in_process": round(t_end - t_start, 3),
        },
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(
        f"evidently {evidently.__version__}: {dataset.get('drifted_columns')} of {len(columns)} columns drifted "
        f"(share {dataset.get('share')}), read {t_read - t_import:.1f}s, report {t_run - t_read:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
