"""verl's vLLM rollout on CPU through the kit's trainers, two ranks (verl's FSDP workers as Ray actors over gloo).

- GRPO (verl's own ``fit()``) and SPO (the kit's loop and its drift pass) with the sync rollout (``vLLMRollout`` in
  the worker); the async rollout (``AgentLoopManager`` and vLLM's servers, the GPU presets' path) in the SIGKILL
  case here and in the GPU smoke script (``test_gpu_smoke_on_cpu.py``);
- the weight sync after update steps: greedy vLLM validation equals HF ``generate()`` on the checkpoint of the same
  step (``rollout_check``), with the rollout in float32 as ``generate()`` decodes;
- a SIGKILLed async SPO driver resumed from verl's checkpoint. What equals a run that never stopped: everything the
  checkpoint holds (weights, optimizer, tracker, sampler, stored responses and log-probs, counters), hence the
  prompts chosen and the baselines p̂ of the step after it, and the weights vLLM generates with. What cannot: the
  samples drawn after the resume. vLLM samples from one generator per engine, seeded when the engine starts and
  advanced by every batch it schedules (vllm/v1/worker/cpu_worker.py ``set_random_seed``; verl sends no per-request
  seed), and the async servers batch requests as the agent-loop workers send them; neither is in a checkpoint, so a
  restarted engine draws other samples, and the rewards, advantages and weights after the resume differ from the
  uninterrupted run's. (The kit's own rollout, ``kit_hf``, seeds every call from the step and is bit-exact.)

One Ray cluster for the session, sized for the async rollout; the SIGKILLed driver joins it through ``RAY_ADDRESS``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("vllm")

from spo_helpers.core.sampler import PrioritizedSampler, SamplerConfig
from spo_helpers.core.tracker import ValueTracker
from spo_helpers.formats.checkpoints import KIT_STATE_DIR, newest_complete_checkpoint
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.train import train
from spo_helpers.verl_glue.config import RunSpec, all_overrides
from spo_helpers.verl_glue.ray_cpu.settings import VLLM, RayCPUSettings
from spo_helpers.verl_glue.rollout_check import greedy_agreement
from spo_helpers.world.task import read_rows, write_rows

CHECKOUT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif("'vllm' not in config.getoption('markexpr')", reason="vLLM cases: run with -m vllm"),
]

GREEDY_FP32 = [
    "actor_rollout_ref.rollout.val_kwargs.n=1",
    "actor_rollout_ref.rollout.val_kwargs.temperature=0",
    "actor_rollout_ref.rollout.val_kwargs.top_p=1.0",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=false",
    "actor_rollout_ref.rollout.dtype=float32",
]
FP32_AGREEMENT = 0.95
"""Share of greedy answers that must equal generate()'s with both in float32: vLLM's CPU kernels and HF's differ in
the last bits, which flips the odd near-tie (measured: 64/64 on the sync rollout, 63/64 after an async resume)."""
SMALL_POOL = 96
"""Training prompts of the SPO runs: 64 per step from a pool of all 96, so step 2 revisits prompts (drift D)."""
SPO_SHAPE = ["data.train_batch_size=64", f"data.gen_batch_size={SMALL_POOL}"]
ASYNC = RayCPUSettings(rollout=VLLM, mode="async")
"""The cluster's settings: sized for an async vLLM run."""


@pytest.fixture(scope="session")
def ray_cluster(worlds):
    """One local Ray cluster, with the CPUs an async vLLM run asks for."""
    import ray

    from spo_helpers.verl_glue.ray_cpu.launch import ray_init_kwargs

    started = not ray.is_initialized()
    if started:
        ray.init(**ray_init_kwargs(ASYNC))
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_pool(worlds, tmp_path_factory):
    """The world's first ``SMALL_POOL`` training prompts."""
    world, _ = worlds
    path = tmp_path_factory.mktemp("small_pool") / "train.parquet"
    write_rows(read_rows(world.train_file)[:SMALL_POOL], path)
    return path


def run_kwargs(method, mode, worlds, out, name, steps, *extra, train_file=None):
    world, _ = worlds
    rollout = ["actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.rollout.mode={mode}"]
    return {
        "backend": "ray",
        "device": "cpu",
        "output_dir": str(out),
        "exp_name": name,
        "model_path": str(world.model_dir),
        "train_files": [str(train_file or world.train_file)],
        "val_files": [str(world.val_file)],
        "offline_values": "none" if method == "SPO" else None,
        "total_steps": steps,
        "val_before_train": False,
        "overrides": [*rollout, *extra],
    }


def dump_lines(run_dir, folder, step):
    path = getattr(RunLayout(run_dir), folder) / f"{step}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grpo_sync_trains_and_vllm_decodes_with_the_trained_weights(ray_cluster, worlds, tmp_path, stable_metrics):
    summary = train("GRPO", **run_kwargs("GRPO", "sync", worlds, tmp_path, "grpo_sync", 2, *GREEDY_FP32))
    assert summary.steps == 2 and summary.samples == 2 * 16 * 8
    metrics = dict(stable_metrics(summary.run_dir, volatile=()))  # timings too
    assert 0.0 < metrics[2]["critic/score/mean"] < 1.0 and "val-core/spo_arith/acc/mean@1" in metrics[2]
    assert {"kit/zero_adv_frac", "actor/pg_loss", "timing_s/gen"} <= metrics[2].keys()
    assert all(line["data_source"] == "spo_arith" for line in dump_lines(summary.run_dir, "validation_data", 2))
    assert len(dump_lines(summary.run_dir, "rollout_data", 2)) == 16 * 8
    agreement = greedy_agreement(summary.run_dir, 2)
    assert agreement.passes(min_share=FP32_AGREEMENT) and agreement.moved > 0, agreement.summary()


