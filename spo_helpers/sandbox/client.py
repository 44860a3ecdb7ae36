"""A small client of the ``/run_code`` API, and ``local_sandbox``: a server for as long as a block runs.

``run_code`` speaks the same JSON as verl's client (any Sandbox Fusion server will do).
``local_sandbox`` starts ``spo sandbox serve`` on a free loopback port, in a child process
(default) or on a thread of this process, yields its ``/run_code`` URL (what verl's
``sandbox_fusion_url`` expects), and stops it afterwards::

    with local_sandbox() as url:
        print(run_code(url, "print(6 * 7)")["run_result"]["stdout"])   # 42
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Literal

from spo_helpers.errors import UserError
from spo_helpers.sandbox.limits import SandboxLimits, limit_flags

logger = logging.getLogger(__name__)

READY_LINE = re.compile(r"^serving (http://\S+/run_code)")


class SandboxClientError(Exception):
    """The server answered with an HTTP error (``status``, ``detail``) or could not be reached (status 0)."""

    def __init__(self, status: int, detail: Any):
        super().__init__(f"HTTP {status}: {detail}" if status else str(detail))
        self.status = status
        self.detail = detail


def run_code_url(url: str) -> str:
    """``http://host:port`` or ``.../run_code`` -> the ``/run_code`` URL."""
    url = url.rstrip("/")
    return url if url.endswith("/run_code") else url + "/run_code"


def base_url(url: str) -> str:
    """The server's root URL, with or without ``/run_code`` given."""
    url = url.rstrip("/")
    return url[: -len("/run_code")] if url.endswith("/run_code") else url


def _request(url: str, data: bytes | None, timeout: float) -> Any:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("detail")
        except (ValueError, AttributeError):
            detail = err.reason
        raise SandboxClientError(err.code, detail) from None
    except (urllib.error.URLError, OSError) as err:
        raise SandboxClientError(0, f"cannot reach the sandbox at {url}: {err}") from None


def run_code(
    url: str,
    code: str,
    *,
    language: str = "python",
    run_timeout: float = 10,
    compile_timeout: float = 10,
    memory_limit_mb: int = -1,
    stdin: str | None = None,
    files: Mapping[str, str] | None = None,
    fetch_files: Iterable[str] = (),
    timeout: float | None = None,
) -> dict[str, Any]:
    """POST one run and return the JSON answer (``status``, ``run_result``, ...).

    ``files`` maps relative paths to base64 contents. ``timeout`` (default ``run_timeout + 30``)
    bounds the whole HTTP exchange, waiting for a free worker included.
    """
    payload = {
        "code": code,
        "language": language,
        "run_timeout": run_timeout,
        "compile_timeout": compile_timeout,
        "memory_limit_MB": memory_limit_mb,
        "stdin": stdin,
        "files": dict(files or {}),
        "fetch_files": list(fetch_files),
    }
    return _request(run_code_url(url), json.dumps(payload).encode(), timeout or run_timeout + 30)


def health(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET /health`` of a server of this package (a Sandbox Fusion server has ``/v1/ping`` instead)."""
    return _request(base_url(url) + "/health", None, timeout)


def wait_until_ready(url: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll ``/health`` until it answers; raise ``SandboxClientError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return health(url, timeout=2.0)
        except SandboxClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _read_ready_line(proc: subprocess.Popen[str], log: IO[str], timeout_s: float) -> str:
    """The URL the child prints once it listens; the last line of its log in the error if it fails."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            match = READY_LINE.match(line.strip())
            if match:
                return match.group(1)
    finally:
        selector.close()
    proc.kill()
    proc.wait(timeout=10)
    log.seek(0)
    last = log.read().strip().splitlines()[-1:] or [f"exit code {proc.returncode}, no message"]
    raise UserError(f"the local sandbox server did not start: {last[0]}")


@contextlib.contextmanager
def local_sandbox(
    limits: SandboxLimits | None = None,
    *,
    mode: Literal["process", "thread"] = "process",
    host: str = "127.0.0.1",
    python: str | None = None,
    unsafe_no_isolation: bool = False,
    startup_timeout_s: float = 60.0,
) -> Iterator[str]:
    """Serve ``/run_code`` on a free port of ``host`` while the block runs; yield its URL.

    ``mode="process"`` runs ``python -m spo_helpers.sandbox.service serve`` as a child (its own GIL,
    stopped with SIGTERM); ``mode="thread"`` serves from this process. Raises ``UserError`` (via
    ``BwrapUnavailable``) when bubblewrap cannot run and ``unsafe_no_isolation`` is not set.
    """
    limits = limits or SandboxLimits()
    if mode == "thread":
        from spo_helpers.sandbox.jail import Sandbox
        from spo_helpers.sandbox.server import BackgroundServer

        with Sandbox(limits, python=python, unsafe_no_isolation=unsafe_no_isolation) as sandbox:
            server = BackgroundServer(sandbox, host=host, port=0)
            try:
                yield run_code_url(server.url)
            finally:
                server.stop()
        return
    if mode != "process":
        raise ValueError(f"mode must be 'process' or 'thread', got {mode!r}")

    command = [sys.executable, "-m", "spo_helpers.sandbox.service", "serve", "--host", host, "--port", "0"]
    command += [*limit_flags(limits), "--parent-pid", str(os.getpid()), "--log-level", "warning"]
    if python:
        command += ["--python", python]
    if unsafe_no_isolation:
        command.append("--unsafe-no-isolation")
        logger.warning("UNSAFE: the local sandbox runs code without isolation (--unsafe-no-isolation)")
    # The child's log goes to a file, read back only when it fails to start.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            yield _read_ready_line(proc, log, startup_timeout_s)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
