"""Streamed SPO against the synchronous loop under long-tailed tool latency, measured, beside the simulation.

On the CPU world's tool-use variant (``spo world --tools``), with the latency model on (``kit.tool_latency``:
every code run waits a seeded lognormal delay, ``--mu``/``--sigma``), each policy trains ``--steps`` steps of 128
samples on ``--seeds`` seeds:

- ``GRPO sync``: verl's synchronous ``fit()``, 16 prompts x 8 (the paper's baseline);
- ``SPO sync``: SPO's synchronous loop, 128 x 1 (a step waits for its slowest sample, as GRPO's);
- ``SPO stream``: ``schedule=stream`` (128 slots, max staleness 4): a step takes the first 128 samples to finish;
- ``SPO overprovision``: ``schedule=overprovision`` (192 launched, the first 128 trained, the rest cancelled);
- ``GRPO stream``: ``schedule=stream`` by groups (128 slots, max staleness 4): a step takes the first 16 complete
  groups of 8, a group's staleness is its oldest member's;
- ``GRPO overprovision``: ``schedule=overprovision`` by groups (24 groups launched, the first 16 complete
  trained, the rest cancelled).

Validation runs before training and after the last step only, and no checkpoint is written in between, so the
step times hold rollouts and updates alone. Measured per run, from ``metrics.jsonl`` and ``steps.jsonl``:

- trainable samples per second: 128 x steps / the summed step time (``timing_s/step``, which holds neither
  validation nor checkpoints, in verl's ``fit()`` as in SPO's loop);
- slot utilisation (the streamed policies: busy slot-time / (slots x time), from the engine), staleness of
  trained samples, dropped samples;
- learning at equal samples: the training reward of the last 3 steps and held-out accuracy after training, with
  t intervals over seeds; and the share of trained samples that ran code (tool-heavy samples are the slow ones:
  does streaming leave them out?).

The simulation (``analysis/throughput``) is run with the measured shape: 128 slots and samples per step, the
measured code runs per sample (Poisson), the configured latency distribution plus the measured sandbox time,
``turn_time`` = the synchronous SPO run's generation time per round, ``update_time`` = its non-generation step
time. It predicts samples per second for each measured policy (its ``grpo``: a synchronous barrier, by groups
of 8 or, for SPO's lock-step loop, of 1, over-provisioned or not; ``spo``: streamed samples; ``grpo_async``:
streamed groups), and each policy's predicted ratio to GRPO sync is printed beside the measured one.

    python bench/bench_streaming.py [--seeds 0 1 2] [--steps 8] [--mu -1.4] [--sigma 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from bench_claims import finished
from results_line import emit

from spo_helpers.analysis.intervals import fieller_ratio, t_mean
from spo_helpers.analysis.throughput import SimConfig, simulate
from spo_helpers.core.metric_names import (
    STREAM_DROPPED_TOTAL,
    STREAM_SLOT_UTILISATION,
    TIMING_GEN,
    TIMING_STEP,
    TOOL_ASSISTANT_TURNS_MAX,
    TOOL_CALLS_MEAN,
    TOOL_SANDBOX_LATENCY_MEAN,
    VAL_CORE_PREFIX,
)
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.train import train
from spo_helpers.world.build import build_world
from spo_helpers.world.task import DATA_SOURCE

SAMPLES = 128
GROUP = 8  # GRPO's responses per prompt in the CPU world's preset
STREAM = ["kit.schedule.slots=128", "kit.schedule.max_staleness=4"]
OVERPROVISION = ["kit.schedule.overprovision=0.5"]
POLICIES = {
    # name: (method, schedule, overrides)
    "GRPO sync": ("GRPO", "sync", []),
    "SPO sync": ("SPO", "sync", []),
    "SPO stream": ("SPO", "stream", STREAM),
    "SPO overprovision": ("SPO", "overprovision", OVERPROVISION),
    "GRPO stream": ("GRPO", "stream", STREAM),
    "GRPO overprovision": ("GRPO", "overprovision", OVERPROVISION),
}
SIMULATED = {
    # name: the simulation's policy for it (analysis/throughput.py): policy, group size, overprovision, staleness
    "GRPO sync": ("grpo", GROUP, 0.0, None),
    "SPO sync": ("grpo", 1, 0.0, None),
    "SPO stream": ("spo", 1, 0.0, 4),
    "SPO overprovision": ("grpo", 1, 0.5, None),
    "GRPO stream": ("grpo_async", GROUP, 0.0, 4),
    "GRPO overprovision": ("grpo", GROUP, 0.5, None),
}
HELD_OUT = f"{VAL_CORE_PREFIX}{DATA_SOURCE}/acc/mean@2"


def slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def run_policy(name: str, seed: int, world, root: Path, steps: int, latency: list[str]) -> Path:
    method, schedule, extra = POLICIES[name]
    folder = root / slug(name)
    exp = f"seed{seed}"
    run_dir = folder / "spo" / exp
    if finished(run_dir, steps):
        return run_dir
    train(
        method,
        output_dir=str(folder),
        exp_name=exp,
        model_path=str(world.model_dir),
        train_files=[str(world.train_file)],
        val_files=[str(world.val_file)],
        offline_values="none" if method == "SPO" else None,
        total_steps=steps,
        seed=seed,
        tools="sandbox",
        schedule=schedule,
        overrides=[
            f"trainer.test_freq={steps}",
            f"trainer.save_freq={steps}",
            "actor_rollout_ref.rollout.val_kwargs.n=2",
            *latency,
            *extra,
        ],
        fresh=True,
    )
    return run_dir


def measure(run_dir: Path) -> dict[str, float]:
    """One run's throughput, schedule and learning measures (module docstring)."""
    records = {r["step"]: r["data"] for r in read_step_log(run_dir / "metrics.jsonl")}
    steps = sorted(s for s in records if s > 0)
    train_records = [records[s] for s in steps]
    seconds = 0.0
    for r in train_records:  # verl's fit() and SPO's loop both time validation and checkpoints outside the step
        seconds += r[TIMING_STEP]
    samples = SAMPLES * len(steps)
    step_log = [r["data"] for r in read_step_log(run_dir / "steps.jsonl")]
    calls = np.concatenate([np.asarray(d.get("tool_calls", []), dtype=float) for d in step_log])
    staleness = np.concatenate([np.asarray(d.get("staleness", [0] * len(d["reward"])), dtype=float) for d in step_log])
    rewards = [float(np.mean(d["reward"])) for d in step_log[-3:]]
    gen = [r[TIMING_GEN] for r in train_records]
    rounds = [r.get(TOOL_ASSISTANT_TURNS_MAX, 1.0) for r in train_records]
    return {
        "samples_per_s": samples / seconds,
        "step_s": seconds / len(steps),
        "gen_s": float(np.mean(gen)),
        "round_s": float(np.mean([g / max(k, 1.0) for g, k in zip(gen, rounds, strict=True)])),
        "update_s": float(np.mean([r[TIMING_STEP] - r[TIMING_GEN] for r in train_records])),
        "calls_per_sample": float(np.mean([r.get(TOOL_CALLS_MEAN, 0.0) for r in train_records])),
        "sandbox_s": float(np.mean([r.get(TOOL_SANDBOX_LATENCY_MEAN, 0.0) for r in train_records])),
        "utilisation": float(np.mean([r.get(STREAM_SLOT_UTILISATION, math.nan) for r in train_records])),
        "staleness_mean": float(staleness.mean()) if staleness.size else 0.0,
        "stale_share": float((staleness > 0).mean()) if staleness.size else 0.0,
        "dropped": float(train_records[-1].get(STREAM_DROPPED_TOTAL, 0.0)),
        "tool_share": float((calls > 0).mean()) if calls.size else math.nan,
        "train_reward": float(np.mean(rewards)),
        "held_out_before": float(records[0].get(HELD_OUT, math.nan)),
        "held_out_after": float(records[steps[-1]].get(HELD_OUT, math.nan)),
    }


