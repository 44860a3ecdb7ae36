"""The one setup call of the kit's notebooks, right after their parameters cell.

    from spo_helpers.notebook import setup_notebook

    setup_notebook()

It runs the notebook from the project folder (a kernel started in ``notebooks/`` moves up, so the parameters'
relative paths such as ``runs/reference`` mean the same from JupyterLab, nbval and papermill), draws figures
inline, shows the kit's log messages as plain lines in the cell output, silences the progress-bar warning
of headless kernels, and widens pandas' tables. It can be run again (nothing is added twice).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from spo_helpers.process_tree import die_with_parent

HEADLESS_ENV = "SPO_HEADLESS"
"""Set (not ``0``) by ``spo pipeline`` and ``make test-notebooks``: explorers draw static figures."""
NOTEBOOKS_FOLDER = "notebooks"
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
    ``pyproject.toml`` (its parent when there is none)."""
    if start.name != NOTEBOOKS_FOLDER:
        return start
    return next((p for p in start.parents if (p / PROJECT_MARKER).is_file()), start.parent)


def _show_kit_logs(level: str) -> None:
    """INFO and above from the ``spo_helpers`` loggers as plain lines on stdout (the cell's output)."""
    root = logging.getLogger("spo_helpers")
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


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
    cwd = project_folder(Path.cwd())
    if cwd != Path.cwd():
        os.chdir(cwd)
    _inline_figures()
    die_with_parent()  # processes the kernel forks (data-loading pools) end with it
    level = os.environ.get("SPO_LOG_LEVEL", "INFO").upper()
    _show_kit_logs(level)
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
