"""Prompt selection by SPO priority.

Each prompt's priority is

    w = sqrt(p̂ (1 - p̂)) / N_eff^γ + ε

(ε = 0.05, γ = 0 in the official recipe). A training batch of ``batch_size``
prompts is drawn without replacement with probability ∝ w, either from all
prompts or from a candidate pool of ``pool_size`` prompts taken in order from a
seeded per-epoch permutation (the official recipe's ``gen_batch_size`` data
loader batch). Modes:

- ``weighted`` (official): successive sampling ∝ w, done in O(pool) with
  exponential keys ``E_i / w_i`` (E ~ Exp(1)); the k smallest keys are exactly a
  draw of k items without replacement ∝ w.
- ``thompson`` (ours): draw θ ~ Beta(α, β) per candidate, score it with the same
  priority formula, keep the top k.
- ``uniform``: ablation without prioritisation.

When the batch is larger than the pool, every candidate is taken
``batch_size // pool`` times and the remainder is drawn as above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SAMPLER_MODES = ("weighted", "thompson", "uniform")


def priority_weights(p_hat, n_eff=None, eps: float = 0.05, gamma: float = 0.0) -> np.ndarray:
    """``w = sqrt(p̂(1-p̂)) / N_eff^γ + ε``; ``n_eff`` is only needed when γ ≠ 0."""
    p = np.asarray(p_hat, dtype=np.float64)
    if p.size and (not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("p_hat must be finite and lie in [0, 1]")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    w = np.sqrt(p * (1.0 - p))
    if gamma != 0.0:
        if n_eff is None:
            raise ValueError("gamma != 0 needs n_eff")
        n = np.asarray(n_eff, dtype=np.float64)
        if n.shape != p.shape or (n.size and n.min() <= 0):
            raise ValueError("n_eff must be positive and shaped like p_hat")
        w = w / n**gamma
    return w + eps


def sample_without_replacement(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` items drawn without replacement ∝ ``weights``, in draw order.

    Uses exponential keys ``E_i / w_i``: sorting them gives successive sampling.
    Items of weight 0 are only taken when fewer than ``k`` items have positive weight.
    """
    w = np.asarray(weights, dtype=np.float64)
    if k > w.size:
        raise ValueError(f"cannot draw {k} distinct items from {w.size}")
    if w.size and (not np.isfinite(w).all() or w.min() < 0):
        raise ValueError("weights must be finite and >= 0")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    keys = rng.standard_exponential(w.size)
    positive = w > 0
    if positive.all():
        keys /= w
    else:
        # Weight-0 items rank after every positive one, in random order among themselves.
        finite_max = (keys[positive] / w[positive]).max(initial=0.0)
        keys = np.where(positive, keys / np.where(positive, w, 1.0), finite_max + 1.0 + keys)
    top = np.argpartition(keys, k - 1)[:k] if k < w.size else np.arange(w.size)
    return top[np.argsort(keys[top], kind="stable")].astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first (ties: lower index first)."""
    s = np.asarray(scores, dtype=np.float64)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    return top[np.lexsort((top, -s[top]))].astype(np.int64)


class BetaSource(Protocol):
    """What the sampler reads from a tracker: ``len()`` and α, β at given rows."""

    def __len__(self) -> int: ...

    def at_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class SamplerConfig:
    """batch_size: prompts per step. pool_size: candidates per step (None = all prompts)."""

    batch_size: int
    pool_size: int | None = None
    mode: str = "weighted"
    eps: float = 0.05
    gamma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 or None, got {self.pool_size}")
        if self.mode not in SAMPLER_MODES:
            raise ValueError(f"mode must be one of {SAMPLER_MODES}, got {self.mode!r}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")


class PrioritizedSampler:
    """Seeded, resumable prompt selection over ``num_prompts`` tracker rows."""

    def __init__(self, num_prompts: int, config: SamplerConfig) -> None:
        if num_prompts < 1:
            raise ValueError("the sampler needs at least one prompt")
        self.num_prompts = int(num_prompts)
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self._perm = np.empty(0, dtype=np.int64)
        self._cursor = 0
        self.epoch = -1
        self.draws = 0

    @property
    def pool_size(self) -> int:
        size = self.config.pool_size
        return self.num_prompts if size is None else min(size, self.num_prompts)

    def candidate_pool(self) -> np.ndarray:
        """Rows of this step's candidates: all prompts, or the next slice of the epoch permutation."""
        if self.pool_size >= self.num_prompts:
            return np.arange(self.num_prompts, dtype=np.int64)
        if self._cursor + self.pool_size > self._perm.size:  # drop the last partial pool, as verl's loader
            self._perm = self._rng.permutation(self.num_prompts).astype(np.int64)
            self._cursor = 0
            self.epoch += 1
        pool = self._perm[self._cursor : self._cursor + self.pool_size]
        self._cursor += self.pool_size
        return pool

    def sample(self, source: BetaSource) -> np.ndarray:
        """Rows of the next training batch, in selection order."""
        if len(source) != self.num_prompts:
            raise ValueError(f"sampler built for {self.num_prompts} prompts, tracker has {len(source)}")
        pool = self.candidate_pool()
        alpha, beta = source.at_rows(pool)
        repeats, remainder = divmod(self.config.batch_size, pool.size)
        picked = self._pick(alpha, beta, remainder)
        self.draws += 1
        return np.concatenate([np.tile(pool, repeats), pool[picked]])

    def _pick(self, alpha: np.ndarray, beta: np.ndarray, k: int) -> np.ndarray:
        cfg = self.config
        if cfg.mode == "uniform":
            return self._rng.permutation(alpha.size)[:k].astype(np.int64)
        n_eff = alpha + beta
        if cfg.mode == "weighted":
            weights = priority_weights(alpha / n_eff, n_eff, cfg.eps, cfg.gamma)
            return sample_without_replacement(weights, k, self._rng)
        theta = self._rng.beta(alpha, beta)
        return top_k(priority_weights(theta, n_eff, cfg.eps, cfg.gamma), k)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self._rng.bit_generator.state,
            "perm": self._perm.tolist(),
            "cursor": self._cursor,
            "epoch": self.epoch,
            "draws": self.draws,
            "num_prompts": self.num_prompts,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["num_prompts"] != self.num_prompts:
            raise ValueError(f"sampler state is for {state['num_prompts']} prompts, not {self.num_prompts}")
        self._rng.bit_generator.state = state["rng"]
        self._perm = np.asarray(state["perm"], dtype=np.int64)
        self._cursor = int(state["cursor"])
        self.epoch = int(state["epoch"])
        self.draws = int(state["draws"])
