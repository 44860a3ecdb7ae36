"""Benchmark evaluation in the paper's terms: maj@k and unbiased pass@k for k = 1..n, with intervals.

From per-sample validation frames (``validation.load_validation`` of an evaluation run, or of a training run's
last validation), per benchmark (data source, named as the paper names it) and on their unweighted average:

    value     the mean over problems (and over seeds: runs of one method) of avg@n, pass@k, maj@k
    low/high  a 95% percentile-bootstrap interval over problems (and seeds; ``intervals.resampled_means``);
              the average over benchmarks resamples each benchmark's problems on its own (stratified)

``paired_comparison`` gives A - B (SPO - GRPO) on the same problems with a paired interval. ``paper_layout``
writes the paper's table (one row per method, ``<benchmark> maj@k`` columns and ``avg``) with each interval,
and puts the paper's numbers beside it only when the runs used the paper's protocol
(``formats.eval_protocol.same_as_paper``); otherwise its ``protocol`` column says why not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spo_helpers.analysis.intervals import DEFAULT_LEVEL, DEFAULT_RESAMPLES, interval_of, resampled_means
from spo_helpers.analysis.paper import PAPER_BENCHMARKS, canonical_benchmark, paper_table
from spo_helpers.analysis.runs import RunInfo, collect, load_config, run_path
from spo_helpers.analysis.validation import load_validation, prompt_scores
from spo_helpers.errors import MissingData
from spo_helpers.formats.eval_protocol import applied_top_k, same_as_paper
from spo_helpers.formats.run_config import config_value

AVG = "avg"
VAL_KWARGS = "actor_rollout_ref.rollout.val_kwargs"


def all_ks(n: int) -> list[int]:
    return list(range(1, int(n) + 1))


def benchmark_order(names: Iterable[str]) -> list[str]:
    order = {b: i for i, b in enumerate(PAPER_BENCHMARKS)}
    return sorted(set(names) - {AVG}, key=lambda b: (order.get(b, len(order)), b))


def evaluation_scores(validation: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Per problem: ``run, method, seed, benchmark, prompt_key, n, metric, k, value`` (k = 1..n unless ``ks``).

    ``validation`` holds one step per run (an evaluation run's only dump, or ``steps="last"``).
    """
    frame = validation.copy()
    frame["data_source"] = frame["data_source"].map(canonical_benchmark)
    sizes = frame.groupby([c for c in ("run", "step", "prompt_key") if c in frame.columns]).size()
    n = int(sizes.min()) if len(sizes) else 0
    scores = prompt_scores(frame, ks if ks is not None else all_ks(n))
    return scores.rename(columns={"data_source": "benchmark"})


def _matrix(part: pd.DataFrame) -> np.ndarray:
    """``(seeds, problems)`` of one method's per-problem values (problems every seed has)."""
    key = "seed" if "seed" in part.columns and part["seed"].notna().any() else "run"
    wide = part.pivot_table(index=key, columns="prompt_key", values="value", aggfunc="mean").dropna(axis=1)
    return wide.to_numpy(dtype=np.float64)


