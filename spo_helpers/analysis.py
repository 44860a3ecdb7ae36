"""Runs as tidy pandas frames, and the statistics behind the figures.

A *run folder* is ``<OUTPUT_DIR>/spo/<EXP_NAME>/``: the kit writes ``config.yaml``, ``metrics.jsonl``,
``steps.jsonl``, ``prompts.parquet``, ``tracker/<step>.npz``, ``validation_data/<step>.jsonl`` and
``tensorboard/``; the official recipe only ``tensorboard/`` and ``validation_data/``. A *pipeline folder*
holds run folders under ``spo/`` (or directly), the offline estimation runs and ``offline_values.json``.

Validation statistics of one prompt with n samples, c of them correct (``score > 0``):

    avg@n  = c / n                                     (the expected accuracy of one sample)
    pass@k = 1 - C(n - c, k) / C(n, k)                 (Chen et al. 2021; unbiased, 1 when n - c < k)
    maj@k  = mean over the C(n, k) subsets S of k samples of  mean_{a in top(S)} correct(a)

top(S) is the set of answers (``pred`` strings) with the most votes in S: a tie counts as the expected score of
a uniformly random tie-break. Samples without an answer do not vote; a subset with no vote scores 0. For k = n
this is the plain majority vote over all samples; for k < n it is computed exactly (no resampling).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spo_helpers.errors import UserError
from spo_helpers.steplog import read_step_log
from spo_helpers.values_io import key_from_dump_input, read_offline_values

RUN_COLUMNS = ("run", "method", "seed")
OFFLINE_PREFIX = "offline_value_estimation"
OFFLINE_VALUES_FILE = "offline_values.json"
TRAIN_REWARD = "critic/score/mean"
SAMPLES_KEY = "kit/samples_total"
TOKENS_KEY = "kit/response_tokens_total"
ZERO_ADV_KEY = "kit/zero_adv_frac"
ZERO_ATOL = 1e-6
_VAL_CORE = re.compile(r"^val-core/(?P<ds>[^/]+)/(?P<var>[^/]+)/(?P<stat>mean@\d+|maj@\d+/mean|best@\d+/mean)$")


class MissingData(UserError):
    """An input a loader or a figure needs is absent (the message names the file)."""


# ---------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunInfo:
    """One training run. kind: ``kit`` (config.yaml / metrics.jsonl) or ``official`` (tensorboard only)."""

    path: Path
    name: str
    method: str
    seed: int | None
    kind: str
    label: str = ""
    pipeline: Path | None = None

    @property
    def title(self) -> str:
        return self.label or self.name


def is_run_folder(path: str | os.PathLike) -> bool:
    """A folder with metrics.jsonl, config.yaml or tensorboard event files."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "metrics.jsonl").is_file() or (p / "config.yaml").is_file():
        return True
    return any((p / "tensorboard").glob("events.out.tfevents.*"))


def load_config(run: RunInfo | str | os.PathLike) -> dict[str, Any]:
    """The ``config`` section of ``config.yaml`` (empty for official runs)."""
    record = _read_run_yaml(_run_path(run))
    section = record.get("config")
    return section if isinstance(section, dict) else {}


def _read_run_yaml(folder: Path) -> dict[str, Any]:
    import yaml

    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        record = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    return record if isinstance(record, dict) else {}


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def method_from_name(name: str) -> str | None:
    """``GRPO`` or ``SPO`` when the experiment name says so (GRPO is checked first), else None."""
    lowered = name.lower()
    if "grpo" in lowered:
        return "GRPO"
    if re.search(r"(^|[^a-z])spo([^a-z]|$)", lowered) or lowered.startswith("spo"):
        return "SPO"
    return None


def _seed_from_name(name: str) -> int | None:
    match = re.search(r"(?:seed|(?<![a-z])s)[_-]?(\d+)(?![0-9])", name.lower())
    return int(match.group(1)) if match else None


def _describe_run(folder: Path, pipeline: Path | None) -> RunInfo | None:
    record = _read_run_yaml(folder)
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    if folder.name.startswith(OFFLINE_PREFIX) or record.get("stage", "train") != "train":
        return None
    name = str(_get(config, "trainer.experiment_name") or folder.name)
    method = _get(config, "kit.method")
    kind = "kit" if (record or (folder / "metrics.jsonl").is_file()) else "official"
    if not method:
        method = method_from_name(name) or method_from_name(folder.name)
    if not method:
        try:
            tags = load_metrics(folder)["key"]
            method = "SPO" if tags.astype(str).str.startswith("spo/").any() else "GRPO"
        except MissingData:
            method = "unknown"
    seed = _get(config, "kit.seed")
    seed = int(seed) if seed is not None else _seed_from_name(name)
    return RunInfo(path=folder, name=name, method=str(method).upper(), seed=seed, kind=kind, pipeline=pipeline)


