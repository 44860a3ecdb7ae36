"""How far each method's baseline sits from the prompt's true success probability under the current policy.

``spo ground-truth RUN`` estimates, for the prompts of training step ``s``, their success probability under
the policy that generated step ``s``'s rollouts (the checkpoint of step ``s - 1``; the initial model for
step 1) from ``n`` fresh samples each:

    t = successes / n,   E[t] = p,   SE(t) = sqrt(p(1-p)/n) <= 0.5/sqrt(n)   (n = 64: at most 0.0625)

Against ``t`` this module measures, for every logged sample of that step (success ``y = 1[reward > 0]``):

    SPO tracker                 b = p̂ (the tracker's value before the step's update)
    GRPO group mean             b = mean_{j in g} y_j          (the sample itself included, as GRPO does)
    GRPO leave-one-out mean     b = mean_{j in g, j != i} y_j  (RLOO's baseline; unbiased for p)

    baseline error              e = b - p,  estimated by b - t
    mean squared error          MSE = E[(b - p)^2] = E[(b - t)^2] - E[p(1-p)/n]
                                (b and t are independent, so the truth's own noise adds p(1-p)/n;
                                 it is removed with the unbiased t(1-t)/(n-1))
    advantage error             (y - b) - (y - p) = p - b: before normalisation the advantage's error *is*
                                minus the baseline error; its share of the advantage's second moment,
                                noise share = MSE / E[(y - b)^2], is how much of the raw advantage's
                                spread is baseline error rather than signal
    advantage direction         corr(A, y - p): the logged (normalised) advantage against the advantage
                                the true baseline would give (scale free, so the methods compare)
    calibration against truth   p̂ in equal bins: mean p̂ against mean t (a reliability diagram whose
                                y axis is the truth rather than single rewards), ECE = sum_k w_k |p̂_k - t_k|

Intervals are percentile bootstraps over *units*: one unit is a GRPO group (its samples share one group
mean) or one SPO sample (one prompt of one step), so correlated samples are resampled together.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from spo_helpers.analysis.baselines import p_hat_bins
from spo_helpers.analysis.intervals import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Interval, interval_of, ratio_interval
from spo_helpers.analysis.runs import RUN_COLUMNS, RunInfo, by_run, run_path
from spo_helpers.errors import MissingData
from spo_helpers.formats.layout import RunLayout

TRACKER = "SPO tracker p̂"
GROUP_MEAN = "GRPO group mean"
LEAVE_ONE_OUT = "GRPO leave-one-out mean"
BASELINES = (TRACKER, GROUP_MEAN, LEAVE_ONE_OUT)
TRUTH_COLUMNS = ("step", "checkpoint", "row", "prompt_key", "true_p", "successes", "n")


def load_ground_truth(run: RunInfo | str | os.PathLike) -> pd.DataFrame:
    """``<run>/ground_truth.parquet``: ``step, checkpoint, row, prompt_key, true_p, successes, n``."""
    path = RunLayout(run_path(run)).ground_truth
    if not path.is_file():
        raise MissingData(f"{path}: missing (run `spo ground-truth {run_path(run)}` on a run with checkpoints)")
    frame = pd.read_parquet(path)
    # the run columns (run, method, seed) tag frames in the analysis: a sampling seed goes by another name
    return frame.rename(columns={"seed": "sample_seed"}) if "seed" in frame.columns else frame


def _is_grpo(rows: pd.DataFrame) -> bool:
    return "group" in rows.columns and rows["group"].notna().any()


def baseline_errors(steps: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per logged sample and baseline whose step has a ground truth.

    ``steps``: ``load_steps`` frames (``step, sample, row, reward, p_hat, advantage``, ``group`` for GRPO), with the
    run columns when several runs are stacked; ``truth``: ``load_ground_truth`` frames, run columns matching.
    Columns: the run columns, ``step, unit, row, baseline, y, b, true_p, n, error, sq_error_corrected,
    raw_advantage, advantage, ideal_advantage`` (and ``first_visit`` when ``steps`` has it).
    """
    keys = [c for c in RUN_COLUMNS if c in steps.columns and c in truth.columns]
    truth = truth[[*keys, "step", "row", "true_p", "n"]].drop_duplicates([*keys, "step", "row"])
    joined = steps.merge(truth, on=[*keys, "step", "row"], how="inner")
    if joined.empty:
        raise MissingData("no logged sample has a ground truth (steps.jsonl and ground_truth.parquet share no step)")

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.reset_index(drop=True)
        y = (rows["reward"].to_numpy(dtype=np.float64) > 0).astype(np.float64)
        base = {"step": rows["step"].to_numpy(), "row": rows["row"].to_numpy(), "y": y}
        if "first_visit" in rows.columns:
            base["first_visit"] = rows["first_visit"].to_numpy(dtype=bool)
        parts = []
        if _is_grpo(rows):
            unit = rows.groupby(["step", "group"], sort=False).ngroup().to_numpy()
            total = pd.Series(y).groupby(unit).transform("sum").to_numpy()
            size = pd.Series(y).groupby(unit).transform("size").to_numpy().astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                loo = np.where(size > 1, (total - y) / (size - 1), np.nan)
            parts += [(GROUP_MEAN, total / size), (LEAVE_ONE_OUT, loo)]
        else:
            unit = np.arange(len(rows))
            parts.append((TRACKER, rows["p_hat"].to_numpy(dtype=np.float64)))
        frames = []
        for name, b in parts:
            frames.append(pd.DataFrame({**base, "unit": unit, "baseline": name, "b": b}))
        out = pd.concat(frames, ignore_index=True)
        n = np.tile(rows["n"].to_numpy(dtype=np.float64), len(parts))
        p = np.tile(rows["true_p"].to_numpy(dtype=np.float64), len(parts))
        out["true_p"], out["n"] = p, n
        out["advantage"] = np.tile(rows["advantage"].to_numpy(dtype=np.float64), len(parts))
        out["error"] = out["b"] - p
        out["sq_error_corrected"] = out["error"] ** 2 - p * (1 - p) / np.maximum(n - 1, 1)
        out["raw_advantage"] = out["y"] - out["b"]
        out["ideal_advantage"] = out["y"] - p
        return out.dropna(subset=["b"]).reset_index(drop=True)

    return by_run(joined, one)


