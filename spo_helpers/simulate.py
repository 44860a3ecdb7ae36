"""Rollout throughput of GRPO vs SPO when trajectory times are long-tailed (a seeded discrete-event simulation).

``S`` rollout slots (engines / concurrent requests) generate trajectories; a training step needs a batch of
``M`` trainable samples (GRPO: ``B`` prompts x ``n`` responses, ``M = B n``; SPO: ``M`` single responses).

Trajectory time ``T`` (same unit as ``update_time``):

    constant      T = scale
    exponential   T ~ Exp(mean = scale)
    lognormal     T = exp(mu + sigma Z),  Z ~ N(0, 1)             (tail weight: sigma)
    pareto        T = scale (1 + Lomax(shape)), i.e. Pareto(x_m = scale, shape)   (tail weight: 1 / shape;
                  infinite mean for shape <= 1, infinite variance for shape <= 2)

Multi-turn agent (``tool_calls > 0``): ``K ~ Poisson(tool_calls)`` tool calls, each with a latency ``L_j`` drawn
from the distribution above, and ``K + 1`` LLM turns of fixed length ``turn_time``:

    T = (K + 1) turn_time + sum_{j=1..K} L_j

Policies:

- ``grpo`` (standard synchronous verl setting): each step queues ``ceil(B (1 + r))`` groups, ``r =
  overprovision``, FIFO on the slots; generation ends when ``B`` groups are complete (a group is complete when all
  ``n`` responses are) and whatever still runs is aborted. With ``r = 0`` (the default, and what the paper
  compares against) all ``B n`` trajectories must finish: the slowest trajectory of the batch bounds the step, and
  ``n`` does not matter at fixed ``M``. ``r > 0`` is the more favourable over-provisioned variant (first ``B``
  complete groups taken, the rest wasted).
- ``grpo_async``: groups streamed like SPO: every free slot starts the next response of a group from an unbounded
  prompt pool, a step takes the first ``B`` complete groups, unfinished groups run on into later steps. It keeps
  the slots busy, so it pays in staleness (and in dropped groups under ``max_staleness``), not in throughput.
  With ``n = 1`` it is exactly ``spo``.
- ``spo``: every free slot starts a new single response at once; a step takes the first ``M`` trajectories to
  finish; the others run on and join later steps. Staleness of a sample used in step ``k`` is ``k - v``, ``v``
  the number of updates done when it started (0 = on-policy). Samples staler than ``max_staleness`` are dropped.

Trainer: ``synchronous=True`` pauses generation during each update (``update_time``), so wall time =
generation time + ``steps * update_time``. ``synchronous=False`` overlaps them: update ``k`` runs from
``max(ready_k, end_{k-1})`` for ``update_time``, and generation never waits (``grpo`` starts the next batch when
the previous one is ready).

Outputs: throughput = trainable samples / wall time; utilisation = slot-time spent generating up to the last
batch / (S x wall time); useful utilisation counts only trajectories that were trained on.

Where 4.35x falls: with the synchronous barrier, ``S = M`` (one wave per step) and ``update_time = 0``, SPO runs at
about ``S / E[T]`` and GRPO at ``M / E[max of M draws of T]``, so the ratio is about ``E[max_M T] / E[T]``: it grows
with the tail weight and with ``M`` (lognormal: about ``exp(z_M sigma - sigma^2 / 2)``, ``z_M`` ~ 3.2 at
``M = 1024``). Seeds 0-2, 40 steps: ~4.35x at lognormal sigma 0.45-0.5 with ``M = S = 1024`` and sigma 0.55-0.6
with ``M = S = 256``; Pareto shape ~4 (1024) or ~3.3 (256). Heavier tails give far more (sigma 1: 10-19x).
Update time, several waves per step (``M > S``) and over-provisioning shrink the ratio; ``S > M`` grows it (GRPO
cannot use the extra slots, SPO can, at the price of staleness). So 4.35x is one point of a family, not a constant;
``find_settings_for_ratio`` lists the nearest settings of a sweep. The paper's own simulation parameters are not
reproduced here.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

POLICIES = ("grpo", "grpo_async", "spo")
GRPO_POLICIES = ("grpo", "grpo_async")
DISTRIBUTIONS = ("lognormal", "pareto", "exponential", "constant")
TAIL_FIELDS = {"lognormal": "sigma", "pareto": "pareto_shape"}
PAPER_RATIO = 4.35


@dataclass(frozen=True)
class SimConfig:
    """One simulated run. See the module docstring for the policies and time models.

    slots: concurrent trajectories S. batch_size: trainable samples M per step (a multiple of ``group_size`` for
    GRPO; SPO ignores ``group_size``). steps: training steps. overprovision: extra fraction of groups ``grpo``
    launches per step. max_staleness: drop streamed samples staler than this (None keeps all).
    """

    policy: str = "spo"
    slots: int = 256
    batch_size: int = 256
    group_size: int = 8
    steps: int = 40
    dist: str = "lognormal"
    mu: float = 0.0
    sigma: float = 1.0
    pareto_shape: float = 2.0
    scale: float = 1.0
    tool_calls: float = 0.0
    turn_time: float = 1.0
    update_time: float = 0.0
    synchronous: bool = True
    overprovision: float = 0.0
    max_staleness: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {self.dist!r}")
        for name in ("slots", "batch_size", "group_size", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.policy != "spo" and self.batch_size % self.group_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of group_size ({self.group_size}) for GRPO: "
                "the batch is batch_size / group_size prompts x group_size responses"
            )
        for name in ("mu", "sigma", "pareto_shape", "scale", "tool_calls", "turn_time", "update_time", "overprovision"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.pareto_shape <= 0:
            raise ValueError(f"pareto_shape must be > 0, got {self.pareto_shape}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        for name in ("tool_calls", "turn_time", "update_time", "overprovision"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.overprovision > 0 and self.policy != "grpo":
            raise ValueError(f"overprovision applies to policy 'grpo' only, got policy {self.policy!r}")
        if self.max_staleness is not None and (isinstance(self.max_staleness, bool) or self.max_staleness < 0):
            raise ValueError(f"max_staleness must be None or an integer >= 0, got {self.max_staleness!r}")

    @property
    def responses_per_prompt(self) -> int:
        """``n`` for GRPO policies, 1 for SPO."""
        return 1 if self.policy == "spo" else self.group_size

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.responses_per_prompt

    @property
    def tail(self) -> float:
        """The tail parameter swept for this distribution (sigma, pareto_shape), NaN for the others."""
        field = TAIL_FIELDS.get(self.dist)
        return float(getattr(self, field)) if field else math.nan

    def describe(self) -> str:
        times = {
            "lognormal": f"lognormal(mu={self.mu:g}, sigma={self.sigma:g})",
            "pareto": f"pareto(shape={self.pareto_shape:g}, scale={self.scale:g})",
            "exponential": f"exponential(mean={self.scale:g})",
            "constant": f"constant({self.scale:g})",
        }[self.dist]
        if self.tool_calls > 0:
            times = f"{self.tool_calls:g} tool calls ~ Poisson, latency {times}, turn {self.turn_time:g}"
        trainer = "sync" if self.synchronous else "async"
        return (
            f"{times}; {self.slots} slots; {self.batch_size} samples/step; {self.steps} steps; "
            f"{trainer} trainer, update {self.update_time:g}; seed {self.seed}"
        )


# ---------------------------------------------------------------------------------------------- trajectory times
def _base_times(config: SimConfig, size: int, rng: np.random.Generator) -> np.ndarray:
    if config.dist == "constant":
        return np.full(size, config.scale)
    if config.dist == "exponential":
        return rng.exponential(config.scale, size)
    if config.dist == "lognormal":
        return rng.lognormal(config.mu, config.sigma, size)
    return config.scale * (1.0 + rng.pareto(config.pareto_shape, size))


def sample_times(config: SimConfig, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` trajectory times: ``T ~ dist``, or ``(K+1) turn_time + sum_K L_j`` with tool calls."""
    if config.tool_calls <= 0:
        return _base_times(config, size, rng)
    calls = rng.poisson(config.tool_calls, size)
    latency = _base_times(config, int(calls.sum()), rng)
    tool = np.bincount(np.repeat(np.arange(size), calls), weights=latency, minlength=size)
    return (calls + 1) * config.turn_time + tool


