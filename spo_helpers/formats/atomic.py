"""Atomic file writes (temporary file in the target folder, fsync, rename), checked reads and checksums.

A crash leaves either the previous file or the complete new one, never a half-written file under the final
name. The new file gets the permissions a plain ``open()`` would give it (``0o666`` less the umask), not the
``0o600`` of a temporary file. A write that fails for lack of space or permission, and a read of a file that
is not UTF-8, raise ``UserError`` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from spo_helpers.errors import UserError

_WRITE_FIXES = {
    errno.ENOSPC: "free disk space or write elsewhere",
    errno.EDQUOT: "free space in your quota or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "no permission: write elsewhere or fix the folder's permissions",
    errno.EPERM: "no permission: write elsewhere or fix the folder's permissions",
}


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; else set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on clean exit it replaces ``path`` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise _write_error(target, err) from err
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(err, OSError) and err.errno in _WRITE_FIXES:
            raise _write_error(target, err) from err
        raise


def _write_error(target: Path, err: OSError) -> Exception:
    fix = _WRITE_FIXES.get(err.errno)
    if fix is None:
        return err
    return UserError(f"{target}: could not write ({os.strerror(err.errno)}); {fix}. The previous file is unchanged")


def read_utf8(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file; invalid bytes raise ``UserError`` naming the file and the byte offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text (invalid byte at offset {err.start}); re-save the file as UTF-8"
        ) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    """Write ``obj`` as strict JSON (NaN and infinity are refused)."""
    text = json.dumps(obj, ensure_ascii=False, indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
