"""Streamed rollouts on verl's agent-loop workers: the schedules of the CPU backend's engine on the GPU path.

With ``--backend ray`` and ``actor_rollout_ref.rollout.mode=async`` verl runs rollouts on ``AgentLoopWorker``
actors that drive vLLM's async servers (the official recipe's setup). ``AgentLoopStreamingRollout`` keeps
``slots`` single rollouts in flight on those workers across training steps, under a
``core.streaming.StreamScheduler`` and the bookkeeping both engines share (``stream_book.RolloutBook``):

- **Launching.** Each request is one dataset row sent to a worker's ``generate_sequences`` (the worker with the
  fewest requests running; ties: the lowest index), where the kit's tool agent loop (``verl_loop``) runs it.
- **Generation pauses for an update.** Every streamed row names a ``GenerationGate`` (a named Ray actor) in its
  ``GATE_FIELD`` column; the agent loop enters the gate before each ``generate`` call to the server and leaves it
  after (``gate_pass``). ``close`` lets no new call in and waits until none is inside: generation is drained
  while code runs and their added latencies go on. Validation rows name no gate, so validation runs while
  streamed samples wait at it.
- **A step.** ``next_step`` polls the workers (``ray.wait``, every ``POLL_S`` seconds) until the scheduler is
  ready, closes the gate, puts the servers to sleep as ``AgentLoopManager.generate_sequences`` does after a batch
  (with ``free_cache_engine``: vLLM frees its cache for the update), and closes the step. ``resume`` wakes the
  servers (where verl loads the actor's new weights into vLLM), moves the scheduler's version on and opens the
  gate. A sample that spans an update has tokens of both policies; vLLM returns each token's log-prob under the
  weights it was drawn with (``rollout.calculate_log_probs=True``, set by the streamed schedules): the behaviour
  log-probs the PPO ratio is taken against.
- **Timing.** A rollout counts as finished when a poll sees it: one that ends during an update is recorded when
  the next step starts polling (its slot was not free before that anyway: launches pause during updates).
- **Closing.** ``close`` cancels what is in flight (``ray.cancel``; an aborted rollout that still ends is
  ignored) and ends the gate.

As on the CPU backend, timing decides which samples finish first, so streamed runs are not bit-exact; the prompts
queued are (the trainer's seeded sampler fills the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from uuid import uuid4

import numpy as np
import ray

from spo_helpers.core.streaming import Request, StepBatch, StreamScheduler
from spo_helpers.verl_glue.agent_loop.stream_book import RolloutBook, StreamedSample, StreamStats

POLL_S = 0.05
GATE_FIELD = "spo_stream_gate"  # the non-tensor column naming a streamed row's gate


class GenerationGate:
    """Counts the ``generate`` calls in progress and, once closed, lets none start until it opens (a Ray actor).

    ``enter(token)`` waits while the gate is closed, then counts the call in; ``leave(token)`` counts it out. A
    caller cancelled while waiting in ``enter`` still calls ``leave``: the token is remembered and its ``enter``,
    when it ends, counts nothing in (so a cancelled sample never holds the gate shut). ``close()`` returns when no
    call is inside.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inside: set[str] = set()
        self._abandoned: set[str] = set()

    async def enter(self, token: str) -> bool:
        await self._open.wait()
        if token in self._abandoned:
            self._abandoned.discard(token)
            return False
        self._inside.add(token)
        self._idle.clear()
        return True

    def leave(self, token: str) -> None:
        if token not in self._inside:
            self._abandoned.add(token)
            return
        self._inside.discard(token)
        if not self._inside:
            self._idle.set()

    async def close(self) -> int:
        """No new call gets in; returns (the number of calls inside: 0) when every call inside has left."""
        self._open.clear()
        await self._idle.wait()
        return len(self._inside)

    def open(self) -> None:
        self._open.set()

    def inside(self) -> int:
        return len(self._inside)


@functools.lru_cache(maxsize=8)
def _gate_handle(name: str):
    return ray.get_actor(name)


@contextlib.asynccontextmanager
async def gate_pass(name: str | None) -> AsyncIterator[None]:
    """Around one ``generate`` call of a streamed row (``name``: its gate; None or empty: no gate)."""
    if not name:
        yield
        return
    gate = await asyncio.get_running_loop().run_in_executor(None, _gate_handle, str(name))  # blocks the first time
    token = uuid4().hex
    try:
        await gate.enter.remote(token)
        yield
    finally:
        gate.leave.remote(token)


