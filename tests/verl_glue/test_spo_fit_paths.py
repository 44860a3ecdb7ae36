"""The paths of the official SPO ``fit()`` beyond the SPO step: profiling, the checkpoint forced before a
capacity block expires, rollout-vs-actor metrics and rollout correction, and the two paths SPO refuses."""

from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("verl")

from verl import DataProto

from spo_helpers.errors import UserError
from spo_helpers.formats.checkpoints import complete_checkpoints
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.verl_glue.config import RunSpec, build_config
from spo_helpers.verl_glue.spo_trainer import ProfileSteps, fit_path_refusals, rollout_correction

FAST = ["actor_rollout_ref.rollout.val_kwargs.n=2"]
VALUES_SEED = 5
"""The runs' offline values: the small world's of this seed."""


def config_with(*overrides):
    spec = RunSpec(method="SPO", preset="cpu", model_path="/m", train_files=["/d.parquet"], overrides=list(overrides))
    return build_config(spec)


# ---------------------------------------------------------------------------------------------- units
def schedule(steps, continuous, last=6):
    profile = ProfileSteps(steps, continuous, first_step=1)
    out = []
    for step in range(1, last + 1):
        out.append((step, profile.start(), profile.stop(step)))
    return [(step, start, stop) for step, start, stop in out if start or stop]


def test_profile_steps_follow_verls_schedule():
    # each listed step profiled on its own
    assert schedule([2, 3, 5], continuous=False) == [(2, True, True), (3, True, True), (5, True, True)]
    # consecutive listed steps as one span
    assert schedule([2, 3, 5], continuous=True) == [(2, True, False), (3, False, True), (5, True, True)]
    assert schedule(None, continuous=False) == []


def test_refused_paths_name_the_key_and_the_way_out():
    assert fit_path_refusals(config_with()) == []
    (text,) = fit_path_refusals(config_with("reward_model.launch_reward_fn_async=True"))
    assert "launch_reward_fn_async=True" in text and "set it to False" in text
    (text,) = fit_path_refusals(config_with("algorithm.rollout_correction.bypass_mode=True"))
    assert "bypass_mode=True" in text and "rollout_is" in text


def mismatch_batch(n=4, length=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, length, generator=generator)
    rollout = old + 0.05 * torch.randn(n, length, generator=generator)
    mask = torch.ones(n, length)
    mask[:, -2:] = 0
    return DataProto.from_dict(
        tensors={
            "old_log_probs": old,
            "rollout_log_probs": rollout,
            "response_mask": mask,
            "responses": torch.zeros(n, length, dtype=torch.long),
            "attention_mask": torch.ones(n, 2 * length, dtype=torch.long),
        }
    )


def test_rollout_correction_as_verls_decoupled_mode():
    config = config_with()
    plain = DataProto.from_dict(tensors={"old_log_probs": torch.zeros(2, 3), "response_mask": torch.ones(2, 3)})
    assert rollout_correction(plain, config)[1] == {}  # the rollout returned no log-probs: nothing to compare
    batch, metrics = rollout_correction(mismatch_batch(), config)
    assert "training/rollout_probs_diff_mean" in metrics
    assert any(k.startswith("rollout_corr/") for k in metrics)
    assert "rollout_is_weights" not in batch.batch.keys()  # noqa: SIM118 - metrics only until rollout_is is set
    weighted, _ = rollout_correction(mismatch_batch(), config_with("algorithm.rollout_correction.rollout_is=token"))
    weights = weighted.batch["rollout_is_weights"]
    assert weights.shape == (4, 6) and torch.all(weights[:, :4] > 0)


# ---------------------------------------------------------------------------------------------- a run
def test_profiling_and_the_forced_checkpoint_in_an_spo_run(
    small_world, small_world_values, train_small, tmp_path, monkeypatch
):
    """verl's profiler hooks start and stop around the listed steps, a memory snapshot follows each step with the
    torch_memory tool, and a capacity block about to expire forces a checkpoint between save_freq's."""
    from spo_helpers.verl_glue.cpu_backend import CPUActorRolloutWorkerGroup

    calls = []
    monkeypatch.setattr(CPUActorRolloutWorkerGroup, "start_profile", lambda self, **kw: calls.append(("start", kw)))
    monkeypatch.setattr(CPUActorRolloutWorkerGroup, "stop_profile", lambda self: calls.append(("stop", {})))
    monkeypatch.setattr(
        CPUActorRolloutWorkerGroup, "dump_memory_snapshot", lambda self, **kw: calls.append(("snapshot", kw))
    )
    # The block "expires" in 10 minutes; with 1000 s of margin every step after the first is close to it (the
    # first has no step duration yet, as in verl's fit()).
    monkeypatch.setenv("MLP_CURRENT_CAPACITY_BLOCK_EXPIRATION_TIMESTAMP", str(time.time() + 600))
    summary = train_small(
        "SPO",
        small_world,
        tmp_path,
        "paths",
        3,
        "trainer.save_freq=100",
        "trainer.test_freq=100",
        "trainer.esi_redundant_time=1000",
        "global_profiler.steps=[2,3]",
        "global_profiler.profile_continuous_steps=true",
        "global_profiler.tool=torch_memory",
        settings=FAST,
        offline_values=small_world_values(VALUES_SEED),
    )
    assert summary.steps == 3
    assert [c for c in calls if c[0] != "snapshot"] == [("start", {"role": "e2e", "profile_step": 2}), ("stop", {})]
    snapshots = [c[1] for c in calls if c[0] == "snapshot"]
    assert snapshots == [{"tag": f"post_update_step{s}", "sub_dir": f"step{s}"} for s in (2, 3, 4)]
    steps = sorted(int(p.name.rsplit("_", 1)[1]) for p in complete_checkpoints(summary.run_dir / "checkpoints"))
    assert steps == [2, 3]  # 2: forced by the expiring block; 3: the last step
    assert [r["step"] for r in read_step_log(summary.run_dir / "steps.jsonl")] == [1, 2, 3]
    # Validation metrics named as in the official logs: verl's core variable is `acc` (the reward returns it),
    # `reward` (the summed score) and `score` go to val-aux.
    initial = read_step_log(summary.run_dir / "metrics.jsonl")[0]
    assert initial["step"] == 0
    sources = {key.split("/")[1] for key in initial["data"] if key.startswith("val-core/")}
    assert sources
    for source in sources:
        for name in ("acc/mean@2", "acc/maj@2/mean", "acc/best@2/mean"):
            assert f"val-core/{source}/{name}" in initial["data"]
        assert f"val-aux/{source}/reward/mean@2" in initial["data"]
        assert f"val-aux/{source}/score/mean@2" in initial["data"]
    assert not [key for key in initial["data"] if key.startswith("val-core/") and "/acc/" not in key]


def test_an_asynchronous_reward_is_refused_before_the_first_step(
    small_world, small_world_values, train_small, tmp_path
):
    values, async_reward = small_world_values(VALUES_SEED), "reward_model.launch_reward_fn_async=True"
    with pytest.raises(UserError, match="launch_reward_fn_async"):
        train_small("SPO", small_world, tmp_path, "async", 2, async_reward, settings=FAST, offline_values=values)
    assert not (tmp_path / "spo" / "async" / "steps.jsonl").exists()
