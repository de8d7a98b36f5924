#!/usr/bin/env python3
"""Deterministic data for bench/data: reference.parquet and current.parquet, N rows x 50 columns.

Columns (same names and types in both files):
  num_00 .. num_39  float64. num_00..num_37 are continuous (normal, lognormal, uniform,
                    exponential in turn); num_38 takes 5 values (0..4), num_39 is a 0/1 flag,
                    so Evidently's 3-5-unique and binary branches are exercised on numbers too.
                    Every fifth column has 0.5 % nulls (Parquet nulls, NaN in pandas).
  cat_00 .. cat_09  strings, 3-30 levels (cat_01 is binary: yes/no). cat_03 and cat_07 have
                    0.3 % nulls.

`current` shifts a third of the columns (DRIFTED below: 14 numeric, 3 categorical) far past
Evidently's thresholds, and leaves the others with a small shift far below them:
  - continuous drifted: location/scale change of ~0.6 reference std (normed Wasserstein ~0.6);
    undrifted: 0.02 std (normed Wasserstein ~0.02);
  - discrete/categorical drifted: a different level distribution (Jensen-Shannon distance
    >= 0.25); undrifted: a perturbation giving a JS distance of ~0.01-0.02.
Values are drawn with stratified (low-discrepancy) sampling: each side's empirical CDF lies
within ~1/N of its target CDF and category counts are the exact expected counts, so at every
size the undrifted statistics sit near their population values (Wasserstein ~0.02, K-S/chi-square
p-values near 1 at 1,000 rows) and drifted ones near theirs (p-values ~1e-20 at 1,000 rows).
Sampling noise thus cannot move a score to its threshold, and two implementations that
compute the same statistic must agree on every verdict. Rows are shuffled with a seeded RNG.

A few data-quality problems in `current` for the validation suite: num_05 has 3 % nulls instead
of 0.5 %, cat_02 has a new level `ZZ` (5 %), num_06's values run past 1.0 (it is one of
the drifted uniform(0, 1) columns).

Usage: gen.py OUT_DIR [--rows N] [--seed S]   (N also from BENCH_ROWS; default 1,000,000)
Writes OUT_DIR/reference.parquet, OUT_DIR/current.parquet, OUT_DIR/design.json.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import ndtri

N_NUM = 40
N_CAT = 10
# Drifted columns: a third of each kind.
DRIFTED_NUM = {f"num_{i:02d}" for i in (0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 38)}
DRIFTED_CAT = {"cat_02", "cat_05", "cat_08"}
CAT_LEVELS = [3, 2, 30, 5, 8, 12, 4, 20, 6, 10]  # cat_01 binary
CAT_NULLS = {"cat_03", "cat_07"}


def stratified_u(rng, n):
    """n uniforms, one in each interval [k/n, (k+1)/n), in random order."""
    u = (np.arange(n, dtype=np.float64) + rng.random(n)) / n
    rng.shuffle(u)
    return u


def exact_counts(p, n):
    """Integer counts summing to n, proportional to p (largest remainder)."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    raw = p * n
    c = np.floor(raw).astype(np.int64)
    short = n - int(c.sum())
    if short > 0:
        order = np.argsort(-(raw - c), kind="stable")
        c[order[:short]] += 1
    return c


def sample_levels(rng, levels, p, n):
    """n values with exactly the expected count of each level, shuffled."""
    c = exact_counts(p, n)
    out = np.repeat(np.asarray(levels, dtype=object), c)
    rng.shuffle(out)
    return out


def js_distance(p, q):
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2
    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / b[nz])))
    return float(np.sqrt(max((kl(p, m) + kl(q, m)) / 2, 0.0)))


def with_nulls(rng, values, n, null_frac):
    """An n-array with round(null_frac*n) nulls at random places and `values` elsewhere."""
    k = int(round(null_frac * n))
    if k == 0:
        return values
    if values.dtype == object:
        out = np.empty(n, dtype=object)
    else:
        out = np.full(n, np.nan)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    out[~mask] = values[: n - k]
    if values.dtype == object:
        out[mask] = None
    return out


