"""The Sandbox Fusion ``POST /run_code`` wire format: request validation and response bodies.

Field names, defaults and statuses follow Sandbox Fusion's API models (``RunCodeRequest``,
``RunCodeResponse``, ``CommandRunResult``) and verl 0.6.1's client
(``verl.utils.reward_score.sandbox_fusion.utils.call_sandbox_api``), which sends
``code, language, run_timeout, compile_timeout, memory_limit_MB, stdin, files, fetch_files``
and reads ``status`` and ``run_result{status, stdout, stderr, return_code, execution_time}``.

Request (JSON object)::

    code             str, required
    language         str, required: one of Sandbox Fusion's languages; this server runs "python"
    run_timeout      number > 0, default 10 (seconds; clamped to the server's maximum)
    compile_timeout  number, default 10 (no compile step for python: checked, unused)
    memory_limit_MB  int, default -1 (<= 0: the server's per-process limit)
    stdin            str or null, default null
    files            {relative path: base64 content or null}, default {} (written into the working folder)
    fetch_files      [relative path], default [] (returned base64 in "files" after the run: regular files
                     only, 16 MiB in all; a path that is missing, a symbolic link (never followed: it could
                     point outside), a FIFO or a device (reading would block) is left out, as is everything
                     after the cap; the server logs what it left out)
    args             [str], default [] (pytest only in Sandbox Fusion: checked, unused)

Response (HTTP 200)::

    status             "Success" | "Failed" | "SandboxError"
    message            str ("" unless SandboxError)
    compile_result     null (python has no compile step)
    run_result         {status: "Finished" | "TimeLimitExceeded" | "Error", execution_time, return_code,
                        stdout, stderr} or null
    executor_pod_name  str or null ($MY_POD_NAME, as in Sandbox Fusion)
    files              {path: base64}

Malformed requests get HTTP 422 with ``{"detail": [{"loc", "msg", "type"}]}`` as FastAPI (which
Sandbox Fusion runs on) answers them, or 413 / 411 / 404 / 405 with ``{"detail": str}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spo_helpers.formats.strict_json import DuplicateKey, loads_unique

# Sandbox Fusion's ``Language`` literal: anything else is a validation error (422) there too.
SANDBOX_FUSION_LANGUAGES = (
    "python", "cpp", "nodejs", "go", "go_test", "java", "php", "csharp", "bash", "typescript", "sql", "rust",
    "cuda", "lua", "R", "perl", "D_ut", "ruby", "scala", "julia", "pytest", "junit", "kotlin_script", "jest",
    "verilog", "python_gpu", "lean", "swift", "racket",
)  # fmt: skip
SUPPORTED_LANGUAGES = ("python",)

# run_result.status values (Sandbox Fusion's CommandRunStatus) and top-level statuses (RunStatus).
FINISHED, TIME_LIMIT_EXCEEDED, ERROR = "Finished", "TimeLimitExceeded", "Error"
SUCCESS, FAILED, SANDBOX_ERROR = "Success", "Failed", "SandboxError"


class RequestError(Exception):
    """A request this server refuses, with the HTTP status and the JSON ``detail`` to answer."""

    def __init__(self, status: int, detail: Any):
        super().__init__(detail if isinstance(detail, str) else json.dumps(detail))
        self.status = status
        self.detail = detail


def validation_error(field_name: str, msg: str, kind: str) -> RequestError:
    """HTTP 422 in FastAPI's shape: ``{"detail": [{"loc": ["body", field], "msg": ..., "type": ...}]}``."""
    loc = ["body", field_name] if field_name else ["body"]
    return RequestError(422, [{"loc": loc, "msg": msg, "type": kind}])


@dataclass(frozen=True)
class RunRequest:
    """One validated ``/run_code`` request."""

    code: str
    language: str
    run_timeout: float = 10.0
    compile_timeout: float = 10.0
    memory_limit_mb: int = -1
    stdin: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)  # decoded contents, paths checked
    fetch_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunRecord:
    """What came out of one run: ``run_result`` plus what the server logs about it."""

    status: str  # FINISHED, TIME_LIMIT_EXCEEDED or ERROR
    execution_time: float | None
    return_code: int | None
    stdout: str
    stderr: str
    files: Mapping[str, str] = field(default_factory=dict)  # fetched files, base64
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    oom_killed: bool = False
    error: str = ""  # sandbox-side failure (status ERROR), empty otherwise


def _number(payload: Mapping[str, Any], name: str, default: float) -> float:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise validation_error(name, f"{name} must be a finite number, got {value!r}", "float_type")
    return float(value)


