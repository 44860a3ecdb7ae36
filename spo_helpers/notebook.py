"""The one setup call of the kit's notebooks, right after their parameters cell.

    from spo_helpers.notebook import setup_notebook

    setup_notebook()

It runs the notebook from the project folder (a kernel started in ``notebooks/``, or in the copies'
``runs/notebooks/``, moves up, so the parameters' relative paths such as ``runs/reference`` mean the same from
JupyterLab, nbval and papermill), draws figures inline, shows the kit's log messages as plain lines in the cell
output, silences the progress-bar warning of headless kernels, and widens pandas' tables. It can be run again
(nothing is added twice).

A live kernel started in the templates folder (JupyterLab opened one of the kit's templates, which ``spo
pipeline`` runs) gets the copies made (``spo notebooks``) and a note with links to them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from spo_helpers import cpu_threads
from spo_helpers.process_tree import die_with_parent

HEADLESS_ENV = "SPO_HEADLESS"
"""Set (not ``0``) by ``spo pipeline`` and ``make test-notebooks``: explorers draw static figures."""
NOTEBOOKS_FOLDER = "notebooks"
RUNS_FOLDER = "runs"
PROJECT_MARKER = "pyproject.toml"
_HANDLER_NAME = "spo_helpers.notebook"


@dataclass(frozen=True)
class NotebookSetup:
    """What the setup decided: the working folder and whether the kernel runs headless."""

    cwd: Path
    headless: bool
    log_level: str


def is_headless() -> bool:
    """Whether ``SPO_HEADLESS`` asks for static output (no one will move the widgets)."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def project_folder(start: Path) -> Path:
    """Where a notebook runs: ``start``, or for a ``notebooks/`` folder the nearest folder above it holding a
    ``pyproject.toml``; without one, the project of the copies' ``<project>/runs/notebooks`` or the parent."""
    if start.name != NOTEBOOKS_FOLDER:
        return start
    found = next((p for p in start.parents if (p / PROJECT_MARKER).is_file()), None)
    if found is not None:
        return found
    return start.parent.parent if start.parent.name == RUNS_FOLDER else start.parent


def _show_kit_logs(level: str) -> None:
    """INFO and above from the ``spo_helpers`` loggers as plain lines on stdout (the cell's output)."""
    root = logging.getLogger("spo_helpers")
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


def _warn_in_templates(start: Path) -> None:
    """In the templates folder: make the copies and show where they are (see the module docstring)."""
    from spo_helpers.errors import UserError
    from spo_helpers.stages.notebooks import template_warning

    try:
        text = template_warning(start)
    except (OSError, UserError) as err:  # a read-only install: say so, but run the notebook anyway
        text = f"**This notebook is one of the kit's templates**; the copies could not be made ({err})."
    if text is None:
        return
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(text))


def _inline_figures() -> None:
    """``%matplotlib inline`` in an IPython kernel; nothing elsewhere (a script keeps its backend)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def setup_notebook(display_width: int = 140) -> NotebookSetup:
    """Prepare a kit notebook's kernel; see the module docstring. ``SPO_LOG_LEVEL`` sets the log level."""
    start = Path.cwd()
    if not is_headless():
        _warn_in_templates(start)
    cwd = project_folder(start)
    if cwd != start:
        os.chdir(cwd)
    _inline_figures()
    die_with_parent()  # processes the kernel forks (data-loading pools) end with it
    level = os.environ.get("SPO_LOG_LEVEL", "INFO").upper()
    _show_kit_logs(level)
    cpu_threads.apply_unless_gpu()  # waiting threads sleep; before the notebook loads torch
    try:
        from tqdm import TqdmExperimentalWarning, TqdmWarning
    except ImportError:
        pass
    else:
        # tqdm.auto in a kernel without widget support warns once per bar; the bars still print as text.
        warnings.filterwarnings("ignore", category=TqdmWarning, message="IProgress not found")
        warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    import pandas as pd

    pd.set_option("display.width", display_width)
    return NotebookSetup(cwd=cwd, headless=is_headless(), log_level=level)
