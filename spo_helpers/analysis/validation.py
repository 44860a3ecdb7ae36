"""How accurate each run is: validation dumps as per-sample frames, per-prompt scores, tables and curves."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spo_helpers.analysis.intervals import resampled_means
from spo_helpers.analysis.metrics import load_metrics, metric_series
from spo_helpers.analysis.paper import PAPER_BENCHMARKS, canonical_benchmark, paper_table
from spo_helpers.analysis.passk import answer_of, default_ks, maj_at_k, pass_at_k
from spo_helpers.analysis.runs import (
    RUN_COLUMNS,
    RunInfo,
    collect,
    load_config,
    run_path,
)
from spo_helpers.core.metric_names import TRAIN_REWARD, VAL_CORE_PREFIX
from spo_helpers.errors import MissingData, UserError
from spo_helpers.formats.dumps import DumpFile, describe_bad, dump_step, read_dump, step_dumps
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import config_value

logger = logging.getLogger(__name__)

_VAL_CORE = re.compile(
    "^" + re.escape(VAL_CORE_PREFIX) + r"(?P<ds>[^/]+)/(?P<var>[^/]+)/(?P<stat>mean@\d+|maj@\d+/mean|best@\d+/mean)$"
)


# ---------------------------------------------------------------------------------------------- validation dumps
def run_file(name: str | os.PathLike, folder: Path) -> Path | None:
    """A file a run's config names, found: as written (absolute, or relative to the working folder), else
    relative to a folder above the run (a portable run names files relative to its project folder)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_absolute():
        return None
    return next((parent / path for parent in Path(folder).resolve().parents if (parent / path).is_file()), None)


def val_data_sources(folder: Path) -> tuple[dict[str, str], str | None]:
    """prompt key -> data source from the run's local val files, and the single val-core source if only one."""
    from spo_helpers.formats.datasets import dataset_prompt_keys, load_dataset_rows

    config = load_config(folder)
    mapping: dict[str, str] = {}
    files = config_value(config, "data.val_files") or []
    for listed in [files] if isinstance(files, str) else list(files):
        name = run_file(str(listed), folder)
        if name is None:
            continue
        try:
            rows = load_dataset_rows(str(name))
            if "data_source" in rows.columns:
                keys = dataset_prompt_keys(rows, str(name))
                mapping.update(zip(keys, rows["data_source"].astype(str), strict=True))
        except (UserError, OSError, ValueError):
            continue
    single = None
    try:
        keys = load_metrics(folder)["key"].unique()
    except MissingData:
        keys = []
    sources = {m.group("ds") for k in keys if (m := _VAL_CORE.match(str(k)))}
    if len(sources) == 1:
        single = sources.pop()
    return mapping, single


def read_validation_dump(path: str | os.PathLike) -> DumpFile:
    """The usable lines of one dump with their ``data_source`` and ``pred``; bad lines are counted and logged."""
    dump = read_dump(path, skip_bad_lines=True, keep=("data_source", "pred"))
    if dump.bad:
        logger.warning("%s: skipped %s", dump.path, describe_bad(dump.bad))
    return dump


