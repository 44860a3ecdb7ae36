import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spo_helpers.core.advantages import (
    group_ids_for_repeats,
    grpo_advantages,
    spo_advantages,
    zero_advantage_fraction,
    zero_fraction,
)


def test_spo_hand_computed():
    # r - b = [0.5, -0.5, 0.75, -0.25]; mean 0.125; centred [0.375, -0.625, 0.625, -0.375];
    # unbiased variance = (2·0.140625 + 2·0.390625)/3 = 0.3541666…
    r = np.array([1.0, 0.0, 1.0, 0.0])
    b = np.array([0.5, 0.5, 0.25, 0.25])
    std = np.sqrt((2 * 0.375**2 + 2 * 0.625**2) / 3)
    np.testing.assert_allclose(spo_advantages(r, b), np.array([0.375, -0.625, 0.625, -0.375]) / (std + 1e-8))


def test_spo_single_sample_is_zero():
    assert spo_advantages(np.array([1.0]), np.array([0.2])).tolist() == [0.0]


def test_spo_constant_batch_is_zero_not_nan():
    adv = spo_advantages(np.ones(4), np.full(4, 0.5))
    assert np.all(adv == 0)


def test_spo_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    r = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float32)
    b = torch.tensor([0.5, 0.5, 0.9], dtype=torch.float32)
    out = spo_advantages(r, b)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    a = (r - b) - (r - b).mean()
    torch.testing.assert_close(out, a / (a.std() + 1e-8))


@pytest.mark.parametrize(
    ("r", "b", "match"),
    [([1.0, float("nan")], [0.5, 0.5], "NaN"), ([1.0, 0.0], [0.5], "shape"), ([[1.0]], [[0.5]], "one-dimensional")],
)
def test_spo_rejects_bad_input(r, b, match):
    with pytest.raises(ValueError, match=match):
        spo_advantages(np.array(r), np.array(b))


def test_grpo_hand_computed():
    # Group 0: [1, 0, 0, 1] mean 0.5, unbiased std sqrt(1/3); group 1: [1, 1] → 0; group 2: singleton.
    r = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    g = np.array(["a", "a", "a", "a", "b", "b", "c"])
    s = np.sqrt(1 / 3)
    expected = [0.5 / (s + 1e-6), -0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.5 / (s + 1e-6), 0.0, 0.0, 1 / (1 + 1e-6)]
    np.testing.assert_allclose(grpo_advantages(r, g), expected)
    np.testing.assert_allclose(grpo_advantages(r, g, norm_by_std=False), [0.5, -0.5, -0.5, 0.5, 0, 0, 1.0])


def test_zero_advantage_fraction_hand_computed():
    r = np.array([1, 1, 0, 1, 0, 0, 1], dtype=float)
    g = np.array([0, 0, 1, 1, 2, 2, 3])
    assert zero_advantage_fraction(r, g) == pytest.approx(4 / 7)
    assert zero_fraction(grpo_advantages(r, g)) == pytest.approx(4 / 7)


def test_group_ids_for_repeats():
    assert group_ids_for_repeats(2, 3).tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.verl
@settings(max_examples=30, deadline=None)
@given(
    groups=st.lists(st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=1, max_size=8), min_size=1, max_size=10),
    norm=st.booleans(),
)
def test_grpo_equals_verl(groups, norm):
    torch = pytest.importorskip("torch")
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    rewards = [x for grp in groups for x in grp]
    index = np.array([f"uid{i}" for i, grp in enumerate(groups) for _ in grp], dtype=object)
    length = 5
    token_rewards = torch.zeros(len(rewards), length)
    token_rewards[:, -1] = torch.tensor(rewards)
    mask = torch.ones(len(rewards), length)
    verl_adv, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    ours = grpo_advantages(torch.tensor(rewards, dtype=torch.float32), index, norm_by_std=norm)
    torch.testing.assert_close(ours, verl_adv[:, 0], atol=1e-5, rtol=1e-5)
    assert ours.dtype == torch.float32


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=50))
def test_spo_is_standardised(rewards):
    r = np.array(rewards)
    adv = spo_advantages(r, np.full(r.size, 0.3))
    assert abs(adv.mean()) < 1e-6
    if np.ptp(r) > 1e-3:
        assert adv.std(ddof=1) == pytest.approx(1.0, rel=1e-4)