def _candidates(root: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in ("spo/*", "*", "*/spo/*"):
        found.extend(p for p in sorted(root.glob(pattern)) if p.is_dir() and is_run_folder(p))
    return list(dict.fromkeys(found))


def find_runs(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[RunInfo]:
    """Training runs under ``paths``: each path is a run folder or a pipeline folder holding runs.

    Offline estimation runs are left out. Raises ``FileNotFoundError`` for a missing path and ``UserError``
    when a path holds no run. Labels are the experiment names, made unique with the parent folder if needed.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    runs: list[RunInfo] = []
    for item in items:
        root = Path(item).expanduser()
        if not root.exists():
            raise FileNotFoundError(
                f"no such run or pipeline folder: {root}; pass a run folder (<output_dir>/spo/<exp_name>) "
                "or a pipeline folder (runs/<name>)"
            )
        if is_run_folder(root):
            info = _describe_run(root, None)
            if info is None:
                raise UserError(f"{root}: an offline estimation run, not a training run")
            runs.append(info)
            continue
        found = [info for p in _candidates(root) if (info := _describe_run(p, root))]
        if not found:
            raise UserError(f"{root}: no training run folders found (expected <run>/metrics.jsonl or tensorboard/)")
        runs.extend(found)
    unique = list({r.path.resolve(): r for r in runs}.values())
    counts = pd.Series([r.name for r in unique]).value_counts()
    labelled = []
    for r in unique:
        label = r.name if counts[r.name] == 1 else f"{r.path.parent.parent.name}/{r.name}"
        labelled.append(RunInfo(r.path, r.name, r.method, r.seed, r.kind, label, r.pipeline))
    return labelled


def _run_path(run: RunInfo | str | os.PathLike) -> Path:
    return run.path if isinstance(run, RunInfo) else Path(run)


def _as_runs(runs: Iterable[RunInfo | str | os.PathLike] | RunInfo | str | os.PathLike) -> list[RunInfo]:
    if isinstance(runs, RunInfo):
        return [runs]
    items = [runs] if isinstance(runs, str | os.PathLike) else list(runs)
    if all(isinstance(r, RunInfo) for r in items):
        return items
    return find_runs([r.path if isinstance(r, RunInfo) else r for r in items])


def tag_run(frame: pd.DataFrame, run: RunInfo) -> pd.DataFrame:
    """Prepend the ``run``, ``method`` and ``seed`` columns."""
    out = frame.copy()
    for position, (column, value) in enumerate(zip(RUN_COLUMNS, (run.title, run.method, run.seed), strict=True)):
        out.insert(position, column, value)
    out["seed"] = out["seed"].astype("Int64")
    return out


def collect(
    runs: Iterable[RunInfo | str | os.PathLike], loader: Callable[[RunInfo], pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """``loader`` on every run, tagged and concatenated; runs whose data is missing are listed with the reason."""
    frames, missing = [], {}
    for run in _as_runs(runs):
        try:
            frame = loader(run)
        except MissingData as err:
            missing[run.title] = str(err)
            continue
        frames.append(tag_run(frame, run))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), missing


def _by_run(frame: pd.DataFrame, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Apply ``fn`` to each run's rows (the run columns present in ``frame``) and prepend those columns."""
    keys = [c for c in RUN_COLUMNS if c in frame.columns]
    if not keys:
        return fn(frame)
    parts = []
    for values, rows in frame.groupby(keys, sort=False, dropna=False):
        out = fn(rows.drop(columns=keys))
        for position, (column, value) in enumerate(zip(keys, values, strict=True)):
            out.insert(position, column, value)
        parts.append(out)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=keys)


# ---------------------------------------------------------------------------------------------- metrics
_TB_CACHE: dict[tuple, pd.DataFrame] = {}


def tensorboard_scalars(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """Every scalar of ``tensorboard/events.out.tfevents.*`` as ``(step, key, value)``; later files win."""
    folder = _run_path(run) / "tensorboard"
    files = sorted(folder.glob("events.out.tfevents.*"))
    if not files:
        raise MissingData(f"{folder}: no tensorboard event files")
    signature = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if signature not in _TB_CACHE:
        try:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        except ImportError:
            raise MissingData(f"{folder}: reading event files needs the tensorboard package") from None

        rows = []
        for order, path in enumerate(files):
            events = EventAccumulator(str(path), size_guidance={"scalars": 0})
            events.Reload()
            for tag in events.Tags().get("scalars", []):
                rows.extend((order, e.wall_time, e.step, tag, e.value) for e in events.Scalars(tag))
        frame = pd.DataFrame(rows, columns=["order", "wall_time", "step", "key", "value"])
        frame = frame.sort_values(["order", "wall_time"], kind="stable")
        frame = frame.drop_duplicates(["step", "key"], keep="last")[["step", "key", "value"]]
        _TB_CACHE[signature] = frame.sort_values(["step", "key"]).reset_index(drop=True)
    return _TB_CACHE[signature].copy()


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def load_metrics(run: RunInfo | str | os.PathLike, wide: bool = False) -> pd.DataFrame:
    """Logged scalars: long ``(step, key, value)``, or one row per step and one column per key (``wide``).

    Read from ``metrics.jsonl``, or from the tensorboard events when there is none (official runs).
    """
    folder = _run_path(run)
    records = read_step_log(folder / "metrics.jsonl")
    if records:
        rows = [
            (int(r["step"]), str(key), number)
            for r in records
            for key, value in (r.get("data") or {}).items()
            if (number := _numeric(value)) is not None
        ]
        long = pd.DataFrame(rows, columns=["step", "key", "value"]).drop_duplicates(["step", "key"], keep="last")
    elif any((folder / "tensorboard").glob("events.out.tfevents.*")):
        long = tensorboard_scalars(folder)
    else:
        raise MissingData(f"{folder}: neither metrics.jsonl nor tensorboard events")
    long = long.sort_values(["step", "key"]).reset_index(drop=True)
    if wide:
        return long.pivot(index="step", columns="key", values="value").reset_index().rename_axis(columns=None)
    return long


def x_axes(long: pd.DataFrame, config: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per step, samples and response tokens generated so far (0 at step 0).

    From ``kit/samples_total`` and ``kit/response_tokens_total``; without them, from the config:
    ``samples = step * train_batch_size * rollout.n`` and tokens accumulate ``response_length/mean`` per sample.
    NaN when neither is known (official runs).
    """
    wide = long.pivot_table(index="step", columns="key", values="value", aggfunc="last")
    steps = pd.Index(sorted(set(long["step"]) | {0}), name="step")
    wide = wide.reindex(steps)
    out = pd.DataFrame(index=steps)
    batch = _get(config or {}, "data.train_batch_size")
    n = _get(config or {}, "actor_rollout_ref.rollout.n")
    per_step = float(batch) * float(n) if batch and n else math.nan
    for column, key in (("samples", SAMPLES_KEY), ("tokens", TOKENS_KEY)):
        if key in wide.columns and wide[key].notna().any():
            series = wide[key].copy()
            series.loc[0] = 0.0
            out[column] = series.ffill()
        elif column == "samples":
            out[column] = steps.to_numpy(dtype=float) * per_step
        elif "response_length/mean" in wide.columns and math.isfinite(per_step):
            out[column] = (wide["response_length/mean"].fillna(0.0) * per_step).cumsum()
        else:
            out[column] = math.nan
    return out.reset_index()


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_runs(
    runs: Iterable[RunInfo | str | os.PathLike] | str | os.PathLike,
    keys: Sequence[str] | None = None,
    missing: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Long frame ``run, method, seed, step, key, value, samples, tokens`` over all runs.

    ``keys``: exact keys or shell patterns (``val-core/*``) to keep; all keys by default. A run without metrics
    raises ``MissingData``, or is left out and recorded in ``missing`` (label -> reason) when that dict is given.
    """
    frames = []
    for run in _as_runs(runs):
        try:
            long = load_metrics(run)
        except MissingData as err:
            if missing is None:
                raise
            missing[run.title] = str(err)
            continue
        axes = x_axes(long, load_config(run))
        if keys is not None:
            wanted = {k: _matches(k, keys) for k in long["key"].unique()}
            long = long[long["key"].map(wanted)]
        frames.append(tag_run(long.merge(axes, on="step", how="left"), run))
    columns = [*RUN_COLUMNS, "step", "key", "value", "samples", "tokens"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def metric_series(metrics: pd.DataFrame, key: str, name: str = "value") -> pd.DataFrame:
    """Rows of one key from a ``load_runs`` frame, the value renamed to ``name``."""
    rows = metrics[metrics["key"] == key].drop(columns="key")
    return rows.rename(columns={"value": name}).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- validation math
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"need 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_k(correct: Sequence[float]) -> float:
    """Mean correctness: the expected accuracy of one sample (the same for every k)."""
    values = np.asarray(correct, dtype=np.float64)
    return float(values.mean()) if values.size else math.nan


def _answer(pred: Any) -> str | None:
    if pred is None or (isinstance(pred, float) and math.isnan(pred)):
        return None
    text = str(pred).strip()
    return text or None


def _times(poly: np.ndarray, coef: Sequence[float]) -> np.ndarray:
    """Multiply a polynomial in z (axis 0, truncated at its length) by ``sum_j coef[j] z^j``."""
    out = np.zeros_like(poly)
    rows = poly.shape[0]
    for j, c in enumerate(coef):
        if j >= rows:
            break
        if c:
            out[j:] += c * poly[: rows - j]
    return out


def _tie_shift(poly: np.ndarray, x: int) -> np.ndarray:
    """Multiply by ``z^x y`` (axis 1 counts the tied classes)."""
    out = np.zeros_like(poly)
    rows = poly.shape[0]
    if x < rows:
        out[x:, 1:] = poly[: rows - x, :-1]
    return out


def maj_at_k(preds: Sequence[Any], correct: Sequence[float], k: int) -> float:
    """Expected majority-vote correctness over all subsets of k of the n samples (see the module docstring).

    For each possible top vote count x, a generating function in z (samples chosen) and y (classes tied at x)
    runs over the answers that can reach x: ``P *= f_b(z) + y C(m_b, x) z^x`` with ``f_b = sum_{j<x} C(m_b, j)
    z^j``, and ``Q`` carries the summed score of the tied classes. Everything else contributes ``(1 + z)^rest``.
    maj@k = sum_x sum_t [z^k y^t] Q / t / C(n, k).
    """
    n = len(preds)
    if len(correct) != n:
        raise ValueError(f"preds and correct differ in length: {n} vs {len(correct)}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    votes: dict[str, list[float]] = {}
    for pred, ok in zip(preds, correct, strict=True):
        answer = _answer(pred)
        if answer is not None:
            votes.setdefault(answer, []).append(float(ok))
    if not votes:
        return 0.0
    counts = np.array([len(v) for v in votes.values()])
    scores = np.array([np.mean(v) for v in votes.values()])
    if k == n:
        return float(scores[counts == counts.max()].mean())
    total = 0.0
    for x in range(1, min(k, int(counts.max())) + 1):
        contenders = counts >= x
        rest = n - int(counts[contenders].sum())
        width = int(contenders.sum()) + 1
        p = np.zeros((k + 1, width))
        p[: min(rest, k) + 1, 0] = [math.comb(rest, j) for j in range(min(rest, k) + 1)]
        q = np.zeros_like(p)
        for m, s in zip(counts[contenders], scores[contenders], strict=True):
            below = [math.comb(int(m), j) for j in range(x)]
            tie = math.comb(int(m), x) * _tie_shift(p, x)
            p, q = _times(p, below) + tie, _times(q, below) + math.comb(int(m), x) * _tie_shift(q, x) + s * tie
        total += float((q[k, 1:] / np.arange(1, width)).sum())
    return total / math.comb(n, k)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [2**i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    return sorted(set(ks) | ({n} if n >= 1 else set()))


# ---------------------------------------------------------------------------------------------- validation dumps
def _dump_step(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


def _val_data_sources(folder: Path) -> tuple[dict[str, str], str | None]:
    """prompt key -> data source from the run's local val files, and the single val-core source if only one."""
    from spo_helpers.data import dataset_prompt_keys, load_dataset_rows

    config = load_config(folder)
    mapping: dict[str, str] = {}
    files = _get(config, "data.val_files") or []
    for name in [files] if isinstance(files, str) else list(files):
        if not Path(str(name)).is_file():
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


def read_validation_dump(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The usable lines of one dump (a JSON object with a numeric ``score``); others are skipped."""
    items = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict) and _numeric(item.get("score")) is not None:
                items.append(item)
    return items


def load_validation(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """One row per validation sample: ``step, prompt_key, data_source, sample, score, correct, pred``.

    ``data_source`` comes from the line, else from the run's validation files (config ``data.val_files``),
    else from the only data source of the ``val-core/*`` metrics, else ``unknown``.
    """
    folder = _run_path(run) / "validation_data"
    files = sorted((p for p in folder.glob("*.jsonl") if _dump_step(p) is not None), key=_dump_step)
    if not files:
        raise MissingData(f"{folder}: no validation dumps (<step>.jsonl)")
    mapping, single = _val_data_sources(_run_path(run))
    rows = []
    for path in files:
        for item in read_validation_dump(path):
            key = item.get("prompt_key")
            if not isinstance(key, str) or not key.strip():
                key = key_from_dump_input(str(item.get("input", "")))
            source = item.get("data_source") or mapping.get(key) or single or "unknown"
            score = float(item["score"])
            rows.append((_dump_step(path), key, str(source), score, float(score > 0), _answer(item.get("pred"))))
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
        has_preds = any(_answer(p) is not None for p in preds)
        for k in _chosen_ks(ks, n):
            rows.append(base | {"metric": "pass", "k": k, "value": pass_at_k(n, c, k)})
            if has_preds:
                rows.append(base | {"metric": "maj", "k": k, "value": maj_at_k(preds, correct, k)})
    return pd.DataFrame(rows, columns=[*keys, "n", "correct", "metric", "k", "value"])


def validation_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over prompts per data source (``prompts`` counted), plus ``data_source = "avg"``: the unweighted
    mean over data sources (the paper's avg column)."""
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
    """``run, method, seed, step, samples, tokens, metric, value`` for training reward and validation accuracy.

    Validation from a ``validation_table`` frame at k = n (avg@n, maj@n, pass@n, averaged over data sources;
    with two to four data sources, mean@n of each instead of their average); without one, from the logged
    ``val-core`` keys.
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
        parts.append(val[[*RUN_COLUMNS, "step", "samples", "tokens", "metric", "value"]])
    out = pd.concat(parts, ignore_index=True)
    out["seed"] = out["seed"].astype("Int64")
    return out


# ---------------------------------------------------------------------------------------------- per-sample logs
def load_steps(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``steps.jsonl`` with one row per generated sample: ``step, sample, row, reward, p_hat, advantage``, and
    ``drift, rho`` (SPO) or ``group`` (GRPO), plus ``first_visit`` (the row's first appearance in the log)."""
    path = _run_path(run) / "steps.jsonl"
    records = read_step_log(path)
    if not records:
        raise MissingData(f"{path}: missing or empty")
    parts = []
    for record in records:
        data = record.get("data") or {}
        size = len(data.get("row") or [])
        columns = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == size}
        if size:
            part = pd.DataFrame(columns)
            part.insert(0, "sample", np.arange(size))
            part.insert(0, "step", int(record["step"]))
            parts.append(part)
    if not parts:
        raise MissingData(f"{path}: no samples logged")
    frame = pd.concat(parts, ignore_index=True)
    frame["row"] = frame["row"].astype(np.int64)
    frame["first_visit"] = ~frame["row"].duplicated()
    return frame


def load_prompts(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``prompts.parquet``: ``row, prompt_key, dataset_index, difficulty, p_hat0, n_eff0, has_offline_values``."""
    path = _run_path(run) / "prompts.parquet"
    if not path.is_file():
        raise MissingData(f"{path}: missing")
    return pd.read_parquet(path)


def load_tracker_snapshots(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``tracker/<step>.npz`` stacked: ``step, row, alpha, beta, p_hat, n_eff, visits``."""
    folder = _run_path(run) / "tracker"
    files = sorted((p for p in folder.glob("*.npz") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise MissingData(f"{folder}: no tracker snapshots (<step>.npz)")
    parts = []
    for path in files:
        with np.load(path) as arrays:
            alpha, beta = arrays["alpha"].astype(np.float64), arrays["beta"].astype(np.float64)
            visits = arrays["visits"] if "visits" in arrays else np.zeros(alpha.size, dtype=np.int64)
        parts.append(
            pd.DataFrame(
                {
                    "step": int(path.stem),
                    "row": np.arange(alpha.size),
                    "alpha": alpha,
                    "beta": beta,
                    "p_hat": alpha / (alpha + beta),
                    "n_eff": alpha + beta,
                    "visits": visits,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def offline_value_frame(values: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Per prompt: ``prompt_key, n, successes, success_rate, p_hat0`` with ``p_hat0 = (s + 0.5) / (n + 1)``
    (the tracker's prior mean, over all scores; empty score lists give 0.5)."""
    keys = list(values)
    n = np.array([len(values[k]) for k in keys], dtype=np.int64)
    s = np.array([int(np.sum(np.asarray(values[k], dtype=np.float64) > 0)) for k in keys], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return pd.DataFrame(
        {"prompt_key": keys, "n": n, "successes": s, "success_rate": rate, "p_hat0": (s + 0.5) / (n + 1)}
    )


def find_offline_values(paths: Iterable[str | os.PathLike]) -> Path | None:
    """``offline_values.json`` in a given folder, its parent or its grandparent (run folders sit two deep)."""
    for item in paths:
        base = Path(item)
        candidates = [base] if base.is_file() else [base, *list(base.parents)[:2]]
        for folder in candidates:
            path = folder if folder.is_file() else folder / OFFLINE_VALUES_FILE
            if path.is_file() and path.suffix == ".json":
                return path
    return None


def load_offline_values(path: str | os.PathLike) -> pd.DataFrame:
    """``offline_value_frame`` of an offline-values JSON file."""
    return offline_value_frame(read_offline_values(path))


# ---------------------------------------------------------------------------------------------- diagnostics
def step_windows(steps: pd.Series, n_windows: int = 5) -> pd.Series:
    """Equal-width step windows labelled ``"a-b"`` (an ordered categorical)."""
    values = steps.to_numpy()
    low, high = int(values.min()), int(values.max())
    count = max(1, min(n_windows, high - low + 1))
    edges = np.unique(np.linspace(low, high + 1, count + 1).round().astype(int))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{edges[i]}-{edges[i + 1] - 1}" if edges[i + 1] - 1 > edges[i] else str(edges[i]) for i in index]
    order = [
        f"{edges[i]}-{edges[i + 1] - 1}" if edges[i + 1] - 1 > edges[i] else str(edges[i])
        for i in range(len(edges) - 1)
    ]
    return pd.Series(pd.Categorical(labels, categories=order, ordered=True), index=steps.index, name="window")


def zero_advantage_share(steps: pd.DataFrame, atol: float = ZERO_ATOL) -> pd.DataFrame:
    """Per step, the share of samples whose advantage is zero: ``mean(|A| <= atol)``."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        zero = rows["advantage"].abs() <= atol
        return zero.groupby(rows["step"]).mean().rename("zero_adv_frac").reset_index()

    return _by_run(steps, one)


def centred_advantages(steps: pd.DataFrame) -> pd.Series:
    """The advantage before normalisation: ``r - mean_group(r)`` (GRPO, with a ``group`` column) or ``r - p̂``."""
    if "group" in steps.columns and steps["group"].notna().any():
        mean = steps.groupby(["step", "group"])["reward"].transform("mean")
        size = steps.groupby(["step", "group"])["reward"].transform("size")
        return (steps["reward"] - mean.where(size > 1, 0.0)).rename("centred")
    return (steps["reward"] - steps["p_hat"]).rename("centred")


def advantage_variance(steps: pd.DataFrame) -> pd.DataFrame:
    """Per step, the unbiased variance before (``centred_advantages``) and after normalisation: ``step, stage,
    variance``."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        before = centred_advantages(rows).groupby(rows["step"]).var(ddof=1)
        after = rows["advantage"].groupby(rows["step"]).var(ddof=1)
        frame = pd.concat([before.rename("before norm"), after.rename("after norm")], axis=1).reset_index()
        return frame.melt(id_vars="step", var_name="stage", value_name="variance")

    return _by_run(steps, one)


def advantage_values(steps: pd.DataFrame, max_samples: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Advantage values before and after normalisation (``step, stage, value``), at most ``max_samples`` per run
    and stage (a seeded subsample)."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        if len(rows) > max_samples:
            rows = rows.sample(max_samples, random_state=seed).sort_index()
        before = pd.DataFrame({"step": rows["step"], "stage": "before norm", "value": centred_advantages(rows)})
        after = pd.DataFrame({"step": rows["step"], "stage": "after norm", "value": rows["advantage"]})
        return pd.concat([before, after], ignore_index=True)

    return _by_run(steps, one)


def reliability(steps: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Reliability diagram: p̂ in ``bins`` equal bins of [0, 1]; per bin the mean p̂, mean reward and count."""
    edges = np.linspace(0.0, 1.0, bins + 1)

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        index = np.clip(np.searchsorted(edges, rows["p_hat"].to_numpy(), side="right") - 1, 0, bins - 1)
        grouped = rows.groupby(index)
        frame = pd.DataFrame(
            {
                "p_hat_mean": grouped["p_hat"].mean(),
                "reward_mean": grouped["reward"].mean(),
                "count": grouped.size(),
            }
        ).reindex(range(bins))
        frame["count"] = frame["count"].fillna(0).astype(np.int64)
        frame.insert(0, "bin_right", edges[1:])
        frame.insert(0, "bin_left", edges[:-1])
        return frame.rename_axis("bin").reset_index()

    return _by_run(steps, one)


def rho_drift(steps: pd.DataFrame, n_windows: int = 5) -> pd.DataFrame:
    """SPO samples with their ``rho`` and ``drift`` (D), step window and whether it was the prompt's first visit."""
    if "rho" not in steps.columns or "drift" not in steps.columns:
        raise MissingData("no per-sample rho / drift in steps.jsonl (SPO runs only)")
    keep = [c for c in (*RUN_COLUMNS, "step", "row", "rho", "drift", "first_visit") if c in steps.columns]
    frame = steps[keep].dropna(subset=["rho"]).copy()
    if frame.empty:
        raise MissingData("no per-sample rho / drift in steps.jsonl (SPO runs only)")
    frame["window"] = step_windows(frame["step"], n_windows)
    return frame.reset_index(drop=True)


def rho_drift_summary(samples: pd.DataFrame, qs: Sequence[int] = (10, 25, 50, 75, 90)) -> pd.DataFrame:
    """Per run and step window: ``quantity`` (rho on all samples, drift on revisits), ``count`` and percentiles."""
    keys = [c for c in (*RUN_COLUMNS, "window") if c in samples.columns]
    revisits = samples[~samples["first_visit"]] if "first_visit" in samples.columns else samples
    parts = []
    for quantity, rows in (("rho", samples), ("drift", revisits)):
        grouped = rows.groupby(keys, observed=True, dropna=False)[quantity]
        stats = grouped.agg(["count", "mean", *[(f"p{q}", lambda v, q=q: np.percentile(v, q)) for q in qs]])
        parts.append(stats.reset_index().assign(quantity=quantity))
    return pd.concat(parts, ignore_index=True)


def visits_per_prompt(
    steps: pd.DataFrame | None = None, snapshots: pd.DataFrame | None = None, prompts: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``row, visits``: from the last tracker snapshot if given, else counted in ``steps`` (with zeros for the
    prompts of ``prompts`` that were never sampled)."""
    if snapshots is not None and not snapshots.empty:

        def last(rows: pd.DataFrame) -> pd.DataFrame:
            final = rows[rows["step"] == rows["step"].max()]
            return final[["row", "visits"]].reset_index(drop=True)

        return _by_run(snapshots, last)
    if steps is None or steps.empty:
        raise MissingData("visits need tracker snapshots or steps.jsonl")
    all_rows = prompts["row"].to_numpy() if prompts is not None and "row" in prompts.columns else None

    def count(rows: pd.DataFrame) -> pd.DataFrame:
        visits = rows["row"].value_counts()
        index = np.union1d(visits.index.to_numpy(), all_rows) if all_rows is not None else visits.index.to_numpy()
        return pd.DataFrame({"row": index, "visits": visits.reindex(index, fill_value=0).to_numpy()})

    return _by_run(steps, count)


def difficulty_bins(prompts: pd.DataFrame, n_bins: int = 5) -> pd.Series:
    """Per tracker row, ``difficulty d`` when every prompt has one, else the p̂0 quantile bin ``p̂0 q1..q5``."""
    difficulty = prompts["difficulty"] if "difficulty" in prompts.columns else pd.Series(dtype="Int64")
    if len(difficulty) and difficulty.notna().all():
        levels = sorted(int(d) for d in difficulty.unique())
        labels = difficulty.astype(int).map(lambda d: f"difficulty {d}")
        categories = [f"difficulty {d}" for d in levels]
    else:
        codes = pd.qcut(prompts["p_hat0"].rank(method="first"), n_bins, labels=False)
        labels = codes.map(lambda q: f"p̂0 q{int(q) + 1}")
        categories = [f"p̂0 q{i + 1}" for i in range(int(codes.max()) + 1)]
    return pd.Series(
        pd.Categorical(labels.to_numpy(), categories=categories, ordered=True), index=prompts["row"].to_numpy()
    )


def curriculum(steps: pd.DataFrame, prompts: pd.DataFrame, n_windows: int = 5, n_bins: int = 5) -> pd.DataFrame:
    """Share of sampled prompts per difficulty bin per step window (``window, bin, count, share``), and the bin's
    share of the dataset (``dataset_share``): what uniform sampling would give.

    With a ``run`` column in both frames, each run's samples are binned with its own prompt table; runs
    missing from ``prompts`` are left out.
    """
    per_run = "run" in steps.columns and "run" in prompts.columns
    tables = {run: rows for run, rows in prompts.groupby("run")} if per_run else {}

    def one(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
        bins = difficulty_bins(table, n_bins)
        labelled = pd.DataFrame(
            {"window": step_windows(rows["step"], n_windows).array, "bin": bins.reindex(rows["row"]).array}
        )
        counts = labelled.groupby(["window", "bin"], observed=False).size().rename("count").reset_index()
        totals = counts.groupby("window", observed=False)["count"].transform("sum")
        counts["share"] = counts["count"] / totals.where(totals > 0)
        counts["dataset_share"] = counts["bin"].map(bins.value_counts(normalize=True)).astype(float)
        return counts

    if not per_run:
        return _by_run(steps, lambda rows: one(rows, prompts))
    keys = [c for c in RUN_COLUMNS if c in steps.columns]
    parts = []
    for values, rows in steps.groupby(keys, sort=False, dropna=False):
        run = dict(zip(keys, values, strict=True))["run"]
        if run in tables:
            out = one(rows, tables[run])
            for position, (column, value) in enumerate(zip(keys, values, strict=True)):
                out.insert(position, column, value)
            parts.append(out)
    if not parts:
        raise MissingData("no run has both steps.jsonl and prompts.parquet")
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------------- results table
PAPER_BENCHMARKS = ("AIME24", "AIME25", "BeyondAIME", "BRUMO25", "HMMT25")
PAPER_MAJ32 = pd.DataFrame(
    {
        "method": ["GRPO", "SPO"],
        "AIME24": [83.3, 84.0],
        "AIME25": [72.1, 76.5],
        "BeyondAIME": [45.6, 46.9],
        "BRUMO25": [56.7, 64.0],
        "HMMT25": [44.2, 47.5],
        "avg": [60.4, 63.8],
    }
)
"""The paper's Qwen3-8B maj@32 (percent), GRPO vs SPO."""

_BENCHMARK_ALIASES = {
    "aime24": "AIME24",
    "aime2024": "AIME24",
    "aime25": "AIME25",
    "aime2025": "AIME25",
    "beyondaime": "BeyondAIME",
    "brumo25": "BRUMO25",
    "brumo2025": "BRUMO25",
    "hmmt25": "HMMT25",
    "hmmt2025": "HMMT25",
    "hmmtfeb2025": "HMMT25",
    "hmmtfeb25": "HMMT25",
}


def canonical_benchmark(data_source: str) -> str:
    """The paper's benchmark name for a data source (``math-ai/aime25`` -> ``AIME25``), else the name itself."""
    tail = str(data_source).split("/")[-1]
    return _BENCHMARK_ALIASES.get(re.sub(r"[^a-z0-9]", "", tail.lower()), str(data_source))


def paper_table() -> pd.DataFrame:
    """``PAPER_MAJ32`` in the ``results_table`` layout."""
    out = PAPER_MAJ32.copy()
    out.insert(0, "source", "paper (Qwen3-8B)")
    return out.rename(columns={b: f"{b} maj@32" for b in (*PAPER_BENCHMARKS, "avg")})


def results_table(
    runs_or_table: Iterable[RunInfo | str | os.PathLike] | pd.DataFrame | str | os.PathLike,
    k: int | None = None,
    include_paper: bool | None = None,
) -> pd.DataFrame:
    """The paper's layout from each run's last validation dump: one row per method (mean over its runs), columns
    ``<benchmark> maj@k`` and ``<benchmark> avg@k`` per data source and for ``avg`` (their unweighted mean), in
    percent. k defaults to n. ``include_paper`` (default: when a data source is one of the paper's benchmarks)
    appends the paper's Qwen3-8B maj@32 rows.
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
    wide.insert(0, "runs", grouped.size())
    steps = table.groupby("method")["step"].max()
    wide.insert(1, "step", steps.reindex(wide.index))
    order = {b: i for i, b in enumerate(PAPER_BENCHMARKS)}
    names = {c.rsplit(" ", 1)[0] for c in wide.columns if " " in c} - {"avg"}
    benchmarks = [*sorted(names, key=lambda b: (order.get(b, len(order)), b)), "avg"]
    ordered = [f"{b} {m}@{k_label}" for b in benchmarks for m in ("maj", "avg")]
    wide = wide[["runs", "step", *[c for c in ordered if c in wide.columns]]].reset_index().rename_axis(columns=None)
    wide.insert(0, "source", "this kit")
    if include_paper is None:
        include_paper = bool(set(table["benchmark"]) & set(PAPER_BENCHMARKS))
    if include_paper:
        wide = pd.concat([wide, paper_table()], ignore_index=True)
    return wide.astype({"runs": "Int64", "step": "Int64"})
