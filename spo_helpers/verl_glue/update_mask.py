"""Samples left out of one actor update: their response mask is zero while the update runs, and only then.

verl's PPO loss averages over the tokens of the response mask (``token-mean``), so a sample whose mask is zero
adds no gradient and does not dilute the others'. The trainers use it for samples the sandbox failed
(``sandbox_health``) and for GRPO's groups without a reward spread when ``algorithm.filter_groups.enable`` is on
(DAPO's dynamic-sampling filter, without its refill).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def without_samples(batch, drop: np.ndarray | None) -> Iterator[None]:
    """While the block runs, ``batch``'s response mask is zero for the rows where ``drop`` is true."""
    if drop is None or not np.asarray(drop).any():
        yield
        return
    import torch

    original = batch.batch["response_mask"]
    masked = original.clone()
    masked[torch.as_tensor(np.asarray(drop, dtype=bool))] = 0
    batch.batch["response_mask"] = masked
    try:
        yield
    finally:
        batch.batch["response_mask"] = original


def zero_variance_groups(rewards: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """True for each sample of a group whose rewards are all equal (every advantage in it is zero)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    spread = np.zeros(codes.max() + 1 if codes.size else 0, dtype=bool)
    for code in np.unique(codes):
        values = rewards[codes == code]
        spread[code] = values.max() > values.min()
    return ~spread[codes]
