"""GRPO and SPO through verl's trainer on the in-process CPU backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from spo_helpers.errors import UserError
from spo_helpers.formats.checkpoints import newest_complete_checkpoint
from spo_helpers.formats.offline_values import read_offline_values, write_offline_values
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.train import train
from spo_helpers.verl_glue.checkpoint import RunStopped


def test_grpo_short_run(small_world, tmp_path, train_small, stable_metrics):
    summary = train_small("GRPO", small_world, tmp_path, "grpo", 2)
    assert summary.steps == 2 and summary.samples == 2 * 16 * 8
    metrics = dict(stable_metrics(summary.run_dir))
    for key in ("kit/zero_adv_frac", "kit/adv_var_before_norm", "kit/samples_total", "kit/calibration/brier"):
        assert key in metrics[2]
    assert 0.0 <= metrics[2]["kit/zero_adv_frac"] <= 1.0
    assert any(k.startswith("val-core/") for k in metrics[0])
    dump = (summary.run_dir / "validation_data" / "2.jsonl").read_text().splitlines()
    assert len(dump) == 40 * 2 and {"prompt_key", "score", "pred"} <= set(json.loads(dump[0]))
    assert all(json.loads(line)["data_source"] for line in dump)  # each line names its benchmark
    rollout = (summary.run_dir / "rollout_data" / "2.jsonl").read_text().splitlines()
    assert len(rollout) == 16 * 8 and all(json.loads(line)["data_source"] for line in rollout)
    assert newest_complete_checkpoint(summary.run_dir / "checkpoints").name == "global_step_2"


def test_spo_short_run(small_world, tmp_path, train_small, stable_metrics, small_world_values):
    values_file = small_world_values()
    summary = train_small("SPO", small_world, tmp_path, "spo", 3, offline_values=values_file)
    records = read_step_log(summary.run_dir / "steps.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        rows = record["data"]["row"]
        assert len(rows) == 128 and len(set(rows)) == 128  # one response per prompt, no duplicates
        assert all(0.0 <= r <= 1.0 for r in record["data"]["reward"])
        assert all(0.875 <= r <= 0.96 for r in record["data"]["rho"])
    metrics = dict(stable_metrics(summary.run_dir))
    assert metrics[1]["spo/first_sampled_ratio"] == 1.0 and metrics[1]["spo/D"] == 0.0
    assert metrics[3]["spo/first_sampled_ratio"] < 1.0  # the 200-prompt pools overlap across steps
    # Advantages are batch-normalised: mean 0, unbiased std 1.
    adv = np.asarray(records[0]["data"]["advantage"])
    assert abs(adv.mean()) < 1e-6 and adv.std(ddof=1) == pytest.approx(1.0, rel=1e-4)
    # The first step's baselines are the offline priors (s + 0.5) / (n + 1) with n = 4.
    values = read_offline_values(values_file)
    p_hat = np.asarray(records[0]["data"]["p_hat"])
    assert np.all(np.isin(np.round(p_hat * 5 - 0.5, 6), [0, 1, 2, 3, 4]))
    assert len(values) == 300


@pytest.mark.parametrize("method", ["SPO", "GRPO"])
def test_resume_equals_straight_run(method, small_world, tmp_path, train_small, small_world_values, stable_metrics):
    values = small_world_values() if method == "SPO" else None
    straight = train_small(method, small_world, tmp_path, "straight", 4, offline_values=values)
    with pytest.raises(RunStopped):
        train_small(method, small_world, tmp_path, "resumed", 4, "kit.stop_after_step=2", offline_values=values)
    resumed = train_small(method, small_world, tmp_path, "resumed", 4, offline_values=values)

    def state(run_dir):
        step = run_dir / "checkpoints" / "global_step_4"
        worker = torch.load(step / "actor" / "cpu_worker.pt", weights_only=False)
        kit = torch.load(step / "kit_state" / "state.pt", weights_only=False)
        return worker, kit

    (w1, k1), (w2, k2) = state(straight.run_dir), state(resumed.run_dir)
    assert all(torch.equal(w1["model"][name], w2["model"][name]) for name in w1["model"])
    assert torch.equal(w1["torch_rng"], w2["torch_rng"])  # the global RNG too, not only the sampling streams
    assert all(torch.equal(w1["rollout_rng"][s], w2["rollout_rng"][s]) for s in w1["rollout_rng"])
    assert k1["tracker"] == k2["tracker"] and k1["counters"] == k2["counters"]
    if method == "SPO":
        assert k1["sampler"] == k2["sampler"]
        assert torch.equal(k1["store"]["logprobs"], k2["store"]["logprobs"])
    assert stable_metrics(straight.run_dir) == stable_metrics(resumed.run_dir)
    for name in ("steps.jsonl", "validation_data/4.jsonl"):
        assert (straight.run_dir / name).read_text() == (resumed.run_dir / name).read_text()


def test_half_written_checkpoint_is_never_picked_up(small_world, tmp_path, train_small):
    first = train_small("GRPO", small_world, tmp_path, "crash", 2)
    checkpoints = first.run_dir / "checkpoints"
    fake = checkpoints / "global_step_4"
    (fake / "actor").mkdir(parents=True)  # a crash mid-save: no completion marker
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("4")
    assert newest_complete_checkpoint(checkpoints).name == "global_step_2"
    resumed = train_small("GRPO", small_world, tmp_path, "crash", 3)
    assert [r["step"] for r in read_step_log(resumed.run_dir / "metrics.jsonl")] == [0, 1, 2, 3]


def test_damaged_checkpoints_are_detected_and_skipped(small_world, tmp_path, caplog, train_small):
    """Bit-level damage or truncation of a complete checkpoint: resume falls back to the newest one that verifies."""
    first = train_small("GRPO", small_world, tmp_path, "damaged", 4)
    checkpoints = first.run_dir / "checkpoints"
    weights = checkpoints / "global_step_4" / "actor" / "cpu_worker.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = bytes(8)  # same size, a few bytes changed
    weights.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        resumed = train_small("GRPO", small_world, tmp_path, "damaged", 5)
    assert "global_step_4: actor/cpu_worker.pt: its bytes changed" in caplog.text
    assert "resuming from" in caplog.text and "global_step_2" in caplog.text
    assert [r["step"] for r in read_step_log(resumed.run_dir / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5]

    for step in (2, 4, 5):
        state = checkpoints / f"global_step_{step}" / "kit_state" / "state.pt"
        state.write_bytes(state.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match=r"no checkpoint of .* verifies .*kit_state/state.pt: 100 bytes"):
        train_small("GRPO", small_world, tmp_path, "damaged", 6)


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("SPO", {"offline_values": None}, "OFFLINE_VALUES"),
        ("SPO", {"offline_values": "/nope/values.json"}, "not found"),
        ("SPO", {"n_train": 4, "offline_values": "none"}, "N_TRAIN"),
        ("GRPO", {"n_train": 1}, "groups of one"),
    ],
)
def test_bad_requests_fail_before_compute(method, kwargs, match, small_world, tmp_path):
    with pytest.raises(UserError, match=match):
        train(
            method,
            output_dir=str(tmp_path),
            model_path=str(small_world.model_dir),
            train_files=[str(small_world.train_file)],
            val_files=[str(small_world.val_file)],
            **kwargs,
        )
    assert not any(tmp_path.iterdir())


def test_offline_values_for_another_dataset_are_refused(small_world, tmp_path, train_small):
    other = write_offline_values({"a prompt from elsewhere": [1.0, 0.0]}, tmp_path / "other.json")
    with pytest.raises(UserError, match="none of its 1 prompts"):
        train_small("SPO", small_world, tmp_path / "out", "spo", 1, offline_values=str(other))


def test_spo_constant_rho(small_world, tmp_path, train_small, stable_metrics, small_world_values):
    summary = train_small(
        "SPO", small_world, tmp_path, "const", 2, "trainer.spo.rho.type=constant", offline_values=small_world_values()
    )
    records = read_step_log(summary.run_dir / "steps.jsonl")
    assert all(rho == 0.875 for r in records for rho in r["data"]["rho"])
    assert all(d == 0.0 for r in records for d in r["data"]["drift"])
    metrics = dict(stable_metrics(summary.run_dir))
    assert metrics[2]["spo/rho_clipped"] == 0.875 and metrics[2]["spo/store_tokens"] == 0.0


def test_a_full_disk_during_a_checkpoint_stops_with_one_line_and_resumes(
    small_world, tmp_path, monkeypatch, train_small
):
    """The disk fills while step 2's checkpoint is written: the run stops with the file, the free space and the fix,
    step 2's partial folder is gone, step 1 is the resume point, and the same command then finishes the run."""
    import errno

    from spo_helpers.verl_glue.cpu_backend import CPUActorRolloutWorkerGroup

    original = CPUActorRolloutWorkerGroup.save_checkpoint

    def fill_the_disk(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        if global_step == 2:
            partial = Path(local_path).with_name("actor.partial")
            partial.mkdir(parents=True, exist_ok=True)
            (partial / "cpu_worker.pt").write_bytes(b"half a model")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial / "cpu_worker.pt"))
        return original(self, local_path, hdfs_path, global_step, max_ckpt_to_keep)

    monkeypatch.setattr(CPUActorRolloutWorkerGroup, "save_checkpoint", fill_the_disk)
    with pytest.raises(UserError) as caught:
        train_small("GRPO", small_world, tmp_path, "full_disk", 3, "trainer.save_freq=1")
    message = str(caught.value)
    assert "global_step_2: the checkpoint of step 2 could not be written" in message
    assert "actor.partial/cpu_worker.pt: No space left on device" in message and "GiB free" in message
    assert "resumes from global_step_1" in message and "\n" not in message
    checkpoints = tmp_path / "spo" / "full_disk" / "checkpoints"
    assert newest_complete_checkpoint(checkpoints).name == "global_step_1"
    assert not (checkpoints / "global_step_2").exists()
    monkeypatch.setattr(CPUActorRolloutWorkerGroup, "save_checkpoint", original)  # space freed
    resumed = train_small("GRPO", small_world, tmp_path, "full_disk", 3, "trainer.save_freq=1")
    assert resumed.steps == 3 and newest_complete_checkpoint(checkpoints).name == "global_step_3"


