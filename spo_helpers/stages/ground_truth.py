"""Ground truth on the CPU world: each prompt's success probability under a run's checkpoints, from many samples.

For every checkpoint ``global_step_k`` of a CPU run (and the initial model as ``k = 0``) this loads the tiny
model with the checkpoint's weights and samples each prompt of training step ``k + 1`` (the step whose
rollouts that policy generated) ``n`` times with the run's own sampling settings, so that the tracker's p̂ and
GRPO's group means logged at that step can be compared with the truth (``analysis/baseline_error.py``). What it
samples, writes and refuses: docs/pipeline.md.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.formats.checkpoints import ACTOR_DIR, CPU_WORKER_FILE, complete_checkpoints, step_of, verified
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import read_run_config

DEFAULT_N = 64


def sampling_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The training rollout's temperature, top-p and response length; refuses what the sampler cannot match."""
    rollout = config["actor_rollout_ref"]["rollout"]
    if (rollout.get("multi_turn") or {}).get("enable"):
        raise UserError("the run uses tools (multi-turn rollouts); ground truth samples plain responses only")
    if int(rollout.get("top_k", -1) or -1) > 0:
        raise UserError(f"the run samples with top_k={rollout['top_k']}; ground truth samples without top-k")
    reward = (config.get("custom_reward_function") or {}).get("reward_kwargs") or {}
    if reward.get("require_think"):
        raise UserError("the run's reward requires </think>; ground truth scores the boxed answer only")
    return {
        "temperature": float(rollout.get("temperature", 1.0)),
        "top_p": float(rollout.get("top_p", 1.0)),
        "max_new_tokens": int(config["data"]["max_response_length"]),
    }


def checkpoint_steps(run_dir: Path) -> dict[int, Path | None]:
    """``{k: the actor folder of global_step_k}`` for every complete checkpoint of the CPU backend (its completion
    marker written, its weights file there), plus ``{0: None}`` (the initial model). Not yet verified."""
    found: dict[int, Path | None] = {0: None}
    for path in complete_checkpoints(RunLayout(run_dir).checkpoints):
        if (path / ACTOR_DIR / CPU_WORKER_FILE).is_file():
            found[step_of(path)] = path / ACTOR_DIR
    return dict(sorted(found.items()))


def chosen_steps(run_dir: Path, available: dict[int, Path | None], wanted: list[int] | None) -> dict[int, Path | None]:
    """The checkpoints ``--checkpoints`` names (all without it); a step the run has no checkpoint of is refused."""
    if wanted is None:
        return available
    missing = sorted(set(wanted) - set(available))
    if missing:
        have = ", ".join(map(str, available))
        raise UserError(
            f"{run_dir}: no complete checkpoint of step {', '.join(map(str, missing))} (this run has {have}; 0 is "
            "the initial model); pass --checkpoints with those steps"
        )
    return {k: available[k] for k in sorted(set(wanted))}


def training_rows(config: dict[str, Any], run_dir: Path) -> tuple[dict[int, dict], dict[str, int]]:
    """Tracker row -> dataset row (by prompt key, through ``prompts.parquet``), and prompt key -> tracker row."""
    import pandas as pd

    from spo_helpers.formats.datasets import load_dataset_rows
    from spo_helpers.formats.keys import row_key

    prompts = pd.read_parquet(RunLayout(run_dir).prompts)
    by_key: dict[str, dict] = {}
    for source in config["data"]["train_files"]:
        path = Path(source)
        if not path.exists() and not path.is_absolute():
            path = run_dir.parents[2] / source if len(run_dir.parents) > 2 else path
        for record in load_dataset_rows(str(path if path.exists() else source)).to_dict("records"):
            by_key.setdefault(row_key(record), record)
    key_to_row = dict(zip(prompts["prompt_key"], prompts["row"].astype(int), strict=True))
    rows = {int(r): by_key[k] for k, r in key_to_row.items() if k in by_key}
    return rows, key_to_row


def probe_of(model_path: str, assets: str | None = None) -> Path:
    """The probe file of the world the run's model belongs to (``<world>/data/probe.parquet``), else the default
    world's."""
    from spo_helpers.world.build import build_world
    from spo_helpers.world.paths import WorldPaths

    beside = WorldPaths.at(Path(model_path).parent).probe_file
    return beside if beside.is_file() else build_world(assets).probe_file


