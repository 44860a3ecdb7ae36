"""The rollout scheduler: which requests start, which finished ones make each step, on hand-made finish orders."""

from __future__ import annotations

import numpy as np
import pytest

from spo_helpers.analysis.throughput import SimConfig, _TimeStream, simulate
from spo_helpers.core.streaming import Request, ScheduleConfig, StreamScheduler, replay


def ids(requests):
    return [r.request_id for r in requests]


def finish(scheduler, *request_ids):
    for rid in request_ids:
        scheduler.finished(rid)


def check_counts(scheduler):
    c = scheduler.counts
    assert c.launched == c.finished + c.aborted + c.in_flight
    assert c.pending >= 0
    return c


# ---------------------------------------------------------------------------------------------- stream
def test_stream_spo_takes_units_in_completion_order_and_carries_the_rest():
    s = StreamScheduler(ScheduleConfig(batch_units=2, policy="stream", slots=3))
    assert s.launches() == [Request(0, 0, 0, 0), Request(1, 1, 0, 0), Request(2, 2, 0, 0)]
    assert s.launches() == []  # all 3 slots busy
    finish(s, 2)
    assert not s.ready()
    finish(s, 0)
    assert s.ready()
    step0 = s.close_step()
    assert (step0.step, step0.version, step0.request_ids, step0.staleness) == (0, 0, (2, 0), (0, 0))
    assert step0.dropped == () and step0.aborted == ()
    assert s.launches() == []  # paused during the update
    with pytest.raises(RuntimeError, match="update is running"):
        s.close_step()
    s.finish_update()
    # two slots are free (request 1 still runs from version 0): requests 3 and 4 start at version 1
    assert s.launches() == [Request(3, 3, 0, 1), Request(4, 4, 0, 1)]
    finish(s, 3, 1)
    step1 = s.close_step()
    # request 1 was launched at version 0 and is used at version 1: staleness 1
    assert (step1.step, step1.version, step1.request_ids, step1.staleness) == (1, 1, (3, 1), (0, 1))
    c = check_counts(s)
    assert (c.launched, c.finished, c.used, c.dropped, c.aborted, c.in_flight) == (5, 4, 4, 0, 0, 1)


def test_stream_drops_units_staler_than_the_bound():
    s = StreamScheduler(ScheduleConfig(batch_units=2, policy="stream", slots=3, max_staleness=0))
    s.launches()  # 0, 1, 2 at version 0
    finish(s, 2, 0)
    s.close_step()
    s.finish_update()
    assert ids(s.launches()) == [3, 4]
    finish(s, 3, 1)  # unit 1: version 1 - 0 = 1 > 0, dropped; it does not count towards the batch
    assert not s.ready()
    assert ids(s.launches()) == [5, 6]  # request 4 still runs
    finish(s, 5)
    step1 = s.close_step()
    assert step1.request_ids == (3, 5) and step1.staleness == (0, 0) and step1.dropped == (1,)
    c = check_counts(s)
    assert (c.used, c.dropped, c.in_flight) == (4, 1, 2)


def test_a_waiting_unit_is_dropped_when_an_update_makes_it_too_stale():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=2, max_staleness=0))
    s.launches()  # 0, 1
    finish(s, 0, 1)  # two complete units wait; a step takes one
    assert s.close_step().request_ids == (0,)
    assert s.counts.pending == 1
    s.finish_update()  # unit 1 would now be used at version 1: staleness 1 > 0
    assert not s.ready()
    assert s.counts.dropped == 1
    assert ids(s.launches()) == [2, 3]
    finish(s, 3)
    step1 = s.close_step()
    assert step1.request_ids == (3,) and step1.dropped == (1,)


def test_stream_groups_launch_consecutively_and_complete_only_when_all_members_finish():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=3, group_size=2))
    # unit 0 = requests 0, 1; unit 1 opens with request 2
    assert s.launches() == [Request(0, 0, 0, 0), Request(1, 0, 1, 0), Request(2, 1, 0, 0)]
    finish(s, 0)
    assert not s.ready()  # unit 0 has one member left
    assert s.launches() == [Request(3, 1, 1, 0)]
    finish(s, 2)
    assert not s.ready()
    finish(s, 1)
    step0 = s.close_step()
    assert step0.unit_ids == (0,) and step0.request_ids == (0, 1)
    assert [r.member for r in step0.units[0]] == [0, 1]
    s.finish_update()
    assert s.launches() == [Request(4, 2, 0, 1), Request(5, 2, 1, 1)]
    finish(s, 3)  # unit 1 = request 2 (version 0) + request 3 (version 0)
    step1 = s.close_step()
    assert step1.request_ids == (2, 3) and step1.staleness == (1,)


