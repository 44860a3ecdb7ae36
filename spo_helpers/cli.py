"""The ``spo`` command: one subcommand per module of ``spo_helpers/stages/``.

Each verb lives in its own module, which provides ``add_arguments(parser)``,
``run(args) -> int`` and ``USAGE`` (plain-text examples that ``spo <verb> --help`` shows under
the verb's line from ``VERBS``); modules are imported only when their subcommand runs, so
``spo --help`` stays fast. Errors the user can fix (bad input, wrong paths) are
raised as ``UserError`` or a missing or unreadable path, and printed as one line, exit code 2
(``errors.report_error``).
Every long flag takes both spellings (``--output_dir`` / ``--output-dir``). Library
code reports through ``logging``; the command shows INFO and above on stderr
(``SPO_LOG_LEVEL=DEBUG`` for more).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from spo_helpers import cpu_threads
from spo_helpers.cli_options import StageHelpFormatter, StageParser
from spo_helpers.errors import USER_ERRORS, report_error
from spo_helpers.process_tree import die_with_parent
from spo_helpers.stages import VERBS, stage_module


def build_parser() -> argparse.ArgumentParser:
    from spo_helpers import __version__

    parser = argparse.ArgumentParser(prog="spo", description="SPO reproduction kit")
    parser.add_argument("--version", action="version", version=f"spo-helpers {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, summary in VERBS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def configure_logging() -> None:
    """INFO and above from the kit's loggers to stderr, as plain lines (no-op when logging is already set up)."""
    level = os.environ.get("SPO_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger("spo_helpers")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") or argv[0] not in VERBS:
        parser.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    summary = VERBS[name]
    module = importlib.import_module(stage_module(name))
    stage_parser = StageParser(
        prog=f"spo {name}", description=f"{summary}\n\n{module.USAGE}", formatter_class=StageHelpFormatter
    )
    module.add_arguments(stage_parser)
    args = stage_parser.parse_stage_args(rest)  # Hydra overrides before, between or after the options
    configure_logging()
    cpu_threads.apply_unless_gpu(on_cpu=cpu_threads.stage_runs_on_cpu(args))  # before torch loads
    die_with_parent()
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as err:
        return report_error(f"spo {name}", err)


if __name__ == "__main__":
    sys.exit(main())
