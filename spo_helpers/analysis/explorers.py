"""ipywidgets explorers for JupyterLab, each with a static fallback.

Every explorer draws its figure for the current selection right away, so an
executed notebook (papermill, nbval, a static viewer) shows a real figure; with
``interactive=True`` in a live kernel the controls redraw it. Headless runs set
``SPO_HEADLESS=1`` (``spo pipeline`` and ``make test`` do), which turns the
controls off: there is no one to move them, and widget views only bloat the
executed notebook.

- ``metric_explorer``: pick runs and metrics, against steps, samples or tokens;
- ``value_scrubber``: scrub training steps through the tracker's p̂ distribution;
- ``prompt_inspector``: one prompt's tracker trajectory with its sampled responses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from spo_helpers import analysis as A
from spo_helpers.formats.dumps import describe_bad, dump_step, read_dump, step_dumps
from spo_helpers.formats.layout import RunLayout

logger = logging.getLogger(__name__)


def live(interactive: bool) -> bool:
    """Whether to build widget controls: asked for, and not a headless run."""
    return interactive and os.environ.get("SPO_HEADLESS", "") in ("", "0")


def _show(fig) -> None:
    from IPython.display import display

    display(fig)
    plt.close(fig)


def _draw_metrics(metrics: pd.DataFrame, runs: Sequence[str], keys: Sequence[str], x: str):
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        for run in runs:
            part = metrics[(metrics["run"] == run) & (metrics["key"] == key)].sort_values("step")
            if not part.empty:
                ax.plot(part[x], part["value"], marker=".", label=run)
        ax.set(title=key, xlabel=x)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def metric_explorer(
    metrics: pd.DataFrame, keys: Sequence[str] = ("critic/score/mean",), x: str = "step", interactive: bool = True
):
    """Runs x metrics over training; ``metrics`` is ``analysis.load_runs(...)``."""
    runs = sorted(metrics["run"].unique())
    all_keys = sorted(metrics["key"].unique())
    keys = [k for k in keys if k in all_keys] or all_keys[:1]
    _show(_draw_metrics(metrics, runs, keys, x))
    if not live(interactive):
        return None
    import ipywidgets as w

    run_box = w.SelectMultiple(options=runs, value=tuple(runs), description="runs", rows=min(len(runs), 6))
    key_box = w.SelectMultiple(options=all_keys, value=tuple(keys), description="metrics", rows=8)
    x_box = w.ToggleButtons(options=["step", "samples", "tokens"], value=x, description="x")
    out = w.interactive_output(
        lambda runs, keys, x: _show(_draw_metrics(metrics, runs, keys, x)),
        {"runs": run_box, "keys": key_box, "x": x_box},
    )
    return w.VBox([w.HBox([run_box, key_box]), x_box, out])


def _draw_values(snapshots: pd.DataFrame, step: int):
    part = snapshots[snapshots["step"] == step]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    axes[0].hist(part["p_hat"], bins=np.linspace(0, 1, 21), color="#4C72B0", edgecolor="white")
    axes[0].set(xlabel="tracker p̂", ylabel="prompts", title=f"p̂ at step {step}")
    visited = part["visits"] > 0 if "visits" in part else np.ones(len(part), bool)
    axes[1].hist(part.loc[visited, "n_eff"] if "n_eff" in part else [], bins=20, color="#DD8452", edgecolor="white")
    axes[1].set(xlabel="N_eff = α + β", ylabel="visited prompts", title="effective sample size")
    fig.tight_layout()
    return fig


def value_scrubber(run: A.RunInfo | str | Path, interactive: bool = True):
    """Scrub through the tracker snapshots (``tracker/<step>.npz``) of one run."""
    snapshots = A.load_tracker_snapshots(run)
    steps = sorted(int(s) for s in snapshots["step"].unique())
    _show(_draw_values(snapshots, steps[-1]))
    if not live(interactive):
        return None
    import ipywidgets as w

    slider = w.SelectionSlider(options=steps, value=steps[-1], description="step", continuous_update=False)
    return w.VBox([slider, w.interactive_output(lambda step: _show(_draw_values(snapshots, step)), {"step": slider})])


def prompt_history(run: A.RunInfo | str | Path, row: int) -> pd.DataFrame:
    """Every visit of tracker row ``row``: step, p̂ before the visit, reward, advantage, ρ, D."""
    steps = A.load_steps(run)
    return steps[steps["row"] == row].sort_values("step").reset_index(drop=True)


def prompt_responses(run: A.RunInfo | str | Path, prompt_key: str, limit: int = 20) -> pd.DataFrame:
    """The prompt's sampled responses from ``rollout_data/<step>.jsonl`` (when rollout dumps were written)."""
    rows = []
    for path in step_dumps(RunLayout(Path(getattr(run, "path", run))).rollout_data):
        dump = read_dump(path, skip_bad_lines=True, keep=("output",))
        if dump.bad:
            logger.warning("%s: skipped %s", path, describe_bad(dump.bad))
        step = dump_step(path)
        for key, score, output in zip(dump.keys, dump.scores, dump.fields["output"], strict=True):
            if key == prompt_key:
                rows.append({"step": step, "score": score, "output": output})
    return pd.DataFrame(rows, columns=["step", "score", "output"]).tail(limit)


def _draw_history(history: pd.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    if not history.empty:
        ax.plot(history["step"], history["p_hat"], marker="o", label="p̂ before the visit")
        ax.scatter(history["step"], history["reward"], marker="x", color="#C44E52", label="reward", zorder=3)
    ax.set(xlabel="step", ylim=(-0.05, 1.05), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def prompt_inspector(run: A.RunInfo | str | Path, row: int | None = None, interactive: bool = True):
    """A prompt's tracker trajectory and responses; defaults to the most visited prompt."""
    from IPython.display import display

    steps = A.load_steps(run)
    prompts = A.load_prompts(run)
    visits = steps.groupby("row").size().sort_values(ascending=False)
    if row is None:
        row = int(visits.index[0])

    def render(row: int) -> None:
        key = prompts.loc[prompts["row"] == row, "prompt_key"].iloc[0]
        history = steps[steps["row"] == row].sort_values("step")
        _show(_draw_history(history, key.splitlines()[0][:60]))
        display(prompt_responses(run, key))

    render(row)
    if not live(interactive):
        return None
    import ipywidgets as w

    options = [(f"row {r} ({n} visits)", int(r)) for r, n in visits.head(200).items()]
    picker = w.Dropdown(options=options, value=int(row), description="prompt")
    return w.VBox([picker, w.interactive_output(render, {"row": picker})])
