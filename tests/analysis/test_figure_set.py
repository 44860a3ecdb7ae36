"""spo_helpers.analysis.figure_set: one builder per figure, each named once, and ``spo figures`` and notebook 05
use the same ones."""

from __future__ import annotations

import ast
import inspect
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from synthetic_runs import write_kit_run, write_official_run, write_pipeline
from test_notebooks import notebook_code

from spo_helpers.analysis import figure_set as F
from spo_helpers.analysis.figure_set import FIGURE_STEMS
from spo_helpers.analysis.run_data import RunData
from spo_helpers.stages.figures import build_figures, save_figure

BUILDERS = {spec.builder.__name__: spec.builder for spec in F.FIGURES}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_pipeline(tmp_path_factory.mktemp("pipeline"), seeds=(0, 1))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------ the set
def test_the_set_is_in_file_order_and_each_name_is_its_files_name(tmp_path):
    stems = [spec.stem for spec in F.FIGURES]
    numbers = [stem.split("_")[0] for stem in stems]
    assert numbers == sorted(numbers) and len(set(stems)) == len(stems)
    assert list(FIGURE_STEMS) == stems and all(FIGURE_STEMS.values())
    assert [spec.stem for spec in F.FIGURES if spec.simulation] == ["08_throughput_sweep"]
    data = RunData.from_paths(write_official_run(tmp_path / "spo" / "SPO_official"))
    for spec in F.FIGURES:
        if not spec.simulation:
            assert spec.build(data).stem == spec.stem  # built or skipped, under the name the set gives it


def test_one_builder_draws_several_figures_of_the_set():
    curves = [spec for spec in F.FIGURES if spec.builder is F.learning_curves_figure]
    assert [(spec.stem, dict(spec.kwargs)) for spec in curves] == [
        ("02_learning_curves_step", {"x": "step"}),
        ("02_learning_curves_samples", {"x": "samples"}),
        ("02_learning_curves_tokens", {"x": "tokens"}),
    ]


def test_a_name_enters_the_set_once():
    with pytest.raises(ValueError, match="03_zero_advantage"):

        @F.figure("03_zero_advantage", "again")
        def again(data):
            raise AssertionError("never drawn")


# ------------------------------------------------------------------------------------------ the notebooks' calls
def _figure_set_alias(tree: ast.Module) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "spo_helpers.analysis":
            for name in node.names:
                if name.name == "figure_set":
                    return name.asname or name.name
    raise AssertionError("the notebook does not import spo_helpers.analysis.figure_set")


def builder_calls(notebook: str) -> list[tuple[str, tuple, dict]]:
    """Every ``F.<builder>(data, ...)`` call in a notebook's code: builder name, further arguments, keywords."""
    tree = ast.parse(notebook_code(notebook))
    alias = _figure_set_alias(tree)
    calls = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == alias:
            assert func.attr in BUILDERS or not func.attr.endswith("_figure"), f"{func.attr}: not in FIGURES"
            if func.attr not in BUILDERS:
                continue
            args = tuple(ast.literal_eval(a) for a in node.args[1:])
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            calls.append((func.attr, args, kwargs))
    return calls


def _arguments(builder, args: tuple, kwargs: dict) -> frozenset:
    bound = inspect.signature(builder).bind(None, *args, **kwargs)
    bound.apply_defaults()
    return frozenset((k, v) for k, v in bound.arguments.items() if k != "data")


def stem_of(call: tuple[str, tuple, dict]) -> str:
    """The stem of the ``FIGURES`` entry a notebook call builds (the builder and its arguments match)."""
    name, args, kwargs = call
    wanted = _arguments(BUILDERS[name], args, kwargs)
    for spec in F.FIGURES:
        if spec.builder.__name__ == name and _arguments(spec.builder, (), dict(spec.kwargs)) == wanted:
            return spec.stem
    raise AssertionError(f"{name}{args or ''}{kwargs or ''} is no figure of figure_set.FIGURES")


def test_notebook_05_shows_every_figure_the_command_writes_once():
    stems = Counter(stem_of(call) for call in builder_calls("05_analysis.ipynb"))
    assert stems == Counter(list(FIGURE_STEMS))


