"""Run one piece of code contained, and return what it printed and how it ended.

``Sandbox`` owns the worker slots: slot ``i`` has its own unprivileged uid (``uid_base + i``
when the server runs as root) and its own cgroup, so process counts and memory caps of
concurrent runs never mix. ``Sandbox.run`` waits for a free slot, then starts the run, whose
wall clock starts only then:

1. bubblewrap starts ``inside.py`` as PID 1 of fresh PID, network, IPC, UTS and cgroup
   namespaces, on a read-only view of the system with a private tmpfs (see ``bwrap.py``),
   under a seccomp filter (``seccomp.py``);
2. the server reads that process's host PID from bwrap's status pipe, moves it into the slot's
   cgroup, and only then sends the job (code, files, rlimits, uid), so every process of the run
   is born inside the cgroup;
3. ``inside.py`` starts the code with its rlimits as the slot's uid, reaps everything, and
   reports; the server reads stdout and stderr through a selector, keeping ``output_bytes`` of
   each and draining the rest, until the run ends or its wall limit passes (then it kills the
   run's PID 1, which ends the whole namespace);
4. before the slot is handed on, its cgroup must be empty.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import marshal
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.sandbox import bwrap, seccomp
from spo_helpers.sandbox.api import ERROR, FINISHED, TIME_LIMIT_EXCEEDED, RunRecord, RunRequest
from spo_helpers.sandbox.cgroups import SlotCgroup, SlotCgroups
from spo_helpers.sandbox.limits import RunLimits, SandboxLimits, resolve
from spo_helpers.sandbox.uid_claim import claim_uids

logger = logging.getLogger(__name__)

INSIDE = Path(__file__).with_name("inside.py")
MARSHAL_VERSION = 4  # the job and result format between the server and inside.py
KILL_GRACE_S = 2.0  # after a kill, how long to wait for the pipes to close
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class Isolation:
    """How this server contains runs, as found when it started (``/health`` and ``spo sandbox check`` show it)."""

    bwrap: str | None  # None: --unsafe-no-isolation
    seccomp: bool
    cgroups: str | None  # where the slot cgroups live, None when unavailable
    slot_uids: bool  # True when each slot runs code as its own unprivileged uid
    python: str
    read_only: tuple[str, ...]

    @property
    def unsafe(self) -> bool:
        return self.bwrap is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespaces": not self.unsafe,
            "bwrap": self.bwrap,
            "seccomp": self.seccomp,
            "cgroups": self.cgroups,
            "slot_uids": self.slot_uids,
            "python": self.python,
            "read_only": list(self.read_only),
        }


def code_environment(python: str) -> dict[str, str]:
    """The whole environment of a run: nothing from the server's own environment."""
    return {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        # One thread per numeric library: threads count against the run's process limit.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


def count_own_processes() -> int:
    """Processes of this user (RLIMIT_NPROC counts them all when runs cannot have their own uid)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


def kill_uid(uid: int) -> int:
    """SIGKILL every process of ``uid`` (a slot's own uid); returns how many were signalled."""
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


class _Pipes:
    """The pipe ends one run owns: each closed exactly once (a second close could hit a reused number)."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        self.open.update((read_end, write_end))
        return read_end, write_end

    def close(self, fd: int | None) -> None:
        if fd is not None and fd in self.open:
            self.open.discard(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self.open):
            self.close(fd)


@dataclass
class _Capture:
    """Bytes read from one pipe: the first ``cap`` kept, the rest counted and dropped."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class Sandbox:
    """Runs code requests in isolated, resource-capped processes, ``limits.workers`` at a time.

    ``unsafe_no_isolation`` runs code without bubblewrap (no namespaces, no seccomp: it sees the
    host's files and network), for debugging only. ``python`` is the interpreter that runs the
    code (default: this one); ``read_only`` adds host folders the code may read.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        python: str | None = None,
        read_only: Sequence[str] = (),
        unsafe_no_isolation: bool = False,
        bwrap_path: str | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.python = python or sys.executable
        if not os.access(self.python, os.X_OK):
            raise UserError(f"the sandbox interpreter {self.python} is not an executable")
        self._bwrap: str | None = None
        if unsafe_no_isolation:
            logger.warning(
                "UNSAFE: --unsafe-no-isolation runs model-written code WITHOUT namespaces or seccomp: it can "
                "read your files and reach the network. Use it for debugging only."
            )
        else:
            found = bwrap.find_bwrap(bwrap_path)
            if found is None:
                where = f" at {bwrap_path}" if bwrap_path else ""
                raise bwrap.BwrapUnavailable(
                    f"bubblewrap (bwrap) not found{where}; {bwrap.INSTALL_HINT}, or pass --unsafe-no-isolation "
                    "to run code without isolation (debugging only)"
                )
            bwrap.probe(found)
            self._bwrap = found
        self._seccomp = None if unsafe_no_isolation else seccomp.filter_program()
        self._root = os.geteuid() == 0
        # Without bwrap the host's file permissions apply (e.g. an interpreter under a 0700 /root),
        # so unsafe runs keep the server's uid.
        self._slot_uids = self._root and not unsafe_no_isolation
        self._uid_claim = None
        if self._slot_uids:  # uids of its own: another sandbox on this machine must not kill this one's runs
            self._uid_claim = claim_uids(self.limits.uid_base, self.limits.workers)
            self.limits = dataclasses.replace(self.limits, uid_base=self._uid_claim.base)
        self._read_only = tuple(bwrap.minimal_roots([*bwrap.python_roots(self.python), *read_only]))
        self._env = code_environment(self.python)
        self._cgroups = SlotCgroups.create(self.limits.workers)
        self._slots: queue.Queue[int] = queue.Queue()
        for index in range(self.limits.workers):
            self._slots.put(index)
        self._closed = threading.Event()
        self.isolation = Isolation(
            bwrap=self._bwrap,
            seccomp=self._seccomp is not None,
            cgroups=self._cgroups.describe() if self._cgroups else None,
            slot_uids=self._slot_uids,
            python=self.python,
            read_only=self._read_only,
        )
        logger.info("sandbox ready: %s", json.dumps(self.isolation.as_dict()))

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the slot cgroups (any process left in them is killed first)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._cgroups is not None:
            self._cgroups.remove()
        if self._uid_claim is not None:
            self._uid_claim.release()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _slot(self) -> Iterator[int]:
        index = self._slots.get()
        try:
            yield index
        finally:
            self._slots.put(index)

    def busy(self) -> int:
        """Slots running code right now."""
        return self.limits.workers - self._slots.qsize()

    # -- one run ---------------------------------------------------------------------------

    def run(self, request: RunRequest) -> RunRecord:
        """Run ``request.code`` (Python) once, contained; wait for a free slot first."""
        if self._closed.is_set():
            return RunRecord(ERROR, None, None, "", "the sandbox is shut down", error="closed")
        with self._slot() as index:
            return self._run_in_slot(request, index)

    def _job(self, request: RunRequest, limits: RunLimits, index: int) -> dict[str, Any]:
        uid = self.limits.uid_base + index if self._slot_uids else None
        nproc = limits.processes if self._slot_uids else count_own_processes() + limits.processes
        return {
            "code": request.code,
            "files": dict(request.files),
            "fetch_files": list(request.fetch_files),
            "fetch_cap": self.limits.tmpfs_mb * 1024 * 1024,
            "python": self.python,
            "env": {**self._env, **({"HOME": bwrap.WORKDIR} if self._bwrap else {})},
            "workdir": bwrap.WORKDIR if self._bwrap else None,
            "uid": uid,
            "gid": uid,
            "nice": self.limits.nice,
            "rlimits": {
                "AS": limits.address_space_bytes,
                "CPU": limits.cpu_s,
                "NPROC": nproc,
                "FSIZE": limits.file_bytes,
                "NOFILE": limits.open_files,
                "CORE": 0,
            },
        }

    def _run_in_slot(self, request: RunRequest, index: int) -> RunRecord:
        limits = resolve(self.limits, request.run_timeout, request.memory_limit_mb)
        job = marshal.dumps(self._job(request, limits, index), MARSHAL_VERSION)
        cgroup = self._cgroups.slots[index] if self._cgroups else None
        oom_before = 0
        if cgroup is not None:
            try:
                cgroup.configure(limits.cgroup_memory_bytes, limits.processes)
                oom_before = cgroup.oom_kills()
            except OSError as err:
                logger.warning("slot %d: cannot configure its cgroup (%s); running with rlimits only", index, err)
                cgroup = None

        pipes = _Pipes()
        try:
            job_r, job_w = pipes.pipe()
            result_r, result_w = pipes.pipe()
            child_fds = [job_r, result_w]
            status_r = status_w = seccomp_r = None
            if self._bwrap:
                status_r, status_w = pipes.pipe()
                child_fds.append(status_w)
                if self._seccomp is not None:
                    seccomp_r, seccomp_w = pipes.pipe()
                    os.write(seccomp_w, self._seccomp)  # far below a pipe's buffer
                    pipes.close(seccomp_w)
                    child_fds.append(seccomp_r)
                command = bwrap.bwrap_command(
                    self._bwrap,
                    read_only=self._read_only,
                    inside_script=str(INSIDE),
                    tmpfs_bytes=self.limits.tmpfs_mb * 1024 * 1024,
                    status_fd=status_w,
                    seccomp_fd=seccomp_r,
                )
                command += ["--", self.python, "-I", "-S", bwrap.INSIDE_SCRIPT, str(job_r), str(result_w)]
            else:
                command = [self.python, "-I", "-S", str(INSIDE), str(job_r), str(result_w)]

            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=tuple(child_fds),
                    env=self._env,
                    start_new_session=True,
                )
            except OSError as err:
                return RunRecord(ERROR, None, None, "", f"cannot start the sandbox: {err}", error=str(err))
            for fd in child_fds:
                pipes.close(fd)
            outcome = self._exchange(proc, request, job, pipes, job_w, result_r, status_r, cgroup, start, limits)
        finally:
            pipes.close_all()
            self._clean_slot(index, cgroup)

        oom = cgroup is not None and cgroup.oom_kills() > oom_before
        return self._record(outcome, limits, oom)

    def _clean_slot(self, index: int, cgroup: SlotCgroup | None) -> None:
        """Make sure nothing of the run is left before the slot is reused."""
        if cgroup is not None and not cgroup.kill_all():
            logger.error("slot %d: processes left in its cgroup after the run: %s", index, cgroup.pids())
        if self._slot_uids and cgroup is None:
            for _ in range(200):
                if kill_uid(self.limits.uid_base + index) == 0:
                    break
                time.sleep(0.01)

    def _exchange(
        self,
        proc: subprocess.Popen[bytes],
        request: RunRequest,
        job: bytes,
        pipes: _Pipes,
        job_w: int,
        result_r: int,
        status_r: int | None,
        cgroup: SlotCgroup | None,
        start: float,
        limits: RunLimits,
    ) -> dict[str, Any]:
        """Feed the job and stdin, read stdout, stderr, the result and bwrap's status, until the run ends."""
        assert proc.stdin and proc.stdout and proc.stderr
        stdin_fd, out_fd, err_fd = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
        captures = {
            out_fd: _Capture(self.limits.output_bytes),
            err_fd: _Capture(self.limits.output_bytes),
            result_r: _Capture(self.limits.tmpfs_mb * 1024 * 1024 * 2 + (1 << 16)),
        }
        status = _Capture(1 << 16)
        if status_r is not None:
            captures[status_r] = status
        pending: dict[int, memoryview] = {stdin_fd: memoryview((request.stdin or "").encode("utf-8", "replace"))}
        init_pid: int | None = None
        selector = selectors.DefaultSelector()
        for fd in captures:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        for fd in (stdin_fd, job_w):
            os.set_blocking(fd, False)

        def finish_writing(fd: int) -> None:
            pending.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(fd)
            if fd == stdin_fd:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            else:
                pipes.close(fd)

        def start_writing(fd: int, data: bytes | memoryview) -> None:
            pending[fd] = memoryview(data)
            selector.register(fd, selectors.EVENT_WRITE)

        start_writing(stdin_fd, pending.pop(stdin_fd))
        if status_r is None:  # no bwrap: nothing to place, send the job at once
            if cgroup is not None:
                self._place(cgroup, proc.pid)
            start_writing(job_w, job)

        deadline = start + limits.wall_s
        timed_out = False
        open_reads = set(captures)
        try:
            while open_reads:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(remaining):
                    fd = key.fd
                    if fd in pending:
                        try:
                            written = os.write(fd, pending[fd][:READ_CHUNK])
                        except BlockingIOError:
                            continue
                        except OSError:  # the reader is gone (EPIPE): the code ended or ignored stdin
                            finish_writing(fd)
                            continue
                        pending[fd] = pending[fd][written:]
                        if not pending[fd]:
                            finish_writing(fd)
                        continue
                    try:
                        chunk = os.read(fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(fd)
                        open_reads.discard(fd)
                        continue
                    captures[fd].add(chunk)
                    if fd == status_r and init_pid is None:
                        init_pid = _child_pid(bytes(status.data))
                        if init_pid is not None:
                            if cgroup is not None:
                                self._place(cgroup, init_pid)
                            start_writing(job_w, job)
        finally:
            if timed_out or open_reads:
                self._kill(proc, init_pid)
                self._drain(selector, captures, open_reads)
            for fd in list(pending):
                finish_writing(fd)
            selector.close()
            for fd in (job_w, result_r, status_r):
                pipes.close(fd)
            try:  # bwrap exits only once the run's PID 1, and with it the whole namespace, is gone
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("bwrap (pid %d) did not exit after its run: killing it", proc.pid)
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    stream.close()
        return {
            "timed_out": timed_out,
            "elapsed": time.monotonic() - start,
            "stdout": captures[out_fd],
            "stderr": captures[err_fd],
            "result": bytes(captures[result_r].data),
            "exit_status": proc.returncode,
        }

    def _place(self, cgroup: SlotCgroup, pid: int) -> None:
        try:
            cgroup.add(pid)
        except OSError as err:
            logger.warning("cannot move pid %d into its cgroup (%s): this run is capped by rlimits only", pid, err)

    def _kill(self, proc: subprocess.Popen[bytes], init_pid: int | None) -> None:
        """End a run by killing its PID 1: the kernel then kills the rest of its namespace, and bwrap exits.

        Before bwrap reported that PID (or without bwrap), kill bwrap itself (``--die-with-parent`` takes
        the sandbox along) or, unsafe, the code's process group.
        """
        target = init_pid if init_pid is not None else proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
        if self._bwrap is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    @staticmethod
    def _drain(selector: selectors.BaseSelector, captures: dict[int, _Capture], open_reads: set[int]) -> None:
        """Read what is left in the pipes for a short while after a kill."""
        deadline = time.monotonic() + KILL_GRACE_S
        while open_reads and time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                if key.fd not in open_reads:
                    continue
                try:
                    chunk = os.read(key.fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    captures[key.fd].add(chunk)
                else:
                    selector.unregister(key.fd)
                    open_reads.discard(key.fd)

    def _record(self, outcome: dict[str, Any], limits: RunLimits, oom: bool) -> RunRecord:
        """Turn what was read into a ``RunRecord`` (Sandbox Fusion's ``run_result`` semantics)."""
        stdout: _Capture = outcome["stdout"]
        stderr: _Capture = outcome["stderr"]
        common = {
            "stdout": stdout.text(),
            "stderr": stderr.text(),
            "stdout_truncated": stdout.dropped > 0,
            "stderr_truncated": stderr.dropped > 0,
            "oom_killed": oom,
        }
        if outcome["timed_out"]:
            return RunRecord(TIME_LIMIT_EXCEEDED, outcome["elapsed"], None, **common)
        try:
            result = marshal.loads(outcome["result"]) if outcome["result"] else None
        except (EOFError, ValueError, TypeError):
            result = None
        if not isinstance(result, dict):
            result = None
        if not result:
            tail = stderr.text().strip()[-500:]
            message = f"the sandbox ended without a result (exit status {outcome['exit_status']}): {tail}"
            logger.warning(message)
            return RunRecord(ERROR, outcome["elapsed"], None, **{**common, "stderr": message}, error=message)
        if not result.get("ok"):
            message = f"the sandbox could not run the code: {result.get('error', 'unknown error')}"
            return RunRecord(ERROR, outcome["elapsed"], None, **{**common, "stderr": message}, error=message)
        files = {path: base64.b64encode(data).decode("ascii") for path, data in (result.get("files") or {}).items()}
        for path, why in (result.get("files_left_out") or {}).items():
            logger.info("fetch_files: %s left out: %s", path, why)
        signum = result.get("signal")
        cpu = result.get("cpu") or 0.0
        if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu >= limits.cpu_s - 0.05):
            return RunRecord(TIME_LIMIT_EXCEEDED, result.get("elapsed"), None, files=files, **common)
        return_code = -signum if signum else result.get("exit_code")
        return RunRecord(FINISHED, result.get("elapsed"), return_code, files=files, **common)


def _child_pid(status: bytes) -> int | None:
    """The ``child-pid`` of bwrap's first JSON status line, once that line is complete."""
    line, newline, _ = status.partition(b"\n")
    if not newline:
        return None
    try:
        value = json.loads(line).get("child-pid")
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None
