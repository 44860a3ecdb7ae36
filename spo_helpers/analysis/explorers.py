"""ipywidgets explorers for JupyterLab: one figure each, redrawn in place by its controls.

- ``metric_explorer``: pick runs and metrics (a filter narrows the list), against steps, samples or tokens;
- ``value_scrubber``: scrub training steps through the tracker's p̂ and N_eff distributions;
- ``prompt_inspector``: one prompt (picked by its text) with its tracker trajectory, visits and responses.

Each returns an ``Explorer``; as a cell's value (or through ``display``) it shows:

- in a live kernel: one widget, the controls above one picture that each control change replaces in place,
  and a line saying that the controls need the running kernel. JupyterLab keeps the widgets' last state in
  the saved notebook (the kit's JupyterLab default, ``jupyter/overrides.d/spo-helpers.json``), so a reopened
  notebook shows the last view and that line: run the cell again to get the controls back;
- with ``interactive=False``: the current view once, as a plain figure;
- headless (``SPO_HEADLESS=1``: ``spo pipeline``, ``make test-notebooks``): nothing. No one can move the
  controls there, and the figure set already holds every figure.

When the data is missing or empty, the explorer says what is missing instead of drawing empty axes.
"""

from __future__ import annotations

import html
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from spo_helpers import analysis as A
from spo_helpers.analysis.plots import X_LABELS, panels, shared_legend
from spo_helpers.core.metric_names import TRAIN_REWARD
from spo_helpers.errors import MissingData
from spo_helpers.formats.dumps import describe_bad, dump_step, read_dump, step_dumps
from spo_helpers.formats.layout import RunLayout

logger = logging.getLogger(__name__)

HEADLESS_ENV = "SPO_HEADLESS"
RECONNECT_NOTE = (
    "The controls redraw this figure while the notebook's kernel runs. "
    "After reopening the notebook, run this cell again (Shift+Enter) to get them back."
)
PNG_DPI = 100  # what matplotlib's inline backend draws at: explorers look like the figures around them
PROMPT_CHOICES = 200  # prompts listed at once by the inspector (the most visited that match the filter)
CSS_CLASS = "spo-explorer"
NO_RUN = "no SPO run among these runs (this explorer shows one run's tracker)"


def headless() -> bool:
    """Whether ``SPO_HEADLESS`` says no one will see or move the widgets."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def live(interactive: bool) -> bool:
    """Whether to build widget controls: asked for, and not a headless run."""
    return interactive and not headless()


# ---------------------------------------------------------------------------------------------- what a cell shows
@dataclass
class Explorer:
    """What an explorer shows: its live ``widget``, or a static ``figure`` (and ``details``, HTML), or a
    ``message`` saying what is missing; nothing at all headless."""

    name: str
    widget: Any = None
    figure: Any = None
    details: str | None = None
    message: str | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, Markdown, display

        if self.message is not None:
            display(Markdown(f"*{self.name}: {self.message}*"))
        elif self.widget is not None:
            bundle = self.widget._repr_mimebundle_()
            bundle["text/plain"] = f"{self.name} (an interactive explorer). {RECONNECT_NOTE}"
            display(bundle, raw=True)
        elif self.figure is not None:
            display(self.figure)
            if self.details:
                display(HTML(self.details))


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes (as the inline backend draws it), closed in pyplot."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _message_axes(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color="#555555", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def message_figure(text: str, width: float = 6.4, height: float = 1.6):
    """A figure holding only ``text``: what an explorer draws when there is nothing to plot."""
    fig, ax = plt.subplots(figsize=(width, height))
    _message_axes(ax, text)
    return fig


class LiveView:
    """The live widget: ``controls``, one picture redrawn in place by ``refresh``, HTML ``details`` below it
    and the reconnect note. ``draw()`` returns the figure, ``details()`` the HTML (optional)."""

    def __init__(self, controls: Sequence[Any], draw: Callable[[], Any], details: Callable[[], str] | None = None):
        import ipywidgets as w

        self.draw = draw
        self.details = details
        self.paused = False
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto", align_self="flex-start"))
        self.details_box = w.HTML(layout=w.Layout(max_width="100%"))
        note = w.HTML(f'<div style="color:#6b6b6b;font-size:85%;">{html.escape(RECONNECT_NOTE)}</div>')
        parts = [*controls, self.image, *([self.details_box] if details is not None else []), note]
        self.widget = w.VBox(parts)
        self.widget.add_class(CSS_CLASS)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Redraw the picture (and the details) for the controls' current values."""
        if self.paused:
            return
        try:
            self.image.value = figure_png(self.draw())
            if self.details is not None:
                self.details_box.value = self.details()
        except Exception as err:  # a callback's error would only reach the kernel log: show it here
            logger.exception("explorer redraw failed")
            self.image.value = figure_png(message_figure(f"could not draw this view: {type(err).__name__}: {err}"))

    def watch(self, *controls: Any) -> None:
        for control in controls:
            control.observe(self.refresh, names="value")


