"""Throughput and staleness per schedule from run frames, the simulation's prediction, and the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import yaml

from spo_helpers.analysis import plots as P
from spo_helpers.analysis.runs import RunInfo
from spo_helpers.analysis.streaming import (
    run_schedules,
    simulated_throughput,
    staleness_distribution,
    step_throughput,
)
from spo_helpers.errors import MissingData


def run_folder(tmp_path, name, method, schedule, latency=None):
    folder = tmp_path / name
    folder.mkdir()
    config = {
        "kit": {"schedule": {"policy": schedule}, "tool_latency": latency or {"dist": "none"}},
        "data": {"train_batch_size": 4 if method == "SPO" else 2},
        "actor_rollout_ref": {"rollout": {"n": 1 if method == "SPO" else 2}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump({"config": config}))
    return RunInfo(path=folder, name=name, method=method, seed=0, kind="kit")


def metric_rows(run, method, values):
    return [
        {"run": run, "method": method, "seed": 0, "step": step, "key": key, "value": value}
        for step, row in values.items()
        for key, value in row.items()
    ]


def test_throughput_staleness_and_prediction(tmp_path):
    lognormal = {"dist": "lognormal", "mu": -1.0, "sigma": 1.0}
    runs = [
        run_folder(tmp_path, "spo_sync", "SPO", "sync", lognormal),
        run_folder(tmp_path, "spo_stream", "SPO", "stream", lognormal),
        run_folder(tmp_path, "old_run", "GRPO", None),  # no schedule key: sync
    ]
    schedules = run_schedules(runs)
    assert list(schedules["arm"]) == ["SPO sync", "SPO stream", "GRPO sync"]
    assert list(schedules["batch_size"]) == [4, 4, 4]
    shape = {
        "timing_s/gen": 1.0,
        "tool/calls/mean": 0.5,
        "tool/assistant_turns/max": 2.0,
        "tool/sandbox_latency/mean": 0.4,
    }
    metrics = pd.DataFrame(
        metric_rows("spo_sync", "SPO", {1: {"timing_s/step": 2.0, **shape}, 2: {"timing_s/step": 4.0, **shape}})
        + metric_rows("spo_stream", "SPO", {1: {"timing_s/step": 1.0}, 2: {"timing_s/step": 0.5}})
        + metric_rows("old_run", "GRPO", {1: {"timing_s/step": 8.0}})
    )
    steps = pd.DataFrame(
        {
            "run": ["spo_sync"] * 8 + ["spo_stream"] * 8 + ["old_run"] * 4,
            "step": [1] * 4 + [2] * 4 + [1] * 4 + [2] * 4 + [1] * 4,
            "staleness": [np.nan] * 8 + [0, 0, 0, 0, 0, 1, 1, 2] + [np.nan] * 4,
        }
    )
    frame = step_throughput(metrics, steps, schedules)
    rates = frame.set_index(["run", "step"])["samples_per_s"]
    assert rates[("spo_sync", 1)] == 2.0 and rates[("spo_sync", 2)] == 1.0  # 4 samples / step seconds
    assert rates[("spo_stream", 2)] == 8.0 and rates[("old_run", 1)] == 0.5
    stale = staleness_distribution(steps, schedules).set_index(["arm", "staleness"])["fraction"]
    assert stale[("SPO stream", 0)] == 5 / 8 and stale[("SPO stream", 1)] == 2 / 8 and stale[("SPO stream", 2)] == 1 / 8
    assert stale[("SPO sync", 0)] == 1.0 and stale[("GRPO sync", 0)] == 1.0
    predicted = simulated_throughput(metrics, schedules)
    assert list(predicted["run"]) == ["spo_sync"]  # synchronous, lognormal, with the shape logged
    row = predicted.iloc[0]
    assert row["predicted_stream"] > row["predicted_sync"] > 0  # a barrier waits for the slowest sample
    fig = P.plot_streaming(frame, staleness_distribution(steps, schedules), predicted)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["GRPO sync", "SPO stream", "SPO sync"]
    assert left.get_ylabel() == "trainable samples per second" and right.get_xlabel().startswith("staleness")
    with pytest.raises(MissingData):
        P.plot_streaming(frame.iloc[:0], staleness_distribution(steps, schedules))