def test_a_group_counts_from_its_oldest_member():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=2, group_size=2))
    s.launches()  # unit 0 = 0, 1
    finish(s, 0)
    assert s.launches() == [Request(2, 1, 0, 0)]
    finish(s, 1)
    s.close_step()
    s.finish_update()
    assert s.launches() == [Request(3, 1, 1, 1)]  # unit 1's second member starts at version 1
    finish(s, 3, 2)
    step1 = s.close_step()
    assert step1.request_ids == (2, 3) and step1.staleness == (1,)  # version 1 - min(0, 1)


def test_launches_go_on_during_an_update_when_not_paused():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=2, pause_during_update=False))
    s.launches()
    finish(s, 0)
    s.close_step()
    assert s.updating
    assert s.launches() == [Request(2, 2, 0, 0)]  # old version during the update
    finish(s, 2)
    assert not s.ready()  # no step closes during an update
    s.finish_update()
    assert s.ready()
    assert s.close_step().staleness == (1,)


# ---------------------------------------------------------------------------------------------- sync
def test_sync_launches_one_step_waits_for_all_and_never_carries_over():
    s = StreamScheduler(ScheduleConfig(batch_units=2, policy="sync", group_size=2))
    assert [(r.request_id, r.unit_id, r.member) for r in s.launches()] == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    assert s.launches() == []
    finish(s, 0, 1)
    assert not s.ready()  # unit 1 still runs
    finish(s, 3, 2)
    step0 = s.close_step()
    assert step0.request_ids == (0, 1, 2, 3) and step0.staleness == (0, 0) and step0.aborted == ()
    assert s.launches() == []
    s.finish_update()
    second = s.launches()
    assert ids(second) == [4, 5, 6, 7] and {r.version for r in second} == {1}
    finish(s, 7, 6, 5, 4)
    step1 = s.close_step()
    assert step1.request_ids == (6, 7, 4, 5) and step1.staleness == (0, 0)  # unit 3 completed first
    c = check_counts(s)
    assert (c.launched, c.used, c.pending, c.in_flight) == (8, 8, 0, 0)


def test_sync_with_a_slot_cap_starts_the_step_first_in_first_out():
    s = StreamScheduler(ScheduleConfig(batch_units=3, policy="sync", slots=2))
    assert ids(s.launches()) == [0, 1]
    assert s.launches() == []
    finish(s, 1)
    assert ids(s.launches()) == [2]
    assert s.launches() == []  # the step has launched its 3 requests
    finish(s, 2, 0)
    assert s.close_step().request_ids == (1, 2, 0)


def test_sync_without_the_pause_overlaps_the_next_step_with_the_update():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="sync", pause_during_update=False))
    s.launches()
    finish(s, 0)
    s.close_step()
    assert s.launches() == [Request(1, 1, 0, 0)]  # launched during update 0, trained at version 1
    finish(s, 1)
    s.finish_update()
    assert s.close_step().staleness == (1,)


# ---------------------------------------------------------------------------------------------- overprovision
def test_overprovision_takes_the_first_complete_units_and_aborts_the_rest():
    config = ScheduleConfig(batch_units=2, policy="overprovision", group_size=2, overprovision=0.5)
    assert config.units_per_step == 3  # ceil(2 * 1.5)
    s = StreamScheduler(config)
    assert ids(s.launches()) == [0, 1, 2, 3, 4, 5]  # units 0: {0,1}, 1: {2,3}, 2: {4,5}
    finish(s, 0, 4, 5, 2)  # unit 2 complete; units 0 and 1 half done
    assert not s.ready()
    finish(s, 1)  # unit 0 complete
    step0 = s.close_step()
    assert step0.request_ids == (4, 5, 0, 1) and step0.unit_ids == (2, 0)
    assert step0.aborted == (3,) and step0.staleness == (0, 0)
    c = check_counts(s)
    # request 2 finished in the unused unit 1: discarded; request 3 aborted
    assert (c.launched, c.finished, c.used, c.discarded, c.aborted, c.in_flight, c.pending) == (6, 5, 4, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="not running"):
        s.finished(3)
    s.finish_update()
    assert ids(s.launches()) == [6, 7, 8, 9, 10, 11]