def test_spo_sync_runs_its_loop_and_drift_pass_over_vllm_batches(
    ray_cluster, worlds, small_pool, tmp_path, stable_metrics
):
    kwargs = run_kwargs("SPO", "sync", worlds, tmp_path, "spo_sync", 2, *SPO_SHAPE, train_file=small_pool)
    summary = train("SPO", **kwargs)
    records = {r["step"]: r["data"] for r in read_step_log(RunLayout(summary.run_dir).steps)}
    assert sorted(records) == [1, 2]
    for record in records.values():
        assert len(record["row"]) == len(set(record["row"])) == 64  # one response per prompt
        assert set(record["reward"]) <= {0.0, 1.0} and all(0.875 <= r <= 0.96 for r in record["rho"])
    revisited = np.isin(records[2]["row"], records[1]["row"])
    drift = np.asarray(records[2]["drift"])
    assert revisited.any() and np.all(drift[~revisited] == 0) and np.all(np.isfinite(drift))
    assert np.all(drift[revisited] > 0)  # the stored vLLM response scored under the updated policy
    metrics = dict(stable_metrics(summary.run_dir, volatile=()))  # timings too
    assert metrics[1]["spo/first_sampled_ratio"] == 1.0 and metrics[2]["spo/first_sampled_ratio"] < 1.0


def resumed_choice(run_dir, step_dir):
    """The prompts and baselines the step after ``step_dir`` must use: from the checkpoint's own state."""
    state = torch.load(step_dir / KIT_STATE_DIR / "state.pt", map_location="cpu", weights_only=False)
    config = yaml.safe_load(RunLayout(run_dir).config.read_text())["config"]
    tracker = ValueTracker.from_state_dict(state["tracker"])
    spo = config["trainer"]["spo"]["sampler"]
    sampler = PrioritizedSampler(
        len(tracker),
        SamplerConfig(
            batch_size=int(config["data"]["train_batch_size"]),
            pool_size=int(config["data"]["gen_batch_size"]),
            mode=str(spo["mode"]),
            eps=float(spo["eps"]),
            gamma=float(spo["gamma"]),
            seed=int(config["kit"]["seed"]),
        ),
    )
    sampler.load_state_dict(state["sampler"])
    rows = sampler.sample(tracker)
    return rows.tolist(), tracker.p_hat(tracker.keys_at(rows)).tolist()


def test_sigkilled_async_spo_resumes_from_verls_checkpoint(
    ray_cluster, worlds, small_pool, tmp_path, wait_for_checkpoint, wait_for_free_cpus
):
    """SIGKILL the driver of an async SPO run after step 2's checkpoint, resume it: see the module docstring."""
    steps = 4
    extra = [*SPO_SHAPE, *GREEDY_FP32, "trainer.save_freq=1", f"trainer.test_freq={steps}"]
    kwargs = run_kwargs("SPO", "async", worlds, tmp_path, "spo_async", steps, *extra, train_file=small_pool)
    spec = RunSpec(method="SPO", **{**kwargs, "offline_values": None})
    command = [sys.executable, "-m", "spo_helpers.verl_glue.main", *all_overrides(spec)]
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address)
    log_path = tmp_path / "killed.log"
    checkpoints = spec.layout.checkpoints
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=CHECKOUT)
        try:
            seen = wait_for_checkpoint(proc, checkpoints, 1, log_path, timeout=600.0)
            step_seconds = wait_for_checkpoint(proc, checkpoints, 2, log_path, timeout=600.0) - seen
            time.sleep(random.Random(5).random() * step_seconds)  # somewhere in step 3 (or its save)
            assert proc.poll() is None, f"the run ended before the kill:\n{log_path.read_text()[-3000:]}"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    newest = newest_complete_checkpoint(checkpoints)
    assert newest is not None and newest.name in ("global_step_2", "global_step_3")
    resume_from = int(newest.name.rsplit("_", 1)[1])
    rows, p_hat = resumed_choice(spec.run_dir, newest)
    wait_for_free_cpus(ray_cluster, ASYNC.num_cpus)

    resumed = train("SPO", **kwargs)
    assert resumed.steps == steps
    records = {r["step"]: r["data"] for r in read_step_log(RunLayout(resumed.run_dir).steps)}
    assert sorted(records) == list(range(1, steps + 1))  # each step once: none lost, none logged twice
    after = records[resume_from + 1]
    assert after["row"] == rows and after["p_hat"] == p_hat  # chosen and baselined from the state it resumed
    agreement = greedy_agreement(resumed.run_dir, steps)  # vLLM got the resumed and updated weights
    assert agreement.passes(min_share=FP32_AGREEMENT), agreement.summary()