class _TimeStream:
    """Seeded stream of trajectory times drawn in blocks (same seed, same sequence for every policy)."""

    def __init__(self, config: SimConfig, block: int = 4096) -> None:
        self._config = config
        self._rng = np.random.default_rng(config.seed)
        self._block = block
        self._buf = np.empty(0)
        self._pos = 0

    def take(self, size: int) -> np.ndarray:
        parts, need = [], size
        while need:
            if self._pos == self._buf.size:
                self._buf = sample_times(self._config, max(self._block, need), self._rng)
                self._pos = 0
            got = self._buf[self._pos : self._pos + need]
            self._pos += got.size
            need -= got.size
            parts.append(got)
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class SimResult:
    """What one run produced. Times are in the unit of the trajectory times.

    ready: generation-clock time at which each step's batch was complete. step_ends: wall time at which each
    update finished. staleness: one entry per trained sample. Counts: launched = finished + aborted + in_flight;
    finished = used + dropped + finished_unused.
    """

    config: SimConfig
    wall_time: float
    ready: np.ndarray
    step_ends: np.ndarray
    staleness: np.ndarray
    busy_time: float
    useful_time: float
    launched: int
    finished: int
    used: int
    dropped: int
    aborted: int
    in_flight: int

    @property
    def finished_unused(self) -> int:
        return self.finished - self.used - self.dropped

    @property
    def throughput(self) -> float:
        """Trainable samples per unit time."""
        return self.used / self.wall_time

    @property
    def utilisation(self) -> float:
        return self.busy_time / (self.config.slots * self.wall_time)

    @property
    def useful_utilisation(self) -> float:
        return self.useful_time / (self.config.slots * self.wall_time)

    @property
    def step_times(self) -> np.ndarray:
        """Wall time of each step (generation + update, or the gap between update ends when asynchronous)."""
        return np.diff(self.step_ends, prepend=0.0)

    def summary(self) -> dict[str, float | int | str]:
        st, stale = self.step_times, self.staleness
        return {
            "policy": self.config.policy,
            "group_size": self.config.responses_per_prompt,
            "wall_time": self.wall_time,
            "samples": self.used,
            "throughput": self.throughput,
            "utilisation": self.utilisation,
            "useful_utilisation": self.useful_utilisation,
            "step_time_mean": float(st.mean()),
            "step_time_p50": float(np.percentile(st, 50)),
            "step_time_p95": float(np.percentile(st, 95)),
            "step_time_max": float(st.max()),
            "staleness_mean": float(stale.mean()) if stale.size else 0.0,
            "staleness_max": int(stale.max()) if stale.size else 0,
            "launched": self.launched,
            "dropped": self.dropped,
            "aborted": self.aborted,
        }

    def steps_frame(self) -> pd.DataFrame:
        """One row per step: policy, step, ready (generation clock), end (wall clock), step_time."""
        return pd.DataFrame(
            {
                "policy": self.config.policy,
                "step": np.arange(self.ready.size),
                "ready": self.ready,
                "end": self.step_ends,
                "step_time": self.step_times,
            }
        )

    def staleness_frame(self) -> pd.DataFrame:
        """Distribution of staleness over trained samples: staleness, count, fraction."""
        values, counts = np.unique(self.staleness, return_counts=True)
        total = max(int(counts.sum()), 1)
        return pd.DataFrame(
            {"policy": self.config.policy, "staleness": values, "count": counts, "fraction": counts / total}
        )