class AgentLoopStreamingRollout:
    """``slots`` rollouts kept in flight on verl's agent-loop workers across steps (module docstring).

    ``workers``: the ``AgentLoopWorker`` actor handles (``AgentLoopManager.agent_loop_workers``). ``request(item)``:
    the one-row generation batch of a queue item (the engine adds its gate's column). ``wake_up`` / ``sleep``: the
    manager's, or None when the servers stay awake (``free_cache_engine=False``).
    """

    def __init__(
        self,
        scheduler: StreamScheduler,
        *,
        workers: Sequence[Any],
        request: Callable[[Any], Any],
        wake_up: Callable[[], None] | None = None,
        sleep: Callable[[], None] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        if not workers:
            raise ValueError("streamed rollouts need at least one agent-loop worker")
        self.scheduler = scheduler
        self._book = RolloutBook(scheduler)
        self.slots = self._book.slots
        self._workers = list(workers)
        self._load = [0] * len(self._workers)
        self._request = request
        self._wake_up, self._sleep = wake_up, sleep
        self._poll_s = float(poll_s)
        self.gate_name = f"spo-stream-gate-{uuid4().hex[:12]}"
        self._gate = (
            ray.remote(GenerationGate).options(name=self.gate_name, num_cpus=0, max_concurrency=10_000).remote()
        )
        self._pending: dict[Any, tuple[Request, int]] = {}  # ObjectRef -> (request, worker index)
        self._ref_of: dict[int, Any] = {}  # request id -> ObjectRef
        self._paused = False
        self._closed = False

    # ------------------------------------------------------------------ the trainer's side
    def start(self, items: Sequence[Any]) -> None:
        """Queue ``items``, wake the servers and start the first requests."""
        self._book.add(items)
        if self._wake_up is not None:
            self._wake_up()
        self._launch_due()

    @property
    def queued(self) -> int:
        return self._book.queued

    def refill(self, items: Sequence[Any]) -> None:
        """Add prompts to the queue (during an update they start at ``resume``)."""
        self._book.add(items)
        self._launch_due()

    def next_step(self, timeout: float | None = None) -> tuple[StepBatch, list[list[StreamedSample]], StreamStats]:
        """Wait for a step, drain generation, put the servers to sleep and close the step: the batch, each unit's
        samples, the stats since the last. Raises the first error a rollout raised, and ``TimeoutError`` after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.scheduler.ready():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no step was ready within {timeout} s ({self.scheduler.counts})")
            self._collect(self._poll_s)
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        ray.get(self._gate.close.remote(), timeout=left)
        self._paused = True
        self._collect(0.0)  # what finished while generation drained
        if self._sleep is not None:
            self._sleep()
        batch, units, stats = self._book.close_step(time.perf_counter())
        for request_id in batch.aborted:
            self._cancel(request_id)
        return batch, units, stats

    def resume(self) -> None:
        """The update is done: the next version, the new weights in the servers, generation goes on."""
        self.scheduler.finish_update()
        if self._wake_up is not None:
            self._wake_up()
        ray.get(self._gate.open.remote())
        self._paused = False
        self._launch_due()

    def close(self) -> None:
        """Cancel what is in flight and end the gate (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for ref in list(self._pending):
            ray.cancel(ref)
        self._pending.clear()
        self._ref_of.clear()
        ray.kill(self._gate)  # a rollout still waiting at the gate fails there and ends

    def in_use(self) -> list[Any]:
        """The items queued, running, or finished and waiting for a step."""
        return self._book.in_use()

    # ------------------------------------------------------------------ requests
    def _launch_due(self) -> None:
        for request, item in self._book.take_launches(time.perf_counter(), paused=self._paused):
            worker = min(range(len(self._workers)), key=lambda index: (self._load[index], index))
            batch = self._request(item)
            batch.non_tensor_batch[GATE_FIELD] = np.array([self.gate_name] * len(batch), dtype=object)
            ref = self._workers[worker].generate_sequences.remote(batch)
            self._load[worker] += 1
            self._pending[ref] = (request, worker)
            self._ref_of[request.request_id] = ref

    def _collect(self, timeout: float) -> None:
        """Record the rollouts that finished within ``timeout`` seconds (all that are done once one is), then
        start what their slots allow."""
        if not self._pending:
            time.sleep(timeout)
            return
        refs = list(self._pending)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        now = time.perf_counter()
        for ref in ready:
            request, worker = self._pending.pop(ref)
            del self._ref_of[request.request_id]
            self._load[worker] -= 1
            try:
                output = ray.get(ref)
            except Exception as err:
                raise RuntimeError(f"a streamed rollout failed: {err}") from err
            self._book.finished(request, output, now)
        self._launch_due()

    def _cancel(self, request_id: int) -> None:
        ref = self._ref_of.pop(request_id, None)
        if ref is not None:
            _, worker = self._pending.pop(ref)
            self._load[worker] -= 1
            ray.cancel(ref)
        self._book.forget(request_id)
