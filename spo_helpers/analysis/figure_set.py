"""The analysis figures, one builder per figure: what ``spo figures`` writes is what notebook 05 shows.

    from spo_helpers.analysis import figure_set as F
    from spo_helpers.analysis.run_data import RunData
    data = RunData.from_paths(["runs/demo"])  # the runs' frames, loaded once, on first use
    zero = F.zero_advantage_figure(data)  # zero.figure, zero.table (the CSV behind it), zero.stem

Each builder takes a ``RunData`` and returns a ``BuiltFigure``: the stem of its files, the figure and the table
it draws. A figure the data does not support comes back with ``figure`` None and the reason in ``skipped``:
builders never raise ``MissingData``, so a notebook cell shows the reason instead of failing. Each builder is
entered into the set where it is defined (``@figure``: its stem and what it shows, once); ``FIGURES`` lists every
figure in file order with its builder and arguments. ``spo figures`` (``spo_helpers.stages.figures``) builds
exactly these and notebook 05 calls the same builders by name, so the two cannot draw different things.
``result_tables`` gives the results table (the paper's layout) and the validation table behind it.

A built figure is detached from pyplot (nothing piles up over many builds); in a notebook, a ``BuiltFigure``
as a cell's value displays its figure, or the reason it was skipped.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from spo_helpers.analysis.baselines import (
    advantage_values,
    advantage_variance,
    reliability,
    rho_drift,
    rho_drift_summary,
    zero_advantage_share,
)
from spo_helpers.analysis.curriculum import curriculum, visits_per_prompt
from spo_helpers.analysis.run_data import RunData
from spo_helpers.analysis.runs import RUN_COLUMNS, collect
from spo_helpers.analysis.validation import results_table
from spo_helpers.core.metric_names import (
    ADV_VAR_AFTER_NORM,
    ADV_VAR_BEFORE_NORM,
    CALIBRATION_BRIER,
    SPO_RHO_CLIP_RATIO,
    TIMING_STEP,
    TOOL_CALL_RATE,
    TOOL_REWARD_WITH_CALL,
    TOOL_REWARD_WITHOUT_CALL,
    TRAIN_REWARD,
    ZERO_ADV_FRAC,
)
from spo_helpers.errors import MissingData

logger = logging.getLogger(__name__)

THROUGHPUT_SWEEP = {"group_sizes": (4, 8, 16), "batch_sizes": (256, 1024), "tails": (0.25, 0.5, 0.75, 1.0, 1.5)}
"""The grid of the throughput-sweep figure (lognormal tail weight sigma), simulated for ``THROUGHPUT_STEPS``."""
THROUGHPUT_STEPS = 20


# ---------------------------------------------------------------------------------------------- built figures
SAVED_DPI = 120  # the resolution of the PNG files (spo_helpers.stages.figures)
INLINE_DPI = 100  # what matplotlib's inline backend draws at


@dataclass
class BuiltFigure:
    """One figure: its file stem, the figure and its table, or (``figure`` None) why it was skipped.

    ``png``: the PNG file's bytes once ``spo figures`` (``build_figures``) wrote it; a notebook then shows that
    file instead of drawing the figure again.
    """

    stem: str
    figure: Any = None
    table: pd.DataFrame | None = None
    skipped: str | None = None
    png: bytes | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import Image, Markdown, display

        if self.figure is None:
            display(Markdown(f"*{self.stem}: skipped, {self.skipped}*"))
        elif self.png is not None:
            width = int.from_bytes(self.png[16:20], "big")  # the PNG header's width, in pixels
            display(Image(data=self.png, format="png", width=round(width * INLINE_DPI / SAVED_DPI)))
        else:
            display(self.figure)


# ---------------------------------------------------------------------------------------------- entering the set
@dataclass(frozen=True)
class FigureSpec:
    """One figure of the set: its file stem, what it shows, its builder and the builder's arguments."""

    stem: str
    description: str
    builder: Callable[..., BuiltFigure]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    simulation: bool = False  # drawn from the throughput simulation, not from the runs

    def build(self, data: RunData) -> BuiltFigure:
        return self.builder(data, **self.kwargs)


