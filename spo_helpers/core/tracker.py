"""Per-prompt Beta value tracker with a KL-adaptive forgetting factor.

Each prompt x carries a Beta(α, β) belief about its success rate under the
current policy:

    p̂ = α / (α + β)            N_eff = α + β

Initialisation from offline scores (binarised ``score > 0``, at most
``offline_n`` kept, ``s`` successes out of ``n`` kept):

    N_init = 1 / (1 - ρ_min)
    α0 = N_init (s + 0.5) / (n + 1)      β0 = N_init (n - s + 0.5) / (n + 1)

Prompts without offline scores start at the uninformative α = β = 0.5.

Update after a visit with reward r ∈ [0, 1]:

    α ← ρ α + r        β ← ρ β + (1 - r)
    ρ = clip(2^(-D / D_half), ρ_min, ρ_max)      (``rho_mode="kl"``)
    ρ = rho_const                                  (``rho_mode="constant"``)

where D is the policy drift on the prompt's previously sampled response (D = 0
on a first visit, so ρ = ρ_max). State lives in numpy arrays indexed by a
key → row map: an update costs O(batch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RHO_MODES = ("kl", "constant")
PRIOR_ALPHA = 0.5
PRIOR_BETA = 0.5
STATE_VERSION = 1


@dataclass(frozen=True)
class TrackerConfig:
    """Constants of the tracker. Defaults are the official recipe's.

    offline_n: offline scores kept per prompt (0 ignores offline values).
    rho_min, rho_max: clip range of the forgetting factor ρ; ``N_init = 1/(1-rho_min)``.
    d_half: drift at which ρ halves before clipping (``2^(-D/d_half)``).
    rho_mode: ``"kl"`` (drift-adaptive ρ) or ``"constant"`` (ρ = ``rho_const``).
    """

    offline_n: int = 8
    rho_min: float = 0.875
    rho_max: float = 0.96
    d_half: float = 0.06
    rho_mode: str = "kl"
    rho_const: float = 0.875

    def __post_init__(self) -> None:
        if not isinstance(self.offline_n, int | np.integer) or self.offline_n < 0:
            raise ValueError(f"offline_n must be a non-negative integer, got {self.offline_n!r}")
        if not 0.0 < self.rho_min <= self.rho_max <= 1.0 or self.rho_min >= 1.0:
            raise ValueError(
                f"need 0 < rho_min <= rho_max <= 1 and rho_min < 1, got rho_min={self.rho_min}, rho_max={self.rho_max}"
            )
        if not (self.d_half > 0.0 and math.isfinite(self.d_half)):
            raise ValueError(f"d_half must be positive and finite, got {self.d_half}")
        if self.rho_mode not in RHO_MODES:
            raise ValueError(f"rho_mode must be one of {RHO_MODES}, got {self.rho_mode!r}")
        if not 0.0 < self.rho_const <= 1.0:
            raise ValueError(f"rho_const must lie in (0, 1], got {self.rho_const}")

    @property
    def n_init(self) -> float:
        """Effective sample size of an offline-initialised prompt, ``1 / (1 - rho_min)``."""
        return 1.0 / (1.0 - self.rho_min)


def offline_prior(successes: np.ndarray, counts: np.ndarray, n_init: float) -> tuple[np.ndarray, np.ndarray]:
    """``α0 = N_init (s+0.5)/(n+1)``, ``β0 = N_init (n-s+0.5)/(n+1)`` elementwise."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    return n_init * (s + 0.5) / (n + 1.0), n_init * (n - s + 0.5) / (n + 1.0)


def _checked_drift(drift: np.ndarray | float | None, size: int | None) -> np.ndarray:
    if drift is None:
        return np.zeros(1 if size is None else size, dtype=np.float64)
    d = np.atleast_1d(np.asarray(drift, dtype=np.float64))
    if size is not None and d.shape != (size,):
        raise ValueError(f"drift has shape {d.shape}, expected ({size},)")
    bad = ~np.isfinite(d) | (d < 0)
    if bad.any():
        raise ValueError(f"drift must be finite and >= 0; {int(bad.sum())} bad value(s), first {d[bad][0]!r}")
    return d