def check_relative_path(name: str, path: Any) -> str:
    """A path inside the working folder: relative, normalised, no ``..``, no NUL; returned normalised."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise validation_error(name, f"{name}: file paths must be non-empty strings, got {path!r}", "string_type")
    normal = posixpath.normpath(path)
    if posixpath.isabs(normal) or normal == "." or normal.split("/")[0] == "..":
        raise validation_error(
            name, f"{name}: {path!r} is not a relative path inside the working folder", "value_error"
        )
    return normal


def parse_run_request(body: bytes, *, max_file_bytes: int) -> RunRequest:
    """Validate a ``/run_code`` body; raise ``RequestError`` (422) naming the first bad field.

    ``max_file_bytes`` bounds the decoded size of all ``files`` together (they must fit in the
    run's tmpfs). Unknown fields are ignored, as pydantic does by default.
    """
    try:
        payload = loads_unique(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise validation_error("", f"JSON decode error: {err}", "json_invalid") from None
    except DuplicateKey as err:  # which one would run is unclear: refused, not last-wins
        raise validation_error(str(err.key), f"JSON decode error: {err}", "json_invalid") from None
    if not isinstance(payload, dict):
        raise validation_error("", f"the body must be a JSON object, got {type(payload).__name__}", "model_type")

    code = payload.get("code")
    if "code" not in payload:
        raise validation_error("code", "Field required", "missing")
    if not isinstance(code, str):
        raise validation_error("code", f"code must be a string, got {type(code).__name__}", "string_type")
    language = payload.get("language")
    if "language" not in payload:
        raise validation_error("language", "Field required", "missing")
    if language not in SANDBOX_FUSION_LANGUAGES:
        allowed = ", ".join(repr(x) for x in SANDBOX_FUSION_LANGUAGES)
        raise validation_error("language", f"Input should be one of {allowed}; got {language!r}", "literal_error")

    run_timeout = _number(payload, "run_timeout", 10.0)
    if run_timeout <= 0:
        raise validation_error("run_timeout", f"run_timeout must be > 0 seconds, got {run_timeout}", "greater_than")
    compile_timeout = _number(payload, "compile_timeout", 10.0)
    memory = payload.get("memory_limit_MB", -1)
    if isinstance(memory, float) and memory.is_integer():
        memory = int(memory)
    if isinstance(memory, bool) or not isinstance(memory, int):
        raise validation_error("memory_limit_MB", f"memory_limit_MB must be an integer, got {memory!r}", "int_type")
    stdin = payload.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise validation_error("stdin", f"stdin must be a string or null, got {type(stdin).__name__}", "string_type")

    files_in = payload.get("files") or {}
    if not isinstance(files_in, dict):
        raise validation_error("files", "files must be an object {path: base64 content}", "dict_type")
    files: dict[str, bytes] = {}
    total = 0
    for path, content in files_in.items():
        normal = check_relative_path("files", path)
        if content is None:  # Sandbox Fusion skips entries without content
            continue
        if not isinstance(content, str):
            raise validation_error("files", f"files[{path!r}] must be base64 text or null", "string_type")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise validation_error("files", f"files[{path!r}] is not valid base64", "value_error") from None
        total += len(data)
        if total > max_file_bytes:
            raise validation_error(
                "files", f"files add up to more than the run's {max_file_bytes} bytes of tmpfs", "value_error"
            )
        files[normal] = data

    fetch_in = payload.get("fetch_files") or []
    if not isinstance(fetch_in, list):
        raise validation_error("fetch_files", "fetch_files must be a list of relative paths", "list_type")
    fetch = tuple(check_relative_path("fetch_files", p) for p in fetch_in)
    args = payload.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise validation_error("args", "args must be a list of strings", "list_type")

    return RunRequest(
        code=code,
        language=language,
        run_timeout=run_timeout,
        compile_timeout=compile_timeout,
        memory_limit_mb=memory,
        stdin=stdin,
        files=files,
        fetch_files=fetch,
    )


def overall_status(record: RunRecord) -> tuple[str, str]:
    """Top-level ``status`` and ``message`` of a run, by Sandbox Fusion's rule (``parse_run_status``).

    A run that could not be executed is a ``SandboxError`` carrying its stderr as the message; a
    time-out or a non-zero exit code is ``Failed``; anything else is ``Success``.
    """
    if record.status == ERROR:
        return SANDBOX_ERROR, record.stderr or record.error
    if record.status == TIME_LIMIT_EXCEEDED:
        return FAILED, ""
    if record.return_code not in (None, 0):
        return FAILED, ""
    return SUCCESS, ""


def run_result(record: RunRecord) -> dict[str, Any]:
    """The ``run_result`` object (Sandbox Fusion's ``CommandRunResult``)."""
    return {
        "status": record.status,
        "execution_time": record.execution_time,
        "return_code": record.return_code,
        "stdout": record.stdout,
        "stderr": record.stderr,
    }


def response_body(record: RunRecord) -> dict[str, Any]:
    """The full ``/run_code`` answer for a run that was attempted."""
    status, message = overall_status(record)
    return {
        "status": status,
        "message": message,
        "compile_result": None,
        "run_result": run_result(record),
        "executor_pod_name": os.environ.get("MY_POD_NAME"),
        "files": dict(record.files),
    }


def unsupported_language_body(language: str) -> dict[str, Any]:
    """The answer for a Sandbox Fusion language this server does not run: ``SandboxError``, no run_result."""
    supported = ", ".join(SUPPORTED_LANGUAGES)
    return {
        "status": SANDBOX_ERROR,
        "message": (
            f"language {language!r} is not supported by this sandbox (it runs: {supported}); "
            "point sandbox_fusion_url at a Sandbox Fusion deployment for other languages"
        ),
        "compile_result": None,
        "run_result": None,
        "executor_pod_name": os.environ.get("MY_POD_NAME"),
        "files": {},
    }
