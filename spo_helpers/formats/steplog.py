"""Append-only JSONL logs keyed by training step, safe across resume.

A run that resumes from the checkpoint of step k re-executes steps k+1, k+2, ...;
records an interrupted run wrote for those steps are stale. ``StepLog`` drops every
existing record whose step is at or after the first step it is asked to log, so
the file after a resume equals the file of a run that never stopped. Each record
is one line ``{"step": s, "data": {...}}`` (verl's ``file`` logger format), with
values converted to plain floats, ints or strings.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_text, read_utf8

logger = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """Numbers (numpy, torch scalars included) to float/int, NaN/inf to None, containers recursively."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("data", {}), dict):
        return record
    return None


def read_step_log(path: str | os.PathLike, *, damaged: str = "raise") -> list[dict[str, Any]]:
    """All records of a step log. Only a torn *last* line (a crash mid-write) is dropped silently.

    Any other line that is not a ``{"step": int, "data": {...}}`` record means the file was damaged:
    ``damaged="raise"`` stops with ``UserError`` naming the file and the lines; ``"warn"`` logs them and
    returns the good records (for read-only analysis).
    """
    p = Path(path)
    if not p.exists():
        return []
    text = read_utf8(p)
    lines = text.split("\n")
    torn_last = not text.endswith("\n")
    records, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _record(line)
        if record is not None:
            records.append(record)
        elif not (torn_last and number == len(lines)):
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        message = f"{p}: {len(bad)} damaged line(s) that are not step records (line {shown})"
        if damaged == "raise":
            raise UserError(f"{message}; restore the file from a backup or remove those lines")
        logger.warning("%s; they were skipped", message)
    return records


class StepLog:
    """``log(step, data)`` appends one record; the first call truncates stale records."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._truncated = False

    def log(self, step: int, data: Mapping[str, Any]) -> None:
        if not self._truncated:
            kept = [r for r in read_step_log(self.path) if int(r["step"]) < int(step)]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            self._truncated = True
        line = json.dumps({"step": int(step), "data": to_jsonable(dict(data))}, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
