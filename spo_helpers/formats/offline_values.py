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
from spo_helpers.formats.atomic import atomic_write_json, read_utf8, sha256_file
from spo_helpers.formats.layout import stats_path_for
from spo_helpers.formats.strict_json import DuplicateKey, loads_unique


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
    """Read and validate an offline-values JSON file (ours or the official recipe's).

    A key that appears twice is an error (JSON parsers silently keep the last one).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"offline values file not found: {p}")
    text = read_utf8(p)
    if not text.strip():
        raise OfflineValuesError(f"{p}: the file is empty")
    try:
        data = loads_unique(text)
    except json.JSONDecodeError as err:
        raise OfflineValuesError(f"{p}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    except DuplicateKey as err:
        raise OfflineValuesError(
            f"{p}: {err}; merge the two lists into one entry (or rewrite the file with `spo merge`)"
        ) from None
    return validate_offline_values(data, str(p))


def write_offline_values(values: Mapping[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Validate and write ``{key: [scores]}`` atomically, in the official format."""
    clean = validate_offline_values(values, str(path))
    return atomic_write_json(path, clean)


def write_values_and_stats(
    values: Mapping[str, Sequence[float]], stats: dict[str, Any], path: str | os.PathLike
) -> tuple[Path, Path]:
    """Write the values, then ``<stem>.stats.json`` recording the values file's SHA-256 (``values_sha256``).

    The old stats file is moved aside first and the new one written last: a crash in between leaves values without
    stats, never new values beside old stats (``stats_match`` tells which). A values write that fails (a full disk)
    leaves the old values, and the old stats are put back beside them.
    """
    stats_path = stats_path_for(path)
    held = stats_path.with_name(stats_path.name + ".previous")
    if stats_path.is_file():
        os.replace(stats_path, held)
    try:
        values_path = write_offline_values(values, path)
    except BaseException:
        if held.is_file():
            os.replace(held, stats_path)
        raise
    held.unlink(missing_ok=True)
    stats["values_sha256"] = sha256_file(values_path)
    atomic_write_json(stats_path, stats, indent=2)
    return values_path, stats_path


def stats_match(path: str | os.PathLike) -> bool | None:
    """Whether the stats beside the values file describe it (None: no stats file, or one without a digest)."""
    stats_path = stats_path_for(path)
    if not stats_path.is_file():
        return None
    try:
        digest = json.loads(read_utf8(stats_path)).get("values_sha256")
    except (ValueError, AttributeError):
        return False
    return None if digest is None else digest == sha256_file(path)


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
    """How many dataset keys have scores, how many don't, and how many value keys match no prompt.

    A prompt whose list is empty has no offline information: it counts as ``without_values`` (and in
    ``empty_lists``), since it starts at the prior exactly like a prompt missing from the file.
    """
    key_set = set(keys)
    value_keys = {k for k, v in values.items() if len(v)}
    return {
        "dataset_prompts": len(key_set),
        "with_values": len(key_set & value_keys),
        "without_values": len(key_set - value_keys),
        "empty_lists": len(key_set & (set(values) - value_keys)),
        "unmatched_values": len(set(values) - key_set),
    }


def score_report(values: Mapping[str, Sequence[float]]) -> dict[str, int]:
    """What the tracker will do to the scores: lists that are empty, and scores outside {0, 1} or [0, 1].

    The tracker binarises (``score > 0``), so a score of 0.5 or of 3 counts as a success and -1 as a failure;
    ``spo merge`` and ``spo train`` both report these counts.
    """
    flat = np.fromiter((s for v in values.values() for s in v), dtype=np.float64)
    return {
        "prompts_without_scores": sum(1 for v in values.values() if not len(v)),
        "scores_not_0_or_1": int(((flat != 0) & (flat != 1)).sum()),
        "scores_outside_0_1": int(((flat < 0) | (flat > 1)).sum()),
    }
