"""JSON whose objects name each key once: the one rule for every JSON the kit reads from outside.

``json.loads`` keeps the last of two equal keys without a word, so ``{"score": 1, "score": 0}`` would be read as
a score of 0. Offline-values files, verl's dump lines and sandbox requests are read with ``loads_unique``, which
raises ``DuplicateKey`` naming the key instead.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """A JSON object named ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {str(key)[:60]!r}")
        self.key = key


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key it has seen in the same object."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def loads_unique(text: str | bytes) -> Any:
    """``json.loads`` that raises ``DuplicateKey`` for an object naming a key twice."""
    return json.loads(text, object_pairs_hook=unique_object)
