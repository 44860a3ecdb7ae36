"""``spo notebooks``: the notebooks to explore in JupyterLab are copies of the kit's templates.

The templates (``notebooks/`` in a checkout, the ``spo_helpers.notebooks`` package data of a wheel) are what
``spo pipeline`` runs. JupyterLab saves outputs and edited parameters into the file it has open, so exploring
a template would change the next pipeline run; the copies are yours to run, edit and save. In the default
folder, ``runs/notebooks/``, the copies sit beside what their default parameters write (``splits/``, ``spo/``,
``offline_values.json``), they run from the project folder as the templates do, and git ignores them.

Three guards keep the templates as they are: a kernel started in the templates folder (JupyterLab opening a
template) makes the copies and says so, with links; ``spo pipeline`` refuses templates a JupyterLab session
saved (outputs, execution counts, widget state) and says how to restore them; ``--check`` (and the test
suite) fail on such templates, so none is committed.

The command also installs the kit's JupyterLab defaults into this environment when they are missing
(``share/jupyter/lab/settings/overrides.d/spo-helpers.json``: save widget state, so a reopened notebook shows
each explorer's last view); a wheel installs them itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from spo_helpers.errors import USER_ERRORS, UserError, report_error
from spo_helpers.formats.notebook_templates import packaged_notebooks, restore_hint, template_names, template_problems

logger = logging.getLogger(__name__)

DEFAULT_DEST = Path("runs") / "notebooks"
LAB_SETTINGS = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}
"""The kit's JupyterLab defaults, as ``jupyter/spo-helpers.json`` holds them."""
LAB_SETTINGS_FILE = Path("share") / "jupyter" / "lab" / "settings" / "overrides.d" / "spo-helpers.json"


@dataclass
class CopyReport:
    dest: Path
    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    settings: Path | None = None  # the JupyterLab defaults, when this call installed them


def copy_templates(dest: str | os.PathLike | None = None, force: bool = False, templates: Path | None = None):
    """Copy the templates into ``dest`` (default ``runs/notebooks``); copies already there are kept unless
    ``force``. Refuses to copy into the templates folder itself."""
    source = Path(templates) if templates is not None else packaged_notebooks()
    dest = Path(dest) if dest is not None else DEFAULT_DEST
    if dest.resolve() == source.resolve():
        raise UserError(f"{dest} is the templates folder; choose another folder for the copies")
    dest.mkdir(parents=True, exist_ok=True)
    report = CopyReport(dest=dest)
    for name in template_names():
        target = dest / name
        if target.exists() and not force:
            report.kept.append(name)
            continue
        shutil.copyfile(source / name, target)
        report.copied.append(name)
    report.settings = install_lab_settings()
    return report


def lab_settings_path(prefix: str | os.PathLike = sys.prefix) -> Path:
    return Path(prefix) / LAB_SETTINGS_FILE


def install_lab_settings(prefix: str | os.PathLike = sys.prefix) -> Path | None:
    """Write the kit's JupyterLab defaults into ``prefix`` when they are missing; the path when written."""
    path = lab_settings_path(prefix)
    if path.is_file():
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(LAB_SETTINGS, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        logger.warning("could not install the kit's JupyterLab defaults into %s: %s", path, err)
        return None
    return path


def template_warning(cwd: Path, templates: Path | None = None) -> str | None:
    """Markdown for a kernel started in the templates folder (``cwd``): the copies (made when missing) and links
    to them; None elsewhere."""
    templates = Path(templates) if templates is not None else packaged_notebooks()
    if not templates.is_dir() or cwd.resolve() != templates.resolve():
        return None
    project = templates.parent
    report = copy_templates(project / DEFAULT_DEST, templates=templates)
    links = ", ".join(f"[{name}]({os.path.relpath(report.dest / name, templates)})" for name in template_names())
    return (
        f"**This notebook is one of the kit's templates** (`{templates}`): JupyterLab saves its outputs and "
        "edits into it, and `spo pipeline` runs what is saved there. Explore your copies instead, in "
        f"`{project / DEFAULT_DEST}` (made by `spo notebooks`): {links}. Close this one without saving."
    )


# ---------------------------------------------------------------------------------------------- command line
USAGE = """\
  spo notebooks                          # into runs/notebooks/ (existing copies kept)
  spo notebooks DIR --force              # fresh copies over older ones
  spo notebooks --check                  # the templates hold nothing a notebook session saved
  jupyter lab runs/notebooks

Details: README.md (In JupyterLab)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dest", metavar="DIR", nargs="?", default=None, help=f"folder for the copies (default {DEFAULT_DEST})"
    )
    parser.add_argument("--force", action="store_true", help="replace copies that exist (your edits are lost)")
    parser.add_argument(
        "--check", action="store_true", help="only check that the templates hold no outputs or widget state"
    )


def run(args: argparse.Namespace) -> int:
    if args.check:
        templates = packaged_notebooks()
        problems = template_problems(templates)
        if problems:
            print("notebook templates saved from a session:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            print(f"  {restore_hint(templates)}", file=sys.stderr)
            return 1
        print(f"notebook templates clean: {templates}")
        return 0
    report = copy_templates(args.dest, force=args.force)
    if report.copied:
        print(f"copied into {report.dest}: {', '.join(report.copied)}")
    if report.kept:
        print(f"kept (yours; --force replaces them): {', '.join(report.kept)}")
    if report.settings is not None:
        print(f"installed the kit's JupyterLab defaults: {report.settings}")
    print(f"open them in JupyterLab: jupyter lab {report.dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spo notebooks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except USER_ERRORS as err:
        return report_error("spo notebooks", err)


if __name__ == "__main__":
    sys.exit(main())
