"""The offline-values file: the official recipe's JSON object ``{prompt_key: [score, ...]}``.

Keys are ``formats.keys`` prompt keys (the user message's content, stripped), so files
written by the official recipe work with the kit's datasets and the kit's with theirs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_json


class OfflineValuesError(UserError, ValueError):
    """An offline-values file or mapping that cannot be used as is."""


def _checked_scores(key: Any, scores: Any, source: str) -> list[float]:
    if not isinstance(key, str):
        raise OfflineValuesError(f"{source}: prompt keys must be strings, got {type(key).__name__}")
    if isinstance(scores, str | bytes) or not isinstance(scores, Sequence | np.ndarray):
        raise OfflineValuesError(f"{source}: scores of prompt {key[:60]!r} must be a list, got {type(scores).__name__}")
    out = []
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, int | float | np.integer | np.floating):
            raise OfflineValuesError(f"{source}: prompt {key[:60]!r} has a non-numeric score {s!r}")
        value = float(s)
        if not math.isfinite(value):
            raise OfflineValuesError(
                f"{source}: prompt {key[:60]!r} has a NaN or infinite score; replace it with a finite score "
                "or rewrite the file with `spo merge`"
            )
        out.append(value)
    return out


def validate_offline_values(values: Any, source: str = "offline values") -> dict[str, list[float]]:
    """Return a clean ``{key: [float]}`` copy or raise ``OfflineValuesError`` naming the first problem."""
    if not isinstance(values, Mapping):
        raise OfflineValuesError(f"{source}: expected a JSON object {{prompt: [scores]}}, got {type(values).__name__}")
    return {key: _checked_scores(key, scores, source) for key, scores in values.items()}


def read_offline_values(path: str | os.PathLike) -> dict[str, list[float]]:
    """Read and validate an offline-values JSON file (ours or the official recipe's)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"offline values file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise OfflineValuesError(f"{p}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise OfflineValuesError(f"{p}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    return validate_offline_values(data, str(p))


def write_offline_values(values: Mapping[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Validate and write ``{key: [scores]}`` atomically, in the official format."""
    clean = validate_offline_values(values, str(path))
    return atomic_write_json(path, clean)


def values_summary(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Prompts, samples and the spread of per-prompt success rates (score > 0)."""
    rates = np.array([np.mean(np.asarray(v) > 0) for v in values.values() if len(v)], dtype=np.float64)
    samples = sum(len(v) for v in values.values())
    return {
        "prompts": float(len(values)),
        "prompts_without_scores": float(sum(1 for v in values.values() if not len(v))),
        "samples": float(samples),
        "mean_success": float(rates.mean()) if rates.size else float("nan"),
        "share_all_fail": float((rates == 0).mean()) if rates.size else float("nan"),
        "share_all_pass": float((rates == 1).mean()) if rates.size else float("nan"),
    }


def coverage(values: Mapping[str, Any], keys: Iterable[str]) -> dict[str, int]:
    """How many dataset keys have values, how many don't, and how many value keys match no prompt."""
    key_set = set(keys)
    value_keys = set(values)
    return {
        "dataset_prompts": len(key_set),
        "with_values": len(key_set & value_keys),
        "without_values": len(key_set - value_keys),
        "unmatched_values": len(value_keys - key_set),
    }
