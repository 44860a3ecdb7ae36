"""One function per analysis figure. Each takes tidy frames from ``spo_helpers.analysis`` and returns a Figure.

``axes``: None (a new figure), an Axes (one-panel figures) or a sequence of Axes, one per panel the function
draws (``panels`` in its docstring). A frame with no usable rows raises ``MissingData``. Several runs of one
method (seeds) are drawn as their mean with a band: ``band="sd"`` (mean ± sd) or ``"range"`` (min-max). What a
figure leaves out (rows without values, metrics asked for but absent) is reported through ``logging``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter

from spo_helpers.analysis.paper import PAPER_RATIO, PAPER_ZERO_ADV_BAND
from spo_helpers.errors import MissingData

logger = logging.getLogger(__name__)

METHOD_COLORS = {"GRPO": "#4C72B0", "SPO": "#DD8452"}
X_LABELS = {"step": "training step", "samples": "generated samples", "tokens": "generated response tokens"}


# ---------------------------------------------------------------------------------------------- helpers
def method_color(method: str, index: int = 0) -> str:
    """Fixed colours for GRPO and SPO, the default cycle for anything else."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle[(index + 2) % len(cycle)]


def panel_grid(count: int, max_cols: int = 4) -> tuple[int, int]:
    """Rows and columns for ``count`` panels: one row up to ``max_cols``, else the fewest rows with balanced
    columns (5 -> 3 + 2, 7 -> 4 + 3, 9 -> 3 x 3), so no row holds a lone panel."""
    if count <= max_cols:
        return 1, max(count, 1)
    rows = -(-count // max_cols)
    return rows, -(-count // rows)


SPARE = "spare panel"
"""The label of a grid cell left empty by ``_panels``: ``shared_legend`` puts the legend there."""


def _panels(axes: Axes | Sequence[Axes] | None, count: int, width: float = 4.2, height: float = 3.4, max_cols: int = 4):
    """(figure, list of ``count`` Axes): new ones laid out by ``panel_grid``, or the caller's.

    Grid cells beyond ``count`` are hidden and kept for ``shared_legend``.
    """
    if axes is None:
        rows, cols = panel_grid(count, max_cols)
        fig, created = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
        flat = list(created.ravel())
        for extra in flat[count:]:
            extra.set_axis_off()
            extra.set_label(SPARE)
        return fig, flat[:count]
    given = [axes] if isinstance(axes, Axes) else list(axes)
    if len(given) != count:
        raise ValueError(f"this figure draws {count} panel(s); got {len(given)} Axes")
    return given[0].figure, given


def panels(count: int, width: float = 4.2, height: float = 3.4, max_cols: int = 4):
    """A new figure of ``count`` panels laid out by ``panel_grid``: (figure, list of Axes)."""
    return _panels(None, count, width, height, max_cols)


def shared_legend(fig: Figure, axes: Sequence[Axes], title: str | None = None, fontsize: float = 9) -> None:
    """One legend for every panel's series (each label once): in the grid's empty cell when there is one,
    else in a row above the panels. Call after ``tight_layout``."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels and not label.startswith("_"):
                handles.append(handle)
                labels.append(label)
    if not handles:
        return
    spare = [ax for ax in fig.axes if ax.get_label() == SPARE]
    if spare:
        spare[0].legend(handles, labels, loc="center", title=title, fontsize=fontsize, frameon=False)
        return
    fig.legend(
        handles,
        labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=min(len(labels), 4),
        title=title,
        fontsize=fontsize,
        frameon=False,
    )


def _require(frame: pd.DataFrame | None, columns: Sequence[str], what: str) -> pd.DataFrame:
    if frame is None or frame.empty:
        raise MissingData(f"{what}: no data")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingData(f"{what}: missing columns {missing}")
    rows = frame.dropna(subset=list(columns))
    if rows.empty:
        raise MissingData(f"{what}: no rows with {', '.join(columns)}")
    if len(rows) < len(frame):
        logger.debug("%s: left out %d of %d rows without %s", what, len(frame) - len(rows), len(frame), columns)
    return rows


def seed_bands(frame: pd.DataFrame, x: str, y: str, by: Sequence[str] = ("method",), band: str = "sd"):
    """Per ``by`` and step: mean x, mean y, the band (``low``, ``high``) and the number of runs."""
    if band not in ("sd", "range"):
        raise ValueError(f"band must be 'sd' or 'range', got {band!r}")
    grouped = frame.groupby([*by, "step"], sort=True)
    out = grouped.agg(x=(x, "mean"), mean=(y, "mean"), sd=(y, "std"), low=(y, "min"), high=(y, "max"))
    out["runs"] = grouped.size()
    if band == "sd":
        spread = out["sd"].fillna(0.0)
        out["low"], out["high"] = out["mean"] - spread, out["mean"] + spread
    return out.reset_index()


def _lines(ax: Axes, frame: pd.DataFrame, x: str, y: str, band: str, label_suffix: str = "", **style) -> None:
    """One line per method; several runs of a method become mean + band."""
    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if "method" not in frame.columns:
        frame = frame.assign(method="run")
    for index, (method, rows) in enumerate(frame.groupby("method", sort=True)):
        color = method_color(str(method), index)
        runs = rows["run"].nunique() if "run" in rows.columns else 1
        marker = "o" if rows["step"].nunique() <= 12 else None
        if runs > 1:
            agg = seed_bands(rows, x, y, band=band)
            label = f"{method}{label_suffix} (mean of {runs}, {'±sd' if band == 'sd' else 'min-max'})"
            ax.plot(agg["x"], agg["mean"], color=color, marker=marker, ms=3, label=label, **style)
            ax.fill_between(agg["x"], agg["low"], agg["high"], color=color, alpha=0.2, lw=0)
        else:
            rows = rows.sort_values("step")
            bounded = {"low", "high"} <= set(rows.columns) and rows[["low", "high"]].notna().all(axis=1).any()
            label = f"{method}{label_suffix}" + (" (95% CI over problems)" if bounded else "")
            ax.plot(rows[x], rows[y], color=color, marker=marker, ms=3, label=label, **style)
            if bounded:
                known = rows.dropna(subset=["low", "high"])
                ax.fill_between(known[x], known["low"], known["high"], color=color, alpha=0.2, lw=0)


def pick_steps(steps: Sequence[int], count: int = 6) -> list[int]:
    """At most ``count`` of ``steps``, evenly spread, first and last included."""
    ordered = sorted({int(s) for s in steps})
    if len(ordered) <= count:
        return ordered
    return [ordered[i] for i in np.unique(np.linspace(0, len(ordered) - 1, count).round().astype(int))]


# ---------------------------------------------------------------------------------------------- (1) values
def plot_value_distributions(
    offline: pd.DataFrame | None, snapshots: pd.DataFrame | None = None, axes=None, max_curves: int = 6
) -> Figure:
    """Offline values p̂0 (histogram, ECDF) and the tracker's p̂ over training (ECDF per snapshot step).

    panels: 2 with ``offline`` only, 1 with ``snapshots`` only, 3 with both.
    """
    has_offline = offline is not None and not offline.empty and "p_hat0" in offline.columns
    has_snapshots = snapshots is not None and not snapshots.empty and "p_hat" in snapshots.columns
    if not (has_offline or has_snapshots):
        raise MissingData("value distributions: neither offline values nor tracker snapshots")
    import seaborn as sns

    fig, ax = _panels(axes, 2 * has_offline + has_snapshots)
    if has_offline:
        values = offline["p_hat0"].dropna()
        sns.histplot(x=values, bins=np.linspace(0, 1, 21), color="#55A868", ax=ax[0])
        ax[0].set(xlabel="offline p̂0 = (s + 0.5) / (n + 1)", ylabel="prompts", title=f"offline values ({len(values)})")
        sns.ecdfplot(x=values, color="#55A868", ax=ax[1])
        ax[1].set(xlabel="offline p̂0", ylabel="share of prompts ≤ p̂0", title="ECDF of p̂0", xlim=(0, 1))
        ax[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    if has_snapshots:
        target = ax[-1]
        steps = pick_steps(snapshots["step"].unique(), max_curves)
        chosen = snapshots[snapshots["step"].isin(steps)].assign(step=lambda f: f["step"].astype(int))
        palette = dict(zip(steps, sns.color_palette("viridis", len(steps)), strict=True))
        sns.ecdfplot(data=chosen, x="p_hat", hue="step", palette=palette, ax=target)
        title = "tracker p̂ over training"
        if "run" in snapshots.columns and snapshots["run"].nunique() == 1:
            title += f" ({snapshots['run'].iloc[0]})"
        target.set(xlabel="tracker p̂", ylabel="share of prompts ≤ p̂", title=title, xlim=(0, 1))
        target.yaxis.set_major_formatter(PercentFormatter(1.0))
        legend = target.get_legend()
        if legend is not None:
            legend.set_title("step", prop={"size": 8})
            for text in legend.get_texts():
                text.set_fontsize(7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (2) curves
def plot_learning_curves(
    curves: pd.DataFrame, x: str = "step", metrics: Sequence[str] | None = None, band: str = "sd", axes=None
) -> Figure:
    """Training reward and validation accuracy (mean@n, maj@n, pass@n) against ``x`` (step, samples or tokens),
    one panel per metric, GRPO vs SPO: several seeds of a method as mean and seed band, one run with its 95%
    bootstrap band over problems (``low``/``high`` of ``learning_curves``). panels: one per metric."""
    rows = _require(curves, ["step", x, "metric", "value"], f"learning curves vs {x}")
    names = list(metrics) if metrics is not None else list(dict.fromkeys(rows["metric"]))
    absent = [m for m in names if not (rows["metric"] == m).any()]
    names = [m for m in names if m not in absent]
    if not names:
        raise MissingData(f"learning curves vs {x}: none of the metrics {metrics} present")
    if absent:
        logger.info("learning curves vs %s: no %s in the data, drawn without", x, ", ".join(absent))
    max_cols = 3 if len(names) > 4 else 4  # five curves: 3 + 2 and the legend in the sixth cell
    cols = panel_grid(len(names), max_cols)[1]
    fig, ax = _panels(axes, len(names), width=3.8, max_cols=max_cols)
    for index, (panel, name) in enumerate(zip(ax, names, strict=True)):
        _lines(panel, rows[rows["metric"] == name], x, "value", band)
        panel.set(xlabel=X_LABELS.get(x, x), title=name)
        panel.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=_percent_decimals(panel)))
        panel.grid(alpha=0.3)
        if index % cols == 0:
            panel.set_ylabel("accuracy / reward")
    fig.tight_layout()
    shared_legend(fig, ax)
    return fig


def _percent_decimals(ax: Axes) -> int:
    """Decimals a percent axis needs to tell its ticks apart (0 for spans over 5 points, else 1)."""
    low, high = ax.get_ylim()
    return 0 if high - low > 0.05 else 1


# ---------------------------------------------------------------------------------------------- (3) zero advantage
def plot_zero_advantage(frame: pd.DataFrame, band: str = "sd", axes=None) -> Figure:
    """Share of samples with zero advantage per step, GRPO vs SPO, with the paper's 60-80% band. panels: 1."""
    rows = _require(frame, ["step", "zero_adv_frac", "method"], "zero-advantage share")
    fig, (ax,) = _panels(axes, 1, width=5.5)
    low, high = PAPER_ZERO_ADV_BAND
    ax.axhspan(low, high, color="grey", alpha=0.15, lw=0)
    ax.text(
        0.01, (low + high) / 2, "paper: 60-80% for GRPO", transform=ax.get_yaxis_transform(), va="center", fontsize=8
    )
    _lines(ax, rows, "step", "zero_adv_frac", band)
    ax.set(xlabel="training step", ylabel="samples with zero advantage", ylim=(-0.02, 1.02))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("zero-advantage samples (no gradient)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- tool use
def plot_tool_use(frame: pd.DataFrame, band: str = "sd", axes=None) -> Figure:
    """Tool-integrated runs: share of samples that ran code, and training accuracy with and without a code run,
    per step and method. ``frame``: step, method, run, metric (``call rate`` | ``accuracy`` | ``accuracy, ran
    code`` | ``accuracy, no code``), value. panels: 2."""
    rows = _require(frame, ["step", "metric", "value", "method"], "tool use")
    fig, ax = _panels(axes, 2, width=5.0)
    _lines(ax[0], rows[rows["metric"] == "call rate"].rename(columns={"value": "rate"}), "step", "rate", band)
    ax[0].set(xlabel="training step", ylabel="samples that ran code", ylim=(-0.02, 1.02), title="tool-call rate")
    for metric, style in (("accuracy", "-"), ("accuracy, ran code", "--"), ("accuracy, no code", ":")):
        part = rows[rows["metric"] == metric]
        if not part.empty:
            suffix = "" if metric == "accuracy" else f", {metric.split(', ')[1]}"
            _lines(ax[1], part, "step", "value", band, label_suffix=suffix, linestyle=style)
    ax[1].set(xlabel="training step", ylabel="training reward (share correct)", ylim=(-0.02, 1.02))
    ax[1].set_title("accuracy with and without the tool")
    for panel in ax:
        panel.yaxis.set_major_formatter(PercentFormatter(1.0))
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (4) advantages
def plot_advantages(variance: pd.DataFrame, values: pd.DataFrame | None = None, band: str = "sd", axes=None) -> Figure:
    """Advantage variance per step before/after normalisation, and (with ``values``) their distributions.

    panels: 1 without ``values``, 3 with.
    """
    rows = _require(variance, ["step", "stage", "variance", "method"], "advantage variance")
    has_values = values is not None and not values.empty
    fig, ax = _panels(axes, 3 if has_values else 1)
    for stage, style in (("before norm", "-"), ("after norm", "--")):
        part = rows[rows["stage"] == stage]
        if not part.empty:
            _lines(ax[0], part, "step", "variance", band, label_suffix=f", {stage}", linestyle=style)
    positive = rows["variance"] > 0
    if positive.any() and rows.loc[positive, "variance"].max() / rows.loc[positive, "variance"].min() > 50:
        ax[0].set_yscale("log")
    ax[0].set(xlabel="training step", ylabel="variance over the batch", title="advantage variance")
    ax[0].legend(fontsize=7)
    ax[0].grid(alpha=0.3)
    if has_values:
        for panel, stage in zip(ax[1:], ("before norm", "after norm"), strict=True):
            part = values[values["stage"] == stage]
            for index, (method, group) in enumerate(part.groupby("method", sort=True)):
                data = group["value"].dropna().to_numpy()
                if data.size:
                    bins = np.histogram_bin_edges(data, bins=40)
                    panel.hist(
                        data, bins=bins, density=True, histtype="step", lw=1.5, color=method_color(method, index)
                    )
                    panel.plot([], [], color=method_color(method, index), label=method)
            panel.set(xlabel="advantage", ylabel="density", title=f"advantages {stage}")
            panel.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (5) reliability
def plot_reliability(bins: pd.DataFrame, calibration: pd.DataFrame | None = None, axes=None) -> Figure:
    """Reliability diagram: mean observed reward per p̂ bin (marker area ~ count), counts per bin, and with
    ``calibration`` (``step, brier`` per run) the Brier score over training. panels: 2, or 3 with calibration."""
    rows = _require(bins, ["p_hat_mean", "reward_mean", "count", "bin_left", "bin_right"], "reliability")
    has_cal = calibration is not None and not calibration.empty and "brier" in calibration.columns
    fig, ax = _panels(axes, 3 if has_cal else 2)
    ax[0].plot([0, 1], [0, 1], color="grey", lw=1, linestyle=":", label="perfect calibration")
    runs = list(dict.fromkeys(rows["run"])) if "run" in rows.columns else [None]
    width = float((rows["bin_right"] - rows["bin_left"]).iloc[0]) / max(len(runs), 1)
    for index, run in enumerate(runs):
        part = rows if run is None else rows[rows["run"] == run]
        method = str(part["method"].iloc[0]) if "method" in part.columns else "run"
        color = method_color(method, index) if len(runs) <= 2 else plt.cm.tab10(index % 10)
        label = method if run is None or len(runs) <= 2 else f"{method} ({run})"
        sizes = 15 + 185 * part["count"] / max(rows["count"].max(), 1)
        ax[0].plot(part["p_hat_mean"], part["reward_mean"], color=color, lw=1, alpha=0.7)
        ax[0].scatter(part["p_hat_mean"], part["reward_mean"], s=sizes, color=color, alpha=0.8, label=label)
        full = bins if run is None else bins[bins["run"] == run]
        ax[1].bar(full["bin_left"] + index * width, full["count"], width=width, align="edge", color=color, label=label)
    ax[0].set(xlabel="tracker p̂ (bin mean)", ylabel="observed reward", xlim=(0, 1), ylim=(-0.02, 1.02))
    ax[0].set_title("reliability of p̂ (area ~ samples)")
    ax[0].legend(fontsize=7)
    ax[1].set(xlabel="tracker p̂", ylabel="samples", title="samples per p̂ bin", xlim=(0, 1))
    ax[1].legend(fontsize=7)
    if has_cal:
        _lines(ax[2], calibration.dropna(subset=["brier"]), "step", "brier", "sd")
        ax[2].set(xlabel="training step", ylabel="mean (p̂ - r)²", title="Brier score of p̂")
        ax[2].legend(fontsize=7)
        ax[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (6) rho and D
def plot_rho_drift(
    samples: pd.DataFrame, clip: pd.DataFrame | None = None, visits: pd.DataFrame | None = None, axes=None
) -> Figure:
    """SPO's forgetting factor: ρ and drift D per step window (D on revisits only), the ρ clip ratio per step
    (``clip``: ``step, value``) and visits per prompt (``visits``: ``row, visits``).

    panels: 2, plus one for each of ``clip`` and ``visits`` given.
    """
    rows = _require(samples, ["window", "rho", "drift"], "rho / drift")
    has_clip = clip is not None and not clip.empty
    has_visits = visits is not None and not visits.empty
    fig, ax = _panels(axes, 2 + has_clip + has_visits)
    windows = list(rows["window"].cat.categories) if hasattr(rows["window"], "cat") else sorted(rows["window"])
    windows = [w for w in windows if (rows["window"] == w).any()]

    def boxes(panel: Axes, data: pd.DataFrame, column: str) -> None:
        groups = [data.loc[data["window"] == w, column].dropna().to_numpy() for w in windows]
        keep = [(w, g) for w, g in zip(windows, groups, strict=True) if g.size]
        if keep:
            panel.boxplot([g for _, g in keep], tick_labels=[str(w) for w, _ in keep], showfliers=False)
        else:
            panel.text(0.5, 0.5, "no revisits yet", ha="center", va="center", transform=panel.transAxes)
        panel.tick_params(axis="x", labelrotation=30, labelsize=7)

    boxes(ax[0], rows, "rho")
    ax[0].set(xlabel="step window", ylabel="ρ (clipped)", title="forgetting factor ρ")
    revisits = rows[~rows["first_visit"]] if "first_visit" in rows.columns else rows
    boxes(ax[1], revisits, "drift")
    ax[1].set(xlabel="step window", ylabel="D (nats / token)", title="policy drift D on revisits")
    position = 2
    if has_clip:
        _lines(ax[position], clip.dropna(subset=["value"]), "step", "value", "sd")
        ax[position].set(xlabel="training step", ylabel="share of samples", title="ρ clipped", ylim=(-0.02, 1.02))
        ax[position].yaxis.set_major_formatter(PercentFormatter(1.0))
        ax[position].legend(fontsize=7)
        position += 1
    if has_visits:
        counts = visits["visits"].to_numpy()
        edges = np.arange(counts.min(), counts.max() + 2) - 0.5
        ax[position].hist(counts, bins=edges, color=METHOD_COLORS["SPO"], edgecolor="white")
        ax[position].set(xlabel="visits", ylabel="prompts", title="visits per prompt")
        ax[position].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (7) curriculum
def plot_curriculum(frame: pd.DataFrame, axes=None) -> Figure:
    """Which difficulty bins get sampled over time: stacked shares per step window, one panel per method (its
    runs pooled), with the dataset's own shares as the first bar. panels: one per method."""
    rows = _require(frame, ["window", "bin", "count"], "curriculum")
    methods = list(dict.fromkeys(rows["method"])) if "method" in rows.columns else [None]
    fig, ax = _panels(axes, len(methods), width=4.6)
    for panel, method in zip(ax, methods, strict=True):
        part = rows if method is None else rows[rows["method"] == method]
        counts = part.pivot_table(index="window", columns="bin", values="count", aggfunc="sum", observed=True)
        table = counts.div(counts.sum(axis=1).where(lambda t: t > 0), axis=0).fillna(0.0)
        if "dataset_share" in part.columns:
            dataset = part.groupby("bin", observed=True)["dataset_share"].mean()
            table = pd.concat([dataset.reindex(table.columns).to_frame("dataset").T, table])
        colors = plt.cm.viridis(np.linspace(0.05, 0.95, len(table.columns)))
        bottom = np.zeros(len(table))
        labels = [str(i) for i in table.index]
        for color, column in zip(colors, table.columns, strict=True):
            panel.bar(labels, table[column].to_numpy(), bottom=bottom, color=color, label=str(column), width=0.8)
            bottom += table[column].to_numpy()
        runs = part["run"].nunique() if "run" in part.columns else 1
        title = f"{method or 'sampled prompts'}" + (f" ({runs} runs pooled)" if runs > 1 else "")
        panel.set(xlabel="step window", ylabel="share of sampled prompts", ylim=(0, 1))
        panel.set_title(title, fontsize=10)
        panel.yaxis.set_major_formatter(PercentFormatter(1.0))
        panel.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax[-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (8) throughput
def plot_throughput_sweep(sweep: pd.DataFrame, axes=None) -> Figure:
    """SPO/GRPO throughput ratio against the tail weight (``spo_helpers.stages.simulate.sweep``), one line per batch
    size and group size, the paper's 4.35x marked. panels: 1."""
    rows = _require(sweep, ["tail", "ratio", "batch_size", "group_size"], "throughput sweep")
    fig, (ax,) = _panels(axes, 1, width=5.5, height=3.8)
    batches = sorted(rows["batch_size"].unique())
    colors = plt.cm.plasma(np.linspace(0.1, 0.75, len(batches)))
    markers = ["o", "s", "^", "D", "v", "P"]
    alike = []  # batch sizes whose ratio does not depend on the group size: one line for all n
    for color, batch in zip(colors, batches, strict=True):
        part = rows[rows["batch_size"] == batch]
        table = part.pivot_table(index="tail", columns="group_size", values="ratio", aggfunc="mean").sort_index()
        if np.allclose(table.to_numpy(), table.to_numpy()[:, :1], rtol=1e-9, equal_nan=True):
            alike.append(batch)
            ax.plot(table.index, table.iloc[:, 0], color=color, marker="o", ms=4, label=f"M = {batch}")
            continue
        for index, group in enumerate(table.columns):
            marker = markers[index % len(markers)]
            ax.plot(table.index, table[group], color=color, marker=marker, ms=4, label=f"M = {batch}, n = {group}")
    ax.axhline(PAPER_RATIO, color="black", linestyle="--", lw=1)
    ax.text(0.01, PAPER_RATIO, f" paper: {PAPER_RATIO}x", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8)
    tail = str(rows["tail_param"].iloc[0]) if "tail_param" in rows.columns else "tail"
    ax.set(xlabel=f"tail weight ({tail or 'tail'})", ylabel="SPO / GRPO throughput", yscale="log")
    readable_log_axis(ax.yaxis, suffix="x")
    ax.set_title("long-tail rollout simulation", fontsize=10)
    sizes = sorted(rows["group_size"].unique())
    title = "batch size M"
    if alike and len(sizes) > 1:
        title += f" (n = {', '.join(str(int(n)) for n in sizes)} coincide)"
    ax.legend(fontsize=8, title=title, title_fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def plot_streaming(throughput: pd.DataFrame, staleness: pd.DataFrame, predicted: pd.DataFrame | None = None, axes=None):
    """Measured trainable samples per second per arm (``<method> <schedule>``: each run's mean over its steps as a
    dot, the arm's mean with a 95% t interval over runs), the simulation's prediction for each synchronous run's
    shape as hollow markers (barrier and streamed); and the staleness of trained samples per arm. panels: 2."""
    from spo_helpers.analysis.intervals import t_mean

    rows = _require(throughput, ["arm", "run", "samples_per_s"], "streaming throughput")
    fig, (left, right) = _panels(axes, 2, width=5.2, height=3.8)
    arms = list(dict.fromkeys(rows.sort_values(["method", "schedule"])["arm"]))
    palette = dict(zip(arms, plt.cm.tab10(np.arange(len(arms)) % 10), strict=True))
    per_run = rows.groupby(["arm", "run"], sort=False)["samples_per_s"].mean().reset_index()
    for x, arm in enumerate(arms):
        values = per_run[per_run["arm"] == arm]["samples_per_s"].to_numpy(dtype=float)
        color = palette[arm]
        left.scatter(np.full(values.size, x) + np.linspace(-0.08, 0.08, values.size), values, color=color, s=14)
        if values.size >= 2:
            interval = t_mean(values)
            left.errorbar(
                x + 0.2,
                interval.estimate,
                yerr=[[interval.estimate - interval.low], [interval.high - interval.estimate]],
                fmt="s",
                color=color,
                capsize=3,
            )
        else:
            left.scatter([x + 0.2], values, marker="s", color=color)
    if predicted is not None and not predicted.empty:
        simulated = (("simulated barrier", "predicted_sync", "o"), ("simulated stream", "predicted_stream", "D"))
        for label, column, marker in simulated:
            xs = [arms.index(a) + 0.35 for a in predicted["arm"] if a in arms]
            ys = [v for a, v in zip(predicted["arm"], predicted[column], strict=True) if a in arms]
            left.scatter(xs, ys, marker=marker, facecolors="none", edgecolors="black", s=30, label=label)
        left.legend(fontsize=8, loc="best")
    left.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
    left.set(ylabel="trainable samples per second", xlim=(-0.5, len(arms) - 0.3))
    left.set_title("rollout + update throughput (dots: runs; squares: mean, 95% t)", fontsize=9)
    left.grid(alpha=0.3, axis="y")
    stale = _require(staleness, ["arm", "staleness", "fraction"], "staleness")
    table = stale.pivot_table(index="staleness", columns="arm", values="fraction", fill_value=0.0)
    width = 0.8 / max(len(table.columns), 1)
    for index, arm in enumerate(table.columns):
        color = palette.get(arm, "grey")
        right.bar(table.index + index * width, table[arm], width=width, label=arm, color=color)
    right.set(xlabel="staleness (updates since launch)", ylabel="share of trained samples", ylim=(0, 1))
    right.yaxis.set_major_formatter(PercentFormatter(1.0))
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title("staleness of trained samples", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def readable_log_axis(axis, suffix: str = "") -> None:
    """Tick labels a reader can read on a log axis: 1, 2, 5 per decade (1, 2, 3, 5 when it spans less than one),
    written as plain numbers with ``suffix`` (``2x``, ``5x``, ``10x``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    low, high = axis.get_view_interval() if axis.axes.has_data() else (1.0, 10.0)
    subs = (1.0, 2.0, 3.0, 5.0) if high / max(low, 1e-12) < 10 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}{suffix}"))
    axis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------------------------------------- stage overviews
def plot_subsets(frame: pd.DataFrame, axes=None) -> Figure:
    """Stage 01: prompts per subset, prompt length and difficulty mix per subset. panels: 2 or 3."""
    rows = _require(frame, ["subset", "prompt_chars"], "subset overview")
    has_difficulty = "difficulty" in rows.columns and rows["difficulty"].notna().any()
    fig, ax = _panels(axes, 2 + has_difficulty)
    counts = rows.groupby("subset").size()
    ax[0].bar(counts.index.astype(str), counts.to_numpy(), color="#4C72B0")
    ax[0].set(xlabel="subset", ylabel="prompts", title="prompts per subset")
    subsets = sorted(rows["subset"].unique())
    lengths = [rows.loc[rows["subset"] == s, "prompt_chars"] for s in subsets]
    ax[1].boxplot(lengths, tick_labels=[str(s) for s in subsets])
    ax[1].set(xlabel="subset", ylabel="characters", title="prompt length")
    if has_difficulty:
        mix = rows.groupby(["subset", "difficulty"]).size().unstack(fill_value=0)
        share = mix.div(mix.sum(axis=1), axis=0)
        bottom = np.zeros(len(share))
        colors = plt.cm.viridis(np.linspace(0.1, 0.9, share.shape[1]))
        for color, level in zip(colors, share.columns, strict=True):
            ax[2].bar(share.index.astype(str), share[level], bottom=bottom, color=color, label=str(level))
            bottom += share[level].to_numpy()
        ax[2].set(xlabel="subset", ylabel="share of prompts", title="difficulty mix")
        ax[2].legend(title="difficulty", fontsize=7, title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_success_rates(frame: pd.DataFrame, axes=None) -> Figure:
    """Stage 02: per-prompt success rates under the base model, histogram and ECDF per subset. panels: 2."""
    rows = _require(frame, ["subset", "success_rate"], "success rates")
    fig, ax = _panels(axes, 2)
    bins = np.linspace(0, 1, 11)
    for subset, part in rows.groupby("subset"):
        values = np.sort(part["success_rate"].to_numpy())
        ax[0].hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"subset {subset}")
        ax[1].step(values, np.arange(1, values.size + 1) / values.size, where="post", label=f"subset {subset}")
    ax[0].set(xlabel="per-prompt success rate", ylabel="prompts", title="success rate per prompt")
    ax[1].set(xlabel="per-prompt success rate", ylabel="share of prompts", title="ECDF", xlim=(0, 1))
    ax[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- (10) ground truth
GROUND_TRUTH_STYLES = {
    "SPO tracker p̂": ("SPO", "-"),
    "GRPO group mean": ("GRPO", "-"),
    "GRPO leave-one-out mean": ("GRPO", "--"),
}


def plot_ground_truth(by_step: pd.DataFrame, errors: pd.DataFrame, reliability: pd.DataFrame, axes=None) -> Figure:
    """Baselines against the true success probability (``analysis/baseline_error.py``): RMSE of b - p per step
    (mean over runs), the distribution of b - p, and the tracker's p̂ against the truth and against single
    rewards. panels: 3."""
    steps = _require(by_step, ["baseline", "step", "rmse"], "ground truth")
    fig, ax = _panels(axes, 3, width=4.4)
    bins = np.linspace(-1, 1, 41)
    for name, (method, style) in GROUND_TRUTH_STYLES.items():
        part = steps[steps["baseline"] == name]
        if part.empty:
            continue
        color = method_color(method)
        mean = part.groupby("step")["rmse"].mean()
        ax[0].plot(mean.index, mean.to_numpy(), style, color=color, marker="o", ms=3, label=name)
        values = errors.loc[errors["baseline"] == name, "error"].to_numpy()
        ax[1].hist(values, bins=bins, histtype="step", linestyle=style, color=color, density=True, label=name)
    ax[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    ax[0].set(xlabel="training step", ylabel="RMSE of b - p (truth noise removed)", title="baseline error")
    ax[0].set_ylim(bottom=0)
    ax[1].axvline(0, color="grey", lw=0.8)
    ax[1].set(xlabel="b - p", ylabel="density", title="baseline error distribution")
    ax[2].plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    full = reliability[reliability["count"] > 0] if "count" in reliability.columns else reliability
    for index, (run, part) in enumerate(full.groupby("run", sort=True) if "run" in full.columns else [("", full)]):
        method = str(part["method"].iloc[0]) if "method" in part.columns else "SPO"
        color = method_color(method, index)
        ax[2].plot(part["p_hat_mean"], part["true_p_mean"], "-o", color=color, ms=3, label=f"{run}: truth")
        ax[2].plot(part["p_hat_mean"], part["reward_mean"], ":", color=color, alpha=0.6, label=f"{run}: rewards")
    ax[2].set(xlabel="tracker p̂ (bin mean)", ylabel="success probability", title="p̂ calibration vs truth")
    ax[2].set(xlim=(0, 1), ylim=(0, 1))
    for panel in ax:
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
    fig.tight_layout()
    return fig
