"""Bootstrap intervals: coverage on known distributions, pairing, seeds, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from spo_helpers.analysis.intervals import Interval, bootstrap_mean, paired_difference, ratio_interval


def test_the_interval_covers_the_truth_at_about_its_level():
    rng = np.random.default_rng(1)
    p, hits, trials = 0.4, 0, 200
    for trial in range(trials):
        scores = (rng.random(60) < p).astype(float)
        hits += (
            bootstrap_mean(scores, resamples=400, seed=trial).low
            <= p
            <= bootstrap_mean(scores, resamples=400, seed=trial).high
        )
    assert 0.88 <= hits / trials <= 0.99


def test_width_shrinks_with_more_problems_and_is_reproducible():
    rng = np.random.default_rng(0)
    small = bootstrap_mean(rng.random(30), seed=3)
    large = bootstrap_mean(rng.random(3000), seed=3)
    assert (large.high - large.low) < (small.high - small.low) / 5
    again = bootstrap_mean(np.random.default_rng(0).random(30), seed=3)
    assert again == small and isinstance(again, Interval)
    assert small.low <= small.estimate <= small.high


def test_seeds_add_their_own_variation():
    rng = np.random.default_rng(2)
    problems = rng.random(40)
    same = np.tile(problems, (4, 1))
    noisy = same + rng.normal(0, 0.3, size=same.shape)
    assert (bootstrap_mean(noisy).high - bootstrap_mean(noisy).low) > (
        bootstrap_mean(same).high - bootstrap_mean(same).low
    )


def test_pairing_removes_shared_problem_difficulty():
    rng = np.random.default_rng(4)
    difficulty = rng.random(30)
    a, b = difficulty + 0.05, difficulty
    paired = paired_difference(a, b)
    assert paired.estimate == pytest.approx(0.05) and paired.low == pytest.approx(0.05)
    unpaired_width = bootstrap_mean(a).high - bootstrap_mean(a).low
    assert paired.high - paired.low < unpaired_width / 10
    with pytest.raises(ValueError, match="same problems"):
        paired_difference(a, b[:-1])


def test_ratio_interval_and_bad_input():
    ratio = ratio_interval([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    assert ratio.estimate == pytest.approx(2.0) and ratio.low < 2.0 < ratio.high
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([0.5, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([0.5], level=1.5)
