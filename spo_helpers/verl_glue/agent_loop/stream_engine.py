"""Streamed tool-integrated rollouts on the CPU backend: rollout slots kept busy across training steps.

The synchronous loop (``cpu_server.run_tool_rollout``) runs a step's samples in lock-step rounds and waits for the
slowest one. ``StreamingRollout`` instead keeps ``slots`` rollouts in flight all the time, on one event loop in a
thread of its own, under a ``core.streaming.StreamScheduler``:

- **Launching.** A request the scheduler hands out starts at once with the next prompt of a queue the trainer
  fills (``refill``; for SPO from its prioritised sampler). A request that finds the queue empty waits for the
  next refill (counted: ``starved``).
- **Generation.** ``ContinuousGate`` answers every waiting ``generate`` call in one batched call as soon as the
  previous one returned (requests that arrive meanwhile go in the next): no sample waits for another's code
  run. Each generated token's log-prob under the distribution it was sampled from comes back with it: the
  behaviour log-probs, against which the PPO ratio is taken.
- **A step.** ``next_step`` waits until the scheduler is ready, pauses generation (the model lock: a batched call
  in progress finishes first) and closes the step: the finished samples of its units, in completion order.
  Code runs and their added latencies go on during the update (the sandbox is not the model); no generation
  does. ``resume`` ends the update: the scheduler's version moves on, new requests start, generation goes on
  under the new weights. A sample that spans an update has tokens of both policies; each token's log-prob is
  the one it was drawn with, and its version is the one it was launched under.
- **Closing.** ``close`` cancels what is in flight and stops the thread.

The queue, running and finished requests and a step's closing are ``stream_book.RolloutBook``, which the engine
on verl's agent-loop workers (``agent_loop_stream``) shares.

Timing decides which samples finish first, so streamed runs are not reproducible bit for bit (the synchronous
loop is); the prompts launched are (the queue is filled from the trainer's seeded sampler, in order).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from spo_helpers.core.latency import LatencyModel
from spo_helpers.core.streaming import Request, StepBatch, StreamScheduler
from spo_helpers.verl_glue.agent_loop.stream_book import RolloutBook, StreamedSample, StreamStats
from spo_helpers.verl_glue.agent_loop.turns import (
    CodeTool,
    GenerateRequest,
    Generation,
    ToolTurns,
    TurnConfig,
    run_turns,
)

PAUSE_POLL_S = 0.05


class ContinuousGate:
    """Concurrent ``await generate(request)`` calls answered in batches, one batched call at a time.

    ``flush`` (blocking: a batch of requests to answers, in order) runs on a worker thread holding ``lock``, so
    whoever holds the lock pauses generation. The requests of a call are those waiting when it starts.
    """

    def __init__(self, flush: Callable[[list[GenerateRequest]], list[Generation]], lock: threading.Lock) -> None:
        self._flush = flush
        self._lock = lock
        self._waiting: list[tuple[GenerateRequest, asyncio.Future[Generation]]] = []
        self._wake: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-generate")
        self.calls = 0

    async def generate(self, request: GenerateRequest) -> Generation:
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        self._event().set()
        return await future

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def _locked_flush(self, requests: list[GenerateRequest]) -> list[Generation]:
        with self._lock:
            return self._flush(requests)

    async def pump(self) -> None:
        """Answer waiting requests until cancelled."""
        loop = asyncio.get_running_loop()
        wake = self._event()
        while True:
            await wake.wait()
            await asyncio.sleep(0)  # let samples woken by the last answers ask again
            wake.clear()
            batch, self._waiting = self._waiting, []
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(self._executor, self._locked_flush, [r for r, _ in batch])
            except Exception as err:  # every caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.calls += 1
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class StreamingRollout:
    """``slots`` tool-integrated rollouts kept in flight across steps (module docstring).

    ``scheduler``: a ``StreamScheduler`` (any policy). ``prompt_ids(item)``: the prompt token ids of a queue item.
    ``flush``: the batched generation (e.g. ``CPUGenerationServer.generate_batch`` with log-probs on), called with
    the model lock held. ``latency``: the seeded delay of each code run (``kit.tool_latency``), named by the
    request id and call number.
    """

    def __init__(
        self,
        scheduler: StreamScheduler,
        *,
        flush: Callable[[list[GenerateRequest]], list[Generation]],
        prompt_ids: Callable[[Any], Sequence[int]],
        turn_config: TurnConfig,
        tool: CodeTool,
        tokenizer: Any,
        latency: LatencyModel | None = None,
    ) -> None:
        self.scheduler = scheduler
        self._book = RolloutBook(scheduler)  # under self._state
        self.slots = self._book.slots
        self._prompt_ids = prompt_ids
        self._turn_config = turn_config
        self._tool = tool
        self._tokenizer = tokenizer
        self._latency = latency if latency is not None and latency.enabled else None
        self.model_lock = threading.Lock()  # held by whoever may not share the model with generation
        self._state = threading.Lock()  # the scheduler, the queue and the finished samples
        self._gate = ContinuousGate(flush, self.model_lock)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._run_loop, name="stream-rollout", daemon=True)
        self._paused = False
        self._closed = False

    # ------------------------------------------------------------------ the trainer's side
    def start(self, items: Sequence[Any]) -> None:
        """Queue ``items`` and start the first requests."""
        with self._state:
            self._book.add(items)
        self._thread.start()
        self._loop.call_soon_threadsafe(self._start_pump)
        self._loop.call_soon_threadsafe(self._launch_due)

    @property
    def queued(self) -> int:
        with self._state:
            return self._book.queued

    def refill(self, items: Sequence[Any]) -> None:
        """Add prompts to the queue (requests waiting for one start when the engine runs)."""
        with self._state:
            self._book.add(items)
        self._loop.call_soon_threadsafe(self._launch_due)

    def next_step(self, timeout: float | None = None) -> tuple[StepBatch, list[list[StreamedSample]], StreamStats]:
        """Wait for a step, pause generation and close it: the batch, each unit's samples, the stats since the last.

        Raises the first error a rollout raised, and ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(PAUSE_POLL_S):
            if self._error is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no step was ready within {timeout} s ({self.scheduler.counts})")
        if self._error is not None:
            raise RuntimeError(f"a streamed rollout failed: {self._error!r}") from self._error
        self.model_lock.acquire()
        self._paused = True
        with self._state:
            batch, units, stats = self._book.close_step(time.perf_counter())
            self._ready.clear()
        for request_id in batch.aborted:  # a rollout ending meanwhile is ignored (``RolloutBook.finished``)
            self._loop.call_soon_threadsafe(self._cancel, request_id)
        return batch, units, stats

    def resume(self) -> None:
        """The update is done: the next version, new requests, generation goes on."""
        with self._state:
            self.scheduler.finish_update()
            if self.scheduler.ready():
                self._ready.set()
        self._paused = False
        self.model_lock.release()
        self._loop.call_soon_threadsafe(self._launch_due)

    def close(self) -> None:
        """Cancel what is in flight and stop the loop's thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop)
            future.result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        if self._paused:
            self._paused = False
            self.model_lock.release()
        self._gate.close()
        self._loop.close()

    # ------------------------------------------------------------------ the loop's side
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _start_pump(self) -> None:
        self._spawn(self._gate.pump(), None)

    def _spawn(self, coroutine, request_id: int | None) -> None:
        task = self._loop.create_task(coroutine)
        task.request_id = request_id  # type: ignore[attr-defined]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _launch_due(self) -> None:
        with self._state:
            starts = self._book.take_launches(time.perf_counter(), paused=self._paused)
        for request, item in starts:
            self._spawn(self._rollout(request, item), request.request_id)

    def in_use(self) -> list[Any]:
        """The items queued, running, or finished and waiting for a step."""
        with self._state:
            return self._book.in_use()

    async def _rollout(self, request: Request, item: Any) -> None:
        try:
            turns = ToolTurns(self._prompt_ids(item), self._turn_config, self._tokenizer, self._tool.extract)
            delay = None
            if self._latency is not None:
                delay = functools.partial(self._latency.delay, request.unit_id, request.member)
            result = await run_turns(turns, self._gate.generate, self._tool, extra_latency=delay)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # the trainer raises it from next_step
            self._error = self._error or err
            self._ready.set()
            return
        with self._state:
            if not self._book.finished(request, result, time.perf_counter()):  # aborted while it finished
                return
            if self.scheduler.ready():
                self._ready.set()
        self._launch_due()

    def _cancel(self, request_id: int) -> None:
        for task in list(self._tasks):
            if getattr(task, "request_id", None) == request_id:
                task.cancel()
        with self._state:
            self._book.forget(request_id)

    async def _cancel_all(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
