"""Stage 05: every analysis figure the available data supports, with the CSV behind each (the files it writes:
docs/pipeline.md).

The figures are built by ``spo_helpers.analysis.figure_set``, whose builders notebook 05 calls too: this
module is only the command (its arguments, the files and the report).
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spo_helpers.analysis import RunInfo
from spo_helpers.analysis.figure_set import FIGURES, SAVED_DPI, result_tables
from spo_helpers.analysis.run_data import RunData
from spo_helpers.errors import MissingData, UserError
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_text
from spo_helpers.formats.layout import PipelineLayout
from spo_helpers.progress import progress_bar

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "FigureReport",
    "add_arguments",
    "build_figures",
    "default_output_dir",
    "print_report",
    "run",
    "save_figure",
    "save_table",
    "write_figures",
]

FORMATS = ("png", "pdf", "svg")
DEFAULT_FORMATS = ("png", "pdf")
RESULTS_STEM = "results_table"


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


# ---------------------------------------------------------------------------------------------- writing
def save_figure(
    fig, stem: str, output_dir: Path, formats: Sequence[str], rendered: dict[str, bytes] | None = None
) -> list[Path]:
    """Render ``fig`` once per format into memory, then write each file atomically; ``rendered`` (when given)
    gets each format's bytes."""
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(buffer, format=fmt, dpi=SAVED_DPI, bbox_inches="tight", metadata=metadata)
        paths.append(atomic_write_bytes(output_dir / f"{stem}.{fmt}", buffer.getvalue()))
        if rendered is not None:
            rendered[fmt] = buffer.getvalue()
    return paths


def save_table(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write_text(path, frame.to_csv(index=False))


def default_output_dir(paths: Sequence[str | os.PathLike]) -> Path:
    """``<first path>/figures`` (a run or a pipeline folder: the same folder name)."""
    return PipelineLayout(Path(paths[0]).expanduser()).figures


def build_figures(
    paths: RunData | Iterable[str | os.PathLike] | str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    simulation: bool = True,
    progress: bool = True,
) -> FigureReport:
    """Write every figure of ``figure_set.FIGURES`` the data supports; see the module docstring.

    ``paths``: run or pipeline folders, or their already loaded ``RunData``. Raises for missing paths only.
    ``progress``: a bar over the figures (a widget in a notebook, on a terminal's stderr; none headless).
    """
    if isinstance(paths, RunData):
        data = paths
    else:
        roots = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        if not roots:
            raise UserError("give at least one run or pipeline folder")
        data = RunData.from_paths(roots)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown figure formats {bad}; choose from {list(FORMATS)}")
    out = Path(output_dir) if output_dir is not None else default_output_dir(data.roots)
    out.mkdir(parents=True, exist_ok=True)
    report = FigureReport(output_dir=out, runs=data.runs)
    quiet = {} if progress else {"disable": True}
    bar = progress_bar(FIGURES, desc="figures", unit="figure", terminal=None, **quiet)
    for spec in bar:
        bar.set_postfix_str(spec.stem, refresh=True)
        if spec.simulation and not simulation:
            report.skipped[spec.stem] = "simulation turned off (--no-simulation)"
            continue
        built = spec.build(data)
        if built.figure is None:
            report.skipped[built.stem] = str(built.skipped)
            continue
        rendered: dict[str, bytes] = {}
        files = save_figure(built.figure, built.stem, out, formats, rendered)
        files.append(save_table(built.table, out / f"{built.stem}.csv"))
        built.png = rendered.get("png")
        report.written[built.stem] = files
    bar.set_postfix_str("tables", refresh=True)
    try:
        tables = result_tables(data)
    except MissingData as err:
        report.skipped[RESULTS_STEM] = str(err)
    else:
        report.results = tables[RESULTS_STEM]
        report.written[RESULTS_STEM] = [save_table(frame, out / f"{name}.csv") for name, frame in tables.items()]
    bar.close()
    report.notes.extend(data.notes)
    return report


def write_figures(
    paths: RunData | Iterable[str | os.PathLike] | str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    simulation: bool = True,
    verbose: bool = True,
) -> list[Path]:
    """``build_figures`` and, if ``verbose``, the summary; returns the files written."""
    report = build_figures(paths, output_dir, formats, simulation, progress=verbose)
    if verbose:
        print_report(report)
    return report.files


def print_report(report: FigureReport) -> None:
    """The command's one-screen summary: runs, files per figure, skipped figures, notes, results table."""
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
USAGE = """\
  spo figures runs/demo                  # a pipeline folder: its runs and offline values
  spo figures OUT/spo/spo_s0 OUT/spo/grpo_s0 --output figs --formats png

Details: docs/pipeline.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run folders or pipeline folders")
    parser.add_argument("--output", metavar="DIR", default=None, help="output folder (default: <first PATH>/figures)")
    parser.add_argument(
        "--formats",
        metavar="FMT",
        nargs="+",
        choices=FORMATS,
        default=list(DEFAULT_FORMATS),
        help=f"image formats: {', '.join(FORMATS)} (default: {' '.join(DEFAULT_FORMATS)})",
    )
    parser.add_argument("--no-simulation", action="store_true", help="skip the throughput-simulation figure")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    write_figures(args.paths, args.output, args.formats, simulation=not args.no_simulation)
    return 0