def load_policy(model_path: str, checkpoint: Path | None):
    """The tiny model and tokenizer, with a checkpoint's weights when given."""
    import torch

    from spo_helpers.world.model import load_model

    model, tokenizer = load_model(model_path)
    if checkpoint is not None:
        state = torch.load(checkpoint / CPU_WORKER_FILE, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        model.eval()
    return model, tokenizer


def measure_run(
    run_dir: str | Path,
    *,
    n: int = DEFAULT_N,
    prompts: str = "steps",
    steps: list[int] | None = None,
    seed: int = 0,
    assets: str | None = None,
    force: bool = False,
    progress: bool = True,
):
    """Measure one run's checkpoints; returns the ``ground_truth.parquet`` frame (also written)."""
    import numpy as np
    import pandas as pd
    import torch

    from spo_helpers.analysis.baseline_error import load_ground_truth
    from spo_helpers.analysis.steps import load_steps
    from spo_helpers.formats.atomic import atomic_write_bytes
    from spo_helpers.world.warmstart import model_success_rates

    root = Path(run_dir)
    config = read_run_config(root, required=True)
    settings = sampling_settings(config)
    model_path = str(config["actor_rollout_ref"]["model"]["path"])
    if not Path(model_path).exists() and (Path.cwd() / model_path).exists():
        model_path = str(Path.cwd() / model_path)
    logged = load_steps(root)
    rows, key_to_row = training_rows(config, root)
    if prompts == "probe":
        from spo_helpers.formats.keys import row_key

        probe_file = probe_of(model_path, assets)
        probe = [key_to_row.get(row_key(r)) for r in pd.read_parquet(probe_file).to_dict("records")]
        probe_rows = sorted({int(r) for r in probe if r is not None})
    target = RunLayout(root).ground_truth
    previous = load_ground_truth(root) if target.is_file() and not force else None
    parts = []
    torch.set_num_threads(min(2, torch.get_num_threads()))
    for k, checkpoint in chosen_steps(root, checkpoint_steps(root), steps).items():
        step = k + 1
        wanted = (
            probe_rows
            if prompts == "probe"
            else sorted(logged.loc[logged["step"] == step, "row"].astype(int).unique().tolist())
        )
        wanted = [r for r in wanted if r in rows]
        if not wanted:
            continue
        if previous is not None:
            done = previous[(previous["checkpoint"] == k) & (previous["n"] == n) & (previous["prompts"] == prompts)]
            if set(done["row"]) >= set(wanted):
                parts.append(done)
                continue
        start = time.perf_counter()
        if checkpoint is not None:
            verified(checkpoint.parent)  # its files as written (sizes, SHA-256), or one line naming the damage
        model, tokenizer = load_policy(model_path, checkpoint)
        rates = model_success_rates(
            model,
            tokenizer,
            [rows[r] for r in wanted],
            n=n,
            temperature=settings["temperature"],
            top_p=settings["top_p"],
            max_new_tokens=settings["max_new_tokens"],
            seed=seed + k,
            progress=progress,
        )
        successes = np.rint(rates * n).astype(np.int64)
        keys = {r: k_ for k_, r in key_to_row.items()}
        parts.append(
            pd.DataFrame(
                {
                    "step": step,
                    "checkpoint": k,
                    "row": wanted,
                    "prompt_key": [keys[r] for r in wanted],
                    "true_p": successes / n,
                    "successes": successes,
                    "n": n,
                    "prompts": prompts,
                    **settings,
                    "sample_seed": seed + k,
                }
            )
        )
        if progress:
            seconds = time.perf_counter() - start
            print(f"{root.name}: checkpoint {k}: {len(wanted)} prompts x {n} samples, {seconds:.0f}s")
    if previous is not None:  # measurements of other checkpoints or the other prompt set stay
        measured = {(int(p["checkpoint"].iloc[0]), str(p["prompts"].iloc[0])) for p in parts if len(p)}
        pairs = zip(previous["checkpoint"].astype(int), previous["prompts"].astype(str), strict=True)
        parts.append(previous[[pair not in measured for pair in pairs]])
    if not any(len(p) for p in parts):
        raise UserError(f"{root}: no checkpoint whose next step has logged prompts (train with trainer.save_freq=K)")
    frame = pd.concat([p for p in parts if len(p)], ignore_index=True)
    frame = frame.sort_values(["prompts", "checkpoint", "row"]).reset_index(drop=True)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(target, buffer.getvalue())
    return frame


USAGE = """\
  spo ground-truth runs/bench/spo/spo_seed0 runs/bench/spo/grpo_seed0 --n 64
  spo ground-truth RUN --prompts probe   # the world's 200-prompt probe at every checkpoint

Writes RUN/ground_truth.parquet. Details: docs/pipeline.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", metavar="RUN", nargs="+", help="run folders of `spo train` on the CPU world (with checkpoints)"
    )
    parser.add_argument(
        "--n", metavar="N", type=int, default=DEFAULT_N, help=f"samples per prompt (default {DEFAULT_N})"
    )
    parser.add_argument(
        "--prompts",
        choices=("steps", "probe"),
        default="steps",
        help="steps (default): step k+1's prompts for checkpoint k; or probe",
    )
    parser.add_argument(
        "--checkpoints", metavar="STEP", type=int, nargs="+", default=None, help="only these checkpoint steps"
    )
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="(default 0)")
    parser.add_argument("--assets", metavar="DIR", default=None, help="the CPU world's folder (default: runs/_assets)")
    parser.add_argument("--force", action="store_true", help="measure again checkpoints already measured")


def run(args: argparse.Namespace) -> int:
    if args.n < 2:
        raise UserError(f"--n must be at least 2, got {args.n}")
    for run_dir in args.runs:
        frame = measure_run(
            run_dir,
            n=args.n,
            prompts=args.prompts,
            steps=args.checkpoints,
            seed=args.seed,
            assets=args.assets,
            force=args.force,
        )
        se = (frame["true_p"] * (1 - frame["true_p"]) / frame["n"]).pow(0.5)
        print(
            f"{RunLayout(Path(run_dir)).ground_truth}: {frame['checkpoint'].nunique()} checkpoints, {len(frame)} prompt"
            f" measurements x {args.n} samples (SE of t: mean {se.mean():.3f}, max {se.max():.3f})"
        )
    return 0