def _unit_bootstrap(units: np.ndarray, stat, resamples: int, seed: int) -> np.ndarray:
    """``stat(index)`` on ``resamples`` resamples of whole units (``index``: the selected rows)."""
    codes, inverse = np.unique(units, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(codes))]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for b in range(resamples):
        pick = rng.integers(0, len(codes), size=len(codes))
        out[b] = stat(np.concatenate([members[k] for k in pick]))
    return out


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _summary_statistics(part: pd.DataFrame) -> dict:
    """``name -> stat(index)`` over the rows ``index`` of one run and baseline."""
    e = part["error"].to_numpy()
    sq = part["sq_error_corrected"].to_numpy()
    raw = part["raw_advantage"].to_numpy() ** 2
    adv, ideal = part["advantage"].to_numpy(), part["ideal_advantage"].to_numpy()
    return {
        "bias": lambda i: e[i].mean(),
        "mae": lambda i: np.abs(e[i]).mean(),
        "rmse": lambda i: np.sqrt(max(sq[i].mean(), 0.0)),
        "noise_share": lambda i: sq[i].mean() / raw[i].mean() if raw[i].mean() > 0 else np.nan,
        "adv_corr": lambda i: _corr(adv[i], ideal[i]),
    }


def error_summary(
    errors: pd.DataFrame, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0
) -> pd.DataFrame:
    """Per run and baseline: ``samples, units, steps, n_truth, truth_se`` (mean SE of t) and, each with
    ``_low`` / ``_high`` bootstrap bounds over units: ``bias`` (mean e), ``mae`` (mean |e|, truth noise
    included), ``rmse`` (sqrt of the corrected MSE), ``noise_share`` (MSE / E[(y - b)^2]) and ``adv_corr``
    (corr of the logged advantage with y - p)."""
    keys = [c for c in (*RUN_COLUMNS, "baseline") if c in errors.columns]
    rows = []
    for values, part in errors.groupby(keys, sort=False, dropna=False):
        part = part.reset_index(drop=True)
        stats = _summary_statistics(part)
        everything = np.arange(len(part))
        record = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
        p, n = part["true_p"].to_numpy(), part["n"].to_numpy()
        record.update(
            samples=len(part),
            units=int(part["unit"].nunique()),
            steps=int(part["step"].nunique()),
            n_truth=float(n.mean()),
            truth_se=float(np.sqrt(p * (1 - p) / n).mean()),
        )
        for name, stat in stats.items():
            boot = _unit_bootstrap(part["unit"].to_numpy(), stat, resamples, seed)
            interval = interval_of(stat(everything), boot, level)
            record.update({name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high})
        rows.append(record)
    return pd.DataFrame(rows)