def raw_forgetting_factor(
    drift: np.ndarray | float | None, config: TrackerConfig, size: int | None = None
) -> np.ndarray:
    """ρ before clipping: ``2^(-D/d_half)``, or ``rho_const`` in constant mode (the official ``spo/rho``).

    ``drift=None`` means a first visit (D = 0); then ``size`` gives the length.
    """
    d = _checked_drift(drift, size)
    if config.rho_mode == "constant":
        return np.full(d.shape, config.rho_const, dtype=np.float64)
    return np.exp2(-d / config.d_half)


def forgetting_factor(drift: np.ndarray | float | None, config: TrackerConfig, size: int | None = None) -> np.ndarray:
    """ρ for each drift value: ``clip(2^(-D/d_half), rho_min, rho_max)``, or ``rho_const``.

    ``drift=None`` means a first visit (D = 0); then ``size`` gives the length.
    """
    raw = raw_forgetting_factor(drift, config, size)
    if config.rho_mode == "constant":
        return raw
    return np.clip(raw, config.rho_min, config.rho_max)


def _binarised_counts(scores: Sequence[float], key: str) -> tuple[int, int]:
    arr = np.asarray(list(scores), dtype=np.float64).ravel()
    if not np.isfinite(arr).all():
        raise ValueError(f"offline scores for prompt {key[:80]!r} contain NaN or infinity: {arr.tolist()[:8]}")
    return int((arr > 0).sum()), int(arr.size)


def _as_key_list(keys: Iterable[str] | str) -> list[str]:
    if isinstance(keys, str):
        return [keys]
    return list(keys)


