"""The latency model: the simulation's distributions, one seeded delay per named code run, off by default."""

from __future__ import annotations

import numpy as np
import pytest

from spo_helpers.analysis.throughput import SimConfig, sample_times
from spo_helpers.core.latency import LatencyModel, draw_latencies


def test_off_by_default_and_from_an_empty_section():
    assert not LatencyModel().enabled
    assert LatencyModel().delay(1, 2, 3) == 0.0
    assert LatencyModel.from_mapping(None) == LatencyModel()
    assert LatencyModel.from_mapping({"dist": "none", "seed": 7}).delay(0) == 0.0


def test_a_delay_is_named_by_its_words_not_by_what_ran_before():
    model = LatencyModel(dist="lognormal", mu=-1.0, sigma=1.0, seed=5)
    first = model.delay(3, 17, 0)
    for words in [(1, 1, 1), (3, 17, 1), (9,)]:
        model.delay(*words)
    assert model.delay(3, 17, 0) == first
    assert model.delay(3, 17, 1) != first
    assert LatencyModel(dist="lognormal", mu=-1.0, sigma=1.0, seed=6).delay(3, 17, 0) != first


@pytest.mark.parametrize(
    ("model", "mean", "median"),
    [
        (LatencyModel(dist="lognormal", mu=0.0, sigma=0.5, max_s=1e9), np.exp(0.125), 1.0),
        (LatencyModel(dist="pareto", pareto_shape=3.0, scale=0.5, max_s=1e9), 0.5 * 3 / 2, 0.5 * 2 ** (1 / 3)),
        (LatencyModel(dist="exponential", scale=2.0, max_s=1e9), 2.0, 2.0 * np.log(2)),
        (LatencyModel(dist="constant", scale=0.3), 0.3, 0.3),
    ],
)
def test_delays_follow_their_distribution(model, mean, median):
    delays = np.array([model.delay(i, 0) for i in range(20_000)])
    assert delays.mean() == pytest.approx(mean, rel=0.05)
    assert np.median(delays) == pytest.approx(median, rel=0.05)


def test_the_cap_bounds_a_heavy_tail():
    model = LatencyModel(dist="pareto", pareto_shape=0.5, scale=1.0, max_s=4.0)
    delays = model.draw(10_000, np.random.default_rng(0))
    assert delays.max() == 4.0 and (delays == 4.0).mean() > 0.4  # P(L > 4) = 4^-0.5 = 0.5


def test_the_simulation_draws_the_same_times():
    config = SimConfig(dist="pareto", pareto_shape=2.5, scale=0.7, seed=3)
    expected = draw_latencies("pareto", 64, np.random.default_rng(3), pareto_shape=2.5, scale=0.7)
    assert np.array_equal(sample_times(config, 64, np.random.default_rng(3)), expected)


@pytest.mark.parametrize(
    "section",
    [{"dist": "gamma"}, {"dist": "lognormal", "sigma": -1}, {"dist": "pareto", "pareto_shape": 0}, {"max_s": 0}],
)
def test_bad_settings_are_refused(section):
    with pytest.raises(ValueError):
        LatencyModel.from_mapping(section)
