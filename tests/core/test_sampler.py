import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spo_helpers.core.sampler import (
    PrioritizedSampler,
    SamplerConfig,
    priority_weights,
    sample_without_replacement,
    top_k,
)
from spo_helpers.core.tracker import ValueTracker


def make_tracker(n, seed=0):
    rng = np.random.default_rng(seed)
    values = {f"p{i}": rng.integers(0, 2, size=8).tolist() for i in range(n)}
    return ValueTracker.from_offline_values(values)


def test_priority_weights_hand_computed():
    w = priority_weights([0.5, 0.0, 1.0, 0.1])
    np.testing.assert_allclose(w, [0.5 + 0.05, 0.05, 0.05, 0.3 + 0.05])


def test_priority_weights_gamma():
    w = priority_weights([0.5, 0.5], n_eff=[4.0, 16.0], eps=0.0, gamma=0.5)
    np.testing.assert_allclose(w, [0.25, 0.125])
    with pytest.raises(ValueError, match="n_eff"):
        priority_weights([0.5], gamma=1.0)


@pytest.mark.parametrize("bad", [[1.2], [-0.1], [float("nan")]])
def test_priority_weights_reject_bad_p(bad):
    with pytest.raises(ValueError, match="p_hat"):
        priority_weights(bad)


def test_sampling_frequencies_follow_weights():
    # Drawing one item: P(i) = w_i / Σw exactly.
    w = np.array([1.0, 2.0, 3.0, 4.0])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_without_replacement(w, 1, rng)[0] for _ in range(20000)], minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), w / w.sum(), atol=0.015)


def test_successive_sampling_second_draw():
    # P(first=0, second=1) = w0/W · w1/(W - w0) for successive sampling.
    w = np.array([1.0, 2.0, 3.0])
    rng = np.random.default_rng(1)
    hits = sum(sample_without_replacement(w, 2, rng).tolist() == [0, 1] for _ in range(30000))
    assert hits / 30000 == pytest.approx(1 / 6 * 2 / 5, abs=0.01)


def test_zero_weight_items_only_when_needed():
    rng = np.random.default_rng(0)
    w = np.array([0.0, 1.0, 0.0, 1.0])
    for _ in range(50):
        assert sorted(sample_without_replacement(w, 2, rng).tolist()) == [1, 3]
    assert sorted(sample_without_replacement(w, 4, rng).tolist()) == [0, 1, 2, 3]


def test_top_k_order():
    assert top_k(np.array([0.1, 0.9, 0.5, 0.9]), 3).tolist() == [1, 3, 2]


def test_sampler_without_pool_draws_distinct_rows():
    tracker = make_tracker(100)
    sampler = PrioritizedSampler(len(tracker), SamplerConfig(batch_size=32, seed=1))
    rows = sampler.sample(tracker)
    assert rows.size == 32 and np.unique(rows).size == 32


def test_pool_walks_an_epoch_permutation():
    tracker = make_tracker(10)
    sampler = PrioritizedSampler(len(tracker), SamplerConfig(batch_size=2, pool_size=3, seed=0))
    pools = [sampler.candidate_pool() for _ in range(3)]
    assert sampler.epoch == 0
    assert np.unique(np.concatenate(pools)).size == 9  # three disjoint pools, last partial one dropped
    sampler.candidate_pool()
    assert sampler.epoch == 1


def test_batch_larger_than_pool_takes_every_candidate():
    tracker = make_tracker(5)
    sampler = PrioritizedSampler(len(tracker), SamplerConfig(batch_size=12, seed=0))
    rows = sampler.sample(tracker)
    assert sorted(np.bincount(rows, minlength=5).tolist()) == [2, 2, 2, 3, 3]


@pytest.mark.parametrize("mode", ["weighted", "thompson", "uniform"])
def test_resume_gives_the_same_batches(mode):
    tracker = make_tracker(50)
    cfg = SamplerConfig(batch_size=8, pool_size=20, mode=mode, seed=5)
    straight = PrioritizedSampler(len(tracker), cfg)
    expected = [straight.sample(tracker).tolist() for _ in range(6)]
    first = PrioritizedSampler(len(tracker), cfg)
    got = [first.sample(tracker).tolist() for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = PrioritizedSampler(len(tracker), cfg)
    resumed.load_state_dict(state)
    got += [resumed.sample(tracker).tolist() for _ in range(3)]
    assert got == expected


def test_thompson_prefers_uncertain_middle_prompts():
    # One prompt sure to fail, one sure to pass, one at p = 0.5 with a wide posterior.
    tracker = ValueTracker.from_offline_values({"fail": [0] * 8, "pass": [1] * 8, "mid": [1, 0]})
    sampler = PrioritizedSampler(3, SamplerConfig(batch_size=1, mode="thompson", seed=0))
    picks = [tracker.keys[sampler.sample(tracker)[0]] for _ in range(200)]
    assert picks.count("mid") > 120


def test_sampler_rejects_mismatched_tracker():
    sampler = PrioritizedSampler(3, SamplerConfig(batch_size=1))
    with pytest.raises(ValueError, match="3 prompts"):
        sampler.sample(make_tracker(4))


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 60),
    batch=st.integers(1, 80),
    pool=st.one_of(st.none(), st.integers(1, 70)),
    mode=st.sampled_from(["weighted", "thompson", "uniform"]),
    seed=st.integers(0, 2**31),
)
def test_batches_are_seeded_and_distinct_unless_larger_than_pool(n, batch, pool, mode, seed):
    tracker = make_tracker(n, seed=seed % 7)
    cfg = SamplerConfig(batch_size=batch, pool_size=pool, mode=mode, seed=seed)
    a, b = PrioritizedSampler(n, cfg), PrioritizedSampler(n, cfg)
    for _ in range(3):
        rows_a, rows_b = a.sample(tracker), b.sample(tracker)
        assert rows_a.tolist() == rows_b.tolist()
        assert rows_a.size == batch and rows_a.min() >= 0 and rows_a.max() < n
        pool_size = min(pool or n, n)
        if batch <= pool_size:
            assert np.unique(rows_a).size == batch
        else:
            counts = np.bincount(rows_a, minlength=n)
            assert counts.max() - counts[counts > 0].min() <= 1
