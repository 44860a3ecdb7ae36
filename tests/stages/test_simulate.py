import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest

from spo_helpers.analysis.throughput import SimConfig, compare, paired_configs, sample_times, simulate
from spo_helpers.analysis.throughput_sweep import find_settings_for_ratio, sweep
from spo_helpers.cli import main

SMALL = SimConfig(slots=64, batch_size=64, group_size=8, steps=12, sigma=1.0, seed=3)


def ratio(base, grpo_policy="grpo", **changes):
    return compare(*paired_configs(base, grpo_policy, **changes))["ratio"]


# ------------------------------------------------------------------------------------------ hand-checkable cases
@pytest.mark.parametrize("slots", [64, 32, 16])
@pytest.mark.parametrize("update_time", [0.0, 2.5])
def test_constant_times_give_equal_throughput(slots, update_time):
    base = dataclasses.replace(SMALL, dist="constant", scale=2.0, slots=slots, update_time=update_time)
    out = compare(*paired_configs(base))
    waves = 64 // slots
    expected_wall = base.steps * (waves * 2.0 + update_time)
    assert out["grpo"].wall_time == pytest.approx(expected_wall)
    assert out["spo"].wall_time == pytest.approx(expected_wall)
    assert out["ratio"] == pytest.approx(1.0)
    assert out["spo"].staleness.max() == 0


def test_constant_times_with_unmatched_slots_favour_streaming():
    # 48 samples on 32 slots: GRPO needs two waves (2T), SPO streams at 32 / T.
    base = dataclasses.replace(SMALL, dist="constant", slots=32, batch_size=48, steps=30)
    assert ratio(base) == pytest.approx(4 / 3, rel=0.03)


def test_barrier_wall_time_is_sum_of_batch_maxima():
    cfg = SimConfig(policy="grpo", slots=256, batch_size=256, group_size=8, steps=4, sigma=0.7, seed=11)
    draws = np.random.default_rng(11).lognormal(0.0, 0.7, 4096)[: 4 * 256].reshape(4, 256)
    res = simulate(cfg)
    np.testing.assert_allclose(res.step_times, draws.max(axis=1))
    assert res.wall_time == pytest.approx(draws.max(axis=1).sum())
    assert res.utilisation == pytest.approx(draws.sum() / (256 * res.wall_time))


def test_async_trainer_bound_by_update_time():
    # T = 1, U = 3: batches are ready at 1, 2, 3, ...; updates end at 4, 7, 10, ...
    base = dataclasses.replace(SMALL, dist="constant", synchronous=False, update_time=3.0, steps=5)
    out = compare(*paired_configs(base))
    for res in (out["grpo"], out["spo"]):
        np.testing.assert_allclose(res.step_ends, [4.0, 7.0, 10.0, 13.0, 16.0])
        assert res.staleness.min() >= 0
    assert out["ratio"] == pytest.approx(1.0)
    assert out["spo"].staleness.max() > 0  # generation runs ahead of the trainer


# ------------------------------------------------------------------------------------------ heavy tails
def test_heavy_tail_ratio_grows_with_sigma():
    ratios = [ratio(dataclasses.replace(SMALL, sigma=s)) for s in (0.25, 0.5, 1.0, 1.5)]
    assert ratios[0] > 1.0
    assert all(a < b for a, b in itertools.pairwise(ratios)), ratios


def test_heavy_tail_ratio_grows_as_pareto_shape_falls():
    ratios = [ratio(dataclasses.replace(SMALL, dist="pareto", pareto_shape=a)) for a in (4.0, 2.5, 1.5)]
    assert ratios[0] > 1.0
    assert ratios[0] < ratios[1] < ratios[2], ratios


def test_overprovisioning_helps_grpo_but_does_not_close_the_gap():
    base = dataclasses.replace(SMALL, sigma=1.0)
    standard = compare(*paired_configs(base))
    over = compare(*paired_configs(base, overprovision=0.5))
    assert 1.0 < over["ratio"] < standard["ratio"]
    assert over["grpo"].aborted > 0


def test_grpo_async_with_one_response_is_spo():
    grpo, spo = paired_configs(dataclasses.replace(SMALL, group_size=1), "grpo_async")
    a, b = simulate(grpo), simulate(spo)
    assert a.wall_time == b.wall_time
    np.testing.assert_array_equal(a.staleness, b.staleness)
    np.testing.assert_array_equal(a.step_ends, b.step_ends)


