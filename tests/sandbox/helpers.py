"""HTTP helpers and the test server's limits, shared by the sandbox tests."""

from __future__ import annotations

import json
import os
import textwrap
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


def processes_with(marker: str) -> list[int]:
    """Host PIDs whose command line holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(os.path.join(entry.path, "cmdline"), "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def daemon_code(marker: str, seconds: int) -> str:
    """Python that leaves a daemon behind: a double-forked process in a session of its own, sleeping ``seconds``
    with ``marker`` in its command line. It prints ``daemon running`` once that process shows in /proc (``no
    daemon`` when it has not within 2 s), so that a test sees the leftover existed before checking it is gone."""
    return textwrap.dedent(
        f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep({seconds})", {marker!r}])
            os._exit(0)
        os.wait()

        def running():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{{pid}}/cmdline", "rb") as handle:
                        if {marker!r}.encode() in handle.read():
                            return True
                except OSError:
                    pass
            return False

        deadline = time.monotonic() + 2
        while not running() and time.monotonic() < deadline:
            time.sleep(0.01)
        print("daemon running" if running() else "no daemon")
        """
    ).strip()
