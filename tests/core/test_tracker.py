import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spo_helpers.core.tracker import TrackerConfig, ValueTracker, forgetting_factor, offline_prior

CFG = TrackerConfig()  # N_init = 8


def test_defaults_are_the_official_constants():
    assert (CFG.offline_n, CFG.rho_min, CFG.rho_max, CFG.d_half, CFG.rho_mode, CFG.rho_const) == (
        8,
        0.875,
        0.96,
        0.06,
        "kl",
        0.875,
    )
    assert CFG.n_init == pytest.approx(8.0)


def test_offline_init_hand_computed():
    # 3 successes of 8 → α0 = 8·3.5/9, β0 = 8·5.5/9; p̂0 = 3.5/9, N_eff = 8.
    tracker = ValueTracker.from_offline_values({"a": [1, 0, 1, 0, 0, 1, 0, 0]})
    assert tracker.alpha("a")[0] == pytest.approx(8 * 3.5 / 9)
    assert tracker.beta("a")[0] == pytest.approx(8 * 5.5 / 9)
    assert tracker.p_hat(["a"])[0] == pytest.approx(3.5 / 9)
    assert tracker.n_eff(["a"])[0] == pytest.approx(8.0)


def test_scores_are_binarised_at_zero():
    # Scores > 0 count as successes; 0 and negative (math_dapo's -1) as failures.
    tracker = ValueTracker.from_offline_values({"a": [0.3, -1.0, 0.0, 1.0]})
    s, n = 2, 4
    assert tracker.p_hat("a")[0] == pytest.approx((s + 0.5) / (n + 1))


def test_real_n_is_used_for_short_score_lists():
    # Two scores (one success): α0 = 8·1.5/3 = 4, β0 = 4.
    tracker = ValueTracker.from_offline_values({"a": [1, 0]})
    assert tracker.alpha("a")[0] == pytest.approx(4.0)
    assert tracker.beta("a")[0] == pytest.approx(4.0)


def test_missing_prompts_get_the_prior_and_are_counted():
    tracker = ValueTracker.from_offline_values({"a": [1] * 8, "zzz": [0]}, keys=["a", "b", "c"])
    assert tracker.alpha(["b", "c"]).tolist() == [0.5, 0.5]
    assert tracker.beta(["b", "c"]).tolist() == [0.5, 0.5]
    assert tracker.num_without_offline_values == 2
    assert tracker.keys_without_offline_values == ["b", "c"]
    assert tracker.num_unmatched_values == 1
    assert tracker.p_hat("a")[0] == pytest.approx(8.5 / 9)


def test_empty_score_list_counts_as_missing():
    tracker = ValueTracker.from_offline_values({"a": []})
    assert tracker.num_without_offline_values == 1
    assert tracker.p_hat("a")[0] == 0.5


def test_offline_n_zero_ignores_values():
    tracker = ValueTracker.from_offline_values({"a": [1, 1, 1]}, TrackerConfig(offline_n=0))
    assert tracker.alpha("a")[0] == 0.5 and tracker.beta("a")[0] == 0.5


def test_subsampling_is_seeded_and_keeps_offline_n():
    values = {f"p{i}": [1] * 10 + [0] * 22 for i in range(200)}
    t1 = ValueTracker.from_offline_values(values, seed=3)
    t2 = ValueTracker.from_offline_values(values, seed=3)
    t3 = ValueTracker.from_offline_values(values, seed=4)
    np.testing.assert_array_equal(t1.alpha(), t2.alpha())
    assert not np.array_equal(t1.alpha(), t3.alpha())
    np.testing.assert_allclose(t1.n_eff(), 8.0)
    # Kept successes s ∈ [0, 8]: α0 = 8(s+0.5)/9; mean of s is 8·10/32 = 2.5.
    s = t1.alpha() * 9 / 8 - 0.5
    np.testing.assert_allclose(s, np.round(s), atol=1e-9)
    assert 2.0 < s.mean() < 3.0


