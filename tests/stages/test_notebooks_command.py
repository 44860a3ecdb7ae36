"""``spo notebooks``: users explore copies; the templates that ``spo pipeline`` runs stay as committed."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from spo_helpers import notebook as N
from spo_helpers.errors import UserError
from spo_helpers.formats import notebook_templates as T
from spo_helpers.stages import notebooks as C

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def templates(tmp_path):
    """A project folder with clean copies of the real templates in notebooks/."""
    folder = tmp_path / "project" / "notebooks"
    folder.mkdir(parents=True)
    for name in T.template_names():
        (folder / name).write_bytes((T.packaged_notebooks() / name).read_bytes())
    return folder


def session_saved(path: Path) -> None:
    """What JupyterLab leaves after Run All and an autosave: outputs, execution counts, widget state."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, path)


def test_the_committed_templates_are_clean():
    assert T.template_problems() == []
    assert C.main(["--check"]) == 0


def test_copies_are_made_once_and_kept(templates, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "install_lab_settings", lambda: None)
    dest = tmp_path / "mine"
    report = C.copy_templates(dest, templates=templates)
    assert report.copied == T.template_names() and not report.kept
    (dest / "04_train.ipynb").write_text("my edits")
    again = C.copy_templates(dest, templates=templates)
    assert again.kept == T.template_names() and (dest / "04_train.ipynb").read_text() == "my edits"
    C.copy_templates(dest, force=True, templates=templates)
    assert (dest / "04_train.ipynb").read_bytes() == (templates / "04_train.ipynb").read_bytes()
    with pytest.raises(UserError, match="is the templates folder"):
        C.copy_templates(templates, templates=templates)


def test_a_template_saved_by_a_session_is_found(templates):
    session_saved(templates / "04_train.ipynb")
    (problem,) = T.template_problems(templates)
    assert "04_train.ipynb: 1 cell(s) with outputs, 1 execution count(s), saved widget state" in problem


def test_check_fails_on_a_saved_template(templates, monkeypatch, capsys):
    session_saved(templates / "05_analysis.ipynb")
    monkeypatch.setattr(C, "packaged_notebooks", lambda: templates)
    assert C.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "05_analysis.ipynb" in err and "reinstall spo-helpers" in err  # no .git beside these templates


def test_a_kernel_in_the_templates_folder_gets_copies_and_links(templates, monkeypatch):
    monkeypatch.setattr(C, "install_lab_settings", lambda: None)
    text = C.template_warning(templates, templates=templates)
    copies = templates.parent / "runs" / "notebooks"
    assert sorted(p.name for p in copies.glob("*.ipynb")) == T.template_names()
    assert "[05_analysis.ipynb](../runs/notebooks/05_analysis.ipynb)" in text
    assert C.template_warning(copies, templates=templates) is None


def test_setup_notebook_warns_only_live_kernels_in_the_templates(templates, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    monkeypatch.setattr(C, "packaged_notebooks", lambda: templates)
    monkeypatch.setattr(C, "install_lab_settings", lambda: None)
    monkeypatch.setattr(N, "_show_kit_logs", lambda level: None)
    monkeypatch.setattr(N, "die_with_parent", lambda: None)
    monkeypatch.chdir(templates)
    monkeypatch.setenv(N.HEADLESS_ENV, "1")
    N.setup_notebook()
    assert shown == [] and not (templates.parent / "runs").exists()  # nbval and papermill: no copies, no note
    monkeypatch.chdir(templates)
    monkeypatch.delenv(N.HEADLESS_ENV)
    setup = N.setup_notebook()
    assert len(shown) == 1 and "one of the kit's templates" in shown[0]
    assert setup.cwd == templates.parent  # the project folder (no pyproject.toml here: the parent)


def test_copies_run_from_the_project_folder(tmp_path):
    copies = tmp_path / "project" / "runs" / "notebooks"
    assert N.project_folder(copies) == tmp_path / "project"  # a wheel install: no pyproject.toml above
    assert N.project_folder(REPOSITORY / "runs" / "notebooks") == REPOSITORY


def test_lab_settings(tmp_path):
    assert json.loads((REPOSITORY / "jupyter" / "spo-helpers.json").read_text()) == C.LAB_SETTINGS
    path = C.install_lab_settings(tmp_path)
    assert path == tmp_path / C.LAB_SETTINGS_FILE and json.loads(path.read_text()) == C.LAB_SETTINGS
    assert C.install_lab_settings(tmp_path) is None  # present: left alone
