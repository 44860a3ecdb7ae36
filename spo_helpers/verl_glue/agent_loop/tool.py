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
- **Whose failure.** The program's: it finished with a non-zero exit code (``FAILED``), hit the time limit
  (``TIMEOUT``), or the sandbox refused the request for its content (a 4xx answer, such as a program over the
  size limit: ``FAILED``). The sandbox's (``ERROR``, with the failure's text in ``ToolResult.error``): it could
  not be reached, the connection broke or the HTTP exchange timed out, it answered 5xx after the retries or
  with something that is not a ``/run_code`` answer, or it reported its own error (``status: SandboxError``, a
  ``run_result`` other than finished or timed out). Only these count as ``tool/sandbox_error_rate``; the
  trainers leave such samples out of the update and stop a run whose sandbox fails too often
  (``verl_glue.sandbox_health``).

- **How many at once.** As verl's ``SandboxFusionTool`` (``tools/sandbox_fusion_tools.py`` 42-97): at most
  ``rate_limit`` code runs at once in the whole cluster, through verl's own named Ray actor ``rate-limiter`` (a
  ``TokenBucketWorker``) in every process of a Ray cluster (``enable_global_rate_limit``), and in this process
  alone without Ray (the CPU backend, where it is the whole run); each process runs them on its own pool of
  ``num_workers`` threads (``CodeInterpreter.executor``), not Python's default pool.

Cutting that text to ``max_tool_response_length`` characters and wrapping it in ``<interpreter>`` is
the agent loop's part (``turns.truncate_tool_output``, ``formats.tool_blocks.interpreter_block``), configured by
verl's ``rollout.multi_turn.*`` as in the official loop. The tool only reports what the sandbox said.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from spo_helpers.sandbox.client import SandboxClientError, run_code
from spo_helpers.sandbox.code import extract_code_blocks, wrap_last_line_in_print
from spo_helpers.verl_glue.agent_loop.turns import ToolResult, ToolStatus

logger = logging.getLogger(__name__)

NO_OUTPUT = "no stdout here"
"""What the official tool answers when a run did not finish (time-out, sandbox error, failed request)."""

RETRY_STATUSES = (503, 504)
RATE_LIMITER_NAME = "rate-limiter"
"""verl's cluster-wide limiter of code runs: a named ``TokenBucketWorker`` actor (``sandbox_fusion_tools.py:71``)."""


@dataclass(frozen=True)
class ToolConfig:
    """Where and how code runs (the ``config`` block of verl's tool YAML, ``spo_tool_config.yaml``)."""

    url: str
    run_timeout: float = 30.0
    memory_limit_mb: int = 1024
    language: str = "python"
    rate_limit: int | None = 128  # code runs at once in the whole cluster (None: enable_global_rate_limit off)
    num_workers: int = 128  # threads per process that wait for code runs
    retries: int = 2  # verl's client: 3 attempts in all, on 504 only (503 too here: the local server's full queue)
    retry_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("the code tool needs a sandbox URL (sandbox_fusion_url)")
        if self.run_timeout <= 0:
            raise ValueError(f"run_timeout must be > 0, got {self.run_timeout}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"rate_limit must be >= 1, got {self.rate_limit}")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")

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


def sandbox_failure(answer: Mapping[str, Any] | None) -> str:
    """What the sandbox reported about its own failure in an ``ERROR`` answer (bounded text)."""
    if not answer:
        return "no answer"
    run = answer.get("run_result") or {}
    parts = [f"status {answer.get('status')!r}", f"run_result {run.get('status')!r}" if run else "no run_result"]
    message = answer.get("message") or run.get("stderr") or ""
    return "; ".join(parts) + (f": {str(message)[:200]}" if message else "")


class RunLimit:
    """At most ``limit`` code runs at once: in this process, or with ``cluster`` in the whole Ray cluster (verl's
    ``rate-limiter`` actor, shared by every process that names it)."""

    def __init__(self, limit: int | None, cluster: bool) -> None:
        self.limit = limit
        self._local = _process_semaphore(limit) if limit and not cluster else None
        self._actor = None
        if limit and cluster:
            from verl.tools.sandbox_fusion_tools import TokenBucketWorker

            self._actor = TokenBucketWorker.options(name=RATE_LIMITER_NAME, get_if_exists=True).remote(limit)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self._local is not None:
            with self._local:
                yield
            return
        if self._actor is None:
            yield
            return
        import ray

        ray.get(self._actor.acquire.remote())
        try:
            yield
        finally:
            self._actor.release.remote()


_PROCESS_SEMAPHORES: dict[int, threading.BoundedSemaphore] = {}
_PROCESS_LOCK = threading.Lock()


def _process_semaphore(limit: int) -> threading.BoundedSemaphore:
    """One semaphore per limit for the whole process: every interpreter of it shares the limit."""
    with _PROCESS_LOCK:
        return _PROCESS_SEMAPHORES.setdefault(limit, threading.BoundedSemaphore(limit))


def _in_ray_cluster() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


class CodeInterpreter:
    """``extract`` and ``run`` for ``turns.run_turns``; thread-safe, at most ``rate_limit`` runs at once in the
    cluster (see the module doc), run on ``executor``."""

    def __init__(self, config: ToolConfig) -> None:
        self.config = config
        self.limit = RunLimit(config.rate_limit, cluster=_in_ray_cluster())
        self.executor = ThreadPoolExecutor(max_workers=config.num_workers, thread_name_prefix="code-run")
        self._failed_before = False

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
        error = ""
        with self.limit.slot():
            try:
                answer = self._post(program)
            except SandboxClientError as err:
                if 400 <= err.status < 500:  # refused for its content (too large, malformed): the program's
                    return ToolResult(NO_OUTPUT, ToolStatus.FAILED, time.perf_counter() - start)
                answer, error = None, str(err)  # unreachable, broken, timed out, or 5xx after the retries
            except ValueError as err:  # an answer that is not JSON
                answer, error = None, f"not a /run_code answer: {err}"
        text, status = interpreter_text(answer)
        if status is ToolStatus.ERROR:
            error = error or sandbox_failure(answer)
            self._note_failure(error)
        return ToolResult(text=text, status=status, latency_s=time.perf_counter() - start, error=error)

    def _note_failure(self, error: str) -> None:
        """The first sandbox failure of this process, in the log (the trainers report every step's count)."""
        if not self._failed_before:
            self._failed_before = True
            logger.warning("the sandbox at %s failed to run code: %s", self.config.url, error)