def test_nan_offline_score_raises_with_key():
    with pytest.raises(ValueError, match="prompt 'bad'"):
        ValueTracker.from_offline_values({"bad": [1.0, float("nan")]})


def test_update_hand_computed_first_visit():
    tracker = ValueTracker.from_offline_values({"a": [1, 0, 1, 0, 0, 1, 0, 0]})
    a0, b0 = tracker.alpha("a")[0], tracker.beta("a")[0]
    rho = tracker.update(["a"], [1.0])
    assert rho.tolist() == [0.96]
    assert tracker.alpha("a")[0] == pytest.approx(0.96 * a0 + 1)
    assert tracker.beta("a")[0] == pytest.approx(0.96 * b0)
    assert tracker.visits("a").tolist() == [1]
    assert tracker.last_visit("a").tolist() == [1]


def test_forgetting_factor_hand_computed():
    # D = 0.06 → 2^-1 = 0.5, clipped to 0.875; D = 0.001 → 2^(-1/60) ≈ 0.98851, clipped to 0.96;
    # D = 0.006 → 2^-0.1 ≈ 0.93303, inside the range.
    rho = ValueTracker.from_offline_values({}).forgetting_factor([0.06, 0.001, 0.006, 0.0])
    np.testing.assert_allclose(rho, [0.875, 0.96, 2**-0.1, 0.96])


def test_constant_mode_uses_rho_const():
    cfg = TrackerConfig(rho_mode="constant", rho_const=0.9)
    tracker = ValueTracker.from_offline_values({"a": [1]}, cfg)
    a0 = tracker.alpha("a")[0]
    rho = tracker.update("a", [0.0], drift=[5.0])
    assert rho.tolist() == [0.9]
    assert tracker.alpha("a")[0] == pytest.approx(0.9 * a0)


def test_duplicate_keys_in_one_update_apply_in_order():
    tracker = ValueTracker.from_offline_values({"a": [1, 0], "b": [0, 0]})
    a0 = tracker.alpha("a")[0]
    tracker.update(["a", "b", "a"], [1.0, 0.0, 0.0])
    assert tracker.alpha("a")[0] == pytest.approx(0.96 * (0.96 * a0 + 1) + 0)
    assert tracker.visits(["a", "b"]).tolist() == [2, 1]


@pytest.mark.parametrize(
    ("keys", "rewards", "drift", "error", "match"),
    [
        (["a"], [1.5], None, ValueError, r"\[0, 1\]"),
        (["a"], [-0.1], None, ValueError, r"\[0, 1\]"),
        (["a"], [float("nan")], None, ValueError, "NaN"),
        (["a", "b"], [1.0], None, ValueError, "2 keys"),
        (["nope"], [1.0], None, KeyError, "not tracked"),
        (["a"], [1.0], [float("nan")], ValueError, "drift"),
        (["a"], [1.0], [-1.0], ValueError, "drift"),
        (["a"], [1.0], [0.1, 0.2], ValueError, "drift"),
    ],
)
def test_update_rejects_bad_input(keys, rewards, drift, error, match):
    tracker = ValueTracker.from_offline_values({"a": [1], "b": [0]})
    before = tracker.state_dict()
    with pytest.raises(error, match=match):
        tracker.update(keys, rewards, drift=drift)
    assert tracker.state_dict() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rho_min": 1.0, "rho_max": 1.0},
        {"rho_min": 0.97},
        {"d_half": 0.0},
        {"rho_mode": "kalman"},
        {"rho_const": 0.0},
        {"offline_n": -1},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)


