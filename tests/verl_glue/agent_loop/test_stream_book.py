"""``RolloutBook``: the bookkeeping both streaming engines share, on hand-made event times."""

from __future__ import annotations

from spo_helpers.core.streaming import ScheduleConfig, StreamScheduler
from spo_helpers.verl_glue.agent_loop.stream_book import RolloutBook


def test_a_steps_busy_time_and_elapsed_time_cover_the_same_span():
    """Every slot busy all the time gives a utilisation of exactly 1 in every step: the stats of a step start at the
    instant the previous close accounted to, not when the close finished its bookkeeping."""
    book = RolloutBook(StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=2, max_staleness=4)))
    book.add(list("abcdefgh"))
    running = dict(book.take_launches(now=0.0))  # two requests: both slots busy from t = 0
    assert len(running) == 2
    closes = []
    for now in (1.0, 3.0, 6.0):  # the oldest request ends, its slot takes the next prompt at once, a step closes
        oldest = min(running, key=lambda request: request.request_id)
        assert book.finished(oldest, result=None, now=now)
        del running[oldest]
        running.update(book.take_launches(now=now))
        closed, units, stats = book.close_step(now)
        book.scheduler.finish_update()
        assert len(units) == 1 and not closed.dropped and len(running) == 2
        closes.append((now, stats))
    for (now, stats), start in zip(closes[1:], (1.0, 3.0), strict=True):  # the first opened when the book was made
        assert stats.started_at == start and stats.busy_slot_seconds == 2 * (now - start)
        assert stats.utilisation(book.slots, now) == 1.0
