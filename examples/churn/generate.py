#!/usr/bin/env python3
"""Synthetic telecom churn data: a few numeric customer features and a `churned` label.

`--shift 0` is the world the first model is trained on. `--shift 1` is the same business a few
months later: a competitor's cheap offer brought in younger customers on monthly contracts,
prices went up, support load grew, and *why* people leave changed (heavy data users and young
customers now churn, price matters less than service). Both the feature distribution and the
relationship between features and label move, so a model trained on shift 0 degrades on shift 1.

Deterministic for a given (--seed, --rows, --shift). Writes CSV.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

# Column order is the model's input order; serving maps a DataFrame onto the input tensor by
# position, so train.py and the traffic sender both use this list.
FEATURES = [
    "tenure_months",
    "monthly_charges",
    "support_calls",
    "contract_months",
    "age",
    "data_gb",
]
TARGET = "churned"


def generate(rows: int, shift: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, shift])
    if shift == 0:
        tenure = rng.gamma(2.0, 14.0, rows)
        charges = rng.normal(65.0, 20.0, rows)
        calls = rng.poisson(1.2, rows)
        contract = rng.choice([1, 12, 24], rows, p=[0.45, 0.30, 0.25])
        age = rng.normal(47.0, 13.0, rows)
        data = rng.lognormal(1.6, 0.6, rows)
    else:
        tenure = rng.gamma(1.3, 9.0, rows)
        charges = rng.normal(84.0, 22.0, rows)
        calls = rng.poisson(2.6, rows)
        contract = rng.choice([1, 12, 24], rows, p=[0.72, 0.18, 0.10])
        age = rng.normal(33.0, 10.0, rows)
        data = rng.lognormal(2.3, 0.6, rows)
    tenure = np.clip(np.round(tenure), 1, 72)
    charges = np.round(np.clip(charges, 18.0, 150.0), 2)
    calls = np.clip(calls, 0, 12)
    age = np.clip(np.round(age), 18, 90)
    data = np.round(np.clip(data, 0.1, 200.0), 2)

    if shift == 0:
        # Short tenure, high bills, support trouble and monthly contracts drive churn.
        logit = (
            -0.4
            - 0.055 * (tenure - 24.0)
            + 0.035 * (charges - 65.0)
            + 0.45 * (calls - 1.2)
            - 0.06 * (contract - 12.0)
        )
    else:
        # After the shift: young, heavy data users on monthly contracts leave for the
        # competitor's data plan; long-tenured high payers are the loyal ones now.
        logit = (
            -0.2
            - 0.12 * (age - 33.0)
            + 0.15 * (data - 10.0)
            - 0.02 * (charges - 84.0)
            + 0.30 * (calls - 2.6)
            - 0.06 * (contract - 12.0)
        )
    p = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, 0.6, rows))))
    churned = (rng.random(rows) < p).astype(int)

    return pd.DataFrame(
        {
            "tenure_months": tenure.astype(int),
            "monthly_charges": charges,
            "support_calls": calls.astype(int),
            "contract_months": contract.astype(int),
            "age": age.astype(int),
            "data_gb": data,
            TARGET: churned,
        }
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4000, help="rows to generate (default 4000)")
    ap.add_argument("--shift", type=int, choices=[0, 1], default=0,
                    help="0: the original population; 1: the shifted one")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--out", required=True, help="CSV file to write")
    args = ap.parse_args(argv)
    if args.rows < 1:
        ap.error("--rows must be at least 1")
    df = generate(args.rows, args.shift, args.seed)
    folder = os.path.dirname(args.out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(f"generate: {len(df)} rows, shift={args.shift}, seed={args.seed}, "
          f"churn rate {df[TARGET].mean():.3f} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
