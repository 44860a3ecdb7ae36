"""spo_helpers.analysis.explorers: one figure redrawn in place, empty states explained, nothing headless."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from synthetic_runs import write_jsonl, write_pipeline

from spo_helpers import analysis as A
from spo_helpers.analysis import explorers as E


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture
def live(monkeypatch):
    monkeypatch.delenv(E.HEADLESS_ENV, raising=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def shown(explorer: E.Explorer, monkeypatch) -> list:
    """What ``explorer`` displays as a cell's value: the objects passed to ``display``."""
    import IPython.display

    calls = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **kwargs: calls.append((objects, kwargs)))
    explorer._ipython_display_()
    return calls


def test_headless_explorers_show_nothing(pipeline, monkeypatch):
    monkeypatch.setenv(E.HEADLESS_ENV, "1")
    run = pipeline / "spo" / "spo_s0"
    metrics = A.load_runs(A.find_runs(pipeline))
    for explorer in (E.metric_explorer(metrics), E.value_scrubber(run), E.prompt_inspector(run)):
        assert (explorer.widget, explorer.figure, explorer.message) == (None, None, None)
        assert shown(explorer, monkeypatch) == []  # no stray None or empty figure in executed notebooks


def test_metric_explorer_redraws_one_picture_in_place(pipeline, live, monkeypatch):
    explorer = E.metric_explorer(A.load_runs(A.find_runs(pipeline)), keys=("critic/score/mean",))
    view = explorer.widget
    assert E.CSS_CLASS in view._dom_classes
    _, x_box, image, note = view.children
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG")
    x_box.value = "samples"
    assert image.value != first and view.children[2] is image  # the same picture widget, a new figure
    assert "run this cell again" in note.value

    (objects, kwargs), *_ = shown(explorer, monkeypatch)
    bundle = objects[0]
    assert kwargs == {"raw": True} and "application/vnd.jupyter.widget-view+json" in bundle
    assert "run this cell again" in bundle["text/plain"]  # what viewers without the widget state show


def test_metric_filter_narrows_the_list_and_keeps_the_choice(pipeline, live):
    metrics = A.load_runs(A.find_runs(pipeline))
    view = E.metric_explorer(metrics, keys=("critic/score/mean",)).widget
    search, key_box, count = view.children[0].children[1].children
    everything = len(key_box.options)
    search.value = "KIT/ adv_var"
    assert set(key_box.options) == {"kit/adv_var_after_norm", "kit/adv_var_before_norm", "critic/score/mean"}
    assert key_box.value == ("critic/score/mean",)
    assert f"3 of {everything} metrics listed, 1 chosen" in count.value


def test_metric_explorer_explains_an_empty_choice(pipeline):
    metrics = A.load_runs(A.find_runs(pipeline))
    assert "Choose one or more metrics" in texts(E._draw_metrics(metrics, ["spo_s0"], [], "step"))
    assert "Choose one or more runs" in texts(E._draw_metrics(metrics, [], ["critic/score/mean"], "step"))
    no_tokens = metrics[metrics["key"] != "critic/score/mean"]
    fig = E._draw_metrics(no_tokens.assign(tokens=float("nan")), ["spo_s0"], ["kit/zero_adv_frac"], "tokens")
    assert "no values against tokens" in texts(fig)


def test_value_scrubber_explains_step_zero(pipeline, live):
    snapshots = A.load_tracker_snapshots(pipeline / "spo" / "spo_s0")
    assert "no prompt visited yet" in texts(E._draw_values(snapshots, 0))
    assert "no prompt visited yet" not in texts(E._draw_values(snapshots, 4))
    view = E.value_scrubber(pipeline / "spo" / "spo_s0").widget
    slider, image = view.children[:2]
    last = image.value
    slider.value = 0
    assert image.value != last


def test_prompt_inspector_lists_prompts_by_text_and_explains_missing_responses(pipeline, live):
    run = pipeline / "spo" / "spo_s0"
    view = E.prompt_inspector(run).widget
    search, count = view.children[0].children
    picker, image, details, _ = view.children[1:]
    assert all(label.startswith("train ") and "visit" in label for label, _ in picker.options)
    assert "holds no rollout dumps" in details.value
    first = bytes(image.value)
    search.value = "train 1"
    prompts = [label.split("  ·")[0] for label, _ in picker.options]
    assert prompts and all("1" in p for p in prompts) and len(prompts) < 30  # every word, in the prompt's text
    assert picker.value in dict(picker.options).values()
    assert "sampled prompts listed" in count.value
    picker.value = picker.options[-1][1]
    assert image.value != first


def test_prompt_inspector_shows_sampled_responses(pipeline, live, tmp_path):
    run = pipeline / "spo" / "spo_s0"
    row = int(A.load_steps(run).groupby("row").size().idxmax())
    key = A.load_prompts(run).set_index("row").loc[row, "prompt_key"]
    dumps = tmp_path / "rollout"
    write_jsonl(dumps / "3.jsonl", [{"prompt_key": key, "score": 1.0, "output": "the answer <b>42</b>"}])
    monkeypatch_layout = run / "rollout_data"
    monkeypatch_layout.mkdir(exist_ok=True)
    (monkeypatch_layout / "3.jsonl").write_text((dumps / "3.jsonl").read_text())
    try:
        explorer = E.prompt_inspector(run, interactive=False)
        assert "the answer &lt;b&gt;42&lt;/b&gt;" in explorer.details  # escaped, not rendered
        assert E.prompt_responses(run, key)["output"].tolist() == ["the answer <b>42</b>"]
    finally:
        (monkeypatch_layout / "3.jsonl").unlink()
        monkeypatch_layout.rmdir()


def test_static_views_and_missing_data(pipeline, live, tmp_path):
    run = pipeline / "spo" / "spo_s0"
    assert E.value_scrubber(run, interactive=False).figure is not None
    assert "nothing to scrub" in E.value_scrubber(tmp_path, interactive=True).message
    assert "no prompts to inspect" in E.prompt_inspector(tmp_path).message
    assert "no SPO run" in E.value_scrubber(None).message
    empty = A.load_runs(A.find_runs(pipeline)).iloc[:0]
    assert "no metrics logged" in E.metric_explorer(empty).message


def test_a_redraw_error_shows_in_the_picture(live):
    import ipywidgets as w

    slider = w.IntSlider(value=1)
    view = E.LiveView([slider], lambda: 1 / slider.value and E.message_figure("fine"))
    view.watch(slider)
    fine = view.image.value
    slider.value = 0
    assert view.image.value != fine  # the error drawn as a message, not lost in the kernel's log


def test_widget_state_is_saved_by_the_kits_jupyterlab_default():
    from pathlib import Path

    settings = json.loads((Path(__file__).parents[2] / "jupyter" / "spo-helpers.json").read_text())
    assert settings["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