def filter_words(text: str, candidates: Sequence[str]) -> list[str]:
    """The candidates containing every word of ``text`` (case-insensitive), in their order."""
    words = text.lower().split()
    return [c for c in candidates if all(w in c.lower() for w in words)]


# ---------------------------------------------------------------------------------------------- metrics
def _draw_metrics(metrics: pd.DataFrame, runs: Sequence[str], keys: Sequence[str], x: str):
    if not keys:
        return message_figure("Choose one or more metrics in the list (type in the filter to narrow it).")
    if not runs:
        return message_figure("Choose one or more runs.")
    fig, axes = panels(len(keys), width=4.2, height=3.2, max_cols=3)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes, keys, strict=True):
        drawn = False
        for index, run in enumerate(runs):
            part = metrics[(metrics["run"] == run) & (metrics["key"] == key)].sort_values("step")
            part = part.dropna(subset=[x, "value"])
            if not part.empty:
                ax.plot(part[x], part["value"], marker=".", color=colors[index % len(colors)], label=run)
                drawn = True
        if drawn:
            ax.set(title=key, xlabel=X_LABELS.get(x, x))
            ax.grid(alpha=0.3)
        else:
            _message_axes(ax, f"{key}:\nno values against {x} in the chosen runs")
            ax.set_title(key)
    fig.tight_layout()
    shared_legend(fig, axes, title="run")
    return fig


def metric_explorer(
    metrics: pd.DataFrame, keys: Sequence[str] = (TRAIN_REWARD,), x: str = "step", interactive: bool = True
) -> Explorer:
    """Runs x metrics over training; ``metrics`` is ``analysis.load_runs(...)`` (``RunData.metrics``)."""
    name = "metric explorer"
    if headless():
        return Explorer(name)
    if metrics.empty:
        return Explorer(name, message="no metrics logged (no metrics.jsonl or TensorBoard events in these runs)")
    runs = sorted(metrics["run"].unique())
    all_keys = sorted(metrics["key"].unique())
    keys = [k for k in keys if k in all_keys] or all_keys[:1]
    if not interactive:
        return Explorer(name, figure=_draw_metrics(metrics, runs, keys, x))
    import ipywidgets as w

    run_box = w.SelectMultiple(options=runs, value=tuple(runs), description="runs", rows=min(max(len(runs), 2), 6))
    search = w.Text(placeholder="e.g. val, kit/, score mean", description="filter", continuous_update=True)
    key_box = w.SelectMultiple(
        options=all_keys, value=tuple(keys), description="metrics", rows=10, layout=w.Layout(width="440px")
    )
    shown = w.HTML()
    x_box = w.ToggleButtons(options=["step", "samples", "tokens"], value=x, description="x")

    def count() -> None:
        shown.value = f"{len(key_box.options)} of {len(all_keys)} metrics listed, {len(key_box.value)} chosen"

    def narrow(_: Any = None) -> None:
        chosen = key_box.value
        options = filter_words(search.value, all_keys)
        options = sorted({*options, *chosen})
        view.paused = True
        try:
            key_box.options = options
            key_box.value = tuple(k for k in chosen if k in options)
        finally:
            view.paused = False
        count()

    view = LiveView(
        [w.HBox([run_box, w.VBox([search, key_box, shown])]), x_box],
        lambda: _draw_metrics(metrics, list(run_box.value), list(key_box.value), x_box.value),
    )
    view.watch(run_box, key_box, x_box)
    key_box.observe(lambda _: count(), names="value")
    search.observe(narrow, names="value")
    count()
    return Explorer(name, widget=view.widget)


