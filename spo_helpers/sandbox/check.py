"""``spo sandbox check``: try each way out of the sandbox once and report what held.

Every probe runs hostile code through a real ``Sandbox`` (no HTTP) and judges the outcome on
the host side when it can (a listening socket, a secret file, leftover processes). The report
fits one screen: one line per probe, then what the sandbox does not isolate by design.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spo_helpers.sandbox.api import FINISHED, TIME_LIMIT_EXCEEDED, RunRecord, RunRequest
from spo_helpers.sandbox.jail import Sandbox

SECRET_ENV = "SPO_SANDBOX_CHECK_SECRET"
LEFTOVER_MARKER = "spo-sandbox-check-leftover"

NOT_ISOLATED = (
    "the kernel is shared (seccomp narrows it; a kernel bug is still a way out)",
    "CPU is shared: runs are niced, time-limited and limited in number, not given a CPU quota",
    "the system's /usr and the interpreter's folders are readable (read-only): no secrets belong there",
    "timing and cache side channels between concurrent runs",
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float


def _run(sandbox: Sandbox, code: str, timeout: float = 5.0) -> RunRecord:
    return sandbox.run(RunRequest(code=textwrap.dedent(code), language="python", run_timeout=timeout))


@contextlib.contextmanager
def _listening_socket() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _processes_with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def probe_python(sandbox: Sandbox) -> tuple[bool, str]:
    record = _run(sandbox, "print(6 * 7)")
    return record.stdout == "42\n", f"print(6 * 7) -> {record.stdout.strip() or record.stderr.strip()[-80:]!r}"


def probe_network(sandbox: Sandbox) -> tuple[bool, str]:
    with _listening_socket() as port:
        record = _run(
            sandbox,
            f"""
            import socket
            reached = []
            for host, port in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    reached.append(f"{{host}}:{{port}}")
                except OSError:
                    pass
            try:
                socket.getaddrinfo("pypi.org", 443)
                reached.append("DNS")
            except OSError:
                pass
            print(",".join(reached) or "none", [name for _, name in socket.if_nameindex()])
            """,
        )
    ok = record.stdout.startswith("none ")
    return ok, f"host loopback :{port}, internet, DNS reached: {record.stdout.strip() or record.stderr[-80:]}"


def probe_host_files(sandbox: Sandbox) -> tuple[bool, str]:
    home = Path.home()
    mounts = list(sandbox.isolation.read_only)
    with tempfile.TemporaryDirectory(dir=home if os.access(home, os.W_OK) else None) as folder:
        secret = Path(folder, "secret.txt")
        secret.write_text("host secret")
        paths = [str(secret), folder, str(home), os.getcwd(), "/etc/shadow", "/etc/passwd", "/home", "/sys", "/run"]
        record = _run(
            sandbox,
            f"""
            import os
            mounts = {mounts!r}
            seen = []
            for path in {paths!r}:
                try:
                    if os.path.isdir(path):
                        # only the folders leading to the read-only mounts may be listed
                        entries = [os.path.join(path, name) for name in os.listdir(path)]
                        seen += [e for e in entries if not any(m == e or m.startswith(e + "/") for m in mounts)]
                    else:
                        open(path).read()
                        seen.append(path)
                except OSError:
                    pass
            print(seen)
            """,
        )
    return record.stdout.strip() == "[]", f"readable host paths: {record.stdout.strip() or record.stderr[-80:]}"


def probe_writes(sandbox: Sandbox) -> tuple[bool, str]:
    targets = ["/", "/usr", "/etc", "/proc/sys/kernel", *sandbox.isolation.read_only]
    record = _run(
        sandbox,
        f"""
        import os
        written = []
        for folder in {targets!r}:
            try:
                with open(os.path.join(folder, "spo-sandbox-probe"), "w") as handle:
                    handle.write("x")
                written.append(folder)
            except OSError:
                pass
        print(written)
        """,
    )
    return record.stdout.strip() == "[]", f"writable outside /tmp: {record.stdout.strip() or record.stderr[-80:]}"


def probe_environment(sandbox: Sandbox) -> tuple[bool, str]:
    os.environ[SECRET_ENV] = "server secret"
    try:
        record = _run(sandbox, f"import os; print({SECRET_ENV!r} in os.environ, len(os.environ))")
    finally:
        os.environ.pop(SECRET_ENV, None)
    ok = record.stdout.startswith("False ")
    return ok, f"server's variable visible: {record.stdout.split()[0] if record.stdout else record.stderr[-80:]}"


def probe_identity(sandbox: Sandbox) -> tuple[bool, str]:
    record = _run(
        sandbox,
        """
        import os
        try:
            os.setuid(0)
            regained = True
        except OSError:
            regained = False
        print(os.getuid(), os.getgid(), regained)
        """,
    )
    parts = record.stdout.split()
    ok = len(parts) == 3 and parts[0] != "0" and parts[2] == "False"
    return ok, f"uid gid, setuid(0) works: {record.stdout.strip() or record.stderr[-80:]}"


def probe_processes(sandbox: Sandbox) -> tuple[bool, str]:
    limit = sandbox.limits.max_processes
    record = _run(
        sandbox,
        f"""
        import os, time
        started = 0
        for _ in range({4 * limit}):
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                started += 1
            except OSError:
                break
        print(started, len([p for p in os.listdir("/proc") if p.isdigit()]))
        """,
        timeout=10,
    )
    parts = record.stdout.split()
    ok = bool(parts) and int(parts[0]) < limit
    return ok, f"fork bomb started {parts[0] if parts else '?'} of {4 * limit} tries (limit {limit})"


def probe_memory(sandbox: Sandbox) -> tuple[bool, str]:
    size = (sandbox.limits.memory_mb + 64) * 1024 * 1024
    record = _run(sandbox, f"x = bytearray({size}); print('allocated')")
    ok = "MemoryError" in record.stderr and "allocated" not in record.stdout
    return ok, f"one process asking for {size >> 20} MiB: {'MemoryError' if ok else record.stdout.strip()}"


def probe_total_memory(sandbox: Sandbox) -> tuple[bool, str]:
    if sandbox.isolation.cgroups is None:
        return False, "no memory cgroup: the total is bounded only by processes x per-process limit"
    share = int(sandbox.limits.memory_mb * 0.6) * 1024 * 1024
    record = _run(
        sandbox,
        f"""
        import os, time
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                block = bytearray({share})
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(0.5)  # hold it while the others fill theirs
                os._exit(0)
            children.append(pid)
        print(sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -9 for pid in children))
        """,
        timeout=20,
    )
    killed = record.stdout.strip()
    ok = killed.isdigit() and int(killed) > 0
    return ok, f"3 processes x {share >> 20} MiB: {killed or '?'} killed by the run's memory cap"


def probe_leftovers(sandbox: Sandbox) -> tuple[bool, str]:
    record = _run(
        sandbox,
        f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", {LEFTOVER_MARKER!r}])
            os._exit(0)
        print("daemon started")
        """,
    )
    time.sleep(0.2)
    left = _processes_with_marker(LEFTOVER_MARKER)
    return record.status == FINISHED and not left, f"setsid + double fork daemon alive after the run: {len(left)}"


