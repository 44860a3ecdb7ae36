"""Slot uids claimed per sandbox, so two sandboxes on one machine never share one.

A slot's uid is how a run's leftovers are found and killed when no cgroup holds them (``jail.kill_uid``). Two
sandboxes on one machine (the local sandboxes of two training runs, a ``spo sandbox serve`` beside a run) with
the same uids would kill each other's running code. Each sandbox therefore claims its uids: an exclusive
``flock`` on ``<tmp>/spo-sandbox-uids/<uid>.lock`` per uid, held while the sandbox lives and released by the
kernel when its process ends, however it ends. The first block of ``workers`` consecutive uids from
``uid_base`` whose locks are all free is taken.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from spo_helpers.errors import UserError

LOCK_DIR_NAME = "spo-sandbox-uids"
MAX_BLOCKS = 4096


def lock_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / LOCK_DIR_NAME
    folder.mkdir(mode=0o755, exist_ok=True)
    return folder


class UidClaim:
    """``workers`` consecutive uids from ``base``, locked until ``release()`` (or the process's end)."""

    def __init__(self, base: int, fds: list[int]) -> None:
        self.base = base
        self._fds = fds

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _try_block(folder: Path, base: int, workers: int) -> list[int] | None:
    fds: list[int] = []
    for uid in range(base, base + workers):
        fd = os.open(folder / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for held in fds:
                os.close(held)
            return None
        fds.append(fd)
    return fds


def claim_uids(uid_base: int, workers: int) -> UidClaim:
    """The first free block of ``workers`` uids at ``uid_base + k * workers``; ``UserError`` when none is free."""
    folder = lock_dir()
    for block in range(MAX_BLOCKS):
        base = uid_base + block * workers
        if base + workers >= 2**31 - 1:
            break
        fds = _try_block(folder, base, workers)
        if fds is not None:
            return UidClaim(base, fds)
    raise UserError(f"no free block of {workers} sandbox uids from {uid_base} (locks in {folder})")