def test_overprovision_rounds_up_without_float_noise():
    assert ScheduleConfig(batch_units=10, policy="overprovision", overprovision=0.1).units_per_step == 11
    assert ScheduleConfig(batch_units=10, policy="overprovision", overprovision=0.15).units_per_step == 12
    assert ScheduleConfig(batch_units=4, policy="overprovision", group_size=8).requests_per_step == 32


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"policy": "async"}, "policy"),
        ({"batch_units": 0}, "batch_units"),
        ({"batch_units": 2.0}, "batch_units"),
        ({"group_size": 0}, "group_size"),
        ({"policy": "stream"}, "slots >= group_size"),
        ({"policy": "stream", "slots": 4, "group_size": 8}, "slots >= group_size"),
        ({"slots": 0}, "slots"),
        ({"policy": "overprovision", "overprovision": -0.1}, "overprovision"),
        ({"policy": "overprovision", "overprovision": float("inf")}, "overprovision"),
        ({"overprovision": 0.5}, "policy 'overprovision' only"),
        ({"policy": "stream", "slots": 4, "max_staleness": -1}, "max_staleness"),
        ({"max_staleness": 2}, "policy 'stream' only"),
        ({"pause_during_update": 1}, "pause_during_update"),
    ],
)
def test_bad_configs_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        ScheduleConfig(**{"batch_units": 4, **changes})


def test_bad_calls_are_refused():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=1))
    with pytest.raises(ValueError, match="unknown request id 0"):
        s.finished(0)
    s.launches()
    with pytest.raises(ValueError, match="unknown request id 7"):
        s.finished(7)
    with pytest.raises(RuntimeError, match="0 complete units wait"):
        s.close_step()
    with pytest.raises(RuntimeError, match="close_step first"):
        s.finish_update()
    s.finished(0)
    with pytest.raises(ValueError, match="already finished"):
        s.finished(0)
    with pytest.raises(ValueError, match="start_version"):
        StreamScheduler(s.config, start_version=-1)


def test_a_resumed_scheduler_starts_at_its_version():
    s = StreamScheduler(ScheduleConfig(batch_units=1, policy="stream", slots=1), start_version=7)
    assert s.launches() == [Request(0, 0, 0, 7)]
    finish(s, 0)
    step = s.close_step()
    assert (step.step, step.version, step.staleness) == (0, 7, (0,))


def test_the_same_finish_order_gives_the_same_batches():
    def run():
        s = StreamScheduler(ScheduleConfig(batch_units=3, policy="stream", slots=5, group_size=2))
        rng = np.random.default_rng(4)
        running, batches = [], []
        while len(batches) < 6:
            running += ids(s.launches())
            s.finished(running.pop(int(rng.integers(len(running)))))
            if s.ready():
                batches.append(s.close_step())
                s.finish_update()
        return batches

    first = run()
    assert run() == first
    assert [b.step for b in first] == list(range(6)) and max(max(b.staleness) for b in first) >= 1


# ---------------------------------------------------------------------------------------------- replay
def test_replay_stream_by_hand():
    # slots 2, batch 2, durations by request id. t=1: 0 ends, 2 starts (v0, ends 2). t=2: 2 ends -> step 0 =
    # (0, 2), 3 starts (v1, ends 3). t=3: 1 (v0) then 3 end -> step 1 = (1, 3), staleness (1, 0); 4, 5 start (v2).
    # t=4: step 2 = (4, 5). Two slots busy all along: busy 8 over 2 x 4.
    result = replay(ScheduleConfig(batch_units=2, policy="stream", slots=2), [1, 3, 1, 1, 1, 1, 1, 1], steps=3)
    assert [b.request_ids for b in result.batches] == [(0, 2), (1, 3), (4, 5)]
    assert result.staleness == ((0, 0), (1, 0), (0, 0))
    assert result.close_times == (2.0, 3.0, 4.0)
    assert (result.wall_time, result.busy_time, result.utilisation, result.throughput) == (4.0, 8.0, 1.0, 1.5)


