"""Where every file of a run and of a pipeline lives: the one place that spells the folder layout.

A *run folder* follows the official recipe, ``$OUTPUT_DIR/spo/$EXP_NAME/``; verl writes ``checkpoints/``,
``validation_data/<step>.jsonl``, ``rollout_data/<step>.jsonl`` and ``tensorboard/``, and the kit adds
``config.yaml``, ``metrics.jsonl``, ``steps.jsonl``, ``prompts.parquet`` and ``tracker/<step>.npz``.

A *pipeline folder* (``runs/<name>/``) holds ``splits/subset_<i>.parquet``, the estimation runs
``spo/offline_value_estimation_subset_<i>/``, ``offline_values.json`` (+ ``.stats.json``), the training runs
``spo/<method>_<preset>/``, ``figures/``, ``notebooks/`` and ``pipeline.json``.

Readers and writers take their paths from here; nothing else joins these names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUNS_SUBDIR = "spo"
"""``$OUTPUT_DIR/spo/$EXP_NAME``: the official recipe's run folder parent."""

ESTIMATION_EXP_NAME = "offline_value_estimation"
"""The official ``eval.sh`` experiment name; one subset's run is ``<name>_subset_<i>``."""

OFFLINE_VALUES_FILE = "offline_values.json"
PIPELINE_RECORD = "pipeline.json"
ESTIMATION_DUMP = "0.jsonl"
"""A validation-only run dumps its one validation pass as step 0."""

SPLIT_MANIFEST = "split_manifest.json"
"""Written by ``spo split`` beside the subsets: the source, the row ranges and each subset's SHA-256."""

SUBSET_GLOB = "subset_*.parquet"
_SUBSET_RE = re.compile(r"^subset_(\d+)\.parquet$")


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (``$OUTPUT_DIR/spo/$EXP_NAME``)."""

    root: Path

    @classmethod
    def of(cls, output_dir: str | os.PathLike, exp_name: str) -> RunLayout:
        return cls(Path(output_dir) / RUNS_SUBDIR / exp_name)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def steps(self) -> Path:
        return self.root / "steps.jsonl"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.parquet"

    @property
    def ground_truth(self) -> Path:
        """Per checkpoint and prompt, the success probability estimated from many samples (``spo ground-truth``)."""
        return self.root / "ground_truth.parquet"

    @property
    def tracker_dir(self) -> Path:
        return self.root / "tracker"

    def tracker_snapshot(self, step: int) -> Path:
        return self.tracker_dir / f"{int(step)}.npz"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def validation_data(self) -> Path:
        return self.root / "validation_data"

    @property
    def rollout_data(self) -> Path:
        return self.root / "rollout_data"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def sandbox_tool_config(self) -> Path:
        """The run's copy of its tool file with the sandbox URL put in (``verl_glue.tool_sandbox``)."""
        return self.root / "sandbox_tool_config.yaml"

    @property
    def verl_log(self) -> Path:
        return self.root / "verl.log"

    @property
    def estimation_dump(self) -> Path:
        """The dump of a validation-only (stage 02) run."""
        return self.validation_data / ESTIMATION_DUMP

    def tensorboard_events(self) -> list[Path]:
        return list(self.tensorboard.glob("events.out.tfevents.*"))

    def has_tensorboard_events(self) -> bool:
        return bool(self.tensorboard_events())


def estimation_exp_name(subset: int | None, exp_name: str = ESTIMATION_EXP_NAME) -> str:
    """``<exp_name>_subset_<i>`` for one of several subsets, ``exp_name`` alone for a single file."""
    return exp_name if subset is None else f"{exp_name}_subset_{int(subset)}"


def estimation_run_glob(exp_name: str = ESTIMATION_EXP_NAME) -> str:
    """Glob (relative to ``$OUTPUT_DIR/spo``) of every subset's estimation run folder."""
    return f"{exp_name}_subset_*"


def estimation_dump_pattern(exp_name: str = ESTIMATION_EXP_NAME) -> str:
    """Glob (relative to ``$OUTPUT_DIR/spo``) of every subset's estimation dump."""
    return f"{estimation_run_glob(exp_name)}/validation_data/{ESTIMATION_DUMP}"


def subset_file_name(index: int) -> str:
    return f"subset_{int(index)}.parquet"


def subset_index(path: str | os.PathLike) -> int | None:
    """``i`` of ``subset_<i>.parquet`` (or of a folder named ``..._subset_<i>``), else None."""
    name = Path(path).name
    match = _SUBSET_RE.match(name) or re.search(r"_subset_(\d+)$", name)
    return int(match.group(1)) if match else None


def subset_files(folder: str | os.PathLike) -> list[Path]:
    """The ``subset_<i>.parquet`` files of a split folder, in numeric order (``subset_2`` before ``subset_10``)."""
    found = [p for p in Path(folder).glob(SUBSET_GLOB) if subset_index(p) is not None]
    return sorted(found, key=lambda p: subset_index(p) or 0)


@dataclass(frozen=True)
class PipelineLayout:
    """The files of one pipeline folder (``runs/<name>``)."""

    root: Path

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def split_manifest(self) -> Path:
        return self.splits / SPLIT_MANIFEST

    @property
    def runs(self) -> Path:
        """``$OUTPUT_DIR/spo``: every estimation and training run folder."""
        return self.root / RUNS_SUBDIR

    @property
    def offline_values(self) -> Path:
        return self.root / OFFLINE_VALUES_FILE

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def record(self) -> Path:
        return self.root / PIPELINE_RECORD

    def estimation_run(self, subset: int) -> RunLayout:
        return RunLayout.of(self.root, estimation_exp_name(subset))

    def training_run(self, method: str, preset: str) -> RunLayout:
        return RunLayout.of(self.root, training_exp_name(method, preset))


def training_exp_name(method: str, preset: str) -> str:
    """The pipeline's name for a training run: ``<method>_<preset>`` in lower case (``spo_cpu``)."""
    return f"{method.lower()}_{preset}"


def stats_path_for(values_file: str | os.PathLike) -> Path:
    """``values.json`` -> ``values.stats.json``: the statistics written beside an offline-values file."""
    path = Path(values_file)
    return path.with_name(f"{path.stem}.stats.json")
