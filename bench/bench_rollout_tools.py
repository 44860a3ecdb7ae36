"""Rollout wall time per generated sample with tools, GRPO vs SPO on the CPU world, beside the simulation.

Both methods run the tool agent loop on the CPU world's tool-use variant (``spo world --tools``) for a few
steps of 128 samples (GRPO: 16 prompts x 8 responses; SPO: 128 prompts x 1), with a local sandbox started for
each run. From each run's ``metrics.jsonl``: the rollout time of a step (``timing_s/gen``) per generated sample,
the tool calls per sample, the sandbox latency per call and the generation rounds. The throughput simulation
(``analysis/throughput``) is then run with the same shape (``M = S = 128`` samples per step, one synchronous
wave), the measured tool calls per sample, the measured sandbox latency as the mean tool latency and the
measured time per generation round as ``turn_time``; it prints what it predicts per sample for each method.

What to expect: the CPU rollout runs every sample of a batch in lock-step rounds (one batched ``generate`` per
round), for both methods alike, so its time per sample depends on the rounds of the slowest sample, not on the
method; the simulation's SPO streams samples through free slots, which the in-process backend does not do.
The difference between the two columns is that: the simulation describes vLLM's continuous batching on GPU
nodes, the measurement the CPU backend.

It also prints each method's tool-call rate and training reward at its first and last step: with
``--steps 20`` (the default) this shows what RL does to tool use on the CPU world.

    python bench/bench_rollout_tools.py [--steps 20] [--output runs/bench_rollout_tools]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from results_line import emit

from spo_helpers.analysis.throughput import SimConfig, simulate
from spo_helpers.core.metric_names import (
    TIMING_GEN,
    TOOL_ASSISTANT_TURNS_MAX,
    TOOL_ASSISTANT_TURNS_MEAN,
    TOOL_CALL_RATE,
    TOOL_CALLS_MEAN,
    TOOL_SANDBOX_LATENCY_MEAN,
    TRAIN_REWARD,
)
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.train import train
from spo_helpers.world.build import build_world

SAMPLES_PER_STEP = 128


def run_method(method: str, world, output: Path, steps: int) -> dict[str, float]:
    """Train ``steps`` steps with tools; the per-step means of what the rollout logged."""
    overrides = ["trainer.test_freq=0", "trainer.save_freq=0", "trainer.val_before_train=False"]
    start = time.perf_counter()
    train(
        method,
        output_dir=str(output),
        exp_name=f"{method.lower()}_tools",
        model_path=str(world.model_dir),
        train_files=[str(world.train_file)],
        val_files=[str(world.val_file)],
        offline_values="none",
        total_steps=steps,
        tools="sandbox",
        overrides=overrides,
        fresh=True,
    )
    wall = time.perf_counter() - start
    records = [r["data"] for r in read_step_log(output / "spo" / f"{method.lower()}_tools" / "metrics.jsonl")]
    records = [r for r in records if TIMING_GEN in r]

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in records if key in r])) if records else float("nan")

    def at(index: int, key: str) -> float:
        return float(records[index].get(key, float("nan"))) if records else float("nan")

    return {
        "first_call_rate": at(0, TOOL_CALL_RATE),
        "last_call_rate": at(-1, TOOL_CALL_RATE),
        "first_reward": at(0, TRAIN_REWARD),
        "last_reward": at(-1, TRAIN_REWARD),
        "gen_seconds": mean(TIMING_GEN),
        "calls": mean(TOOL_CALLS_MEAN),
        "call_rate": mean(TOOL_CALL_RATE),
        "latency": mean(TOOL_SANDBOX_LATENCY_MEAN),
        "assistant_turns": mean(TOOL_ASSISTANT_TURNS_MEAN),
        "rounds": mean(TOOL_ASSISTANT_TURNS_MAX),
        "wall": wall,
    }


def simulated_seconds_per_sample(policy: str, calls: float, latency: float, turn_time: float, steps: int) -> float:
    """The simulation's wall time per trainable sample for one synchronous wave of ``SAMPLES_PER_STEP`` samples."""
    config = SimConfig(
        policy=policy,
        slots=SAMPLES_PER_STEP,
        batch_size=SAMPLES_PER_STEP,
        group_size=8,
        steps=steps,
        dist="lognormal",
        mu=float(np.log(max(latency, 1e-6)) - 0.5 * 0.5**2),  # mean latency = measured, sigma 0.5
        sigma=0.5,
        tool_calls=calls,
        turn_time=turn_time,
    )
    return 1.0 / simulate(config).throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="one step per method (a smoke check)")
    parser.add_argument("--output", default="runs/bench_rollout_tools")
    parser.add_argument("--assets", default=None)
    args = parser.parse_args()
    if args.quick:
        args.steps = 1
    output = Path(args.output)
    shutil.rmtree(output / "spo", ignore_errors=True)
    world = build_world(args.assets, seed=0, tools=True)
    print(f"machine: {platform.machine()}, world {world.root.name}, {args.steps} steps x {SAMPLES_PER_STEP} samples")

    measured = {method: run_method(method, world, output, args.steps) for method in ("GRPO", "SPO")}
    print(f"\n{'method':<6} {'s/sample':>9} {'calls':>6} {'call rate':>9} {'turns':>6} {'latency s':>9}")
    for method, m in measured.items():
        per_sample = m["gen_seconds"] / SAMPLES_PER_STEP
        print(
            f"{method:<6} {per_sample:>9.4f} {m['calls']:>6.2f} {m['call_rate']:>9.1%} "
            f"{m['assistant_turns']:>6.2f} {m['latency']:>9.4f}"
        )

    print("\ntool use over training (first step -> last step):")
    for method, m in measured.items():
        print(
            f"{method:<6} call rate {m['first_call_rate']:.1%} -> {m['last_call_rate']:.1%}, "
            f"training reward {m['first_reward']:.3f} -> {m['last_reward']:.3f}"
        )

    print("\nsimulation with the measured shape (one wave of 128 slots, synchronous):")
    simulated = {}
    for method, policy in (("GRPO", "grpo"), ("SPO", "spo")):
        m = measured[method]
        turn_time = m["gen_seconds"] / max(m["rounds"], 1.0)  # a round: one batched generate for the batch
        simulated[method] = simulated_seconds_per_sample(policy, m["calls"], m["latency"], turn_time, 20)
        print(
            f"{method:<6} predicted {simulated[method]:.4f} s/sample (turn {turn_time:.3f} s, {m['calls']:.2f} calls)"
        )

    grpo, spo = (measured[k]["gen_seconds"] / SAMPLES_PER_STEP for k in ("GRPO", "SPO"))
    print(
        f"\nmeasured SPO/GRPO rollout time per sample: {spo / grpo:.2f}x; simulated: "
        f"{simulated['SPO'] / simulated['GRPO']:.2f}x"
    )
    emit("rollout with tools, wall time per sample (GRPO 16x8)", grpo, "s", None, None)
    emit("rollout with tools, wall time per sample (SPO 128x1 vs GRPO 16x8)", spo, "s", grpo, spo / grpo)
    emit(
        "rollout with tools, simulated SPO/GRPO time per sample (same shape)",
        simulated["SPO"] / simulated["GRPO"],
        "x",
        None,
        None,
    )


if __name__ == "__main__":
    main()
