"""HTTP helpers and the test server's limits, shared by the sandbox tests."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from spo_helpers.sandbox.limits import SandboxLimits

SERVER_SECRET_VAR = "SPO_SANDBOX_TEST_SECRET"
SERVER_SECRET = "do-not-leak-7f3a"

# Small limits keep the hostile cases fast on two cores.
TEST_LIMITS = SandboxLimits(
    workers=2,
    max_run_timeout_s=3,
    memory_mb=256,
    max_processes=32,
    tmpfs_mb=16,
    output_bytes=64 * 1024,
    max_body_bytes=4 * 1024 * 1024,
)


@dataclass
class Served:
    url: str  # the /run_code URL
    base: str
    sandbox: Any
    limits: SandboxLimits


def http(method: str, url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, Any]:
    """(status, parsed JSON body) of one request; HTTP errors are returned, not raised."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def post_json(url: str, payload: Any, timeout: float = 60) -> tuple[int, Any]:
    return http("POST", url, json.dumps(payload).encode(), timeout=timeout)


def run(served: Served, code: str, **fields: Any) -> dict[str, Any]:
    """POST ``code`` (Python) and return the 200 answer; fails the test on any other status."""
    payload = {"code": code, "language": "python", "run_timeout": 5, **fields}
    status, body = post_json(served.url, payload)
    assert status == 200, body
    return body


def assert_alive(served: Served) -> None:
    """The server answers /health and still runs code correctly."""
    status, health = http("GET", served.base + "/health", timeout=10)
    assert status == 200 and health["status"] == "ok"
    body = run(served, "print(6 * 7)")
    assert body["status"] == "Success", body
    assert body["run_result"]["stdout"] == "42\n"


def slot_uid_processes(limits: SandboxLimits) -> list[int]:
    """Host PIDs owned by any slot uid (there must be none between runs)."""
    uids = range(limits.uid_base, limits.uid_base + limits.workers)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in uids:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
