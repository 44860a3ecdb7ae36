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
    load_config,
    run_path,
    tag_run,
)
from spo_helpers.analysis.scalars import logged_scalars
from spo_helpers.core.metric_names import RESPONSE_TOKENS_TOTAL, SAMPLES_TOTAL
from spo_helpers.errors import MissingData
from spo_helpers.formats.run_config import config_value


# ---------------------------------------------------------------------------------------------- metrics
def load_metrics(run: RunInfo | str | os.PathLike, wide: bool = False) -> pd.DataFrame:
    """Logged scalars: long ``(step, key, value)``, or one row per step and one column per key (``wide``).

    Read from ``metrics.jsonl``, or from the tensorboard events when there is none (official runs).
    """
    long = logged_scalars(run_path(run))
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
