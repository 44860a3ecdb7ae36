"""How the logged metrics evolved: ``metrics.jsonl`` (or TensorBoard) as long frames, with sample and token axes."""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from spo_helpers.analysis.runs import (
    RUN_COLUMNS,
    RunInfo,
    as_runs,
    config_value,
    load_config,
    run_path,
    tag_run,
)
from spo_helpers.core.metric_names import RESPONSE_TOKENS_TOTAL, SAMPLES_TOTAL
from spo_helpers.errors import MissingData
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.steplog import read_step_log

# ---------------------------------------------------------------------------------------------- metrics
_TB_CACHE: dict[tuple, pd.DataFrame] = {}


def tensorboard_scalars(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """Every scalar of ``tensorboard/events.out.tfevents.*`` as ``(step, key, value)``; later files win."""
    layout = RunLayout(run_path(run))
    files = sorted(layout.tensorboard_events())
    if not files:
        raise MissingData(f"{layout.tensorboard}: no tensorboard event files")
    signature = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if signature not in _TB_CACHE:
        try:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        except ImportError:
            raise MissingData(f"{layout.tensorboard}: reading event files needs the tensorboard package") from None

        rows = []
        for order, path in enumerate(files):
            events = EventAccumulator(str(path), size_guidance={"scalars": 0})
            events.Reload()
            for tag in events.Tags().get("scalars", []):
                rows.extend((order, e.wall_time, e.step, tag, e.value) for e in events.Scalars(tag))
        frame = pd.DataFrame(rows, columns=["order", "wall_time", "step", "key", "value"])
        frame = frame.sort_values(["order", "wall_time"], kind="stable")
        frame = frame.drop_duplicates(["step", "key"], keep="last")[["step", "key", "value"]]
        _TB_CACHE[signature] = frame.sort_values(["step", "key"]).reset_index(drop=True)
    return _TB_CACHE[signature].copy()


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def load_metrics(run: RunInfo | str | os.PathLike, wide: bool = False) -> pd.DataFrame:
    """Logged scalars: long ``(step, key, value)``, or one row per step and one column per key (``wide``).

    Read from ``metrics.jsonl``, or from the tensorboard events when there is none (official runs).
    """
    folder = run_path(run)
    records = read_step_log(RunLayout(folder).metrics, damaged="warn")
    if records:
        rows = [
            (int(r["step"]), str(key), number)
            for r in records
            for key, value in (r.get("data") or {}).items()
            if (number := _numeric(value)) is not None
        ]
        long = pd.DataFrame(rows, columns=["step", "key", "value"]).drop_duplicates(["step", "key"], keep="last")
    elif RunLayout(folder).has_tensorboard_events():
        long = tensorboard_scalars(folder)
    else:
        raise MissingData(f"{folder}: neither metrics.jsonl nor tensorboard events")
    long = long.sort_values(["step", "key"]).reset_index(drop=True)
    if wide:
        return long.pivot(index="step", columns="key", values="value").reset_index().rename_axis(columns=None)
    return long


def x_axes(long: pd.DataFrame, config: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per step, samples and response tokens generated so far (0 at step 0).

    From ``kit/samples_total`` and ``kit/response_tokens_total``; without them, from the config:
    ``samples = step * train_batch_size * rollout.n`` and tokens accumulate ``response_length/mean`` per sample.
    NaN when neither is known (official runs).
    """
    wide = long.pivot_table(index="step", columns="key", values="value", aggfunc="last")
    steps = pd.Index(sorted(set(long["step"]) | {0}), name="step")
    wide = wide.reindex(steps)
    out = pd.DataFrame(index=steps)
    batch = config_value(config or {}, "data.train_batch_size")
    n = config_value(config or {}, "actor_rollout_ref.rollout.n")
    per_step = float(batch) * float(n) if batch and n else math.nan
    for column, key in (("samples", SAMPLES_TOTAL), ("tokens", RESPONSE_TOKENS_TOTAL)):
        if key in wide.columns and wide[key].notna().any():
            series = wide[key].copy()
            series.loc[0] = 0.0
            out[column] = series.ffill()
        elif column == "samples":
            out[column] = steps.to_numpy(dtype=float) * per_step
        elif "response_length/mean" in wide.columns and math.isfinite(per_step):
            out[column] = (wide["response_length/mean"].fillna(0.0) * per_step).cumsum()
        else:
            out[column] = math.nan
    return out.reset_index()


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_runs(
    runs: Iterable[RunInfo | str | os.PathLike] | str | os.PathLike,
    keys: Sequence[str] | None = None,
    missing: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Long frame ``run, method, seed, step, key, value, samples, tokens`` over all runs.

    ``keys``: exact keys or shell patterns (``val-core/*``) to keep; all keys by default. A run without metrics
    raises ``MissingData``, or is left out and recorded in ``missing`` (label -> reason) when that dict is given.
    """
    frames = []
    for run in as_runs(runs):
        try:
            long = load_metrics(run)
        except MissingData as err:
            if missing is None:
                raise
            missing[run.title] = str(err)
            continue
        axes = x_axes(long, load_config(run))
        if keys is not None:
            wanted = {k: _matches(k, keys) for k in long["key"].unique()}
            long = long[long["key"].map(wanted)]
        frames.append(tag_run(long.merge(axes, on="step", how="left"), run))
    columns = [*RUN_COLUMNS, "step", "key", "value", "samples", "tokens"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def metric_series(metrics: pd.DataFrame, key: str, name: str = "value") -> pd.DataFrame:
    """Rows of one key from a ``load_runs`` frame, the value renamed to ``name``."""
    rows = metrics[metrics["key"] == key].drop(columns="key")
    return rows.rename(columns={"value": name}).reset_index(drop=True)
