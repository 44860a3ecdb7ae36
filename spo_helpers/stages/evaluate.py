"""Benchmark evaluation as the paper reports it: maj@k and unbiased pass@k, k = 1..n, with intervals.

A validation-only verl run (method=eval, the machinery of ``spo estimate``) of one model or checkpoint at the
preset's evaluation protocol (``formats/eval_protocol.py``); benchmarks from ``formats/benchmarks.py``. What it
reads and writes: docs/pipeline.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.formats.benchmarks import PAPER_BENCHMARK_NAMES, parse_benchmark, write_benchmarks
from spo_helpers.formats.eval_protocol import protocol
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import read_run_config, run_method
from spo_helpers.run_settings import ENV_NOTE, EvaluateSettings, add_flags, from_args
from spo_helpers.verl_stage import Defaults, DryRun, StageResult, run_spec_settings, run_verl_stage

DEFAULT_EXP_NAME = "evaluation"

USAGE = f"""\
  spo evaluate                           # cpu: the CPU world's held-out set and probe
  spo evaluate --preset paper --model_path Qwen/Qwen3-8B
  spo evaluate --preset paper --model_path Qwen/Qwen3-8B --checkpoint RUN/checkpoints/global_step_N
  spo evaluate --benchmarks AIME24=/data/aime24.parquet AIME25 --n 32

{ENV_NOTE} Details: docs/pipeline.md"""


def default_benchmarks(preset: str, defaults: Defaults) -> list[str]:
    """The paper's five benchmarks, or on the cpu preset the CPU world's held-out set and training probe."""
    if preset != "cpu":
        return list(PAPER_BENCHMARK_NAMES)
    world = defaults.world()
    return [f"held_out={world.val_file}", f"probe={world.probe_file}"]


def checkpoint_method(checkpoint: str | Path) -> str:
    """The method of the run a ``global_step_N`` folder belongs to (its run's ``config.yaml``), else ``CHECKPOINT``."""
    path = Path(checkpoint).resolve()
    for parent in path.parents:
        if RunLayout(parent).config.is_file():
            return run_method(read_run_config(parent)) or "CHECKPOINT"
    return "CHECKPOINT"


class EvaluationReport(StageResult, dict):
    """``evaluate_runs``' tables of one evaluation (a dict: ``table``, ``maj``, ``pass``, ``run_dir``, ``seconds``),
    shown as the maj@n and pass@n tables."""

    def lines(self) -> list[str]:
        import pandas as pd

        from spo_helpers.analysis.evaluation import readable_layout

        lines = []
        with pd.option_context("display.width", 250, "display.max_columns", 40):
            for key in ("maj", "pass"):
                wide = self[key]
                lines += ["", f"{key}@n (percent, 95% bootstrap interval over problems)"]
                lines += readable_layout(wide.drop(columns=["protocol"])).to_string(index=False).splitlines()
            lines += ["", f"{self['maj']['protocol'].iloc[0]}"]
        return [*lines, f"tables: {self['run_dir']}/evaluation*.csv"]


class Evaluation:
    """``spo evaluate`` as a verl stage (``verl_stage.run_verl_stage``)."""

    name = "evaluate"
    data_labels = ("benchmark", "benchmark")

    def __init__(self, resamples: int = 2000):
        self.resamples = resamples
        self.root: Path | None = None
        self.names: list[str] = []

    def run_spec(self, settings: EvaluateSettings, defaults: Defaults):
        from spo_helpers.verl_glue.config import RunSpec

        checkpoint = settings.checkpoint
        if checkpoint and not Path(checkpoint).is_dir():
            raise UserError(f"checkpoint not found: {checkpoint}; pass a global_step_N folder of a run's checkpoints/")
        label = checkpoint_method(checkpoint) if checkpoint else "BASE"
        name = settings.exp_name or f"{DEFAULT_EXP_NAME}_{label.lower()}_{settings.preset}"
        layout = RunLayout.of(settings.output_dir, name)
        given = settings.benchmarks or default_benchmarks(settings.preset, defaults)
        specs = [parse_benchmark(b) for b in given]
        if settings.force and not settings.dry_run and layout.root.is_dir():
            from spo_helpers.verl_glue.run_guard import clear_run_folder

            clear_run_folder(layout.root)  # before the benchmark files go in
        files = [str(f) for f in write_benchmarks(specs, layout.root / "benchmarks")]
        self.root, self.names = layout.root, [s.name for s in specs]
        samples = int(settings.n if settings.n is not None else protocol(settings.preset).n("evaluate"))
        extra = [f"kit.evaluates={label}"]
        if checkpoint:
            extra += ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={Path(checkpoint).resolve()}"]
        return RunSpec(
            method="EVAL",
            **run_spec_settings(settings),
            exp_name=name,
            train_files=files,
            val_files=files,
            n_val=samples,
            overrides=[*extra, *settings.overrides],
        )

    def check(self, settings: EvaluateSettings, spec) -> None:
        return None

    def existing(self, settings: EvaluateSettings, spec) -> None:
        return None

    def record(self, settings: EvaluateSettings) -> dict[str, Any]:
        return {"checkpoint": settings.checkpoint, "benchmarks": self.names}

    def fresh(self, settings: EvaluateSettings) -> bool:
        return False  # --force cleared the folder before the benchmark files went in

    def result(self, settings: EvaluateSettings, spec, seconds: float) -> EvaluationReport:
        tables = write_tables(self.root, resamples=self.resamples, seed=settings.seed)
        tables["seconds"] = seconds
        return tables


def run_evaluation(settings: EvaluateSettings, *, resamples: int = 2000) -> EvaluationReport | DryRun:
    """Evaluate one model or checkpoint: the stage behind ``spo evaluate`` and ``evaluate``."""
    return run_verl_stage(Evaluation(resamples), settings)


def evaluate(*, resamples: int = 2000, **settings: Any) -> EvaluationReport | DryRun:
    """Evaluate one model; keywords as ``spo evaluate``'s flags (``run_settings.EvaluateSettings``). Returns
    ``analysis.evaluation.evaluate_runs``'s tables (or the dry run)."""
    if settings.get("overrides") is None:
        settings.pop("overrides", None)
    return run_evaluation(EvaluateSettings(**settings), resamples=resamples)


def write_tables(run_dir: str | Path, *, resamples: int = 2000, seed: int = 0) -> EvaluationReport:
    """The evaluation tables of a run folder, written beside it as CSVs."""
    from spo_helpers.analysis.evaluation import evaluate_runs

    root = Path(run_dir)
    tables = EvaluationReport(evaluate_runs([root], resamples=resamples, seed=seed))
    tables["table"].to_csv(root / "evaluation.csv", index=False)
    tables["maj"].to_csv(root / "evaluation_maj.csv", index=False)
    tables["pass"].to_csv(root / "evaluation_pass.csv", index=False)
    tables["run_dir"] = root
    return tables


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, EvaluateSettings)


def run(args: argparse.Namespace) -> int:
    settings = from_args(EvaluateSettings, args)
    if settings.n is None and settings.n_val is not None:
        settings.n = settings.n_val  # N_VAL, as the official eval.sh names the samples per problem
    print(run_evaluation(settings))
    return 0
