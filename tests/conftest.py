"""Shared fixtures: a small CPU world built once per test session."""

from __future__ import annotations

import os

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
