"""A small seccomp filter for sandboxed code, as the classic-BPF program bubblewrap's ``--seccomp FD`` loads.

It refuses (EPERM) the system calls that would let code reach past its namespaces or keep
state between runs: new namespaces (``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*``
flag), mounts, kernel keyrings (per uid, so they would outlive a run), ``ptrace`` and
cross-process memory access, BPF, perf events, userfaultfd, io_uring, module and kexec loading.
``clone3`` answers ENOSYS (its flags sit in memory a filter cannot read; the C library then
falls back to ``clone``). System calls of another ABI (i386 or x32 on x86-64) are refused.
Everything else is allowed: this narrows the kernel surface, it is not an allow-list.
Supported: x86-64 and aarch64; elsewhere ``filter_program`` returns None and runs go without it.
"""

from __future__ import annotations

import errno
import platform
import struct

# Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000

_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data (arg0, low word on little-endian)
_CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
_X32_BIT = 0x40000000

_DENIED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "keyctl", "add_key", "request_key",
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog", "personality",
)  # fmt: skip

# (AUDIT_ARCH, syscall numbers): asm/unistd_64.h for x86-64, asm-generic/unistd.h for aarch64.
_TABLES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "clone": 56, "clone3": 435, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
            "pivot_root": 155, "chroot": 161, "keyctl": 250, "add_key": 248, "request_key": 249, "ptrace": 101,
            "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321, "perf_event_open": 298,
            "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
            "delete_module": 176, "open_by_handle_at": 304, "name_to_handle_at": 303, "open_tree": 428,
            "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
            "mount_setattr": 442, "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "quotactl": 179,
            "syslog": 103, "personality": 135,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "clone": 220, "clone3": 435, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
            "pivot_root": 41, "chroot": 51, "keyctl": 219, "add_key": 217, "request_key": 218, "ptrace": 117,
            "process_vm_readv": 270, "process_vm_writev": 271, "bpf": 280, "perf_event_open": 241,
            "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "open_by_handle_at": 265, "name_to_handle_at": 264, "open_tree": 428,
            "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
            "mount_setattr": 442, "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89, "quotactl": 60,
            "syslog": 116, "personality": 92,
        },
    ),
}  # fmt: skip


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_program(machine: str | None = None) -> bytes | None:
    """The filter as bytes (an array of ``struct sock_filter``), or None on an unsupported machine.

    Layout: check the ABI, load the syscall number, one ``jeq nr -> ret EPERM`` pair per denied
    call, ``clone3 -> ENOSYS``, then ``clone`` with any ``CLONE_NEW*`` flag in its first argument
    -> EPERM, else allow.
    """
    machine = machine or platform.machine()
    if machine not in _TABLES:
        return None
    arch, numbers = _TABLES[machine]
    eperm, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    program = [
        _insn(_LD_W_ABS, _OFFSET_ARCH),
        _insn(_JEQ_K, arch, jt=1, jf=0),
        _insn(_RET_K, eperm),
        _insn(_LD_W_ABS, _OFFSET_NR),
    ]
    if machine == "x86_64":
        program += [_insn(_JGE_K, _X32_BIT, jt=0, jf=1), _insn(_RET_K, eperm)]
    for name in _DENIED:
        program += [_insn(_JEQ_K, numbers[name], jt=0, jf=1), _insn(_RET_K, eperm)]
    program += [_insn(_JEQ_K, numbers["clone3"], jt=0, jf=1), _insn(_RET_K, enosys)]
    program += [
        _insn(_JEQ_K, numbers["clone"], jt=0, jf=4),
        _insn(_LD_W_ABS, _OFFSET_ARG0),
        _insn(_JSET_K, _CLONE_NEW_FLAGS, jt=0, jf=1),
        _insn(_RET_K, eperm),
        _insn(_RET_K, _ALLOW),
        _insn(_RET_K, _ALLOW),
    ]
    return b"".join(program)


def denied_calls() -> tuple[str, ...]:
    """Names of the system calls the filter refuses (besides ``clone3`` and namespace-creating ``clone``)."""
    return _DENIED