def error_by_step(errors: pd.DataFrame) -> pd.DataFrame:
    """Per run, baseline and step: ``rmse`` (corrected), ``mae``, ``bias`` and ``samples``."""
    keys = [c for c in (*RUN_COLUMNS, "baseline") if c in errors.columns]
    grouped = errors.groupby([*keys, "step"], sort=True, dropna=False)
    out = grouped.agg(
        mse=("sq_error_corrected", "mean"),
        mae=("error", lambda v: float(np.abs(v).mean())),
        bias=("error", "mean"),
        samples=("error", "size"),
    ).reset_index()
    out["rmse"] = np.sqrt(out.pop("mse").clip(lower=0.0))
    return out


def expected_group_mean_rmse(truth: pd.DataFrame, group_size: int = 8) -> float:
    """The RMSE a group mean of ``group_size`` fresh samples would have on these prompts: ``sqrt(E[p(1-p)] / G)``,
    with the unbiased ``t(1-t) n/(n-1)`` for ``p(1-p)`` (a reference for SPO's p̂ on SPO's own prompts)."""
    t, n = truth["true_p"].to_numpy(dtype=np.float64), truth["n"].to_numpy(dtype=np.float64)
    return float(np.sqrt(max((t * (1 - t) * n / (n - 1)).mean(), 0.0) / group_size))


