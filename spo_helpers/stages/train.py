"""Stage 04: GRPO or SPO training through verl's trainer (presets, backends and outputs: docs/training.md).

``USAGE`` is what ``spo train --help`` shows; each flag defaults to the official train.sh variable of its name.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spo_helpers.core.metric_names import SAMPLES_TOTAL, TRAIN_REWARD, VAL_CORE_PREFIX
from spo_helpers.errors import UserError
from spo_helpers.formats.layout import SUBSET_GLOB, RunLayout, subset_files
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.run_settings import ENV_NOTE, TrainSettings, add_flags, from_args
from spo_helpers.verl_stage import Defaults, DryRun, StageResult, run_spec_settings, run_verl_stage

logger = logging.getLogger(__name__)

USAGE = f"""\
  spo train --method SPO --train_data_dir DIR --offline_values DIR/offline_values.json
  spo train --method GRPO --preset official --model_path Qwen/Qwen3-8B --train_data_dir DIR
  spo train --method SPO --train_data_dir DIR --offline_values none trainer.save_freq=5

{ENV_NOTE} Details: docs/training.md"""


@dataclass(frozen=True)
class TrainSummary(StageResult):
    method: str
    run_dir: Path
    steps: int
    samples: int
    final_reward: float
    validation: dict[str, float]
    seconds: float

    def lines(self) -> list[str]:
        lines = [
            "",
            f"{self.method} training: {self.steps} steps, {self.samples} samples, {self.seconds:.0f}s",
            f"  final batch reward      {self.final_reward:.3f}",
        ]
        lines += [f"  {key:<40} {value:.3f}" for key, value in sorted(self.validation.items())]
        return [*lines, f"  outputs                 {self.run_dir}"]


def train_files_in(train_data_dir: str | Path) -> list[str]:
    folder = Path(train_data_dir)
    if not folder.is_dir():
        raise UserError(f"TRAIN_DATA_DIR not found: {folder}; pass --train_data_dir the folder `spo split` wrote")
    files = [str(p) for p in subset_files(folder)]
    if not files:
        raise UserError(f"no {SUBSET_GLOB} files in TRAIN_DATA_DIR {folder} (run `spo split` first)")
    return files


def check_offline_values(path: str | None, train_files: list[str], method: str) -> dict[str, int] | None:
    """Before any compute: the file exists, parses, and matches the training prompts."""
    if method != "SPO":
        return None
    if path is None:
        raise UserError(
            "METHOD=SPO needs OFFLINE_VALUES (run `spo estimate` and `spo merge`), "
            "or --offline_values none to start every prompt at the uninformative prior"
        )
    if path.lower() == "none":
        return None
    from spo_helpers.formats.datasets import dataset_prompt_keys, load_dataset_rows
    from spo_helpers.formats.offline_values import coverage, read_offline_values, score_report, stats_match

    values = read_offline_values(path)
    if stats_match(path) is False:
        logger.warning(f"note: {path}: the stats file beside it describes another version of the values")
    keys = [k for f in train_files for k in dataset_prompt_keys(load_dataset_rows(f), f)]
    report = coverage(values, keys)
    if report["with_values"] == 0:
        raise UserError(
            f"{path}: none of its {len(values)} prompts matches the {report['dataset_prompts']} training prompts "
            "(offline values for a different dataset?); pass the values `spo merge` wrote for this training set, "
            "or --offline_values none"
        )
    if report["without_values"]:
        empty = f" ({report['empty_lists']} of them with an empty score list)" if report["empty_lists"] else ""
        logger.warning(
            f"note: {report['without_values']} of {report['dataset_prompts']} training prompts have no offline "
            f"values{empty} and start at the prior (alpha = beta = 0.5); {report['unmatched_values']} value "
            "entries match no training prompt"
        )
    scores = score_report(values)
    if scores["scores_outside_0_1"]:
        logger.warning(
            f"note: {path}: {scores['scores_outside_0_1']} scores lie outside [0, 1]; the tracker binarises them "
            "(score > 0 is a success)"
        )
    return report | scores


def summarise_run(method: str, run_dir: Path, seconds: float) -> TrainSummary:
    records = read_step_log(RunLayout(run_dir).metrics)
    train = [r for r in records if TRAIN_REWARD in r["data"]]
    validation = {}
    for record in records:
        validation.update({k: v for k, v in record["data"].items() if k.startswith(VAL_CORE_PREFIX)})
    last = train[-1]["data"] if train else {}
    return TrainSummary(
        method=method,
        run_dir=run_dir,
        steps=int(train[-1]["step"]) if train else 0,
        samples=int(last.get(SAMPLES_TOTAL, 0) or 0),
        final_reward=float(last.get(TRAIN_REWARD, float("nan")) or float("nan")),
        validation=validation,
        seconds=seconds,
    )


class Training:
    """``spo train`` as a verl stage (``verl_stage.run_verl_stage``)."""

    name = "train"
    data_labels = ("training", "validation")

    def run_spec(self, settings: TrainSettings, defaults: Defaults):
        from spo_helpers.verl_glue.config import RunSpec

        train_files = settings.train_files or (
            train_files_in(settings.train_data_dir) if settings.train_data_dir else None
        )
        val_files = settings.val_files
        if settings.preset == "cpu" and (not train_files or not val_files):
            world = defaults.world()
            train_files = train_files or [str(world.train_file)]
            val_files = val_files or [str(p) for p in world.validation_files]
        if not train_files:
            raise UserError("no training data: pass --train_data_dir (subset_*.parquet) or --train_files")
        values = settings.offline_values
        if values and values.lower() != "none" and not Path(values).is_file():
            raise UserError(f"OFFLINE_VALUES file not found: {values}; run `spo merge` or pass --offline_values none")
        schedule = [f"schedule={settings.schedule}"] if settings.schedule else []
        return RunSpec(
            method=settings.method,
            **run_spec_settings(settings),
            exp_name=settings.exp_name or f"{settings.method.lower()}_{settings.preset}",
            train_files=list(train_files),
            val_files=list(val_files or []),
            offline_values=None if (values or "").lower() in ("", "none") else values,
            n_train=settings.n_train,
            n_val=settings.n_val,
            debug=settings.debug,
            small_batch=settings.small_batch,
            val_before_train=settings.val_before_train,
            total_steps=settings.total_steps,
            overrides=[*schedule, *settings.overrides],
        )

    def check(self, settings: TrainSettings, spec) -> None:
        check_offline_values(settings.offline_values, spec.train_files, settings.method)

    def existing(self, settings: TrainSettings, spec) -> None:
        return None  # an existing run folder is resumed

    def record(self, settings: TrainSettings) -> dict[str, Any]:
        return {}

    def fresh(self, settings: TrainSettings) -> bool:
        return settings.fresh

    def result(self, settings: TrainSettings, spec, seconds: float) -> TrainSummary:
        return summarise_run(settings.method, spec.run_dir, seconds)


def run_training(settings: TrainSettings) -> TrainSummary | DryRun:
    """Train with ``settings``: the stage behind ``spo train``, ``train`` and notebook 04."""
    return run_verl_stage(Training(), settings)


def train(method: str, **settings: Any) -> TrainSummary | DryRun:
    """Train with ``method`` (GRPO or SPO); the Python face of ``spo train``, keywords as its flags
    (``run_settings.TrainSettings``).

    An existing run folder is resumed from its newest complete checkpoint, unless ``fresh`` (then it is deleted
    first). ``tools``: ``sandbox`` (tool-integrated reasoning), ``none`` (math only) or ``None`` (the preset's
    default); on the cpu preset, tools train the CPU world's tool-use variant. ``schedule``: ``sync`` (the
    default), ``stream`` or ``overprovision`` (the ``schedule`` config group).
    """
    if settings.get("overrides") is None:
        settings.pop("overrides", None)
    return run_training(TrainSettings(method=method, **settings))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, TrainSettings)


def run(args: argparse.Namespace) -> int:
    print(run_training(from_args(TrainSettings, args)))
    return 0
