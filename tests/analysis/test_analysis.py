"""spo_helpers.analysis: validation statistics by hand and by brute force, loaders on synthetic run folders."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spo_helpers import analysis as A
from spo_helpers.errors import UserError

# ------------------------------------------------------------------------------------------ synthetic folders
VAL_SOURCES = {"aime24": 3, "toy_math": 2}  # data source -> prompts
N_VAL = 4


def _val_prompts() -> list[tuple[str, str]]:
    return [(source, f"{source} question {i}") for source, count in VAL_SOURCES.items() for i in range(count)]


def write_val_file(path: Path) -> Path:
    rows = [
        {"data_source": source, "prompt": [{"role": "user", "content": key}], "extra_info": {"prompt_key": key}}
        for source, key in _val_prompts()
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def val_lines(step: int, rng: np.random.Generator, with_key: bool = True, with_pred: bool = True) -> list[dict]:
    """n samples per prompt; prompt 0 of each source is always right, the others sometimes."""
    lines = []
    for index, (_, key) in enumerate(_val_prompts()):
        for j in range(N_VAL):
            correct = index % 3 == 0 or rng.random() < 0.4
            pred = "42" if correct else str(j % 2)
            line = {"input": f"user\n{key}\nassistant\n", "output": f"\\boxed{{{pred}}}", "gts": "42"}
            line |= {"score": float(correct), "step": step, "acc": bool(correct)}
            if with_pred:
                line["pred"] = pred
            if with_key:
                line["prompt_key"] = key
            lines.append(line)
    return lines


def write_jsonl(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


def write_kit_run(
    folder: Path,
    method: str,
    seed: int,
    *,
    steps: int = 4,
    n_prompts: int = 30,
    batch: int = 8,
    val_file: Path | None = None,
    difficulty: bool = True,
) -> Path:
    """A small kit run folder with every file the analysis reads."""
    rng = np.random.default_rng(seed + (0 if method == "SPO" else 100))
    n = 1 if method == "SPO" else 4
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "kit": {"method": method, "seed": seed, "run_dir": str(folder)},
        "trainer": {"experiment_name": folder.name},
        "actor_rollout_ref": {"rollout": {"n": n, "val_kwargs": {"n": N_VAL}}},
        "data": {"train_batch_size": batch, "val_files": [str(val_file)] if val_file else []},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump({"config": config, "versions": {}, "stage": "train"}))
    p_hat0 = rng.uniform(0.05, 0.95, n_prompts)
    pd.DataFrame(
        {
            "row": np.arange(n_prompts),
            "prompt_key": [f"train {i}" for i in range(n_prompts)],
            "dataset_index": np.arange(n_prompts),
            "difficulty": pd.array([i % 3 if difficulty else None for i in range(n_prompts)], dtype="Int64"),
            "p_hat0": p_hat0,
            "n_eff0": np.full(n_prompts, 8.0),
            "has_offline_values": np.ones(n_prompts, dtype=bool),
        }
    ).to_parquet(folder / "prompts.parquet")
    metrics, records, visits = [], [], np.zeros(n_prompts, dtype=np.int64)
    samples = tokens = 0
    val_keys = {f"val-core/{s}/acc/mean@{N_VAL}": 0.3 for s in VAL_SOURCES}
    metrics.append({"step": 0, "data": val_keys})
    for step in range(1, steps + 1):
        rows = np.repeat(rng.choice(n_prompts, batch, replace=False), n)
        reward = (rng.random(rows.size) < p_hat0[rows]).astype(float)
        data = {"row": rows.tolist(), "reward": reward.tolist(), "p_hat": p_hat0[rows].tolist()}
        if method == "SPO":
            raw = reward - p_hat0[rows]
            advantage = (raw - raw.mean()) / (raw.std(ddof=1) + 1e-8)
            drift = np.where(visits[rows] > 0, rng.uniform(0, 0.1, rows.size), 0.0)
            rho = np.clip(np.exp2(-drift / 0.06), 0.875, 0.96)
            data |= {"drift": drift.tolist(), "rho": rho.tolist()}
        else:
            group = np.repeat(np.arange(batch), n)
            mean = pd.Series(reward).groupby(group).transform("mean").to_numpy()
            std = pd.Series(reward).groupby(group).transform("std").to_numpy()
            advantage = (reward - mean) / (std + 1e-6)
            data["group"] = group.tolist()
        data["advantage"] = advantage.tolist()
        visits[np.unique(rows)] += 1
        records.append({"step": step, "data": data})
        samples += rows.size
        tokens += 5 * rows.size
        logged = {
            "critic/score/mean": float(reward.mean()),
            "response_length/mean": 5.0,
            "kit/samples_total": samples,
            "kit/response_tokens_total": tokens,
            "kit/zero_adv_frac": float(np.mean(np.abs(advantage) < 1e-6)),
            "kit/adv_var_before_norm": 0.2,
            "kit/adv_var_after_norm": 0.9,
            "kit/calibration/brier": 0.2,
            "timing_s/step": 1.0,
            "note": "strings are skipped",
        }
        if method == "SPO":
            logged |= {"spo/rho_clip_ratio": 0.5, "spo/D": float(drift.mean())}
        if step % 2 == 0:
            logged |= val_keys
        metrics.append({"step": step, "data": logged})
    write_jsonl(folder / "metrics.jsonl", metrics)
    write_jsonl(folder / "steps.jsonl", records)
    (folder / "tracker").mkdir(exist_ok=True)
    for step, seen in ((0, np.zeros(n_prompts, dtype=np.int64)), (steps, visits)):
        np.savez(folder / "tracker" / f"{step}.npz", alpha=p_hat0 * 8, beta=(1 - p_hat0) * 8, visits=seen)
    for step in (0, steps):
        write_jsonl(folder / "validation_data" / f"{step}.jsonl", val_lines(step, rng))
    write_ground_truth(folder, records, p_hat0, seed)
    return folder


def write_ground_truth(folder: Path, records: list[dict], p: np.ndarray, seed: int, n: int = 64) -> None:
    """``ground_truth.parquet`` as ``spo ground-truth`` writes it, for the odd steps (checkpoints 0, 2, ...)."""
    truth_rng = np.random.default_rng([seed, 7])  # its own stream: the run's other files stay as they were
    parts = []
    for record in records:
        if record["step"] % 2 == 1:
            rows = np.unique(record["data"]["row"])
            successes = truth_rng.binomial(n, p[rows])
            parts.append(
                pd.DataFrame(
                    {"step": record["step"], "checkpoint": record["step"] - 1, "row": rows}
                    | {"prompt_key": [f"train {i}" for i in rows], "true_p": successes / n}
                    | {"successes": successes, "n": n, "prompts": "steps", "sample_seed": seed}
                )
            )
    pd.concat(parts, ignore_index=True).to_parquet(folder / "ground_truth.parquet")


def write_official_run(folder: Path, spo_keys: bool = True) -> Path:
    """The official recipe's output: tensorboard events and validation dumps only."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
    for step in range(1, 4):
        writer.add_scalar("critic/score/mean", 0.1 * step, step)
        writer.add_scalar("response_length/mean", 100.0, step)
        if spo_keys:
            writer.add_scalar("spo/rho", 0.9, step)
    writer.add_scalar(f"val-core/aime24/acc/mean@{N_VAL}", 0.25, 0)
    writer.add_scalar(f"val-core/aime24/acc/mean@{N_VAL}", 0.5, 3)
    writer.add_scalar(f"val-core/aime24/acc/maj@{N_VAL}/mean", 0.4, 3)
    writer.close()
    rng = np.random.default_rng(7)
    for step in (0, 3):
        lines = [line for line in val_lines(step, rng, with_key=False) if line["input"].startswith("user\naime24")]
        write_jsonl(folder / "validation_data" / f"{step}.jsonl", lines)
    return folder


def write_pipeline(root: Path, seeds: tuple[int, ...] = (0,)) -> Path:
    """runs/<name>/: GRPO and SPO runs, an offline estimation run and offline_values.json."""
    root.mkdir(parents=True, exist_ok=True)
    val_file = write_val_file(root / "val.parquet")
    for seed in seeds:
        write_kit_run(root / "spo" / f"grpo_s{seed}", "GRPO", seed, val_file=val_file)
        write_kit_run(root / "spo" / f"spo_s{seed}", "SPO", seed, val_file=val_file)
    estimation = root / "spo" / "offline_value_estimation_subset_0"
    write_jsonl(estimation / "validation_data" / "0.jsonl", [{"prompt_key": "train 0", "score": 1.0}])
    (estimation / "config.yaml").write_text(yaml.safe_dump({"config": {}, "stage": "estimate"}))
    values = {f"train {i}": [float(j < i % 9) for j in range(8)] for i in range(30)}
    (root / "offline_values.json").write_text(json.dumps(values))
    return root


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
