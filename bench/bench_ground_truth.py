"""How far each baseline sits from the truth on the CPU world: SPO's tracker p̂ vs GRPO's group means.

Trains GRPO (16 prompts x 8) and SPO (128 prompts x 1) on the CPU world as ``bench_train.py`` does, saving a
checkpoint every ``--save_freq`` steps, then ``spo ground-truth`` samples every prompt of step k+1 ``--n`` times
under checkpoint k (temperature 1, as training): t = successes / n, SE(t) <= 0.5 / sqrt(n). Against t it
prints, per baseline (SPO's p̂ before the update, GRPO's group mean, GRPO's leave-one-out mean):

- bias, mean |b - p| and RMSE (the truth's own noise t(1-t)/(n-1) removed from the squared error), with 95%
  bootstrap intervals over units (a GRPO group, an SPO sample);
- the noise share of the raw advantage: MSE / E[(y - b)^2] (the part of the raw advantage's spread that is
  baseline error), and corr(logged advantage, y - p);
- the tracker's calibration against the truth (ECE over 10 p̂ bins) beside its calibration against single
  rewards;
- like for like: RMSE(SPO tracker) over the RMSE a group mean of 8 fresh samples would have on SPO's own prompts at
  the same steps (the headline ratio), beside RMSE(SPO tracker) / RMSE(GRPO group mean), which sets SPO's prompts
  against GRPO's (each side's units resampled);
- SPO's error on first visits and on revisits within each step (not pooled over steps), and each method's raw
  advantage variance computed on its own samples.

    python bench/bench_ground_truth.py [--seed 0] [--steps 30] [--save_freq 5] [--n 64]
        [--output runs/bench_ground_truth]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_train import offline_values

from spo_helpers.analysis import baseline_error as G
from spo_helpers.analysis.baselines import centred_advantages
from spo_helpers.analysis.intervals import t_mean
from spo_helpers.analysis.steps import load_steps
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.ground_truth import measure_run
from spo_helpers.stages.train import train
from spo_helpers.world.build import build_world


def trained(run_dir: Path, steps: int) -> bool:
    records = read_step_log(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    return any(r["step"] >= steps for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--save_freq", type=int, default=5)
    parser.add_argument("--n", type=int, default=64, help="samples per prompt and checkpoint for the truth")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--output", default="runs/bench_ground_truth")
    parser.add_argument("--assets", default=None)
    args = parser.parse_args()

    output = Path(args.output)
    world = build_world(args.assets)
    start = time.perf_counter()
    frames, truths = [], []
    for method in ("GRPO", "SPO"):
        run_dir = output / "spo" / f"{method.lower()}_seed{args.seed}"
        if not trained(run_dir, args.steps):
            values = offline_values(world, output) if method == "SPO" else None
            train(
                method,
                output_dir=str(output),
                exp_name=run_dir.name,
                model_path=str(world.model_dir),
                train_files=[str(world.train_file)],
                val_files=[str(p) for p in world.validation_files],
                offline_values=str(values) if values else None,
                total_steps=args.steps,
                seed=args.seed,
                overrides=[f"trainer.test_freq={args.steps}", f"trainer.save_freq={args.save_freq}"],
            )
        tags = {"run": run_dir.name, "method": method, "seed": args.seed}
        truth = measure_run(run_dir, n=args.n, seed=args.seed, assets=args.assets, progress=False)
        truths.append(truth.assign(**tags))
        frames.append(load_steps(run_dir).assign(**tags))
    steps, truth = pd.concat(frames, ignore_index=True), pd.concat(truths, ignore_index=True)
    errors = G.baseline_errors(steps, truth)
    summary = G.error_summary(errors, resamples=args.resamples)
    reliability = G.calibration_vs_truth(steps, truth)
    ece_truth = G.expected_calibration_error(reliability)
    ece_reward = G.expected_calibration_error(reliability, against="reward_mean")
    ratio = G.error_ratio(errors, resamples=args.resamples)
    same_prompts = G.same_prompts_ratio(errors, resamples=args.resamples)
    ratio_loo = G.error_ratio(errors, G.TRACKER, G.LEAVE_ONE_OUT, resamples=args.resamples)
    ratio_mae = G.error_ratio(errors, measure="mae", resamples=args.resamples)

    se = np.sqrt(truth["true_p"] * (1 - truth["true_p"]) / truth["n"])
    print(f"\nmachine: {platform.machine()}, python {platform.python_version()}, {time.perf_counter() - start:.0f}s")
    print(
        f"{args.steps} steps x 128 samples per method, seed {args.seed}; truth: {args.n} samples per prompt at"
        f" checkpoints {sorted(truth['checkpoint'].unique().tolist())} (0: the initial model), each for the prompts of"
        f" the next step: {len(truth)} prompt measurements, SE of t mean {se.mean():.3f}, max {se.max():.3f}"
        f" (bound {0.5 / np.sqrt(args.n):.4f})\n"
    )
    check = errors.drop_duplicates([*[c for c in ("run",) if c in errors], "step", "unit", "row", "y"])
    consistency = check.groupby("method")[["y", "true_p"]].mean()
    print("consistency: mean training success y vs mean truth t on the same prompts and steps (should agree)")
    print(consistency.round(3).to_string(), "\n")
    shown = summary.copy()
    for name in ("bias", "mae", "rmse", "noise_share", "adv_corr"):
        shown[name] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for v, lo, hi in zip(shown[name], shown[f"{name}_low"], shown[f"{name}_high"], strict=True)
        ]
    columns = ["baseline", "samples", "units", "steps", "bias", "mae", "rmse", "noise_share", "adv_corr"]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print("baseline error b - p (95% bootstrap over units: a GRPO group, an SPO sample)")
        print(shown[columns].to_string(index=False))
        print("\ncalibration of the tracker's p̂ (ECE, 10 bins): against the truth / against single rewards")
        both = ece_truth.merge(ece_reward, on=["run", "method", "seed", "samples"], suffixes=("_truth", "_reward"))
        print(both.round(3).to_string(index=False))
    visits = G.visits_within_steps(errors)
    if len(visits):
        print("\nSPO tracker RMSE within each step: the prompt's first appearance in the run vs a revisit")
        print(visits.round(3).to_string(index=False))
        gap = t_mean(visits["revisit_rmse"] - visits["first_rmse"]) if len(visits) > 1 else None
        print(f"  revisit - first visit, mean over {len(visits)} steps: {gap if gap else 'one step only'}")
    logged_spo = steps.loc[steps["method"] == "SPO", ["step", "row"]]
    spo_truth = truth[truth["method"] == "SPO"].merge(logged_spo, on=["step", "row"])
    if len(spo_truth):
        print(
            "reference: a group mean of 8 fresh samples on SPO's own prompts would have RMSE"
            f" {G.expected_group_mean_rmse(spo_truth):.3f} (sqrt(E[p(1-p)]/8))"
        )
    raw = steps.assign(centred=centred_advantages(steps)).groupby("method")["centred"].var()  # each row its own
    print(
        f"\nraw advantage variance (before normalisation): SPO {raw.get('SPO', np.nan):.3f}, GRPO"
        f" {raw.get('GRPO', np.nan):.3f}; its baseline-error share is the noise_share column above"
    )
    print(f"\nRMSE ratio SPO tracker / a group of 8 on SPO's prompts  {same_prompts} (like for like)")
    print(f"RMSE ratio SPO tracker / GRPO group mean          {ratio} (SPO's prompts vs GRPO's)")
    print(f"RMSE ratio SPO tracker / GRPO leave-one-out mean  {ratio_loo}")
    print(f"MAE ratio SPO tracker / GRPO group mean           {ratio_mae}")
    by_method = summary.set_index("baseline")
    tracker_rmse = round(float(by_method.loc[G.TRACKER, "rmse"]), 4)
    results = [
        {
            "name": "baseline RMSE vs true p, same prompts and steps (SPO tracker vs a group mean of 8, expected)",
            "value": tracker_rmse,
            "unit": "",
            "baseline": round(G.expected_group_mean_rmse(spo_truth), 4) if len(spo_truth) else None,
            "ratio": round(same_prompts.estimate, 4),
            "interval": [round(same_prompts.low, 4), round(same_prompts.high, 4)],
            "command": "python bench/bench_ground_truth.py",
        },
        {
            "name": "baseline RMSE vs true p, each method's own prompts (SPO tracker vs GRPO group mean)",
            "value": tracker_rmse,
            "unit": "",
            "baseline": round(float(by_method.loc[G.GROUP_MEAN, "rmse"]), 4),
            "ratio": round(ratio.estimate, 4),
            "interval": [round(ratio.low, 4), round(ratio.high, 4)],
            "command": "python bench/bench_ground_truth.py",
        },
    ]
    for result in results:
        print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
