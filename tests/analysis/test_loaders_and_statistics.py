"""spo_helpers.analysis: validation statistics by hand and by brute force, loaders on synthetic run folders."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import N_VAL, VAL_SOURCES, write_kit_run, write_official_run, write_pipeline

from spo_helpers import analysis as A
from spo_helpers.errors import UserError


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("pipeline"), seeds=(0, 1))


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    return write_official_run(tmp_path_factory.mktemp("out") / "spo" / "SPO_qwen3_official")


# ------------------------------------------------------------------------------------------ pass@k, maj@k
def brute_maj(preds, correct, k):
    total = 0.0
    for subset in itertools.combinations(range(len(preds)), k):
        votes: dict[str, list[float]] = {}
        for i in subset:
            if preds[i] is not None:
                votes.setdefault(preds[i], []).append(correct[i])
        if votes:
            top = max(len(v) for v in votes.values())
            total += np.mean([np.mean(v) for v in votes.values() if len(v) == top])
    return total / math.comb(len(preds), k)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 2, 2, 5 / 6), (4, 2, 1, 0.5), (4, 0, 3, 0.0), (4, 4, 1, 1.0), (5, 1, 2, 0.4), (4, 2, 3, 1.0), (1, 1, 1, 1.0)],
)
def test_pass_at_k_hand_cases(n, c, k, expected):
    assert A.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_binomial_ratio_and_rejects_bad_input():
    for n, c, k in [(32, 5, 8), (64, 1, 32), (16, 10, 4)]:
        assert A.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    for n, c, k in [(4, 2, 0), (4, 2, 5), (4, 5, 1)]:
        with pytest.raises(ValueError):
            A.pass_at_k(n, c, k)


def test_maj_at_k_hand_cases():
    # k = n: plain vote; a tie between a right and a wrong answer is worth 1/2.
    assert A.maj_at_k(["7", "7", "3"], [1, 1, 0], 3) == 1.0
    assert A.maj_at_k(["7", "3", "3"], [1, 0, 0], 3) == 0.0
    assert A.maj_at_k(["7", "3"], [1, 0], 2) == 0.5
    # n = 3, k = 2: {7,7} -> 1, {7,3} twice -> tie 1/2 each: (1 + 0.5 + 0.5) / 3.
    assert A.maj_at_k(["7", "7", "3"], [1, 1, 0], 2) == pytest.approx(2 / 3)
    # Samples without an answer do not vote; a subset without votes scores 0.
    assert A.maj_at_k([None, "", "7"], [0, 0, 1], 1) == pytest.approx(1 / 3)
    assert A.maj_at_k([None, None, "7"], [0, 0, 1], 2) == pytest.approx(2 / 3)
    assert A.maj_at_k([None, None], [0, 0], 2) == 0.0
    # maj@1 is the accuracy of one sample.
    assert A.maj_at_k(["1", "2", "2", "3"], [1, 0, 0, 0], 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        A.maj_at_k(["1"], [1], 2)


def test_maj_at_k_equals_brute_force_over_subsets():
    rng = random.Random(0)
    for _ in range(120):
        n = rng.randint(1, 8)
        k = rng.randint(1, n)
        preds = [rng.choice(["a", "b", "c", None]) for _ in range(n)]
        correct = [float(p == "a") for p in preds]
        assert A.maj_at_k(preds, correct, k) == pytest.approx(brute_maj(preds, correct, k), abs=1e-12)


def test_default_ks_and_avg():
    assert A.default_ks(1) == [1]
    assert A.default_ks(6) == [1, 2, 4, 6]
    assert A.default_ks(32) == [1, 2, 4, 8, 16, 32]
    assert A.avg_at_k([1, 0, 0, 1]) == 0.5


def test_prompt_scores_and_summary_by_hand():
    frame = pd.DataFrame(
        {
            "step": 0,
            "data_source": ["a"] * 4 + ["b"] * 4,
            "prompt_key": ["p"] * 4 + ["q"] * 4,
            "correct": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            "pred": ["1", "1", "2", "3", "5", "5", "6", "9"],
        }
    )
    scores = A.prompt_scores(frame, ks=[2, 4])
    p = scores[scores["prompt_key"] == "p"].set_index(["metric", "k"])["value"]
    assert p[("avg", 4)] == 0.5
    assert p[("pass", 2)] == pytest.approx(5 / 6)
    assert p[("maj", 4)] == 1.0
    summary = A.validation_summary(scores).set_index(["data_source", "label"])["value"]
    assert summary[("avg", "avg@4")] == pytest.approx((0.5 + 0.25) / 2)
    assert summary[("b", "maj@4")] == 0.0
    assert set(A.prompt_scores(frame, ks="n")["k"]) == {4}


# ------------------------------------------------------------------------------------------ runs and metrics
def test_find_runs_in_a_pipeline(pipeline, tmp_path):
    runs = A.find_runs([pipeline])
    assert sorted((r.method, r.seed, r.kind) for r in runs) == [
        ("GRPO", 0, "kit"),
        ("GRPO", 1, "kit"),
        ("SPO", 0, "kit"),
        ("SPO", 1, "kit"),
    ]
    assert not any(r.name.startswith("offline_value") for r in runs)
    assert A.find_runs(pipeline / "spo" / "spo_s0")[0].label == "spo_s0"
    with pytest.raises(FileNotFoundError):
        A.find_runs([tmp_path / "nope"])
    with pytest.raises(UserError):
        A.find_runs([tmp_path])


def test_load_metrics_long_and_wide(pipeline):
    run = pipeline / "spo" / "spo_s0"
    long = A.load_metrics(run)
    assert list(long.columns) == ["step", "key", "value"]
    assert "note" not in set(long["key"])
    wide = A.load_metrics(run, wide=True)
    assert list(wide["step"]) == [0, 1, 2, 3, 4]
    assert wide.loc[wide["step"] == 4, "kit/samples_total"].item() == 32


def test_load_runs_has_run_columns_and_x_axes(pipeline):
    frame = A.load_runs(pipeline, keys=["critic/*", "val-core/*"])
    assert {"run", "method", "seed", "step", "key", "value", "samples", "tokens"} <= set(frame.columns)
    assert set(frame["key"]) == {"critic/score/mean", *(f"val-core/{s}/acc/mean@4" for s in VAL_SOURCES)}
    grpo = frame[(frame["run"] == "grpo_s0") & (frame["key"] == "critic/score/mean")].sort_values("step")
    assert list(grpo["samples"]) == [32.0, 64.0, 96.0, 128.0]  # 8 prompts x 4 responses per step
    assert list(grpo["tokens"]) == [160.0, 320.0, 480.0, 640.0]
    val0 = frame[(frame["step"] == 0)]
    assert (val0["samples"] == 0).all()


def test_x_axes_fall_back_to_the_config():
    long = pd.DataFrame({"step": [1, 2], "key": ["response_length/mean"] * 2, "value": [10.0, 20.0]})
    config = {"data": {"train_batch_size": 4}, "actor_rollout_ref": {"rollout": {"n": 2}}}
    axes = A.x_axes(long, config).set_index("step")
    assert list(axes["samples"]) == [0.0, 8.0, 16.0]
    assert list(axes["tokens"]) == [0.0, 80.0, 240.0]
    assert A.x_axes(long)["samples"].isna().all()


# ------------------------------------------------------------------------------------------ validation
def test_load_validation_maps_data_sources_from_the_val_files(pipeline):
    frame = A.load_validation(pipeline / "spo" / "spo_s0")
    assert list(frame.columns) == ["step", "prompt_key", "data_source", "sample", "score", "correct", "pred"]
    assert sorted(frame["step"].unique()) == [0, 4]
    counts = frame[frame["step"] == 0].groupby("data_source")["prompt_key"].nunique().to_dict()
    assert counts == VAL_SOURCES
    assert frame.groupby(["step", "prompt_key"]).size().eq(N_VAL).all()


def test_validation_table_matches_a_hand_computation(pipeline):
    run = pipeline / "spo" / "spo_s0"
    table = A.validation_table(run, steps="last")
    raw = A.load_validation(run)
    last = raw[(raw["step"] == 4) & (raw["data_source"] == "toy_math")]
    expected = np.mean([A.pass_at_k(4, int(g["correct"].sum()), 2) for _, g in last.groupby("prompt_key")])
    row = table[(table["data_source"] == "toy_math") & (table["label"] == "pass@2")]
    assert row["value"].item() == pytest.approx(expected)
    avg = table[(table["data_source"] == "avg") & (table["label"] == "avg@4")]["value"].item()
    per_source = table[(table["data_source"] != "avg") & (table["label"] == "avg@4")]["value"]
    assert avg == pytest.approx(per_source.mean())


def test_results_table_layout(pipeline):
    table = A.results_table(pipeline)
    ours = table[table["source"] == "this kit"].set_index("method")
    assert list(ours.index) == ["GRPO", "SPO"]
    assert list(ours["runs"]) == [2, 2]
    assert {"AIME24 maj@4", "AIME24 avg@4", "toy_math maj@4", "avg maj@4", "avg avg@4"} <= set(ours.columns)
    assert ours["AIME24 maj@4"].between(0, 100).all()
    assert (ours["AIME24 maj@4 low"] <= ours["AIME24 maj@4"]).all() and (ours["avg avg@4 high"] <= 100).all()
    # maj@4 on two benchmarks is not the paper's protocol: the paper's rows are left out, and the table says so
    assert set(table["source"]) == {"this kit"} and "not the paper's protocol" in ours["protocol"].iloc[0]
    table = A.results_table(pipeline, include_paper=True)
    paper = table[table["source"] != "this kit"].set_index("method")
    assert paper.loc["SPO", "avg maj@32"] == 63.8 and paper.loc["GRPO", "BRUMO25 maj@32"] == 56.7
    assert A.canonical_benchmark("math-ai/AIME_2025") == "AIME25"


# ------------------------------------------------------------------------------------------ per-sample logs
def test_steps_prompts_snapshots(pipeline):
    run = pipeline / "spo" / "spo_s0"
    steps = A.load_steps(run)
    assert len(steps) == 4 * 8
    assert {"step", "sample", "row", "reward", "p_hat", "advantage", "drift", "rho", "first_visit"} <= set(steps)
    assert steps.groupby("row")["first_visit"].sum().eq(1).all()
    grpo = A.load_steps(pipeline / "spo" / "grpo_s0")
    assert "group" in grpo.columns and len(grpo) == 4 * 8 * 4
    prompts = A.load_prompts(run)
    assert len(prompts) == 30 and str(prompts["difficulty"].dtype) == "Int64"
    snapshots = A.load_tracker_snapshots(run)
    assert sorted(snapshots["step"].unique()) == [0, 4]
    assert np.allclose(snapshots["p_hat"], snapshots["alpha"] / snapshots["n_eff"])
    with pytest.raises(A.MissingData):
        A.load_steps(pipeline / "spo" / "offline_value_estimation_subset_0")


def test_offline_values(pipeline):
    frame = A.load_offline_values(A.find_offline_values([pipeline / "spo" / "spo_s0"]))
    row = frame.set_index("prompt_key").loc["train 3"]
    assert row["successes"] == 3 and row["p_hat0"] == pytest.approx(3.5 / 9)
    assert A.offline_value_frame({"x": []})["p_hat0"].item() == 0.5


# ------------------------------------------------------------------------------------------ diagnostics
def test_zero_advantage_and_variance_by_hand():
    steps = pd.DataFrame(
        {
            "step": [1] * 4,
            "reward": [1.0, 1.0, 1.0, 0.0],
            "p_hat": [0.5] * 4,
            "advantage": [0.0, 0.0, 0.5, -0.5],
            "group": [0, 0, 1, 1],
        }
    )
    assert A.zero_advantage_share(steps)["zero_adv_frac"].item() == 0.5
    assert list(A.centred_advantages(steps)) == [0.0, 0.0, 0.5, -0.5]
    variance = A.advantage_variance(steps).set_index("stage")["variance"]
    assert variance["before norm"] == pytest.approx(np.var([0, 0, 0.5, -0.5], ddof=1))
    spo = steps.drop(columns="group")
    assert list(A.centred_advantages(spo)) == [0.5, 0.5, 0.5, -0.5]


def test_reliability_bins():
    steps = pd.DataFrame({"p_hat": [0.05, 0.08, 0.55, 1.0], "reward": [0.0, 1.0, 1.0, 1.0]})
    bins = A.reliability(steps, bins=10).set_index("bin")
    assert bins["count"].sum() == 4 and bins.loc[0, "count"] == 2 and bins.loc[9, "count"] == 1
    assert bins.loc[0, "reward_mean"] == 0.5 and np.isnan(bins.loc[3, "reward_mean"])


def test_curriculum_shares_and_quantile_fallback(pipeline, tmp_path):
    steps, _ = A.collect(A.find_runs(pipeline), A.load_steps)
    prompts, _ = A.collect(A.find_runs(pipeline), A.load_prompts)
    frame = A.curriculum(steps, prompts, n_windows=2)
    assert set(frame["bin"].astype(str)) == {"difficulty 0", "difficulty 1", "difficulty 2"}
    assert frame.groupby(["run", "window"], observed=True)["share"].sum().round(9).eq(1).all()
    run = write_kit_run(tmp_path / "spo" / "nodiff", "SPO", 3, difficulty=False)
    fallback = A.curriculum(A.load_steps(run), A.load_prompts(run), n_bins=3)
    assert list(fallback["bin"].cat.categories) == ["p̂0 q1", "p̂0 q2", "p̂0 q3"]
    assert fallback["dataset_share"].round(6).isin([1 / 3, 0.333333]).all()


def test_rho_drift_and_visits(pipeline):
    run = pipeline / "spo" / "spo_s0"
    steps = A.load_steps(run)
    frame = A.rho_drift(steps, n_windows=2)
    assert list(frame["window"].cat.categories) == ["1-2", "3-4"]
    assert (frame.loc[frame["first_visit"], "drift"] == 0).all()
    visits = A.visits_per_prompt(steps, prompts=A.load_prompts(run))
    assert len(visits) == 30 and visits["visits"].sum() == len(steps)
    from_snapshot = A.visits_per_prompt(snapshots=A.load_tracker_snapshots(run))
    assert len(from_snapshot) == 30
    summary = A.rho_drift_summary(frame).set_index(["quantity", "window"])
    assert summary.loc[("rho", "1-2"), "count"] == 16 and summary.loc[("rho", "1-2"), "p50"] <= 0.96
    assert summary.loc["drift", "count"].sum() == (~frame["first_visit"]).sum()
    with pytest.raises(A.MissingData):
        A.rho_drift(A.load_steps(pipeline / "spo" / "grpo_s0"))


# ------------------------------------------------------------------------------------------ official folders
def test_official_folder_from_tensorboard(official):
    (run,) = A.find_runs(official.parent.parent)
    assert (run.kind, run.method, run.seed) == ("official", "SPO", None)
    long = A.load_metrics(run)
    reward = long[long["key"] == "critic/score/mean"].set_index("step")["value"]
    assert reward.to_dict() == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3})
    frame = A.load_runs([run])
    assert frame["samples"].isna().all() and frame["tokens"].isna().all()  # no kit counters, no config
    validation = A.load_validation(run)
    assert set(validation["data_source"]) == {"aime24"}  # the only val-core data source
    assert validation["prompt_key"].str.startswith("aime24 question").all()
    logged = A.val_metrics_from_logs(A.load_runs([run]))
    assert set(logged["label"]) == {"avg@4", "maj@4"}


def test_official_method_from_the_spo_keys(tmp_path):
    neutral = write_official_run(tmp_path / "spo" / "qwen3_run", spo_keys=True)
    assert A.find_runs(neutral)[0].method == "SPO"
    plain = write_official_run(tmp_path / "spo" / "baseline_run", spo_keys=False)
    assert A.find_runs(plain)[0].method == "GRPO"
