"""A killed parent takes its forked children along (no orphans): the worker pools of verl's data loading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from spo_helpers.process_tree import die_with_parent

PARENT = """
import multiprocessing as mp, sys, time
from spo_helpers.process_tree import die_with_parent
if sys.argv[1] == "on":
    die_with_parent()
context = mp.get_context("fork")
manager = context.Manager()                                  # datasets' map/filter with num_proc > 1 use one
worker = context.Process(target=time.sleep, args=(300,))     # and a worker busy on its task
worker.start()
print(manager._process.pid, worker.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def children_after_sigkill(mode: str) -> list[int]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    children = [int(p) for p in proc.stdout.readline().split()]
    assert len(children) >= 2 and all(alive(p) for p in children)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in children):
        time.sleep(0.1)
    survivors = [p for p in children if alive(p)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_killed_parent():
    assert die_with_parent()
    assert children_after_sigkill("on") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_without_it_children_are_orphaned():
    """The check above can fail: without the hook the same children outlive their parent."""
    assert children_after_sigkill("off")