def load_validation(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """One row per validation sample: ``step, prompt_key, data_source, sample, score, correct, pred``.

    ``data_source`` comes from the line, else from the run's validation files (config ``data.val_files``),
    else from the only data source of the ``val-core/*`` metrics, else ``unknown``.
    """
    layout = RunLayout(run_path(run))
    files = step_dumps(layout.validation_data)
    if not files:
        raise MissingData(f"{layout.validation_data}: no validation dumps (<step>.jsonl)")
    mapping, single = val_data_sources(layout.root)
    rows = []
    for path in files:
        dump = read_validation_dump(path)
        step = dump_step(path)
        for key, score, source, pred in zip(
            dump.keys, dump.scores, dump.fields["data_source"], dump.fields["pred"], strict=True
        ):
            source = source or mapping.get(key) or single or "unknown"
            rows.append((step, key, str(source), score, float(score > 0), answer_of(pred)))
    frame = pd.DataFrame(rows, columns=["step", "prompt_key", "data_source", "score", "correct", "pred"])
    frame.insert(3, "sample", frame.groupby(["step", "prompt_key"]).cumcount())
    return frame


def _chosen_ks(ks: Sequence[int] | str | None, n: int) -> list[int]:
    if ks is None:
        return default_ks(n)
    if isinstance(ks, str):
        if ks != "n":
            raise ValueError(f"ks must be None, 'n' or a list of ints, got {ks!r}")
        return [n]
    return sorted({int(k) for k in ks if 1 <= int(k) <= n})


def prompt_scores(validation: pd.DataFrame, ks: Sequence[int] | str | None = None) -> pd.DataFrame:
    """Per prompt (and run, step, data source): ``n, correct, metric, k, value``.

    metric ``avg`` (k = n), ``pass`` and ``maj`` for each k in ``ks`` with k <= n: ``default_ks(n)`` if None,
    ``[n]`` for ``"n"``. maj is left out when the dump has no ``pred`` answers.
    """
    keys = [c for c in (*RUN_COLUMNS, "step", "data_source", "prompt_key") if c in validation.columns]
    rows = []
    for values, group in validation.groupby(keys, sort=False, dropna=False):
        correct = group["correct"].to_numpy(dtype=np.float64)
        n, c = correct.size, int(correct.sum())
        base = dict(zip(keys, values, strict=True)) | {"n": n, "correct": c}
        rows.append(base | {"metric": "avg", "k": n, "value": c / n})
        preds = group["pred"].tolist() if "pred" in group.columns else [None] * n
        has_preds = any(answer_of(p) is not None for p in preds)
        for k in _chosen_ks(ks, n):
            rows.append(base | {"metric": "pass", "k": k, "value": pass_at_k(n, c, k)})
            if has_preds:
                rows.append(base | {"metric": "maj", "k": k, "value": maj_at_k(preds, correct, k)})
    return pd.DataFrame(rows, columns=[*keys, "n", "correct", "metric", "k", "value"])


def _key(values) -> tuple[str, ...]:
    """A group key that matches across groupby and itertuples, missing values included."""
    return tuple(str(v) for v in values)


def _bootstrap_bounds(
    scores: pd.DataFrame, keys: list[str], resamples: int, seed: int
) -> tuple[dict[tuple, tuple[float, float]], dict[tuple, tuple[float, float]]]:
    """95% percentile-bootstrap bounds over prompts per ``keys + data_source, metric, k`` group, and for the
    unweighted average over data sources (each source's prompts resampled on its own, the replicates averaged)."""
    per_source, overall = {}, {}
    for group, part in scores.groupby([*keys, "metric", "k"], dropna=False, sort=False):
        rng = np.random.default_rng([seed, int(group[-1])])
        replicates = []
        for source, here in part.groupby("data_source", dropna=False, sort=True):
            values = here["value"].to_numpy(dtype=np.float64)[None, :]
            means = resampled_means(values, resamples, rng)
            replicates.append(means)
            per_source[_key((*group[:-2], source, *group[-2:]))] = tuple(np.quantile(means, [0.025, 0.975]))
        overall[_key(group)] = tuple(np.quantile(np.mean(replicates, axis=0), [0.025, 0.975]))
    return per_source, overall


def validation_summary(scores: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean over prompts per data source (``prompts`` counted), plus ``data_source = "avg"``: the unweighted
    mean over data sources (the paper's avg column). ``low``/``high``: a 95% bootstrap interval over prompts
    (``resamples=0``: none)."""
    keys = [c for c in (*RUN_COLUMNS, "step") if c in scores.columns]
    per_source = (
        scores.groupby([*keys, "data_source", "metric", "k"], dropna=False)["value"]
        .agg(value="mean", prompts="size")
        .reset_index()
    )
    overall = (
        per_source.groupby([*keys, "metric", "k"], dropna=False)
        .agg(value=("value", "mean"), prompts=("prompts", "sum"))
        .reset_index()
        .assign(data_source="avg")
    )
    if resamples > 0 and len(scores):
        source_bounds, overall_bounds = _bootstrap_bounds(scores, keys, resamples, seed)
        columns = [*keys, "data_source", "metric", "k"]
        nan = (np.nan, np.nan)
        bounds = [source_bounds.get(_key(r), nan) for r in per_source[columns].itertuples(index=False)]
        per_source[["low", "high"]] = np.array(bounds, dtype=np.float64).reshape(-1, 2)
        bounds = [overall_bounds.get(_key(r), nan) for r in overall[[*keys, "metric", "k"]].itertuples(index=False)]
        overall[["low", "high"]] = np.array(bounds, dtype=np.float64).reshape(-1, 2)
    out = pd.concat([per_source, overall[per_source.columns]], ignore_index=True)
    out["label"] = out["metric"] + "@" + out["k"].astype(str)
    return out


def validation_table(
    runs: Iterable[RunInfo | str | os.PathLike] | str | os.PathLike,
    ks: Sequence[int] | str | None = None,
    steps: str | Sequence[int] = "all",
) -> pd.DataFrame:
    """From the dumps: ``run, method, seed, step, data_source, metric, k, value, prompts, label``.

    ``ks`` as in ``prompt_scores``. ``steps``: ``"all"``, ``"last"`` (each run's last dump) or a list of steps.
    Runs without dumps are left out.
    """
    validation, _ = collect(runs, load_validation)
    if validation.empty:
        raise MissingData("no run has validation dumps (validation_data/<step>.jsonl)")
    if steps == "last":
        last = validation.groupby("run")["step"].transform("max")
        validation = validation[validation["step"] == last]
    elif steps != "all":
        validation = validation[validation["step"].isin(list(steps))]
    return validation_summary(prompt_scores(validation, ks))


def val_metrics_from_logs(metrics: pd.DataFrame) -> pd.DataFrame:
    """verl's logged ``val-core`` means as a ``validation_summary``-like frame (when dumps are missing).

    ``mean@n`` -> avg, ``maj@n/mean`` -> maj, ``best@n/mean`` -> pass (verl's bootstrap, not the unbiased one).
    """
    rows = []
    for record in metrics.itertuples(index=False):
        match = _VAL_CORE.match(str(record.key))
        if not match:
            continue
        stat = match.group("stat")
        metric = {"mean": "avg", "maj": "maj", "best": "pass"}[stat.split("@")[0]]
        k = int(re.search(r"@(\d+)", stat).group(1))
        rows.append(
            {c: getattr(record, c) for c in (*RUN_COLUMNS, "step") if c in metrics.columns}
            | {"data_source": match.group("ds"), "var": match.group("var"), "metric": metric, "k": k}
            | {"value": record.value}
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    preference = {"acc": 0, "score": 1, "reward": 2}
    frame["rank"] = frame["var"].map(lambda v: preference.get(v, 3))
    best = frame.groupby("data_source")["rank"].transform("min")
    frame = frame[frame["rank"] == best].drop(columns=["rank", "var"])
    keys = [c for c in (*RUN_COLUMNS, "step") if c in frame.columns]
    overall = frame.groupby([*keys, "metric", "k"], dropna=False)["value"].mean().reset_index()
    out = pd.concat([frame, overall.assign(data_source="avg")], ignore_index=True)
    out["label"] = out["metric"] + "@" + out["k"].astype(str)
    return out


def learning_curves(metrics: pd.DataFrame, validation: pd.DataFrame | None = None) -> pd.DataFrame:
    """``run, method, seed, step, samples, tokens, metric, value, low, high`` for training reward and validation
    accuracy.

    Validation from a ``validation_table`` frame at k = n (avg@n, maj@n, pass@n, averaged over data sources;
    with two to four data sources, mean@n of each instead of their average); without one, from the logged
    ``val-core`` keys. ``low``/``high``: the run's 95% bootstrap interval over problems at that step (from the
    ``validation_table`` frame; NaN for the training reward and for logged values, which carry no problems).
    """
    axes = metrics[[*RUN_COLUMNS, "step", "samples", "tokens"]].drop_duplicates([*RUN_COLUMNS[:1], "step"])
    reward = metric_series(metrics, TRAIN_REWARD).assign(metric="train reward")
    parts = [reward[[*RUN_COLUMNS, "step", "samples", "tokens", "metric", "value"]]]
    val = validation if validation is not None and not validation.empty else val_metrics_from_logs(metrics)
    if not val.empty:
        sources = sorted(set(val["data_source"]) - {"avg"})
        top_k = val[val["metric"] == "avg"].groupby("run")["k"].max().rename("n")
        val = val.merge(top_k, on="run")
        val = val[val["k"] == val["n"]]
        names = val["metric"].map({"avg": "mean", "maj": "maj", "pass": "pass"})
        # Several benchmarks: mean@n of each one, maj@n and pass@n of their average.
        per_source = (val["data_source"] != "avg") & (val["metric"] == "avg") & (1 < len(sources) <= 4)
        val = val.assign(metric="val " + names + "@n" + np.where(per_source, " · " + val["data_source"], ""))
        val = val[(val["data_source"] == "avg") & ~((val["metric"] == "val mean@n") & (len(sources) > 1)) | per_source]
        val = val.drop(columns=["samples", "tokens"], errors="ignore")
        val = val.merge(axes.drop(columns=["method", "seed"]), on=["run", "step"], how="left")
        bounds = [c for c in ("low", "high") if c in val.columns]
        parts.append(val[[*RUN_COLUMNS, "step", "samples", "tokens", "metric", "value", *bounds]])
    out = pd.concat(parts, ignore_index=True)
    for column in ("low", "high"):
        if column not in out.columns:
            out[column] = np.nan
    out["seed"] = out["seed"].astype("Int64")
    return out


def results_table(
    runs_or_table: Iterable[RunInfo | str | os.PathLike] | pd.DataFrame | str | os.PathLike,
    k: int | None = None,
    include_paper: bool | None = None,
) -> pd.DataFrame:
    """The paper's layout from each run's last validation dump: one row per method (mean over its runs), columns
    ``<benchmark> maj@k`` and ``<benchmark> avg@k`` per data source and for ``avg`` (their unweighted mean), in
    percent, each with ``low``/``high``: its 95% bootstrap interval over problems (``validation_summary``; a method
    of several runs: the mean of its runs' bounds, which leaves the seed-to-seed variation out: ``spo evaluate``
    resamples seeds too). k defaults to n. ``include_paper`` (default: only under the paper's protocol, maj@32 on
    its five benchmarks) appends the paper's Qwen3-8B maj@32 rows; the ``protocol`` column says which it is.
    """
    table = runs_or_table if isinstance(runs_or_table, pd.DataFrame) else None
    if table is None:
        table = validation_table(runs_or_table, ks=[k] if k else "n", steps="last")
    else:
        table = table[table["step"] == table.groupby("run")["step"].transform("max")]
    n = table[table["metric"] == "avg"].groupby("run")["k"].max().rename("n")
    table = table.merge(n, on="run")
    wanted = table["metric"].eq("avg") | (table["metric"].eq("maj") & table["k"].eq(k if k else table["n"]))
    table = table[wanted].copy()
    k_label = str(k) if k else "n"
    if not k:
        sizes = sorted(table["n"].unique())
        k_label = str(sizes[0]) if len(sizes) == 1 else "n"
    table["benchmark"] = table["data_source"].map(lambda d: "avg" if d == "avg" else canonical_benchmark(d))
    table["column"] = table["benchmark"] + " " + table["metric"].map({"maj": "maj", "avg": "avg"}) + "@" + k_label
    per_run = table.pivot_table(index=["method", "run"], columns="column", values="value", aggfunc="mean") * 100
    grouped = per_run.groupby(level="method")
    wide = grouped.mean()
    bounds = {}
    for side in ("low", "high"):
        if side in table.columns:
            part = table.pivot_table(index=["method", "run"], columns="column", values=side, aggfunc="mean") * 100
            bounds[side] = part.groupby(level="method").mean()
    wide.insert(0, "runs", grouped.size())
    steps = table.groupby("method")["step"].max()
    wide.insert(1, "step", steps.reindex(wide.index))
    order = {b: i for i, b in enumerate(PAPER_BENCHMARKS)}
    names = {c.rsplit(" ", 1)[0] for c in wide.columns if " " in c} - {"avg"}
    benchmarks = [*sorted(names, key=lambda b: (order.get(b, len(order)), b)), "avg"]
    ordered = [f"{b} {m}@{k_label}" for b in benchmarks for m in ("maj", "avg")]
    for side, frame in bounds.items():
        for column in ordered:
            if column in frame.columns:
                wide[f"{column} {side}"] = frame[column].reindex(wide.index)
    columns = [c for name in ordered if name in wide.columns for c in (name, f"{name} low", f"{name} high")]
    wide = wide[["runs", "step", *[c for c in columns if c in wide.columns]]].reset_index().rename_axis(columns=None)
    wide.insert(0, "source", "this kit")
    same = k_label == "32" and set(PAPER_BENCHMARKS) <= set(table["benchmark"])
    wide["protocol"] = (
        "maj@32 on the paper's five benchmarks"
        if same
        else f"not the paper's protocol: maj@{k_label} on {', '.join(benchmarks[:-1])} (paper: maj@32 on "
        f"{', '.join(PAPER_BENCHMARKS)}); the paper's rows are left out"
    )
    if include_paper is None:
        include_paper = same
    if include_paper:
        wide = pd.concat([wide, paper_table().assign(protocol="the paper's")], ignore_index=True)
    return wide.astype({"runs": "Int64", "step": "Int64"})
