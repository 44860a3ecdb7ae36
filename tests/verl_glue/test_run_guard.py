"""One writer per run folder, and a run that refuses to resume under settings that change its results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("verl")

from spo_helpers.cli import main
from spo_helpers.errors import UserError
from spo_helpers.formats.run_lock import LOCK_FILE, holder, run_lock
from spo_helpers.verl_glue.config import RunSpec, build_config
from spo_helpers.verl_glue.run_identity import IDENTITY_FILE, check_identity, differences, run_identity

HOLD = """
import sys, time
from spo_helpers.formats.run_lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_and_told_who_writes(tmp_path):
    run_dir = tmp_path / "spo" / "run"
    proc = hold_lock(run_dir)
    try:
        assert holder(run_dir)["pid"] == proc.pid
        with (
            pytest.raises(UserError, match=rf"another run is writing to this folder: pid {proc.pid} on "),
            run_lock(run_dir),
        ):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_writer_leaves_no_lock_that_blocks(tmp_path):
    run_dir = tmp_path / "run"
    proc = hold_lock(run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / LOCK_FILE).is_file()  # the file stays, unlocked
    with run_lock(run_dir):
        assert holder(run_dir)["pid"] == os.getpid()


def test_two_trainings_on_one_folder(small_world, tmp_path, capsys):
    """The second `spo train` on a folder being written stops before any compute, naming the first."""
    out = tmp_path / "out"
    proc = hold_lock(out / "spo" / "grpo_cpu")
    try:
        argv = ["train", "--output_dir", out, "--model_path", small_world.model_dir]
        argv += ["--train_files", small_world.train_file, "--val_files", small_world.val_file]
        started = time.perf_counter()
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        proc.kill()
        proc.wait()
    assert code == 2 and len(err) == 1 and f"pid {proc.pid}" in err[0], err
    assert not (out / "spo" / "grpo_cpu" / "metrics.jsonl").exists()
    assert time.perf_counter() - started < 60


def spec(tmp_path, **kwargs):
    base = {
        "method": "GRPO",
        "preset": "cpu",
        "output_dir": str(tmp_path),
        "exp_name": "run",
        "model_path": "/m",
        "train_files": [str(tmp_path / "train.parquet")],
        "val_files": ["/v.parquet"],
    }
    return RunSpec(**(base | kwargs))


def test_a_changed_setting_is_refused_on_resume(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"rows")
    first = build_config(spec(tmp_path, total_steps=4))
    check_identity(first, resuming=False)
    assert (Path(first.kit.run_dir) / IDENTITY_FILE).is_file()
    # May change: steps, logging, checkpoint frequency.
    check_identity(build_config(spec(tmp_path, total_steps=9, overrides=["trainer.save_freq=7"])), resuming=True)
    for changed, key in [
        ({"seed": 1}, "kit.seed"),
        ({"overrides": ["actor_rollout_ref.actor.optim.lr=3e-6"]}, "actor_rollout_ref.actor.optim.lr"),
        ({"overrides": ["data.train_batch_size=8"]}, "data.train_batch_size"),
    ]:
        with pytest.raises(UserError, match=rf"{key}: .* -> .*; use a new --exp_name .* or --fresh"):
            check_identity(build_config(spec(tmp_path, total_steps=4, **changed)), resuming=True)
    (tmp_path / "train.parquet").write_bytes(b"other rows")  # same path, other data
    with pytest.raises(UserError, match=r"data.train_files: \['sha256:"):
        check_identity(first, resuming=True)


def test_identity_keeps_contents_not_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "train.parquet").write_bytes(b"same rows")
    one = run_identity(build_config(spec(tmp_path, train_files=[str(tmp_path / "a" / "train.parquet")])))
    two = run_identity(build_config(spec(tmp_path, train_files=[str(tmp_path / "b" / "train.parquet")])))
    assert differences(one, two) == []
    assert one["custom_reward_function.path"] == "pkg:verl_glue/reward.py"
    assert not any(k.startswith(("trainer.total_training_steps", "trainer.logger")) for k in one)
    assert json.loads(json.dumps(one)) == one


def test_a_moved_run_and_a_copied_model_are_the_same_run(tmp_path):
    """Identity is content: the run folder moved to another output folder, and the model copied byte for byte to
    another path, resume; a model whose bytes changed does not, and the refusal says what --fresh deletes."""
    import shutil

    (tmp_path / "train.parquet").write_bytes(b"rows")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen3"}')
    (model / "model.safetensors").write_bytes(b"weights")
    first = build_config(spec(tmp_path / "out_a", model_path=str(model), train_files=[str(tmp_path / "train.parquet")]))
    check_identity(first, resuming=False)
    shutil.copytree(tmp_path / "out_a", tmp_path / "out_b")
    copy = shutil.copytree(model, tmp_path / "elsewhere" / "model")
    moved = build_config(spec(tmp_path / "out_b", model_path=str(copy), train_files=[str(tmp_path / "train.parquet")]))
    check_identity(moved, resuming=True)  # accepted
    identity = run_identity(moved)
    assert identity["actor_rollout_ref.model.path"].startswith("model-sha256:") and "kit.output_dir" not in identity
    (copy / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(UserError, match=r"actor_rollout_ref.model.path: 'model-sha256:.*--fresh, which deletes"):
        check_identity(moved, resuming=True)
