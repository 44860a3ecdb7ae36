"""Per-step diagnostics shared by GRPO and SPO runs (pure functions, numpy in, dict out).

- ``kit/zero_adv_frac``: share of samples whose advantage is zero (GRPO: samples in
  groups whose rewards are all equal, which carry no gradient);
- ``kit/adv_var_before_norm``: variance (unbiased) of the centred advantage before
  division by the std: ``r - mean_group(r)`` for GRPO, ``r - p̂`` for SPO;
- ``kit/calibration/*``: the tracker's p̂ against the observed reward on the batch
  (mean p̂, mean reward, their gap, Brier score ``mean((p̂ - r)²)``).
"""

from __future__ import annotations

import numpy as np

from spo_helpers.core.advantages import zero_advantage_fraction, zero_fraction
from spo_helpers.core.metric_names import (
    ADV_VAR_AFTER_NORM,
    ADV_VAR_BEFORE_NORM,
    CALIBRATION_BRIER,
    ZERO_ADV_FRAC,
    ZERO_ADV_FRAC_REALISED,
)


def _variance(x: np.ndarray) -> float:
    return float(np.var(x, ddof=1)) if x.size > 1 else 0.0


def grpo_centred(rewards: np.ndarray, group_ids) -> np.ndarray:
    """``r - mean_group(r)``, with verl's mean 0 for groups of one."""
    codes = np.unique(np.asarray(group_ids), return_inverse=True)[1].ravel()
    count = np.bincount(codes)
    mean = np.bincount(codes, weights=rewards) / count
    mean = np.where(count > 1, mean, 0.0)
    return rewards - mean[codes]


def calibration(p_hat: np.ndarray, rewards: np.ndarray) -> dict[str, float]:
    p = np.asarray(p_hat, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if p.size == 0:
        return {}
    return {
        "kit/calibration/p_hat_mean": float(p.mean()),
        "kit/calibration/reward_mean": float(r.mean()),
        "kit/calibration/gap": float(p.mean() - r.mean()),
        CALIBRATION_BRIER: float(np.mean((p - r) ** 2)),
    }


def grpo_diagnostics(rewards: np.ndarray, group_ids, advantages: np.ndarray) -> dict[str, float]:
    r = np.asarray(rewards, dtype=np.float64)
    return {
        ZERO_ADV_FRAC: zero_advantage_fraction(r, group_ids),
        ZERO_ADV_FRAC_REALISED: zero_fraction(advantages),
        ADV_VAR_BEFORE_NORM: _variance(grpo_centred(r, group_ids)),
        ADV_VAR_AFTER_NORM: _variance(np.asarray(advantages, dtype=np.float64)),
    }


def spo_diagnostics(rewards: np.ndarray, p_hat: np.ndarray, advantages: np.ndarray) -> dict[str, float]:
    r = np.asarray(rewards, dtype=np.float64)
    raw = r - np.asarray(p_hat, dtype=np.float64)
    zero = zero_fraction(advantages)  # no groups: the structural and the realised share coincide
    return {
        ZERO_ADV_FRAC: zero,
        ZERO_ADV_FRAC_REALISED: zero,
        ADV_VAR_BEFORE_NORM: _variance(raw),
        ADV_VAR_AFTER_NORM: _variance(np.asarray(advantages, dtype=np.float64)),
    }


def quantiles(values: np.ndarray, prefix: str, qs=(10, 30, 50, 70, 90)) -> dict[str, float]:
    """``{prefix/p10: ..., ...}``, linear interpolation like ``torch.quantile``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    return {f"{prefix}/p{q}": float(np.percentile(v, q)) for q in qs}
