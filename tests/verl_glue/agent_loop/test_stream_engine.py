"""The streaming engine on scripted generations and a fake tool: steps take the first samples to finish, slow ones
carry over with their launch version, generation pauses while the trainer holds the step, aborts are cancelled."""

from __future__ import annotations

import threading
import time

import pytest

from spo_helpers.core.streaming import ScheduleConfig, StreamScheduler
from spo_helpers.verl_glue.agent_loop.stream_engine import StreamingRollout
from spo_helpers.verl_glue.agent_loop.turns import Generation, TurnConfig

from .tir_fakes import EOS, CharTokenizer, FakeTool


class SlowCalls:
    """The latency model's interface: code runs of the listed items wait ``seconds``, others nothing."""

    enabled = True

    def __init__(self, slow_units: set[int], seconds: float) -> None:
        self.slow_units, self.seconds = slow_units, seconds

    def delay(self, unit_id: int, member: int, call: int) -> float:
        return self.seconds if unit_id in self.slow_units else 0.0


class Flush:
    """Batched generation: a prompt without an interpreter answer writes code, then answers; log-prob -0.25 per
    token. Records each call's size and whether it ran while someone held the lock it is given."""

    def __init__(self, tokenizer: CharTokenizer) -> None:
        self.tok = tokenizer
        self.sizes: list[int] = []

    def __call__(self, requests):
        self.sizes.append(len(requests))
        answers = []
        for request in requests:
            text = self.tok.decode(request.prompt_ids)
            reply = "<code>1</code>" if "<interpreter>" not in text else f"42{EOS}"
            ids = tuple(self.tok.encode(reply))
            answers.append(Generation(token_ids=ids, log_probs=tuple(-0.25 for _ in ids)))
        return answers


def make_engine(config: ScheduleConfig, slow_units=(), seconds=0.6):
    tok = CharTokenizer()
    flush = Flush(tok)
    engine = StreamingRollout(
        StreamScheduler(config),
        flush=flush,
        prompt_ids=lambda item: tok.encode(f"<user>{item}</user>"),
        turn_config=TurnConfig(response_length=400),
        tool=FakeTool(),
        tokenizer=tok,
        latency=SlowCalls(set(slow_units), seconds),
    )
    return engine, flush


def test_stream_takes_the_first_to_finish_and_carries_slow_samples_over():
    config = ScheduleConfig(batch_units=2, policy="stream", slots=4)
    engine, flush = make_engine(config, slow_units={0, 1})
    try:
        engine.start([f"q{i}" for i in range(400)])
        batch, units, stats = engine.next_step(timeout=20)
        # units 0 and 1 wait 0.6 s in their code run: units 2 and 3 finish first
        assert [u[0].request.unit_id for u in units] == [2, 3]
        assert list(batch.staleness) == [0, 0]
        assert [u[0].item for u in units] == ["q2", "q3"]
        sample = units[0][0]
        assert sample.result.response_logprobs is not None
        mask, logprobs = sample.result.response_mask, sample.result.response_logprobs
        assert all(lp == -0.25 for lp, m in zip(logprobs, mask, strict=True) if m)  # model tokens: behaviour
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if not m)  # interpreter tokens
        assert stats.finished >= 2 and 0 < stats.utilisation(4, time.perf_counter()) <= 1.0
        sizes_at_close = len(flush.sizes)
        time.sleep(0.2)  # the trainer holds the step: no generation while it updates
        assert len(flush.sizes) == sizes_at_close
        engine.resume()
        staleness = {}
        while not {0, 1} <= set(staleness):  # fast units fill steps while the slow ones wait in their code run
            batch, units, _ = engine.next_step(timeout=20)
            staleness.update({u[0].request.unit_id: s for u, s in zip(units, batch.staleness, strict=True)})
            time.sleep(0.05)  # an update
            engine.resume()
        # the slow units were launched at version 0 and trained at a later step: stale by at least one update
        assert staleness[0] >= 1 and staleness[1] >= 1
        assert max(flush.sizes) > 1  # requests were batched
    finally:
        engine.close()


def test_max_staleness_drops_and_counts():
    config = ScheduleConfig(batch_units=2, policy="stream", slots=3, max_staleness=0)
    engine, _ = make_engine(config, slow_units={0}, seconds=1.0)
    try:
        engine.start([f"q{i}" for i in range(400)])
        seen, dropped = set(), set()
        for _ in range(30):  # until unit 0's slow code run is over (it spans several updates)
            if 0 in dropped:
                break
            batch, units, _ = engine.next_step(timeout=20)
            assert all(s == 0 for s in batch.staleness)
            seen |= {u[0].request.unit_id for u in units}
            dropped |= set(batch.dropped)
            time.sleep(0.3)  # an update: unit 0's code run (1 s) spans it
            engine.resume()
        assert 0 not in seen and 0 in dropped
        assert engine.scheduler.counts.dropped >= 1
    finally:
        engine.close()


def test_overprovision_cancels_the_rest_and_returns_their_prompts():
    config = ScheduleConfig(batch_units=2, policy="overprovision", overprovision=1.0)
    engine, _ = make_engine(config, slow_units={0, 1}, seconds=5.0)
    try:
        engine.start([f"q{i}" for i in range(8)])
        start = time.perf_counter()
        batch, units, _ = engine.next_step(timeout=20)
        assert time.perf_counter() - start < 4.0  # did not wait for the slow ones
        assert sorted(u[0].request.unit_id for u in units) == [2, 3]
        assert sorted(batch.aborted) == [0, 1]
        engine.resume()
        time.sleep(0.3)
        # the aborted prompts went back to the front of the queue, so the next step's four requests run them
        assert engine.queued == 2
        assert "q0" not in engine.in_use()[:2] and "q1" not in engine.in_use()[:2]
        assert {"q0", "q1"} <= set(engine.in_use())
    finally:
        engine.close()


def test_a_failing_rollout_stops_the_step_with_its_error():
    class Broken(FakeTool):
        def run(self, code):
            raise OSError("sandbox gone")

    tok = CharTokenizer()
    engine = StreamingRollout(
        StreamScheduler(ScheduleConfig(batch_units=2, policy="stream", slots=2)),
        flush=Flush(tok),
        prompt_ids=lambda item: tok.encode(item),
        turn_config=TurnConfig(response_length=400),
        tool=Broken(),
        tokenizer=tok,
    )
    try:
        engine.start(["a", "b", "c"])
        with pytest.raises(RuntimeError, match="sandbox gone"):
            engine.next_step(timeout=20)
    finally:
        engine.close()
    assert not any(t.name == "stream-rollout" and t.is_alive() for t in threading.enumerate())


def test_groups_share_their_prompt_and_close_whole():
    config = ScheduleConfig(batch_units=2, policy="stream", slots=4, group_size=2)
    engine, _ = make_engine(config, slow_units={0}, seconds=0.6)
    try:
        engine.start([f"q{i}" for i in range(400)])
        batch, units, _ = engine.next_step(timeout=20)
        assert list(batch.staleness) == [0, 0]
        assert [len(unit) for unit in units] == [2, 2]
        for unit in units:
            assert [s.request.member for s in unit] == [0, 1]
            assert len({s.item for s in unit}) == 1 and len({s.request.unit_id for s in unit}) == 1
        assert 0 not in {unit[0].request.unit_id for unit in units}  # the slow group is not complete yet
        assert len({unit[0].item for unit in units}) == 2
    finally:
        engine.close()
