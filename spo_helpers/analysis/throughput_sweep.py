"""Sweeps of the throughput simulation: where the SPO/GRPO ratio lands over batch, group size and tail weight."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from spo_helpers.analysis.paper import PAPER_RATIO
from spo_helpers.analysis.throughput import GRPO_POLICIES, TAIL_FIELDS, SimConfig, simulate


# ---------------------------------------------------------------------------------------------- sweeps
def sweep(
    base: SimConfig | None = None,
    *,
    group_sizes: Sequence[int] = (4, 8, 16),
    batch_sizes: Sequence[int] = (256, 1024),
    tails: Sequence[float] | None = (0.25, 0.5, 1.0, 1.5),
    slots: Sequence[int | None] = (None,),
    grpo_policy: str = "grpo",
    overprovisions: Sequence[float] = (0.0,),
) -> pd.DataFrame:
    """SPO/GRPO throughput ratio over group sizes x batch sizes x tail weights x slot counts (x overprovision).

    ``tails`` sets ``sigma`` (lognormal) or ``pareto_shape`` (pareto, smaller = heavier); None keeps ``base``'s.
    A slot count of None means ``slots = batch_size`` (one wave per step). ``overprovisions`` applies to
    ``grpo_policy="grpo"`` only. Every other knob comes from ``base``. One tidy row per setting.
    """
    base = base or SimConfig()
    if grpo_policy not in GRPO_POLICIES:
        raise ValueError(f"grpo_policy must be one of {GRPO_POLICIES}, got {grpo_policy!r}")
    if grpo_policy != "grpo" and any(r != 0 for r in overprovisions):
        raise ValueError("overprovisions apply to grpo_policy 'grpo' only")
    field = TAIL_FIELDS.get(base.dist)
    if tails is not None and field is None:
        raise ValueError(f"tails need dist 'lognormal' or 'pareto', got {base.dist!r}; pass tails=None")
    bad = [(b, n) for b in batch_sizes for n in group_sizes if b % n]
    if bad:
        raise ValueError(f"every batch size must be a multiple of every group size; not so for (batch, n) = {bad}")
    tail_values = [getattr(base, field) if field else math.nan] if tails is None else list(tails)
    rows, spo_cache = [], {}
    for tail in tail_values:
        for batch in batch_sizes:
            for s in slots:
                knobs = {"batch_size": int(batch), "slots": int(batch if s is None else s)}
                if field:
                    knobs[field] = float(tail)
                spo_cfg = replace(base, policy="spo", overprovision=0.0, **knobs)
                spo = spo_cache.setdefault((tail, batch, s), simulate(spo_cfg))
                for n, over in itertools.product(group_sizes, overprovisions):
                    grpo_cfg = replace(spo_cfg, policy=grpo_policy, group_size=int(n), overprovision=float(over))
                    grpo = simulate(grpo_cfg)
                    rows.append(
                        {
                            "dist": base.dist,
                            "tail_param": field or "",
                            "tail": float(tail),
                            "group_size": int(n),
                            "batch_size": int(batch),
                            "prompts_per_step": int(batch) // int(n),
                            "slots": knobs["slots"],
                            "update_time": base.update_time,
                            "grpo_policy": grpo_policy,
                            "overprovision": float(over),
                            "grpo_throughput": grpo.throughput,
                            "spo_throughput": spo.throughput,
                            "ratio": spo.throughput / grpo.throughput,
                            "grpo_step_time": float(grpo.step_times.mean()),
                            "spo_step_time": float(spo.step_times.mean()),
                            "grpo_utilisation": grpo.utilisation,
                            "spo_utilisation": spo.utilisation,
                            "spo_staleness_mean": float(spo.staleness.mean()),
                            "spo_staleness_max": int(spo.staleness.max()),
                        }
                    )
    return pd.DataFrame(rows)


def find_settings_for_ratio(
    target: float = PAPER_RATIO, frame: pd.DataFrame | None = None, k: int = 5, **sweep_kwargs
) -> pd.DataFrame:
    """The ``k`` sweep rows whose ratio is nearest ``target`` (by ``|log(ratio / target)|``, column ``distance``).

    ``frame`` is a ``sweep`` result; without it, ``sweep(**sweep_kwargs)`` is run.
    """
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    frame = sweep(**sweep_kwargs) if frame is None else frame
    out = frame.assign(distance=np.abs(np.log(frame["ratio"] / target)))
    return out.sort_values("distance", kind="stable").head(k).reset_index(drop=True)
