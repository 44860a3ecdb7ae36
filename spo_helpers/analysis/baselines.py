"""How the baselines behaved: zero-advantage shares, advantage spread, calibration of p̂, and ρ and D."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from spo_helpers.analysis.runs import RUN_COLUMNS, by_run
from spo_helpers.errors import MissingData

ZERO_ATOL = 1e-6
"""An advantage within this of zero counts as zero."""


# ---------------------------------------------------------------------------------------------- diagnostics
def step_windows(steps: pd.Series, n_windows: int = 5) -> pd.Series:
    """Equal-width step windows labelled ``"a-b"`` (an ordered categorical)."""
    values = steps.to_numpy()
    low, high = int(values.min()), int(values.max())
    count = max(1, min(n_windows, high - low + 1))
    edges = np.unique(np.linspace(low, high + 1, count + 1).round().astype(int))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{edges[i]}-{edges[i + 1] - 1}" if edges[i + 1] - 1 > edges[i] else str(edges[i]) for i in index]
    order = [
        f"{edges[i]}-{edges[i + 1] - 1}" if edges[i + 1] - 1 > edges[i] else str(edges[i])
        for i in range(len(edges) - 1)
    ]
    return pd.Series(pd.Categorical(labels, categories=order, ordered=True), index=steps.index, name="window")


def zero_advantage_share(steps: pd.DataFrame, atol: float = ZERO_ATOL) -> pd.DataFrame:
    """Per step, the share of samples whose advantage is zero: ``mean(|A| <= atol)``."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        zero = rows["advantage"].abs() <= atol
        return zero.groupby(rows["step"]).mean().rename("zero_adv_frac").reset_index()

    return by_run(steps, one)


def centred_advantages(steps: pd.DataFrame) -> pd.Series:
    """The advantage before normalisation, row by row: ``r - mean_group(r)`` for a row with a ``group`` (GRPO; 0 for
    a group of one) and ``r - p̂`` for a row without (SPO), so a frame of both methods (or several runs, with
    their run columns) gets each row's own. Groups are per run and step."""
    centred = steps["reward"] - steps["p_hat"] if "p_hat" in steps.columns else pd.Series(np.nan, index=steps.index)
    if "group" in steps.columns and steps["group"].notna().any():
        keys = [c for c in RUN_COLUMNS if c in steps.columns]
        grouped = steps[steps["group"].notna()]
        by = grouped.groupby([*keys, "step", "group"])["reward"]
        mean, size = by.transform("mean"), by.transform("size")
        centred = centred.copy()
        centred.loc[grouped.index] = grouped["reward"] - mean.where(size > 1, 0.0)
    return centred.rename("centred")


def advantage_variance(steps: pd.DataFrame) -> pd.DataFrame:
    """Per step, the unbiased variance before (``centred_advantages``) and after normalisation: ``step, stage,
    variance``."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        before = centred_advantages(rows).groupby(rows["step"]).var(ddof=1)
        after = rows["advantage"].groupby(rows["step"]).var(ddof=1)
        frame = pd.concat([before.rename("before norm"), after.rename("after norm")], axis=1).reset_index()
        return frame.melt(id_vars="step", var_name="stage", value_name="variance")

    return by_run(steps, one)


def advantage_values(steps: pd.DataFrame, max_samples: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Advantage values before and after normalisation (``step, stage, value``), at most ``max_samples`` per run
    and stage (a seeded subsample)."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        if len(rows) > max_samples:
            rows = rows.sample(max_samples, random_state=seed).sort_index()
        before = pd.DataFrame({"step": rows["step"], "stage": "before norm", "value": centred_advantages(rows)})
        after = pd.DataFrame({"step": rows["step"], "stage": "after norm", "value": rows["advantage"]})
        return pd.concat([before, after], ignore_index=True)

    return by_run(steps, one)


def p_hat_bins(rows: pd.DataFrame, bins: int, means: dict[str, str]) -> pd.DataFrame:
    """p̂ in ``bins`` equal bins of [0, 1]: per bin ``bin, bin_left, bin_right``, the mean of each ``means`` column
    (output name -> column) and ``count`` (empty bins kept, count 0)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, rows["p_hat"].to_numpy(), side="right") - 1, 0, bins - 1)
    grouped = rows.groupby(index)
    columns = {name: grouped[column].mean() for name, column in means.items()}
    frame = pd.DataFrame({**columns, "count": grouped.size()}).reindex(range(bins))
    frame["count"] = frame["count"].fillna(0).astype(np.int64)
    frame.insert(0, "bin_right", edges[1:])
    frame.insert(0, "bin_left", edges[:-1])
    return frame.rename_axis("bin").reset_index()


def reliability(steps: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Reliability diagram: p̂ in ``bins`` equal bins of [0, 1]; per bin the mean p̂, mean reward and count."""
    means = {"p_hat_mean": "p_hat", "reward_mean": "reward"}
    return by_run(steps, lambda rows: p_hat_bins(rows, bins, means))


def rho_drift(steps: pd.DataFrame, n_windows: int = 5) -> pd.DataFrame:
    """SPO samples with their ``rho`` and ``drift`` (D), step window and whether it was the prompt's first visit."""
    if "rho" not in steps.columns or "drift" not in steps.columns:
        raise MissingData("no per-sample rho / drift in steps.jsonl (SPO runs only)")
    keep = [c for c in (*RUN_COLUMNS, "step", "row", "rho", "drift", "first_visit") if c in steps.columns]
    frame = steps[keep].dropna(subset=["rho"]).copy()
    if frame.empty:
        raise MissingData("no per-sample rho / drift in steps.jsonl (SPO runs only)")
    frame["window"] = step_windows(frame["step"], n_windows)
    return frame.reset_index(drop=True)


def rho_drift_summary(samples: pd.DataFrame, qs: Sequence[int] = (10, 25, 50, 75, 90)) -> pd.DataFrame:
    """Per run and step window: ``quantity`` (rho on all samples, drift on revisits), ``count`` and percentiles."""
    keys = [c for c in (*RUN_COLUMNS, "window") if c in samples.columns]
    revisits = samples[~samples["first_visit"]] if "first_visit" in samples.columns else samples
    parts = []
    for quantity, rows in (("rho", samples), ("drift", revisits)):
        grouped = rows.groupby(keys, observed=True, dropna=False)[quantity]
        stats = grouped.agg(["count", "mean", *[(f"p{q}", lambda v, q=q: np.percentile(v, q)) for q in qs]])
        parts.append(stats.reset_index().assign(quantity=quantity))
    return pd.concat(parts, ignore_index=True)
