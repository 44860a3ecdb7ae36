"""spo_helpers.analysis.plots and ``spo figures``: every figure from small frames, and the command end to end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from synthetic_runs import VAL_SOURCES, write_kit_run, write_official_run, write_pipeline

from spo_helpers import analysis as A
from spo_helpers.analysis import plots as P
from spo_helpers.analysis.figure_set import FIGURE_STEMS
from spo_helpers.cli import main
from spo_helpers.stages.figures import build_figures, write_figures


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_pipeline(tmp_path_factory.mktemp("pipeline"), seeds=(0, 1))


@pytest.fixture(scope="module")
def frames(pipeline):
    runs = A.find_runs(pipeline)
    steps, _ = A.collect(runs, A.load_steps)
    prompts, _ = A.collect(runs, A.load_prompts)
    snapshots, _ = A.collect(runs, A.load_tracker_snapshots)
    metrics = A.load_runs(runs)
    return {"runs": runs, "steps": steps, "prompts": prompts, "snapshots": snapshots, "metrics": metrics}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn(fig) -> bool:
    """A figure with at least one axes holding lines, patches or collections."""
    return bool(fig.axes) and any(ax.lines or ax.patches or ax.collections for ax in fig.axes)


# ------------------------------------------------------------------------------------------ figure functions
def test_value_distributions(pipeline, frames):
    offline = A.load_offline_values(pipeline / "offline_values.json")
    snapshots = frames["snapshots"][frames["snapshots"]["run"] == "spo_s0"]
    assert len(P.plot_value_distributions(offline, snapshots).axes) == 3
    assert len(P.plot_value_distributions(offline).axes) == 2
    assert drawn(P.plot_value_distributions(None, snapshots))
    with pytest.raises(A.MissingData):
        P.plot_value_distributions(None, None)


@pytest.mark.parametrize("x", ["step", "samples", "tokens"])
def test_learning_curves_with_seed_bands(frames, x):
    validation = A.validation_table(frames["runs"], ks="n")
    curves = A.learning_curves(frames["metrics"], validation)
    per_source = {f"val mean@n · {source}" for source in VAL_SOURCES}  # two benchmarks: each one's mean@n
    assert set(curves["metric"]) == {"train reward", "val maj@n", "val pass@n"} | per_source
    fig = P.plot_learning_curves(curves, x=x, band="range")
    panels = [ax for ax in fig.axes if ax.get_label() != P.SPARE]
    assert len(panels) == 3 + len(per_source) and drawn(fig)
    assert any(c for ax in fig.axes for c in ax.collections)  # two seeds per method: a band
    one_seed = curves[curves["seed"] == 0]
    assert drawn(P.plot_learning_curves(one_seed, x=x, metrics=["train reward"]))


@pytest.mark.parametrize(
    ("count", "grid"), [(1, (1, 1)), (4, (1, 4)), (5, (2, 3)), (6, (2, 3)), (7, (2, 4)), (9, (3, 3)), (10, (3, 4))]
)
def test_panel_grids_fit_the_panels(count, grid):
    assert P.panel_grid(count) == grid
    rows, cols = grid
    assert rows * cols - count < cols  # never a row of only empty cells
    assert count <= 4 or count - (rows - 1) * cols >= 2  # no lone panel in the last row


def test_five_learning_curves_share_one_legend_in_the_empty_cell(frames):
    validation = A.validation_table(frames["runs"], ks="n")
    curves = A.learning_curves(frames["metrics"], validation)
    fig = P.plot_learning_curves(curves)
    drawn_axes = [ax for ax in fig.axes if ax.get_label() != P.SPARE]
    (spare,) = [ax for ax in fig.axes if ax.get_label() == P.SPARE]
    assert len(drawn_axes) == 5 and not any(ax.get_legend() for ax in drawn_axes)
    assert sorted(t.get_text().split(" (")[0] for t in spare.get_legend().get_texts()) == ["GRPO", "SPO"]
    assert drawn_axes[0].yaxis.get_major_formatter()(0.5, 0).endswith("%")  # accuracies read as percentages
    two = P.plot_learning_curves(curves, metrics=["train reward", "val maj@n"])
    assert len(two.axes) == 2 and len(two.legends) == 1  # no empty cell: one legend above the panels


def test_seed_bands_by_hand():
    frame = pd.DataFrame(
        {"method": "SPO", "run": ["a", "b"], "step": [1, 1], "samples": [10.0, 12.0], "value": [0.2, 0.4]}
    )
    band = P.seed_bands(frame, "samples", "value").iloc[0]
    assert band["x"] == 11.0 and band["mean"] == pytest.approx(0.3) and band["runs"] == 2
    assert band["high"] - band["low"] == pytest.approx(2 * np.std([0.2, 0.4], ddof=1))
    band = P.seed_bands(frame, "samples", "value", band="range").iloc[0]
    assert (band["low"], band["high"]) == (0.2, 0.4)


def test_zero_advantage_on_given_axes(frames):
    frame = A.zero_advantage_share(frames["steps"])
    fig, ax = plt.subplots()
    assert P.plot_zero_advantage(frame, axes=ax) is fig
    assert drawn(fig) and ax.patches  # the paper's band
    with pytest.raises(ValueError):
        P.plot_zero_advantage(frame, axes=[ax, ax])


def test_advantages(frames):
    variance = A.advantage_variance(frames["steps"])
    values = A.advantage_values(frames["steps"], max_samples=50)
    assert values.groupby(["run", "stage"]).size().max() <= 50
    assert len(P.plot_advantages(variance, values).axes) == 3
    assert drawn(P.plot_advantages(variance))


def test_reliability(frames):
    bins = A.reliability(frames["steps"])
    calibration = A.metric_series(frames["metrics"], "kit/calibration/brier", "brier")
    assert len(P.plot_reliability(bins, calibration).axes) == 3
    assert drawn(P.plot_reliability(bins[bins["run"] == "spo_s0"]))


def test_rho_drift(frames):
    spo = frames["steps"][frames["steps"]["method"] == "SPO"]
    samples = A.rho_drift(spo)
    clip = A.metric_series(frames["metrics"], "spo/rho_clip_ratio")
    visits = A.visits_per_prompt(spo, frames["snapshots"][frames["snapshots"]["method"] == "SPO"])
    assert len(P.plot_rho_drift(samples, clip, visits).axes) == 4
    assert drawn(P.plot_rho_drift(samples))


def test_curriculum(frames):
    frame = A.curriculum(frames["steps"], frames["prompts"])
    fig = P.plot_curriculum(frame)
    assert [ax.get_title() for ax in fig.axes] == ["GRPO (2 runs pooled)", "SPO (2 runs pooled)"]
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert sum(heights) == pytest.approx(5.0)  # the dataset bar and four step windows, each summing to 1


def test_throughput_sweep():
    sweep = pd.DataFrame(
        {
            "tail": [0.5, 1.0, 0.5, 1.0, 0.5, 1.0],
            "ratio": [2.0, 6.0, 2.0, 6.0, 3.0, 9.0],
            "batch_size": [64, 64, 64, 64, 256, 256],
            "group_size": [4, 4, 8, 8, 4, 4],
            "tail_param": "sigma",
        }
    )
    fig = P.plot_throughput_sweep(sweep)
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["M = 64", "M = 256"]  # equal ratios over n: one line per batch size, on one legend line
    assert ax.get_legend().get_title().get_text() == "batch size M (n = 4, 8 coincide)"
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.yaxis.get_ticklabels() if t.get_text()]
    assert len(ticks) >= 3 and all(t.endswith("x") for t in ticks)  # a readable log axis, not one "10"
    sweep.loc[sweep["group_size"] == 8, "ratio"] *= 1.5
    labels = [line.get_label() for line in P.plot_throughput_sweep(sweep).axes[0].lines]
    assert "M = 64, n = 4" in labels and "M = 64, n = 8" in labels
    with pytest.raises(A.MissingData):
        P.plot_throughput_sweep(sweep.iloc[:0])


# ------------------------------------------------------------------------------------------ spo figures
def test_write_figures_end_to_end(pipeline, capsys):
    files = write_figures([pipeline])
    out = pipeline / "figures"
    drawn = [s for s in FIGURE_STEMS if s not in ("09_tool_use", "11_streaming")]  # the pipeline's runs: no tools
    expected = {f"{stem}.{ext}" for stem in drawn for ext in ("png", "pdf", "csv")}
    expected |= {"results_table.csv", "validation_table.csv", "paired_table.csv"}  # paired: SPO - GRPO
    assert {p.name for p in files} == expected
    assert all(p.parent == out and p.stat().st_size > 0 for p in files)
    assert not list(out.glob(".*.tmp"))
    for csv in out.glob("*.csv"):
        assert len(pd.read_csv(csv)) > 0, csv.name
    results = pd.read_csv(out / "results_table.csv")
    assert {"this kit"} == set(results["source"])  # maj@4: not the paper's protocol, no paper rows
    assert "not the paper's protocol" in results["protocol"].iloc[0] and "avg maj@4 low" in results.columns
    paired = pd.read_csv(out / "paired_table.csv")  # an interval over problems says it leaves the seeds out
    assert paired["interval_over"].str.contains(r"conditional on \d+ SPO and \d+ GRPO training run").all()
    printed = capsys.readouterr().out
    assert "results (percent" in printed
    assert [line for line in printed.splitlines() if "skipped" in line] == [
        line
        for line in printed.splitlines()
        if ("09_tool_use" in line and "runs without tools" in line)
        or ("11_streaming" in line and "compared on runs with tools" in line)
    ]


def test_figures_skip_what_is_missing(tmp_path):
    official = write_official_run(tmp_path / "spo" / "SPO_official")
    report = build_figures([official], tmp_path / "figs", formats=["png"], simulation=False)
    assert "02_learning_curves_step" in report.written
    assert "02_learning_curves_samples" not in report.written  # official runs log no sample counts
    for stem in ("03_zero_advantage", "04_advantages", "05_reliability", "06_rho_drift", "07_curriculum"):
        assert stem in report.skipped, stem
    assert report.skipped["08_throughput_sweep"].startswith("simulation turned off")
    assert report.results is not None and "AIME24 maj@4" in report.results.columns


def test_figures_on_a_grpo_run_without_prompts_and_a_crashed_run(tmp_path):
    run = write_kit_run(tmp_path / "spo" / "grpo_only", "GRPO", 0)
    (run / "prompts.parquet").unlink()
    crashed = tmp_path / "spo" / "spo_crashed"
    crashed.mkdir()
    (crashed / "config.yaml").write_text("config:\n  kit: {method: SPO, seed: 3}\nstage: train\n")
    report = build_figures([run, crashed], formats=["png"], simulation=False)
    assert report.output_dir == run / "figures"
    assert "06_rho_drift" in report.skipped and "07_curriculum" in report.skipped
    assert {"02_learning_curves_step", "05_reliability"} <= set(report.written)
    assert any("spo_crashed" in note for note in report.notes)


def test_cli(pipeline, tmp_path, capsys):
    out = tmp_path / "cli_figs"
    args = ["figures", str(pipeline / "spo" / "spo_s0"), "--output", str(out), "--formats", "png", "--no-simulation"]
    assert main(args) == 0
    assert (out / "03_zero_advantage.png").is_file() and not (out / "03_zero_advantage.pdf").exists()
    assert main(["figures", str(tmp_path / "missing")]) == 2
    assert "no such run or pipeline folder" in capsys.readouterr().err