def evaluation_table(
    scores: pd.DataFrame,
    *,
    by: str = "method",
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """``<by>, benchmark, metric, k, value, low, high, problems, seeds, n`` with ``benchmark = "avg"`` rows.

    One interval per figure: resampling problems (and seeds) of each benchmark; the average resamples each
    benchmark independently and averages the replicates (the paper's avg: an unweighted mean of benchmarks).
    """
    rows = []
    for (group, metric, k), part in scores.groupby([by, "metric", "k"], sort=False):
        rng = np.random.default_rng([seed, int(k), len(metric)])
        replicates, estimates = [], []
        for bench in benchmark_order(part["benchmark"]):
            values = _matrix(part[part["benchmark"] == bench])
            if values.size == 0:
                continue
            means = resampled_means(values, resamples, rng)
            estimate = float(values.mean())
            interval = interval_of(estimate, means, level)
            replicates.append(means)
            estimates.append(estimate)
            n = int(part.loc[part["benchmark"] == bench, "n"].min())
            rows.append(
                {by: group, "benchmark": bench, "metric": metric, "k": int(k)}
                | interval.as_dict()
                | {"problems": values.shape[1], "seeds": values.shape[0], "n": n}
            )
        if len(estimates) > 1:
            interval = interval_of(float(np.mean(estimates)), np.mean(replicates, axis=0), level)
            rows.append(
                {by: group, "benchmark": AVG, "metric": metric, "k": int(k)}
                | interval.as_dict()
                | {"problems": int(sum(r["problems"] for r in rows[-len(estimates) :])), "seeds": np.nan}
                | {"n": int(part["n"].min())}
            )
    return pd.DataFrame(rows)


def paired_comparison(
    scores: pd.DataFrame,
    a: str = "SPO",
    b: str = "GRPO",
    *,
    by: str = "method",
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """``a - b`` on the same problems per benchmark, metric and k (and on the average), with paired intervals.

    Seeds of each method are averaged per problem first; problems are resampled once for both methods. The
    interval is therefore conditional on the training runs compared: it holds the problems' variation, not the
    training seeds' (another set of runs could differ by more). The ``interval_over`` column says so, with the
    number of runs of each method; seed-level comparisons use ``intervals.paired_t_difference`` over runs.
    """
    rows = []
    mine = scores[scores[by].isin([a, b])]
    runs = mine.groupby(by)["run"].nunique() if "run" in mine.columns else pd.Series(dtype=int)
    over = (
        f"problems, conditional on {int(runs.get(a, 1))} {a} and {int(runs.get(b, 1))} {b} training run(s) "
        "(training-seed variance not included)"
    )
    for (metric, k), part in mine.groupby(["metric", "k"], sort=False):
        rng = np.random.default_rng([seed, int(k), len(metric)])
        replicates, estimates, problems = [], [], 0
        for bench in benchmark_order(part["benchmark"]):
            here = part[part["benchmark"] == bench]
            wide = here.pivot_table(index="prompt_key", columns=by, values="value", aggfunc="mean").dropna()
            if a not in wide.columns or b not in wide.columns or wide.empty:
                continue
            diff = (wide[a] - wide[b]).to_numpy(dtype=np.float64)
            means = resampled_means(diff[None, :], resamples, rng)
            estimate = float(diff.mean())
            replicates.append(means)
            estimates.append(estimate)
            problems += diff.size
            rows.append(
                {"comparison": f"{a} - {b}", "benchmark": bench, "metric": metric, "k": int(k)}
                | interval_of(estimate, means, level).as_dict()
                | {"problems": diff.size, "interval_over": over}
            )
        if len(estimates) > 1:
            rows.append(
                {"comparison": f"{a} - {b}", "benchmark": AVG, "metric": metric, "k": int(k)}
                | interval_of(float(np.mean(estimates)), np.mean(replicates, axis=0), level).as_dict()
                | {"problems": problems, "interval_over": over}
            )
    return pd.DataFrame(rows)


def run_protocol(run: RunInfo | str | os.PathLike) -> dict[str, Any]:
    """A run's sampling settings from its ``config.yaml``: ``temperature, top_p, top_k, n``, with the top-k its
    rollout applied (``eval_protocol.applied_top_k``)."""
    config = load_config(run_path(run))
    settings = {key: config_value(config, f"{VAL_KWARGS}.{key}") for key in ("temperature", "top_p", "top_k", "n")}
    settings["top_k"] = applied_top_k(settings["top_k"], config_value(config, "actor_rollout_ref.rollout.mode"))
    return settings


def protocol_note(
    runs: Iterable[RunInfo | str | os.PathLike] | None, benchmarks: Iterable[str], n: int
) -> tuple[bool, str]:
    """Whether every run used the paper's protocol on the paper's benchmarks, and a line saying so or why not."""
    names = set(benchmarks) - {AVG}
    settings = [run_protocol(r) for r in runs] if runs else [{}]
    verdicts = [same_as_paper(s, n, names) for s in settings]
    same = all(v[0] for v in verdicts)
    return same, next((v[1] for v in verdicts if not v[0]), verdicts[0][1])


def paper_layout(
    table: pd.DataFrame,
    *,
    metric: str = "maj",
    k: int | None = None,
    by: str = "method",
    same_protocol: tuple[bool, str] | None = None,
) -> pd.DataFrame:
    """The paper's table: one row per ``by``, ``<benchmark> <metric>@k`` (percent) and its ``low``/``high``.

    ``k`` defaults to the largest evaluated. The paper's maj@32 rows are appended when ``same_protocol`` says the
    protocol is the paper's and the table shows maj@32; a ``protocol`` column says which protocol it is.
    """
    part = table[table["metric"] == metric]
    k = int(k or part["k"].max())
    part = part[part["k"] == k]
    label = f"{metric}@{k}"
    wide = {}
    for group, rows in part.groupby(by, sort=False):
        record: dict[str, Any] = {by: group}
        for bench in [*benchmark_order(rows["benchmark"]), AVG]:
            row = rows[rows["benchmark"] == bench]
            if row.empty:
                continue
            r = row.iloc[0]
            record[f"{bench} {label}"] = 100 * r["value"]
            record[f"{bench} {label} low"] = 100 * r["low"]
            record[f"{bench} {label} high"] = 100 * r["high"]
        wide[group] = record
    out = pd.DataFrame(list(wide.values()))
    out.insert(0, "source", "this kit")
    same, note = same_protocol if same_protocol is not None else (False, "protocol unknown")
    out["protocol"] = note
    if same and metric == "maj" and k == 32:
        paper = paper_table().rename(columns={"method": by})
        paper["protocol"] = "the paper's"
        out = pd.concat([out, paper], ignore_index=True)
    return out


def format_interval(value: float, low: float, high: float, digits: int = 1) -> str:
    """``76.5 [70.1, 82.3]``."""
    if not np.isfinite(value):
        return "-"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def readable_layout(wide: pd.DataFrame) -> pd.DataFrame:
    """``paper_layout`` with each figure and its interval in one cell (``76.5 [70.1, 82.3]``), for printing."""
    out = wide.drop(columns=[c for c in wide.columns if c.endswith((" low", " high"))]).copy()
    for column in out.columns:
        if f"{column} low" in wide.columns:
            out[column] = [
                format_interval(v, lo, hi)
                for v, lo, hi in zip(wide[column], wide[f"{column} low"], wide[f"{column} high"], strict=True)
            ]
    return out


def evaluation_run(folder: str | os.PathLike) -> RunInfo:
    """A run folder as a ``RunInfo``; an evaluation run (``spo evaluate``) is named by what it scores
    (``kit.evaluates``: the checkpoint's method, or ``base``)."""
    path = Path(folder)
    config = load_config(path)
    method = config_value(config, "kit.evaluates") or config_value(config, "kit.method") or path.name
    seed = config_value(config, "kit.seed")
    name = str(config_value(config, "trainer.experiment_name") or path.name)
    return RunInfo(
        path=path, name=name, method=str(method).upper(), seed=None if seed is None else int(seed), kind="kit"
    )


def evaluation_runs(runs: Iterable[RunInfo | str | os.PathLike] | RunInfo | str | os.PathLike) -> list[RunInfo]:
    """Run folders (evaluation or training runs) as ``RunInfo``s; ``RunInfo``s pass through."""
    items = [runs] if isinstance(runs, RunInfo | str | os.PathLike) else list(runs)
    return [r if isinstance(r, RunInfo) else evaluation_run(r) for r in items]


def evaluate_runs(
    runs: Iterable[RunInfo | str | os.PathLike] | str | os.PathLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Everything ``spo evaluate`` reports for some evaluation (or training) runs, from their last dump.

    ``scores`` (per problem), ``table`` (long, with intervals), ``maj`` and ``pass`` (the paper's layout at the
    largest k), and ``paired`` (SPO - GRPO when both methods are present).
    """
    infos = evaluation_runs(runs)
    validation, missing = collect(infos, load_validation)
    if validation.empty:
        raise MissingData(f"no validation dumps in {', '.join(missing) or 'the runs given'}")
    last = validation.groupby("run")["step"].transform("max")
    validation = validation[validation["step"] == last]
    scores = evaluation_scores(validation)
    table = evaluation_table(scores, resamples=resamples, seed=seed)
    n = int(scores["n"].min())
    note = protocol_note([i.path for i in infos], scores["benchmark"].unique(), n)
    out = {
        "scores": scores,
        "table": table,
        "maj": paper_layout(table, metric="maj", same_protocol=note),
        "pass": paper_layout(table, metric="pass", same_protocol=note),
    }
    methods = set(scores["method"].dropna())
    if {"SPO", "GRPO"} <= methods:
        out["paired"] = paired_comparison(scores, resamples=resamples, seed=seed)
    return out
