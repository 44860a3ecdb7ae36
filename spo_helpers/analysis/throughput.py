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

import bisect
import heapq
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from spo_helpers.core.latency import LATENCY_DISTRIBUTIONS, draw_latencies

POLICIES = ("grpo", "grpo_async", "spo")
GRPO_POLICIES = ("grpo", "grpo_async")
DISTRIBUTIONS = LATENCY_DISTRIBUTIONS
TAIL_FIELDS = {"lognormal": "sigma", "pareto": "pareto_shape"}


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
    return draw_latencies(
        config.dist, size, rng, mu=config.mu, sigma=config.sigma, pareto_shape=config.pareto_shape, scale=config.scale
    )


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