def numeric_column(i, rng, n, side):
    """(values, kind, params) of num_i on `side` ('ref' or 'cur')."""
    name = f"num_{i:02d}"
    null_frac = 0.005 if i % 5 == 0 else 0.0
    if side == "cur" and name == "num_05":
        null_frac = 0.03
    m = n - int(round(null_frac * n))
    drifted = name in DRIFTED_NUM
    cur = side == "cur"
    if i == 38:  # counts 0..4
        p = [0.35, 0.30, 0.20, 0.10, 0.05]
        if cur:
            p = [0.10, 0.15, 0.20, 0.25, 0.30] if drifted else [0.345, 0.302, 0.202, 0.101, 0.05]
        vals = sample_levels(rng, [0.0, 1.0, 2.0, 3.0, 4.0], p, m).astype(np.float64)
        return with_nulls(rng, vals, n, null_frac), "counts 0-4"
    if i == 39:  # 0/1 flag
        p1 = 0.30
        if cur:
            p1 = 0.60 if drifted else 0.305
        vals = sample_levels(rng, [0.0, 1.0], [1 - p1, p1], m).astype(np.float64)
        return with_nulls(rng, vals, n, null_frac), "flag 0/1"
    u = stratified_u(rng, m)
    shift = (0.6 if drifted else 0.02) if cur else 0.0
    kind = i % 4
    if kind == 0:  # normal(mu, sigma): shift the mean by `shift` sigma
        mu, sigma = 50.0 + i, 5.0 + i / 4
        vals = mu + sigma * ndtri(u) + shift * sigma
        desc = f"normal({mu:g}, {sigma:g})"
    elif kind == 1:  # lognormal(0, s): scale by (1 + c), normed W = c*mean/std
        s = 0.5
        mean, std = np.exp(s * s / 2), np.sqrt((np.exp(s * s) - 1) * np.exp(s * s))
        vals = np.exp(s * ndtri(u)) * (1 + shift * std / mean)
        desc = f"lognormal(0, {s:g})"
    elif kind == 2:  # uniform(0, 1): shift by `shift` std
        vals = u + shift / np.sqrt(12.0)
        desc = "uniform(0, 1)"
    else:  # exponential(scale): scale by (1 + shift) (mean = std)
        scale = 1.0 + i / 10
        vals = -np.log1p(-u) * scale * (1 + shift)
        desc = f"exponential({scale:g})"
    return with_nulls(rng, vals, n, null_frac), desc


def cat_levels(j):
    k = CAT_LEVELS[j]
    if j == 0:
        return ["low", "mid", "high"]
    if j == 1:
        return ["no", "yes"]
    prefix = "ABCDEFGHIJ"[j]
    return [f"{prefix}{v:02d}" for v in range(k)]


def cat_probs(j, side, drifted):
    k = CAT_LEVELS[j]
    base = 1.0 / np.arange(1, k + 1) ** 0.8  # Zipf-like
    base = base / base.sum()
    if side == "ref":
        return base
    if drifted:
        return base[::-1].copy()  # most frequent becomes least frequent
    # small perturbation: move 1.5 % of the mass from the first half to the second
    q = base.copy()
    h = max(k // 2, 1)
    q[:h] *= 0.985
    q[h:] += (1 - q.sum()) * q[h:] / q[h:].sum() if k > 1 else 0
    return q / q.sum()


def categorical_column(j, rng, n, side):
    name = f"cat_{j:02d}"
    drifted = name in DRIFTED_CAT
    levels = cat_levels(j)
    p = list(cat_probs(j, side, drifted))
    if side == "cur" and name == "cat_02":
        levels = levels + ["ZZ"]
        p = [x * 0.95 for x in p] + [0.05]
    null_frac = 0.003 if name in CAT_NULLS else 0.0
    m = n - int(round(null_frac * n))
    vals = sample_levels(rng, levels, p, m)
    return with_nulls(rng, vals, n, null_frac), levels, p


def build(n, seed, side):
    rng = np.random.default_rng([seed, 0 if side == "ref" else 1])
    cols, design = {}, {}
    for i in range(N_NUM):
        name = f"num_{i:02d}"
        vals, desc = numeric_column(i, rng, n, side)
        cols[name] = pa.array(vals, type=pa.float64(), from_pandas=True)  # NaN -> null
        design[name] = {"type": "numeric", "distribution": desc, "drifted": name in DRIFTED_NUM}
    for j in range(N_CAT):
        name = f"cat_{j:02d}"
        vals, levels, p = categorical_column(j, rng, n, side)
        cols[name] = pa.array(vals, type=pa.string())
        design[name] = {"type": "categorical", "levels": len(levels), "drifted": name in DRIFTED_CAT}
    return pa.table(cols), design


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", "1000000")))
    ap.add_argument("--seed", type=int, default=20240501)
    a = ap.parse_args()
    if a.rows < 100:
        sys.exit("gen.py: --rows must be at least 100")
    os.makedirs(a.out_dir, exist_ok=True)
    t0 = time.time()
    design = {}
    for side, fname in (("ref", "reference.parquet"), ("cur", "current.parquet")):
        table, design = build(a.rows, a.seed, side)
        tmp = os.path.join(a.out_dir, fname + ".tmp")
        pq.write_table(table, tmp)  # pyarrow defaults (snappy, as pandas.to_parquet writes)
        os.replace(tmp, os.path.join(a.out_dir, fname))
        del table
    # Population-level expected scores of the discrete columns (design check).
    for j in range(N_CAT):
        name = f"cat_{j:02d}"
        ref = cat_probs(j, "ref", False)
        cur = cat_probs(j, "cur", name in DRIFTED_CAT)
        if name == "cat_02":
            ref, cur = np.append(ref, 0.0), np.append(cur * 0.95, 0.05)
        design[name]["expected_js_distance"] = round(js_distance(ref, cur), 4)
    meta = {
        "rows": a.rows,
        "seed": a.seed,
        "columns": design,
        "drifted": sorted(DRIFTED_NUM | DRIFTED_CAT),
        "numerical_columns": [f"num_{i:02d}" for i in range(N_NUM)],
        "categorical_columns": [f"cat_{j:02d}" for j in range(N_CAT)],
    }
    with open(os.path.join(a.out_dir, "design.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"gen.py: {a.rows} rows x {N_NUM + N_CAT} columns -> {a.out_dir} in {time.time() - t0:.1f}s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
