"""The claims experiment's measures on hand-made runs: visits, accuracies, coverage, what the samples did, the
prior's error, and arms compared paired by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spo_helpers.analysis import claims as C
from spo_helpers.analysis.intervals import Interval
from spo_helpers.core.tracker import TrackerConfig


def test_visit_numbers_count_each_prompts_samples_in_run_order():
    # rows out of order on purpose: the count follows (step, sample), not the frame's order
    steps = pd.DataFrame({"step": [2, 1, 1, 2, 3], "sample": [0, 1, 0, 1, 0], "row": [7, 7, 3, 3, 7]})
    assert C.visit_numbers(steps).tolist() == [2, 1, 1, 2, 3]


def test_first_and_last_accuracy_reads_each_source_at_its_first_and_last_validation():
    records = [
        {"step": 10, "data": {"val-core/pool/acc/mean@4": 0.7, "val-core/held/acc/mean@4": 0.3}},
        {"step": 0, "data": {"val-core/pool/acc/mean@4": 0.5, "val-core/held/acc/mean@4": 0.2}},
        {"step": 5, "data": {"training/reward": 1.0}},
    ]
    got = C.first_and_last_accuracy(records, {"pool": "pool", "held_out": "held", "absent": "nothing"})
    assert got == {"pool initial": 0.5, "pool": 0.7, "held_out initial": 0.2, "held_out": 0.3}


def test_coverage_and_zero_advantage_share():
    steps = pd.DataFrame(
        {
            "step": [1, 1, 1, 1, 2, 2, 2, 2],
            "group": [0, 0, 1, 1, 0, 0, 1, 1],
            "row": [4, 4, 5, 5, 4, 4, 6, 6],
            "reward": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        }
    )
    assert C.pool_coverage(steps, 10) == pytest.approx(0.3)
    assert C.zero_advantage_share(steps) == pytest.approx(0.5)  # (1,1) all correct and (2,0) all wrong
    with pytest.raises(ValueError):
        C.pool_coverage(steps, 0)


def test_revisit_drift_counts_rho_at_each_clip_bound():
    tracker = TrackerConfig()
    steps = pd.DataFrame(
        {
            "row": [1, 1, 1, 2, 2, 3],
            "first_visit": [True, False, False, True, False, True],
            "drift": [np.nan, 0.2, 0.001, np.nan, 0.01, np.nan],
            "rho": [np.nan, tracker.rho_min + 1e-8, tracker.rho_max, np.nan, 0.9, np.nan],
        }
    )
    got = C.revisit_drift(steps, tracker)
    assert got["visits per prompt"] == pytest.approx(2.0)
    assert got["revisit D median"] == pytest.approx(0.01)
    assert got["rho at its lower bound"] == pytest.approx(1 / 3)
    assert got["rho at its upper bound"] == pytest.approx(1 / 3)
    assert C.revisit_drift(steps[steps["first_visit"]], tracker) == {}


def test_prior_error_takes_the_truths_own_noise_out():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.9, size=20_000)
    n = 16
    truth = rng.binomial(n, p) / n
    exact, bias = C.prior_error(p, truth, n)  # a perfect prior, judged against a noisy truth
    assert exact < 0.01 and abs(bias) < 0.003
    shifted, bias = C.prior_error(np.clip(p + 0.1, 0, 1), truth, n)
    assert shifted == pytest.approx(0.1, abs=0.01) and bias == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError):
        C.prior_error(p[:3], truth[:3], 1)


def test_group_mean_rmse_is_the_binomial_standard_error():
    p = np.array([0.5, 0.5])
    assert C.group_mean_rmse(p, 8) == pytest.approx(np.sqrt(0.25 / 8))
    rng = np.random.default_rng(0)
    means = rng.binomial(8, 0.3, size=200_000) / 8
    assert np.sqrt(((means - 0.3) ** 2).mean()) == pytest.approx(C.group_mean_rmse(np.array([0.3]), 8), rel=0.01)


def _table(gain: float, seeds: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = 0.5 + rng.normal(0, 0.05, size=seeds)  # the seed moves both arms: a paired comparison removes it
    rows = []
    for s in range(seeds):
        rows.append({"seed": s, "arm": "GRPO", "pool": base[s] + rng.normal(0, 0.002)})
        rows.append({"seed": s, "arm": "SPO", "pool": base[s] + gain + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


def test_compare_arms_pairs_by_seed_and_decides_only_when_the_interval_excludes_the_null():
    clear = C.compare_arms(_table(0.02), "SPO", "GRPO", "pool")
    assert clear.seeds == 5 and clear.verdict == "higher"
    assert clear.difference.low > 0 and clear.ratio.low > 1
    null = C.compare_arms(_table(0.0), "SPO", "GRPO", "pool")
    assert null.verdict == "cannot decide"
    worse = C.compare_arms(_table(-0.02), "SPO", "GRPO", "pool")
    assert worse.verdict == "lower"
    # a seed one arm lacks is left out of the pairs
    partial = _table(0.02).iloc[:-1]
    assert C.compare_arms(partial, "SPO", "GRPO", "pool").seeds == 4


def test_verdict_refuses_unbounded_intervals():
    assert C.verdict(Interval(1.2, 1.1, np.inf), 1.0) == "cannot decide"
    assert C.verdict(Interval(1.2, 1.1, 1.3), 1.0) == "higher"
    assert C.verdict(Interval(0.8, 0.7, 0.9), 1.0) == "lower"


def test_seed_level_mean_needs_two_seeds():
    assert C.seed_level_mean([0.1, 0.3]).estimate == pytest.approx(0.2)
    with pytest.raises(ValueError):
        C.seed_level_mean([0.1])