# ---------------------------------------------------------------------------------------------- simulation
class _Trainer:
    """Step bookkeeping shared by the policies: policy versions and update times."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ready: list[float] = []
        self.update_ends: list[float] = []

    def version_at(self, t: float) -> int:
        """Updates finished when a trajectory starts at generation time ``t``."""
        if self.config.synchronous:
            return len(self.ready)  # generation is paused while updating: every closed step is applied
        return bisect.bisect_right(self.update_ends, t)

    def close(self, t: float) -> None:
        self.ready.append(t)
        if not self.config.synchronous:
            start = max(t, self.update_ends[-1]) if self.update_ends else t
            self.update_ends.append(start + self.config.update_time)

    def step_ends(self) -> np.ndarray:
        ready = np.asarray(self.ready)
        if self.config.synchronous:
            return ready + self.config.update_time * np.arange(1, ready.size + 1)
        return np.asarray(self.update_ends)


def _list_schedule(durations: np.ndarray, slots: int) -> np.ndarray:
    """Start times of jobs run FIFO on ``slots`` identical slots, all free at time 0."""
    starts = np.zeros(durations.size)
    if durations.size <= slots:
        return starts
    free = durations[:slots].tolist()
    heapq.heapify(free)
    for j in range(slots, durations.size):
        s = heapq.heappop(free)
        starts[j] = s
        heapq.heappush(free, s + durations[j])
    return starts


def _simulate_barrier(config: SimConfig, times: _TimeStream) -> SimResult:
    n, groups = config.group_size, config.prompts_per_step
    launched_groups = math.ceil(groups * (1.0 + config.overprovision) - 1e-9)
    trainer = _Trainer(config)
    stale: list[np.ndarray] = []
    t0 = busy = useful = 0.0
    finished = aborted = used = 0
    for k in range(config.steps):
        dur = times.take(launched_groups * n)
        start = _list_schedule(dur, config.slots)
        finish = start + dur
        group_done = finish.reshape(launched_groups, n).max(axis=1)
        taken = np.argsort(group_done, kind="stable")[:groups]
        length = float(group_done[taken[-1]])
        rows = (taken[:, None] * n + np.arange(n)).ravel()
        versions = np.array([trainer.version_at(t0 + s) for s in start[rows]])
        stale.append(k - versions)
        busy += float(np.clip(np.minimum(finish, length) - start, 0.0, None).sum())
        useful += float(dur[rows].sum())
        done = int((finish <= length).sum())
        finished += done
        aborted += dur.size - done
        used += rows.size
        t0 += length
        trainer.close(t0)
    return _result(config, trainer, stale, busy, useful, launched_groups * n * config.steps, finished, used, 0, aborted)


def _simulate_stream(config: SimConfig, times: _TimeStream) -> SimResult:
    n, groups, slots = config.responses_per_prompt, config.prompts_per_step, config.slots
    trainer = _Trainer(config)
    starts: list[float] = []
    durations: list[float] = []
    versions: list[int] = []
    done: list[int] = []  # finished responses per group
    heap: list[tuple[float, int]] = []
    buffer: list[float] = []

    def launch(t: float) -> None:
        tid = len(starts)
        if tid % n == 0:
            done.append(0)
        if not buffer:
            buffer.extend(times.take(max(slots, 1024))[::-1].tolist())
        d = buffer.pop()
        starts.append(t)
        durations.append(d)
        versions.append(trainer.version_at(t))
        heapq.heappush(heap, (t + d, tid))

    for _ in range(slots):
        launch(0.0)
    stale: list[np.ndarray] = []
    step_stale: list[np.ndarray] = []
    ready_groups = dropped = finished = 0
    useful = 0.0
    while len(trainer.ready) < config.steps:
        # Handle every trajectory finishing at time t before restarting the freed slots, so that a slot freed
        # at the instant a step closes starts with the updated policy (matters for ties, e.g. constant times).
        t, freed = heap[0][0], 0
        while heap and heap[0][0] == t and len(trainer.ready) < config.steps:
            tid = heapq.heappop(heap)[1]
            finished += 1
            freed += 1
            g = tid // n
            done[g] += 1
            if done[g] < n:
                continue
            members = slice(g * n, g * n + n)
            group_stale = len(trainer.ready) - np.asarray(versions[members])
            if config.max_staleness is not None and group_stale.max() > config.max_staleness:
                dropped += n
                continue
            step_stale.append(group_stale)
            useful += sum(durations[members])
            ready_groups += 1
            if ready_groups == groups:
                stale.append(np.concatenate(step_stale))
                step_stale, ready_groups = [], 0
                trainer.close(t)
        if len(trainer.ready) < config.steps:
            for _ in range(freed):
                launch(t)
    end = trainer.ready[-1]
    st, du = np.asarray(starts), np.asarray(durations)
    busy = float(np.clip(np.minimum(st + du, end) - st, 0.0, None).sum())
    used = config.steps * config.batch_size
    return _result(config, trainer, stale, busy, useful, len(starts), finished, used, dropped, 0)


def _result(config, trainer, stale, busy, useful, launched, finished, used, dropped, aborted) -> SimResult:
    step_ends = trainer.step_ends()
    return SimResult(
        config=config,
        wall_time=float(step_ends[-1]),
        ready=np.asarray(trainer.ready),
        step_ends=step_ends,
        staleness=np.concatenate(stale).astype(np.int64),
        busy_time=busy,
        useful_time=useful,
        launched=launched,
        finished=finished,
        used=used,
        dropped=dropped,
        aborted=aborted,
        in_flight=launched - finished - aborted,
    )


def simulate(config: SimConfig) -> SimResult:
    """Run one seeded simulation of ``config.steps`` training steps under ``config.policy``."""
    times = _TimeStream(config)
    if config.policy == "grpo":
        return _simulate_barrier(config, times)
    return _simulate_stream(config, times)


def paired_configs(base: SimConfig, grpo_policy: str = "grpo", **changes) -> tuple[SimConfig, SimConfig]:
    """``(grpo, spo)`` configs that share every knob of ``base`` (and ``changes``) except the policy."""
    if grpo_policy not in GRPO_POLICIES:
        raise ValueError(f"grpo_policy must be one of {GRPO_POLICIES}, got {grpo_policy!r}")
    grpo = replace(base, policy=grpo_policy, **changes)
    return grpo, replace(grpo, policy="spo", overprovision=0.0)


def compare(config_grpo: SimConfig, config_spo: SimConfig) -> dict:
    """Simulate both; ``ratio`` = SPO throughput / GRPO throughput (trainable samples per unit time).

    Returns ``{"ratio", "wall_time_ratio", "grpo": SimResult, "spo": SimResult, "frame": one row per policy}``.
    """
    if config_grpo.policy not in GRPO_POLICIES:
        raise ValueError(f"config_grpo.policy must be one of {GRPO_POLICIES}, got {config_grpo.policy!r}")
    if config_spo.policy != "spo":
        raise ValueError(f"config_spo.policy must be 'spo', got {config_spo.policy!r}")
    grpo, spo = simulate(config_grpo), simulate(config_spo)
    return {
        "ratio": spo.throughput / grpo.throughput,
        "wall_time_ratio": (grpo.wall_time / grpo.used) / (spo.wall_time / spo.used),
        "grpo": grpo,
        "spo": spo,
        "frame": pd.DataFrame([grpo.summary(), spo.summary()]),
    }


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


# ---------------------------------------------------------------------------------------------- command line
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p = parser.add_argument
    p("--grpo-policy", choices=GRPO_POLICIES, default="grpo", help="GRPO variant to compare (default: %(default)s)")
    p("--slots", type=int, default=d.slots, help="concurrent trajectories (default: %(default)s)")
    p("--batch-size", type=int, default=d.batch_size, help="trainable samples per step (default: %(default)s)")
    p("--group-size", type=int, default=d.group_size, help="GRPO responses per prompt (default: %(default)s)")
    p("--steps", type=int, default=d.steps, help="training steps (default: %(default)s)")
    p("--dist", choices=DISTRIBUTIONS, default=d.dist, help="trajectory time distribution (default: %(default)s)")
    p("--mu", type=float, default=d.mu, help="lognormal log-mean (default: %(default)s)")
    p("--sigma", type=float, default=d.sigma, help="lognormal log-std, the tail weight (default: %(default)s)")
    p("--pareto-shape", type=float, default=d.pareto_shape, help="Pareto shape, smaller = heavier (default: 2)")
    p("--scale", type=float, default=d.scale, help="Pareto x_m, exponential mean, constant value (default: 1)")
    p("--tool-calls", type=float, default=d.tool_calls, help="mean Poisson tool calls per trajectory (default: 0)")
    p("--turn-time", type=float, default=d.turn_time, help="LLM time per turn with tool calls (default: 1)")
    p("--update-time", type=float, default=d.update_time, help="trainer time per step (default: 0)")
    p("--async-trainer", action="store_true", help="overlap updates with generation instead of pausing it")
    p("--overprovision", type=float, default=0.0, help="extra fraction of groups per 'grpo' step (default: 0)")
    p("--max-staleness", type=int, default=None, help="drop streamed samples staler than this many steps")
    p("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    p("--sweep", action="store_true", help="print SPO/GRPO ratios over group sizes, batch sizes and tails")
    p("--group-sizes", type=_ints, default=[4, 8, 16], help="sweep: comma-separated (default: 4,8,16)")
    p("--batch-sizes", type=_ints, default=[256, 1024], help="sweep: comma-separated (default: 256,1024)")
    p("--tails", type=_floats, default=None, help="sweep: sigma or Pareto shapes (default: by --dist)")
    p("--sweep-slots", type=_ints, default=None, help="sweep: slot counts (default: slots = batch size)")
    p("--target", type=float, default=PAPER_RATIO, help="sweep: ratio to look for (default: %(default)s)")
    p("--output", metavar="CSV", default=None, help="write the sweep table, or the per-step table, as CSV")


def _config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        policy=args.grpo_policy,
        slots=args.slots,
        batch_size=args.batch_size,
        group_size=args.group_size,
        steps=args.steps,
        dist=args.dist,
        mu=args.mu,
        sigma=args.sigma,
        pareto_shape=args.pareto_shape,
        scale=args.scale,
        tool_calls=args.tool_calls,
        turn_time=args.turn_time,
        update_time=args.update_time,
        synchronous=not args.async_trainer,
        overprovision=args.overprovision,
        max_staleness=args.max_staleness,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from spo_helpers.atomic import atomic_write_text
    from spo_helpers.errors import UserError

    try:
        base = _config_from_args(args)
        if args.sweep:
            tails = args.tails
            if tails is None and base.dist in TAIL_FIELDS:
                tails = [0.25, 0.5, 0.75, 1.0, 1.5] if base.dist == "lognormal" else [3.0, 2.0, 1.5, 1.2]
            frame = sweep(
                base,
                group_sizes=args.group_sizes,
                batch_sizes=args.batch_sizes,
                tails=tails,
                slots=args.sweep_slots or [None],
                grpo_policy=args.grpo_policy,
                overprovisions=[base.overprovision],
            )
            near = find_settings_for_ratio(args.target, frame, k=3)
        else:
            result = compare(*paired_configs(base, args.grpo_policy))
    except ValueError as err:
        raise UserError(str(err)) from None

    pd.set_option("display.width", 120)
    if args.sweep:
        trainer = "sync" if base.synchronous else "async"
        print(
            f"spo simulate --sweep: {base.dist} times, {base.steps} steps, {trainer} trainer, "
            f"update {base.update_time:g}, overprovision {base.overprovision:g}, seed {base.seed}"
        )
        table = frame.pivot_table(
            index=["tail", "slots", "batch_size"], columns="group_size", values="ratio", aggfunc="first"
        )
        table.columns = [f"n={n}" for n in table.columns]
        print(f"SPO/GRPO ({args.grpo_policy}) throughput ratio; tail = {TAIL_FIELDS.get(base.dist, '-')}:")
        print(table.round(2).to_string())
        cols = ["tail", "group_size", "batch_size", "slots", "ratio", "spo_staleness_mean"]
        print(f"nearest to {args.target:g}x:")
        print(near[cols].round(3).to_string(index=False))
        if args.output:
            atomic_write_text(args.output, frame.to_csv(index=False))
            print(f"wrote {args.output} ({len(frame)} rows)")
        return 0

    print(f"spo simulate: {base.describe()}")
    cols = ["policy", "group_size", "wall_time", "throughput", "utilisation", "useful_utilisation"]
    cols += ["step_time_mean", "step_time_p95", "staleness_mean", "staleness_max", "dropped", "aborted"]
    print(result["frame"][cols].round(3).to_string(index=False))
    stale = result["spo"].staleness_frame().head(6)
    shares = ", ".join(f"{int(s)}: {f:.1%}" for s, f in zip(stale["staleness"], stale["fraction"], strict=True))
    print(f"SPO staleness (steps: share of samples): {shares}")
    print(f"SPO/GRPO throughput ratio: {result['ratio']:.2f}x (the paper reports {PAPER_RATIO}x in its simulation)")
    if args.output:
        frame = pd.concat([result["grpo"].steps_frame(), result["spo"].steps_frame()], ignore_index=True)
        atomic_write_text(args.output, frame.to_csv(index=False))
        print(f"wrote {args.output} ({len(frame)} rows)")
    return 0