def same_prompts_ratio(
    errors: pd.DataFrame,
    group_size: int = 8,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """RMSE of SPO's p̂ over the RMSE a group mean of ``group_size`` fresh samples would have, on the same prompts at
    the same steps: ``sqrt(mean(e²_corrected) / mean(p(1-p) / G))`` over SPO's samples, with a bootstrap interval
    that resamples the samples jointly (both sides are measured on each). Like for like, where ``error_ratio``
    sets SPO's prompts against GRPO's."""
    part = errors[errors["baseline"] == TRACKER]
    if part.empty:
        raise MissingData(f"no samples with the baseline {TRACKER!r}")
    t, n = part["true_p"].to_numpy(dtype=np.float64), part["n"].to_numpy(dtype=np.float64)
    num = part["sq_error_corrected"].to_numpy(dtype=np.float64)
    den = t * (1 - t) * n / np.maximum(n - 1, 1) / group_size
    rng = np.random.default_rng(seed)
    index = rng.integers(0, num.size, size=(resamples, num.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.sqrt(np.clip(num[index].mean(axis=1), 0.0, None) / den[index].mean(axis=1))
    estimate = float(np.sqrt(max(num.mean(), 0.0) / den.mean())) if den.mean() > 0 else float("nan")
    return interval_of(estimate, ratios, level)


def visits_within_steps(errors: pd.DataFrame) -> pd.DataFrame:
    """SPO's p̂ error on first visits and on revisits, step by step (a pooled split would compare early steps,
    all first visits, with late ones, mostly revisits): per step with both, ``step, first_rmse, revisit_rmse,
    first_samples, revisit_samples`` (corrected RMSE)."""
    part = errors[errors["baseline"] == TRACKER]
    if "first_visit" not in part.columns or part.empty:
        return pd.DataFrame(columns=["step", "first_rmse", "revisit_rmse", "first_samples", "revisit_samples"])
    rows = []
    for step, here in part.groupby("step"):
        first, revisit = here[here["first_visit"]], here[~here["first_visit"]]
        if len(first) and len(revisit):
            rows.append(
                {
                    "step": int(step),
                    "first_rmse": float(np.sqrt(max(first["sq_error_corrected"].mean(), 0.0))),
                    "revisit_rmse": float(np.sqrt(max(revisit["sq_error_corrected"].mean(), 0.0))),
                    "first_samples": len(first),
                    "revisit_samples": len(revisit),
                }
            )
    return pd.DataFrame(rows)


def unit_errors(errors: pd.DataFrame, baseline: str, measure: str = "abs") -> np.ndarray:
    """Per unit of ``baseline``: the mean ``|e|`` (``measure="abs"``) or corrected ``e^2`` (``"sq"``)."""
    part = errors[errors["baseline"] == baseline]
    if part.empty:
        raise MissingData(f"no samples with the baseline {baseline!r}")
    value = part["error"].abs() if measure == "abs" else part["sq_error_corrected"]
    keys = [c for c in RUN_COLUMNS if c in part.columns]
    return value.groupby([*[part[k] for k in keys], part["unit"]], sort=False).mean().to_numpy()


def error_ratio(
    errors: pd.DataFrame,
    numerator: str = TRACKER,
    denominator: str = GROUP_MEAN,
    *,
    measure: str = "rmse",
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """``error(numerator) / error(denominator)`` with an interval resampling each side's units independently
    (the baselines come from different runs). ``measure``: ``rmse`` (corrected) or ``mae``."""
    sq = measure == "rmse"
    num = unit_errors(errors, numerator, "sq" if sq else "abs")
    den = unit_errors(errors, denominator, "sq" if sq else "abs")
    ratio = ratio_interval(num, den, resamples=resamples, level=level, seed=seed)
    if not sq:
        return ratio
    # a corrected MSE can dip below zero in a resample (truth noise larger than the error): clip at zero
    root = [float(np.sqrt(max(v, 0.0))) if np.isfinite(v) else float("nan") for v in (ratio.low, ratio.high)]
    estimate = float(np.sqrt(max(ratio.estimate, 0.0))) if np.isfinite(ratio.estimate) else float("nan")
    return Interval(estimate, root[0], root[1], level)


def calibration_vs_truth(steps: pd.DataFrame, truth: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Reliability of the tracker's p̂ against the truth: per run and p̂ bin, ``p_hat_mean, true_p_mean,
    reward_mean, count`` (every logged sample with a ground truth and a p̂, either method)."""
    keys = [c for c in RUN_COLUMNS if c in steps.columns and c in truth.columns]
    joined = steps.merge(
        truth[[*keys, "step", "row", "true_p"]].drop_duplicates([*keys, "step", "row"]),
        on=[*keys, "step", "row"],
        how="inner",
    ).dropna(subset=["p_hat"])
    if joined.empty:
        raise MissingData("no logged sample with a p̂ has a ground truth")
    joined = joined.assign(success=(joined["reward"] > 0).astype(float))
    means = {"p_hat_mean": "p_hat", "true_p_mean": "true_p", "reward_mean": "success"}
    return by_run(joined, lambda rows: p_hat_bins(rows, bins, means))


def expected_calibration_error(reliability: pd.DataFrame, against: str = "true_p_mean") -> pd.DataFrame:
    """Per run: ``ece = sum_k (count_k / N) |p_hat_mean_k - against_k|`` over the non-empty bins."""

    def one(rows: pd.DataFrame) -> pd.DataFrame:
        full = rows[rows["count"] > 0]
        weights = full["count"] / full["count"].sum()
        ece = float((weights * (full["p_hat_mean"] - full[against]).abs()).sum())
        return pd.DataFrame({"ece": [ece], "samples": [int(full["count"].sum())]})

    return by_run(reliability, one)