_ENTERED: list[FigureSpec] = []  # the set so far, in the order the builders below are defined


def _arguments(signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A builder's arguments by name, defaults included (what its stem is filled in with)."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def figure(
    stem: str,
    description: str = "",
    *,
    variants: Sequence[tuple[Mapping[str, Any], str]] = (),
    simulation: bool = False,
) -> Callable[[Callable[..., tuple[Any, pd.DataFrame]]], Callable[..., BuiltFigure]]:
    """Turn ``draw(data, ...) -> (figure, table)`` into a builder returning a ``BuiltFigure``, and enter it into
    the set (``FIGURES``) under ``stem``.

    ``stem`` may name the builder's arguments (``"02_learning_curves_{x}"``); ``variants`` lists the figures of
    the set drawn by one builder, each as (its arguments, what it shows); without them the set holds one figure,
    the builder with its defaults, showing ``description``. ``simulation``: drawn from the throughput simulation,
    not from the runs. ``MissingData`` becomes a skipped figure; a drawn figure is closed in pyplot (it can still
    be saved and displayed). A figure is built once per ``RunData`` (kept in ``data.built``): notebook 05 shows
    the figures ``spo figures`` just wrote.
    """

    def decorate(draw: Callable[..., tuple[Any, pd.DataFrame]]) -> Callable[..., BuiltFigure]:
        signature = inspect.signature(draw)

        @functools.wraps(draw)
        def build(*args: Any, **kwargs: Any) -> BuiltFigure:
            import matplotlib.pyplot as plt

            arguments = _arguments(signature, args, kwargs)
            name = stem.format(**arguments)
            data = arguments.get("data")
            cache = data.built if isinstance(data, RunData) else {}
            if name in cache:
                return cache[name]
            try:
                fig, table = draw(*args, **kwargs)
            except MissingData as err:
                logger.debug("%s skipped: %s", name, err)
                built = BuiltFigure(name, skipped=str(err))
            else:
                plt.close(fig)
                built = BuiltFigure(name, fig, table)
            cache[name] = built
            return built

        for arguments, shows in variants or [({}, description)]:
            name = stem.format(**_arguments(signature, [None], arguments))
            entry = FigureSpec(name, shows, build, arguments, simulation)
            if any(spec.stem == entry.stem for spec in _ENTERED):
                raise ValueError(f"two figures of the set are named {entry.stem}")
            _ENTERED.append(entry)
        return build

    return decorate


