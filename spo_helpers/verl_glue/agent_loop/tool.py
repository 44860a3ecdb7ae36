"""The code interpreter of a tool-integrated rollout: a turn's code, run in a Sandbox Fusion server.

What the official recipe's tool does, on the kit's own client (``spo_helpers.sandbox``):

- **Which code.** ``extract``: the first ``<code>...</code>`` block of the turn's text, through the
  sandbox package's ``extract_code_blocks`` (Markdown fences stripped). Generation stops at ``</code>``,
  so a turn holds at most one complete block; the official loop runs the first block it finds (it runs at
  most ``max_parallel_calls = 1`` blocks and reads the first answer). No block: ``None``.
- **What is sent.** ``wrap_last_line_in_print`` of that code (the last non-empty line printed unless it
  starts with ``print``), as ``POST /run_code`` with ``language``, ``run_timeout`` and ``compile_timeout``
  both the tool's timeout (30 s officially), ``memory_limit_MB`` (1024), ``stdin`` null.
- **What the model reads** (``interpreter_text``, verl's ``SandboxFusionTool.execute_code``): when the
  run finished (``run_result.status == "Finished"``, whatever its exit code) ``stdout + stderr``, so a
  traceback is shown after the output printed before it; otherwise, a time-out, a sandbox error or a
  request that failed, the fixed text ``"no stdout here"``.

Cutting that text to ``max_tool_response_length`` characters and wrapping it in ``<interpreter>`` is
the agent loop's part (``turns.truncate_tool_output``, ``turns.interpreter_block``), configured by
verl's ``rollout.multi_turn.*`` as in the official loop. The tool only reports what the sandbox said.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spo_helpers.sandbox.client import SandboxClientError, run_code
from spo_helpers.sandbox.code import extract_code_blocks, wrap_last_line_in_print
from spo_helpers.verl_glue.agent_loop.turns import ToolResult, ToolStatus

logger = logging.getLogger(__name__)

NO_OUTPUT = "no stdout here"
"""What the official tool answers when a run did not finish (time-out, sandbox error, failed request)."""

RETRY_STATUSES = (503, 504)


@dataclass(frozen=True)
class ToolConfig:
    """Where and how code runs (the ``config`` block of verl's tool YAML, ``spo_tool_config.yaml``)."""

    url: str
    run_timeout: float = 30.0
    memory_limit_mb: int = 1024
    language: str = "python"
    max_concurrency: int = 128
    retries: int = 2  # verl's client: 3 attempts in all, on 504 only (503 too here: the local server's full queue)
    retry_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("the code tool needs a sandbox URL (sandbox_fusion_url)")
        if self.run_timeout <= 0:
            raise ValueError(f"run_timeout must be > 0, got {self.run_timeout}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    @property
    def request_timeout(self) -> float:
        """Seconds for one HTTP exchange: compile + run timeouts + 10, as verl's client allows."""
        return 2 * self.run_timeout + 10


def extract_code(text: str) -> str | None:
    """The code of the turn's first ``<code>...</code>`` block, fences stripped; ``None`` without one."""
    blocks = extract_code_blocks(text)
    return blocks[0] if blocks else None


def interpreter_text(answer: Mapping[str, Any] | None) -> tuple[str, ToolStatus]:
    """Map a ``/run_code`` answer to the text the model reads and the run's status.

    Finished: ``stdout + stderr`` (``OK`` for exit code 0, ``FAILED`` otherwise). Time limit exceeded:
    ``NO_OUTPUT``, ``TIMEOUT``. Anything else (``run_result`` missing or ``Error``): ``NO_OUTPUT``, ``ERROR``.
    """
    run = (answer or {}).get("run_result") or {}
    status = run.get("status")
    if status == "Finished":
        text = str(run.get("stdout") or "") + str(run.get("stderr") or "")
        return text, ToolStatus.OK if run.get("return_code") == 0 else ToolStatus.FAILED
    if status == "TimeLimitExceeded":
        return NO_OUTPUT, ToolStatus.TIMEOUT
    return NO_OUTPUT, ToolStatus.ERROR


class CodeInterpreter:
    """``extract`` and ``run`` for ``turns.run_turns``; thread-safe, at most ``max_concurrency`` runs at once."""

    def __init__(self, config: ToolConfig) -> None:
        self.config = config
        self._slots = threading.BoundedSemaphore(config.max_concurrency)

    def extract(self, text: str) -> str | None:
        return extract_code(text)

    def _post(self, code: str) -> dict[str, Any]:
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            try:
                return run_code(
                    cfg.url,
                    code,
                    language=cfg.language,
                    run_timeout=cfg.run_timeout,
                    compile_timeout=cfg.run_timeout,
                    memory_limit_mb=cfg.memory_limit_mb,
                    timeout=cfg.request_timeout,
                )
            except SandboxClientError as err:
                if err.status not in RETRY_STATUSES or attempt == cfg.retries:
                    raise
                logger.warning("sandbox busy (%s), retry %d of %d", err, attempt + 1, cfg.retries)
                time.sleep(cfg.retry_delay_s * (attempt + 1))
        raise AssertionError("unreachable")

    def run(self, code: str) -> ToolResult:
        """Run ``code`` (its last line printed) and report what the model reads; never raises for the sandbox."""
        program = wrap_last_line_in_print(code)
        start = time.perf_counter()
        with self._slots:
            try:
                answer = self._post(program)
            except (SandboxClientError, ValueError) as err:  # unreachable, refused, or not JSON
                logger.warning("code run failed: %s", err)
                answer = None
        text, status = interpreter_text(answer)
        return ToolResult(text=text, status=status, latency_s=time.perf_counter() - start)