class ValueTracker:
    """Vectorised Beta(α, β) tracker over a fixed set of prompt keys."""

    def __init__(
        self,
        keys: Sequence[str],
        alpha: np.ndarray,
        beta: np.ndarray,
        config: TrackerConfig | None = None,
        *,
        has_offline: np.ndarray | None = None,
        num_unmatched_values: int = 0,
    ) -> None:
        self.config = config or TrackerConfig()
        self._keys = list(keys)
        self._row = {k: i for i, k in enumerate(self._keys)}
        if len(self._row) != len(self._keys):
            dup = len(self._keys) - len(self._row)
            raise ValueError(f"prompt keys must be unique; {dup} duplicate key(s)")
        n = len(self._keys)
        self._alpha = np.array(alpha, dtype=np.float64).reshape(n)
        self._beta = np.array(beta, dtype=np.float64).reshape(n)
        if not (np.all(self._alpha > 0) and np.all(self._beta > 0)):
            raise ValueError("alpha and beta must be positive")
        self._visits = np.zeros(n, dtype=np.int64)
        self._last_visit = np.full(n, -1, dtype=np.int64)
        self._has_offline = np.ones(n, dtype=bool) if has_offline is None else np.array(has_offline, dtype=bool)
        self.num_updates = 0
        self.num_unmatched_values = int(num_unmatched_values)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_offline_values(
        cls,
        values: Mapping[str, Sequence[float]],
        config: TrackerConfig | None = None,
        *,
        keys: Iterable[str] | None = None,
        seed: int = 0,
    ) -> ValueTracker:
        """Build a tracker from ``{prompt_key: [scores]}``.

        ``keys`` fixes the tracked prompts (e.g. the training set); keys absent from
        ``values`` start at the prior α = β = 0.5 and are counted in
        ``num_without_offline_values``; value keys outside ``keys`` are counted in
        ``num_unmatched_values``. Prompts with more than ``offline_n`` scores keep a
        seeded random subset of ``offline_n`` of them (a hypergeometric draw of the
        number of kept successes, which has the same distribution).
        """
        config = config or TrackerConfig()
        key_list = list(values.keys()) if keys is None else _as_key_list(keys)
        n = len(key_list)
        successes = np.zeros(n, dtype=np.int64)
        counts = np.zeros(n, dtype=np.int64)
        has = np.zeros(n, dtype=bool)
        for i, key in enumerate(key_list):
            scores = values.get(key)
            if scores is None:
                continue
            s, c = _binarised_counts(scores, key)
            if c == 0:
                continue
            successes[i], counts[i], has[i] = s, c, True
        unmatched = 0 if keys is None else len(set(values.keys()).difference(key_list))

        alpha = np.full(n, PRIOR_ALPHA)
        beta = np.full(n, PRIOR_BETA)
        if config.offline_n > 0:
            over = has & (counts > config.offline_n)
            if over.any():
                rng = np.random.default_rng(seed)
                successes[over] = rng.hypergeometric(successes[over], counts[over] - successes[over], config.offline_n)
                counts[over] = config.offline_n
            a0, b0 = offline_prior(successes[has], counts[has], config.n_init)
            alpha[has], beta[has] = a0, b0
        return cls(key_list, alpha, beta, config, has_offline=has, num_unmatched_values=unmatched)

    # ------------------------------------------------------------------ lookup
    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._row

    @property
    def num_without_offline_values(self) -> int:
        """Tracked prompts that started at the prior because they had no offline scores."""
        return int((~self._has_offline).sum())

    def has_offline_values(self) -> np.ndarray:
        """Per row: whether the prompt started from offline scores (else from the prior)."""
        return self._has_offline.copy()

    @property
    def keys_without_offline_values(self) -> list[str]:
        return [self._keys[i] for i in np.flatnonzero(~self._has_offline)]

    def rows(self, keys: Iterable[str] | str) -> np.ndarray:
        """Row index of each key; ``KeyError`` naming the unknown keys."""
        key_list = _as_key_list(keys)
        try:
            return np.fromiter((self._row[k] for k in key_list), dtype=np.int64, count=len(key_list))
        except KeyError:
            unknown = [k for k in key_list if k not in self._row]
            shown = ", ".join(repr(k[:60]) for k in unknown[:3])
            raise KeyError(f"{len(unknown)} prompt key(s) not tracked, e.g. {shown}") from None

    def at_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """α and β at row indices (what the sampler reads; no key lookup)."""
        return self._alpha[rows], self._beta[rows]

    def keys_at(self, rows: Iterable[int]) -> list[str]:
        return [self._keys[int(i)] for i in rows]

    def _select(self, array: np.ndarray, keys: Iterable[str] | str | None) -> np.ndarray:
        return array.copy() if keys is None else array[self.rows(keys)]

    def alpha(self, keys: Iterable[str] | str | None = None) -> np.ndarray:
        return self._select(self._alpha, keys)

    def beta(self, keys: Iterable[str] | str | None = None) -> np.ndarray:
        return self._select(self._beta, keys)

    def p_hat(self, keys: Iterable[str] | str | None = None) -> np.ndarray:
        """``α / (α + β)``; all prompts when ``keys`` is None."""
        a, b = self.alpha(keys), self.beta(keys)
        return a / (a + b)

    def n_eff(self, keys: Iterable[str] | str | None = None) -> np.ndarray:
        """``α + β``; all prompts when ``keys`` is None."""
        return self.alpha(keys) + self.beta(keys)

    def visits(self, keys: Iterable[str] | str | None = None) -> np.ndarray:
        return self._select(self._visits, keys)

    def last_visit(self, keys: Iterable[str] | str | None = None) -> np.ndarray:
        """Update index (1-based) of each prompt's last visit; -1 if never visited."""
        return self._select(self._last_visit, keys)

    # ------------------------------------------------------------------ dynamics
    def forgetting_factor(self, drift: np.ndarray | float | None) -> np.ndarray:
        """``clip(2^(-D/d_half), rho_min, rho_max)`` (or ``rho_const`` in constant mode)."""
        return forgetting_factor(drift, self.config)

    def raw_forgetting_factor(self, drift: np.ndarray | float | None) -> np.ndarray:
        """``2^(-D/d_half)`` before clipping (or ``rho_const``): how often the clip binds."""
        return raw_forgetting_factor(drift, self.config)

    def update(self, keys: Iterable[str] | str, rewards: Sequence[float] | np.ndarray, drift=None) -> np.ndarray:
        """Apply ``α ← ρα + r``, ``β ← ρβ + (1-r)`` for one visit per entry; return the ρ used.

        ``drift=None`` treats every entry as a first visit (D = 0). A key that
        appears several times in one call is updated once per occurrence, in order.
        """
        key_list = _as_key_list(keys)
        r = np.atleast_1d(np.asarray(rewards, dtype=np.float64))
        if r.shape != (len(key_list),):
            raise ValueError(f"got {len(key_list)} keys but rewards of shape {r.shape}")
        if not np.isfinite(r).all():
            raise ValueError(
                f"rewards contain NaN or infinity at positions {np.flatnonzero(~np.isfinite(r))[:5].tolist()}"
            )
        if ((r < 0) | (r > 1)).any():
            bad = r[(r < 0) | (r > 1)]
            raise ValueError(f"rewards must lie in [0, 1]; {bad.size} outside, e.g. {bad[0]!r}")
        rho = forgetting_factor(drift, self.config, size=len(key_list))
        rows = self.rows(key_list)
        self.num_updates += 1
        if np.unique(rows).size == rows.size:
            self._apply(rows, r, rho)
        else:
            # Occurrence rank of each entry among equal rows, applied rank by rank.
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_rows)) + 1]
            rank = np.empty_like(rows)
            rank[order] = np.arange(rows.size) - np.repeat(starts, np.diff(np.r_[starts, rows.size]))
            for k in range(int(rank.max()) + 1):
                sel = rank == k
                self._apply(rows[sel], r[sel], rho[sel])
        return rho

    def _apply(self, rows: np.ndarray, r: np.ndarray, rho: np.ndarray) -> None:
        self._alpha[rows] = rho * self._alpha[rows] + r
        self._beta[rows] = rho * self._beta[rows] + (1.0 - r)
        self._visits[rows] += 1
        self._last_visit[rows] = self.num_updates

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain Python containers only: exact through ``json`` and ``torch.save(weights_only)``."""
        return {
            "version": STATE_VERSION,
            "config": dataclasses.asdict(self.config),
            "keys": list(self._keys),
            "alpha": self._alpha.tolist(),
            "beta": self._beta.tolist(),
            "visits": self._visits.tolist(),
            "last_visit": self._last_visit.tolist(),
            "has_offline": self._has_offline.tolist(),
            "num_updates": int(self.num_updates),
            "num_unmatched_values": int(self.num_unmatched_values),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` exactly (keys, config and counters included)."""
        restored = ValueTracker.from_state_dict(state)
        self.__dict__.update(restored.__dict__)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ValueTracker:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported tracker state version {state.get('version')!r}")
        tracker = cls(
            state["keys"],
            np.asarray(state["alpha"], dtype=np.float64),
            np.asarray(state["beta"], dtype=np.float64),
            TrackerConfig(**state["config"]),
            has_offline=np.asarray(state["has_offline"], dtype=bool),
            num_unmatched_values=state["num_unmatched_values"],
        )
        tracker._visits = np.asarray(state["visits"], dtype=np.int64).copy()
        tracker._last_visit = np.asarray(state["last_visit"], dtype=np.int64).copy()
        tracker.num_updates = int(state["num_updates"])
        return tracker

    def summary(self) -> dict[str, float]:
        """A few headline numbers for logs and notebooks."""
        p = self.p_hat()
        return {
            "prompts": float(len(self)),
            "without_offline_values": float(self.num_without_offline_values),
            "unmatched_offline_values": float(self.num_unmatched_values),
            "visited": float((self._visits > 0).sum()),
            "p_hat_mean": float(p.mean()) if p.size else float("nan"),
            "n_eff_mean": float(self.n_eff().mean()) if p.size else float("nan"),
        }
