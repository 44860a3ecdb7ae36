"""Tool-integrated reasoning: one agent loop with the official SPO recipe's rules, two generation servers.

- ``prompt``      the ReTool instruction put in front of each problem, and the prompt's token ids
- ``turns``       the turn logic: ``ToolTurns`` (a state machine, no I/O) and ``run_turns`` (its driver)
- ``tool``        the code interpreter: a turn's code block, run on a Sandbox Fusion ``/run_code`` server
- ``settings``    the loop's settings from verl's config and tool YAML; the kit's files beside it
                  (``spo_tool_agent_loop.yaml`` for verl's registry, ``spo_tool_config.yaml`` for the tool)
- ``verl_loop``   ``SPOToolAgentLoop``, registered as ``spo_tool_agent`` for verl's agent-loop workers (vLLM)
- ``cpu_server``  the in-process server for the CPU backend's tiny model, and the batch entry point
- ``stream_book`` the bookkeeping of a streaming engine (queue, running and finished requests, a step's close)
- ``stream_engine``      streamed rollouts on the CPU backend's server
- ``agent_loop_stream``  streamed rollouts on verl's agent-loop workers (vLLM), paused through a gate actor

Only the server-free parts are imported here; ``verl_loop`` (verl) and ``cpu_server`` (torch) are
imported by name where they are used. See ``docs/tools.md``.
"""

from spo_helpers.verl_glue.agent_loop.prompt import RETOOL_INSTRUCTION, prompt_token_ids, retool_messages
from spo_helpers.verl_glue.agent_loop.settings import (
    AGENT_LOOP_CONFIG,
    AGENT_NAME,
    TOOL_CONFIG,
    agent_loop_file,
    agent_loop_options,
    tool_config_from_file,
    turn_config_from_rollout,
)
from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter, ToolConfig, extract_code, interpreter_text
from spo_helpers.verl_glue.agent_loop.turns import (
    GenerateRequest,
    Generation,
    StopReason,
    ToolResult,
    ToolStatus,
    ToolTurns,
    TurnConfig,
    TurnMetrics,
    TurnResult,
    run_turns,
    summarize,
)

__all__ = [
    "AGENT_LOOP_CONFIG",
    "AGENT_NAME",
    "RETOOL_INSTRUCTION",
    "TOOL_CONFIG",
    "CodeInterpreter",
    "GenerateRequest",
    "Generation",
    "StopReason",
    "ToolConfig",
    "ToolResult",
    "ToolStatus",
    "ToolTurns",
    "TurnConfig",
    "TurnMetrics",
    "TurnResult",
    "agent_loop_file",
    "agent_loop_options",
    "extract_code",
    "interpreter_text",
    "prompt_token_ids",
    "retool_messages",
    "run_turns",
    "summarize",
    "tool_config_from_file",
    "turn_config_from_rollout",
]
