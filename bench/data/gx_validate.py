#!/usr/bin/env python3
"""Great Expectations 1.x side of bench/data: the suite of suite.yaml on one Parquet file.

File -> result, as a user of GX Core 1.x runs it: an ephemeral context, a pandas data source
with a dataframe asset and a whole-dataframe batch definition, the Parquet file read with
pandas, an ExpectationSuite built from suite.yaml (the same entries `loopml data validate`
reads: GX's expectation names and kwargs, each turned into gx.expectations.<CamelCase>(**kwargs)),
a ValidationDefinition and a Checkpoint (no actions, GX's default result format, SUMMARY), run.
Writes JSON: per expectation (in suite order) type, kwargs, success and the result's
observed_value / element_count / unexpected_count / unexpected_percent / missing_count, plus the
time spent importing, reading and validating.

The only translation from loopml's YAML: `type_` of expect_column_values_to_be_of_type names a
logical type in loopml (int, float, string, bool) and a backend dtype in GX; here float ->
float64, int -> int64, string -> object, bool -> bool (pandas' dtypes for what
pd.read_parquet returns).

Usage: gx_validate.py DATA.parquet --suite suite.yaml --out result.json
"""

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

t_start = time.perf_counter()

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

PANDAS_TYPES = {"float": "float64", "int": "int64", "string": "object", "bool": "bool"}


def _patch_quantile_details():
    """Work around a GX 1.24.1 bug: ExpectColumnQuantileValuesToBeBetween returns numpy bools
    (`success` = np.all(...), `details.success_details`), and the Checkpoint then fails storing
    the validation result (`TypeError: Object of type bool is not JSON serializable`, from the
    results store's JSON dump). Turn them into plain bools; nothing else changes."""
    cls = gx.expectations.ExpectColumnQuantileValuesToBeBetween
    orig = cls._validate

    def _validate(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        out["success"] = bool(out["success"])
        details = out.get("result", {}).get("details", {})
        if "success_details" in details:
            details["success_details"] = [bool(x) for x in details["success_details"]]
        return out

    cls._validate = _validate


_patch_quantile_details()


def camel(name):
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def to_gx(entry):
    ((etype, kwargs),) = entry.items()
    kwargs = dict(kwargs or {})
    if etype == "expect_column_values_to_be_of_type":
        kwargs["type_"] = PANDAS_TYPES.get(kwargs["type_"], kwargs["type_"])
    cls = getattr(gx.expectations, camel(etype), None)
    if cls is None:
        raise SystemExit(f"gx_validate.py: GX has no expectation class for {etype}")
    return etype, kwargs, cls(**kwargs)


def plain(v):
    """JSON-safe copy (NaN -> None, numpy scalars -> Python)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            return str(v)
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.suite) as f:
        spec = yaml.safe_load(f)

    t_import = time.perf_counter()
    ctx = gx.get_context(mode="ephemeral")
    source = ctx.data_sources.add_pandas("bench")
    asset = source.add_dataframe_asset("data")
    batch_def = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=spec["name"])
    entries = []
    for entry in spec["expectations"]:
        etype, kwargs, exp = to_gx(entry)
        suite.add_expectation(exp)
        entries.append((etype, kwargs))
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="bench", data=batch_def, suite=suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(name="bench", validation_definitions=[vd], actions=[]))
    t_setup = time.perf_counter()

    df = pd.read_parquet(a.data)
    t_read = time.perf_counter()
    result = checkpoint.run(batch_parameters={"dataframe": df})
    t_run = time.perf_counter()

    (vres,) = list(result.run_results.values())
    # Results come back in suite order; match them by expectation id to be safe.
    by_id = {r.expectation_config.id: r for r in vres.results}
    out_results = []
    for (etype, kwargs), exp in zip(entries, suite.expectations):
        r = by_id.get(exp.id)
        if r is None:
            out_results.append({"expectation_type": etype, "kwargs": kwargs, "success": None,
                                "error": "no result"})
            continue
        res = r.result or {}
        item = {
            "expectation_type": etype,
            "kwargs": plain(kwargs),
            "success": bool(r.success),
            "result": {k: plain(res[k]) for k in ("observed_value", "element_count", "unexpected_count",
                                                   "unexpected_percent", "missing_count") if k in res},
        }
        ei = r.exception_info or {}
        if ei.get("raised_exception"):
            item["error"] = str(ei.get("exception_message"))[:500]
        out_results.append(item)
    t_end = time.perf_counter()

    out = {
        "tool": "great_expectations",
        "version": gx.__version__,
        "pandas": pd.__version__,
        "rows": len(df),
        "success": bool(vres.success),
        "statistics": plain(dict(vres.statistics)),
        "results": out_results,
        "seconds": {
            "import": round(t_import - t_start, 3),
            "setup": round(t_setup - t_import, 3),
            "read": round(t_read - t_setup, 3),
            "validate": round(t_run - t_read, 3),
            "extract": round(t_end - t_run, 3),
            "total_in_process": round(t_end - t_start, 3),
        },
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    ok = sum(1 for r in out_results if r["success"])
    print(f"great_expectations {gx.__version__}: {ok}/{len(out_results)} expectations passed, "
          f"read {t_read - t_setup:.1f}s, validate {t_run - t_read:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