def test_grpo_barrier_does_not_depend_on_group_size():
    # At fixed batch size the barrier waits for all B n trajectories whatever n is.
    walls = {n: simulate(dataclasses.replace(SMALL, policy="grpo", group_size=n)).wall_time for n in (1, 4, 16)}
    assert len(set(walls.values())) == 1


def test_grpo_async_keeps_throughput_but_pays_in_staleness():
    out = compare(*paired_configs(dataclasses.replace(SMALL, steps=30), "grpo_async"))
    assert out["ratio"] == pytest.approx(1.0, abs=0.15)
    assert out["grpo"].staleness.mean() > out["spo"].staleness.mean()


def test_tool_call_model_mean():
    cfg = SimConfig(dist="constant", scale=2.0, tool_calls=3.0, turn_time=0.5)
    t = sample_times(cfg, 200_000, np.random.default_rng(0))
    assert t.min() >= 0.5
    assert t.mean() == pytest.approx(4 * 0.5 + 3 * 2.0, rel=0.01)
    assert ratio(dataclasses.replace(SMALL, tool_calls=2.0, sigma=1.0)) > 1.5


# ------------------------------------------------------------------------------------------ bookkeeping
@pytest.mark.parametrize(
    "cfg",
    [
        dataclasses.replace(SMALL, policy="grpo"),
        dataclasses.replace(SMALL, policy="grpo", slots=20, overprovision=0.3),
        dataclasses.replace(SMALL, policy="grpo", synchronous=False, update_time=1.0),
        dataclasses.replace(SMALL, policy="grpo_async"),
        dataclasses.replace(SMALL, policy="spo", slots=200),
        dataclasses.replace(SMALL, policy="spo", synchronous=False, update_time=0.5),
        dataclasses.replace(SMALL, policy="spo", slots=200, max_staleness=1),
        dataclasses.replace(SMALL, policy="grpo_async", max_staleness=0),
    ],
    ids=lambda c: f"{c.policy}-s{c.slots}",
)
def test_conservation_and_bounds(cfg):
    res = simulate(cfg)
    assert res.used == cfg.steps * cfg.batch_size == res.staleness.size
    assert res.launched == res.finished + res.aborted + res.in_flight
    assert res.finished == res.used + res.dropped + res.finished_unused
    assert min(res.in_flight, res.finished_unused, res.dropped, res.aborted) >= 0
    assert res.staleness.min() >= 0
    if cfg.max_staleness is not None:
        assert res.staleness.max() <= cfg.max_staleness
    assert res.throughput == pytest.approx(res.used / res.wall_time)
    assert 0.0 < res.useful_utilisation <= res.utilisation <= 1.0 + 1e-9
    assert res.step_times.size == cfg.steps and (res.step_times > 0).all()
    assert res.steps_frame()["step_time"].sum() == pytest.approx(res.wall_time)
    assert res.staleness_frame()["count"].sum() == res.used


def test_synchronous_barrier_is_on_policy_and_streaming_is_not():
    out = compare(*paired_configs(SMALL))
    assert out["grpo"].staleness.max() == 0
    assert out["spo"].staleness.max() >= 1
    assert out["spo"].utilisation == pytest.approx(1.0)
    assert out["frame"]["policy"].tolist() == ["grpo", "spo"]


def test_max_staleness_drops_samples():
    res = simulate(dataclasses.replace(SMALL, policy="spo", max_staleness=0))
    assert res.dropped > 0 and res.staleness.max() == 0


def test_seed_reproducibility():
    a, b = simulate(SMALL), simulate(SMALL)
    c = simulate(dataclasses.replace(SMALL, seed=4))
    np.testing.assert_array_equal(a.step_ends, b.step_ends)
    np.testing.assert_array_equal(a.staleness, b.staleness)
    assert a.wall_time != c.wall_time
    pd.testing.assert_frame_equal(sweep(SMALL, **GRID), sweep(SMALL, **GRID))


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"policy": "ppo"}, "policy must be one of"),
        ({"dist": "weibull"}, "dist must be one of"),
        ({"slots": 0}, "slots must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"steps": 0}, "steps must be"),
        ({"policy": "grpo", "batch_size": 60, "group_size": 8}, "multiple of group_size"),
        ({"sigma": -1.0}, "sigma must be >= 0"),
        ({"pareto_shape": 0.0}, "pareto_shape must be > 0"),
        ({"scale": 0.0}, "scale must be > 0"),
        ({"update_time": -1.0}, "update_time must be >= 0"),
        ({"mu": float("nan")}, "mu must be finite"),
        ({"policy": "spo", "overprovision": 0.5}, "overprovision applies to policy 'grpo' only"),
        ({"max_staleness": -1}, "max_staleness must be"),
    ],
)
def test_invalid_configs_raise(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SimConfig(), **changes)


