"""What one sandboxed run may use, and how a request's own limits are resolved against them.

``SandboxLimits`` is the server's configuration: every field has help text (the
``spo sandbox`` flags are generated from it). A request may ask for less than these
limits (``run_timeout``, ``memory_limit_MB``), never for more: ``resolve`` clamps it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields

MIB = 1024 * 1024

# The official SPO tool config (verl-recipe spo/spo_tool_config.yaml): default_timeout 30,
# memory_limit_mb 1024, num_workers 128. Sandbox Fusion's own request defaults: run_timeout 10,
# memory_limit_MB -1 (no limit), output captured up to 1 MiB per stream.
OFFICIAL_TIMEOUT_S = 30.0
OFFICIAL_MEMORY_MB = 1024


def default_workers() -> int:
    """Runs executed at once by default: one per CPU (2 on the CPU preset's machine)."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of every run, and of the server that executes them."""

    # Each limit in full (a request's own limits clamped to these, the cgroup around a whole run): docs/sandbox.md.
    workers: int = field(
        default_factory=default_workers,
        metadata={"help": "runs executed at once; further requests wait"},
    )
    max_run_timeout_s: float = field(
        default=OFFICIAL_TIMEOUT_S,
        metadata={"help": "longest run_timeout a request may ask for, seconds"},
    )
    memory_mb: int = field(
        default=OFFICIAL_MEMORY_MB,
        metadata={"help": "address-space limit of each process, MiB"},
    )
    max_processes: int = field(default=64, metadata={"help": "processes and threads a run may have at once"})
    tmpfs_mb: int = field(default=64, metadata={"help": "size of the run's /tmp and of its /dev/shm, MiB each"})
    output_bytes: int = field(default=1 * MIB, metadata={"help": "stdout and stderr kept per stream, bytes"})
    open_files: int = field(default=1024, metadata={"help": "open file descriptors per process"})
    max_body_bytes: int = field(default=16 * MIB, metadata={"help": "largest request body, bytes (HTTP 413 beyond)"})
    max_waiting: int = field(default=1024, metadata={"help": "requests waiting for a worker (HTTP 503 beyond)"})
    nice: int = field(default=10, metadata={"help": "scheduling niceness of the code"})
    uid_base: int = field(
        default=2_000_000_000,
        metadata={"help": "as root: slot i runs code as uid/gid uid_base + i"},
    )

    def __post_init__(self) -> None:
        positive = ("workers", "max_processes", "tmpfs_mb", "output_bytes", "open_files", "max_body_bytes", "memory_mb")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SandboxLimits.{name} must be a positive integer, got {value!r}")
        if not (self.max_run_timeout_s > 0 and math.isfinite(self.max_run_timeout_s)):
            raise ValueError(f"SandboxLimits.max_run_timeout_s must be a positive number, got {self.max_run_timeout_s}")
        if self.max_waiting < 0:
            raise ValueError(f"SandboxLimits.max_waiting must be >= 0, got {self.max_waiting}")
        if not -20 <= self.nice <= 19:
            raise ValueError(f"SandboxLimits.nice must be in [-20, 19], got {self.nice}")
        if not 0 < self.uid_base < 2**31 - 1 - self.workers:
            raise ValueError(f"SandboxLimits.uid_base must leave room for {self.workers} ids below 2**31")

    @property
    def cgroup_memory_bytes(self) -> int:
        """The memory cap of a whole run: the per-process limit plus its two tmpfs mounts."""
        return (self.memory_mb + 2 * self.tmpfs_mb) * MIB


def limit_help() -> dict[str, str]:
    """Help text of every ``SandboxLimits`` field, by name."""
    return {f.name: f.metadata.get("help", "") for f in fields(SandboxLimits)}


@dataclass(frozen=True)
class RunLimits:
    """The limits of one run, after ``resolve``."""

    wall_s: float  # wall-clock limit, from the start of the sandbox process
    cpu_s: int  # RLIMIT_CPU per process (soft; the hard limit is one second more)
    address_space_bytes: int  # RLIMIT_AS per process
    processes: int  # RLIMIT_NPROC / pids.max
    file_bytes: int  # RLIMIT_FSIZE: no single file larger than the tmpfs
    open_files: int
    cgroup_memory_bytes: int


def resolve(limits: SandboxLimits, run_timeout: float, memory_limit_mb: int) -> RunLimits:
    """Clamp a request's ``run_timeout`` (seconds) and ``memory_limit_MB`` (<= 0: server default) to ``limits``.

    CPU time per process is the wall limit rounded up plus one second: the wall clock ends a
    run first; RLIMIT_CPU is the backstop for a process the clock somehow missed.
    """
    wall = min(float(run_timeout), limits.max_run_timeout_s)
    memory_mb = limits.memory_mb if memory_limit_mb <= 0 else min(memory_limit_mb, limits.memory_mb)
    return RunLimits(
        wall_s=wall,
        cpu_s=math.ceil(wall) + 1,
        address_space_bytes=memory_mb * MIB,
        processes=limits.max_processes,
        file_bytes=limits.tmpfs_mb * MIB,
        open_files=limits.open_files,
        cgroup_memory_bytes=(memory_mb + 2 * limits.tmpfs_mb) * MIB,
    )


# SandboxLimits field -> flag (the underscore spelling is accepted too).
FLAGS = {
    "workers": "--workers",
    "max_run_timeout_s": "--run-timeout",
    "memory_mb": "--memory-mb",
    "max_processes": "--max-processes",
    "tmpfs_mb": "--tmpfs-mb",
    "output_bytes": "--output-bytes",
    "open_files": "--open-files",
    "max_body_bytes": "--max-body-bytes",
    "max_waiting": "--max-waiting",
    "nice": "--nice",
    "uid_base": "--uid-base",
}


def limit_flags(limits: SandboxLimits) -> list[str]:
    """The command-line flags that reproduce ``limits`` (used to start a server in a child process)."""
    args = []
    for f in fields(SandboxLimits):
        args += [FLAGS[f.name], str(getattr(limits, f.name))]
    return args
