"""The GPU smoke script, ``scripts/gpu_smoke.sh --device cpu``: the commands a GPU user runs first, run here
through verl's vLLM rollout on CPU (async, the GPU presets' path), then its outputs read in detail.

The script runs each step as its own ``spo`` command (each starts its own Ray): the world and a split, ``spo
estimate`` and ``spo merge``, GRPO, the weight-sync check, SPO stopped after step 2 and resumed, GRPO and SPO with
tools (the kit's ``spo_tool_agent`` on vLLM's servers, code run in the run's own sandbox), SPO streamed and GRPO
over-provisioned on verl's agent-loop workers, and ``spo figures``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from spo_helpers.formats.checkpoints import KIT_STATE_DIR
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.steplog import read_step_log

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif("'vllm' not in config.getoption('markexpr')", reason="vLLM cases: run with -m vllm"),
]

CHECKOUT = Path(__file__).resolve().parents[2]
STEPS = 3


@pytest.fixture(scope="module")
def smoke(worlds, tmp_path_factory):
    """The script's output folder and its verdict, run once for the module."""
    out = tmp_path_factory.mktemp("smoke") / "gpu_smoke"
    done = subprocess.run(
        ["bash", "scripts/gpu_smoke.sh", "--device", "cpu", "--out", str(out), "--steps", str(STEPS)],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    verdict = done.stdout[done.stdout.find("gpu-smoke verdict") :]
    return out, verdict, done.returncode


def rows_of(verdict: str) -> dict[str, str]:
    lines = [line for line in verdict.splitlines()[2:] if line and "gpu-smoke:" not in line]
    return {re.split(r"\s{2,}", line)[0]: line for line in lines}


def metrics_of(run: Path) -> dict[int, dict]:
    return {r["step"]: r["data"] for r in read_step_log(RunLayout(run).metrics)}


def test_every_step_of_the_smoke_passes(smoke):
    out, verdict, code = smoke
    assert code == 0, verdict + "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in (out / "logs").glob("*"))
    rows = rows_of(verdict)
    for name in ("cpu and packages", "world", "split", "estimate", "merge", "grpo", "grpo result", "weight sync"):
        assert " PASS " in rows[name], rows.get(name)
    for name in ("spo, stopped", "spo stopped at 2", "spo, resumed", "spo result", "grpo tools", "spo tools"):
        assert " PASS " in rows[name], rows.get(name)
    for name in ("spo tools stream", "spo stream result", "grpo tools overprov", "grpo overprov result"):
        assert " PASS " in rows[name], rows.get(name)
    assert " PASS " in rows["figures written"] and "cpu run" in verdict


def test_estimate_dumps_through_vllm(smoke):
    out, _, _ = smoke
    for subset in (0, 1):
        dump = out / "spo" / f"offline_value_estimation_subset_{subset}" / "validation_data" / "0.jsonl"
        lines = [json.loads(line) for line in dump.read_text().splitlines()]
        assert len(lines) == 256 * 4  # the first 256 prompts of the subset (data.val_max_samples), n=4
        assert all(line["data_source"] and line["prompt_key"] and line["score"] in (0.0, 1.0) for line in lines)
    values = json.loads((out / "offline_values.json").read_text())
    assert len(values) == 2 * 256 and all(len(scores) == 4 for scores in values.values())


def test_spo_stopped_and_resumed_logs_each_step_once(smoke):
    out, _, _ = smoke
    run = out / "spo" / "spo_vllm"
    steps = [r["step"] for r in read_step_log(RunLayout(run).steps)]
    assert steps == list(range(1, STEPS + 1))
    metrics = metrics_of(run)
    assert metrics[1]["spo/first_sampled_ratio"] == 1.0
    assert all(0.0 <= metrics[s]["critic/score/mean"] <= 1.0 for s in range(1, STEPS + 1))


@pytest.mark.parametrize("name", ["grpo_tools", "spo_tools"])
def test_tool_runs_on_vllm_servers(smoke, name):
    """Turns, masks, interpreter output and tool metrics, as the CPU backend's tool tests check them."""
    out, _, _ = smoke
    run = out / "spo" / name
    step = metrics_of(run)[2]
    for key in ("tool/call_rate", "tool/calls/mean", "tool/error_rate", "tool/tool_token_share", "num_turns/mean"):
        assert key in step, key
    assert 0.0 < step["tool/call_rate"] < 1.0  # the warm start uses the tool on about half of its targets
    assert step["tool/tool_token_share"] > 0.0 and step["tool/sandbox_error_rate"] == 0.0
    assert step["num_turns/max"] > step["num_turns/min"] >= 2  # user + assistant, and more with a code run
    calls = np.concatenate([r["data"]["tool_calls"] for r in read_step_log(RunLayout(run).steps)])
    assert (calls > 0).any() and (calls == 0).any()
    outputs = (RunLayout(run).validation_data / "2.jsonl").read_text()
    assert "<interpreter>" in outputs and "</code>" in outputs
    if name == "spo_tools":  # interpreter tokens are stored with NaN log-probs; D over the model's tokens stays finite
        state = torch.load(
            RunLayout(run).checkpoints / "global_step_2" / KIT_STATE_DIR / "state.pt", weights_only=False
        )
        assert torch.as_tensor(state["store"]["logprobs"]).isnan().any()
        assert all(np.isfinite(r["data"]["drift"]).all() for r in read_step_log(RunLayout(run).steps))


def test_spo_streams_single_samples_through_the_agent_loop_workers(smoke):
    """Each step trains on a full batch of samples that finished, some launched before the previous update, each
    with its staleness; the PPO ratio is against vLLM's behaviour log-probs; the tracker sees every sample once."""
    out, _, _ = smoke
    run = out / "spo" / "spo_tools_stream"
    records = read_step_log(RunLayout(run).steps)
    assert [r["step"] for r in records] == [1, 2]
    batch = len(records[0]["data"]["reward"])
    for record in records:
        staleness = np.asarray(record["data"]["staleness"])
        assert len(staleness) == batch and ((staleness >= 0) & (staleness <= 4)).all()
    assert np.asarray(records[0]["data"]["staleness"]).max() == 0  # nothing was stale before the first update
    metrics = metrics_of(run)
    for step in (1, 2):
        assert metrics[step]["stream/in_flight"] > 0  # the samples that had not finished ran on into the next step
        assert 0.0 < metrics[step]["stream/behaviour_abs_logprob_gap"] < 1.0
    assert metrics[2]["stream/version"] == 1.0
    visits = torch.load(RunLayout(run).checkpoints / "global_step_2" / KIT_STATE_DIR / "state.pt", weights_only=False)[
        "tracker"
    ]["visits"]
    assert int(np.asarray(visits).sum()) == 2 * batch


def test_grpo_overprovision_trains_whole_groups_and_cancels_the_rest(smoke):
    out, _, _ = smoke
    run = out / "spo" / "grpo_tools_overprovision"
    metrics = metrics_of(run)
    for record in read_step_log(RunLayout(run).steps):
        groups = np.bincount(np.asarray(record["data"]["group"]))
        assert (groups == groups[0]).all() and groups[0] > 1, groups  # every group complete: rollout.n members
        assert metrics[record["step"]]["stream/staleness/max"] == 0  # nothing carries over an update
    assert all(metrics[step]["stream/dropped"] == 0 for step in (1, 2))


def test_figures_of_the_vllm_runs(smoke):
    out, _, _ = smoke
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert "09_tool_use" in names and len(names) >= 5
