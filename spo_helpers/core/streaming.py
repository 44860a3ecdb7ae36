"""Which rollout requests to launch and which finished trajectories make each training step.

``StreamScheduler`` is the bookkeeping of a rollout engine driven step by step: pure, deterministic and
clock-free. The engine asks ``launches()`` what to start, reports each finished trajectory with
``finished(request_id)``, closes a step with ``close_step()`` once ``ready()``, runs the update and calls
``finish_update()``. Which prompt a new unit gets is the engine's business (SPO draws one per unit from the
sampler); the scheduler only numbers units and requests.

Units. A unit is ``n = group_size`` responses to one prompt: ``n = 1`` for SPO (a unit is one sample), a GRPO
group otherwise. A unit is complete when all its ``n`` requests have finished. A step trains on
``batch_units`` complete units (SPO: ``M`` samples; GRPO: ``B`` groups of ``n``). Request ids and unit ids
count from 0 in launch order; a unit's requests are launched as consecutive requests (members ``0..n-1``) and
a new unit opens when the previous one has all ``n`` launched. Units of a step are taken in completion order
(the order in which ``finished`` completed them).

Versions and staleness. ``version`` = ``start_version`` + the number of ``finish_update`` calls; every request
records the version at its launch. Step ``k`` (0-based) closes at version ``v_k = start_version + k`` and a unit
used in it has staleness ``v_k - min(version of its requests)`` (a group counts from its oldest member).

Policies:

- ``sync`` (the synchronous loop): at the start of a step ``batch_units`` units (all their requests) are
  launched; the step is ready when all of them are complete; nothing carries over.
- ``overprovision``: a step launches ``ceil(batch_units (1 + overprovision))`` units and is ready as soon as
  ``batch_units`` of them are complete (the first to complete). At ``close_step`` every request of the step still
  running is aborted: its id is in ``StepBatch.aborted``, the engine must cancel it, and a later ``finished``
  for it is an error. Finished requests of unused units (incomplete, or complete beyond the batch) are
  discarded.
- ``stream``: ``slots`` requests run at once; every free slot is handed a new request at once. A step is ready
  when ``batch_units`` complete units wait; it takes the first ``batch_units`` of them, the others wait for the
  next step, and requests still running carry on into later steps. A unit whose staleness would exceed
  ``max_staleness`` (None: no bound) is dropped (counted, reported in the next ``StepBatch.dropped``, never
  trained on): it is checked when it completes and again, while it waits, after each update (staleness only
  grows), so a step never holds one.

``slots`` caps the running requests of ``sync`` and ``overprovision`` too (a step's requests then start first
in, first out as slots free up; the planned requests of ``overprovision`` not yet started at ``close_step`` are
never launched); None launches a whole step at once.

The update phase runs from ``close_step`` to ``finish_update``. With ``pause_during_update=True`` (the default)
the engine is paused: ``launches()`` returns nothing until ``finish_update``, so ``sync`` and ``overprovision``
always have staleness 0. With ``False`` launches go on with the old version: ``sync`` and ``overprovision``
start the next step's requests at ``close_step`` (one-step off-policy: staleness 1) and ``stream`` keeps its
slots busy. ``ready()`` is False during an update: the next step closes after ``finish_update``.

Resuming: a scheduler holds no persistent state. After a restart the engine starts a new one with
``start_version`` = the updates done so far and an empty pipeline (requests that were running are started
again as fresh requests).

``replay`` drives a scheduler with given trajectory durations (a small discrete-event loop). Relation to the
simulation ``spo_helpers.analysis.throughput`` (its ``synchronous`` is ``pause_during_update``):
``sync`` is its ``grpo`` with ``overprovision = 0`` (and, with ``n = 1``, SPO in lock-step), ``overprovision``
is ``grpo`` with ``r > 0``, ``stream`` is ``spo`` (``n = 1``) and ``grpo_async`` (``n > 1``). Differences: the
simulation gives each member of a group its own staleness (here a unit has one, its oldest member's), counts
queued requests that never started as aborted (here only running ones are aborted), and always has
``slots`` (here None means a step's requests all run at once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SCHEDULE_POLICIES = ("sync", "overprovision", "stream")


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class ScheduleConfig:
    """How requests are launched and batched (module docstring).

    batch_units: complete units per step. policy: sync | overprovision | stream. group_size: ``n`` responses per
    unit (1 for SPO). slots: concurrent requests (required for stream, and at least ``group_size`` there; an
    optional cap otherwise). overprovision: extra fraction of units launched per step (policy overprovision).
    max_staleness: drop units staler than this (policy stream; None keeps all). pause_during_update: no launches
    between ``close_step`` and ``finish_update``.
    """

    batch_units: int
    policy: str = "sync"
    group_size: int = 1
    slots: int | None = None
    overprovision: float = 0.0
    max_staleness: int | None = None
    pause_during_update: bool = True

    def __post_init__(self) -> None:
        if self.policy not in SCHEDULE_POLICIES:
            raise ValueError(f"policy must be one of {SCHEDULE_POLICIES}, got {self.policy!r}")
        for name in ("batch_units", "group_size"):
            if not _is_int(getattr(self, name), 1):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.slots is not None and not _is_int(self.slots, 1):
            raise ValueError(f"slots must be None or an integer >= 1, got {self.slots!r}")
        if self.policy == "stream" and (self.slots is None or self.slots < self.group_size):
            raise ValueError(
                f"policy 'stream' needs slots >= group_size ({self.group_size}) so a whole group can run, "
                f"got slots={self.slots!r}"
            )
        ratio = self.overprovision
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio) or ratio < 0:
            raise ValueError(f"overprovision must be a finite number >= 0, got {ratio!r}")
        if ratio > 0 and self.policy != "overprovision":
            raise ValueError(f"overprovision applies to policy 'overprovision' only, got policy {self.policy!r}")
        if self.max_staleness is not None and not _is_int(self.max_staleness, 0):
            raise ValueError(f"max_staleness must be None or an integer >= 0, got {self.max_staleness!r}")
        if self.max_staleness is not None and self.policy != "stream":
            raise ValueError(f"max_staleness applies to policy 'stream' only, got policy {self.policy!r}")
        if not isinstance(self.pause_during_update, bool):
            raise ValueError(f"pause_during_update must be a bool, got {self.pause_during_update!r}")

    @property
    def units_per_step(self) -> int | None:
        """Units launched per step: ``batch_units`` (sync), ``ceil(batch_units (1 + r))`` (overprovision), None
        (stream launches whenever a slot is free)."""
        if self.policy == "stream":
            return None
        # The small tolerance keeps float noise (10 * 1.1 = 11.000000000000002) from adding a unit.
        return math.ceil(self.batch_units * (1.0 + self.overprovision) - 1e-9)

    @property
    def requests_per_step(self) -> int | None:
        units = self.units_per_step
        return None if units is None else units * self.group_size

    @property
    def samples_per_step(self) -> int:
        """Trainable samples per step: ``batch_units * group_size``."""
        return self.batch_units * self.group_size


@dataclass(frozen=True)
class Request:
    """One trajectory to generate: member ``member`` of unit ``unit_id``, launched at policy ``version``."""

    request_id: int
    unit_id: int
    member: int
    version: int


@dataclass(frozen=True)
class StepBatch:
    """What one step trains on.

    step: 0-based index of the step in this scheduler. version: the policy version it updates from
    (``start_version + step``). units: each unit's requests in member order, units in completion order.
    staleness: per unit, ``version - oldest member's version``. dropped: unit ids dropped since the previous
    step (stream). aborted: request ids the engine must cancel (overprovision).
    """

    step: int
    version: int
    units: tuple[tuple[Request, ...], ...]
    staleness: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    aborted: tuple[int, ...] = ()

    @property
    def unit_ids(self) -> tuple[int, ...]:
        return tuple(unit[0].unit_id for unit in self.units)

    @property
    def request_ids(self) -> tuple[int, ...]:
        """All requests of the batch, unit by unit."""
        return tuple(r.request_id for unit in self.units for r in unit)


@dataclass(frozen=True)
class ScheduleCounts:
    """Request counts so far: ``launched = finished + aborted + in_flight`` and ``finished = used + dropped +
    discarded + pending`` (pending: finished, in a unit not yet used or not yet complete)."""

    launched: int
    finished: int
    used: int
    dropped: int
    discarded: int
    aborted: int
    in_flight: int

    @property
    def pending(self) -> int:
        return self.finished - self.used - self.dropped - self.discarded


class _Unit:
    __slots__ = ("done", "requests", "unit_id")

    def __init__(self, unit_id: int) -> None:
        self.unit_id = unit_id
        self.requests: list[Request] = []
        self.done = 0


class StreamScheduler:
    """The launch and batching state machine of the module docstring.

    Call order per step: ``launches()`` (as often as the engine likes) and ``finished(id)`` until ``ready()``,
    then ``close_step()``, the update, ``finish_update()``.
    """

    def __init__(self, config: ScheduleConfig, start_version: int = 0) -> None:
        if not isinstance(config, ScheduleConfig):
            raise TypeError(f"config must be a ScheduleConfig, got {type(config).__name__}")
        if not _is_int(start_version, 0):
            raise ValueError(f"start_version must be an integer >= 0, got {start_version!r}")
        self._config = config
        self._stream = config.policy == "stream"
        self._start_version = start_version
        self._updates = 0
        self._updating = False
        self._next_request = 0
        self._next_unit = 0
        self._open: _Unit | None = None  # the unit whose members are being launched
        self._units: dict[int, _Unit] = {}  # units with a member not finished (or not launched)
        self._running: dict[int, Request] = {}
        self._complete: list[_Unit] = []  # complete units waiting for a step, in completion order
        self._new_drops: list[int] = []
        self._to_launch = 0  # requests of the current step not launched yet (sync, overprovision)
        self._finished = self._used = self._dropped = self._discarded = self._aborted = 0
        if not self._stream:
            self._to_launch = config.requests_per_step

    # ------------------------------------------------------------------------------------------ state
    @property
    def config(self) -> ScheduleConfig:
        return self._config

    @property
    def version(self) -> int:
        """``start_version`` + updates finished: the version a request launched now records."""
        return self._start_version + self._updates

    @property
    def steps_closed(self) -> int:
        return self._updates + int(self._updating)

    @property
    def updating(self) -> bool:
        """Between ``close_step`` and ``finish_update``."""
        return self._updating

    @property
    def in_flight(self) -> int:
        """Requests launched and neither finished nor aborted."""
        return len(self._running)

    @property
    def counts(self) -> ScheduleCounts:
        return ScheduleCounts(
            launched=self._next_request,
            finished=self._finished,
            used=self._used,
            dropped=self._dropped,
            discarded=self._discarded,
            aborted=self._aborted,
            in_flight=len(self._running),
        )

    def _staleness(self, unit: _Unit) -> int:
        return self.version - min(r.version for r in unit.requests)

    # ------------------------------------------------------------------------------------------ engine calls
    def launches(self) -> list[Request]:
        """The requests to start now (none while paused for an update), ids in increasing order."""
        config = self._config
        if self._updating and config.pause_during_update:
            return []
        free = math.inf if config.slots is None else config.slots - len(self._running)
        count = int(free if self._stream else min(free, self._to_launch))
        if not self._stream:
            self._to_launch -= count
        return [self._launch_one() for _ in range(count)]

    def _launch_one(self) -> Request:
        unit = self._open
        if unit is None or len(unit.requests) == self._config.group_size:
            unit = self._open = _Unit(self._next_unit)
            self._units[unit.unit_id] = unit
            self._next_unit += 1
        request = Request(self._next_request, unit.unit_id, len(unit.requests), self.version)
        self._next_request += 1
        unit.requests.append(request)
        self._running[request.request_id] = request
        return request

    def finished(self, request_id: int) -> None:
        """Record a finished trajectory. Unknown, repeated or aborted ids raise ValueError."""
        request = self._running.pop(request_id, None)
        if request is None:
            if _is_int(request_id, 0) and request_id < self._next_request:
                raise ValueError(f"request {request_id} is not running: it already finished or was aborted")
            raise ValueError(f"unknown request id {request_id!r}: {self._next_request} requests were launched")
        self._finished += 1
        unit = self._units[request.unit_id]
        unit.done += 1
        if unit.done < self._config.group_size:
            return
        del self._units[unit.unit_id]
        if self._too_stale(unit):
            self._drop(unit)
        else:
            self._complete.append(unit)

    def _too_stale(self, unit: _Unit) -> bool:
        limit = self._config.max_staleness
        return limit is not None and self._staleness(unit) > limit

    def _drop(self, unit: _Unit) -> None:
        self._dropped += len(unit.requests)
        self._new_drops.append(unit.unit_id)

    def ready(self) -> bool:
        """True when ``batch_units`` complete units wait and no update is running."""
        return not self._updating and len(self._complete) >= self._config.batch_units

    def close_step(self) -> StepBatch:
        """Take the step's batch and enter the update phase. RuntimeError when not ``ready()``."""
        if not self.ready():
            state = "an update is running" if self._updating else f"{len(self._complete)} complete units wait"
            raise RuntimeError(f"no step to close: {state}, {self._config.batch_units} needed")
        config = self._config
        taken = self._complete[: config.batch_units]
        self._complete = self._complete[config.batch_units :]
        aborted: tuple[int, ...] = ()
        if not self._stream:
            # Nothing carries over: abort what runs, discard the rest of the step.
            aborted = tuple(sorted(self._running))
            self._aborted += len(aborted)
            self._discarded += sum(u.done for u in self._complete) + sum(u.done for u in self._units.values())
            self._running.clear()
            self._units.clear()
            self._complete = []
            self._open = None
            self._to_launch = 0
        self._used += sum(len(u.requests) for u in taken)
        batch = StepBatch(
            step=self._updates,
            version=self.version,
            units=tuple(tuple(u.requests) for u in taken),
            staleness=tuple(self._staleness(u) for u in taken),
            dropped=tuple(self._new_drops),
            aborted=aborted,
        )
        self._new_drops = []
        self._updating = True
        if not self._stream and not config.pause_during_update:
            self._to_launch = config.requests_per_step
        return batch

    def finish_update(self) -> None:
        """The update is done: ``version += 1``; waiting units now too stale are dropped. RuntimeError outside an
        update."""
        if not self._updating:
            raise RuntimeError("finish_update without an update: call close_step first")
        self._updating = False
        self._updates += 1
        if self._config.max_staleness is not None:
            keep = []
            for unit in self._complete:
                if self._too_stale(unit):
                    self._drop(unit)
                else:
                    keep.append(unit)
            self._complete = keep
        if not self._stream and self._config.pause_during_update:
            self._to_launch = self._config.requests_per_step


