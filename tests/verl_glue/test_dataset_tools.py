"""The kit's dataset with tools on: it builds no tool (no sandbox client, no Ray) and filters prompts by the chat
prompt alone, as the official recipe's dataset."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("verl")


def test_the_dataset_builds_no_tool(small_tool_world, tmp_path):
    from verl.trainer.main_ppo import create_rl_dataset
    from verl.utils import hf_tokenizer

    from spo_helpers.verl_glue.config import RunSpec, build_config

    spec = RunSpec(
        method="GRPO",
        output_dir=str(tmp_path),
        model_path=str(small_tool_world.model_dir),
        train_files=[str(small_tool_world.train_file)],
        val_files=[str(small_tool_world.val_file)],
        tools="sandbox",
    )
    config = build_config(spec)
    assert config.data.tool_config_path  # verl copies the rollout's tool file into the data config
    ray_was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    tokenizer = hf_tokenizer(config.actor_rollout_ref.model.path)
    dataset = create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)
    assert type(dataset).__name__ == "KitRLHFDataset"
    assert dataset.tool_schemas is None and dataset.tool_config_path is None
    assert len(dataset) == 300  # every prompt fits without the tool schema in its chat template
    if not ray_was_up:
        assert not ("ray" in sys.modules and sys.modules["ray"].is_initialized())  # no Ray started for a tool
