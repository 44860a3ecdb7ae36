"""Synthetic run folders for the analysis tests: kit runs, the official recipe's output and a pipeline folder,
with every file the analysis reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

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
