"""Tools in the config: each preset's default, ``agent=tools|none``, ``--tools``, and the CPU world's loop file."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from spo_helpers.verl_glue.agent_loop import settings

pytest.importorskip("verl")
pytestmark = pytest.mark.verl


def _rollout(overrides):
    from spo_helpers.verl_glue.config import compose

    config = compose(overrides)
    return config, OmegaConf.to_container(config.actor_rollout_ref.rollout, resolve=True)


def test_official_preset_runs_the_official_multi_turn_keys_by_default():
    from spo_helpers.verl_glue.config import CONFIG_DIR

    assert (CONFIG_DIR / "agent" / "tools.yaml").is_file()
    config, rollout = _rollout(["preset=official", "method=spo"])
    assert rollout["multi_turn"]["enable"] is True
    assert (rollout["multi_turn"]["max_user_turns"], rollout["multi_turn"]["max_assistant_turns"]) == (8, 8)
    assert rollout["agent"]["default_agent_loop"] == settings.AGENT_NAME  # over verl's single_turn_agent
    assert settings.turn_config_from_rollout(config.actor_rollout_ref.rollout).max_tool_response_length == 256
    assert rollout["multi_turn"]["tool_config_path"] == str(settings.TOOL_CONFIG)
    assert rollout["agent"]["agent_loop_config_path"] == str(settings.AGENT_LOOP_CONFIG)
    assert settings.agent_loop_options(rollout["agent"]["agent_loop_config_path"])["rewrite_prompt"] is True


@pytest.mark.parametrize("preset", ["official", "paper"])
def test_agent_none_turns_tools_off(preset):
    _, rollout = _rollout([f"preset={preset}", "method=grpo", "agent=none"])
    assert rollout["multi_turn"]["enable"] is False


def test_cpu_preset_is_math_only_and_its_tool_runs_keep_the_dataset_chat():
    _, plain = _rollout(["preset=cpu", "method=spo"])
    assert plain["multi_turn"]["enable"] is False
    config, tools = _rollout(["preset=cpu", "method=spo", "agent=tools"])
    assert tools["multi_turn"]["enable"] is True
    assert settings.agent_loop_options(tools["agent"]["agent_loop_config_path"])["rewrite_prompt"] is False
    assert config.data.max_response_length > plain["response_length"]


@pytest.mark.parametrize("method", ["SPO", "EVAL"])  # EVAL: stage 02 estimates offline values the same way
@pytest.mark.parametrize(
    ("preset", "tools", "expected"),
    [("cpu", None, False), ("cpu", "sandbox", True), ("official", None, True), ("paper", "none", False)],
)
def test_run_spec_tools_flag(preset, tools, expected, method):
    from spo_helpers.verl_glue.config import RunSpec, build_config, preset_default_tools

    spec = RunSpec(method=method, preset=preset, model_path="m", train_files=["a.parquet"], tools=tools)
    assert spec.uses_tools is expected
    assert (preset_default_tools(preset) == "sandbox") is (preset != "cpu")
    config = build_config(spec)
    assert bool(config.actor_rollout_ref.rollout.multi_turn.enable) is expected


def test_unknown_tools_value_is_refused():
    from spo_helpers.errors import UserError
    from spo_helpers.verl_glue.config import RunSpec

    with pytest.raises(UserError, match="--tools must be one of"):
        RunSpec(method="SPO", tools="docker")
