"""One writer per run folder: an exclusive lock on ``<run>/.lock`` held while a run trains or estimates.

The lock is an ``fcntl.flock`` on the file, which the kernel releases when the holding process ends in any
way (SIGKILL included), so a killed run never blocks the next one: its lock file stays behind, but unlocked.
The file records who holds it (pid, host, start time, command) so a refusal can name the running process.
On network file systems without ``flock`` support the lock is not enforced across machines (docs/training.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from spo_helpers.errors import UserError

LOCK_FILE = ".lock"


def lock_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / LOCK_FILE


def holder(run_dir: str | os.PathLike) -> dict | None:
    """What the lock file says about its last holder (None when there is no readable record)."""
    try:
        record = json.loads(lock_path(run_dir).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _describe(record: dict | None) -> str:
    if not record:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    return f"pid {record.get('pid')} on {record.get('host')} (since {started}: {record.get('command', '?')})"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the block; refuse at once with one line when another process holds it."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{Path(run_dir)}: another run is writing to this folder: {_describe(holder(run_dir))}; wait for it "
                "to finish, stop it, or choose another --exp_name"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:300],
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the lock
