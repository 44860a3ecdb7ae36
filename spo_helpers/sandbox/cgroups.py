"""One memory + pids cgroup per worker slot: a cap on a run's total memory and process count.

RLIMIT_AS bounds one process and RLIMIT_NPROC one uid; a cgroup bounds the whole run, its
tmpfs pages included. The server creates ``spo-sandbox-<pid>-<n>/slot<i>`` under its own cgroup
in each hierarchy it can write to (cgroup v1 ``memory`` and ``pids``, or the v2 unified tree
when both controllers can be enabled there), moves each run's first process into its slot's
group before the code starts, and removes the groups when it stops. Without write access
(not root, no delegation) ``SlotCgroups.create`` returns None and runs go without: the check
command says so.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids")
_INSTANCES = itertools.count()


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount of this process."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            head, _, tail = line.partition(" - ")
            fields, tail_fields = head.split(), tail.split()
            if len(tail_fields) >= 3 and tail_fields[0] in ("cgroup", "cgroup2"):
                found.append((fields[3], fields[4], tail_fields[0], set(tail_fields[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under ``""`` its v2 path."""
    paths = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _join(mount_root: str, mount_point: str, path: str) -> Path:
    relative = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path.lstrip("/")
    return Path(mount_point) / ("" if relative == "." else relative)


def discover() -> dict[str, Path] | None:
    """Own cgroup directory per controller: ``{"memory": dir, "pids": dir}`` (v1) or ``{"v2": dir}``; None if absent."""
    own = _own_paths()
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for root, point, fstype, options in _mounts():
        if fstype == "cgroup":
            for name in CONTROLLERS:
                if name in options and name in own:
                    v1[name] = _join(root, point, own[name])
        elif "" in own:
            v2 = _join(root, point, own[""])
    if set(v1) == set(CONTROLLERS):
        return v1
    if v2 is not None and not v1:
        try:
            available = (v2 / "cgroup.controllers").read_text().split()
        except OSError:
            return None
        if all(name in available for name in CONTROLLERS):
            return {"v2": v2}
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def remove_stale(own: Path) -> None:
    """Remove the groups a server that died without cleaning up left under ``own`` (their PID is gone)."""
    for parent in own.glob("spo-sandbox-*"):
        pid = parent.name.split("-")[2]
        if not pid.isdigit() or Path("/proc", pid).exists():
            continue
        for slot in parent.glob("slot*"):
            if not _read(slot / "cgroup.procs").split():
                with contextlib.suppress(OSError):
                    slot.rmdir()
        with contextlib.suppress(OSError):
            parent.rmdir()
            logger.info("removed the stale cgroup %s", parent)


@dataclass
class SlotCgroup:
    """The cgroup(s) of one slot: ``dirs`` maps a controller (or ``"v2"``) to its directory."""

    dirs: dict[str, Path]

    def configure(self, memory_bytes: int, pids: int) -> None:
        """Set the memory cap (no swap beyond it) and the process cap for the next run; reset the peak."""
        if "v2" in self.dirs:
            d = self.dirs["v2"]
            _write(d / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(pids))
            return
        memory = self.dirs["memory"]
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():  # the memory+swap cap may not sit below the memory cap: lift it first
            _write(swap, "-1")
        _write(memory / "memory.limit_in_bytes", str(memory_bytes))
        if swap.exists():
            _write(swap, str(memory_bytes))
        with contextlib.suppress(OSError):
            _write(memory / "memory.max_usage_in_bytes", "0")
        _write(self.dirs["pids"] / "pids.max", str(pids))

    def add(self, pid: int) -> None:
        """Move a process (and so every process it starts later) into this slot's group(s)."""
        for d in self.dirs.values():
            _write(d / "cgroup.procs", str(pid))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this group so far."""
        d = self.dirs.get("v2") or self.dirs["memory"]
        text = _read(d / ("memory.events" if "v2" in self.dirs else "memory.oom_control"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        d = self.dirs.get("v2") or self.dirs["pids"]
        return [int(p) for p in _read(d / "cgroup.procs").split()]

    def kill_all(self, timeout_s: float = 2.0) -> bool:
        """SIGKILL every process left in the group; True once it is empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.pids()
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                d.rmdir()


@dataclass
class SlotCgroups:
    """The parent group ``spo-sandbox-<pid>-<n>`` and one ``SlotCgroup`` per worker slot."""

    parents: dict[str, Path]
    slots: list[SlotCgroup]

    @classmethod
    def create(cls, workers: int) -> SlotCgroups | None:
        """Create the groups under this process's own cgroup; None (logged) when that is not possible."""
        own = discover()
        if own is None:
            logger.info("no writable memory+pids cgroup found: runs are capped by rlimits only")
            return None
        for d in own.values():
            remove_stale(d)
        name = f"spo-sandbox-{os.getpid()}-{next(_INSTANCES)}"  # one process may run several servers
        parents = {key: d / name for key, d in own.items()}
        try:
            for key, parent in parents.items():
                parent.mkdir(exist_ok=True)
                if key == "v2":
                    _write(parent / "cgroup.subtree_control", "+memory +pids")
            slots = []
            for index in range(workers):
                dirs = {key: parent / f"slot{index}" for key, parent in parents.items()}
                for d in dirs.values():
                    d.mkdir(exist_ok=True)
                slots.append(SlotCgroup(dirs))
        except OSError as err:
            logger.info("cannot create cgroups under %s (%s): runs are capped by rlimits only", own, err)
            for parent in parents.values():
                for child in parent.glob("slot*") if parent.exists() else []:
                    with contextlib.suppress(OSError):
                        child.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()
            return None
        return cls(parents, slots)

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.parents.values())

    def remove(self) -> None:
        """Kill anything left and remove every group this object created."""
        for slot in self.slots:
            slot.kill_all(timeout_s=1.0)
            slot.remove()
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                parent.rmdir()
