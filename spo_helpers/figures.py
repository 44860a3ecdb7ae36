"""Stage 05: every analysis figure the available data supports, with the CSV behind each.

    spo figures runs/demo                          # a pipeline folder: its runs and offline values
    spo figures OUT/spo/spo_s0 OUT/spo/grpo_s0 --output figs --formats png

Each path is a run folder (the kit's or the official recipe's) or a pipeline folder holding several. Output
goes to ``<first path>/figures/`` unless ``--output`` says otherwise: ``<stem>.png``, ``<stem>.pdf`` and
``<stem>.csv`` per figure, plus ``results_table.csv`` (the paper's layout) and ``validation_table.csv``. Every
file is written atomically. A figure whose inputs are missing is skipped with the reason; the summary lists
what was written, what was skipped and the results table.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from spo_helpers import analysis as A
from spo_helpers.analysis import MissingData, RunInfo
from spo_helpers.core.metric_names import ZERO_ADV_FRAC
from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_text

FORMATS = ("png", "pdf", "svg")
DEFAULT_FORMATS = ("png", "pdf")
FIGURE_STEMS = {
    "01_value_distributions": "offline p̂0 (histogram, ECDF) and the tracker's p̂ over training",
    "02_learning_curves_step": "training reward and validation mean@n / maj@n / pass@n vs step",
    "02_learning_curves_samples": "the same vs generated samples",
    "02_learning_curves_tokens": "the same vs generated response tokens",
    "03_zero_advantage": "share of zero-advantage samples, GRPO vs SPO (paper's 60-80% band)",
    "04_advantages": "advantage variance and distributions before / after normalisation",
    "05_reliability": "reliability diagram of p̂ vs observed reward, with counts and the Brier score",
    "06_rho_drift": "SPO's ρ and drift D over training, ρ clip ratio, visits per prompt",
    "07_curriculum": "share of sampled prompts per difficulty bin over training",
    "08_throughput_sweep": "simulated SPO/GRPO throughput ratio vs tail weight (paper: 4.35x)",
}


@dataclass
class FigureReport:
    """What ``build_figures`` wrote and skipped."""

    output_dir: Path
    runs: list[RunInfo]
    written: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    results: pd.DataFrame | None = None

    @property
    def files(self) -> list[Path]:
        return [p for paths in self.written.values() for p in paths]


class RunData:
    """The runs' frames, loaded once on first use; runs lacking a file are noted, not fatal."""

    def __init__(self, runs: list[RunInfo], roots: Sequence[Path]) -> None:
        self.runs = runs
        self.roots = list(roots)
        self.notes: list[str] = []

    def _collect(self, loader: Callable[[RunInfo], pd.DataFrame], what: str) -> pd.DataFrame:
        frame, missing = A.collect(self.runs, loader)
        if missing and not frame.empty:
            self.notes.append(f"{what}: left out {', '.join(sorted(missing))} (missing)")
        if frame.empty:
            raise MissingData(f"no run has {what}")
        return frame

    @cached_property
    def metrics(self) -> pd.DataFrame:
        missing: dict[str, str] = {}
        frame = A.load_runs(self.runs, missing=missing)
        if missing:
            self.notes.append(f"metrics: left out {', '.join(sorted(missing))} (no metrics.jsonl or tensorboard)")
        return frame

    @cached_property
    def validation_all_steps(self) -> pd.DataFrame:
        try:
            return A.validation_table(self.runs, ks="n")
        except MissingData:
            return pd.DataFrame()

    @cached_property
    def validation_last(self) -> pd.DataFrame:
        return A.validation_table(self.runs, ks=None, steps="last")

    @cached_property
    def steps(self) -> pd.DataFrame:
        return self._collect(A.load_steps, "steps.jsonl")

    @cached_property
    def prompts(self) -> pd.DataFrame:
        return self._collect(A.load_prompts, "prompts.parquet")

    @cached_property
    def snapshots(self) -> pd.DataFrame:
        return self._collect(A.load_tracker_snapshots, "tracker snapshots")

    def optional(self, name: str) -> pd.DataFrame | None:
        try:
            return getattr(self, name)
        except MissingData:
            return None

    @cached_property
    def offline(self) -> pd.DataFrame | None:
        path = A.find_offline_values(self.roots)
        if path is not None:
            return A.load_offline_values(path)
        prompts = self.optional("prompts")
        if prompts is not None and prompts.get("has_offline_values", pd.Series(dtype=bool)).any():
            first = prompts[prompts["run"] == prompts["run"].iloc[0]]
            return first[first["has_offline_values"]][["prompt_key", "p_hat0"]]
        return None

    def metric(self, key: str, name: str = "value") -> pd.DataFrame:
        return A.metric_series(self.metrics, key, name)


