"""A real crash: SIGKILL a CPU training subprocess after a checkpoint, resume it, compare with a straight run.

Marked ``slow`` (about 50 s; ``make test-slow``): ``make test`` checks resume = straight run through a stop after
a checkpoint (``test_train_cpu``), and CI's ``make test-ray`` SIGKILLs the driver of both methods on two ranks.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("verl")

from spo_helpers.formats.checkpoints import COMPLETE_MARKER, newest_complete_checkpoint
from spo_helpers.stages.train import train
from spo_helpers.verl_glue.config import RunSpec, all_overrides

STEPS = 5
OVERRIDES = ["trainer.save_freq=1", "trainer.test_freq=2", "actor_rollout_ref.rollout.val_kwargs.n=1"]
SEEDS = {"GRPO": 1, "SPO": 11}  # kill during step 3 (GRPO) and late in step 4 (SPO)


def start_subprocess(method, kwargs, log):
    """``python -m spo_helpers.verl_glue.main`` with the overrides ``spo train`` would use for ``train``'s
    arguments ``kwargs``."""
    spec = RunSpec(method=method, **kwargs)
    command = [sys.executable, "-m", "spo_helpers.verl_glue.main", *all_overrides(spec)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return spec.run_dir, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def tear(step_dir):
    """A checkpoint a crash interrupted mid-save: garbage files, no completion marker."""
    for name in ("actor/cpu_worker.pt", "kit_state/state.pt", "data.pt"):
        path = step_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"torn")
    (step_dir / COMPLETE_MARKER).unlink(missing_ok=True)


def final_state(run_dir):
    step = run_dir / "checkpoints" / f"global_step_{STEPS}"
    worker = torch.load(step / "actor" / "cpu_worker.pt", map_location="cpu", weights_only=False)
    kit = torch.load(step / "kit_state" / "state.pt", map_location="cpu", weights_only=False)
    return worker["model"], kit["tracker"]


def loaded_checkpoint(run_dir):
    """The folder the last start of the run resumed from, as verl logs it (None: from scratch)."""
    lines = re.findall(
        r"^(Load from checkpoint folder: .*|Training from scratch)$", (run_dir / "verl.log").read_text(), re.M
    )
    assert lines, "verl.log records no checkpoint decision"
    return None if lines[-1] == "Training from scratch" else lines[-1].split(": ", 1)[1].strip()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["GRPO", "SPO"])
def test_sigkill_then_resume_equals_straight_run(
    method, small_world, tmp_path, small_world_values, small_run_kwargs, stable_metrics, wait_for_checkpoint
):
    def run_kwargs(out):
        values = small_world_values(seed=1) if method == "SPO" else None
        name = f"{method.lower()}_run"
        return small_run_kwargs(method, small_world, out, name, STEPS, settings=OVERRIDES, offline_values=values)

    rng = random.Random(SEEDS[method])
    after_step = rng.randint(2, STEPS - 2)
    fraction = rng.random()

    log_path = tmp_path / "killed.log"
    with log_path.open("wb") as log:
        run_dir, proc = start_subprocess(method, run_kwargs(tmp_path / "killed"), log)
        try:
            seen = wait_for_checkpoint(proc, run_dir / "checkpoints", after_step - 1, log_path)
            step_seconds = wait_for_checkpoint(proc, run_dir / "checkpoints", after_step, log_path) - seen
            # somewhere in the next step (generation, update, logging or its save); a later step still follows
            time.sleep(fraction * step_seconds)
            assert proc.poll() is None, f"the run finished before the kill:\n{log_path.read_text()[-3000:]}"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    checkpoints = run_dir / "checkpoints"
    newest = newest_complete_checkpoint(checkpoints)
    # Usually after_step or the next one; on a loaded machine the run may outpace the measured step time.
    assert newest is not None and after_step <= int(newest.name.split("_")[-1]) < STEPS, newest
    torn = checkpoints / f"global_step_{int(newest.name.split('_')[-1]) + 1}"
    tear(torn)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text(torn.name.split("_")[-1])

    resumed = train(method, **run_kwargs(tmp_path / "killed"))
    assert loaded_checkpoint(run_dir) == str(newest)
    assert resumed.steps == STEPS
    assert (torn / COMPLETE_MARKER).is_file()  # rewritten by the resumed run, not loaded from

    straight = train(method, **run_kwargs(tmp_path / "straight"))
    (w1, t1), (w2, t2) = final_state(straight.run_dir), final_state(run_dir)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[name], w2[name]) for name in w1)
    assert t1 == t2
    assert (straight.run_dir / "steps.jsonl").read_text() == (run_dir / "steps.jsonl").read_text()
    assert stable_metrics(straight.run_dir) == stable_metrics(run_dir)
    assert [step for step, _ in stable_metrics(run_dir)] == list(range(STEPS + 1))