# ---------------------------------------------------------------------------------------------- replay
@dataclass(frozen=True, eq=False)
class ReplayResult:
    """A replayed run. close_times: wall time of each ``close_step``. wall_time: end of the last update.
    busy_time: slot-time spent generating up to the last close. slots: the utilisation's slot count."""

    config: ScheduleConfig
    batches: tuple[StepBatch, ...]
    close_times: tuple[float, ...]
    wall_time: float
    busy_time: float
    slots: int
    counts: ScheduleCounts

    @property
    def staleness(self) -> tuple[tuple[int, ...], ...]:
        return tuple(b.staleness for b in self.batches)

    @property
    def dropped(self) -> int:
        """Dropped requests (``n`` per dropped unit)."""
        return self.counts.dropped

    @property
    def aborted(self) -> int:
        return self.counts.aborted

    @property
    def utilisation(self) -> float:
        """``busy_time / (slots * wall_time)``."""
        return self.busy_time / (self.slots * self.wall_time) if self.wall_time > 0 else math.nan

    @property
    def throughput(self) -> float:
        """Trainable samples per unit time: ``counts.used / wall_time``."""
        return self.counts.used / self.wall_time if self.wall_time > 0 else math.inf


def _duration_source(durations: Callable[[Request], float] | Sequence[float]) -> Callable[[Request], float]:
    def get(request: Request) -> float:
        if callable(durations):
            value = durations(request)
        elif request.request_id < len(durations):
            value = durations[request.request_id]
        else:
            raise ValueError(f"durations has {len(durations)} entries; request {request.request_id} needs more")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration of request {request.request_id} must be finite and >= 0, got {value}")
        return value

    return get


