"""Two sandboxes on one machine get their own slot uids, so neither kills the other's running code."""

from __future__ import annotations

import os
import threading

import pytest

from spo_helpers.sandbox.api import RunRequest
from spo_helpers.sandbox.uid_claim import claim_uids

from .helpers import TEST_LIMITS, slot_uid_processes


def test_claims_are_disjoint_and_released(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first = claim_uids(3_000_000, 4)
    second = claim_uids(3_000_000, 4)
    assert (first.base, second.base) == (3_000_000, 3_000_004)
    first.release()
    third = claim_uids(3_000_000, 4)
    assert third.base == 3_000_000  # a released block is free again
    second.release()
    third.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="slot uids are used only when the server runs as root")
def test_a_second_sandbox_does_not_kill_the_first_ones_run(wait_until):
    from spo_helpers.sandbox.bwrap import BwrapUnavailable
    from spo_helpers.sandbox.jail import Sandbox

    try:
        first, second = Sandbox(TEST_LIMITS), Sandbox(TEST_LIMITS)
    except BwrapUnavailable as err:
        pytest.skip(f"bubblewrap cannot run here: {err}")
    try:
        uids = [set(range(s.limits.uid_base, s.limits.uid_base + s.limits.workers)) for s in (first, second)]
        assert not uids[0] & uids[1]
        slow = RunRequest(code="import time\ntime.sleep(1.5)\nprint('finished')", language="python", run_timeout=3)
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("slow", first.run(slow)))
        worker.start()
        wait_until(lambda: slot_uid_processes(first.limits), 10, "the first sandbox's run to start")
        for _ in range(3):  # quick runs on the other sandbox end (and clean their slots) meanwhile
            quick = second.run(RunRequest(code="print(1)", language="python", run_timeout=3))
            assert quick.stdout == "1\n"
        worker.join()
        assert result["slow"].status == "Finished"
        assert result["slow"].stdout == "finished\n"
    finally:
        first.close()
        second.close()