def _first_spo(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the first SPO run in ``frame`` (or of its first run when there is no SPO run)."""
    runs = frame.loc[frame["method"] == "SPO", "run"] if (frame["method"] == "SPO").any() else frame["run"]
    return frame[frame["run"] == runs.iloc[0]]


# ---------------------------------------------------------------------------------------------- builders
@figure("01_value_distributions", "offline p̂0 (histogram, ECDF) and the tracker's p̂ over training")
def value_distributions_figure(data: RunData):
    """Offline p̂0 (histogram, ECDF) and the first SPO run's tracker p̂ at up to six snapshot steps."""
    from spo_helpers.analysis.plots import pick_steps, plot_value_distributions

    snapshots = data.optional("snapshots")
    if snapshots is not None:
        snapshots = _first_spo(snapshots)
        snapshots = snapshots[snapshots["step"].isin(pick_steps(snapshots["step"].unique()))]
    fig = plot_value_distributions(data.offline, snapshots)
    parts = []
    if data.offline is not None:
        parts.append(data.offline.assign(source="offline"))
    if snapshots is not None:
        parts.append(snapshots.assign(source="tracker"))
    return fig, pd.concat(parts, ignore_index=True)


@figure(
    "02_learning_curves_{x}",
    variants=[
        ({"x": "step"}, "training reward and validation mean@n / maj@n / pass@n vs step"),
        ({"x": "samples"}, "the same vs generated samples"),
        ({"x": "tokens"}, "the same vs generated response tokens"),
    ],
)
def learning_curves_figure(data: RunData, x: str = "step"):
    """Training reward and validation mean@n / maj@n / pass@n against ``x``: step, samples or tokens."""
    from spo_helpers.analysis.plots import plot_learning_curves

    curves = data.curves
    if curves.empty:
        raise MissingData("no training reward or validation metrics")
    rows = curves.dropna(subset=[x])
    if rows.empty:
        raise MissingData(f"no {x} counts logged (official runs log steps only)")
    return plot_learning_curves(rows, x=x), rows


@figure("03_zero_advantage", "share of zero-advantage samples, GRPO vs SPO (paper's 60-80% band)")
def zero_advantage_figure(data: RunData):
    """Share of zero-advantage samples per step: the logged ``kit/zero_adv_frac``, else from steps.jsonl."""
    from spo_helpers.analysis.plots import plot_zero_advantage

    logged = data.metric(ZERO_ADV_FRAC, "zero_adv_frac")[[*RUN_COLUMNS, "step", "zero_adv_frac"]]
    steps = data.optional("steps")
    if steps is not None:
        derived = zero_advantage_share(steps)
        logged = pd.concat([logged, derived[~derived["run"].isin(logged["run"])]], ignore_index=True)
    if logged.empty:
        raise MissingData(f"neither {ZERO_ADV_FRAC} nor steps.jsonl advantages")
    return plot_zero_advantage(logged), logged


@figure("04_advantages", "advantage variance and distributions before / after normalisation")
def advantages_figure(data: RunData):
    """Advantage variance before / after normalisation (steps.jsonl, else the logged ``kit/adv_var_*``) and,
    from steps.jsonl, the advantage distributions."""
    from spo_helpers.analysis.plots import plot_advantages

    steps = data.optional("steps")
    frames = []
    if steps is not None:
        frames.append(advantage_variance(steps))
    for stage, key in (("before norm", ADV_VAR_BEFORE_NORM), ("after norm", ADV_VAR_AFTER_NORM)):
        logged = data.metric(key, "variance").assign(stage=stage)[[*RUN_COLUMNS, "step", "stage", "variance"]]
        done = set(frames[0]["run"]) if frames else set()
        frames.append(logged[~logged["run"].isin(done)])
    variance = pd.concat(frames, ignore_index=True)
    if variance.empty:
        raise MissingData("no advantages in steps.jsonl nor kit/adv_var_* metrics")
    values = advantage_values(steps) if steps is not None else None
    fig = plot_advantages(variance, values)
    parts = [variance.assign(panel="variance")]
    if values is not None:
        parts.append(values.assign(panel="values"))
    return fig, pd.concat(parts, ignore_index=True)


@figure("05_reliability", "reliability diagram of p̂ vs observed reward, with counts and the Brier score")
def reliability_figure(data: RunData):
    """Reliability diagram of the tracker's p̂ against the observed reward, with the logged Brier score."""
    from spo_helpers.analysis.plots import plot_reliability

    bins = reliability(data.steps.dropna(subset=["p_hat"]))
    calibration = data.metric(CALIBRATION_BRIER, "brier")
    return plot_reliability(bins, calibration if not calibration.empty else None), bins


@figure("06_rho_drift", "SPO's ρ and drift D over training, ρ clip ratio, visits per prompt")
def rho_drift_figure(data: RunData):
    """SPO's ρ and drift D per step window, the ρ clip ratio and visits per prompt (SPO runs only)."""
    from spo_helpers.analysis.plots import plot_rho_drift

    samples = rho_drift(data.steps)
    spo_runs = set(samples["run"])
    clip = data.metric(SPO_RHO_CLIP_RATIO)
    clip = clip[clip["run"].isin(spo_runs)]
    snapshots = data.optional("snapshots")
    snapshots = snapshots[snapshots["run"].isin(spo_runs)] if snapshots is not None else None
    spo_steps = data.steps[data.steps["run"].isin(spo_runs)]
    visits = visits_per_prompt(spo_steps, snapshots, data.optional("prompts"))
    fig = plot_rho_drift(samples, clip if not clip.empty else None, visits)
    return fig, rho_drift_summary(samples)


@figure("07_curriculum", "share of sampled prompts per difficulty bin over training")
def curriculum_figure(data: RunData):
    """Share of sampled prompts per difficulty bin over training, per method."""
    from spo_helpers.analysis.plots import plot_curriculum

    frame = curriculum(data.steps, data.prompts)
    left_out = set(data.steps["run"]) - set(frame["run"])
    if left_out:
        data.note(f"07_curriculum: left out {', '.join(sorted(left_out))} (no prompts.parquet)")
    return plot_curriculum(frame), frame


@figure("08_throughput_sweep", "simulated SPO/GRPO throughput ratio vs tail weight (paper: 4.35x)", simulation=True)
def throughput_sweep_figure(data: RunData | None = None):
    """Simulated SPO/GRPO rollout throughput ratio against the tail weight over ``THROUGHPUT_SWEEP`` (no run
    data needed; ``data`` is taken for a uniform signature)."""
    from spo_helpers.analysis.plots import plot_throughput_sweep
    from spo_helpers.analysis.throughput import SimConfig
    from spo_helpers.analysis.throughput_sweep import sweep

    frame = sweep(SimConfig(steps=THROUGHPUT_STEPS), **THROUGHPUT_SWEEP)
    return plot_throughput_sweep(frame), frame


TOOL_USE_SERIES = {
    TOOL_CALL_RATE: "call rate",
    TRAIN_REWARD: "accuracy",
    TOOL_REWARD_WITH_CALL: "accuracy, ran code",
    TOOL_REWARD_WITHOUT_CALL: "accuracy, no code",
}


@figure("09_tool_use", "tool-call rate and accuracy with / without a code run (runs with tools)")
def tool_use_figure(data: RunData):
    """Tool-integrated runs: the tool-call rate and the training accuracy with and without a code run, per step."""
    from spo_helpers.analysis.plots import plot_tool_use

    tool_runs = set(data.metric(TOOL_CALL_RATE)["run"])
    if not tool_runs:
        raise MissingData(f"no run logged {TOOL_CALL_RATE} (runs without tools)")
    parts = []
    for key, label in TOOL_USE_SERIES.items():
        rows = data.metric(key)
        parts.append(rows[rows["run"].isin(tool_runs)].assign(metric=label))
    frame = pd.concat(parts, ignore_index=True)[[*RUN_COLUMNS, "step", "metric", "value"]]
    return plot_tool_use(frame), frame


@figure(
    "10_ground_truth",
    "baseline error vs true p (SPO p̂, GRPO group / leave-one-out mean), p̂ calibration vs truth",
)
def ground_truth_figure(data: RunData):
    """Baselines against the truth (``spo ground-truth`` runs only): SPO's p̂ and GRPO's group means minus each
    prompt's true success probability under the checkpoint that sampled it, and p̂'s calibration vs truth."""
    from spo_helpers.analysis.baseline_error import (
        baseline_errors,
        calibration_vs_truth,
        error_by_step,
        error_summary,
        load_ground_truth,
    )
    from spo_helpers.analysis.plots import plot_ground_truth

    truth = data._collect(load_ground_truth, "ground_truth.parquet (made by `spo ground-truth RUN`)")
    errors = baseline_errors(data.steps, truth)
    calibration = calibration_vs_truth(data.steps, truth)
    if (calibration["method"] == "SPO").any():  # GRPO's p̂ is a side record (no offline values: 0.5 throughout)
        calibration = calibration[calibration["method"] == "SPO"]
    fig = plot_ground_truth(error_by_step(errors), errors, calibration)
    return fig, error_summary(errors, resamples=500)


@figure(
    "11_streaming",
    "measured trainable samples/s per method and schedule beside the simulation, staleness (runs with tools)",
)
def streaming_figure(data: RunData):
    """Runs with tools: measured trainable samples per second per method and schedule (``kit.schedule``), beside the
    simulation's prediction for each synchronous run's measured shape, and the staleness of trained samples."""
    from spo_helpers.analysis.plots import plot_streaming
    from spo_helpers.analysis.streaming import (
        SCHEDULE_COLUMNS,
        run_schedules,
        simulated_throughput,
        staleness_distribution,
        step_throughput,
    )

    tool_runs = set(data.metric(TOOL_CALL_RATE)["run"])
    if not tool_runs:
        raise MissingData(f"no run logged {TOOL_CALL_RATE} (throughput is compared on runs with tools)")
    schedules = run_schedules([r for r in data.runs if r.title in tool_runs])
    throughput = step_throughput(data.metrics, data.steps, schedules)
    if throughput.empty:
        raise MissingData(f"no run with tools logged {TIMING_STEP} beside steps.jsonl")
    predicted = simulated_throughput(data.metrics, schedules)
    fig = plot_streaming(throughput, staleness_distribution(data.steps, schedules), predicted)
    table = throughput.groupby(list(SCHEDULE_COLUMNS), dropna=False)["samples_per_s"].mean().reset_index()
    if not predicted.empty:
        table = table.merge(predicted[["run", "predicted_sync", "predicted_stream"]], on="run", how="left")
    return fig, table


# ---------------------------------------------------------------------------------------------- the set
FIGURES: tuple[FigureSpec, ...] = tuple(_ENTERED)
"""Every figure of the set, in file order: the builders above, each entered by its ``@figure``."""
FIGURE_STEMS: dict[str, str] = {spec.stem: spec.description for spec in FIGURES}
"""Stem -> what the figure shows, in file order."""


def result_tables(data: RunData) -> dict[str, pd.DataFrame]:
    """``results_table`` (the paper's layout from each run's last validation step, percent, mean over runs),
    ``validation_table`` (every validation statistic behind it and the curves) and, when both methods have
    dumps, ``paired_table``: SPO - GRPO on the same problems at each run's last step (avg@n, maj@n; seeds averaged
    per problem), with a paired 95% bootstrap interval over problems. Raises ``MissingData`` without validation
    dumps."""
    results = results_table(data.validation_last)
    validation = pd.concat([data.validation_last, data.validation_all_steps], ignore_index=True)
    validation = validation.drop_duplicates([*RUN_COLUMNS, "step", "data_source", "metric", "k"])
    tables = {"results_table": results, "validation_table": validation}
    paired = paired_table(data)
    if paired is not None:
        tables["paired_table"] = paired
    return tables


def paired_table(data: RunData) -> pd.DataFrame | None:
    """SPO - GRPO on the same validation problems (each run's last dump), or None without both methods."""
    from spo_helpers.analysis.evaluation import evaluation_scores, paired_comparison
    from spo_helpers.analysis.validation import load_validation

    methods = {r.method for r in data.runs}
    if not {"SPO", "GRPO"} <= methods:
        return None
    raw, _ = collect(data.runs, load_validation)
    if raw.empty:
        return None
    raw = raw[raw["step"] == raw.groupby("run")["step"].transform("max")]
    sizes = raw.groupby(["run", "prompt_key"]).size()
    n = int(sizes.min()) if len(sizes) else 0
    if n < 1:
        return None
    scores = evaluation_scores(raw, ks=[n])
    scores = scores[(scores["k"] == n) & scores["metric"].isin(["avg", "maj"])]
    paired = paired_comparison(scores)
    return paired if not paired.empty else None


__all__ = [
    "FIGURES",
    "FIGURE_STEMS",
    "INLINE_DPI",
    "SAVED_DPI",
    "THROUGHPUT_STEPS",
    "THROUGHPUT_SWEEP",
    "TOOL_USE_SERIES",
    "BuiltFigure",
    "FigureSpec",
    "advantages_figure",
    "curriculum_figure",
    "figure",
    "ground_truth_figure",
    "learning_curves_figure",
    "paired_table",
    "reliability_figure",
    "result_tables",
    "rho_drift_figure",
    "streaming_figure",
    "throughput_sweep_figure",
    "tool_use_figure",
    "value_distributions_figure",
    "zero_advantage_figure",
]
