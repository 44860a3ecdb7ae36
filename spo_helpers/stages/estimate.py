"""Stage 02: offline value estimation.

A validation-only verl run over one data subset: each prompt is answered N_VAL
times (temperature 0.6, top_p 0.95) and verl dumps every sample with its score to
``$OUTPUT_DIR/spo/$EXP_NAME/validation_data/0.jsonl``, exactly where the official
eval.sh puts it. The kit's reward also writes each sample's ``prompt_key``.

    spo estimate --data_file DIR/subset_0.parquet --exp_name offline_value_estimation_subset_0
    spo estimate --data_dir DIR            # every subset_*.parquet, EXP_NAME_subset_<i>

Backends: ``cpu`` (the in-process worker group on the tiny world, default without
a GPU) or ``ray`` (verl's FSDP + vLLM workers with the official eval.sh settings,
or with ``--device cpu`` verl's FSDP workers on CPU on the tiny world).
A subset whose dump already exists is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spo_helpers.backends import resolve_backend
from spo_helpers.cli_options import add_common_arguments
from spo_helpers.errors import UserError
from spo_helpers.formats.dumps import read_dump
from spo_helpers.formats.layout import (
    ESTIMATION_EXP_NAME,
    RUNS_SUBDIR,
    SUBSET_GLOB,
    RunLayout,
    estimation_dump_pattern,
    estimation_exp_name,
    estimation_run_glob,
    subset_index,
)
from spo_helpers.formats.layout import subset_files as layout_subset_files
from spo_helpers.preflight import check_data_files, check_model_dir, require_file

DEFAULT_EXP_NAME = ESTIMATION_EXP_NAME


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
    return RunLayout.of(output_dir, exp_name).estimation_dump


def scores_by_prompt(path: Path) -> dict[str, list[float]]:
    """A dump's scores grouped by prompt key (``formats.keys.dump_key``); a bad line stops with its file:line."""
    return read_dump(path, fix="re-run this subset with --force").grouped()


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
    runs_dir = Path(output_dir) / RUNS_SUBDIR
    runs = sorted(runs_dir.glob(estimation_run_glob(exp_name)), key=lambda p: subset_index(p) or 0)
    for run_dir in runs or [runs_dir / exp_name]:
        dump = RunLayout(run_dir).estimation_dump
        if not dump.is_file():
            continue
        for key, scores in scores_by_prompt(dump).items():
            rows.append(
                {
                    "subset": subset_index(run_dir) or 0,
                    "prompt_key": key,
                    "samples": len(scores),
                    "success_rate": float(np.mean(np.asarray(scores) > 0)),
                }
            )
    if not rows:
        raise UserError(f"no estimation dumps under {runs_dir} ({estimation_dump_pattern(exp_name)})")
    return pd.DataFrame(rows)


def subset_files(data_dir: str | Path) -> list[Path]:
    files = layout_subset_files(data_dir)
    if not files:
        raise UserError(f"no {SUBSET_GLOB} files in {data_dir} (run `spo split` first)")
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
    device: str | None = None,
    preset: str = "cpu",
    seed: int = 0,
    debug: bool = False,
    small_batch: bool = False,
    overrides: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    tools: str | None = None,
) -> EstimateSummary | str:
    """Run one validation-only job; returns its summary (or the dry-run text).

    ``tools``: ``sandbox`` estimates with the tool agent loop (as the official values are), ``none`` math only,
    ``None`` the preset's default.
    """
    from spo_helpers.verl_glue.config import RunSpec, build_config, dry_run_text
    from spo_helpers.verl_glue.run_guard import start_run

    spec = RunSpec(
        method="EVAL",
        preset=preset,
        backend=backend,
        device=device,
        output_dir=str(output_dir),
        exp_name=exp_name,
        model_path=str(model_path),
        train_files=[str(data_file)],
        n_val=n_val,
        response_length=response_length,
        debug=debug,
        small_batch=small_batch,
        seed=seed,
        tools=tools,
        overrides=list(overrides or []),
    )
    config = build_config(spec)
    if dry_run:
        return dry_run_text(spec, config)
    target = dump_path(output_dir, exp_name)
    start = time.perf_counter()
    if target.is_file() and not force:
        return EstimateSummary(exp_name, target, **summarise_dump(target), seconds=0.0, skipped=True)
    start_run(config, "estimate", {"data_file": str(data_file)}, fresh=force)
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
    tools: str | None = None,
    **kwargs,
) -> list[EstimateSummary]:
    """Estimate one subset file, or every ``subset_*.parquet`` of a folder (``EXP_NAME_subset_<i>``).

    Returns the per-subset summaries; ``dry_run=True`` (in ``kwargs``) prints configs instead.
    """
    from spo_helpers.progress import progress_bar

    folder = Path(data) if not isinstance(data, list) and Path(data).is_dir() else None
    files = subset_files(folder) if folder else [Path(f) for f in (data if isinstance(data, list) else [data])]
    for path in files:
        require_file(str(path), "DATA_FILE", "run `spo split` first or pass an existing parquet file")
    check_data_files([str(p) for p in files], "DATA_FILE")
    if not model_path:
        if preset != "cpu":
            raise UserError("MODEL_PATH is not set: pass --model_path (a Hugging Face id or local folder)")
        from spo_helpers.verl_glue.config import tools_on
        from spo_helpers.world.build import build_world

        uses_tools = tools_on(tools, preset)
        model_path = str(build_world(assets, seed=0, tools=uses_tools).model_dir)
    check_model_dir(model_path)
    summaries = []
    bar = progress_bar(files, desc="subsets", unit="subset", disable=not progress or len(files) == 1)
    for data_file in bar:
        index = subset_index(data_file) if len(files) > 1 else None
        name = estimation_exp_name(index, exp_name)
        result = estimate_subset(
            data_file,
            output_dir=output_dir,
            exp_name=name,
            model_path=model_path,
            n_val=n_val,
            backend=backend,
            preset=preset,
            tools=tools,
            **kwargs,
        )
        if isinstance(result, str):
            print(result)
        else:
            summaries.append(result)
    return summaries


def run(args: argparse.Namespace) -> int:
    backend, preset = resolve_backend(args.backend, args.preset, args.device)
    data = args.data_dir or require_file(args.data_file, "DATA_FILE", "pass --data_file or --data_dir")
    summaries = estimate_all(
        data,
        output_dir=args.output_dir or "runs",
        exp_name=args.exp_name or DEFAULT_EXP_NAME,
        model_path=args.model_path,
        n_val=args.n_val or 8,
        backend=backend,
        device=args.device,
        preset=preset,
        assets=args.assets,
        response_length=args.response_length,
        seed=args.seed,
        debug=args.debug,
        small_batch=args.small_batch,
        overrides=args.overrides,
        force=args.force,
        dry_run=args.dry_run,
        tools=args.tools,
    )
    print_summaries(summaries)
    return 0
