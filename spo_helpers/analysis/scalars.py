"""A run folder's logged scalars as they are on disk: ``metrics.jsonl``, else TensorBoard's event files.

``runs`` reads them to tell a run's method by its keys, ``metrics`` turns them into frames with sample and token
axes; both import this module, which imports neither.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from spo_helpers.errors import MissingData
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.steplog import read_step_log

_TB_CACHE: dict[tuple, pd.DataFrame] = {}


def tensorboard_scalars(run: str | os.PathLike) -> pd.DataFrame:
    """Every scalar of ``tensorboard/events.out.tfevents.*`` as ``(step, key, value)``; later files win."""
    layout = RunLayout(Path(run))
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


def logged_scalars(run: str | os.PathLike) -> pd.DataFrame:
    """The run folder's numeric scalars, long ``(step, key, value)`` sorted by step and key.

    Read from ``metrics.jsonl``, or from the tensorboard events when there is none (official runs); ``MissingData``
    when the folder has neither.
    """
    layout = RunLayout(Path(run))
    records = read_step_log(layout.metrics, damaged="warn")
    if records:
        rows = [
            (int(r["step"]), str(key), number)
            for r in records
            for key, value in (r.get("data") or {}).items()
            if (number := _numeric(value)) is not None
        ]
        long = pd.DataFrame(rows, columns=["step", "key", "value"]).drop_duplicates(["step", "key"], keep="last")
    elif layout.has_tensorboard_events():
        long = tensorboard_scalars(layout.root)
    else:
        raise MissingData(f"{layout.root}: neither metrics.jsonl nor tensorboard events")
    return long.sort_values(["step", "key"]).reset_index(drop=True)