def test_replay_stream_drops_by_hand():
    # As above with max_staleness 0. t=3: unit 1 (v0) dropped at version 1, step 1 waits; 4, 5 start at v1.
    # t=4: 4 ends -> step 1 = (3, 4); 5 ends after the update: version 2 - 1 = 1, dropped; 6, 7 start at v2.
    # t=5: step 2 = (6, 7).
    config = ScheduleConfig(batch_units=2, policy="stream", slots=2, max_staleness=0)
    result = replay(config, [1, 3, 1, 1, 1, 1, 1, 1], steps=3)
    assert [b.request_ids for b in result.batches] == [(0, 2), (3, 4), (6, 7)]
    assert [b.dropped for b in result.batches] == [(), (1,), (5,)]
    assert result.close_times == (2.0, 4.0, 5.0) and result.dropped == 2
    assert result.throughput == 6 / 5


def test_replay_overprovision_by_hand():
    # 3 units per step of 2. Step 0: 0 (3), 1 (1), 2 (2) -> closes at 2 with (1, 2), 0 aborted. Step 1 at t=2:
    # 3 (1), 4 (1), 5 (5) -> closes at 3 with (3, 4), 5 aborted. Busy 3 + 2 + 3 = 8 over 3 slots x 3.
    config = ScheduleConfig(batch_units=2, policy="overprovision", overprovision=0.5)
    result = replay(config, [3, 1, 2, 1, 1, 5], steps=2)
    assert [b.request_ids for b in result.batches] == [(1, 2), (3, 4)]
    assert [b.aborted for b in result.batches] == [(0,), (5,)]
    assert result.close_times == (2.0, 3.0) and result.aborted == 2 and result.slots == 3
    assert result.utilisation == pytest.approx(8 / 9) and result.throughput == pytest.approx(4 / 3)


def test_replay_sync_waits_for_the_slowest():
    # 2 units of 2: a step lasts as long as its slowest request; update 0.5 after each step.
    config = ScheduleConfig(batch_units=2, policy="sync", group_size=2)
    # Step 0: units {0: 1, 1: 2} and {2: 1, 3: 4} -> closes at 4. Step 1 starts at 4.5: unit 2 = {4: 3, 5: 1}
    # ends at 7.5, unit 3 = {6: 1, 7: 1} at 5.5 and comes first. Busy: the durations, 8 + 6.
    result = replay(config, [1, 2, 1, 4, 3, 1, 1, 1], steps=2, update_time=0.5)
    assert result.close_times == (4.0, 7.5) and result.wall_time == 8.0
    assert [b.unit_ids for b in result.batches] == [(0, 1), (3, 2)]
    assert result.staleness == ((0, 0), (0, 0))
    assert result.busy_time == 8.0 + 6.0 and result.counts.used == 8


def test_replay_pause_freezes_running_requests():
    # slots 2, batch 1, every request takes 1, update 0.5, paused. t=1: 0 ends -> step 0; 1 is frozen until 1.5.
    # t=1.5: update ends, 1 ends (v0 at version 1) -> step 1, staleness 1. t=2: 2, 3 start (v2); t=3: step 2.
    config = ScheduleConfig(batch_units=1, policy="stream", slots=2)
    result = replay(config, lambda r: 1.0, steps=3, update_time=0.5)
    assert [b.request_ids for b in result.batches] == [(0,), (1,), (2,)]
    assert result.close_times == (1.0, 1.5, 3.0) and result.staleness == ((0,), (1,), (0,))
    assert result.wall_time == 3.5 and result.busy_time == 4.0


def test_replay_without_the_pause_launches_during_updates():
    # Same, not paused. t=1: step 0 closes on 0, 1 ends during update 0; 2, 3 start at v0. t=1.5: update 0 ends
    # -> step 1 = (1,), staleness 1. t=2: update 1 ends, 2 ends -> step 2 = (2,), staleness 2 - 0 = 2.
    config = ScheduleConfig(batch_units=1, policy="stream", slots=2, pause_during_update=False)
    result = replay(config, lambda r: 1.0, steps=3, update_time=0.5)
    assert result.close_times == (1.0, 1.5, 2.0) and result.staleness == ((0,), (1,), (2,))
    assert result.wall_time == 2.5 and result.busy_time == 4.0


@pytest.mark.parametrize(("slots", "batch_units", "steps"), [(4, 4, 3), (5, 3, 5), (8, 2, 8), (3, 6, 2)])
def test_stream_throughput_is_slots_over_duration(slots, batch_units, steps):
    # Every wave of `slots` requests takes 2.0; steps * batch_units is a whole number of waves: wall is exact.
    config = ScheduleConfig(batch_units=batch_units, policy="stream", slots=slots)
    result = replay(config, lambda r: 2.0, steps=steps)
    assert result.throughput == slots / 2.0
    assert result.utilisation == 1.0


