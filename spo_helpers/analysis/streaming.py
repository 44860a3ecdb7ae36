"""Measured rollout throughput and staleness per schedule (``kit.schedule``), beside the simulation's prediction.

A run's schedule is its ``config.yaml``'s ``kit.schedule.policy`` (``sync`` for runs before the key existed).
Per training step:

    samples per second = samples trained at the step / timing_s/step

(the step timer holds the rollout wait and the update, not validation or checkpoints, in verl's ``fit()`` as in
SPO's loop). The simulation (``analysis/throughput``) is given each synchronous run's measured shape: code runs per
sample (``tool/calls/mean``), a generation round's time (``timing_s/gen`` / ``tool/assistant_turns/max``), the
update time (``timing_s/step - timing_s/gen``) and the run's latency model (``kit.tool_latency``; the measured
sandbox time ``tool/sandbox_latency/mean`` minus its mean added delay is folded into the latency mean); it predicts
the synchronous barrier's (``grpo``) and the streamed (``spo``) samples per second for that shape.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from spo_helpers.analysis.runs import RUN_COLUMNS, RunInfo, load_config
from spo_helpers.analysis.throughput import SimConfig, simulate
from spo_helpers.core.metric_names import (
    TIMING_GEN,
    TIMING_STEP,
    TOOL_ASSISTANT_TURNS_MAX,
    TOOL_CALLS_MEAN,
    TOOL_SANDBOX_LATENCY_MEAN,
)
from spo_helpers.formats.run_config import config_value

SCHEDULE_COLUMNS = (*RUN_COLUMNS, "schedule", "arm")
SIM_SEEDS = 3
SIM_STEPS = 20


def run_schedules(runs: list[RunInfo]) -> pd.DataFrame:
    """One row per run: its schedule, ``arm`` (``<method> <schedule>``), slots and latency model."""
    rows = []
    for run in runs:
        config = load_config(run)
        schedule = str(config_value(config, "kit.schedule.policy", "sync") or "sync")
        latency = config_value(config, "kit.tool_latency", {}) or {}
        rows.append(
            {
                "run": run.title,
                "method": run.method,
                "seed": run.seed,
                "schedule": schedule,
                "arm": f"{run.method} {schedule}",
                "batch_size": int(config_value(config, "data.train_batch_size", 0) or 0)
                * int(config_value(config, "actor_rollout_ref.rollout.n", 1) or 1),
                "latency": dict(latency),
            }
        )
    return pd.DataFrame(rows)


def step_throughput(metrics: pd.DataFrame, steps: pd.DataFrame, schedules: pd.DataFrame) -> pd.DataFrame:
    """Per run and training step: ``samples``, ``seconds`` (``timing_s/step``), ``samples_per_s``, with the run's
    schedule and arm. ``metrics``: the long metrics frame (``run, step, key, value``); ``steps``: ``load_steps``."""
    timing = metrics[metrics["key"] == TIMING_STEP][["run", "step", "value"]].rename(columns={"value": "seconds"})
    counts = steps.groupby(["run", "step"]).size().rename("samples").reset_index()
    frame = timing.merge(counts, on=["run", "step"], how="inner")
    frame = frame[frame["seconds"] > 0]
    frame["samples_per_s"] = frame["samples"] / frame["seconds"]
    frame = frame.merge(schedules[list(SCHEDULE_COLUMNS)], on="run", how="inner")
    return frame[[*SCHEDULE_COLUMNS, "step", "samples", "seconds", "samples_per_s"]]


def staleness_distribution(steps: pd.DataFrame, schedules: pd.DataFrame) -> pd.DataFrame:
    """Per arm: the share of trained samples at each staleness (streamed runs log it; others count as 0)."""
    frame = steps.merge(schedules[["run", "arm"]], on="run", how="inner")
    staleness = frame["staleness"] if "staleness" in frame.columns else pd.Series(0, index=frame.index)
    frame = frame.assign(staleness=staleness.fillna(0).astype(int))
    counts = frame.groupby(["arm", "staleness"]).size().rename("count").reset_index()
    counts["fraction"] = counts["count"] / counts.groupby("arm")["count"].transform("sum")
    return counts


def _mean_metric(metrics: pd.DataFrame, run: str, key: str) -> float:
    values = metrics[(metrics["run"] == run) & (metrics["key"] == key)]["value"]
    return float(values.mean()) if len(values) else math.nan


def simulated_throughput(metrics: pd.DataFrame, schedules: pd.DataFrame) -> pd.DataFrame:
    """Per synchronous run with tools and a lognormal latency model: the simulation's samples per second for a
    synchronous barrier (``predicted_sync``) and for streaming (``predicted_stream``), with the run's shape."""
    rows = []
    for schedule in schedules.itertuples(index=False):
        latency = schedule.latency
        if schedule.schedule != "sync" or str(latency.get("dist", "none")) != "lognormal" or schedule.batch_size < 1:
            continue
        calls = _mean_metric(metrics, schedule.run, TOOL_CALLS_MEAN)
        gen = _mean_metric(metrics, schedule.run, TIMING_GEN)
        step = _mean_metric(metrics, schedule.run, TIMING_STEP)
        rounds = _mean_metric(metrics, schedule.run, TOOL_ASSISTANT_TURNS_MAX)
        sandbox = _mean_metric(metrics, schedule.run, TOOL_SANDBOX_LATENCY_MEAN)
        if not all(math.isfinite(v) for v in (calls, gen, step, rounds, sandbox)) or calls <= 0:
            continue
        mu, sigma = float(latency.get("mu", 0.0)), float(latency.get("sigma", 1.0))
        mean = max(sandbox, 1e-6)  # the measured latency holds the added delay and the sandbox's own time
        config = SimConfig(
            policy="grpo",
            slots=schedule.batch_size,
            batch_size=schedule.batch_size,
            group_size=1,
            steps=SIM_STEPS,
            dist="lognormal",
            mu=math.log(mean) - sigma**2 / 2,
            sigma=sigma,
            tool_calls=calls,
            turn_time=gen / max(rounds, 1.0),
            update_time=max(step - gen, 0.0),
        )
        rates = {}
        for policy in ("grpo", "spo"):
            runs = [simulate(replace(config, policy=policy, seed=s)).throughput for s in range(SIM_SEEDS)]
            rates[policy] = float(np.mean(runs))
        rows.append(
            {
                **{c: getattr(schedule, c) for c in SCHEDULE_COLUMNS},
                "configured_mu": mu,
                "sigma": sigma,
                "predicted_sync": rates["grpo"],
                "predicted_stream": rates["spo"],
            }
        )
    columns = [*SCHEDULE_COLUMNS, "configured_mu", "sigma", "predicted_sync", "predicted_stream"]
    return pd.DataFrame(rows, columns=columns)
