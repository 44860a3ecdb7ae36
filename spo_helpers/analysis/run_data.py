"""The runs' data behind the figures and tables: every frame of the runs, loaded once, on first use.

    from spo_helpers.analysis.run_data import RunData
    data = RunData.from_paths(["runs/demo"])  # run folders or pipeline folders
    data.summary(); data.curves; data.optional("steps")

A run lacking a file is noted (``data.notes``), not fatal: the figures of ``analysis.figure_set`` leave it out
and say so. A frame no run has raises ``MissingData``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from spo_helpers.analysis.metrics import load_runs, metric_series
from spo_helpers.analysis.runs import RunInfo, collect, find_runs
from spo_helpers.analysis.steps import (
    find_offline_values,
    load_offline_values,
    load_prompts,
    load_steps,
    load_tracker_snapshots,
)
from spo_helpers.analysis.validation import learning_curves, validation_table
from spo_helpers.errors import MissingData

logger = logging.getLogger(__name__)


class RunData:
    """The runs' frames, each loaded once on first use; runs lacking a file are noted, not fatal.

    ``roots`` are the folders given (run or pipeline folders; the offline values are looked up from them).
    A frame no run has raises ``MissingData`` (``optional`` returns None instead).
    """

    def __init__(self, runs: list[RunInfo], roots: Sequence[Path]) -> None:
        self.runs = runs
        self.roots = list(roots)
        self.notes: list[str] = []
        self.built: dict[str, Any] = {}  # figure_set's BuiltFigure of these runs, by stem (each built once)

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike] | str | os.PathLike) -> RunData:
        """The training runs under ``paths`` (run folders or pipeline folders), as ``find_runs`` finds them."""
        roots = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
        return cls(find_runs(roots), roots)

    def note(self, text: str) -> None:
        """Record something left out of a figure (once, however often the figure is built)."""
        if text not in self.notes:
            self.notes.append(text)
            logger.debug("%s", text)

    def summary(self) -> pd.DataFrame:
        """One row per run: its label, method, seed and kind (``kit`` or ``official``)."""
        rows = [
            {"run": r.title, "method": r.method, "seed": r.seed, "kind": r.kind, "path": str(r.path)} for r in self.runs
        ]
        return pd.DataFrame(rows, columns=["run", "method", "seed", "kind", "path"])

    def _collect(self, loader: Callable[[RunInfo], pd.DataFrame], what: str) -> pd.DataFrame:
        frame, missing = collect(self.runs, loader)
        if missing and not frame.empty:
            self.note(f"{what}: left out {', '.join(sorted(missing))} (missing)")
        if frame.empty:
            raise MissingData(f"no run has {what}")
        return frame

    @cached_property
    def metrics(self) -> pd.DataFrame:
        missing: dict[str, str] = {}
        frame = load_runs(self.runs, missing=missing)
        if missing:
            self.note(f"metrics: left out {', '.join(sorted(missing))} (no metrics.jsonl or tensorboard)")
        return frame

    @cached_property
    def validation_all_steps(self) -> pd.DataFrame:
        """Every validation step at k = n (empty without dumps: curves then use the logged ``val-core`` keys)."""
        try:
            return validation_table(self.runs, ks="n")
        except MissingData:
            return pd.DataFrame()

    @cached_property
    def validation_last(self) -> pd.DataFrame:
        """Each run's last validation step at the default ks."""
        return validation_table(self.runs, ks=None, steps="last")

    @cached_property
    def curves(self) -> pd.DataFrame:
        """``learning_curves`` of the metrics and the validation dumps (every step)."""
        return learning_curves(self.metrics, self.validation_all_steps)

    @cached_property
    def steps(self) -> pd.DataFrame:
        return self._collect(load_steps, "steps.jsonl")

    @cached_property
    def prompts(self) -> pd.DataFrame:
        return self._collect(load_prompts, "prompts.parquet")

    @cached_property
    def snapshots(self) -> pd.DataFrame:
        return self._collect(load_tracker_snapshots, "tracker snapshots")

    def optional(self, name: str) -> pd.DataFrame | None:
        """The frame ``name`` (``steps``, ``prompts``, ``snapshots``), or None when no run has it."""
        try:
            return getattr(self, name)
        except MissingData:
            return None

    @cached_property
    def offline(self) -> pd.DataFrame | None:
        """Offline values p̂0 from ``offline_values.json`` near the roots, else from the first run's prompts."""
        path = find_offline_values(self.roots)
        if path is not None:
            return load_offline_values(path)
        prompts = self.optional("prompts")
        if prompts is not None and prompts.get("has_offline_values", pd.Series(dtype=bool)).any():
            first = prompts[prompts["run"] == prompts["run"].iloc[0]]
            return first[first["has_offline_values"]][["prompt_key", "p_hat0"]]
        return None

    def metric(self, key: str, name: str = "value") -> pd.DataFrame:
        return metric_series(self.metrics, key, name)


__all__ = ["RunData"]
