"""The notebook templates: one per pipeline stage, where they are, and whether a notebook session saved into one.

The templates (``notebooks/`` in a checkout, the data-only package ``spo_helpers.notebooks`` of a wheel) are what
``spo pipeline`` runs and what ``spo notebooks`` copies for users to explore. JupyterLab saves outputs, execution
counts and widget state into the file it has open; a template holding any of them would change the next pipeline
run, so both commands check for them here.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

from spo_helpers.errors import UserError

STAGES = ("01_split", "02_estimate", "03_merge", "04_train", "05_analysis")
"""The pipeline's stages, in order; stage ``s`` runs the template ``s.ipynb``."""

NOTEBOOKS_PACKAGE = "spo_helpers.notebooks"
NOTEBOOKS_ENV = "SPO_NOTEBOOKS"
"""A folder of templates to run instead of the packaged ones."""


def template_names() -> list[str]:
    return [f"{stage}.ipynb" for stage in STAGES]


def packaged_notebooks() -> Path:
    """The notebook templates installed with the package (``spo_helpers.notebooks``, a data-only package).

    In an editable install or a bare checkout the package is the source tree, where the templates are the
    repository's ``notebooks/`` (setuptools' editable finder cannot map a data-only subpackage elsewhere).
    """
    try:
        # A data-only package is a namespace package: join a file name to get a real path.
        return Path(str(files(NOTEBOOKS_PACKAGE) / f"{STAGES[0]}.ipynb")).parent
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "notebooks"


def notebooks_dir() -> Path:
    """``$SPO_NOTEBOOKS`` when set, else the packaged templates."""
    env = os.environ.get(NOTEBOOKS_ENV)
    folder = Path(env) if env else packaged_notebooks()
    if not (folder / f"{STAGES[0]}.ipynb").is_file():
        raise UserError(
            f"pipeline notebooks not found in {folder} (set {NOTEBOOKS_ENV} to a folder holding "
            f"{STAGES[0]}.ipynb ... {STAGES[-1]}.ipynb, or reinstall spo-helpers)"
        )
    return folder


def saved_state(path: Path) -> list[str]:
    """What a JupyterLab session left in the notebook ``path``: cells with outputs or execution counts, widget
    state in its metadata. Empty for a clean template."""
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"unreadable ({err})"]
    cells = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    found = []
    with_outputs = sum(bool(c.get("outputs")) for c in cells)
    if with_outputs:
        found.append(f"{with_outputs} cell(s) with outputs")
    counted = sum(c.get("execution_count") is not None for c in cells)
    if counted:
        found.append(f"{counted} execution count(s)")
    if notebook.get("metadata", {}).get("widgets"):
        found.append("saved widget state")
    return found


def template_problems(folder: Path | None = None) -> list[str]:
    """One line per template in ``folder`` (default: the packaged templates) that a session saved into."""
    folder = Path(folder) if folder is not None else packaged_notebooks()
    problems = []
    for name in template_names():
        if not (folder / name).exists():
            continue  # a missing template is the pipeline's error, named when its stage runs
        found = saved_state(folder / name)
        if found:
            problems.append(f"{folder / name}: {', '.join(found)}")
    return problems


def restore_hint(folder: Path) -> str:
    """How to get clean templates back: git in a checkout, a reinstall otherwise."""
    if (folder.parent / ".git").exists():
        return f"restore them with `git checkout -- {folder.name}/` (or clear their outputs and widget state)"
    return "reinstall spo-helpers (or clear their outputs and widget state)"
