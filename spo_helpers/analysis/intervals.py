"""Confidence intervals: bootstrap intervals over problems, and t intervals over a handful of seeds.

A benchmark score is a mean over its problems of a per-problem statistic ``s_i`` (avg@n, pass@k, maj@k).
With few problems (AIME: 30 a year) the uncertainty is dominated by *which* problems were drawn, so the
interval resamples problems:

    percentile bootstrap:  draw B resamples of the n problems with replacement, mean each,
                           CI = [q_(α/2), q_(1-α/2)] of the B means.

Several seeds of one method: each resample draws problems and, independently, seeds (a two-level
bootstrap), so the interval covers both sources of variation. A paired comparison of two methods on the
same problems resamples problems once and takes the difference of the two means in every resample, which
removes the between-problem variance both methods share:

    Δ_b = mean_{i in S_b} (s^A_i - s^B_i),   CI = percentiles of Δ_b.

Every draw uses an explicit seed, so an interval is reproducible.

**Few seeds.** A percentile bootstrap over 3-5 training seeds does not hold its level: resampling 3 values has
only 10 distinct means, and the interval covers the truth about 78% of the time at a stated 95%
(``tests/analysis/test_intervals.py`` measures it). Seed-level comparisons use Student-t intervals instead,
exact for normal per-seed outcomes:

    mean:                    x̄ ± t_{n-1} s/√n                                    (``t_mean``)
    paired difference:       d̄ ± t_{n-1} s_d/√n,  d_i = a_i - b_i (seed i of both) (``paired_t_difference``)
    unpaired difference:     Welch: x̄ - ȳ ± t_ν sqrt(s_x²/n_x + s_y²/n_y),
                             ν by Welch-Satterthwaite                            (``welch_difference``)
    ratio of means x̄ / ȳ:   Fieller: the θ with (x̄ - θȳ)² ≤ t² Var(x̄ - θȳ), with Var from the paired
                             covariance (``paired=True``) or from both samples apart (Welch's ν at θ̂);
                             unbounded when ȳ is not clearly away from 0   (``fieller_ratio``)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its ``level`` confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}value": self.estimate, f"{prefix}low": self.low, f"{prefix}high": self.high}

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def bootstrap_mean(
    scores: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0
) -> Interval:
    """Mean over problems with a percentile-bootstrap interval.

    ``scores`` is ``(problems,)`` for one run, or ``(seeds, problems)`` for several runs of one method on the same
    problems (then seeds and problems are resampled independently, and the estimate is the grand mean).
    """
    _check(level, resamples)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] == 0 or values.shape[0] == 0:
        raise ValueError(f"scores must be (problems,) or (seeds, problems) and non-empty, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinity")
    means = resampled_means(values, resamples, np.random.default_rng(seed))
    return Interval(float(values.mean()), *_percentiles(means, level), level)


def resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(resamples,)`` bootstrap means of a ``(seeds, problems)`` array (seeds and problems drawn independently).

    The building block of ``bootstrap_mean`` and of stratified intervals (an average over benchmarks resamples
    each benchmark's problems on its own and averages the resampled means).
    """
    seeds, problems = values.shape
    rows = rng.integers(0, seeds, size=(resamples, seeds))
    cols = rng.integers(0, problems, size=(resamples, problems))
    return values[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))