# ---------------------------------------------------------------------------------------------- tracker values
def _draw_values(snapshots: pd.DataFrame, step: int):
    import seaborn as sns

    part = snapshots[snapshots["step"] == step]
    fig, axes = plt.subplots(1, 2, figsize=(8.8, 3.2))
    sns.histplot(part["p_hat"], bins=np.linspace(0, 1, 21), color="#4C72B0", ax=axes[0])
    axes[0].set(xlabel="tracker p̂", ylabel="prompts", title=f"p̂ of {len(part)} prompts at step {step}", xlim=(0, 1))
    visited = part[part["visits"] > 0] if "visits" in part.columns else part.iloc[:0]
    if "n_eff" not in part.columns:
        _message_axes(axes[1], "these snapshots hold no N_eff")
    elif visited.empty:
        prior = part["n_eff"].median() if not part.empty else float("nan")
        text = f"step {step}: no prompt visited yet,\nso every N_eff = α + β is still its prior ({prior:g})"
        _message_axes(axes[1], text)
    else:
        sns.histplot(visited["n_eff"], bins=20, color="#DD8452", ax=axes[1])
        axes[1].set(xlabel="N_eff = α + β", ylabel="prompts")
    axes[1].set_title(f"effective sample size, {len(visited)} visited prompts")
    fig.tight_layout()
    return fig


def value_scrubber(run: A.RunInfo | str | Path | None, interactive: bool = True) -> Explorer:
    """Scrub through the tracker snapshots (``tracker/<step>.npz``) of one run."""
    name = "value scrubber"
    if headless():
        return Explorer(name)
    if run is None:
        return Explorer(name, message=NO_RUN)
    try:
        snapshots = A.load_tracker_snapshots(run)
    except MissingData as err:
        return Explorer(name, message=f"nothing to scrub: {err} (the tracker is saved at each validation step)")
    steps = sorted(int(s) for s in snapshots["step"].unique())
    if not live(interactive):
        return Explorer(name, figure=_draw_values(snapshots, steps[-1]))
    import ipywidgets as w

    slider = w.SelectionSlider(
        options=steps, value=steps[-1], description="step", continuous_update=False, layout=w.Layout(width="420px")
    )
    view = LiveView([slider], lambda: _draw_values(snapshots, int(slider.value)))
    view.watch(slider)
    return Explorer(name, widget=view.widget)


# ---------------------------------------------------------------------------------------------- prompts
def prompt_history(run: A.RunInfo | str | Path, row: int) -> pd.DataFrame:
    """Every visit of tracker row ``row``: step, p̂ before the visit, reward, advantage, ρ, D."""
    steps = A.load_steps(run)
    return steps[steps["row"] == row].sort_values("step").reset_index(drop=True)


def _rollout_responses(run: A.RunInfo | str | Path) -> pd.DataFrame:
    """Every response in ``rollout_data/<step>.jsonl``: ``prompt_key, step, score, output``."""
    rows = []
    for path in step_dumps(RunLayout(Path(getattr(run, "path", run))).rollout_data):
        dump = read_dump(path, skip_bad_lines=True, keep=("output",))
        if dump.bad:
            logger.warning("%s: skipped %s", path, describe_bad(dump.bad))
        step = dump_step(path)
        for key, score, output in zip(dump.keys, dump.scores, dump.fields["output"], strict=True):
            rows.append((key, step, score, output))
    return pd.DataFrame(rows, columns=["prompt_key", "step", "score", "output"])


def prompt_responses(run: A.RunInfo | str | Path, prompt_key: str, limit: int = 20) -> pd.DataFrame:
    """The prompt's sampled responses from ``rollout_data/<step>.jsonl`` (when rollout dumps were written)."""
    frame = _rollout_responses(run)
    return frame.loc[frame["prompt_key"] == prompt_key, ["step", "score", "output"]].tail(limit)


def short_prompt(text: str, width: int = 72) -> str:
    """The prompt's first line, cut to ``width`` characters (the answer-format suffix is on its own line)."""
    line = text.strip().splitlines()[0] if text.strip() else "(empty prompt)"
    return line if len(line) <= width else line[: width - 1] + "…"


