"""Benchmark evaluation as the paper reports it: maj@k and unbiased pass@k, k = 1..n, with intervals.

A validation-only verl run (method=eval, the machinery of ``spo estimate``) of one model on the benchmarks,
n samples per problem at the preset's evaluation protocol (``formats/eval_protocol.py``: n = 32, temperature
0.6, top-p 0.95, top-k 20 on the GPU presets; the same temperature and top-p on the cpu preset):

    spo evaluate --preset paper --model_path Qwen/Qwen3-8B                       # the base model
    spo evaluate --preset paper --model_path Qwen/Qwen3-8B --checkpoint runs/spo/spo_paper/checkpoints/global_step_500
    spo evaluate --benchmarks AIME24=/data/aime24.parquet AIME25 --n 32
    spo evaluate                                                                 # cpu: the world's held-out + probe

Benchmarks (``formats/benchmarks.py``): the paper's five (AIME24 AIME25 BeyondAIME BRUMO25 HMMT25) by name or hub
id, ``NAME=PATH`` for a local file shaped like the hub set, or a data file in the kit's schema. Each is written
to ``<run>/benchmarks/<name>.parquet`` with its data source (the name given, for ``NAME=PATH``; a bare file keeps
its own), so the dump and every table name it; a file without ground truths is refused, and ``--n`` is at least 1.
A checkpoint (``global_step_N`` of either method) is loaded as verl resumes one (``trainer.resume_from_path``); its
method is read from the run's ``config.yaml`` and names the result (``kit.evaluates``; ``BASE`` without one).

Writes in the run folder: ``evaluation.csv`` (every benchmark, metric and k with its 95% bootstrap interval over
problems), ``evaluation_maj.csv`` / ``evaluation_pass.csv`` (the paper's layout at k = n) and prints the maj@n
table; the paper's rows stand beside it only when the protocol is the paper's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spo_helpers.backends import resolve_backend
from spo_helpers.cli_options import add_common_arguments
from spo_helpers.errors import UserError
from spo_helpers.formats.benchmarks import PAPER_BENCHMARK_NAMES, parse_benchmark, write_benchmarks
from spo_helpers.formats.eval_protocol import protocol
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import read_run_config, run_method
from spo_helpers.preflight import check_model_dir

DEFAULT_EXP_NAME = "evaluation"


def default_benchmarks(preset: str, assets: str | None = None, tools: bool = False) -> list[str]:
    """The paper's five benchmarks, or on the cpu preset the CPU world's held-out set and training probe."""
    if preset != "cpu":
        return list(PAPER_BENCHMARK_NAMES)
    from spo_helpers.world.build import build_world

    world = build_world(assets, seed=0, tools=tools)
    return [f"held_out={world.val_file}", f"probe={world.probe_file}"]


def checkpoint_method(checkpoint: str | Path) -> str:
    """The method of the run a ``global_step_N`` folder belongs to (its run's ``config.yaml``), else ``CHECKPOINT``."""
    path = Path(checkpoint).resolve()
    for parent in path.parents:
        if RunLayout(parent).config.is_file():
            return run_method(read_run_config(parent)) or "CHECKPOINT"
    return "CHECKPOINT"


def evaluate(
    *,
    model_path: str | None = None,
    checkpoint: str | None = None,
    benchmarks: list[str] | None = None,
    n: int | None = None,
    output_dir: str = "runs",
    exp_name: str | None = None,
    preset: str = "cpu",
    backend: str = "cpu",
    device: str | None = None,
    response_length: int | None = None,
    seed: int = 0,
    assets: str | None = None,
    tools: str | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    resamples: int = 2000,
) -> dict | str:
    """Evaluate one model; returns ``analysis.evaluation.evaluate_runs``'s tables (or the dry-run text)."""
    from spo_helpers.verl_glue.config import RunSpec, build_config, dry_run_text, tools_on

    if n is not None and n < 1:
        raise UserError(f"--n {n}: samples per problem must be at least 1 (default: the preset's protocol, 32)")
    uses_tools = tools_on(tools, preset)
    if not model_path:
        if preset != "cpu":
            raise UserError("MODEL_PATH is not set: pass --model_path (a Hugging Face id or local folder)")
        from spo_helpers.world.build import build_world

        model_path = str(build_world(assets, seed=0, tools=uses_tools).model_dir)
    check_model_dir(model_path)
    if checkpoint and not Path(checkpoint).is_dir():
        raise UserError(f"checkpoint not found: {checkpoint}; pass a global_step_N folder of a run's checkpoints/")
    label = checkpoint_method(checkpoint) if checkpoint else "BASE"
    name = exp_name or f"{DEFAULT_EXP_NAME}_{label.lower()}_{preset}"
    layout = RunLayout.of(output_dir, name)
    specs = [parse_benchmark(b) for b in (benchmarks or default_benchmarks(preset, assets, uses_tools))]
    if force and not dry_run and layout.root.is_dir():
        from spo_helpers.verl_glue.run_guard import clear_run_folder

        clear_run_folder(layout.root)  # before the benchmark files go in
    files = [str(f) for f in write_benchmarks(specs, layout.root / "benchmarks")]
    samples = int(n if n is not None else protocol(preset).n("evaluate"))
    extra = [f"kit.evaluates={label}"]
    if checkpoint:
        extra += ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={Path(checkpoint).resolve()}"]
    spec = RunSpec(
        method="EVAL",
        preset=preset,
        backend=backend,
        device=device,
        output_dir=str(output_dir),
        exp_name=name,
        model_path=str(model_path),
        train_files=files,
        val_files=files,
        n_val=samples,
        response_length=response_length,
        seed=seed,
        tools=tools,
        overrides=[*extra, *(overrides or [])],
    )
    config = build_config(spec)
    if dry_run:
        return dry_run_text(spec, config)
    from spo_helpers.verl_glue.run_guard import start_run

    start = time.perf_counter()
    start_run(config, "evaluate", {"checkpoint": checkpoint, "benchmarks": [s.name for s in specs]}, fresh=False)
    tables = write_tables(layout.root, resamples=resamples, seed=seed)
    tables["seconds"] = time.perf_counter() - start
    return tables


def write_tables(run_dir: str | Path, *, resamples: int = 2000, seed: int = 0) -> dict:
    """The evaluation tables of a run folder, written beside it as CSVs."""
    from spo_helpers.analysis.evaluation import evaluate_runs

    root = Path(run_dir)
    tables = evaluate_runs([root], resamples=resamples, seed=seed)
    tables["table"].to_csv(root / "evaluation.csv", index=False)
    tables["maj"].to_csv(root / "evaluation_maj.csv", index=False)
    tables["pass"].to_csv(root / "evaluation_pass.csv", index=False)
    tables["run_dir"] = root
    return tables


def print_tables(tables: dict) -> None:
    import pandas as pd

    from spo_helpers.analysis.evaluation import readable_layout

    with pd.option_context("display.width", 250, "display.max_columns", 40):
        for key in ("maj", "pass"):
            wide = tables[key]
            print(f"\n{key}@n (percent, 95% bootstrap interval over problems)")
            print(readable_layout(wide.drop(columns=["protocol"])).to_string(index=False))
        print(f"\n{tables['maj']['protocol'].iloc[0]}")
    print(f"tables: {tables['run_dir']}/evaluation*.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default=None, help="a global_step_N folder of either method (default: the base model)"
    )
    parser.add_argument("--benchmarks", nargs="+", default=None, help="names, hub ids, NAME=PATH or data files")
    parser.add_argument("--n", type=int, default=None, help="samples per problem (default: the preset's protocol, 32)")
    parser.add_argument("--force", action="store_true", help="delete an existing evaluation folder first")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    backend, preset = resolve_backend(args.backend, args.preset, args.device)
    result = evaluate(
        model_path=args.model_path,
        checkpoint=args.checkpoint,
        benchmarks=args.benchmarks,
        n=args.n if args.n is not None else args.n_val,
        output_dir=args.output_dir or "runs",
        exp_name=args.exp_name,
        preset=preset,
        backend=backend,
        device=args.device,
        response_length=args.response_length,
        seed=args.seed,
        assets=args.assets,
        tools=args.tools,
        overrides=args.overrides,
        force=args.force,
        dry_run=args.dry_run,
    )
    if isinstance(result, str):
        print(result)
    else:
        print_tables(result)
    return 0
