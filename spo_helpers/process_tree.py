"""Processes the kit starts die with it: no orphans when a stage is killed.

verl's data loading forks worker pools (``datasets``' ``filter(num_proc=...)``); a SIGKILL of the parent would
leave them running with no parent. ``die_with_parent()`` registers a fork hook: every child forked by Python
afterwards asks the kernel for SIGKILL when the thread that forked it ends (Linux ``PR_SET_PDEATHSIG``), and exits
at once if its parent is already gone. Elsewhere it does nothing. Programs started through ``subprocess`` do not
run fork hooks: the notebook kernels papermill starts end through ipykernel's own parent poller, and Ray's
processes through Ray's.

The ``spo`` command, the training runner and the notebooks' setup call it, so every stage is covered whichever
way it starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
_state: dict[str, int] = {}


def _in_child() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != _state.get("parent"):  # the parent died between fork and prctl
        os._exit(1)


def die_with_parent() -> bool:
    """From now on, every forked child dies when its parent dies; True when the platform supports it."""
    if not sys.platform.startswith("linux"):
        return False
    if "installed" not in _state:
        os.register_at_fork(before=lambda: _state.__setitem__("parent", os.getpid()), after_in_child=_in_child)
        _state["installed"] = 1
    return True
