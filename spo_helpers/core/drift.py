"""Each prompt's previous response, for the drift term of the forgetting factor.

SPO's ρ(x) needs the policy drift on the response sampled at x's previous visit:

    D(x) = (1/|y|) Σ_t | log π_now(y_t | ·) - log π_then(y_t | ·) |

where π_then is the policy right after that visit's update. The store keeps, per
prompt key, only the response token ids (int32) and those log-probs (float32),
8 bytes per response token, never whole batches; the prompt's tokens come from
the current batch (the prompt is being revisited). Memory is bounded by
``max_tokens``: beyond it the least recently visited prompts are evicted, and an
evicted prompt's next visit counts as a first visit (D = 0, ρ = ρ_max).
A NaN log-prob marks a stored token the policy did not sample (a tool's output in a
multi-turn response): it is part of the response but not of D's average.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

DEFAULT_MAX_TOKENS = 1 << 28  # 268M response tokens = 2 GiB


def mean_abs_logprob_change(logp_now: np.ndarray, logp_then: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row: mean over masked tokens of ``|logp_now - logp_then|`` (0 for an empty mask)."""
    now = np.asarray(logp_now, dtype=np.float64)
    then = np.asarray(logp_then, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    if not (now.shape == then.shape == m.shape):
        raise ValueError(f"shapes differ: {now.shape}, {then.shape}, {m.shape}")
    total = (np.abs(now - then) * m).sum(axis=-1)
    count = m.sum(axis=-1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


class ResponseStore:
    """LRU store of ``key -> (response token ids, log-probs)`` bounded by total tokens."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self._items: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.total_tokens = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self.total_tokens * 8

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        return self._items.get(key)

    def put(self, key: str, token_ids: np.ndarray, logprobs: np.ndarray) -> None:
        """Store (replace) ``key``'s response, mark it most recent, evict beyond the budget."""
        ids = np.asarray(token_ids, dtype=np.int32).ravel().copy()
        lp = np.asarray(logprobs, dtype=np.float32).ravel().copy()
        if ids.shape != lp.shape:
            raise ValueError(f"{ids.size} token ids but {lp.size} log-probs for one response")
        old = self._items.pop(key, None)
        if old is not None:
            self.total_tokens -= old[0].size
        self._items[key] = (ids, lp)
        self.total_tokens += ids.size
        while self.total_tokens > self.max_tokens and len(self._items) > 1:
            _, (evicted, _) = self._items.popitem(last=False)
            self.total_tokens -= evicted.size
            self.evictions += 1

    def state_dict(self) -> dict[str, Any]:
        """Keys and flat numpy arrays in LRU order (least recent first); loads back identically."""
        keys = list(self._items)
        lengths = [self._items[k][0].size for k in keys]
        ids = np.concatenate([self._items[k][0] for k in keys]) if keys else np.empty(0, np.int32)
        lp = np.concatenate([self._items[k][1] for k in keys]) if keys else np.empty(0, np.float32)
        return {
            "max_tokens": self.max_tokens,
            "keys": keys,
            "lengths": lengths,
            "token_ids": ids,
            "logprobs": lp,
            "evictions": self.evictions,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ids = np.asarray(state["token_ids"], dtype=np.int32)
        lp = np.asarray(state["logprobs"], dtype=np.float32)
        lengths = np.asarray(state["lengths"], dtype=np.int64)
        if lengths.sum() != ids.size or ids.size != lp.size or len(state["keys"]) != lengths.size:
            raise ValueError("corrupt response-store state: lengths do not match the stored arrays")
        self.max_tokens = int(state["max_tokens"])
        self._items = OrderedDict()
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for key, start, end in zip(state["keys"], offsets[:-1], offsets[1:], strict=True):
            self._items[key] = (ids[start:end].copy(), lp[start:end].copy())
        self.total_tokens = int(lengths.sum())
        self.evictions = int(state["evictions"])
