"""What happened to each sample and prompt: ``steps.jsonl``, ``prompts.parquet``, tracker snapshots, offline values."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spo_helpers.analysis.runs import RunInfo, run_path
from spo_helpers.errors import MissingData
from spo_helpers.formats.layout import OFFLINE_VALUES_FILE, RunLayout
from spo_helpers.formats.offline_values import read_offline_values
from spo_helpers.formats.steplog import read_step_log


# ---------------------------------------------------------------------------------------------- per-sample logs
def load_steps(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``steps.jsonl`` with one row per generated sample: ``step, sample, row, reward, p_hat, advantage``, and
    ``drift, rho`` (SPO) or ``group`` (GRPO), plus ``first_visit`` (the row's first appearance in the log)."""
    path = RunLayout(run_path(run)).steps
    records = read_step_log(path, damaged="warn")
    if not records:
        raise MissingData(f"{path}: missing or empty")
    parts = []
    for record in records:
        data = record.get("data") or {}
        size = len(data.get("row") or [])
        columns = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == size}
        if size:
            part = pd.DataFrame(columns)
            part.insert(0, "sample", np.arange(size))
            part.insert(0, "step", int(record["step"]))
            parts.append(part)
    if not parts:
        raise MissingData(f"{path}: no samples logged")
    frame = pd.concat(parts, ignore_index=True)
    frame["row"] = frame["row"].astype(np.int64)
    frame["first_visit"] = ~frame["row"].duplicated()
    return frame


def load_prompts(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``prompts.parquet``: ``row, prompt_key, dataset_index, difficulty, p_hat0, n_eff0, has_offline_values``."""
    path = RunLayout(run_path(run)).prompts
    if not path.is_file():
        raise MissingData(f"{path}: missing")
    return pd.read_parquet(path)


def load_tracker_snapshots(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``tracker/<step>.npz`` stacked: ``step, row, alpha, beta, p_hat, n_eff, visits``."""
    folder = RunLayout(run_path(run)).tracker_dir
    files = sorted((p for p in folder.glob("*.npz") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise MissingData(f"{folder}: no tracker snapshots (<step>.npz)")
    parts = []
    for path in files:
        with np.load(path) as arrays:
            alpha, beta = arrays["alpha"].astype(np.float64), arrays["beta"].astype(np.float64)
            visits = arrays["visits"] if "visits" in arrays else np.zeros(alpha.size, dtype=np.int64)
        parts.append(
            pd.DataFrame(
                {
                    "step": int(path.stem),
                    "row": np.arange(alpha.size),
                    "alpha": alpha,
                    "beta": beta,
                    "p_hat": alpha / (alpha + beta),
                    "n_eff": alpha + beta,
                    "visits": visits,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def offline_value_frame(values: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Per prompt: ``prompt_key, n, successes, success_rate, p_hat0`` with ``p_hat0 = (s + 0.5) / (n + 1)``
    (the tracker's prior mean, over all scores; empty score lists give 0.5)."""
    keys = list(values)
    n = np.array([len(values[k]) for k in keys], dtype=np.int64)
    s = np.array([int(np.sum(np.asarray(values[k], dtype=np.float64) > 0)) for k in keys], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return pd.DataFrame(
        {"prompt_key": keys, "n": n, "successes": s, "success_rate": rate, "p_hat0": (s + 0.5) / (n + 1)}
    )


def find_offline_values(paths: Iterable[str | os.PathLike]) -> Path | None:
    """``offline_values.json`` in a given folder, its parent or its grandparent (run folders sit two deep)."""
    for item in paths:
        base = Path(item)
        candidates = [base] if base.is_file() else [base, *list(base.parents)[:2]]
        for folder in candidates:
            path = folder if folder.is_file() else folder / OFFLINE_VALUES_FILE
            if path.is_file() and path.suffix == ".json":
                return path
    return None


def load_offline_values(path: str | os.PathLike) -> pd.DataFrame:
    """``offline_value_frame`` of an offline-values JSON file."""
    return offline_value_frame(read_offline_values(path))