def _draw_history(history: pd.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    if history.empty:
        _message_axes(ax, "this prompt was never sampled")
    else:
        ax.plot(history["step"], history["p_hat"], marker="o", label="p̂ before the visit")
        ax.scatter(history["step"], history["reward"], marker="x", color="#C44E52", label="reward", zorder=3)
        ax.set(xlabel="training step", ylabel="p̂ / reward", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _details_html(text: str, history: pd.DataFrame, responses: pd.DataFrame | None, missing: str) -> str:
    columns = [c for c in ("step", "p_hat", "reward", "advantage", "rho", "drift") if c in history.columns]
    visits = history[columns].rename(columns={"p_hat": "p̂ before", "rho": "ρ", "drift": "D"})
    parts = [
        f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(text)}</pre>",
        f"<b>{len(history)} visit(s)</b>",
        visits.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0),
        "<b>sampled responses</b>",
    ]
    if responses is None or responses.empty:
        parts.append(f"<p><i>{html.escape(missing)}</i></p>")
    else:
        shown = responses.assign(output=responses["output"].astype(str).str.slice(0, 400))
        parts.append(shown.to_html(index=False, border=0))
    return "\n".join(parts)


def prompt_inspector(run: A.RunInfo | str | Path | None, row: int | None = None, interactive: bool = True) -> Explorer:
    """A prompt's tracker trajectory, visits and sampled responses; defaults to the most visited prompt."""
    name = "prompt inspector"
    if headless():
        return Explorer(name)
    if run is None:
        return Explorer(name, message=NO_RUN)
    try:
        steps = A.load_steps(run)
        prompts = A.load_prompts(run)
    except MissingData as err:
        return Explorer(name, message=f"no prompts to inspect: {err}")
    visits = steps.groupby("row").size().sort_values(ascending=False, kind="stable")
    if visits.empty:
        return Explorer(name, message="no prompt was sampled in this run (steps.jsonl holds no visits)")
    texts = prompts.set_index("row")["prompt_key"].astype(str)
    rollout = RunLayout(Path(getattr(run, "path", run))).rollout_data
    cache: dict[str, pd.DataFrame] = {}

    def responses(key: str) -> pd.DataFrame:
        if "all" not in cache:
            cache["all"] = _rollout_responses(run)
        frame = cache["all"]
        return frame.loc[frame["prompt_key"] == key, ["step", "score", "output"]].tail(20)

    missing = (
        f"No responses to show: {rollout} holds no rollout dumps. Training writes them there "
        "(trainer.rollout_data_dir); pruned runs such as runs/reference keep none."
    )
    if row is None:
        row = int(visits.index[0])

    def parts(row: int):
        text = texts.get(row, f"(row {row}: not in prompts.parquet)")
        history = steps[steps["row"] == row].sort_values("step")
        title = f"“{short_prompt(text, 60)}”, {len(history)} visit{'s' if len(history) != 1 else ''}"
        return text, history, title

    def draw(row: int):
        _, history, title = parts(row)
        return _draw_history(history, title)

    def details(row: int) -> str:
        text, history, _ = parts(row)
        return _details_html(text, history, responses(text), missing)

    if not live(interactive):
        return Explorer(name, figure=draw(row), details=details(row))
    import ipywidgets as w

    labels = {
        int(r): f"{short_prompt(texts.get(r, f'row {r}'))}  ·  {n} visit{'s' if n != 1 else ''}"
        for r, n in visits.items()
    }

    def choices(text: str) -> list[tuple[str, int]]:
        words = text.lower().split()
        rows = [r for r in labels if all(word in str(texts.get(r, "")).lower() for word in words)]
        return [(labels[r], r) for r in rows[:PROMPT_CHOICES]]

    search = w.Text(placeholder="words of the prompt, e.g. 53*4", description="filter", continuous_update=True)
    picker = w.Dropdown(options=choices(""), description="prompt", layout=w.Layout(width="720px"))
    if int(row) not in dict((v, k) for k, v in picker.options):
        picker.options = [(labels.get(int(row), f"row {row}"), int(row)), *picker.options]
    picker.value = int(row)
    shown = w.HTML()

    def count() -> None:
        shown.value = f"{len(picker.options)} of {len(labels)} sampled prompts listed (most visited first)"

    def narrow(_: Any = None) -> None:
        options = choices(search.value)
        if not options:
            shown.value = "no sampled prompt contains these words"
            return
        current = picker.value
        view.paused = True
        try:
            picker.options = options
            picker.value = current if current in [v for _, v in options] else options[0][1]
        finally:
            view.paused = False
        view.refresh()
        count()

    view = LiveView(
        [w.HBox([search, shown]), picker], lambda: draw(int(picker.value)), lambda: details(int(picker.value))
    )
    view.watch(picker)
    search.observe(narrow, names="value")
    count()
    return Explorer(name, widget=view.widget)
