"""Request validation, statuses and limit resolution, without running anything."""

from __future__ import annotations

import base64
import json

import pytest

from spo_helpers.sandbox.api import (
    ERROR,
    FINISHED,
    TIME_LIMIT_EXCEEDED,
    RequestError,
    RunRecord,
    overall_status,
    parse_run_request,
    response_body,
)
from spo_helpers.sandbox.limits import MIB, SandboxLimits, resolve
from spo_helpers.sandbox.seccomp import filter_program


def parse(payload, max_file_bytes=1024):
    return parse_run_request(json.dumps(payload).encode(), max_file_bytes=max_file_bytes)


def test_verl_payload_parses_with_its_exact_fields():
    payload = {
        "compile_timeout": 30,
        "run_timeout": 30,
        "code": "print(1)",
        "stdin": None,
        "memory_limit_MB": 1024,
        "language": "python",
        "files": {},
        "fetch_files": [],
    }
    request = parse(payload)
    assert (request.code, request.language, request.run_timeout, request.memory_limit_mb) == (
        "print(1)",
        "python",
        30,
        1024,
    )
    assert request.stdin is None and request.files == {} and request.fetch_files == ()


def test_defaults_follow_sandbox_fusion():
    request = parse({"code": "1", "language": "python"})
    assert request.run_timeout == 10 and request.compile_timeout == 10 and request.memory_limit_mb == -1


def test_files_are_decoded_normalised_and_capped():
    data = base64.b64encode(b"abc").decode()
    request = parse({"code": "1", "language": "python", "files": {"./a/../b.txt": data, "skip": None}})
    assert request.files == {"b.txt": b"abc"}
    with pytest.raises(RequestError) as err:
        parse({"code": "1", "language": "python", "files": {"big": base64.b64encode(b"x" * 2000).decode()}})
    assert err.value.status == 422


def test_overall_status_mirrors_parse_run_status():
    def record(status, rc):
        return RunRecord(status, 0.1, rc, "", "boom")

    assert overall_status(record(FINISHED, 0)) == ("Success", "")
    assert overall_status(record(FINISHED, 1)) == ("Failed", "")
    assert overall_status(record(FINISHED, -9)) == ("Failed", "")
    assert overall_status(record(TIME_LIMIT_EXCEEDED, None)) == ("Failed", "")
    assert overall_status(record(ERROR, None)) == ("SandboxError", "boom")
    body = response_body(record(FINISHED, 0))
    assert body["run_result"]["status"] == "Finished" and body["compile_result"] is None


def test_resolve_clamps_requests_to_the_server_limits():
    limits = SandboxLimits(workers=1, max_run_timeout_s=30, memory_mb=1024, tmpfs_mb=64)
    assert resolve(limits, 1000, 4096).wall_s == 30
    assert resolve(limits, 2.5, -1).address_space_bytes == 1024 * MIB
    run = resolve(limits, 2.5, 100)
    assert (run.wall_s, run.cpu_s, run.address_space_bytes) == (2.5, 4, 100 * MIB)
    assert run.cgroup_memory_bytes == (100 + 128) * MIB


@pytest.mark.parametrize("bad", [{"workers": 0}, {"max_run_timeout_s": 0}, {"memory_mb": -1}, {"nice": 40}])
def test_limits_reject_nonsense(bad):
    with pytest.raises(ValueError):
        SandboxLimits(**bad)


def test_seccomp_program_shape():
    program = filter_program("x86_64")
    assert program is not None and len(program) % 8 == 0 and len(program) // 8 < 4096
    assert filter_program("aarch64") is not None
    assert filter_program("riscv64") is None
