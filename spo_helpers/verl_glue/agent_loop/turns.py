"""The turn logic of a tool-integrated rollout, as a state machine that knows no server and no sandbox.

One rollout alternates model generations and code runs. ``ToolTurns`` holds the state of one sample and
applies the official SPO agent loop's rules; ``run_turns`` drives it with an async ``generate`` and a tool.
The same two objects serve verl's vLLM servers (``verl_loop``) and the in-process CPU server
(``cpu_server``): the servers differ, the rules exist once.

The rules, in the order the official loop applies them (L = ``response_length``, R = response so far,
M = its mask; 1 marks a token the model sampled, 0 a token the interpreter wrote):

1. Generate from ``prompt + R``, stopping at ``</code>`` (kept in the output) or EOS, at most ``L - |R|``
   new tokens asked for. Append every returned token with mask 1 (a server may return more than asked:
   vLLM's limit is the context length); count an assistant turn.
2. Stop when ``|R| >= L`` (the response budget is used), when the assistant turns reach
   ``max_assistant_turns``, or the user turns reach ``max_user_turns`` (``None`` or 0: no limit; the
   official runs use 8 and 8, so at most 8 generations and 7 code runs).
3. Decode this turn's tokens (special tokens kept) and look for a code block (the tool's ``extract``:
   the first ``<code>...</code>``, fences stripped). None: the model answered; stop.
4. Run the code. The interpreter's text is cut to ``max_tool_response_length`` characters
   (``truncate_tool_output``) and wrapped as ``"<interpreter>\\n" + text + "\\n</interpreter>\\n\\n"``, then
   tokenised with ``add_special_tokens=False``. If ``|R| + |block| >= L`` the block is dropped and the
   rollout stops; otherwise it is appended with mask 0 (log-prob 0.0), a user turn is counted, and the
   next generation starts at rule 1.
5. At the end R, M (and the log-probs) are cut to exactly L tokens; ``num_turns = user + assistant + 1``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from spo_helpers.core.metric_names import (
    TOOL_ASSISTANT_TURNS_MAX,
    TOOL_ASSISTANT_TURNS_MEAN,
    TOOL_CALL_RATE,
    TOOL_CALLS_MEAN,
    TOOL_PREFIX,
    TOOL_SANDBOX_LATENCY_MEAN,
)
from spo_helpers.formats.tool_blocks import CODE_STOP, interpreter_block

logger = logging.getLogger(__name__)

TRUNCATE_SIDES = ("left", "middle", "right")


# ---------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class TurnConfig:
    """The limits of one rollout (verl's ``rollout.response_length`` and ``rollout.multi_turn.*``)."""

    response_length: int
    max_assistant_turns: int | None = 8
    max_user_turns: int | None = 8
    max_tool_response_length: int = 256
    tool_response_truncate_side: str = "middle"
    stop: tuple[str, ...] = (CODE_STOP,)

    def __post_init__(self) -> None:
        if self.response_length < 1:
            raise ValueError(f"response_length must be >= 1, got {self.response_length}")
        if self.max_tool_response_length < 0:
            raise ValueError(f"max_tool_response_length must be >= 0, got {self.max_tool_response_length}")
        if self.tool_response_truncate_side not in TRUNCATE_SIDES:
            raise ValueError(f"tool_response_truncate_side must be one of {TRUNCATE_SIDES}")


# ---------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class GenerateRequest:
    """One generation: continue ``prompt_ids`` until a ``stop`` string, EOS or ``max_tokens`` new tokens."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Generation:
    """A server's answer: the new token ids (stop string included) and, if asked for, their log-probs."""

    token_ids: tuple[int, ...]
    log_probs: tuple[float, ...] | None = None


class ToolStatus(str, Enum):
    """How a code run ended."""

    OK = "ok"  # the program finished with exit code 0
    FAILED = "failed"  # the program finished with another exit code (an exception, for instance)
    TIMEOUT = "timeout"  # the sandbox's time limit ended it
    ERROR = "error"  # the sandbox could not run it (unreachable, refused, internal error)


@dataclass(frozen=True)
class ToolResult:
    """What the interpreter answers: its text (before truncation and wrapping), the status, seconds taken."""

    text: str
    status: ToolStatus = ToolStatus.OK
    latency_s: float = 0.0
    error: str = ""  # the sandbox's failure (status ERROR): what went wrong, for the log


class StopReason(str, Enum):
    NO_CODE = "no_code"  # the turn holds no code block: the model answered (or gave up)
    BUDGET = "budget"  # the response reached response_length
    TOOL_OVER_BUDGET = "tool_over_budget"  # the interpreter block would reach response_length: dropped
    MAX_ASSISTANT_TURNS = "max_assistant_turns"
    MAX_USER_TURNS = "max_user_turns"


# ---------------------------------------------------------------------------------------------- protocols
class Tokenizer(Protocol):
    def decode(self, token_ids: Any, skip_special_tokens: bool = ...) -> str: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class CodeTool(Protocol):
    """A code interpreter: finds the code of a turn, runs it (blocking; ``run_turns`` calls it off the loop)."""

    def extract(self, text: str) -> str | None: ...

    def run(self, code: str) -> ToolResult: ...


Generate = Callable[[GenerateRequest], Awaitable[Generation]]


# ---------------------------------------------------------------------------------------------- rules
def truncate_tool_output(text: str, limit: int, side: str = "middle") -> str:
    """Cut the interpreter's text to ``limit`` characters, as the official agent loop does.

    Texts of at most ``limit`` characters are kept. Longer ones (``side``, verl's naming):
    ``left``: ``text[:limit] + "...(truncated)"``; ``right``: ``"(truncated)..." + text[-limit:]``;
    ``middle``: ``text[:limit//2] + "...(truncated)..." + text[-(limit//2):]``. The markers come on top of
    the limit. (With ``limit < 2`` the middle rule keeps the whole text as the tail, as Python's ``[-0:]``.)
    """
    if len(text) <= limit:
        return text
    if side == "left":
        return text[:limit] + "...(truncated)"
    if side == "right":
        return "(truncated)..." + text[-limit:]
    if side != "middle":
        raise ValueError(f"side must be one of {TRUNCATE_SIDES}, got {side!r}")
    half = limit // 2
    return text[:half] + "...(truncated)..." + text[-half:]


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TurnMetrics:
    """Per-sample counts of one rollout (``as_dict`` for verl's non-tensor batch, ``summarize`` for a batch)."""

    assistant_turns: int = 0
    user_turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0  # programs that ended with a non-zero exit code
    tool_timeouts: int = 0
    sandbox_errors: int = 0  # runs the sandbox could not do (unreachable, broken, its own error)
    sandbox_error: str = ""  # the first such failure's text
    sandbox_seconds: float = 0.0  # summed latency the tool measured (queueing at the server included)
    tool_outputs_truncated: int = 0
    response_tokens: int = 0  # after the cut to response_length
    model_tokens: int = 0  # mask 1, after the cut
    tool_tokens: int = 0  # mask 0, after the cut
    generate_seconds: float = 0.0  # wall time waiting for generations (as run_turns measured it)
    tool_seconds: float = 0.0  # wall time waiting for code runs
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TurnResult:
    """One finished rollout: ids for verl's ``AgentLoopOutput`` and the sample's metrics."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    response_mask: tuple[int, ...]
    response_logprobs: tuple[float, ...] | None
    num_turns: int
    metrics: TurnMetrics


# ---------------------------------------------------------------------------------------------- machine
class ToolTurns:
    """The state of one tool-integrated rollout; see the module docstring for the rules.

    Use: ``next_request()`` -> generate -> ``on_generation(g)`` returns the code to run (or ``None`` when the
    rollout is over) -> run it -> ``on_tool_result(r)`` returns whether to generate again. ``result()``
    gives the final ids, mask and metrics. Pure: no I/O, no clock (timings come in through ``add_time``).
    """

    def __init__(
        self,
        prompt_ids: Sequence[int],
        config: TurnConfig,
        tokenizer: Tokenizer,
        extract: Callable[[str], str | None],
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.extract = extract
        self.prompt_ids = tuple(int(i) for i in prompt_ids)
        self.response_ids: list[int] = []
        self.response_mask: list[int] = []
        self.response_logprobs: list[float] = []
        self.assistant_turns = 0
        self.user_turns = 0
        self.stop_reason: StopReason | None = None
        self._pending_code: str | None = None
        self._counts = {
            "tool_calls": 0,
            "tool_errors": 0,
            "tool_timeouts": 0,
            "sandbox_errors": 0,
            "tool_outputs_truncated": 0,
        }
        self._seconds = {"sandbox_seconds": 0.0, "generate_seconds": 0.0, "tool_seconds": 0.0}
        self._first_sandbox_error = ""

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def tool_calls(self) -> int:
        """Code runs answered so far."""
        return self._counts["tool_calls"]

    def _stop(self, reason: StopReason) -> None:
        self.stop_reason = reason
        self._pending_code = None

    def next_request(self) -> GenerateRequest:
        """The next generation: the prompt plus everything so far, the remaining budget, the stop strings."""
        if self.done or self._pending_code is not None:
            raise RuntimeError("no generation is due: the rollout is over or waits for a code run")
        return GenerateRequest(
            prompt_ids=self.prompt_ids + tuple(self.response_ids),
            max_tokens=self.config.response_length - len(self.response_ids),
            stop=self.config.stop,
        )

    def on_generation(self, generation: Generation) -> str | None:
        """Rules 1-3: append the turn (mask 1), check the limits, find code. The code to run, or ``None``."""
        if self.done or self._pending_code is not None:
            raise RuntimeError("no generation was due")
        ids = [int(i) for i in generation.token_ids]
        self.assistant_turns += 1
        self.response_ids += ids
        self.response_mask += [1] * len(ids)
        if generation.log_probs:
            self.response_logprobs += [float(x) for x in generation.log_probs]

        cfg = self.config
        if len(self.response_mask) >= cfg.response_length:
            self._stop(StopReason.BUDGET)
        elif cfg.max_assistant_turns and self.assistant_turns >= cfg.max_assistant_turns:
            self._stop(StopReason.MAX_ASSISTANT_TURNS)
        elif cfg.max_user_turns and self.user_turns >= cfg.max_user_turns:
            self._stop(StopReason.MAX_USER_TURNS)
        else:
            code = self.extract(self.tokenizer.decode(ids, skip_special_tokens=False))
            if code is None:
                self._stop(StopReason.NO_CODE)
            self._pending_code = code
        return self._pending_code

    def on_tool_result(self, result: ToolResult) -> bool:
        """Rule 4: count the run, append the interpreter block (mask 0) if it fits. Whether to generate again."""
        if self._pending_code is None:
            raise RuntimeError("no code run was due")
        self._pending_code = None
        self._counts["tool_calls"] += 1
        self._seconds["sandbox_seconds"] += float(result.latency_s)
        status = ToolStatus(result.status)
        if status is ToolStatus.FAILED:
            self._counts["tool_errors"] += 1
        elif status is ToolStatus.TIMEOUT:
            self._counts["tool_timeouts"] += 1
        elif status is ToolStatus.ERROR:
            self._counts["sandbox_errors"] += 1
            self._first_sandbox_error = self._first_sandbox_error or result.error or "unknown"

        cfg = self.config
        text = truncate_tool_output(result.text, cfg.max_tool_response_length, cfg.tool_response_truncate_side)
        if text != result.text:
            self._counts["tool_outputs_truncated"] += 1
        ids = [int(i) for i in self.tokenizer.encode(interpreter_block(text), add_special_tokens=False)]
        if len(self.response_mask) + len(ids) >= cfg.response_length:
            self._stop(StopReason.TOOL_OVER_BUDGET)
            return False
        self.response_ids += ids
        self.response_mask += [0] * len(ids)
        if self.response_logprobs:
            self.response_logprobs += [0.0] * len(ids)
        self.user_turns += 1
        return True

    def add_time(self, *, generate: float = 0.0, tool: float = 0.0) -> None:
        self._seconds["generate_seconds"] += generate
        self._seconds["tool_seconds"] += tool

    def result(self) -> TurnResult:
        """Rule 5: the response, mask and log-probs cut to ``response_length``, with the sample's metrics."""
        if not self.done:
            raise RuntimeError("the rollout is not over")
        limit = self.config.response_length
        mask = tuple(self.response_mask[:limit])
        model_tokens = sum(mask)
        metrics = TurnMetrics(
            assistant_turns=self.assistant_turns,
            user_turns=self.user_turns,
            response_tokens=len(mask),
            model_tokens=model_tokens,
            tool_tokens=len(mask) - model_tokens,
            stop_reason=self.stop_reason.value if self.stop_reason else "",
            sandbox_error=self._first_sandbox_error,
            **self._counts,
            **self._seconds,
        )
        return TurnResult(
            prompt_ids=self.prompt_ids,
            response_ids=tuple(self.response_ids[:limit]),
            response_mask=mask,
            response_logprobs=tuple(self.response_logprobs[:limit]) if self.response_logprobs else None,
            num_turns=self.user_turns + self.assistant_turns + 1,
            metrics=metrics,
        )


# ---------------------------------------------------------------------------------------------- driver
async def run_turns(
    turns: ToolTurns, generate: Generate, tool: CodeTool, *, extra_latency: Callable[[int], float] | None = None
) -> TurnResult:
    """Drive ``turns`` to the end: ``await generate(request)`` for the model, ``tool.run`` in a worker thread (of
    the tool's own ``executor`` when it has one).

    ``extra_latency(call)``: seconds the code run number ``call`` (0 first) waits after the sandbox answered
    (the latency model for measurements, ``core.latency``), without holding a thread; counted in its latency.
    """
    while not turns.done:
        start = time.perf_counter()
        generation = await generate(turns.next_request())
        turns.add_time(generate=time.perf_counter() - start)
        code = turns.on_generation(generation)
        if code is None:
            break
        start = time.perf_counter()
        executor = getattr(tool, "executor", None)
        result = await asyncio.get_running_loop().run_in_executor(executor, tool.run, code)
        if extra_latency is not None:
            wait = float(extra_latency(turns.tool_calls))
            if wait > 0:
                await asyncio.sleep(wait)
                result = dataclasses.replace(result, latency_s=result.latency_s + wait)
        turns.add_time(tool=time.perf_counter() - start)
        turns.on_tool_result(result)
    return turns.result()


# ---------------------------------------------------------------------------------------------- batch view
def summarize(metrics: Sequence[TurnMetrics | dict[str, Any]]) -> dict[str, float]:
    """Batch metrics for the trainer's log (``tool/...``, ``core.metric_names``): means per sample, rates per
    code run, stop reasons' shares.

    ``calls/mean``, ``call_rate`` (share of samples with a code run), ``assistant_turns/mean`` and ``/max``,
    ``user_turns/mean``; ``error_rate``, ``timeout_rate``,
    ``sandbox_error_rate``, ``truncated_output_rate`` (per code run, 0 without runs);
    ``sandbox_latency/mean`` (seconds per run); ``tool_token_share`` (interpreter tokens over response
    tokens); ``stop/<reason>`` (share of samples).
    """
    rows = [m.as_dict() if isinstance(m, TurnMetrics) else dict(m) for m in metrics if m is not None]
    if not rows:
        return {}
    n = len(rows)

    def total(key: str) -> float:
        return float(sum(float(r.get(key, 0) or 0) for r in rows))

    calls = total("tool_calls")
    tokens = total("response_tokens")
    prefix = TOOL_PREFIX
    out = {
        TOOL_CALLS_MEAN: calls / n,
        TOOL_CALL_RATE: sum(float(r.get("tool_calls", 0) or 0) > 0 for r in rows) / n,
        TOOL_ASSISTANT_TURNS_MEAN: total("assistant_turns") / n,
        TOOL_ASSISTANT_TURNS_MAX: max(float(r.get("assistant_turns", 0) or 0) for r in rows),
        f"{prefix}user_turns/mean": total("user_turns") / n,
        f"{prefix}error_rate": total("tool_errors") / calls if calls else 0.0,
        f"{prefix}timeout_rate": total("tool_timeouts") / calls if calls else 0.0,
        f"{prefix}sandbox_error_rate": total("sandbox_errors") / calls if calls else 0.0,
        f"{prefix}truncated_output_rate": total("tool_outputs_truncated") / calls if calls else 0.0,
        TOOL_SANDBOX_LATENCY_MEAN: total("sandbox_seconds") / calls if calls else 0.0,
        f"{prefix}tool_token_share": total("tool_tokens") / tokens if tokens else 0.0,
    }
    for reason in StopReason:
        out[f"{prefix}stop/{reason.value}"] = sum(r.get("stop_reason") == reason.value for r in rows) / n
    return out