def simulated_rates(shape: dict[str, float], mu: float, sigma: float, steps: int, names: list[str]) -> dict[str, float]:
    """Samples per second the simulation predicts for each named policy (``SIMULATED``), with the measured shape:
    code runs per sample, turn time, update time; latency = the configured lognormal delay plus the measured
    sandbox time (folded into ``mu``, keeping ``sigma``)."""
    base = math.exp(mu + sigma**2 / 2)  # mean of the added delay
    latency_mean = base + shape["sandbox_s"]
    mu_total = math.log(latency_mean) - sigma**2 / 2
    rates = {}
    for name in names:
        policy, group_size, overprovision, max_staleness = SIMULATED[name]
        config = SimConfig(
            policy=policy,
            slots=SAMPLES,
            batch_size=SAMPLES,
            group_size=group_size,
            overprovision=overprovision,
            max_staleness=max_staleness,
            steps=max(steps, 20),
            dist="lognormal",
            mu=mu_total,
            sigma=sigma,
            tool_calls=shape["calls_per_sample"],
            turn_time=shape["round_s"],
            update_time=shape["update_s"],
        )
        rates[name] = float(np.mean([simulate(replace(config, seed=seed)).throughput for seed in range(3)]))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--mu", type=float, default=-1.4, help="lognormal delay per code run: median exp(mu) s")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal tail weight")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--output", default="runs/bench_streaming")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 steps (a smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps = args.seeds[:2], 2
    latency = [
        "kit.tool_latency.dist=lognormal",
        f"kit.tool_latency.mu={args.mu}",
        f"kit.tool_latency.sigma={args.sigma}",
    ]
    world = build_world(None, tools=True)
    output = Path(args.output)
    start = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for name in args.policies:
            run_dir = run_policy(name, seed, world, output, args.steps, latency)
            rows.append({"policy": name, "seed": seed, **measure(run_dir)})
    table = pd.DataFrame(rows)
    print(f"\nmachine: {platform.machine()}, python {platform.python_version()}, {time.perf_counter() - start:.0f}s")
    print(
        f"tool world, {args.steps} steps x {SAMPLES} samples, seeds {args.seeds}; added delay per code run "
        f"lognormal(mu={args.mu:g}, sigma={args.sigma:g}): median {math.exp(args.mu):.2f} s, "
        f"mean {math.exp(args.mu + args.sigma**2 / 2):.2f} s\n"
    )
    columns = [
        "samples_per_s",
        "step_s",
        "utilisation",
        "staleness_mean",
        "stale_share",
        "dropped",
        "tool_share",
        "train_reward",
        "held_out_before",
        "held_out_after",
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.precision", 3):
        print(table[["policy", "seed", *columns]].to_string(index=False))
        print("\nmean over seeds")
        print(table.groupby("policy", sort=False)[columns].mean().to_string())

    def per_seed(name: str, column: str) -> np.ndarray:
        return table.loc[table["policy"] == name].sort_values("seed")[column].to_numpy(dtype=float)

    print("\nagainst GRPO sync, paired by seed (Fieller ratio of means; t interval of the mean, 95%)")
    results = {}
    for name in [p for p in args.policies if p != "GRPO sync"]:
        if "GRPO sync" not in args.policies:
            break
        ratio = fieller_ratio(per_seed(name, "samples_per_s"), per_seed("GRPO sync", "samples_per_s"), paired=True)
        results[name] = ratio
        print(f"  {name:<18} samples/s ratio {ratio}")
    print("\nlearning at equal samples (t interval over seeds, 95%)")
    for name in args.policies:
        reward, held = t_mean(per_seed(name, "train_reward")), t_mean(per_seed(name, "held_out_after"))
        tools = t_mean(per_seed(name, "tool_share"))
        print(f"  {name:<18} training reward {reward}  held-out {held}  share of samples with code {tools}")

    if "SPO sync" in args.policies:
        shape = table.loc[table["policy"] == "SPO sync", ["calls_per_sample", "round_s", "update_s", "sandbox_s"]]
        shape = shape.mean().to_dict()
        rates = simulated_rates(shape, args.mu, args.sigma, args.steps, list(SIMULATED))
        predicted = rates["SPO stream"] / rates["GRPO sync"]
        print(
            f"\nsimulation with the measured shape (turn {shape['round_s']:.3f} s, update {shape['update_s']:.2f} s, "
            f"{shape['calls_per_sample']:.2f} code runs per sample, sandbox {shape['sandbox_s']:.3f} s), "
            "samples/s and ratio to GRPO sync, simulated beside measured:"
        )
        for name in SIMULATED:
            measured = f"measured {results[name]}" if name in results else ""
            simulated = rates[name] / rates["GRPO sync"]
            print(f"  {name:<18} simulated {rates[name]:6.1f} samples/s, {simulated:.2f}x  {measured}")
        if "SPO stream" in results:
            emit(
                "streaming (tool world, lognormal delays), trainable samples/s: simulated SPO stream vs GRPO sync",
                predicted,
                "x",
                None,
                None,
            )
    output.mkdir(parents=True, exist_ok=True)
    table.to_csv(output / "streaming.csv", index=False)
    grpo = float(per_seed("GRPO sync", "samples_per_s").mean()) if "GRPO sync" in args.policies else None
    for name, ratio in results.items():
        record = {
            "name": f"streaming (tool world, lognormal delays), trainable samples/s: {name} vs GRPO sync "
            f"({len(args.seeds)} seeds)",
            "value": round(float(per_seed(name, "samples_per_s").mean()), 2),
            "unit": "samples/s",
            "baseline": round(grpo, 2),
            "ratio": round(ratio.estimate, 3),
            "interval": [round(ratio.low, 3), round(ratio.high, 3)],
            "command": "python bench/bench_streaming.py",
        }
        print("RESULT " + json.dumps(record))


if __name__ == "__main__":
    main()