def test_spo_ignores_group_divisibility():
    assert SimConfig(policy="spo", batch_size=60, group_size=8).prompts_per_step == 60


def test_compare_and_sweep_reject_wrong_inputs():
    with pytest.raises(ValueError, match=r"config_spo\.policy must be 'spo'"):
        compare(SimConfig(policy="grpo"), SimConfig(policy="grpo"))
    with pytest.raises(ValueError, match=r"config_grpo\.policy"):
        compare(SimConfig(policy="spo"), SimConfig(policy="spo"))
    with pytest.raises(ValueError, match="multiple of every group size"):
        sweep(SMALL, group_sizes=(3,), batch_sizes=(64,))
    with pytest.raises(ValueError, match="tails need dist"):
        sweep(dataclasses.replace(SMALL, dist="exponential"))
    with pytest.raises(ValueError, match="target must be > 0"):
        find_settings_for_ratio(0.0, frame=pd.DataFrame({"ratio": [1.0]}))


# ------------------------------------------------------------------------------------------ sweeps
GRID = {"group_sizes": (4, 8), "batch_sizes": (32, 64), "tails": (0.25, 1.0), "slots": (None, 32)}


def test_sweep_is_tidy_and_ordered():
    df = sweep(dataclasses.replace(SMALL, steps=8), **GRID, overprovisions=(0.0, 0.5))
    assert len(df) == 2 * 2 * 2 * 2 * 2
    assert {"tail", "group_size", "batch_size", "slots", "overprovision", "ratio", "spo_staleness_mean"} <= set(
        df.columns
    )
    assert (df["ratio"] > 0.9).all()
    matched = df[(df["slots"] == df["batch_size"]) & (df["overprovision"] == 0)]
    by_tail = matched.groupby("tail")["ratio"].min()
    assert by_tail[1.0] > by_tail[0.25]
    assert np.allclose(df["ratio"], df["spo_throughput"] / df["grpo_throughput"])


def test_find_settings_for_ratio_returns_nearest_rows():
    frame = sweep(dataclasses.replace(SMALL, steps=8), group_sizes=(8,), batch_sizes=(64,), tails=(0.25, 0.5, 1.0))
    near = find_settings_for_ratio(4.35, frame=frame, k=2)
    assert len(near) == 2
    assert near["distance"].is_monotonic_increasing
    assert near["distance"].iloc[0] == pytest.approx(np.abs(np.log(frame["ratio"] / 4.35)).min())


def test_paper_ratio_region_is_reachable():
    # One wave of 1024 on 1024 slots, lognormal sigma 0.5, no update time: about 4.35x (documented).
    base = SimConfig(slots=1024, batch_size=1024, group_size=8, steps=10, sigma=0.5, seed=0)
    assert 3.8 < ratio(base) < 5.2


# ------------------------------------------------------------------------------------------ command line
def test_cli_compare(tmp_path, capsys):
    out = tmp_path / "steps.csv"
    assert main(["simulate", "--steps", "6", "--slots", "32", "--batch-size", "32", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SPO/GRPO throughput ratio" in text
    frame = pd.read_csv(out)
    assert set(frame["policy"]) == {"grpo", "spo"} and len(frame) == 12


def test_cli_sweep(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    argv = ["simulate", "--sweep", "--steps", "5", "--batch-sizes", "32,64", "--group-sizes", "4,8"]
    assert main([*argv, "--tails", "0.5,1", "--output", str(out)]) == 0
    assert "nearest to 4.35x" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 8
    assert main(["simulate", "--sweep", "--steps", "4", "--dist", "pareto", "--batch-sizes", "32"]) == 0


def test_cli_bad_config_exits_2(capsys):
    assert main(["simulate", "--batch-size", "30", "--group-size", "8"]) == 2
    assert "multiple of group_size" in capsys.readouterr().err
