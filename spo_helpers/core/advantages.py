"""Sequence-level advantages for SPO and GRPO, plus the zero-advantage diagnostic.

All functions take numpy arrays or torch tensors and return the same kind (same
dtype and device for torch); the arithmetic runs in float64 numpy.

SPO (one response per prompt, persistent baseline b = p̂ before the update):

    A_i = (r_i - b_i - mean_j(r_j - b_j)) / (std_j(r_j - b_j) + eps)     (unbiased std)

GRPO (verl's ``compute_grpo_outcome_advantage``), per group g of size n_g:

    A_i = (r_i - mean_g) / (std_g + eps)       (n_g >= 2, unbiased std)
    A_i = r_i / (1 + eps)                      (n_g == 1: verl uses mean 0, std 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if _is_torch(x):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per sample), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} contain NaN or infinity at positions {np.flatnonzero(~np.isfinite(arr))[:5].tolist()}"
        )
    return arr


def _like(result: np.ndarray, template: Any) -> Any:
    """Return ``result`` as the same kind, dtype and device as ``template``."""
    if _is_torch(template):
        import torch

        dtype = template.dtype if template.is_floating_point() else torch.float32
        return torch.as_tensor(result, dtype=dtype, device=template.device)
    dtype = template.dtype if isinstance(template, np.ndarray) and template.dtype.kind == "f" else np.float64
    return result.astype(dtype, copy=False)


def _group_codes(group_ids: Any, size: int) -> np.ndarray:
    ids = group_ids.detach().cpu().numpy() if _is_torch(group_ids) else np.asarray(group_ids)
    if ids.shape != (size,):
        raise ValueError(f"group_ids has shape {ids.shape}, expected ({size},)")
    return np.unique(ids, return_inverse=True)[1].reshape(size)


def spo_advantages(rewards, baselines, eps: float = 1e-8):
    """``(r - b - mean(r - b)) / (std_unbiased(r - b) + eps)`` over the whole batch.

    A batch of one sample has no spread: its advantage is 0 (the official code would
    divide by a NaN standard deviation).
    """
    r = _to_numpy(rewards, "rewards")
    b = _to_numpy(baselines, "baselines")
    if r.shape != b.shape:
        raise ValueError(f"rewards {r.shape} and baselines {b.shape} differ in shape")
    if r.size < 2:
        return _like(np.zeros_like(r), rewards)
    centred = (r - b) - (r - b).mean()
    return _like(centred / (centred.std(ddof=1) + eps), rewards)


def grpo_advantages(rewards, group_ids, eps: float = 1e-6, norm_by_std: bool = True):
    """Group-relative advantages, equal to verl's ``compute_grpo_outcome_advantage`` per sample."""
    r = _to_numpy(rewards, "rewards")
    codes = _group_codes(group_ids, r.size)
    count = np.bincount(codes, minlength=codes.max(initial=-1) + 1).astype(np.float64)
    mean = np.bincount(codes, weights=r) / np.maximum(count, 1)
    sq = np.bincount(codes, weights=(r - mean[codes]) ** 2)
    std = np.sqrt(sq / np.maximum(count - 1, 1))
    mean = np.where(count > 1, mean, 0.0)
    std = np.where(count > 1, std, 1.0)
    centred = r - mean[codes]
    return _like(centred / (std[codes] + eps) if norm_by_std else centred, rewards)


def zero_advantage_fraction(rewards, group_ids) -> float:
    """Share of samples in groups of size >= 2 whose rewards are all equal.

    Such groups get advantage 0 under GRPO and contribute no gradient. Singleton
    groups have no group baseline and are not counted as zero-advantage.
    """
    r = _to_numpy(rewards, "rewards")
    if r.size == 0:
        return float("nan")
    codes = _group_codes(group_ids, r.size)
    count = np.bincount(codes)
    lo = np.full(count.size, np.inf)
    hi = np.full(count.size, -np.inf)
    np.minimum.at(lo, codes, r)
    np.maximum.at(hi, codes, r)
    flat_group = (count >= 2) & (lo == hi)
    return float(flat_group[codes].mean())


def zero_fraction(advantages, atol: float = 1e-6) -> float:
    """Share of samples whose advantage is (numerically) zero."""
    a = _to_numpy(advantages, "advantages")
    return float((np.abs(a) <= atol).mean()) if a.size else float("nan")


def group_ids_for_repeats(num_prompts: int, repeats: int) -> np.ndarray:
    """Group ids ``[0]*n + [1]*n + ...`` for ``repeats`` interleaved responses per prompt."""
    return np.repeat(np.arange(num_prompts), repeats)


__all__ = [
    "group_ids_for_repeats",
    "grpo_advantages",
    "spo_advantages",
    "zero_advantage_fraction",
    "zero_fraction",
]