def test_replay_refuses_short_or_bad_durations():
    config = ScheduleConfig(batch_units=1, policy="stream", slots=2)
    with pytest.raises(ValueError, match="durations has 2 entries"):
        replay(config, [1.0, 1.0], steps=3)  # step 2 needs a third request
    with pytest.raises(ValueError, match="finite and >= 0"):
        replay(config, [1.0, -1.0], steps=1)
    with pytest.raises(ValueError, match="steps"):
        replay(config, [1.0], steps=0)


def test_replay_is_deterministic():
    config = ScheduleConfig(batch_units=3, policy="stream", slots=7, group_size=2, max_staleness=1)

    def duration(request):
        return 1.0 + (request.request_id * 7919 % 13) / 4

    first, second = replay(config, duration, steps=10), replay(config, duration, steps=10)
    assert first.batches == second.batches and first.close_times == second.close_times
    assert first.dropped > 0  # the bound bites in this setting


# ---------------------------------------------------------------------------------------------- the simulation
def simulation_draws(sim: SimConfig, count: int) -> np.ndarray:
    """The simulation's trajectory times in its draw order (taken in chunks no larger than its block)."""
    stream = _TimeStream(sim)
    return np.concatenate([stream.take(512) for _ in range(-(-count // 512))])


def test_stream_matches_the_simulation_with_constant_times():
    sim = simulate(SimConfig(policy="spo", slots=8, batch_size=4, steps=6, dist="constant", scale=2.0))
    result = replay(ScheduleConfig(batch_units=4, policy="stream", slots=8), lambda r: 2.0, steps=6)
    assert result.wall_time == sim.wall_time == 6.0
    assert result.throughput == sim.throughput == 4.0
    assert np.concatenate(result.staleness).tolist() == sim.staleness.tolist()


@pytest.mark.parametrize(
    ("policy", "group_size", "synchronous", "max_staleness"),
    [("spo", 1, True, 1), ("spo", 1, False, None), ("grpo_async", 4, True, 2), ("grpo_async", 4, False, None)],
)
def test_stream_matches_the_simulation(policy, group_size, synchronous, max_staleness):
    sim_config = SimConfig(
        policy=policy,
        slots=24,
        batch_size=16,
        group_size=group_size,
        steps=20,
        sigma=1.0,
        update_time=0.7,
        synchronous=synchronous,
        max_staleness=max_staleness,
        seed=3,
    )
    sim = simulate(sim_config)
    config = ScheduleConfig(
        batch_units=16 // group_size,
        policy="stream",
        slots=24,
        group_size=group_size,
        max_staleness=max_staleness,
        pause_during_update=synchronous,
    )
    result = replay(config, simulation_draws(sim_config, 4096), steps=20, update_time=0.7)
    assert result.wall_time == pytest.approx(sim.wall_time, rel=1e-12)
    assert result.busy_time == pytest.approx(sim.busy_time, rel=1e-9)
    assert result.dropped == sim.dropped and result.counts.launched == sim.launched
    # The simulation gives each member its own staleness; a unit's is its oldest member's, the members' max.
    per_unit = sim.staleness.reshape(-1, group_size).max(axis=1)
    assert np.concatenate(result.staleness).tolist() == per_unit.tolist()


@pytest.mark.parametrize(("overprovision", "slots"), [(0.0, 12), (0.0, 64), (0.5, 48)])
def test_sync_and_overprovision_match_the_simulation(overprovision, slots):
    sim_config = SimConfig(
        policy="grpo", slots=slots, batch_size=32, group_size=4, steps=10, overprovision=overprovision, seed=5
    )
    sim = simulate(sim_config)
    config = ScheduleConfig(
        batch_units=8,
        policy="overprovision" if overprovision else "sync",
        group_size=4,
        slots=slots,
        overprovision=overprovision,
    )
    result = replay(config, simulation_draws(sim_config, 1024), steps=10)
    assert result.wall_time == pytest.approx(sim.wall_time, rel=1e-12)
    assert result.busy_time == pytest.approx(sim.busy_time, rel=1e-9)
    assert result.utilisation == pytest.approx(sim.utilisation, rel=1e-9)
    assert result.aborted == sim.aborted  # no request waits for a slot when some are aborted (48 slots)
