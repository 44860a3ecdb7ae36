"""Tables a reader can read at a glance: shares as percentages, ratios with an ``x``, no long decimals.

    from spo_helpers.analysis.tables import styled
    styled(zero_shares, percent=["mean share"])  # 0.420833 -> 42.1%

``styled`` returns a pandas ``Styler`` (what a notebook cell shows); the frame's values are unchanged, so the
CSV files keep full precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _columns(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    return [c for c in names if c in frame.columns]


def styled(
    frame: pd.DataFrame | pd.Series,
    percent: Sequence[str] | str = (),
    points: Sequence[str] | str = (),
    times: Sequence[str] = (),
    digits: int = 1,
):
    """``frame`` formatted for reading: ``percent`` columns hold shares (0.42 -> 42.0%), ``points`` columns hold
    percentages already (42.0 -> 42.0%), ``times`` columns ratios (4.35 -> 4.35x); other floats get three
    significant digits, missing values a dash. ``"all"`` for ``percent`` or ``points`` means every float column.
    A range index is hidden."""
    frame = frame.to_frame() if isinstance(frame, pd.Series) else frame
    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    percent = floats if percent == "all" else _columns(frame, percent)
    points = floats if points == "all" else _columns(frame, points)
    times = _columns(frame, times)
    rest = [c for c in floats if c not in {*percent, *points, *times}]

    def fmt(template: str, scale: float = 1.0):
        return lambda v: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else template.format(v * scale)

    style = frame.style
    if percent:
        style = style.format(fmt(f"{{:.{digits}f}}%", 100.0), subset=percent)
    if points:
        style = style.format(fmt(f"{{:.{digits}f}}%"), subset=points)
    if times:
        style = style.format(fmt("{:.2f}x"), subset=times)
    if rest:
        style = style.format(fmt("{:.3g}"), subset=rest)
    if isinstance(frame.index, pd.RangeIndex):
        style = style.hide(axis="index")
    return style
