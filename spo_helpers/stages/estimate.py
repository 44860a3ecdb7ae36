"""Stage 02: offline value estimation, a validation-only verl run per data subset on the ``cpu`` or ``ray``
backend (what it runs and writes, against the official eval.sh: docs/pipeline.md).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from spo_helpers.preflight import check_data_files, require_file
from spo_helpers.run_settings import ENV_NOTE, EstimateSettings, add_flags, from_args
from spo_helpers.verl_stage import Defaults, DryRun, StageResult, resolve, run_spec_settings, run_verl_stage

DEFAULT_EXP_NAME = ESTIMATION_EXP_NAME

USAGE = f"""\
  spo estimate --data_dir DIR            # every subset_*.parquet in DIR, EXP_NAME_subset_<i>
  spo estimate --data_file DIR/subset_0.parquet --exp_name offline_value_estimation_subset_0
  spo estimate --data_dir DIR --backend ray --model_path Qwen/Qwen3-8B

{ENV_NOTE} Details: docs/pipeline.md"""


TABLE_HEAD = f"{'experiment':<40} {'prompts':>8} {'samples':>8} {'mean':>6} {'all-0':>6} {'all-1':>6} {'time':>7}"


@dataclass(frozen=True)
class EstimateSummary(StageResult):
    exp_name: str
    dump: Path
    prompts: int
    samples: int
    mean_score: float
    share_all_fail: float
    share_all_pass: float
    seconds: float
    skipped: bool = False

    def row(self) -> str:
        note = " (existing)" if self.skipped else ""
        return (
            f"{self.exp_name:<40} {self.prompts:>8} {self.samples:>8} {self.mean_score:>6.3f} "
            f"{self.share_all_fail:>6.2f} {self.share_all_pass:>6.2f} {self.seconds:>6.1f}s{note}"
        )

    def lines(self) -> list[str]:
        return [TABLE_HEAD, self.row(), f"dump: {self.dump}"]


class EstimateReport(StageResult, list):
    """The summaries of the subsets estimated (a list), shown as one table; dry runs show their text."""

    def lines(self) -> list[str]:
        dry = [line for item in self if isinstance(item, DryRun) for line in item.lines()]
        done = [item for item in self if isinstance(item, EstimateSummary)]
        lines = [*dry, "", "offline value estimation", TABLE_HEAD, *(s.row() for s in done)]
        if done:
            lines.append(f"dumps: {done[0].dump.parent.parent.parent}/<EXP_NAME>/validation_data/0.jsonl")
        return lines if done or not dry else dry


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


class Estimation:
    """One subset's validation-only run as a verl stage (``verl_stage.run_verl_stage``)."""

    name = "estimate"
    data_labels = ("DATA_FILE", "validation")

    def run_spec(self, settings: EstimateSettings, defaults: Defaults):
        from spo_helpers.verl_glue.config import RunSpec

        return RunSpec(
            method="EVAL",
            **run_spec_settings(settings),
            exp_name=settings.exp_name or DEFAULT_EXP_NAME,
            train_files=[str(settings.data_file)],
            n_val=settings.n_val,
            debug=settings.debug,
            small_batch=settings.small_batch,
            overrides=list(settings.overrides),
        )

    def check(self, settings: EstimateSettings, spec) -> None:
        return None

    def existing(self, settings: EstimateSettings, spec) -> EstimateSummary | None:
        target = dump_path(spec.output_dir, spec.exp_name)
        if target.is_file() and not settings.force:
            return EstimateSummary(spec.exp_name, target, **summarise_dump(target), seconds=0.0, skipped=True)
        return None

    def record(self, settings: EstimateSettings) -> dict[str, Any]:
        return {"data_file": str(settings.data_file)}

    def fresh(self, settings: EstimateSettings) -> bool:
        return settings.force

    def result(self, settings: EstimateSettings, spec, seconds: float) -> EstimateSummary:
        target = dump_path(spec.output_dir, spec.exp_name)
        if not target.is_file():
            raise UserError(f"the validation run finished without writing {target}")
        return EstimateSummary(spec.exp_name, target, **summarise_dump(target), seconds=seconds)


def estimate_subset(data_file: str | Path, **settings: Any) -> EstimateSummary | DryRun:
    """Run one validation-only job on ``data_file`` (keywords: ``run_settings.EstimateSettings``); returns its
    summary (or the dry run). A subset whose dump exists is returned as it is unless ``force``.

    ``tools``: ``sandbox`` estimates with the tool agent loop (as the official values are), ``none`` math only,
    ``None`` the preset's default.
    """
    settings.setdefault("n_val", 8)
    return run_verl_stage(Estimation(), EstimateSettings(data_file=str(data_file), **settings))


def run_estimation(settings: EstimateSettings, *, progress: bool = True) -> EstimateReport:
    """Estimate ``data_file``, or every ``subset_*.parquet`` of ``data_dir`` (``EXP_NAME_subset_<i>``): the stage
    behind ``spo estimate``, ``estimate_all`` and notebook 02."""
    from spo_helpers.progress import progress_bar

    if settings.data_dir:
        files = subset_files(settings.data_dir)
    else:
        files = [require_file(settings.data_file, "DATA_FILE", "pass --data_file or --data_dir")]
    for path in files:
        require_file(str(path), "DATA_FILE", "run `spo split` first or pass an existing parquet file")
    check_data_files([str(p) for p in files], "DATA_FILE")
    if settings.n_val is None:
        settings = dataclasses.replace(settings, n_val=8)
    settings, _ = resolve(settings)
    exp_name = settings.exp_name or DEFAULT_EXP_NAME
    report = EstimateReport()
    bar = progress_bar(files, desc="subsets", unit="subset", disable=not progress or len(files) == 1)
    for data_file in bar:
        index = subset_index(data_file) if len(files) > 1 else None
        one = dataclasses.replace(
            settings, data_file=str(data_file), data_dir=None, exp_name=estimation_exp_name(index, exp_name)
        )
        report.append(run_verl_stage(Estimation(), one, resolved=True))
    return report


def estimate_all(data: str | Path | list, *, progress: bool = True, **settings: Any) -> EstimateReport:
    """Estimate one subset file, or every ``subset_*.parquet`` of a folder (``EXP_NAME_subset_<i>``); keywords as
    ``spo estimate``'s flags (``run_settings.EstimateSettings``). Returns the per-subset summaries (a list that
    prints as a table); ``dry_run=True`` gives the configs instead."""
    if isinstance(data, list):
        report = EstimateReport()
        for one in data:
            report += run_estimation(EstimateSettings(data_file=str(one), **settings), progress=progress)
        return report
    where = {"data_dir": str(data)} if Path(data).is_dir() else {"data_file": str(data)}
    return run_estimation(EstimateSettings(**where, **settings), progress=progress)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, EstimateSettings)


def run(args: argparse.Namespace) -> int:
    print(run_estimation(from_args(EstimateSettings, args)))
    return 0
