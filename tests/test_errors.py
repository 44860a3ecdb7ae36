"""The one-line error rule: ``<prog>: error: <message on one line>``, exit code 2, written once in ``errors``."""

from __future__ import annotations

from pathlib import Path

import pytest

from spo_helpers.errors import USER_ERRORS, MissingData, UserError, error_line, report_error

PACKAGE = Path(__file__).resolve().parents[1] / "spo_helpers"


def test_a_multi_line_message_is_one_line():
    err = UserError("Could not override 'x'.\n  To append to your config use +x=1\n\nKey 'x' is not in struct")
    assert error_line(err) == "Could not override 'x'. To append to your config use +x=1 Key 'x' is not in struct"


def test_report_prints_one_line_and_returns_2(capsys):
    assert report_error("spo split", FileNotFoundError("no such file: data.parquet\n")) == 2
    assert capsys.readouterr().err == "spo split: error: no such file: data.parquet\n"
    assert report_error("spo pipeline", RuntimeError("stage failed"), exit_code=1) == 1


@pytest.mark.parametrize("kind", [UserError, MissingData, FileNotFoundError, NotADirectoryError, PermissionError])
def test_the_user_errors(kind):
    assert issubclass(kind, USER_ERRORS)


def test_only_errors_spells_the_line():
    """Every entry point reports through ``report_error``; none writes the ``: error: `` line itself."""
    spelled = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "errors.py" and ": error: {" in path.read_text(encoding="utf-8")
    ]
    assert spelled == []


def test_the_entry_points_report_a_missing_path(capsys, monkeypatch, tmp_path):
    from spo_helpers.stages import notebooks

    def missing(args):
        raise FileNotFoundError(f"{tmp_path / 'nothing'}: no such folder")

    monkeypatch.setattr(notebooks, "run", missing)
    assert notebooks.main([]) == 2
    assert capsys.readouterr().err == f"spo notebooks: error: {tmp_path / 'nothing'}: no such folder\n"
