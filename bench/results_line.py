"""The machine-readable line every benchmark prints per figure, parsed by ``run_all.py``."""

from __future__ import annotations

import json
import shlex
import sys


def emit(name: str, value: float, unit: str, baseline: float | None, ratio: float | None) -> None:
    """Print ``RESULT {json}`` with the figure and the command that reproduces it."""
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    record = {"name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio, "command": command}
    print("RESULT " + json.dumps(record))
