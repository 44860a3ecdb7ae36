"""Errors a user can fix, and the one way every entry point reports them: one line on stderr, exit code 2.

``spo`` (``cli.main``), ``python -m spo_helpers.stages.notebooks``, ``python -m spo_helpers.sandbox.service``,
the Hydra app (``python -m spo_helpers.verl_glue.main``) and ``python -m spo_helpers.verl_glue.rollout_check``
catch ``USER_ERRORS`` and call ``report_error``: ``<prog>: error: <message on one line>``.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input or configuration, with a message that names the file and the fix."""


class MissingData(UserError):
    """An input a loader or a figure needs is absent (the message names the file)."""


USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
"""What an entry point reports as one line: the kit's errors, and a path that is missing, of the wrong kind or
not readable (the operating system's message names it)."""

USAGE_EXIT_CODE = 2


def error_line(err: BaseException) -> str:
    """The error's message on one line, even when it quotes a multi-line error (Hydra's override errors)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def report_error(prog: str, err: BaseException, exit_code: int = USAGE_EXIT_CODE) -> int:
    """Print ``<prog>: error: <message on one line>`` to stderr and return ``exit_code`` (2 unless told)."""
    print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
    return exit_code
