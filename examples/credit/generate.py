"""Synthetic loan applications: two numbers and a string, and whether the loan defaulted.

`--period 2` is a year later: incomes fell, and the south's extra risk went away while debt
weighs more. Deterministic for a given --seed. Writes a CSV with columns income, debt, region,
default; with --holdout-out, a second, independent sample of the same period too."""

import argparse

import numpy as np
import pandas as pd


def sample(rows: int, period: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(50 if period == 1 else 40, 15, rows).clip(5)
    debt = rng.normal(20, 10, rows).clip(0)
    region = rng.choice(["north", "south", "east"], rows, p=[0.4, 0.35, 0.25])
    if period == 1:
        logit = 3.0 * (debt / income) - 1.6 + np.where(region == "south", 1.0, 0.0)
    else:
        logit = 5.0 * (debt / income) - 2.6 + np.where(region == "east", 0.6, 0.0)
    default = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"income": income.round(2), "debt": debt.round(2), "region": region,
                         "default": default})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--period", type=int, default=1, choices=[1, 2])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--holdout-out")
    p.add_argument("--holdout-rows", type=int, default=1000)
    a = p.parse_args()
    sample(a.rows, a.period, a.seed).to_csv(a.out, index=False)
    if a.holdout_out:
        sample(a.holdout_rows, a.period, a.seed + 1000).to_csv(a.holdout_out, index=False)


if __name__ == "__main__":
    main()