def replay(
    config: ScheduleConfig,
    durations: Callable[[Request], float] | Sequence[float],
    steps: int,
    update_time: float = 0.0,
) -> ReplayResult:
    """Run ``steps`` steps of a scheduler where each request takes ``durations(request)`` (or
    ``durations[request_id]``) from its launch.

    Events are taken in time order, finishes at equal times by request id, an update's end before a finish at
    the same time. After each event a ready step closes at once; the update then takes ``update_time``: when
    paused, running requests are frozen for it (their finish times move by ``update_time``), otherwise they
    run on and an update's end may close the next step at once. New requests start after every event of the
    current time is handled. Utilisation counts ``config.slots`` slots, or a step's requests when None.
    """
    import heapq  # kept local: the core's module-level imports stay the listed pure modules

    if not _is_int(steps, 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not math.isfinite(update_time) or update_time < 0:
        raise ValueError(f"update_time must be finite and >= 0, got {update_time!r}")
    duration_of = _duration_source(durations)
    scheduler = StreamScheduler(config)
    pause = config.pause_during_update
    heap: list[tuple[float, int]] = []  # (finish time, request id)
    batches: list[StepBatch] = []
    close_times: list[float] = []
    now = busy = 0.0
    update_end: float | None = None

    def close() -> None:
        nonlocal heap, update_end
        batch = scheduler.close_step()
        batches.append(batch)
        close_times.append(now)
        if batch.aborted:
            gone = set(batch.aborted)
            heap = [entry for entry in heap if entry[1] not in gone]
            heapq.heapify(heap)
        if pause and update_time > 0:
            heap = [(t + update_time, rid) for t, rid in heap]  # same shift for all: still a heap
        update_end = now + update_time

    while True:
        for request in scheduler.launches():
            heapq.heappush(heap, (now + duration_of(request), request.request_id))
        upcoming = [t for t in (heap[0][0] if heap else None, update_end) if t is not None]
        if not upcoming:
            raise RuntimeError("the replay stalled: nothing runs, no update runs and no step is ready")
        t = min(upcoming)
        if not (pause and update_end is not None):  # paused: running requests are frozen until update_end
            busy += scheduler.in_flight * (t - now)
        now = t
        while True:
            if update_end is not None and update_end <= now:
                update_end = None
                scheduler.finish_update()
            elif heap and heap[0][0] <= now:
                scheduler.finished(heapq.heappop(heap)[1])
            else:
                break
            if scheduler.ready():
                close()
                if len(batches) == steps:
                    slots = config.slots if config.slots is not None else config.requests_per_step
                    return ReplayResult(
                        config=config,
                        batches=tuple(batches),
                        close_times=tuple(close_times),
                        wall_time=now + update_time,
                        busy_time=busy,
                        slots=slots,
                        counts=scheduler.counts,
                    )


__all__ = [
    "SCHEDULE_POLICIES",
    "ReplayResult",
    "Request",
    "ScheduleConfig",
    "ScheduleCounts",
    "StepBatch",
    "StreamScheduler",
    "replay",
]