def test_state_round_trip_json_and_torch(tmp_path):
    torch = pytest.importorskip("torch")
    tracker = ValueTracker.from_offline_values({"a": [1, 0, 1], "b": [0]}, keys=["a", "b", "c"])
    tracker.update(["a", "c"], [1.0, 0.0], drift=[0.013, 0.0])
    state = tracker.state_dict()
    via_json = json.loads(json.dumps(state))
    torch.save(state, tmp_path / "t.pt")
    via_torch = torch.load(tmp_path / "t.pt", weights_only=True)
    for restored_state in (via_json, via_torch):
        fresh = ValueTracker.from_offline_values({})
        fresh.load_state_dict(restored_state)
        assert fresh.state_dict() == state
        fresh.update(["b"], [1.0])
        tracker_copy = ValueTracker.from_state_dict(state)
        tracker_copy.update(["b"], [1.0])
        assert fresh.state_dict() == tracker_copy.state_dict()


def test_prior_function():
    a, b = offline_prior(np.array([0, 8]), np.array([8, 8]), 8.0)
    np.testing.assert_allclose(a, [8 * 0.5 / 9, 8 * 8.5 / 9])
    np.testing.assert_allclose(b, [8 * 8.5 / 9, 8 * 0.5 / 9])


def test_first_visit_is_rho_max():
    assert forgetting_factor(None, CFG, size=3).tolist() == [0.96] * 3


# ---------------------------------------------------------------- properties

scores_st = st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0]), min_size=0, max_size=20)
values_st = st.dictionaries(st.text(min_size=1, max_size=6), scores_st, min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    values=values_st,
    steps=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 2, allow_nan=False), st.integers(0, 10**6)),
        min_size=1,
        max_size=40,
    ),
    mode=st.sampled_from(["kl", "constant"]),
)
def test_p_hat_in_unit_interval_and_n_eff_bounded(values, steps, mode):
    cfg = TrackerConfig(rho_mode=mode)
    tracker = ValueTracker.from_offline_values(values, cfg)
    keys = tracker.keys
    rho_lo = cfg.rho_const if mode == "constant" else cfg.rho_min
    rho_hi = cfg.rho_const if mode == "constant" else cfg.rho_max
    n0 = tracker.n_eff()
    for reward, drift, pick in steps:
        key = keys[pick % len(keys)]
        tracker.update([key], [reward], drift=[drift])
    p = tracker.p_hat()
    assert np.all((p > 0) & (p < 1))
    # After k visits N = ρ_k(...(ρ_1 N0 + 1)...) + 1, which grows with every ρ_j: it lies between
    # the all-ρ_lo and all-ρ_hi recursions, N0 ρ^k + (1 - ρ^k)/(1 - ρ). For offline-initialised
    # prompts (N0 = N_init) the lower bound is at least N_init·ρ_min^k.
    k = tracker.visits()
    n = tracker.n_eff()
    lower = n0 * rho_lo**k + (1 - rho_lo**k) / (1 - rho_lo)
    upper = n0 * rho_hi**k + (1 - rho_hi**k) / (1 - rho_hi)
    assert np.all(n >= lower - 1e-9) and np.all(n <= upper + 1e-9)
    offline = np.isclose(n0, cfg.n_init)
    assert np.all(n[offline] >= cfg.n_init * cfg.rho_min ** k[offline] - 1e-9)


@settings(max_examples=40, deadline=None)
@given(values=values_st, rewards=st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_state_round_trip_is_exact(values, rewards):
    tracker = ValueTracker.from_offline_values(values, seed=7)
    keys = [tracker.keys[i % len(tracker)] for i in range(len(rewards))]
    tracker.update(keys, rewards, drift=[0.01 * i for i in range(len(rewards))])
    state = json.loads(json.dumps(tracker.state_dict()))
    restored = ValueTracker.from_state_dict(state)
    np.testing.assert_array_equal(restored.alpha(), tracker.alpha())
    np.testing.assert_array_equal(restored.beta(), tracker.beta())
    assert restored.state_dict() == tracker.state_dict()
    assert math.isclose(restored.p_hat().sum(), tracker.p_hat().sum())
