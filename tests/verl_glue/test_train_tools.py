"""Tool-integrated GRPO and SPO on the CPU backend: the agent loop, the sandbox started for the run, resume."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from spo_helpers.formats.checkpoints import COMPLETE_MARKER, newest_complete_checkpoint
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.verl_glue.checkpoint import RunStopped
from spo_helpers.verl_glue.config import RunSpec, all_overrides

TOOLS = {"tools": "sandbox"}
"""A short run (the default short settings) with the code tool and a sandbox started for the run."""
SPO_TOOLS = {**TOOLS, "offline_values": "none"}
"""The same for SPO, from the uninformative prior."""


def test_the_tool_world_fits_the_cpu_tool_preset():
    from spo_helpers.verl_glue.config import compose
    from spo_helpers.world.traces import TOOL_PROMPT_LENGTH, TOOL_RESPONSE_LENGTH

    config = compose(["preset=cpu", "method=grpo", "agent=tools"])
    assert config.data.max_response_length == TOOL_RESPONSE_LENGTH
    assert config.data.max_prompt_length == TOOL_PROMPT_LENGTH


def test_grpo_with_tools(small_tool_world, tmp_path, train_small, stable_metrics):
    summary = train_small("GRPO", small_tool_world, tmp_path, "grpo_tools", 2, **TOOLS)
    metrics = dict(stable_metrics(summary.run_dir))
    step = metrics[2]
    for key in ("tool/call_rate", "tool/calls/mean", "tool/error_rate", "tool/tool_token_share", "num_turns/mean"):
        assert key in step, key
    assert 0.0 < step["tool/call_rate"] < 1.0  # the warm start uses the tool on about half of its targets
    assert step["tool/tool_token_share"] > 0.0  # interpreter tokens are in the responses, masked out
    assert step["tool/sandbox_error_rate"] == 0.0
    # The response-token count covers the model's tokens only (response_mask), never the interpreter's.
    assert step["kit/response_tokens_total"] < 2 * 128 * 48 * (1 - step["tool/tool_token_share"]) + 1
    records = read_step_log(summary.run_dir / "steps.jsonl")
    calls = np.concatenate([r["data"]["tool_calls"] for r in records])
    assert calls.size == 2 * 128 and (calls > 0).any() and (calls == 0).any()
    outputs = (summary.run_dir / "validation_data" / "2.jsonl").read_text()
    assert "<interpreter>" in outputs and "</code>" in outputs
    # The run's sandbox: started for it, recorded, and gone afterwards.
    url = (summary.run_dir / "sandbox_tool_config.yaml").read_text().split("sandbox_fusion_url:")[1].split()[0]
    where = urlparse(url.strip("'\""))
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect((where.hostname, where.port))


@pytest.mark.slow  # about 35 s (make test-slow); make test keeps SPO's stop-and-resume equality without tools
def test_spo_with_tools_resume_equals_straight_run(small_tool_world, tmp_path, train_small, stable_metrics):
    straight = train_small("SPO", small_tool_world, tmp_path, "straight", 3, **SPO_TOOLS)
    with pytest.raises(RunStopped):
        train_small("SPO", small_tool_world, tmp_path, "resumed", 3, "kit.stop_after_step=2", **SPO_TOOLS)
    resumed = train_small("SPO", small_tool_world, tmp_path, "resumed", 3, **SPO_TOOLS)

    def state(run_dir):
        step = run_dir / "checkpoints" / "global_step_3"
        worker = torch.load(step / "actor" / "cpu_worker.pt", weights_only=False)
        kit = torch.load(step / "kit_state" / "state.pt", weights_only=False)
        return worker, kit

    (w1, k1), (w2, k2) = state(straight.run_dir), state(resumed.run_dir)
    assert all(torch.equal(w1["model"][name], w2["model"][name]) for name in w1["model"])
    assert all(torch.equal(w1["rollout_rng"][s], w2["rollout_rng"][s]) for s in w1["rollout_rng"])
    assert k1["tracker"] == k2["tracker"] and k1["sampler"] == k2["sampler"]
    store1, store2 = k1["store"], k2["store"]
    assert np.array_equal(np.asarray(store1["token_ids"]), np.asarray(store2["token_ids"]))
    assert torch.equal(
        torch.as_tensor(store1["logprobs"]).nan_to_num(7.0), torch.as_tensor(store2["logprobs"]).nan_to_num(7.0)
    )
    # Interpreter tokens are stored (NaN log-probs) and D ignores them: it stays finite.
    assert torch.as_tensor(store1["logprobs"]).isnan().any()
    assert dict(stable_metrics(straight.run_dir)) == dict(stable_metrics(resumed.run_dir))
    assert all(np.isfinite(r["data"]["drift"]).all() for r in read_step_log(straight.run_dir / "steps.jsonl"))
    for name in ("steps.jsonl", "validation_data/2.jsonl"):
        assert (straight.run_dir / name).read_text() == (resumed.run_dir / name).read_text()


def test_a_sandbox_that_dies_stops_the_run_with_an_intact_checkpoint(small_tool_world, tmp_path, wait_for_checkpoint):
    """The sandbox goes away after step 1's checkpoint: the next step's code runs fail in the sandbox, and the
    run stops before that step's update with one line, its step-1 checkpoint complete and nothing after it."""
    from spo_helpers.sandbox.client import local_sandbox

    spec = RunSpec(
        method="GRPO",
        output_dir=str(tmp_path),
        exp_name="dying_sandbox",
        model_path=str(small_tool_world.model_dir),
        train_files=[str(small_tool_world.train_file)],
        val_files=[str(small_tool_world.val_file)],
        total_steps=4,
        tools="sandbox",
        overrides=["trainer.save_freq=1", "trainer.test_freq=-1", "trainer.val_before_train=false"],
    )
    log_path = tmp_path / "run.log"
    with local_sandbox(mode="thread") as url, log_path.open("wb") as log:
        command = [sys.executable, "-m", "spo_helpers.verl_glue.main", *all_overrides(spec), f"kit.sandbox_url={url}"]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            wait_for_checkpoint(proc, spec.layout.checkpoints, 1, log_path)
        except BaseException:
            proc.kill()
            raise
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log_path.read_text()
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("python -m spo_helpers.verl_glue.main: error:")]
    assert len(errors) == 1, output[-3000:]  # one line, naming the step, the share, the limit and the first failure
    assert "step 2: " in errors[0] and "failed in the sandbox" in errors[0] and "cannot reach" in errors[0]
    assert "kit.max_sandbox_error_share=0.05" in errors[0] and "Traceback" not in output
    newest = newest_complete_checkpoint(spec.layout.checkpoints)
    assert newest is not None and newest.name == "global_step_1"
    assert not (spec.layout.checkpoints / "global_step_2" / COMPLETE_MARKER).exists()
