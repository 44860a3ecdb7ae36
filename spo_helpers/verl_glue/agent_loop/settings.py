"""The agent loop's settings, read from where the official recipe keeps them.

- ``turn_config_from_rollout``: ``actor_rollout_ref.rollout.response_length`` and ``rollout.multi_turn.*``
  (``max_assistant_turns``, ``max_user_turns``, ``max_tool_response_length``, ``tool_response_truncate_side``).
- ``tool_config_from_file``: the ``config`` block of the code tool in verl's tool YAML
  (``rollout.multi_turn.tool_config_path``; the official ``spo_tool_config.yaml`` reads unchanged):
  ``sandbox_fusion_url``, ``default_timeout``, ``memory_limit_mb``, ``default_language``, ``rate_limit`` with
  ``enable_global_rate_limit`` (runs at once in the whole cluster, as verl's tool) and ``num_workers`` (threads
  per process), with verl's ``SandboxFusionTool`` defaults (10 each).
  The tool's ``class_name`` is not loaded: the kit's ``CodeInterpreter`` plays its part.
- ``AGENT_LOOP_CONFIG`` and ``TOOL_CONFIG``: the kit's files for ``rollout.agent.agent_loop_config_path``
  and ``rollout.multi_turn.tool_config_path``, beside this module (``agent_loop_file(name)``; the Hydra
  option ``agent=tools`` names them by absolute path: verl resolves relative ones against the working
  folder of each Ray worker). ``agent_loop_options`` reads the extra keys of the loop's entry
  (``rewrite_prompt``), for a backend that runs the loop without verl's workers.
- ``ToolRolloutSettings.from_config``: all of the above for the CPU rollout, or ``None`` when
  ``multi_turn.enable`` is off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spo_helpers.verl_glue.agent_loop.tool import ToolConfig
from spo_helpers.verl_glue.agent_loop.turns import TurnConfig

AGENT_NAME = "spo_tool_agent"
CODE_TOOL_NAME = "code_interpreter"
FILES_DIR = Path(__file__).resolve().parent


def agent_loop_file(name: str) -> str:
    """Absolute path of one of the kit's agent-loop files (what ``${spo.agent_loop_file:NAME}`` gives)."""
    return str(FILES_DIR / name)


AGENT_LOOP_CONFIG = Path(agent_loop_file("spo_tool_agent_loop.yaml"))
TOOL_CONFIG = Path(agent_loop_file("spo_tool_config.yaml"))


def _get(section: Any, key: str, default: Any = None) -> Any:
    if section is None:
        return default
    if isinstance(section, Mapping) or hasattr(section, "get"):
        value = section.get(key, default)
    else:
        value = getattr(section, key, default)
    return default if value is None else value


def _turn_limit(value: Any) -> int | None:
    return int(value) if value else None


def turn_config_from_rollout(rollout: Any) -> TurnConfig:
    """A ``TurnConfig`` from verl's ``actor_rollout_ref.rollout`` section (a DictConfig or a mapping)."""
    multi_turn = _get(rollout, "multi_turn", {})
    return TurnConfig(
        response_length=int(_get(rollout, "response_length")),
        max_assistant_turns=_turn_limit(_get(multi_turn, "max_assistant_turns")),
        max_user_turns=_turn_limit(_get(multi_turn, "max_user_turns")),
        max_tool_response_length=int(_get(multi_turn, "max_tool_response_length", 256)),
        tool_response_truncate_side=str(_get(multi_turn, "tool_response_truncate_side", "middle")),
    )


def agent_loop_options(path: str | os.PathLike = AGENT_LOOP_CONFIG, name: str = AGENT_NAME) -> dict[str, Any]:
    """Extra keys of agent loop ``name``'s entry in an ``agent_loop_config_path`` file (all but name, _target_)."""
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    for entry in entries:
        if entry.get("name") == name:
            return {k: v for k, v in entry.items() if k not in ("name", "_target_")}
    raise ValueError(f"{path}: no agent loop named {name!r}")


def _tool_name(entry: Mapping[str, Any]) -> str | None:
    schema = entry.get("tool_schema") or {}
    return (schema.get("function") or {}).get("name")


def tool_config_from_file(path: str | os.PathLike, name: str = CODE_TOOL_NAME) -> ToolConfig:
    """The code tool's ``ToolConfig`` from a verl tool YAML (``tools: [{class_name, config, tool_schema}]``)."""
    text = Path(path).read_text(encoding="utf-8")
    tools = (yaml.safe_load(text) or {}).get("tools") or []
    named = [t for t in tools if _tool_name(t) == name]
    if not named and len(tools) == 1:
        named = tools
    if not named:
        raise ValueError(f"{path}: no tool named {name!r} under tools: (tool_schema.function.name)")
    return tool_config_from_mapping(named[0].get("config") or {}, where=str(path))


def tool_config_from_mapping(config: Mapping[str, Any], where: str = "tool config") -> ToolConfig:
    """A ``ToolConfig`` from a tool's ``config`` block, with verl's ``SandboxFusionTool`` defaults."""
    url = config.get("sandbox_fusion_url") or ""
    if not url:
        raise ValueError(f"{where}: sandbox_fusion_url is not set (the /run_code URL of a Sandbox Fusion server)")
    rate_limit = int(config.get("rate_limit", 10)) if config.get("enable_global_rate_limit", True) else None
    return ToolConfig(
        url=str(url),
        run_timeout=float(config.get("default_timeout", 30)),
        memory_limit_mb=int(config.get("memory_limit_mb", 1024)),
        language=str(config.get("default_language", "python")),
        rate_limit=rate_limit,
        num_workers=int(config.get("num_workers", 10)),
    )


def tools_enabled(rollout: Any) -> bool:
    """Whether ``actor_rollout_ref.rollout`` runs the tool agent loop (``multi_turn.enable``)."""
    return bool(_get(_get(rollout, "multi_turn", {}), "enable", False))


@dataclass(frozen=True)
class ToolRolloutSettings:
    """What a backend that runs the loop itself (the CPU rollout) needs, read from verl's config once."""

    turns: TurnConfig
    tool: ToolConfig
    rewrite_prompt: bool
    prompt_length: int
    chat_template_kwargs: dict[str, Any]

    @classmethod
    def from_config(cls, rollout: Any, data: Any = None) -> ToolRolloutSettings | None:
        """``None`` unless ``rollout.multi_turn.enable``; the loop's options from its agent-loop file entry."""
        if not tools_enabled(rollout):
            return None
        multi_turn = _get(rollout, "multi_turn", {})
        tool_file = _get(multi_turn, "tool_config_path")
        if not tool_file:
            raise ValueError("rollout.multi_turn.enable is set but rollout.multi_turn.tool_config_path is not")
        agent = _get(rollout, "agent", {})
        options = agent_loop_options(_get(agent, "agent_loop_config_path") or AGENT_LOOP_CONFIG, AGENT_NAME)
        kwargs = _get(data, "apply_chat_template_kwargs", {}) or {}
        return cls(
            turns=turn_config_from_rollout(rollout),
            tool=tool_config_from_file(tool_file),
            rewrite_prompt=bool(options.get("rewrite_prompt", True)),
            prompt_length=int(_get(rollout, "prompt_length")),
            chat_template_kwargs={str(k): v for k, v in dict(kwargs).items()},
        )