def test_a_run_extended_on_resume_validates_as_a_straight_run(small_world, tmp_path, train_small):
    """3 steps (validated at 2 and at its last step, 3), then resumed to 4: its step-4 validation samples what a
    straight 4-step run's does, although the straight run never validated at step 3."""
    extended = train_small("GRPO", small_world, tmp_path / "extended", "run", 3, "trainer.save_freq=1")
    extended = train_small("GRPO", small_world, tmp_path / "extended", "run", 4, "trainer.save_freq=1")
    straight = train_small("GRPO", small_world, tmp_path / "straight", "run", 4, "trainer.save_freq=1")
    assert (extended.run_dir / "validation_data" / "3.jsonl").is_file()
    assert not (straight.run_dir / "validation_data" / "3.jsonl").exists()
    for step in (2, 4):
        name = f"validation_data/{step}.jsonl"
        assert (extended.run_dir / name).read_text() == (straight.run_dir / name).read_text(), step
    assert (extended.run_dir / "steps.jsonl").read_text() == (straight.run_dir / "steps.jsonl").read_text()


def test_ablation_switches_train(small_world, tmp_path, train_small, stable_metrics):
    """GRPO with DAPO's group filter leaves groups without a reward spread out of the update; SPO with the oracle
    baseline takes its advantages against the current policy's success rate, estimated from extra responses."""
    from spo_helpers.core.advantages import spo_advantages

    grpo = train_small("GRPO", small_world, tmp_path, "filtered", 2, "algorithm.filter_groups.enable=true")
    metrics = dict(stable_metrics(grpo.run_dir))
    assert all(0.0 < metrics[s]["kit/filtered_sample_share"] < 1.0 for s in (1, 2))
    oracle = train_small(
        "SPO",
        small_world,
        tmp_path,
        "oracle",
        2,
        "trainer.spo.baseline=oracle",
        "trainer.spo.oracle_samples=4",
        offline_values="none",
    )
    for record in read_step_log(oracle.run_dir / "steps.jsonl"):
        data = record["data"]
        assert set(np.unique(np.asarray(data["oracle_p"]) * 4)) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # 4 samples each
        expected = spo_advantages(np.asarray(data["reward"]), np.asarray(data["oracle_p"]))
        assert np.allclose(data["advantage"], expected)
    assert "spo/p_hat_abs_error_vs_oracle" in dict(stable_metrics(oracle.run_dir))[2]
    with pytest.raises(UserError, match="SPO samples one response per prompt and has no groups"):
        train_small(
            "SPO", small_world, tmp_path, "bad", 1, "algorithm.filter_groups.enable=true", offline_values="none"
        )