def interval_of(estimate: float, means: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """An ``Interval`` from a point estimate and its bootstrap replicates (non-finite replicates dropped)."""
    finite = np.asarray(means, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"), level)
    return Interval(float(estimate), *_percentiles(finite, level), level)


def paired_difference(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """``mean(A) - mean(B)`` on the same problems, with a paired bootstrap interval over problems.

    Each input is ``(problems,)`` or ``(seeds, problems)`` (seeds averaged per problem first; the two methods
    may have different numbers of seeds). Problems must be aligned: column i is the same problem in both.
    """
    _check(level, resamples)
    a = np.atleast_2d(np.asarray(scores_a, dtype=np.float64)).mean(axis=0)
    b = np.atleast_2d(np.asarray(scores_b, dtype=np.float64)).mean(axis=0)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"the methods must be scored on the same problems, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    return Interval(float(diff.mean()), *_percentiles(diff[idx].mean(axis=1), level), level)


def ratio_interval(
    numerators: np.ndarray,
    denominators: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """``mean(numerators) / mean(denominators)`` over seeds, resampling the seeds of each side independently.

    For ratios of per-seed outcomes of two methods (samples to a target, accuracy at equal samples).
    """
    _check(level, resamples)
    num = np.asarray(numerators, dtype=np.float64).ravel()
    den = np.asarray(denominators, dtype=np.float64).ravel()
    if num.size == 0 or den.size == 0:
        raise ValueError("both sides need at least one value")
    rng = np.random.default_rng(seed)
    num_means = num[rng.integers(0, num.size, size=(resamples, num.size))].mean(axis=1)
    den_means = den[rng.integers(0, den.size, size=(resamples, den.size))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num_means / den_means
    ratios = ratios[np.isfinite(ratios)]
    estimate = float(num.mean() / den.mean()) if den.mean() != 0 else float("nan")
    if ratios.size == 0:
        return Interval(estimate, float("nan"), float("nan"), level)
    return Interval(estimate, *_percentiles(ratios, level), level)


# ---------------------------------------------------------------------------------------------- few seeds
def t_quantile(level: float, df: float) -> float:
    """The two-sided Student-t quantile: ``P(|T_df| <= q) = level``."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def _seed_values(values, what: str, minimum: int = 2) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).ravel()
    if out.size < minimum:
        raise ValueError(f"{what}: a t interval needs at least {minimum} seeds, got {out.size}")
    if not np.isfinite(out).all():
        raise ValueError(f"{what}: values contain NaN or infinity")
    return out


def t_mean(values, *, level: float = DEFAULT_LEVEL) -> Interval:
    """``x̄ ± t_{n-1} s/√n`` over per-seed values."""
    _check(level, 1)
    x = _seed_values(values, "t_mean")
    half = t_quantile(level, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half), level)


def paired_t_difference(a, b, *, level: float = DEFAULT_LEVEL) -> Interval:
    """``mean(a - b)`` with a t interval over seeds, ``a[i]`` and ``b[i]`` from the same seed."""
    x, y = _seed_values(a, "paired_t_difference"), _seed_values(b, "paired_t_difference")
    if x.shape != y.shape:
        raise ValueError(f"paired seeds need as many values on each side, got {x.size} and {y.size}")
    return t_mean(x - y, level=level)


def welch_difference(a, b, *, level: float = DEFAULT_LEVEL) -> Interval:
    """``mean(a) - mean(b)`` of independent seeds, Welch's t interval."""
    _check(level, 1)
    x, y = _seed_values(a, "welch_difference"), _seed_values(b, "welch_difference")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    estimate = float(x.mean() - y.mean())
    if vx + vy == 0:
        return Interval(estimate, estimate, estimate, level)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = t_quantile(level, df) * np.sqrt(vx + vy)
    return Interval(estimate, estimate - half, estimate + half, level)


def fieller_ratio(numerators, denominators, *, paired: bool, level: float = DEFAULT_LEVEL) -> Interval:
    """``mean(numerators) / mean(denominators)`` over seeds with Fieller's interval (see the module doc).

    ``paired``: value i of both sides comes from seed i (their covariance counts); else the two sides are
    independent samples. Bounds are infinite when the denominator's mean is not clearly away from zero.
    """
    _check(level, 1)
    x, y = _seed_values(numerators, "fieller_ratio"), _seed_values(denominators, "fieller_ratio")
    if paired and x.shape != y.shape:
        raise ValueError(f"paired seeds need as many values on each side, got {x.size} and {y.size}")
    mx, my = float(x.mean()), float(y.mean())
    estimate = mx / my if my != 0 else float("nan")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if paired:
        cxy = float(np.cov(x, y, ddof=1)[0, 1]) / x.size
        df = x.size - 1
    else:
        cxy = 0.0
        theta = estimate if np.isfinite(estimate) else 0.0
        num = (vx + theta**2 * vy) ** 2
        den = vx**2 / (x.size - 1) + theta**4 * vy**2 / (y.size - 1)
        df = num / den if den > 0 else float(x.size + y.size - 2)
    t2 = t_quantile(level, df) ** 2
    # (my² - t² vy) θ² - 2 (mx my - t² cxy) θ + (mx² - t² vx) <= 0
    qa, qb, qc = my**2 - t2 * vy, mx * my - t2 * cxy, mx**2 - t2 * vx
    disc = qb**2 - qa * qc
    if qa <= 0 or disc < 0:
        return Interval(estimate, float("-inf"), float("inf"), level)
    root = np.sqrt(disc)
    return Interval(estimate, float((qb - root) / qa), float((qb + root) / qa), level)