def probe_state(sandbox: Sandbox) -> tuple[bool, str]:
    _run(sandbox, "open('/tmp/state', 'w').write('1'); open('/dev/shm/state', 'w').write('1')")
    record = _run(sandbox, "import os; print(os.path.exists('/tmp/state') or os.path.exists('/dev/shm/state'))")
    return record.stdout.strip() == "False", f"a file of the previous run visible: {record.stdout.strip()}"


def probe_kill_parent(sandbox: Sandbox) -> tuple[bool, str]:
    record = _run(
        sandbox,
        """
        import os, signal
        refused = 0
        for pid in {os.getppid(), 1}:
            try:
                os.kill(pid, signal.SIGKILL)
            except PermissionError:
                refused += 1
        print("refused", refused)
        """,
    )
    after = _run(sandbox, "print('alive')")
    ok = record.stdout.startswith("refused") and after.stdout == "alive\n"
    return ok, f"killing its parent / PID 1: {record.stdout.strip() or record.stderr[-60:]}; next run ok: {ok}"


def probe_syscalls(sandbox: Sandbox) -> tuple[bool, str]:
    record = _run(
        sandbox,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        allowed = []
        if libc.unshare(0x10000000) == 0:
            allowed.append("unshare(CLONE_NEWUSER)")
        if libc.syscall(250 if os.uname().machine == "x86_64" else 219, 0, -3, 0, 0, 0) >= 0:
            allowed.append("keyctl")
        print(allowed)
        """,
    )
    ok = record.stdout.strip() == "[]"
    detail = "seccomp filter " + ("on" if sandbox.isolation.seccomp else "off")
    return ok, f"{detail}; allowed: {record.stdout.strip() or record.stderr[-80:]}"


def probe_time_limit(sandbox: Sandbox) -> tuple[bool, str]:
    start = time.monotonic()
    record = _run(sandbox, "while True: pass", timeout=1.0)
    took = time.monotonic() - start
    return record.status == TIME_LIMIT_EXCEEDED and took < 3.0, f"busy loop, 1 s limit: {record.status} in {took:.1f} s"


def probe_output(sandbox: Sandbox) -> tuple[bool, str]:
    cap = sandbox.limits.output_bytes
    record = _run(sandbox, f"import sys\nfor _ in range({4 * cap // 65536 + 1}): sys.stdout.write('x' * 65536)")
    ok = len(record.stdout) == cap and record.stdout_truncated
    return ok, f"{4 * cap >> 20} MiB printed, {len(record.stdout)} bytes kept (cap {cap})"


PROBES: tuple[tuple[str, Callable[[Sandbox], tuple[bool, str]]], ...] = (
    ("runs Python", probe_python),
    ("no network", probe_network),
    ("host files invisible", probe_host_files),
    ("read-only outside /tmp", probe_writes),
    ("clean environment", probe_environment),
    ("unprivileged identity", probe_identity),
    ("process limit", probe_processes),
    ("memory per process", probe_memory),
    ("memory per run", probe_total_memory),
    ("no leftover processes", probe_leftovers),
    ("no state between runs", probe_state),
    ("cannot kill its keeper", probe_kill_parent),
    ("risky system calls refused", probe_syscalls),
    ("wall-clock limit", probe_time_limit),
    ("output capped", probe_output),
)


def run_checks(sandbox: Sandbox) -> list[CheckResult]:
    """Run every probe once, in order; a probe that raises counts as failed.

    Refuses an unsafe (``--unsafe-no-isolation``) sandbox: the probes would hit the host.
    """
    if sandbox.isolation.unsafe:
        raise ValueError("the probes are hostile code: they only run in an isolated sandbox")
    results = []
    for name, probe in PROBES:
        start = time.monotonic()
        try:
            ok, detail = probe(sandbox)
        except Exception as err:
            ok, detail = False, f"probe error: {type(err).__name__}: {err}"
        results.append(CheckResult(name, ok, detail, time.monotonic() - start))
    return results


def format_report(sandbox: Sandbox, results: list[CheckResult]) -> str:
    """The one-screen report: how runs are contained, one line per probe, and what is not isolated."""
    iso = sandbox.isolation
    limits = sandbox.limits
    who = f"uid {limits.uid_base}+slot" if iso.slot_uids else "the server's own uid (not root: no per-slot uid)"
    lines = [
        "spo sandbox check",
        f"  isolation: {'bwrap ' + iso.bwrap if iso.bwrap else 'NONE (--unsafe-no-isolation)'}",
        f"  seccomp: {'on' if iso.seccomp else 'off'}; cgroups: {iso.cgroups or 'none (rlimits only)'}",
        f"  code runs as {who}",
        f"  limits: {limits.workers} workers, <= {limits.max_run_timeout_s:g} s, {limits.memory_mb} MiB/process, "
        f"{limits.max_processes} processes, {limits.tmpfs_mb} MiB tmpfs, {limits.output_bytes} B output/stream",
        "",
    ]
    width = max(len(r.name) for r in results)
    for r in results:
        lines.append(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}  ({r.seconds:.1f} s)")
    passed = sum(r.ok for r in results)
    lines += ["", f"  {passed}/{len(results)} checks passed", "  not isolated, by design:"]
    lines += [f"    - {item}" for item in NOT_ISOLATED]
    return "\n".join(lines)
