"""Streamed SPO with tools on the CPU backend (schedule=stream): steps from the first samples to finish, each with
its staleness and behaviour log-probs; a stopped streamed run resumes with a fresh pipeline; the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("verl")

from spo_helpers.errors import UserError
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.train import train
from spo_helpers.verl_glue.checkpoint import RunStopped

SMALL = [
    "actor_rollout_ref.rollout.val_kwargs.n=1",
    "trainer.save_freq=2",
    "trainer.test_freq=3",
    "data.train_batch_size=32",
    "actor_rollout_ref.actor.ppo_mini_batch_size=16",
    "kit.schedule.slots=48",
    "kit.schedule.max_staleness=2",
    "kit.tool_latency.dist=lognormal",
    "kit.tool_latency.mu=-3",
    "kit.tool_latency.sigma=1",
]
STREAMED = {"settings": SMALL, "tools": "sandbox", "schedule": "stream", "offline_values": "none"}
"""Streamed SPO with tools, 32 samples a step from 48 slots, and lognormal tool delays."""


def test_streamed_spo_with_tools(small_tool_world, tmp_path, train_small):
    summary = train_small("SPO", small_tool_world, tmp_path, "stream", 3, **STREAMED)
    config = yaml.safe_load((summary.run_dir / "config.yaml").read_text())["config"]
    assert config["kit"]["schedule"]["policy"] == "stream" and config["kit"]["schedule"]["slots"] == 48
    assert config["kit"]["tool_latency"]["dist"] == "lognormal"
    metrics = {r["step"]: r["data"] for r in read_step_log(summary.run_dir / "metrics.jsonl")}
    records = {r["step"]: r["data"] for r in read_step_log(summary.run_dir / "steps.jsonl")}
    # step 1: every sample was launched before any update: on-policy, and the behaviour log-probs the rollout
    # recorded are the actor's own (same weights, same temperature)
    assert records[1]["staleness"] == [0] * 32
    assert metrics[1]["stream/behaviour_abs_logprob_gap"] < 1e-4
    for step in (1, 2, 3):
        staleness = np.asarray(records[step]["staleness"])
        assert staleness.size == 32 and staleness.min() >= 0 and staleness.max() <= min(2, step - 1)
        assert len(set(records[step]["row"])) == 32  # no prompt twice in a step
        m = metrics[step]
        assert 0.0 < m["stream/slot_utilisation"] <= 1.0 + 1e-9
        assert m["stream/samples_per_second"] > 0 and m["stream/version"] == step - 1
        for key in ("stream/dropped", "stream/in_flight", "stream/staleness/mean", "tool/call_rate"):
            assert key in m, key
    # samples launched before an update and trained after it: their tokens came from the older policy
    later = [metrics[s]["stream/behaviour_abs_logprob_gap"] for s in (2, 3) if np.any(records[s]["staleness"])]
    assert all(gap > 0 for gap in later)


@pytest.mark.slow  # about 30 s each (make test-slow); make test keeps the streamed SPO run and the refusals
@pytest.mark.parametrize("schedule", ["stream", "overprovision"])
def test_grpo_streamed_by_groups(small_tool_world, tmp_path, schedule, train_small):
    extra = ["data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2"]
    if schedule == "stream":
        extra += ["kit.schedule.slots=16"]
    else:
        extra += ["kit.schedule.overprovision=0.5"]
    settings = [o for o in SMALL if not o.startswith(("data.", "actor_rollout_ref.actor", "kit.schedule"))]
    tools = {"tools": "sandbox", "schedule": schedule}
    summary = train_small("GRPO", small_tool_world, tmp_path, f"grpo_{schedule}", 3, *extra, settings=settings, **tools)
    metrics = {r["step"]: r["data"] for r in read_step_log(summary.run_dir / "metrics.jsonl")}
    records = {r["step"]: r["data"] for r in read_step_log(summary.run_dir / "steps.jsonl")}
    for step in (1, 2, 3):
        groups = np.asarray(records[step]["group"])
        rows = np.asarray(records[step]["row"])
        assert groups.size == 4 * 8 and np.bincount(groups).tolist() == [8] * 4  # 4 whole groups of 8
        staleness = np.asarray(records[step]["staleness"])  # logged per sample, a group's from its oldest member
        assert staleness.size == 4 * 8 and staleness.max() == metrics[step]["stream/staleness/max"]
        for group in range(4):  # a group's 8 responses answer one prompt, all equally stale
            assert len(set(rows[groups == group])) == 1 and len(set(staleness[groups == group])) == 1
        assert metrics[step]["stream/version"] == step - 1
        assert "critic/advantages/mean" in metrics[step] and "actor/pg_loss" in metrics[step]
    if schedule == "overprovision":
        assert all(metrics[s]["stream/staleness/max"] == 0 for s in (1, 2, 3))
        assert sum(metrics[s]["stream/aborted"] for s in (1, 2, 3)) > 0  # 6 groups launched, 4 trained
    assert metrics[1]["stream/behaviour_abs_logprob_gap"] < 1e-4


@pytest.mark.slow  # about 30 s (make test-slow)
def test_a_stopped_streamed_run_resumes_with_a_fresh_pipeline(small_tool_world, tmp_path, train_small):
    with pytest.raises(RunStopped):
        train_small("SPO", small_tool_world, tmp_path, "resumed", 3, "kit.stop_after_step=2", **STREAMED)
    resumed = train_small("SPO", small_tool_world, tmp_path, "resumed", 3, **STREAMED)
    records = {r["step"]: r["data"] for r in read_step_log(resumed.run_dir / "steps.jsonl")}
    assert sorted(records) == [1, 2, 3]
    # what was in flight at the stop is started again from the checkpoint: step 3's samples are all new
    assert records[3]["staleness"] == [0] * 32


@pytest.mark.parametrize(("method", "tools", "message"), [("SPO", "none", "tools"), ("GRPO", "none", "tools")])
def test_streaming_is_refused_where_it_does_not_run(small_tool_world, tmp_path, method, tools, message):
    with pytest.raises(UserError, match=message):
        train(
            method,
            output_dir=str(tmp_path),
            exp_name="refused",
            model_path=str(small_tool_world.model_dir),
            train_files=[str(small_tool_world.train_file)],
            val_files=[str(small_tool_world.val_file)],
            offline_values="none" if method == "SPO" else None,
            total_steps=1,
            tools=tools,
            schedule="stream",
            dry_run=True,
        )
