"""Which prompts each method trained on: visits per prompt and the difficulty mix over training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spo_helpers.analysis.baselines import step_windows
from spo_helpers.analysis.runs import RUN_COLUMNS, by_run
from spo_helpers.errors import MissingData


def visits_per_prompt(
    steps: pd.DataFrame | None = None, snapshots: pd.DataFrame | None = None, prompts: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``row, visits``: from the last tracker snapshot if given, else counted in ``steps`` (with zeros for the
    prompts of ``prompts`` that were never sampled)."""
    if snapshots is not None and not snapshots.empty:

        def last(rows: pd.DataFrame) -> pd.DataFrame:
            final = rows[rows["step"] == rows["step"].max()]
            return final[["row", "visits"]].reset_index(drop=True)

        return by_run(snapshots, last)
    if steps is None or steps.empty:
        raise MissingData("visits need tracker snapshots or steps.jsonl")
    all_rows = prompts["row"].to_numpy() if prompts is not None and "row" in prompts.columns else None

    def count(rows: pd.DataFrame) -> pd.DataFrame:
        visits = rows["row"].value_counts()
        index = np.union1d(visits.index.to_numpy(), all_rows) if all_rows is not None else visits.index.to_numpy()
        return pd.DataFrame({"row": index, "visits": visits.reindex(index, fill_value=0).to_numpy()})

    return by_run(steps, count)


def difficulty_bins(prompts: pd.DataFrame, n_bins: int = 5) -> pd.Series:
    """Per tracker row, ``difficulty d`` when every prompt has one, else the p̂0 quantile bin ``p̂0 q1..q5``."""
    difficulty = prompts["difficulty"] if "difficulty" in prompts.columns else pd.Series(dtype="Int64")
    if len(difficulty) and difficulty.notna().all():
        levels = sorted(int(d) for d in difficulty.unique())
        labels = difficulty.astype(int).map(lambda d: f"difficulty {d}")
        categories = [f"difficulty {d}" for d in levels]
    else:
        codes = pd.qcut(prompts["p_hat0"].rank(method="first"), n_bins, labels=False)
        labels = codes.map(lambda q: f"p̂0 q{int(q) + 1}")
        categories = [f"p̂0 q{i + 1}" for i in range(int(codes.max()) + 1)]
    return pd.Series(
        pd.Categorical(labels.to_numpy(), categories=categories, ordered=True), index=prompts["row"].to_numpy()
    )


def curriculum(steps: pd.DataFrame, prompts: pd.DataFrame, n_windows: int = 5, n_bins: int = 5) -> pd.DataFrame:
    """Share of sampled prompts per difficulty bin per step window (``window, bin, count, share``), and the bin's
    share of the dataset (``dataset_share``): what uniform sampling would give.

    With a ``run`` column in both frames, each run's samples are binned with its own prompt table; runs
    missing from ``prompts`` are left out.
    """
    per_run = "run" in steps.columns and "run" in prompts.columns
    tables = {run: rows for run, rows in prompts.groupby("run")} if per_run else {}

    def one(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
        bins = difficulty_bins(table, n_bins)
        labelled = pd.DataFrame(
            {"window": step_windows(rows["step"], n_windows).array, "bin": bins.reindex(rows["row"]).array}
        )
        counts = labelled.groupby(["window", "bin"], observed=False).size().rename("count").reset_index()
        totals = counts.groupby("window", observed=False)["count"].transform("sum")
        counts["share"] = counts["count"] / totals.where(totals > 0)
        counts["dataset_share"] = counts["bin"].map(bins.value_counts(normalize=True)).astype(float)
        return counts

    if not per_run:
        return by_run(steps, lambda rows: one(rows, prompts))
    keys = [c for c in RUN_COLUMNS if c in steps.columns]
    parts = []
    for values, rows in steps.groupby(keys, sort=False, dropna=False):
        run = dict(zip(keys, values, strict=True))["run"]
        if run in tables:
            out = one(rows, tables[run])
            for position, (column, value) in enumerate(zip(keys, values, strict=True)):
                out.insert(position, column, value)
            parts.append(out)
    if not parts:
        raise MissingData("no run has both steps.jsonl and prompts.parquet")
    return pd.concat(parts, ignore_index=True)
