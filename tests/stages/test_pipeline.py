"""``spo pipeline``: failing cells, skip logic and the config file, with tiny stand-in notebooks; the parameters it
hands each committed template against that template's parameters cell."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("papermill")

import nbformat  # papermill depends on it

from spo_helpers.cli import main
from spo_helpers.errors import UserError
from spo_helpers.formats.layout import PIPELINE_RECORD
from spo_helpers.formats.notebook_templates import STAGES, notebooks_dir
from spo_helpers.stages.pipeline import (
    PipelineConfig,
    PipelineStageFailed,
    kernel_arguments,
    load_config_file,
    run_pipeline,
    stage_outputs,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "notebooks"
"""The committed notebook templates."""

# Each stand-in writes the files that mark its stage as finished and appends a line to calls.log.
SPLIT = """
import json, pathlib
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "split_manifest.json").write_text(json.dumps({"num_subsets": num_subsets, "seed": seed}))
with open(out.parent / "calls.log", "a") as log:
    log.write("01_split\\n")
"""
ESTIMATE = """
import json, pathlib
root = pathlib.Path(output_dir)
subsets = json.loads((pathlib.Path(data_dir) / "split_manifest.json").read_text())["num_subsets"]
for i in range(subsets):
    dump = root / "spo" / f"offline_value_estimation_subset_{i}" / "validation_data" / "0.jsonl"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text(json.dumps({"n_val": n_val}) + "\\n")
with open(root / "calls.log", "a") as log:
    log.write(f"02_estimate force={force}\\n")
if n_val == 3:
    raise RuntimeError("estimation crashed after writing its dumps")
