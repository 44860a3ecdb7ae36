"""The bookkeeping of a streaming rollout engine, shared by both engines (no I/O, no locks, no clock of its own).

An engine (``stream_engine.StreamingRollout``: the CPU backend's in-process model; ``agent_loop_stream``:
verl's agent-loop workers and their vLLM servers) runs rollouts; ``RolloutBook`` says which to start and with
which prompt, records what finished, and closes a step, around a ``core.streaming.StreamScheduler``:

- the prompt queue the trainer fills (``add``); a unit's first request takes the next prompt, its other members
  (a GRPO group) share it; a request that finds the queue empty waits for the next ``add`` (counted: starved);
- ``take_launches``: the requests to start now, each with its queue item;
- ``finished``: a rollout's result (ignored when the request was aborted meanwhile);
- ``close_step``: the scheduler's step and each unit's finished samples in completion order; the samples of
  dropped units are forgotten, and so is everything unused when the policy does not carry samples over; the
  prompts of aborted requests go back to the front of the queue (they were not trained on), and the engine
  must cancel the aborted requests (``StepBatch.aborted``);
- busy slot-time for the slot utilisation (``StreamStats``), accounted at every event.

An engine with threads calls every method under its own lock; times are ``time.perf_counter`` seconds.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spo_helpers.core.streaming import Request, StepBatch, StreamScheduler


@dataclass(frozen=True)
class StreamedSample:
    """A finished rollout: the scheduler's request, the queue item it ran (e.g. a dataset row), the engine's
    result (a ``TurnResult`` on the CPU backend, a one-row ``DataProto`` from verl's agent-loop workers), and when
    it was launched and finished (``time.perf_counter`` seconds)."""

    request: Request
    item: Any
    result: Any
    launched_at: float
    finished_at: float


@dataclass
class StreamStats:
    """What the engine did between two steps (``close_step`` returns them and starts new ones). ``started_at``: the
    instant the book's busy-time accounting of this span starts (no default: a clock read of its own starts later)."""

    started_at: float
    busy_slot_seconds: float = 0.0
    finished: int = 0
    starved: int = 0

    def utilisation(self, slots: int, now: float) -> float:
        """Busy slot-time over ``slots`` x elapsed time."""
        elapsed = now - self.started_at
        return self.busy_slot_seconds / (slots * elapsed) if elapsed > 0 and slots > 0 else 0.0


class RolloutBook:
    """Queue, running and finished requests of a streaming engine (module docstring)."""

    def __init__(self, scheduler: StreamScheduler) -> None:
        self.scheduler = scheduler
        self.slots = int(scheduler.config.slots or scheduler.config.requests_per_step)
        self._queue: collections.deque[Any] = collections.deque()
        self._unstarted: collections.deque[Request] = collections.deque()
        self._unit_items: dict[int, Any] = {}  # the prompt of each unit with a request started
        self._running: dict[int, tuple[float, Any]] = {}  # request id -> (launched at, item)
        self._done: dict[int, StreamedSample] = {}
        now = time.perf_counter()
        self.stats = StreamStats(started_at=now)  # busy time is accounted from the same instant
        self._last_event = now

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> list[int]:
        """The ids of the requests running, in launch order."""
        return list(self._running)

    def add(self, items: Sequence[Any]) -> None:
        """Prompts for the queue."""
        self._queue.extend(items)

    def account(self, now: float) -> None:
        """Busy slot-time since the last event."""
        self.stats.busy_slot_seconds += len(self._running) * (now - self._last_event)
        self._last_event = now

    def take_launches(self, now: float, paused: bool = False) -> list[tuple[Request, Any]]:
        """The requests to start now with their queue items (none while ``paused`` and the schedule pauses during
        updates)."""
        self.account(now)
        if paused and self.scheduler.config.pause_during_update:
            return []
        new = self.scheduler.launches()
        self._unstarted.extend(new)
        starts = []
        while self._unstarted:
            request = self._unstarted[0]
            if request.member == 0:  # a new unit takes the next prompt; its other members share it
                if not self._queue:
                    break
                self._unit_items[request.unit_id] = self._queue.popleft()
            self._unstarted.popleft()
            item = self._unit_items[request.unit_id]
            self._running[request.request_id] = (now, item)
            starts.append((request, item))
        self.stats.starved += sum(1 for r in new if r in self._unstarted)
        return starts

    def finished(self, request: Request, result: Any, now: float) -> bool:
        """Record a finished rollout; False (and nothing recorded) when it was aborted meanwhile."""
        if request.request_id not in self._running:
            return False
        self.account(now)
        launched_at, item = self._running.pop(request.request_id)
        self._done[request.request_id] = StreamedSample(request, item, result, launched_at, now)
        self.stats.finished += 1
        self.scheduler.finished(request.request_id)
        return True

    def close_step(self, now: float) -> tuple[StepBatch, list[list[StreamedSample]], StreamStats]:
        """Close the scheduler's step: the batch, each unit's samples, the stats since the last step."""
        batch = self.scheduler.close_step()
        units = [[self._done.pop(r.request_id) for r in unit] for unit in batch.units]
        dropped = set(batch.dropped)
        for request_id in [rid for rid, s in self._done.items() if s.request.unit_id in dropped]:
            del self._done[request_id]
        carries_over = self.scheduler.config.policy == "stream"
        if not carries_over:  # unused samples are discarded
            self._done.clear()
        returned: list[Any] = []
        for request_id in batch.aborted:
            if request_id in self._running:
                _, item = self._running.pop(request_id)
                if all(item is not other for other in returned):  # a group's members share their prompt
                    returned.append(item)
        self._queue.extendleft(reversed(returned))  # not trained on: the next units take them, in launch order
        if not carries_over:
            self._unit_items.clear()
        else:
            used = {r.unit_id for unit in batch.units for r in unit}
            for unit_id in [u for u in self._unit_items if u in used or u in dropped]:
                del self._unit_items[unit_id]
        self.account(now)
        # the next stats start where this accounting ends: their busy time and elapsed time cover the same span, so
        # the utilisation is at most 1 however long the close itself took
        stats, self.stats = self.stats, StreamStats(started_at=now)
        return batch, units, stats

    def forget(self, request_id: int) -> None:
        """A cancelled request that had not started."""
        self._unstarted = collections.deque(r for r in self._unstarted if r.request_id != request_id)

    def in_use(self) -> list[Any]:
        """The items queued, running, or finished and waiting for a step."""
        running = [item for _, item in self._running.values()]
        return [*self._queue, *running, *(s.item for s in self._done.values())]
