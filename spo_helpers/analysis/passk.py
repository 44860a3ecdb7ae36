"""Per-prompt accuracy statistics of n samples: avg@n, unbiased pass@k and exact maj@k.

Validation statistics of one prompt with n samples, c of them correct (``score > 0``):

    avg@n  = c / n                                     (the expected accuracy of one sample)
    pass@k = 1 - C(n - c, k) / C(n, k)                 (Chen et al. 2021; unbiased, 1 when n - c < k)
    maj@k  = mean over the C(n, k) subsets S of k samples of  mean_{a in top(S)} correct(a)

top(S) is the set of answers (``pred`` strings) with the most votes in S: a tie counts as the expected score of
a uniformly random tie-break. Samples without an answer do not vote; a subset with no vote scores 0. For k = n
this is the plain majority vote over all samples; for k < n it is computed exactly (no resampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


# ---------------------------------------------------------------------------------------------- validation math
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"need 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_k(correct: Sequence[float]) -> float:
    """Mean correctness: the expected accuracy of one sample (the same for every k)."""
    values = np.asarray(correct, dtype=np.float64)
    return float(values.mean()) if values.size else math.nan


def answer_of(pred: Any) -> str | None:
    if pred is None or (isinstance(pred, float) and math.isnan(pred)):
        return None
    text = str(pred).strip()
    return text or None


def _times(poly: np.ndarray, coef: Sequence[float]) -> np.ndarray:
    """Multiply a polynomial in z (axis 0, truncated at its length) by ``sum_j coef[j] z^j``."""
    out = np.zeros_like(poly)
    rows = poly.shape[0]
    for j, c in enumerate(coef):
        if j >= rows:
            break
        if c:
            out[j:] += c * poly[: rows - j]
    return out


def _tie_shift(poly: np.ndarray, x: int) -> np.ndarray:
    """Multiply by ``z^x y`` (axis 1 counts the tied classes)."""
    out = np.zeros_like(poly)
    rows = poly.shape[0]
    if x < rows:
        out[x:, 1:] = poly[: rows - x, :-1]
    return out


def maj_at_k(preds: Sequence[Any], correct: Sequence[float], k: int) -> float:
    """Expected majority-vote correctness over all subsets of k of the n samples (see the module docstring).

    For each possible top vote count x, a generating function in z (samples chosen) and y (classes tied at x)
    runs over the answers that can reach x: ``P *= f_b(z) + y C(m_b, x) z^x`` with ``f_b = sum_{j<x} C(m_b, j)
    z^j``, and ``Q`` carries the summed score of the tied classes. Everything else contributes ``(1 + z)^rest``.
    maj@k = sum_x sum_t [z^k y^t] Q / t / C(n, k).
    """
    n = len(preds)
    if len(correct) != n:
        raise ValueError(f"preds and correct differ in length: {n} vs {len(correct)}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    votes: dict[str, list[float]] = {}
    for pred, ok in zip(preds, correct, strict=True):
        answer = answer_of(pred)
        if answer is not None:
            votes.setdefault(answer, []).append(float(ok))
    if not votes:
        return 0.0
    counts = np.array([len(v) for v in votes.values()])
    scores = np.array([np.mean(v) for v in votes.values()])
    if k == n:
        return float(scores[counts == counts.max()].mean())
    total = 0.0
    for x in range(1, min(k, int(counts.max())) + 1):
        contenders = counts >= x
        rest = n - int(counts[contenders].sum())
        width = int(contenders.sum()) + 1
        p = np.zeros((k + 1, width))
        p[: min(rest, k) + 1, 0] = [math.comb(rest, j) for j in range(min(rest, k) + 1)]
        q = np.zeros_like(p)
        for m, s in zip(counts[contenders], scores[contenders], strict=True):
            below = [math.comb(int(m), j) for j in range(x)]
            tie = math.comb(int(m), x) * _tie_shift(p, x)
            p, q = _times(p, below) + tie, _times(q, below) + math.comb(int(m), x) * _tie_shift(q, x) + s * tie
        total += float((q[k, 1:] / np.arange(1, width)).sum())
    return total / math.comb(n, k)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [2**i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    return sorted(set(ks) | ({n} if n >= 1 else set()))
