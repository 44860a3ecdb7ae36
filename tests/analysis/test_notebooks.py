"""The notebook templates (a parameters cell, one setup call, the CLI's backend choice, no outputs) and
spo_helpers.notebook, their setup helper."""

from __future__ import annotations

import ast
import json
import logging

import pandas as pd
import pytest

from spo_helpers import notebook as N
from spo_helpers.formats.notebook_templates import STAGES, notebooks_dir, saved_state

SETUP_CELL = "from spo_helpers.notebook import setup_notebook\n\nsetup_notebook()"


def notebook_cells(name: str) -> list[dict]:
    cells = json.loads((notebooks_dir() / name).read_text(encoding="utf-8"))["cells"]
    return [cell | {"text": "".join(cell["source"])} for cell in cells]


def notebook_code(name: str) -> str:
    """The notebook's code cells as one module (IPython magics left out)."""
    lines = []
    for cell in notebook_cells(name):
        if cell["cell_type"] == "code":
            lines.extend(line for line in cell["text"].splitlines() if not line.lstrip().startswith(("%", "!")))
    return "\n".join(lines)


NOTEBOOKS = [f"{stage}.ipynb" for stage in STAGES]


# ------------------------------------------------------------------------------------------ the templates
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_then_one_setup_call(name):
    code = [cell for cell in notebook_cells(name) if cell["cell_type"] == "code"]
    assert code[0]["metadata"].get("tags") == ["parameters"]
    assert code[1]["text"] == SETUP_CELL
    for cell in code[2:]:
        for repeated in ("%matplotlib", "os.chdir", "pd.set_option", "setup_notebook", "warnings.", "logging."):
            assert repeated not in cell["text"], (name, repeated)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    for cell in notebook_cells(name):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, name
    assert saved_state(notebooks_dir() / name) == [], name  # the rule spo pipeline and spo notebooks --check apply


@pytest.mark.parametrize(
    ("name", "settings", "stage"),
    [("02_estimate.ipynb", "EstimateSettings", "run_estimation"), ("04_train.ipynb", "TrainSettings", "run_training")],
)
def test_parameters_checked_as_the_cli_checks_its_flags(name, settings, stage):
    """The verl notebooks turn their parameters into the verb's settings once (``check_parameters``: the flags'
    choices and types, backend and preset chosen as the command chooses them) and run the stage with them."""
    tree = ast.parse(notebook_code(name))
    checks = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and _name(node.value.func) == "check_parameters"
    ]
    assert len(checks) == 1
    (assign,) = checks
    assert [ast.unparse(t) for t in assign.targets] == ["settings"]
    assert [ast.unparse(a) for a in assign.value.args] == [settings, "globals()"]
    runs = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and _name(node.func) == stage]
    assert runs and all("settings" in ast.unparse(node) for node in runs)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"gpu_available", "resolve_backend"}


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


# ------------------------------------------------------------------------------------------ setup_notebook
@pytest.fixture
def kit_logger():
    logger = logging.getLogger("spo_helpers")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    pd.reset_option("display.width")


def test_setup_moves_a_notebooks_kernel_to_the_project_folder(tmp_path, monkeypatch, kit_logger):
    (tmp_path / "pyproject.toml").write_text("")
    folder = tmp_path / "spo_helpers" / "notebooks"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    monkeypatch.setenv(N.HEADLESS_ENV, "1")
    setup = N.setup_notebook()
    assert setup.cwd == tmp_path and N.Path.cwd() == tmp_path and setup.headless
    assert pd.get_option("display.width") == 140


def test_project_folder():
    assert N.project_folder(N.Path("/somewhere/else")) == N.Path("/somewhere/else")
    assert N.project_folder(N.Path("/no/project/notebooks")) == N.Path("/no/project")


def test_setup_shows_the_kits_log_lines_once(tmp_path, monkeypatch, capsys, kit_logger):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(N.HEADLESS_ENV, raising=False)
    assert not N.setup_notebook().headless
    N.setup_notebook()
    logging.getLogger("spo_helpers.analysis.plots").info("learning curves vs step: no val pass@n")
    logging.getLogger("spo_helpers.analysis.plots").debug("not shown at INFO")
    assert capsys.readouterr().out == "learning curves vs step: no val pass@n\n"