Built = list[tuple[str, object, pd.DataFrame]]


def _first_spo(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the first SPO run in ``frame`` (or of its first run when there is no SPO run)."""
    runs = frame.loc[frame["method"] == "SPO", "run"] if (frame["method"] == "SPO").any() else frame["run"]
    return frame[frame["run"] == runs.iloc[0]]


# ---------------------------------------------------------------------------------------------- builders
def _value_distributions(data: RunData) -> Built:
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
    return [("01_value_distributions", fig, pd.concat(parts, ignore_index=True))]


def _learning_curves(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_learning_curves

    curves = A.learning_curves(data.metrics, data.validation_all_steps)
    built = []
    for x in ("step", "samples", "tokens"):
        rows = curves.dropna(subset=[x])
        if rows.empty:
            data.notes.append(f"02_learning_curves_{x}: no {x} counts logged (official runs)")
            continue
        built.append((f"02_learning_curves_{x}", plot_learning_curves(rows, x=x), rows))
    if not built:
        raise MissingData("no training reward or validation metrics")
    return built


def _zero_advantage(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_zero_advantage

    logged = data.metric(ZERO_ADV_FRAC, "zero_adv_frac")[[*A.RUN_COLUMNS, "step", "zero_adv_frac"]]
    steps = data.optional("steps")
    if steps is not None:
        derived = A.zero_advantage_share(steps)
        logged = pd.concat([logged, derived[~derived["run"].isin(logged["run"])]], ignore_index=True)
    if logged.empty:
        raise MissingData(f"neither {ZERO_ADV_FRAC} nor steps.jsonl advantages")
    return [("03_zero_advantage", plot_zero_advantage(logged), logged)]


def _advantages(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_advantages

    steps = data.optional("steps")
    frames = []
    if steps is not None:
        frames.append(A.advantage_variance(steps))
    for stage, key in (("before norm", "kit/adv_var_before_norm"), ("after norm", "kit/adv_var_after_norm")):
        logged = data.metric(key, "variance").assign(stage=stage)[[*A.RUN_COLUMNS, "step", "stage", "variance"]]
        done = set(frames[0]["run"]) if frames else set()
        frames.append(logged[~logged["run"].isin(done)])
    variance = pd.concat(frames, ignore_index=True)
    if variance.empty:
        raise MissingData("no advantages in steps.jsonl nor kit/adv_var_* metrics")
    values = A.advantage_values(steps) if steps is not None else None
    fig = plot_advantages(variance, values)
    parts = [variance.assign(panel="variance")]
    if values is not None:
        parts.append(values.assign(panel="values"))
    table = pd.concat(parts, ignore_index=True)
    return [("04_advantages", fig, table)]


def _reliability(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_reliability

    bins = A.reliability(data.steps.dropna(subset=["p_hat"]))
    calibration = data.metric("kit/calibration/brier", "brier")
    fig = plot_reliability(bins, calibration if not calibration.empty else None)
    return [("05_reliability", fig, bins)]


def _rho_drift(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_rho_drift

    samples = A.rho_drift(data.steps)
    spo_runs = set(samples["run"])
    clip = data.metric("spo/rho_clip_ratio")
    clip = clip[clip["run"].isin(spo_runs)]
    snapshots = data.optional("snapshots")
    snapshots = snapshots[snapshots["run"].isin(spo_runs)] if snapshots is not None else None
    spo_steps = data.steps[data.steps["run"].isin(spo_runs)]
    visits = A.visits_per_prompt(spo_steps, snapshots, data.optional("prompts"))
    fig = plot_rho_drift(samples, clip if not clip.empty else None, visits)
    return [("06_rho_drift", fig, A.rho_drift_summary(samples))]


def _curriculum(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_curriculum

    frame = A.curriculum(data.steps, data.prompts)
    left_out = set(data.steps["run"]) - set(frame["run"])
    if left_out:
        data.notes.append(f"07_curriculum: left out {', '.join(sorted(left_out))} (no prompts.parquet)")
    return [("07_curriculum", plot_curriculum(frame), frame)]


def _throughput(data: RunData) -> Built:
    from spo_helpers.analysis.plots import plot_throughput_sweep
    from spo_helpers.simulate import SimConfig, sweep

    frame = sweep(
        SimConfig(steps=20), group_sizes=(4, 8, 16), batch_sizes=(256, 1024), tails=(0.25, 0.5, 0.75, 1.0, 1.5)
    )
    return [("08_throughput_sweep", plot_throughput_sweep(frame), frame)]


BUILDERS: dict[str, Callable[[RunData], Built]] = {
    "01_value_distributions": _value_distributions,
    "02_learning_curves": _learning_curves,
    "03_zero_advantage": _zero_advantage,
    "04_advantages": _advantages,
    "05_reliability": _reliability,
    "06_rho_drift": _rho_drift,
    "07_curriculum": _curriculum,
    "08_throughput_sweep": _throughput,
}


# ---------------------------------------------------------------------------------------------- writing
def save_figure(fig, stem: str, output_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Render ``fig`` once per format into memory, then write each file atomically."""
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(buffer, format=fmt, dpi=120, bbox_inches="tight", metadata=metadata)
        paths.append(atomic_write_bytes(output_dir / f"{stem}.{fmt}", buffer.getvalue()))
    return paths


def save_table(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write_text(path, frame.to_csv(index=False))


def default_output_dir(paths: Sequence[str | os.PathLike]) -> Path:
    """``<first path>/figures`` (a run or pipeline folder)."""
    return Path(paths[0]).expanduser() / "figures"


def build_figures(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    simulation: bool = True,
) -> FigureReport:
    """Write every figure the data supports; see the module docstring. Raises for missing paths only."""
    import matplotlib.pyplot as plt

    roots = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if not roots:
        raise UserError("give at least one run or pipeline folder")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown figure formats {bad}; choose from {list(FORMATS)}")
    runs = A.find_runs(roots)
    out = Path(output_dir) if output_dir is not None else default_output_dir(roots)
    out.mkdir(parents=True, exist_ok=True)
    data = RunData(runs, roots)
    report = FigureReport(output_dir=out, runs=runs)
    for name, builder in BUILDERS.items():
        if name == "08_throughput_sweep" and not simulation:
            report.skipped[name] = "simulation turned off (--no-simulation)"
            continue
        try:
            built = builder(data)
        except MissingData as err:
            report.skipped[name] = str(err)
            continue
        for stem, fig, frame in built:
            try:
                files = save_figure(fig, stem, out, formats)
            finally:
                plt.close(fig)
            files.append(save_table(frame, out / f"{stem}.csv"))
            report.written[stem] = files
    try:
        report.results = A.results_table(data.validation_last)
        val = pd.concat([data.validation_last, data.validation_all_steps], ignore_index=True)
        val = val.drop_duplicates([*A.RUN_COLUMNS, "step", "data_source", "metric", "k"])
        report.written["results_table"] = [
            save_table(report.results, out / "results_table.csv"),
            save_table(val, out / "validation_table.csv"),
        ]
    except MissingData as err:
        report.skipped["results_table"] = str(err)
    report.notes.extend(data.notes)
    return report


def write_figures(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    simulation: bool = True,
    verbose: bool = True,
) -> list[Path]:
    """``build_figures`` and, if ``verbose``, the summary; returns the files written."""
    report = build_figures(paths, output_dir, formats, simulation)
    if verbose:
        print_report(report)
    return report.files


def print_report(report: FigureReport) -> None:
    runs = ", ".join(f"{r.title} ({r.method}, seed {r.seed}, {r.kind})" for r in report.runs)
    print(f"spo figures: {len(report.runs)} run(s): {runs}")
    print(f"written to {report.output_dir}:")
    for stem, files in report.written.items():
        same = all(p.stem == stem for p in files)
        print(f"  {stem}: {', '.join(p.suffix.lstrip('.') if same else p.name for p in files)}")
    for stem, reason in report.skipped.items():
        print(f"  skipped {stem}: {reason}")
    for note in report.notes:
        print(f"  note: {note}")
    if report.results is not None:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print("results (percent; each run's last validation step; mean over runs):")
            for source, rows in report.results.groupby("source", sort=False):
                table = rows.drop(columns="source").dropna(axis=1, how="all")
                print(f"  {source}:")
                print("    " + table.round(1).to_string(index=False).replace("\n", "\n    "))


# ---------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run folders or pipeline folders")
    parser.add_argument("--output", metavar="DIR", default=None, help="output folder (default: <first PATH>/figures)")
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(DEFAULT_FORMATS), help="image formats (default: png pdf)"
    )
    parser.add_argument("--no-simulation", action="store_true", help="skip the throughput-simulation figure")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    write_figures(args.paths, args.output, args.formats, simulation=not args.no_simulation)
    return 0
