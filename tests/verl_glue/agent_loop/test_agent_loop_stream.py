"""The streaming engine on verl's agent-loop workers (``agent_loop_stream``): the gate on its own, then the engine
driving Ray actors that stand for ``AgentLoopWorker``: each runs its row's planned turns (a generation through
the row's gate, then a code run, as timed sleeps) and says when it generated. The engine on verl's real workers
and vLLM's servers runs in ``scripts/gpu_smoke.sh`` (``make test-vllm``)."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pytest

from spo_helpers.core.streaming import ScheduleConfig, StreamScheduler
from spo_helpers.verl_glue.agent_loop.agent_loop_stream import GATE_FIELD, GenerationGate

ray = pytest.importorskip("ray")
RAY_CASE = [
    pytest.mark.ray,
    pytest.mark.skipif("'ray' not in config.getoption('markexpr')", reason="Ray cases: run with -m ray"),
]


def ray_case(test):
    for mark in RAY_CASE:
        test = mark(test)
    return test


# ---------------------------------------------------------------------------------------------- the gate
def test_the_gate_drains_calls_inside_and_holds_new_ones_until_it_opens():
    async def scenario():
        gate = GenerationGate()
        assert await gate.enter("a") and gate.inside() == 1
        closing = asyncio.create_task(gate.close())
        waiting = asyncio.create_task(gate.enter("b"))
        await asyncio.sleep(0.01)
        assert not closing.done() and not waiting.done()  # "a" is still generating; "b" may not start
        gate.leave("a")
        assert await asyncio.wait_for(closing, 1) == 0
        await asyncio.sleep(0.01)
        assert not waiting.done()  # closed: nothing gets in during the update
        gate.open()
        assert await asyncio.wait_for(waiting, 1) and gate.inside() == 1
        gate.leave("b")
        assert gate.inside() == 0

    asyncio.run(scenario())


def test_a_caller_cancelled_at_the_closed_gate_never_holds_it():
    async def scenario():
        gate = GenerationGate()
        await gate.close()
        waiting = asyncio.create_task(gate.enter("c"))
        await asyncio.sleep(0.01)
        gate.leave("c")  # the caller gave up (its sample was cancelled) while waiting
        gate.open()
        assert await asyncio.wait_for(waiting, 1) is False and gate.inside() == 0
        assert await asyncio.wait_for(gate.close(), 1) == 0

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------- the engine
class PlannedWorker:
    """``generate_sequences(batch)`` of one row: the turns of ``batch.meta_info["plan"]``, each ``(generate_s,
    code_s)``: a generation inside the row's gate, then a code run; returns the row. ``generations()``: every
    generation it ran, ``(row, start, end)`` (``time.time``)."""

    def __init__(self) -> None:
        import verl  # noqa: F401  (what unpickling a request imports: seconds, or a minute on a loaded machine)

        self._cancelled: list[int] = []
        self._generations: list[tuple[int, float, float]] = []

    async def generate_sequences(self, batch):
        from spo_helpers.verl_glue.agent_loop.agent_loop_stream import gate_pass

        row = int(batch.non_tensor_batch["row"][0])
        try:
            for generate_s, code_s in batch.meta_info["plan"]:
                async with gate_pass(batch.non_tensor_batch[GATE_FIELD][0]):
                    start = time.time()
                    await asyncio.sleep(generate_s)
                    self._generations.append((row, start, time.time()))
                await asyncio.sleep(code_s)
        except asyncio.CancelledError:
            self._cancelled.append(row)
            raise
        return {"row": row}

    def cancelled(self) -> list[int]:
        return list(self._cancelled)

    def generations(self) -> list[tuple[int, float, float]]:
        return list(self._generations)


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module
    yield ray
    if started:
        ray.shutdown()


def one_row(row: int, plan: list[tuple[float, float]]):
    from verl import DataProto

    return DataProto(non_tensor_batch={"row": np.array([row])}, meta_info={"plan": plan})


def engine_for(config: ScheduleConfig, plans: dict[int, list[tuple[float, float]]], workers: int = 2):
    from spo_helpers.verl_glue.agent_loop.agent_loop_stream import AgentLoopStreamingRollout

    handles = [ray.remote(PlannedWorker).options(num_cpus=0).remote() for _ in range(workers)]
    ray.get([handle.generations.remote() for handle in handles])  # every worker is up (verl imported) first
    calls: list[str] = []
    engine = AgentLoopStreamingRollout(
        StreamScheduler(config),
        workers=handles,
        request=lambda item: one_row(item, plans[item]),
        wake_up=lambda: calls.append("wake_up"),
        sleep=lambda: calls.append("sleep"),
    )
    return engine, handles, calls


@ray_case
def test_a_step_takes_the_first_samples_and_generation_pauses_during_the_update(ray_local):
    # row 1: a short generation, a long code run, a second generation. Rows 0 and 2 finish after row 1's first
    # generation and 0.2 s apart; row 3, launched when row 0 ends, finishes after row 2: the step is rows 0 and 2.
    slow = [(0.05, 1.5), (0.05, 0.0)]
    plans = {0: [(0.2, 0.0)], 1: slow, 2: [(0.4, 0.0)], 3: [(0.6, 0.0)], 4: [(0.6, 0.0)], 5: [(0.6, 0.0)]}
    config = ScheduleConfig(batch_units=2, policy="stream", slots=3, max_staleness=4)
    engine, handles, calls = engine_for(config, plans)
    try:
        engine.start(list(plans))
        assert calls == ["wake_up"]
        first, units, stats = engine.next_step(timeout=60)
        closed_at = time.time()
        assert calls == ["wake_up", "sleep"]
        assert [s.item for unit in units for s in unit] == [0, 2]  # the first two to finish, in that order
        assert list(first.staleness) == [0, 0] and stats.finished >= 2 and stats.busy_slot_seconds > 0
        assert 1 in engine.in_use()  # the slow sample runs on through the update
        time.sleep(2.0)  # the update, while the slow sample's code run ends: its next generation must wait
        resumed_at = time.time()
        engine.resume()
        assert calls == ["wake_up", "sleep", "wake_up"]
        second, units, _ = engine.next_step(timeout=60)
        rows = [s.item for unit in units for s in unit]
        assert len(rows) == 2 and not {0, 2} & set(rows)
        launched_under = {s.item: s.request.version for unit in units for s in unit}
        assert second.version == 1 and list(second.staleness) == [1 - launched_under[r] for r in rows]
        generations = [g for handle in handles for g in ray.get(handle.generations.remote())]
        for row, start, end in generations:
            assert end <= closed_at or start >= resumed_at, (row, start, end, closed_at, resumed_at)
        assert [start >= resumed_at for row, start, _ in generations if row == 1] == [False, True]  # it waited
    finally:
        began = time.perf_counter()
        engine.close()
    assert time.perf_counter() - began < 10  # samples waiting at the closed gate end with it


@ray_case
def test_overprovision_cancels_the_slowest_and_puts_their_prompts_back(ray_local):
    plans = {0: [(0.02, 0.0)], 1: [(0.02, 30.0)], 2: [(0.02, 0.0)], 3: [(0.02, 30.0)], 4: [(0.02, 0.0)]}
    config = ScheduleConfig(batch_units=2, policy="overprovision", overprovision=1.0)
    engine, handles, _ = engine_for(config, plans, workers=1)
    try:
        engine.start(list(plans))
        closed, units, _ = engine.next_step(timeout=60)
        assert sorted(s.item for unit in units for s in unit) == [0, 2]
        assert len(closed.aborted) == 2
        assert engine.in_use()[:2] == [1, 3] and engine.queued == 3  # back at the front of the queue, in order
        deadline = time.monotonic() + 10
        while sorted(ray.get(handles[0].cancelled.remote())) != [1, 3] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(ray.get(handles[0].cancelled.remote())) == [1, 3]  # the worker stopped running them
    finally:
        engine.close()


@ray_case
def test_a_failed_rollout_stops_the_step_with_its_error(ray_local):
    plans = {0: [(0.02, 0.0)], 1: "not a plan"}
    config = ScheduleConfig(batch_units=2, policy="sync")
    engine, _, _ = engine_for(config, plans)
    try:
        engine.start([0, 1])
        with pytest.raises(RuntimeError, match="a streamed rollout failed"):
            engine.next_step(timeout=60)
    finally:
        engine.close()
