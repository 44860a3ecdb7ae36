"""Atomic writes: the permissions of a plain open(), failures that name the file, checked UTF-8 reads."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from spo_helpers.errors import UserError
from spo_helpers.formats import atomic
from spo_helpers.formats.atomic import atomic_write_text, current_umask, read_utf8


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_follow_the_umask_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write_text(tmp_path / "a.json", "{}\n")
        plain = tmp_path / "plain.json"
        plain.write_text("{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, code):
    path = atomic_write_text(tmp_path / "values.json", "old\n")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(UserError, match=rf"{path}: could not write \({os.strerror(code)}\)"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["values.json"]  # no temporary file left


def test_other_errors_pass_through(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_text(tmp_path / "x", "y")


def test_read_utf8_names_the_file_and_offset(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"caf\xe9": 1}')
    with pytest.raises(UserError, match=r"latin1.json: not UTF-8 text \(invalid byte at offset 5\)"):
        read_utf8(path)
    path.write_text('{"café": 1}', encoding="utf-8")
    assert read_utf8(path) == '{"café": 1}'
