"""Shared fixtures: a small CPU world built once per test session."""

from __future__ import annotations

import os
import time

import pytest

from spo_helpers import cpu_threads

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
cpu_threads.apply_unless_gpu()  # the kit's thread policy for the test process, before anything loads torch


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A few hundred training prompts, a tokenizer and a warm-started tiny model (about a minute)."""
    pytest.importorskip("verl")
    from spo_helpers.world.build import build_world

    return build_world(tmp_path_factory.mktemp("assets"), seed=0, num_train=300, num_val=40, progress=False)


@pytest.fixture(scope="session")
def small_tool_world(tmp_path_factory):
    """The same small world's tool-use variant: warm start with tool traces (about a minute)."""
    pytest.importorskip("verl")
    from spo_helpers.world.build import build_world

    assets = tmp_path_factory.mktemp("tool_assets")
    return build_world(assets, seed=0, num_train=300, num_val=40, progress=False, tools=True)


def wait_for_checkpoint_of(proc, checkpoints, step, log_path, timeout=300.0):
    """Poll until step ``step``'s checkpoint in ``checkpoints`` is complete (its marker written) while ``proc``
    trains; returns the time it was seen. Fails with the log's tail if the process ends first or time runs out."""
    from spo_helpers.formats.checkpoints import COMPLETE_MARKER

    marker = checkpoints / f"global_step_{step}" / COMPLETE_MARKER
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before step {step}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint for step {step} after {timeout:.0f}s")
        time.sleep(0.02)
    return time.monotonic()


@pytest.fixture
def wait_for_checkpoint():
    """``wait_for_checkpoint_of``: the polling the kill-and-resume tests share."""
    return wait_for_checkpoint_of
