"""Stage 02: offline value estimation.

A validation-only verl run over one data subset: each prompt is answered N_VAL
times (temperature 0.6, top_p 0.95) and verl dumps every sample with its score to
``$OUTPUT_DIR/spo/$EXP_NAME/validation_data/0.jsonl``, exactly where the official
eval.sh puts it. The kit's reward also writes each sample's ``prompt_key``.

    spo estimate --data_file DIR/subset_0.parquet --exp_name offline_value_estimation_subset_0
    spo estimate --data_dir DIR            # every subset_*.parquet, EXP_NAME_subset_<i>

Backends: ``cpu`` (the in-process worker group on the tiny world, default without
a GPU) or ``ray`` (verl's FSDP + vLLM workers with the official eval.sh settings).
A subset whose dump already exists is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spo_helpers.errors import UserError
from spo_helpers.stage_args import (
    add_common_arguments,
    check_model_dir,
    check_parquet_files,
    require_file,
    resolve_backend,
    world_for,
)

DEFAULT_EXP_NAME = "offline_value_estimation"


@dataclass(frozen=True)
class EstimateSummary:
    exp_name: str
    dump: Path
    prompts: int
    samples: int
    mean_score: float
    share_all_fail: float
    share_all_pass: float
    seconds: float
    skipped: bool = False


def dump_path(output_dir: str | Path, exp_name: str) -> Path:
    return Path(output_dir) / "spo" / exp_name / "validation_data" / "0.jsonl"


def scores_by_prompt(path: Path) -> dict[str, list[float]]:
    """A dump's scores grouped by prompt (the explicit ``prompt_key``, else the decoded ``input``)."""
    per_prompt: dict[str, list[float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            key = record.get("prompt_key") or record.get("input", "")
            per_prompt.setdefault(key, []).append(float(record["score"]))
    return per_prompt


def summarise_dump(path: Path) -> dict[str, float]:
    """Prompts, samples, mean score and the share of prompts that always fail or always pass."""
    per_prompt = scores_by_prompt(path)
    rates = np.array([np.mean(np.asarray(v) > 0) for v in per_prompt.values()])
    samples = sum(len(v) for v in per_prompt.values())
    scores = np.concatenate([np.asarray(v) for v in per_prompt.values()]) if per_prompt else np.empty(0)
    return {
        "prompts": len(per_prompt),
        "samples": samples,
        "mean_score": float(scores.mean()) if scores.size else float("nan"),
        "share_all_fail": float((rates == 0).mean()) if rates.size else float("nan"),
        "share_all_pass": float((rates == 1).mean()) if rates.size else float("nan"),
    }


def success_rate_frame(output_dir: str | Path, exp_name: str = DEFAULT_EXP_NAME):
    """Per prompt of every estimated subset: subset, prompt key, samples and success rate (score > 0)."""
    import pandas as pd

    rows = []
    pattern = f"{exp_name}_subset_*"
    runs = sorted((Path(output_dir) / "spo").glob(pattern)) or [Path(output_dir) / "spo" / exp_name]
    for run_dir in runs:
        dump = run_dir / "validation_data" / "0.jsonl"
        if not dump.is_file():
            continue
        match = re.search(r"subset_(\d+)$", run_dir.name)
        for key, scores in scores_by_prompt(dump).items():
            rows.append(
                {
                    "subset": int(match.group(1)) if match else 0,
                    "prompt_key": key,
                    "samples": len(scores),
                    "success_rate": float(np.mean(np.asarray(scores) > 0)),
                }
            )
    if not rows:
        raise UserError(f"no estimation dumps under {Path(output_dir) / 'spo'} ({pattern}/validation_data/0.jsonl)")
    return pd.DataFrame(rows)


def subset_files(data_dir: str | Path) -> list[Path]:
    files = sorted(Path(data_dir).glob("subset_*.parquet"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not files:
        raise UserError(f"no subset_*.parquet files in {data_dir} (run `spo split` first)")
    return files


def estimate_subset(
    data_file: str | Path,
    *,
    output_dir: str | Path,
    exp_name: str,
    model_path: str,
    n_val: int = 8,
    response_length: int | None = None,
    backend: str = "cpu",
    preset: str = "cpu",
    seed: int = 0,
    debug: bool = False,
    overrides: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> EstimateSummary | str:
    """Run one validation-only job; returns its summary (or the dry-run text)."""
    from spo_helpers.verl_glue.config import RunSpec, build_config, dry_run_text
    from spo_helpers.verl_glue.runner import run_training, write_run_config

    spec = RunSpec(
        method="EVAL",
        preset=preset,
        backend=backend,
        output_dir=str(output_dir),
        exp_name=exp_name,
        model_path=str(model_path),
        train_files=[str(data_file)],
        n_val=n_val,
        response_length=response_length,
        debug=debug,
        seed=seed,
        overrides=list(overrides or []),
    )
    config = build_config(spec)
    if dry_run:
        return dry_run_text(spec, config)
    target = dump_path(output_dir, exp_name)
    start = time.perf_counter()
    if target.is_file() and not force:
        return EstimateSummary(exp_name, target, **summarise_dump(target), seconds=0.0, skipped=True)
    write_run_config(config, {"stage": "estimate", "data_file": str(data_file)})
    run_training(config)
    if not target.is_file():
        raise UserError(f"the validation run finished without writing {target}")
    return EstimateSummary(exp_name, target, **summarise_dump(target), seconds=time.perf_counter() - start)


def print_summaries(summaries: list[EstimateSummary]) -> None:
    print("\noffline value estimation")
    print(f"{'experiment':<40} {'prompts':>8} {'samples':>8} {'mean':>6} {'all-0':>6} {'all-1':>6} {'time':>7}")
    for s in summaries:
        note = " (existing)" if s.skipped else ""
        print(
            f"{s.exp_name:<40} {s.prompts:>8} {s.samples:>8} {s.mean_score:>6.3f} {s.share_all_fail:>6.2f} "
            f"{s.share_all_pass:>6.2f} {s.seconds:>6.1f}s{note}"
        )
    if summaries:
        print(f"dumps: {summaries[0].dump.parent.parent.parent}/<EXP_NAME>/validation_data/0.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_file", default=os.environ.get("DATA_FILE"), help="DATA_FILE: one subset parquet")
    parser.add_argument("--data_dir", default=None, help="estimate every subset_*.parquet in this folder")
    parser.add_argument("--force", action="store_true", help="re-run subsets whose dump exists")
    add_common_arguments(parser)


def estimate_all(
    data: str | Path | list,
    *,
    output_dir: str | Path = "runs",
    exp_name: str = DEFAULT_EXP_NAME,
    model_path: str | None = None,
    n_val: int = 8,
    backend: str = "cpu",
    preset: str = "cpu",
    assets: str | None = None,
    progress: bool = True,
    **kwargs,
) -> list[EstimateSummary]:
    """Estimate one subset file, or every ``subset_*.parquet`` of a folder (``EXP_NAME_subset_<i>``).

    Returns the per-subset summaries; ``dry_run=True`` (in ``kwargs``) prints configs instead.
    """
    from tqdm import tqdm

    folder = Path(data) if not isinstance(data, list) and Path(data).is_dir() else None
    files = subset_files(folder) if folder else [Path(f) for f in (data if isinstance(data, list) else [data])]
    for path in files:
        require_file(str(path), "DATA_FILE", "run `spo split` first or pass an existing parquet file")
    check_parquet_files([str(p) for p in files], "DATA_FILE")
    if not model_path:
        if backend != "cpu":
            raise UserError("MODEL_PATH is not set: pass --model_path (a Hugging Face id or local folder)")
        model_path = str(world_for(argparse.Namespace(assets=assets, seed=0)).model_dir)
    check_model_dir(model_path)
    summaries = []
    for data_file in tqdm(files, desc="subsets", unit="subset", disable=not progress or len(files) == 1):
        match = re.search(r"subset_(\d+)", data_file.stem)
        name = f"{exp_name}_subset_{match.group(1)}" if len(files) > 1 and match else exp_name
        result = estimate_subset(
            data_file,
            output_dir=output_dir,
            exp_name=name,
            model_path=model_path,
            n_val=n_val,
            backend=backend,
            preset=preset,
            **kwargs,
        )
        if isinstance(result, str):
            print(result)
        else:
            summaries.append(result)
    return summaries


def run(args: argparse.Namespace) -> int:
    backend, preset = resolve_backend(args)
    data = args.data_dir or require_file(args.data_file, "DATA_FILE", "pass --data_file or --data_dir")
    summaries = estimate_all(
        data,
        output_dir=args.output_dir or "runs",
        exp_name=args.exp_name or DEFAULT_EXP_NAME,
        model_path=args.model_path,
        n_val=args.n_val or 8,
        backend=backend,
        preset=preset,
        assets=args.assets,
        response_length=args.response_length,
        seed=args.seed,
        debug=args.debug,
        overrides=args.overrides,
        force=args.force,
        dry_run=args.dry_run,
    )
    print_summaries(summaries)
    return 0