def test_notebook_05_draws_figures_only_through_the_builders():
    tree = ast.parse(notebook_code("05_analysis.ipynb"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    drawing = {n for n in names if n.startswith("plot_")} | ({"plt", "sweep", "savefig"} & names)
    assert not drawing


def test_notebook_04_draws_figures_of_the_set():
    assert {stem_of(call) for call in builder_calls("04_train.ipynb")} <= set(FIGURE_STEMS)


# ------------------------------------------------------------------------------------------ same figures, same files
def test_command_writes_what_the_notebook_calls_draw(pipeline, tmp_path, monkeypatch):
    used = []
    build = F.FigureSpec.build

    def recording(spec, data):
        used.append((spec.builder.__name__, (), dict(spec.kwargs)))
        return build(spec, data)

    monkeypatch.setattr(F.FigureSpec, "build", recording)
    report = build_figures([pipeline], tmp_path / "command", formats=["png"])
    calls = builder_calls("05_analysis.ipynb")
    assert Counter(stem_of(c) for c in used) == Counter(stem_of(c) for c in calls)
    conditional = {"09_tool_use", "11_streaming"}  # drawn for runs with tools; the pipeline's runs have none
    assert set(report.skipped) == conditional
    assert set(report.written) - {"results_table", "paired_table"} == set(FIGURE_STEMS) - conditional

    data = RunData.from_paths([pipeline])  # what notebook 05 loads, then draws with the builders
    for name, args, kwargs in calls:
        built = getattr(F, name)(data, *args, **kwargs)
        if built.stem in conditional:
            assert built.figure is None and built.stem not in report.written
            continue
        (png,) = save_figure(built.figure, built.stem, tmp_path / "notebook", ["png"])
        assert png.read_bytes() == (tmp_path / "command" / png.name).read_bytes(), built.stem
        assert built.table.to_csv(index=False) == (tmp_path / "command" / f"{built.stem}.csv").read_text()
    for name, frame in F.result_tables(data).items():
        assert frame.to_csv(index=False) == (tmp_path / "command" / f"{name}.csv").read_text(), name


def test_the_command_can_write_the_notebooks_loaded_data(pipeline, tmp_path):
    data = RunData.from_paths(pipeline)
    shown = F.zero_advantage_figure(data)
    report = build_figures(data, tmp_path, formats=["png"], simulation=False)
    assert report.runs == data.runs and "03_zero_advantage" in report.written
    assert shown.table.to_csv(index=False) == (tmp_path / "03_zero_advantage.csv").read_text()


# ------------------------------------------------------------------------------------------ builders
def test_builders_skip_with_the_reason_instead_of_raising(tmp_path):
    data = RunData.from_paths(write_official_run(tmp_path / "spo" / "SPO_official"))
    samples = F.learning_curves_figure(data, x="samples")
    assert samples.stem == "02_learning_curves_samples" and samples.figure is None
    assert "no samples counts logged" in samples.skipped
    zero = F.zero_advantage_figure(data)
    assert zero.figure is None and zero.table is None and "steps.jsonl" in zero.skipped
    assert F.learning_curves_figure(data).figure is not None


def test_built_figures_are_detached_from_pyplot(pipeline):
    data = RunData.from_paths(pipeline)
    plt.close("all")
    built = F.reliability_figure(data)
    assert built.figure is not None and built.figure.axes and not plt.get_fignums()


def test_notes_once_however_often_a_figure_is_built(tmp_path):
    run = write_kit_run(tmp_path / "spo" / "grpo_only", "GRPO", 0)
    other = write_kit_run(tmp_path / "spo" / "spo_only", "SPO", 0)
    (run / "prompts.parquet").unlink()
    data = RunData.from_paths([run, other])
    for _ in range(2):
        assert F.curriculum_figure(data).figure is not None
    assert sum("grpo_only" in note for note in data.notes) == 2  # prompts.parquet missing; curriculum left it out
    assert len(data.notes) == len(set(data.notes))


def test_notebook_05_shows_the_files_the_command_just_wrote(pipeline, tmp_path, monkeypatch):
    import IPython.display

    data = RunData.from_paths(pipeline)
    report = build_figures(data, tmp_path, formats=["png"], simulation=False)
    built = F.zero_advantage_figure(data)  # what the notebook's cell calls after write_figures
    assert built is data.built["03_zero_advantage"]  # built once
    assert built.png == (tmp_path / "03_zero_advantage.png").read_bytes()
    assert "03_zero_advantage" in report.written
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **_: shown.append(obj))
    built._ipython_display_()
    (image,) = shown
    assert image.data == built.png and image.width < int.from_bytes(built.png[16:20], "big")  # at the inline size


def _tool_run(root, method, rates):
    """A run folder with a metrics.jsonl as a tool-integrated run logs it."""
    import json

    run = root / "spo" / f"{method.lower()}_cpu"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"kit:\n  method: {method}\n  seed: 0\n")
    lines = []
    for step, rate in enumerate(rates, start=1):
        data = {
            "critic/score/mean": 0.4 + 0.1 * rate,
            "tool/call_rate": rate,
            "tool/reward_with_call/mean": 0.7,
            "tool/reward_without_call/mean": 0.2,
        }
        lines.append(json.dumps({"step": step, "data": data}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_tool_use_figure_draws_runs_with_tools_and_skips_others(tmp_path):
    _tool_run(tmp_path / "tools", "SPO", [0.5, 0.7, 0.9])
    _tool_run(tmp_path / "tools", "GRPO", [0.5, 0.6, 0.6])
    built = F.tool_use_figure(RunData.from_paths([tmp_path / "tools"]))
    assert built.figure is not None, built.skipped
    table = built.table
    assert set(table["metric"]) == {"call rate", "accuracy", "accuracy, ran code", "accuracy, no code"}
    rates = table[(table["metric"] == "call rate") & (table["method"] == "SPO")]["value"].tolist()
    assert rates == [0.5, 0.7, 0.9]
    titles = [ax.get_title() for ax in built.figure.axes]
    assert "tool-call rate" in titles

    plain = tmp_path / "plain" / "spo" / "grpo_cpu"
    plain.mkdir(parents=True)
    (plain / "config.yaml").write_text("kit:\n  method: GRPO\n  seed: 0\n")
    (plain / "metrics.jsonl").write_text('{"step": 1, "data": {"critic/score/mean": 0.5}}\n')
    skipped = F.tool_use_figure(RunData.from_paths([tmp_path / "plain"]))
    assert skipped.figure is None and "tool/call_rate" in skipped.skipped
