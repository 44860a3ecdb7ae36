"""The latency model in the turn logic: each code run waits its added delay on the event loop, not on a thread."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spo_helpers.verl_glue.agent_loop.turns import ToolTurns, TurnConfig, run_turns

from .tir_fakes import CharTokenizer, FakeTool, ScriptedModel


def test_run_turns_waits_the_delay_without_holding_a_thread():
    tok = CharTokenizer()
    config = TurnConfig(response_length=400)
    texts = ["<code>1+1</code>", "<code>2+2</code>", "done\x00"]
    waits = {0: 0.3, 1: 0.1}

    async def many():
        # 8 rollouts at once on a tool whose executor has one thread: the delays overlap, the runs do not block
        tool = FakeTool()
        tool.executor = ThreadPoolExecutor(max_workers=1)
        jobs = []
        for _ in range(8):
            turns = ToolTurns(tok.encode("<user>q</user>"), config, tok, tool.extract)
            jobs.append(run_turns(turns, ScriptedModel(texts, tok), tool, extra_latency=waits.__getitem__))
        return await asyncio.gather(*jobs)

    start = time.perf_counter()
    results = asyncio.run(many())
    elapsed = time.perf_counter() - start
    assert elapsed < 0.4 * 8 / 2  # serial delays would take 3.2 s
    for result in results:
        assert result.metrics.tool_calls == 2
        assert result.metrics.sandbox_seconds == pytest.approx(2 * 0.25 + 0.4, abs=1e-9)  # the fake's 0.25 s each
        assert result.metrics.tool_seconds >= 0.4
