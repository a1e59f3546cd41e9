"""The demo behind ``make demo``: a small churn analysis, run twice into ./nbflow.duckdb.

The first run computes every step (or reuses what an earlier demo left in the store);
the second finds every step in the cache and computes nothing.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd

import nbflow as nf

flow = nf.Flow("churn-demo")


@flow.step
def customers(n: int = 5_000, seed: int = 7) -> pd.DataFrame:
    """Synthetic customers: tenure, monthly spend, support calls, churned or not."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    spend = rng.gamma(4.0, 20.0, n).round(2)
    calls = rng.poisson(1.5, n)
    risk = 1 / (1 + np.exp(0.06 * tenure - 0.5 * calls - 0.004 * spend + 0.5))
    return pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "tenure_months": tenure,
            "monthly_spend": spend,
            "support_calls": calls,
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "churned": rng.random(n) < risk,
        }
    )


@flow.step
def features(customers: pd.DataFrame, window: int = 12) -> pd.DataFrame:
    """Flag recent customers (tenure within ``window`` months) and heavy callers."""
    return customers.assign(
        recent=customers["tenure_months"] <= window,
        heavy_caller=customers["support_calls"] >= 3,
    )


@flow.step
def churn_by_segment(features: pd.DataFrame) -> pd.DataFrame:
    """Churn rate and size of each (plan, recent, heavy_caller) segment."""
    return (
        features.groupby(["plan", "recent", "heavy_caller"], observed=True)["churned"]
        .agg(customers="size", churn_rate="mean")
        .reset_index()
        .sort_values("churn_rate", ascending=False)
    )


@flow.step
def summary(features: pd.DataFrame, churn_by_segment: pd.DataFrame) -> dict:
    """Headline numbers, as a small JSON value."""
    top = churn_by_segment.iloc[0]
    return {
        "customers": len(features),
        "churn_rate": round(float(features["churned"].mean()), 4),
        "riskiest_segment": f"{top['plan']}, recent={top['recent']}, heavy={top['heavy_caller']}",
        "riskiest_churn_rate": round(float(top["churn_rate"]), 4),
    }


def main() -> int:
    """Run the demo flow twice and print what the store recorded."""
    pd.set_option("display.width", 160)
    pd.set_option("display.max_columns", 12)
    pd.set_option("display.max_colwidth", 40)
    print(f"nbflow {nf.__version__} demo; store: {os.path.abspath(flow.store.uri)}\n")

    first = flow.run()
    print(f"== run 1: {first.id} -> {first.status}")
    print(first.steps[["step", "attempt", "status", "duration_ms", "output_codec"]].to_string())
    print("\nsummary:", first["summary"])
    print(f"\nchurn_by_segment is the SQL table {first.table_name('churn_by_segment')}:")
    top = flow.store.sql(
        f"SELECT plan, customers, round(churn_rate, 3) AS churn_rate "
        f"FROM {first.table_name('churn_by_segment')} ORDER BY churn_rate DESC LIMIT 3"
    )
    print(top.to_string(index=False))

    print(f"\n== events of run 1 ({len(first.events)} events):")
    print(first.events[["seq", "type", "step", "attempt"]].to_string(index=False))

    second = flow.run()
    statuses = second.steps.set_index("step")["status"]
    print(f"\n== run 2: {second.id} -> {second.status}; step statuses: {statuses.to_dict()}")
    cached = (statuses == "cached").all()
    print("every step came from the cache:", bool(cached))

    third = flow.run(window=6)
    steps = third.steps
    recomputed = sorted(steps.loc[steps["status"] == "completed", "step"])
    print(f"\n== run 3 (window=6): {third.id}; recomputed: {recomputed}")

    print("\n== flow.runs():")
    runs = flow.runs()
    print(runs[["run_id", "status", "params", "created_at", "duration_s"]].head(6).to_string())
    return 0 if cached else 1


if __name__ == "__main__":
    sys.exit(main())
