"""Baseline errors against a known truth, on synthetic step logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spo_helpers.analysis import baseline_error as G


def _truth(steps: pd.DataFrame, p: dict[int, float], n: int = 64, seed: int = 7) -> pd.DataFrame:
    """What ``spo ground-truth`` measures: ``n`` samples per prompt and step, so ``true_p`` is itself noisy."""
    frame = steps[["step", "row"]].drop_duplicates().copy()
    frame["true_p"] = np.random.default_rng(seed).binomial(n, frame["row"].map(p)) / n
    frame["n"] = n
    frame["checkpoint"] = frame["step"] - 1
    return frame


def _grpo(rng, p: dict[int, float], steps: int = 40, group: int = 8) -> pd.DataFrame:
    rows = []
    for step in range(1, steps + 1):
        for g, row in enumerate(rng.choice(list(p), size=4, replace=False)):
            y = (rng.random(group) < p[row]).astype(float)
            adv = (y - y.mean()) / (y.std(ddof=1) + 1e-6)
            for i in range(group):
                rows.append({"step": step, "row": int(row), "reward": y[i], "group": g, "advantage": adv[i]})
    return pd.DataFrame(rows).assign(p_hat=0.5)


def _spo(rng, p: dict[int, float], noise: float, steps: int = 40) -> pd.DataFrame:
    rows = []
    for step in range(1, steps + 1):
        for row in rng.choice(list(p), size=32, replace=False):
            p_hat = float(np.clip(p[row] + rng.normal(0, noise), 0.01, 0.99))
            y = float(rng.random() < p[row])
            rows.append({"step": step, "row": int(row), "reward": y, "p_hat": p_hat, "advantage": y - p_hat})
    return pd.DataFrame(rows)


def test_errors_match_their_definitions():
    steps = pd.DataFrame(
        {"step": [1] * 4, "row": [0, 0, 0, 0], "reward": [1.0, 0.0, 0.0, 0.0], "group": [0] * 4, "advantage": 0.0}
    )
    truth = pd.DataFrame({"step": [1], "row": [0], "true_p": [0.5], "n": [64]})
    errors = G.baseline_errors(steps, truth)
    mean = errors[errors["baseline"] == G.GROUP_MEAN]
    loo = errors[errors["baseline"] == G.LEAVE_ONE_OUT]
    assert np.allclose(mean["b"], 0.25) and np.allclose(mean["error"], -0.25)
    assert np.allclose(loo["b"], [0.0, 1 / 3, 1 / 3, 1 / 3])
    # the truth's own sampling noise p(1-p)/(n-1) is taken out of the squared error
    assert np.allclose(mean["sq_error_corrected"], 0.0625 - 0.25 / 63)
    assert np.allclose(mean["raw_advantage"] + mean["error"], mean["ideal_advantage"])


def test_a_sharper_tracker_beats_the_group_mean_and_the_interval_says_so():
    rng = np.random.default_rng(0)
    p = {r: float(v) for r, v in enumerate(rng.uniform(0.1, 0.9, size=64))}
    grpo, spo = _grpo(rng, p), _spo(rng, p, noise=0.05)
    parts = []
    for name, steps in (("GRPO", grpo), ("SPO", spo)):
        tags = {"run": name.lower(), "method": name, "seed": 0}
        parts.append(G.baseline_errors(steps.assign(**tags), _truth(steps, p).assign(**tags)))
    errors = pd.concat(parts, ignore_index=True)
    summary = G.error_summary(errors, resamples=200).set_index("baseline")
    # a group mean of 8 has RMSE about sqrt(E[p(1-p)]/8); the leave-one-out mean of 7 a little more
    expected = np.sqrt(np.mean([v * (1 - v) for v in p.values()]) / 8)
    assert summary.loc[G.GROUP_MEAN, "rmse"] == pytest.approx(expected, rel=0.25)
    assert summary.loc[G.LEAVE_ONE_OUT, "rmse"] > summary.loc[G.GROUP_MEAN, "rmse"]
    assert summary.loc[G.TRACKER, "rmse"] == pytest.approx(0.05, abs=0.02)
    assert summary.loc[G.TRACKER, "rmse_low"] <= summary.loc[G.TRACKER, "rmse"] <= summary.loc[G.TRACKER, "rmse_high"]
    ratio = G.error_ratio(errors, resamples=200)
    assert ratio.high < 1.0
    assert set(G.error_by_step(errors)["baseline"]) == set(G.BASELINES)


def test_calibration_against_truth_sees_a_biased_tracker():
    rng = np.random.default_rng(1)
    p = {r: float(v) for r, v in enumerate(rng.uniform(0.2, 0.8, size=64))}
    spo = _spo(rng, p, noise=0.0)
    spo["p_hat"] = np.clip(spo["p_hat"] + 0.15, 0, 1)  # overconfident by 0.15 everywhere
    table = G.calibration_vs_truth(spo, _truth(spo, p))
    ece = G.expected_calibration_error(table)["ece"].iloc[0]
    assert ece == pytest.approx(0.15, abs=0.02)


def test_missing_truth_is_reported():
    steps = pd.DataFrame({"step": [3], "row": [0], "reward": [1.0], "p_hat": [0.5], "advantage": [0.5]})
    truth = pd.DataFrame({"step": [1], "row": [0], "true_p": [0.5], "n": [8]})
    with pytest.raises(G.MissingData):
        G.baseline_errors(steps, truth)


@pytest.mark.parametrize(("noise", "expected"), [(0.05, "below"), (0.30, "above")])
def test_like_for_like_ratio_against_a_group_of_eight_on_the_same_prompts(noise, expected):
    """SPO's p̂ error over what a group of 8 would make on the very prompts SPO drew: a p̂ off by 0.05 beats a group
    of 8 (whose RMSE is about sqrt(0.2/8) = 0.16 here), one off by 0.30 does not, and the interval says so."""
    rng = np.random.default_rng(3)
    p = {r: float(v) for r, v in enumerate(rng.uniform(0.2, 0.8, size=64))}
    spo = _spo(rng, p, noise=noise)
    ratio = G.same_prompts_ratio(G.baseline_errors(spo, _truth(spo, p)), resamples=500)
    assert (ratio.high < 1.0) if expected == "below" else (ratio.low > 1.0), ratio


def test_visits_are_compared_within_each_step():
    """First visits and revisits split step by step; a step with only one kind is left out."""
    rows = []
    for step, kinds in ((1, [True, True]), (2, [True, False, False]), (3, [False, True])):
        for first in kinds:
            rows.append(
                {
                    "step": step,
                    "row": len(rows),
                    "reward": 1.0,
                    "p_hat": 0.9 if first else 0.6,
                    "advantage": 0.0,
                    "first_visit": first,
                }
            )
    steps = pd.DataFrame(rows)
    truth = steps[["step", "row"]].assign(true_p=1.0, n=64)
    split = G.visits_within_steps(G.baseline_errors(steps, truth))
    assert split["step"].tolist() == [2, 3]
    assert np.allclose(split["first_rmse"], 0.1) and np.allclose(split["revisit_rmse"], 0.4)
    assert split["revisit_samples"].tolist() == [2, 1]


def test_each_method_centres_its_own_rows_in_a_stacked_frame():
    from spo_helpers.analysis.baselines import centred_advantages

    grpo = pd.DataFrame({"run": "g", "step": 1, "group": [0, 0, 1, 1], "reward": [1.0, 0.0, 1.0, 1.0], "p_hat": 0.5})
    spo = pd.DataFrame({"run": "s", "step": 1, "reward": [1.0, 0.0], "p_hat": [0.7, 0.2]})
    both = pd.concat([grpo, spo], ignore_index=True)
    assert np.allclose(centred_advantages(both), [0.5, -0.5, 0.0, 0.0, 0.3, -0.2])  # SPO: r - p̂, not r
