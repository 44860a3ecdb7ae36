"""The Hydra option ``agent=tools``: the official recipe's multi-turn keys and the kit's two agent-loop files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from spo_helpers.verl_glue.agent_loop import settings

pytest.importorskip("verl")
pytestmark = pytest.mark.verl

RESOLVER = "spo.agent_loop_file"


def test_agent_tools_sets_the_official_multi_turn_keys():
    from spo_helpers.verl_glue.config import CONFIG_DIR, compose

    assert (CONFIG_DIR / "agent" / "tools.yaml").is_file()
    config = compose(["preset=official", "method=spo", "+agent=tools"])
    rollout = config.actor_rollout_ref.rollout
    assert rollout.multi_turn.enable is True
    assert (rollout.multi_turn.max_user_turns, rollout.multi_turn.max_assistant_turns) == (8, 8)
    assert rollout.agent.default_agent_loop == settings.AGENT_NAME  # over the preset's single_turn_agent
    assert settings.turn_config_from_rollout(rollout).max_tool_response_length == 256

    registered = OmegaConf.has_resolver(RESOLVER)
    if not registered:  # until the kit's config registers it: the same function
        OmegaConf.register_new_resolver(RESOLVER, settings.agent_loop_file)
    try:
        paths = OmegaConf.to_container(rollout, resolve=True)
    finally:
        if not registered:
            OmegaConf.clear_resolver(RESOLVER)
    assert paths["multi_turn"]["tool_config_path"] == str(settings.TOOL_CONFIG)
    assert paths["agent"]["agent_loop_config_path"] == str(settings.AGENT_LOOP_CONFIG)
