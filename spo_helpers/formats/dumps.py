"""verl's JSONL dumps (``validation_data/<step>.jsonl``, ``rollout_data/<step>.jsonl``): one reader, one policy.

verl writes one JSON object per generated sample: ``input`` (the decoded prompt), ``output``, ``gts``,
``score``, ``step`` and every key the reward function returns (the kit's returns ``acc``, ``pred`` and
``prompt_key``). A line is *usable* when it is a JSON object with a finite numeric ``score`` and a prompt
key (``formats.keys.dump_key``).

The bad-line policy, the same for every reader (merge, estimate summaries, analysis, explorers): by default
the first bad line stops with ``file:line: reason`` and the fix; with ``skip_bad_lines`` bad lines are
skipped and *counted by reason*, and the caller reports the counts. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import read_utf8
from spo_helpers.formats.keys import dump_key
from spo_helpers.formats.strict_json import DuplicateKey, loads_unique

BAD_LINE_REASONS = {
    "invalid_json": "not valid JSON",
    "not_an_object": "not a JSON object",
    "missing_score": "no 'score' field",
    "bad_score": "'score' is not a finite number",
    "missing_key": "no prompt key ('prompt_key' string or 'input' text)",
    "duplicate_key": "a field named twice (which value counts is unclear)",
}
"""reason -> what the error message says."""


@dataclass(frozen=True)
class DumpFile:
    """The usable lines of one dump: parallel lists of keys and scores, the fields asked for, and the bad lines."""

    path: Path
    keys: list[str]
    scores: list[float]
    lines: int
    bad: dict[str, int] = field(default_factory=dict)
    fields: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def entries(self) -> list[tuple[str, float]]:
        """``(key, score)`` per usable line."""
        return list(zip(self.keys, self.scores, strict=True))

    def grouped(self) -> dict[str, list[float]]:
        """Scores per prompt key, in file order."""
        out: dict[str, list[float]] = {}
        for key, score in zip(self.keys, self.scores, strict=True):
            out.setdefault(key, []).append(score)
        return out


def finite_score(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_line(line: str) -> tuple[str, float, dict[str, Any]] | str:
    """``(key, score, record)`` of a usable dump line, or the reason it is bad (a key of ``BAD_LINE_REASONS``)."""
    try:
        item = loads_unique(line)
    except json.JSONDecodeError:
        return "invalid_json"
    except DuplicateKey:
        return "duplicate_key"
    if not isinstance(item, dict):
        return "not_an_object"
    if "score" not in item:
        return "missing_score"
    score = finite_score(item["score"])
    if score is None:
        return "bad_score"
    key = dump_key(item)
    if key is None:
        return "missing_key"
    return key, score, item


def read_dump(
    path: str | os.PathLike, *, skip_bad_lines: bool = False, keep: Iterable[str] = (), fix: str | None = None
) -> DumpFile:
    """Parse one JSONL dump under the module's bad-line policy, keeping the named extra ``keep`` fields.

    A bad line raises ``UserError`` (``file:line: reason; fix``) unless ``skip_bad_lines``, when it is counted
    in ``DumpFile.bad``. ``fix`` overrides the advice in the message.
    """
    path = Path(path)
    keep = tuple(keep)
    keys: list[str] = []
    scores: list[float] = []
    fields: dict[str, list[Any]] = {name: [] for name in keep}
    bad: Counter[str] = Counter()
    lines = 0
    try:
        text = read_utf8(path)
    except FileNotFoundError:
        raise UserError(f"{path}: dump file not found") from None
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): JSON may hold a raw U+2028
        if not line.strip():
            continue
        lines += 1
        parsed = parse_line(line)
        if isinstance(parsed, str):
            if not skip_bad_lines:
                advice = fix or "fix the line or pass --skip_bad_lines to skip it"
                raise UserError(f"{path}:{lineno}: {BAD_LINE_REASONS[parsed]}; {advice}")
            bad[parsed] += 1
            continue
        key, score, item = parsed
        keys.append(key)
        scores.append(score)
        for name in keep:
            fields[name].append(item.get(name))
    return DumpFile(path=path, keys=keys, scores=scores, lines=lines, bad=dict(bad), fields=fields)


def describe_bad(bad: dict[str, int]) -> str:
    """``"3 not valid JSON, 1 no 'score' field"`` for a bad-line count."""
    return ", ".join(f"{count} {BAD_LINE_REASONS.get(reason, reason)}" for reason, count in sorted(bad.items()))


def dump_step(path: Path) -> int | None:
    """The step of ``<step>.jsonl``, or None for another name."""
    return int(path.stem) if path.stem.isdigit() else None


def step_dumps(folder: str | os.PathLike) -> list[Path]:
    """The ``<step>.jsonl`` files of a dump folder, in step order (other names ignored)."""
    files = (p for p in Path(folder).glob("*.jsonl") if dump_step(p) is not None)
    return sorted(files, key=lambda p: dump_step(p) or 0)
