"""spo_helpers.world.summary: the one-screen description of a plain world and of a TIR world."""

from __future__ import annotations

import json

from spo_helpers.world.paths import WorldPaths
from spo_helpers.world.summary import summary

PLAIN = {
    "num_train": 300,
    "num_val": 40,
    "task": {"difficulty_train": {"0": 60}},
    "model": {"parameters": 12345},
    "tokenizer": {"vocab_size": 90, "max_prompt_tokens": 30, "max_response_tokens": 9},
    "spread": {
        "prompts": 300,
        "n": 8,
        "mean_success": 0.41,
        "share_all_fail": 0.2,
        "share_mixed": 0.6,
        "share_all_pass": 0.2,
        "mean_by_difficulty": {"0": 0.9},
    },
    "val_accuracy": {"temperature": 0.6, "mean_success": 0.5},
    "build_seconds": 12.0,
    "warm_start_seconds": 8.0,
}
TOOLS = {
    "tools": True,
    "tool_share": 0.5,
    "num_train": 120,
    "num_val": 16,
    "model": {"parameters": 999},
    "tokenizer": {
        "vocab_size": 95,
        "max_prompt_tokens": 30,
        "max_response_tokens": 60,
        "tool_marker_tokens": {"code_open": 1},
    },
    "tool_response_length": 256,
    "spread": None,
    "val_accuracy": None,
    "build_seconds": 3,
    "warm_start_seconds": 1,
}
MEASURED = {
    **TOOLS,
    "spread": {
        "prompts": 16,
        "n": 2,
        "mean_success": 0.3,
        "share_all_fail": 0.1,
        "share_mixed": 0.5,
        "share_all_pass": 0.4,
        "mean_by_difficulty": {"0": 0.5, "1": None},
        "tool_call_rate": 0.4,
        "success_with_tool": 0.6,
        "success_without_tool": None,
        "max_response_tokens": 80,
        "share_out_of_budget": 0.01,
        "tool_call_rate_by_difficulty": {"0": 0.3},
    },
    "val_accuracy": {"temperature": 0.6, "mean_success": 0.2, "tool_call_rate": 0.5},
    "tool_check_seconds": 4.5,
}


def _world(root, manifest) -> WorldPaths:
    paths = WorldPaths.at(root)
    root.mkdir()
    paths.manifest_file.write_text(json.dumps(manifest))
    return paths


def test_plain_world(tmp_path):
    paths = _world(tmp_path / "w", PLAIN)
    assert summary(paths).splitlines() == [
        f"world    {paths.root}",
        f"data     300 train / 40 val prompts   {paths.root / 'data'}",
        "         difficulty mix (train) {'0': 60}",
        f"model    {paths.model_dir}   (MODEL_PATH: tokenizer + Qwen3, 12,345 params)",
        "tokens   vocab 90, prompt <= 30, response <= 9",
        "spread   300 train prompts x 8 samples at T=1: mean success 0.410, all-fail 0.20, mixed 0.60, all-pass 0.20",
        "         by difficulty {'0': 0.9}",
        "val      accuracy at T=0.6: 0.500",
        "time     12.0s (warm start 8.0s)",
    ]


def test_a_tool_world_not_yet_checked_says_so(tmp_path):
    paths = _world(tmp_path / "w", TOOLS)
    assert summary(paths).splitlines() == [
        f"world    {paths.root}   (with tools: 50% of warm-start targets are tool traces)",
        f"data     120 train / 16 val prompts   {paths.root / 'data'}",
        f"model    {paths.model_dir}   (MODEL_PATH: tokenizer + Qwen3, 999 params)",
        "tokens   vocab 95, prompt <= 30, tool trace <= 60, response budget 256; markers {'code_open': 1}",
        "spread   not measured yet: spo world --tools runs it through the agent loop and the sandbox",
        "time     3s (warm start 1s)",
    ]


def test_a_checked_tool_world_shows_tool_use_by_difficulty(tmp_path):
    lines = summary(_world(tmp_path / "w", MEASURED)).splitlines()
    assert lines[4] == (
        "spread   16 train prompts x 2 samples at T=1 with tools: mean success 0.300, all-fail 0.10, mixed 0.50, "
        "all-pass 0.40"
    )
    assert lines[5] == "         by difficulty         0:0.50 1:-"
    assert lines[6] == (
        "tools    call rate 0.40, success with a call 0.60, without -; longest response 80 tokens, 1.0% out of budget"
    )
    assert lines[7:10] == [
        "         call rate             0:0.30",
        "         success with a call   -",
        "         success without       -",
    ]
    assert lines[10:] == [
        "val      accuracy at T=0.6 with tools: 0.200, call rate 0.50",
        "time     3s (warm start 1s), tool check 4.5s",
    ]


def test_a_folder_without_a_manifest_still_gets_a_description(tmp_path):
    text = summary(WorldPaths.at(tmp_path / "missing"))
    assert text.splitlines()[0] == f"world    {tmp_path / 'missing'}"
    assert "mean success nan" in text
