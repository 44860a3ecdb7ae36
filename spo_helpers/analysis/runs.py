"""Which runs exist and what defines them: run folders, their config, and frames tagged by run."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spo_helpers.analysis.scalars import logged_scalars
from spo_helpers.core.metric_names import SPO_PREFIX
from spo_helpers.errors import MissingData, UserError
from spo_helpers.formats.layout import ESTIMATION_EXP_NAME, RUNS_SUBDIR, RunLayout
from spo_helpers.formats.run_config import (
    SEED,
    TRAIN_STAGE,
    config_section,
    config_value,
    read_run_config,
    read_run_record,
    run_method,
    run_stage,
)

RUN_COLUMNS = ("run", "method", "seed")
"""The columns that tag every frame with its run."""


# ---------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunInfo:
    """One training run. kind: ``kit`` (config.yaml / metrics.jsonl) or ``official`` (tensorboard only)."""

    path: Path
    name: str
    method: str
    seed: int | None
    kind: str
    label: str = ""
    pipeline: Path | None = None

    @property
    def title(self) -> str:
        return self.label or self.name

    def __fspath__(self) -> str:
        """A run stands for its folder wherever a path is taken (``open``, ``Path``, the readers of ``formats``)."""
        return os.fspath(self.path)


def is_run_folder(path: str | os.PathLike) -> bool:
    """A folder with metrics.jsonl, config.yaml or tensorboard event files."""
    p = Path(path)
    if not p.is_dir():
        return False
    layout = RunLayout(p)
    if layout.metrics.is_file() or layout.config.is_file():
        return True
    return layout.has_tensorboard_events()


def load_config(run: RunInfo | str | os.PathLike) -> dict[str, Any]:
    """The ``config`` section of ``config.yaml`` (empty for official runs)."""
    return read_run_config(run_path(run))


def method_from_name(name: str) -> str | None:
    """``GRPO`` or ``SPO`` when the experiment name says so (GRPO is checked first), else None."""
    lowered = name.lower()
    if "grpo" in lowered:
        return "GRPO"
    if re.search(r"(^|[^a-z])spo([^a-z]|$)", lowered) or lowered.startswith("spo"):
        return "SPO"
    return None


def _seed_from_name(name: str) -> int | None:
    match = re.search(r"(?:seed|(?<![a-z])s)[_-]?(\d+)(?![0-9])", name.lower())
    return int(match.group(1)) if match else None


def _describe_run(folder: Path, pipeline: Path | None) -> RunInfo | None:
    record = read_run_record(folder)
    config = config_section(record)
    if folder.name.startswith(ESTIMATION_EXP_NAME) or run_stage(record) != TRAIN_STAGE:
        return None
    name = str(config_value(config, "trainer.experiment_name") or folder.name)
    method = run_method(config)
    kind = "kit" if (record or RunLayout(folder).metrics.is_file()) else "official"
    if not method:
        method = method_from_name(name) or method_from_name(folder.name)
    if not method:
        try:
            tags = logged_scalars(folder)["key"]
            method = "SPO" if tags.astype(str).str.startswith(SPO_PREFIX).any() else "GRPO"
        except MissingData:
            method = "unknown"
    seed = config_value(config, SEED)
    seed = int(seed) if seed is not None else _seed_from_name(name)
    return RunInfo(path=folder, name=name, method=str(method).upper(), seed=seed, kind=kind, pipeline=pipeline)


def _candidates(root: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in (f"{RUNS_SUBDIR}/*", "*", f"*/{RUNS_SUBDIR}/*"):
        found.extend(p for p in sorted(root.glob(pattern)) if p.is_dir() and is_run_folder(p))
    return list(dict.fromkeys(found))


def find_runs(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[RunInfo]:
    """Training runs under ``paths``: each path is a run folder or a pipeline folder holding runs.

    Offline estimation runs are left out. Raises ``FileNotFoundError`` for a missing path and ``UserError``
    when a path holds no run. Labels are the experiment names, made unique with the parent folder if needed.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    runs: list[RunInfo] = []
    for item in items:
        root = Path(item).expanduser()
        if not root.exists():
            raise FileNotFoundError(
                f"no such run or pipeline folder: {root}; pass a run folder (<output_dir>/spo/<exp_name>) "
                "or a pipeline folder (runs/<name>)"
            )
        if is_run_folder(root):
            info = _describe_run(root, None)
            if info is None:
                raise UserError(f"{root}: an offline estimation run, not a training run")
            runs.append(info)
            continue
        found = [info for p in _candidates(root) if (info := _describe_run(p, root))]
        if not found:
            raise UserError(f"{root}: no training run folders found (expected <run>/metrics.jsonl or tensorboard/)")
        runs.extend(found)
    unique = list({r.path.resolve(): r for r in runs}.values())
    counts = pd.Series([r.name for r in unique]).value_counts()
    labelled = []
    for r in unique:
        label = r.name if counts[r.name] == 1 else f"{r.path.parent.parent.name}/{r.name}"
        labelled.append(RunInfo(r.path, r.name, r.method, r.seed, r.kind, label, r.pipeline))
    return labelled


def run_path(run: RunInfo | str | os.PathLike) -> Path:
    return run.path if isinstance(run, RunInfo) else Path(run)


def as_runs(runs: Iterable[RunInfo | str | os.PathLike] | RunInfo | str | os.PathLike) -> list[RunInfo]:
    if isinstance(runs, RunInfo):
        return [runs]
    items = [runs] if isinstance(runs, str | os.PathLike) else list(runs)
    if all(isinstance(r, RunInfo) for r in items):
        return items
    return find_runs([r.path if isinstance(r, RunInfo) else r for r in items])


def tag_run(frame: pd.DataFrame, run: RunInfo) -> pd.DataFrame:
    """Prepend the ``run``, ``method`` and ``seed`` columns."""
    out = frame.copy()
    for position, (column, value) in enumerate(zip(RUN_COLUMNS, (run.title, run.method, run.seed), strict=True)):
        out.insert(position, column, value)
    out["seed"] = out["seed"].astype("Int64")
    return out


def collect(
    runs: Iterable[RunInfo | str | os.PathLike], loader: Callable[[RunInfo], pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """``loader`` on every run, tagged and concatenated; runs whose data is missing are listed with the reason."""
    frames, missing = [], {}
    for run in as_runs(runs):
        try:
            frame = loader(run)
        except MissingData as err:
            missing[run.title] = str(err)
            continue
        frames.append(tag_run(frame, run))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), missing


def by_run(frame: pd.DataFrame, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Apply ``fn`` to each run's rows (the run columns present in ``frame``) and prepend those columns."""
    keys = [c for c in RUN_COLUMNS if c in frame.columns]
    if not keys:
        return fn(frame)
    parts = []
    for values, rows in frame.groupby(keys, sort=False, dropna=False):
        out = fn(rows.drop(columns=keys))
        for position, (column, value) in enumerate(zip(keys, values, strict=True)):
            out.insert(position, column, value)
        parts.append(out)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=keys)
