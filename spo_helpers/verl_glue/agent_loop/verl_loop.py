"""The tool-integrated agent loop for verl's agent-loop workers (``ray`` backend, vLLM async servers).

Registered as ``spo_tool_agent``, twice over, because verl's workers run in Ray actors that never import
this module by themselves: the ``@register`` decorator fills verl's registry wherever this module is
imported, and ``spo_tool_agent_loop.yaml`` beside it (``rollout.agent.agent_loop_config_path``) names the
class so each worker imports it. A row runs it when its ``agent_name`` says so, or every row with
``rollout.agent.default_agent_loop=spo_tool_agent``. The Hydra option ``agent=tools`` sets these keys.

Per sample: the ReTool prompt (``prompt.py``), then ``turns.run_turns`` over verl's
``AsyncLLMServerManager.generate``. The official recipe adds ``stop="</code>"`` and
``include_stop_str_in_output=True`` to the sampling parameters in a custom worker class; here the loop adds
them to its own requests, so verl's stock ``AgentLoopManager`` serves it. No ``max_tokens`` is sent (verl's
vLLM server sets it to the context left and refuses a second one); the turn logic cuts the response to
``response_length``. Every generation gets a fresh request id, as in the official loop after each tool
call. Settings come from ``rollout.response_length``, ``rollout.prompt_length``, ``rollout.multi_turn.*``,
``data.apply_chat_template_kwargs`` and the tool YAML at ``rollout.multi_turn.tool_config_path``.

Output: verl's ``AgentLoopOutput`` with the response mask of the turn logic (interpreter tokens 0),
``num_turns = user + assistant + 1``, ``metrics`` with the seconds spent generating and running code, and
``extra_fields``: the official ``turn_scores`` and ``tool_rewards`` (empty) and ``tool_metrics``, the
sample's ``TurnMetrics`` as a dict (``turns.summarize`` reduces a batch of them).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Mapping
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.utils.rollout_trace import rollout_trace_op

from spo_helpers.core.latency import LatencyModel
from spo_helpers.verl_glue.agent_loop.agent_loop_stream import GATE_FIELD, gate_pass
from spo_helpers.verl_glue.agent_loop.prompt import check_prompt_length, prompt_token_ids
from spo_helpers.verl_glue.agent_loop.settings import AGENT_NAME, tool_config_from_file, turn_config_from_rollout
from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter
from spo_helpers.verl_glue.agent_loop.turns import (
    CodeTool,
    Generate,
    GenerateRequest,
    Generation,
    ToolTurns,
    TurnConfig,
    TurnResult,
    run_turns,
)

logger = logging.getLogger(__name__)


def _plain_dict(section: Any) -> dict[str, Any]:
    if section is None:
        return {}
    if hasattr(section, "items"):
        return {str(k): v for k, v in section.items()}
    raise TypeError(f"expected a mapping, got {type(section).__name__}")


def agent_loop_output(result: TurnResult) -> AgentLoopOutput:
    """verl's ``AgentLoopOutput`` for one finished rollout."""
    metrics = result.metrics
    return AgentLoopOutput(
        prompt_ids=list(result.prompt_ids),
        response_ids=list(result.response_ids),
        response_mask=list(result.response_mask),
        response_logprobs=list(result.response_logprobs) if result.response_logprobs is not None else None,
        multi_modal_data={},
        num_turns=result.num_turns,
        metrics={"generate_sequences": metrics.generate_seconds, "tool_calls": metrics.tool_seconds},
        extra_fields={"turn_scores": [], "tool_rewards": [], "tool_metrics": metrics.as_dict()},
    )


@register(AGENT_NAME)
class SPOToolAgentLoop(AgentLoopBase):
    """One sample's tool-integrated rollout; the settings are read once per worker process (``init_class``)."""

    turn_config: TurnConfig
    tool: CodeTool
    prompt_length: int
    chat_template_kwargs: dict[str, Any]
    rewrite_prompt: bool = True
    latency: LatencyModel = LatencyModel()
    _samples = itertools.count()  # this process's samples, in the order they start (names a delay)

    @classmethod
    def init_class(cls, config, tokenizer, processor, **kwargs) -> None:
        """Read the settings and build the code tool; ``kwargs`` are the extra keys of the loop's YAML entry.

        ``rewrite_prompt: false`` in that entry keeps the dataset's chat instead of the ReTool instruction.
        """
        if cls._class_initialized:
            return
        rollout = config.actor_rollout_ref.rollout
        tool_config_path = rollout.multi_turn.get("tool_config_path")
        if not tool_config_path:
            raise ValueError(
                f"the {AGENT_NAME} agent loop needs actor_rollout_ref.rollout.multi_turn.tool_config_path: a verl "
                "tool YAML naming the sandbox URL, e.g. spo_helpers/verl_glue/agent_loop/spo_tool_config.yaml"
            )
        cls.turn_config = turn_config_from_rollout(rollout)
        cls.prompt_length = int(rollout.prompt_length)
        cls.tool = CodeInterpreter(tool_config_from_file(tool_config_path))
        cls.chat_template_kwargs = _plain_dict(config.data.get("apply_chat_template_kwargs"))
        cls.rewrite_prompt = bool(kwargs.get("rewrite_prompt", True))
        kit = config.get("kit", None)
        cls.latency = LatencyModel.from_mapping(kit.get("tool_latency", None) if kit is not None else None)
        cls._class_initialized = True
        logger.info("%s: %s, tool %s", AGENT_NAME, cls.turn_config, cls.tool.config)

    def _generate(self, sampling_params: Mapping[str, Any], gate: str | None = None) -> Generate:
        """One turn's generation on verl's servers; a streamed row's calls pass its gate (``agent_loop_stream``)."""
        params = {
            **sampling_params,
            "stop": list(self.turn_config.stop),
            "include_stop_str_in_output": True,
        }

        async def generate(request: GenerateRequest) -> Generation:
            async with gate_pass(gate):
                output = await self.server_manager.generate(
                    request_id=uuid4().hex,
                    prompt_ids=list(request.prompt_ids),
                    sampling_params=dict(params),  # the server edits its copy (pops "logprobs")
                )
            log_probs = tuple(output.log_probs) if output.log_probs else None
            return Generation(token_ids=tuple(output.token_ids), log_probs=log_probs)

        return generate

    @rollout_trace_op
    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        if "raw_prompt" not in kwargs:
            raise KeyError(f"the {AGENT_NAME} agent loop needs the row's raw_prompt: set data.return_raw_chat=True")
        raw_prompt = kwargs["raw_prompt"]
        prompt_ids = await self.loop.run_in_executor(
            None,
            lambda: prompt_token_ids(
                self.tokenizer,
                raw_prompt,
                rewrite=self.rewrite_prompt,
                chat_template_kwargs=self.chat_template_kwargs,
            ),
        )
        check_prompt_length(prompt_ids, self.prompt_length)
        turns = ToolTurns(prompt_ids, self.turn_config, self.tokenizer, self.tool.extract)
        generate = self._generate(sampling_params, kwargs.get(GATE_FIELD))
        result = await run_turns(turns, generate, self.tool, extra_latency=self._delays(prompt_ids))
        return agent_loop_output(result)

    def _delays(self, prompt_ids):
        """The latency model's delay per code run, named by the prompt and this process's sample count (verl's
        loop is not told whether it serves training or validation: the delay applies to both here)."""
        if not self.latency.enabled:
            return None
        digest = hashlib.sha256(str(list(prompt_ids)).encode()).digest()
        words = (int.from_bytes(digest[:8], "little"), next(self._samples))
        return lambda call: self.latency.delay(*words, call)
