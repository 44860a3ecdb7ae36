"""The measures of the claims experiment (``bench/bench_claims.py``): arms compared paired by seed.

An *arm* is one training recipe (GRPO, SPO, an ablation) run once per seed; seed i of every arm shares the seed,
so two arms are compared on the seed-level pairs (Fieller's ratio, the paired t difference), never on pooled
samples. The functions here read the frames of ``analysis.steps`` and the step log's records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spo_helpers.analysis.intervals import Interval, fieller_ratio, paired_t_difference, t_mean
from spo_helpers.core.metric_names import VAL_CORE_PREFIX
from spo_helpers.core.tracker import TrackerConfig

BOUND_TOLERANCE = 1e-6  # rho stored in the step log is rounded; within this of a bound counts as at it
OFFICIAL_TRACKER = TrackerConfig()


def visit_numbers(steps: pd.DataFrame) -> pd.Series:
    """The visit each sample is of its prompt, counted in the run's order (1: the prompt's first sample).

    ``visit(i) = 1 + #{j : row_j = row_i, (step_j, sample_j) < (step_i, sample_i)}``; aligned with ``steps``.
    """
    ordered = steps.sort_values(["step", "sample"], kind="stable")
    return (ordered.groupby("row").cumcount() + 1).reindex(steps.index)


def first_and_last_accuracy(records: Iterable[Mapping], sources: Mapping[str, str]) -> dict[str, float]:
    """Validation accuracy (``val-core/<source>/acc/mean@n``) at the first and the last validation of a run.

    ``sources`` maps a label to a data source; the result has ``<label> initial`` and ``<label>`` for each source
    validated at least once.
    """
    out: dict[str, float] = {}
    records = sorted(records, key=lambda r: r["step"])
    for label, source in sources.items():
        prefix = f"{VAL_CORE_PREFIX}{source}/acc/mean@"
        values = [float(v) for r in records for k, v in r["data"].items() if k.startswith(prefix)]
        if values:
            out[f"{label} initial"], out[label] = values[0], values[-1]
    return out


def pool_coverage(steps: pd.DataFrame, pool_rows: int) -> float:
    """Share of the pool a run trained on: distinct rows in its steps over ``pool_rows``."""
    if pool_rows <= 0:
        raise ValueError(f"pool_rows must be positive, got {pool_rows}")
    return steps["row"].nunique() / pool_rows


def zero_advantage_share(steps: pd.DataFrame) -> float:
    """GRPO: the share of groups (step, group) whose rewards are all equal, so every advantage is zero."""
    spread = steps.groupby(["step", "group"])["reward"].agg(lambda r: r.max() > r.min())
    return float(1.0 - spread.mean())


def revisit_drift(steps: pd.DataFrame, tracker: TrackerConfig = OFFICIAL_TRACKER) -> dict[str, float]:
    """SPO: visits per trained prompt, the median drift D of revisits, and the share of revisits whose forgetting
    factor ρ sits at each clip bound (``rho_min``: D past the range, the tracker forgets as fast as it may;
    ``rho_max``: D below it). Empty without revisits."""
    revisits = steps[~steps["first_visit"]]
    if revisits.empty:
        return {}
    rho = revisits["rho"].to_numpy(dtype=np.float64)
    return {
        "visits per prompt": float(steps.groupby("row").size().mean()),
        "revisit D median": float(revisits["drift"].median()),
        "rho at its lower bound": float((rho <= tracker.rho_min + BOUND_TOLERANCE).mean()),
        "rho at its upper bound": float((rho >= tracker.rho_max - BOUND_TOLERANCE).mean()),
    }


def prior_error(p_hat0: np.ndarray, true_p: np.ndarray, truth_n: int) -> tuple[float, float]:
    """RMSE and bias of the prior mean ``p̂0`` against a truth measured from ``truth_n`` samples per prompt.

    ``RMSE = sqrt(max(mean((p̂0 - t)² - t(1-t)/(n-1)), 0))``: the truth's own sampling variance, estimated
    unbiasedly by ``t(1-t)/(n-1)``, is taken out of the squared error; ``bias = mean(p̂0 - t)``.
    """
    p_hat0, true_p = np.asarray(p_hat0, dtype=np.float64), np.asarray(true_p, dtype=np.float64)
    if p_hat0.shape != true_p.shape or truth_n < 2:
        raise ValueError("prior_error needs matching arrays and a truth of at least 2 samples per prompt")
    error = p_hat0 - true_p
    noise = true_p * (1 - true_p) / (truth_n - 1)
    return float(np.sqrt(max((error**2 - noise).mean(), 0.0))), float(error.mean())


def group_mean_rmse(true_p: np.ndarray, group_size: int) -> float:
    """RMSE of a group mean of ``group_size`` fresh samples on prompts of success rate ``p``: ``sqrt(E[p(1-p)]/G)``."""
    true_p = np.asarray(true_p, dtype=np.float64)
    return float(np.sqrt((true_p * (1 - true_p)).mean() / group_size))


@dataclass(frozen=True)
class ArmComparison:
    """One arm against a baseline arm on one measure, over the seeds both ran."""

    arm: str
    baseline: str
    measure: str
    ratio: Interval  # Fieller's interval for mean(arm) / mean(baseline), paired by seed
    difference: Interval  # paired t interval for mean(arm - baseline)
    seeds: int

    @property
    def verdict(self) -> str:
        return verdict(self.difference, 0.0)


def compare_arms(table: pd.DataFrame, arm: str, baseline: str, measure: str) -> ArmComparison:
    """``arm`` against ``baseline`` on the column ``measure`` of a ``seed, arm, <measures>`` table, paired by seed
    (seeds where either is missing are left out)."""
    both = table.pivot(index="seed", columns="arm", values=measure)[[arm, baseline]].dropna()
    return ArmComparison(
        arm=arm,
        baseline=baseline,
        measure=measure,
        ratio=fieller_ratio(both[arm], both[baseline], paired=True),
        difference=paired_t_difference(both[arm], both[baseline]),
        seeds=len(both),
    )


def verdict(interval: Interval, null: float) -> str:
    """``higher`` / ``lower`` where the interval excludes ``null``, else ``cannot decide`` (also when unbounded)."""
    if not (np.isfinite(interval.low) and np.isfinite(interval.high)) or interval.low <= null <= interval.high:
        return "cannot decide"
    return "higher" if interval.low > null else "lower"


def seed_level_mean(values: Iterable[float]) -> Interval:
    """Mean of one value per seed with its t interval (the seed is the unit: runs are independent, samples are
    not)."""
    return t_mean(np.asarray(list(values), dtype=np.float64))