"""
PARAMETERS = {
    "01_split": "dataset = None\noutput_dir = ''\nnum_subsets = 1\nseed = 0\nassets = None",
    "02_estimate": "data_dir = ''\noutput_dir = ''\nmodel_path = None\nn_val = 8\nbackend = 'cpu'\n"
    "preset = 'cpu'\nseed = 0\nassets = None\nforce = False",
}


def write_notebook(path, parameters, *cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_split.ipynb", PARAMETERS["01_split"], SPLIT)
    write_notebook(folder / "02_estimate.ipynb", PARAMETERS["02_estimate"], ESTIMATE)
    monkeypatch.setenv("SPO_NOTEBOOKS", str(folder))
    monkeypatch.setenv("SPO_HEADLESS", "0")  # run_pipeline sets it; monkeypatch restores it
    return folder


def calls(cfg):
    path = cfg.root / "calls.log"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_failing_cell_stops_the_pipeline_with_stage_cell_and_error(notebooks, tmp_path, capsys):
    write_notebook(notebooks / "02_estimate.ipynb", "", "x = 1", "raise ValueError('no dumps today')", "y = 2")
    argv = ["pipeline", "--name", "fail", "--runs_dir", str(tmp_path / "runs"), "--stages", "01_split", "02_estimate"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    executed = nbformat.read(tmp_path / "runs" / "fail" / "notebooks" / "02_estimate.ipynb", as_version=4)
    failed = [c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "raise ValueError" in failed[0].source
    assert err[0].startswith("spo pipeline: error: stage 02_estimate failed in cell ")
    assert f"cell [{failed[0].execution_count}]" in err[0]
    assert "02_estimate.ipynb" in err[0] and "ValueError: no dumps today" in err[0]
    record = json.loads((tmp_path / "runs" / "fail" / PIPELINE_RECORD).read_text())
    assert "fingerprint" in record["01_split"] and "fingerprint" not in record["02_estimate"]


def test_run_pipeline_raises_stage_failed(notebooks, tmp_path):
    write_notebook(notebooks / "01_split.ipynb", "", "1 / 0")
    cfg = PipelineConfig(name="raise", runs_dir=str(tmp_path / "runs"))
    with pytest.raises(PipelineStageFailed, match=r"stage 01_split failed in cell \[\d+\] .*ZeroDivisionError"):
        run_pipeline(cfg, stages=("01_split",))


def test_skip_logic(notebooks, tmp_path):
    stages = ("01_split", "02_estimate")
    cfg = PipelineConfig(name="skip", runs_dir=str(tmp_path / "runs"), num_subsets=2, n_val=8)

    assert run_pipeline(cfg, stages=stages) == {"01_split": "ran", "02_estimate": "ran"}
    assert calls(cfg) == ["01_split", "02_estimate force=False"]
    assert all(p.exists() for s in stages for p in stage_outputs(cfg, s))

    assert run_pipeline(cfg, stages=stages) == {"01_split": "skipped", "02_estimate": "skipped"}
    assert calls(cfg) == []

    cfg.n_val = 4  # a parameter of stage 02 only
    assert run_pipeline(cfg, stages=stages) == {"01_split": "skipped", "02_estimate": "ran"}
    assert calls(cfg) == ["02_estimate force=True"]

    manifest = cfg.root / "splits" / "split_manifest.json"  # stage 02's input
    manifest.write_text(manifest.read_text().replace("}", ', "edited": true}'))
    assert run_pipeline(cfg, stages=stages) == {"01_split": "skipped", "02_estimate": "ran"}
    assert calls(cfg) == ["02_estimate force=True"]

    stage_outputs(cfg, "02_estimate")[1].unlink()  # an output went missing
    assert run_pipeline(cfg, stages=stages)["02_estimate"] == "ran"
    calls(cfg)

    cfg.num_subsets = 3  # stage 01's parameter changes its output, so stage 02 reruns as well
    assert run_pipeline(cfg, stages=stages) == {"01_split": "ran", "02_estimate": "ran"}
    assert len(stage_outputs(cfg, "02_estimate")) == 3 and all(p.exists() for p in stage_outputs(cfg, "02_estimate"))
    calls(cfg)

    assert run_pipeline(cfg, stages=stages, force=True) == {"01_split": "ran", "02_estimate": "ran"}
    assert calls(cfg) == ["01_split", "02_estimate force=True"]


def test_failed_rerun_is_not_skipped_afterwards(notebooks, tmp_path):
    """A rerun that fails after overwriting outputs must not leave the old stage record behind."""
    cfg = PipelineConfig(name="rerun", runs_dir=str(tmp_path / "runs"), num_subsets=1, n_val=8)
    stages = ("01_split", "02_estimate")
    run_pipeline(cfg, stages=stages)
    calls(cfg)
    cfg.n_val = 3  # the stand-in writes its dumps, then raises
    for fresh in (True, False):  # a second attempt with the same inputs resumes the first
        with pytest.raises(PipelineStageFailed, match="estimation crashed"):
            run_pipeline(cfg, stages=stages)
        assert calls(cfg) == [f"02_estimate force={fresh}"]
    dump = stage_outputs(cfg, "02_estimate")[0]
    assert json.loads(dump.read_text()) == {"n_val": 3}
    cfg.n_val = 8  # back to the parameters of the last successful run: the dumps on disk are not theirs
    assert run_pipeline(cfg, stages=stages) == {"01_split": "skipped", "02_estimate": "ran"}
    assert calls(cfg) == ["02_estimate force=True"]
    assert json.loads(dump.read_text()) == {"n_val": 8}
    assert run_pipeline(cfg, stages=stages)["02_estimate"] == "skipped"


def parameters_cell_names(notebook: Path) -> set[str]:
    """The names the notebook's cell tagged ``parameters`` assigns, read with ``ast`` (the cell is not run)."""
    cells = nbformat.read(notebook, as_version=4).cells
    (cell,) = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    names = set()
    for node in ast.walk(ast.parse(cell.source)):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        else:
            continue
        names |= {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
    return names


@pytest.mark.parametrize("settings", [{}, {"gpu": True, "model_path": "m"}], ids=["cpu", "gpu"])
def test_every_injected_parameter_is_assigned_in_the_templates_parameters_cell(settings, tmp_path, monkeypatch):
    """papermill writes the pipeline's values after the cell tagged ``parameters``: a name that cell does not
    assign is none of the notebook's parameters, and the pipeline's value for it would be ignored."""
    import papermill

    injected = {}

    def execute_notebook(source, output, parameters, **kwargs):
        injected[Path(source)] = parameters

    monkeypatch.setenv("SPO_NOTEBOOKS", str(TEMPLATES))
    monkeypatch.setenv("SPO_HEADLESS", "0")  # run_pipeline sets it; monkeypatch restores it
    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    run_pipeline(PipelineConfig(runs_dir=str(tmp_path / "runs"), **settings))
    assert [notebook.stem for notebook in injected] == list(STAGES)
    for notebook, parameters in injected.items():
        unassigned = sorted(set(parameters) - parameters_cell_names(notebook))
        assert not unassigned, f"{notebook.name}: its parameters cell does not assign {unassigned}"


def test_load_config_file(tmp_path):
    assert load_config_file(None) == {}
    good = tmp_path / "good.yaml"
    good.write_text("name: exp1\ntotal_steps: 3\nmethods: [SPO]\n")
    assert load_config_file(str(good)) == {"name": "exp1", "total_steps": 3, "methods": ["SPO"]}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config_file(str(empty)) == {}

    with pytest.raises(UserError, match=r"pipeline config not found: .*missing\.yaml"):
        load_config_file(str(tmp_path / "missing.yaml"))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\ntotal_stepz: 3\n")
    with pytest.raises(UserError, match=r"unknown.yaml: unknown pipeline parameters \['total_stepz'\]"):
        load_config_file(str(unknown))
    listing = tmp_path / "list.yaml"
    listing.write_text("- name\n- seed\n")
    with pytest.raises(UserError, match=r"list\.yaml: expected a mapping"):
        load_config_file(str(listing))


@pytest.mark.parametrize(
    ("text", "match"), [(None, "not found"), ("[1, 2]", "expected a mapping"), ("x: 1", "unknown")]
)
def test_config_errors_through_the_cli(tmp_path, capsys, text, match):
    path = tmp_path / "pipeline.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["pipeline", "--config", str(path), "--runs_dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spo pipeline: error: ") and match in err[0] and str(path) in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def broken_python3_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that shadows the environment's and points at no interpreter."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [str(tmp_path / "no-such-python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "elsewhere", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def test_notebooks_run_on_this_interpreter_by_default(notebooks, tmp_path, broken_python3_kernel):
    write_notebook(
        notebooks / "01_split.ipynb",
        PARAMETERS["01_split"],
        SPLIT,
        "import sys, pathlib\npathlib.Path(output_dir, 'python.txt').write_text(sys.executable)",
    )
    cfg = PipelineConfig(name="kernel", runs_dir=str(tmp_path / "runs"))
    assert run_pipeline(cfg, stages=("01_split",)) == {"01_split": "ran"}
    assert (cfg.root / "splits" / "python.txt").read_text() == sys.executable
    executed = nbformat.read(cfg.root / "notebooks" / "01_split.ipynb", as_version=4)
    assert executed.metadata.kernelspec.name == "python3"  # the record still opens with a standard kernel


def test_kernel_option_picks_an_installed_kernel(notebooks, tmp_path, broken_python3_kernel):
    cfg = PipelineConfig(name="kernel", runs_dir=str(tmp_path / "runs"), kernel="python3")
    with pytest.raises(FileNotFoundError, match="no-such-python"):
        run_pipeline(cfg, stages=("01_split",))
    assert kernel_arguments("python3")["kernel_name"] == "python3"


# ipykernel's warning for a kernel on plain TCP; the kit's kernels are encrypted where the kernel supports it.
UNENCRYPTED = "Kernel is running over TCP without encryption"
ENCRYPTED = """
from ipykernel.kernelapp import IPKernelApp
(pathlib.Path(output_dir) / "encrypted.txt").write_text(str(IPKernelApp.instance().curve_secretkey is not None))
"""


@pytest.fixture
def this_python_as_kernel(tmp_path, monkeypatch):
    """An installed kernel by name (``--kernel``): ipykernel's own kernel spec for this interpreter."""
    from ipykernel.kernelspec import get_kernel_dict

    spec = tmp_path / "jupyter" / "kernels" / "this-python"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(get_kernel_dict()))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "this-python"


@pytest.mark.parametrize("by_name", [False, True], ids=["this-interpreter", "kernel-option"])
def test_kernels_start_without_the_unencrypted_tcp_warning(notebooks, tmp_path, capfd, this_python_as_kernel, by_name):
    import zmq
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client import AsyncKernelManager

    write_notebook(notebooks / "01_split.ipynb", PARAMETERS["01_split"], SPLIT, ENCRYPTED)
    kernel = this_python_as_kernel if by_name else None
    cfg = PipelineConfig(name="quiet", runs_dir=str(tmp_path / "runs"), kernel=kernel)
    assert run_pipeline(cfg, stages=("01_split",)) == {"01_split": "ran"}
    assert UNENCRYPTED not in capfd.readouterr().err  # the kernel's stderr is this process's
    declared = "curve" in get_kernel_dict().get("metadata", {}).get("supported_encryption", [])
    supported = declared and zmq.has("curve") and "transport_encryption" in AsyncKernelManager.class_trait_names()
    assert (cfg.root / "splits" / "encrypted.txt").read_text() == str(supported)


def test_missing_ipykernel_names_the_fix(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipykernel" else real(name, *a))
    with pytest.raises(UserError, match=r"ipykernel is not installed .*--kernel NAME"):
        kernel_arguments(None)


def test_notebook_templates_ship_with_the_package(monkeypatch):
    monkeypatch.delenv("SPO_NOTEBOOKS", raising=False)
    folder = notebooks_dir()
    assert all((folder / f"{stage}.ipynb").is_file() for stage in STAGES)


def test_templates_saved_by_a_notebook_session_are_refused(notebooks, tmp_path):
    nb = nbformat.read(notebooks / "02_estimate.ipynb", as_version=4)
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="saved by JupyterLab\n")]
    nbformat.write(nb, notebooks / "02_estimate.ipynb")
    cfg = PipelineConfig(name="saved", runs_dir=str(tmp_path / "runs"))
    with pytest.raises(UserError, match=r"02_estimate.ipynb: 1 cell\(s\) with outputs.*spo notebooks"):
        run_pipeline(cfg, stages=("01_split",))
    assert not cfg.layout.splits.exists()  # refused before any stage ran


def test_spo_notebooks_makes_the_copies_to_explore(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("spo_helpers.stages.notebooks.install_lab_settings", lambda: None)
    dest = tmp_path / "mine"
    assert main(["notebooks", str(dest)]) == 0
    assert sorted(p.name for p in dest.glob("*.ipynb")) == [f"{stage}.ipynb" for stage in STAGES]
    assert main(["notebooks", str(dest)]) == 0
    assert "kept (yours; --force replaces them)" in capsys.readouterr().out
    assert main(["notebooks", "--check"]) == 0
