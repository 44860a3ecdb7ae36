"""The paper's claims tested on the CPU world in the paper's regime (``regime=paper``): seeds, ablations, truth.

The regime (``spo_helpers/verl_glue/config/regime/paper.yaml``, docs/claims.md): the world's 200-prompt training
probe is the pool, 32 samples per step for every arm, 150 steps (about 24 visits per prompt for SPO, 3 passes over
the pool for GRPO), lr 3e-5. For each arm, ``--seeds`` runs (seed i of every arm shares the seed, so arms are
compared paired by seed):

- GRPO (4 prompts x 8) and SPO (32 x 1, the offline values estimated at T = 0.6 as the official recipe does);
- ablations at equal samples: SPO with uniform prompt choice (no prioritisation), SPO with an oracle baseline
  (each prompt's success rate under the current policy from extra responses: does baseline error matter here at
  all?), GRPO with DAPO's group filter, GRPO with 2 and with 4 responses per prompt;
- the tool world: GRPO and SPO with tools, held-out accuracy before and after RL.

Measured and printed:

- the prior: the offline values' p̂0 at T = 0.6 and at the training temperature T = 1.0 against the truth at
  T = 1.0 (the initial model sampled ``--truth_n`` times per prompt);
- baseline error against the truth (``spo ground-truth`` at every checkpoint, prompts of the next step, T = 1):
  SPO's p̂ against the expected error of a group of 8 on the same prompts at the same step, and GRPO's group mean
  on its own prompts, per step and (SPO) per visit count;
- accuracy at equal samples: final accuracy on the pool (every prompt of it trained by every arm: equal coverage)
  and on the held-out prompts, each arm against GRPO: Fieller's ratio and the paired t difference over seeds;
- what the samples did: GRPO's zero-advantage share, SPO's revisit drift and rho at its clip bounds.

The last lines are ``RESULT`` records for the README table; ``spo figures``' builders draw the GRPO and SPO
runs into ``<output>/figures``, and ``<output>/claims.png`` the arms and the baseline error by visit.

    python bench/bench_claims.py [--seeds 0 1 2 3 4] [--steps 150] [--output runs/bench_claims] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spo_helpers.analysis import baseline_error as G
from spo_helpers.analysis import claims as C
from spo_helpers.analysis.intervals import paired_t_difference
from spo_helpers.analysis.steps import load_steps, offline_value_frame
from spo_helpers.formats.offline_values import read_offline_values
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.estimate import estimate_subset
from spo_helpers.stages.figures import write_figures
from spo_helpers.stages.ground_truth import measure_run
from spo_helpers.stages.merge import merge_dumps, write_merge
from spo_helpers.stages.train import train
from spo_helpers.world.build import build_world
from spo_helpers.world.paths import PROBE_DATA_SOURCE
from spo_helpers.world.task import DATA_SOURCE

HELD_OUT = DATA_SOURCE
POOL = PROBE_DATA_SOURCE
REGIME = "regime=paper"
POOL_ROWS = 200  # the world's training probe, the regime's pool

ARMS: dict[str, tuple[str, int | None, list[str]]] = {
    # arm: (method, responses per prompt, overrides), all at 32 samples per step
    "GRPO": ("GRPO", None, []),
    "SPO": ("SPO", None, []),
    "SPO uniform": ("SPO", None, ["trainer.spo.sampler.mode=uniform"]),
    "SPO oracle": ("SPO", None, ["trainer.spo.baseline=oracle", "trainer.spo.oracle_samples=8"]),
    "GRPO filtered": ("GRPO", None, ["algorithm.filter_groups.enable=true"]),
    "GRPO n=4": ("GRPO", 4, ["data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=2"]),
    "GRPO n=2": ("GRPO", 2, ["data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=4"]),
}
TOOL_ARMS = ("GRPO", "SPO")


def slug(arm: str) -> str:
    return arm.lower().replace(" ", "_").replace("=", "")


def finished(run_dir: Path, steps: int) -> bool:
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and any(r["step"] >= steps for r in read_step_log(metrics))


def offline_values_at(world, output: Path, temperature: float, n: int) -> Path:
    """The pool's offline values (n samples per prompt) at ``temperature``, estimated once and cached."""
    target = output / f"offline_values_t{temperature:g}.json"
    if not target.is_file():
        name = f"estimate_t{temperature:g}"
        estimate_subset(
            world.probe_file,
            output_dir=output,
            exp_name=name,
            model_path=str(world.model_dir),
            n_val=n,
            overrides=[f"actor_rollout_ref.rollout.val_kwargs.temperature={temperature}"],
        )
        write_merge(merge_dumps(output / "spo", pattern=f"{name}/validation_data/0.jsonl"), target)
    return target


def run_arm(arm: str, seed: int, world, root: Path, steps: int, values: Path, extra: list[str]) -> Path:
    method, n_train, overrides = ARMS[arm]
    folder = root / slug(arm)
    name = f"{method.lower()}_seed{seed}"
    run_dir = folder / "spo" / name
    if not finished(run_dir, steps):
        train(
            method,
            output_dir=str(folder),
            exp_name=name,
            model_path=str(world.model_dir),
            train_files=[str(world.probe_file)],
            val_files=[str(world.val_file), str(world.probe_file)],
            offline_values=str(values) if method == "SPO" else None,
            n_train=n_train,
            total_steps=steps,
            seed=seed,
            # validation at the start and the end only: the comparison reads those two, and the validation samples
            # are seeded per call, so skipping the ones between changes no result (checked: seed 0, GRPO and SPO)
            overrides=[REGIME, f"trainer.test_freq={steps}", *overrides, *extra],
        )
    return run_dir


def run_row(run_dir: Path, method: str) -> dict:
    """A run's final accuracies, its coverage of the pool and what its samples did."""
    steps = load_steps(run_dir)
    sources = {"pool": POOL, "held_out": HELD_OUT}
    row = {**C.first_and_last_accuracy(read_step_log(run_dir / "metrics.jsonl"), sources)}
    row["coverage"] = C.pool_coverage(steps, POOL_ROWS)
    if method == "GRPO":
        row["zero-advantage share"] = C.zero_advantage_share(steps)
    else:
        row.update(C.revisit_drift(steps))
    return row


def baseline_errors(run_dirs: dict[str, list[Path]], n: int) -> pd.DataFrame:
    """Errors of each baseline against the truth at every checkpoint, stacked over seeds (``G.baseline_errors``)."""
    frames = []
    for method, runs in run_dirs.items():
        for run_dir in runs:
            truth = measure_run(run_dir, n=n, progress=False)
            steps = load_steps(run_dir)
            steps["visit"] = C.visit_numbers(steps)
            tags = {"run": f"{method}/{run_dir.name}", "method": method, "seed": run_dir.name}
            errors = G.baseline_errors(steps.assign(**tags), truth.assign(**tags))
            visits = steps.groupby(["step", "row"])["visit"].min()
            errors["visit"] = [visits.get((s, r), np.nan) for s, r in zip(errors["step"], errors["row"], strict=True)]
            frames.append(errors)
    return pd.concat(frames, ignore_index=True)


def rmse(values: pd.Series) -> float:
    return float(np.sqrt(max(values.mean(), 0.0))) if len(values) else float("nan")


def print_baseline_errors(errors: pd.DataFrame) -> dict:
    spo = errors[errors["baseline"] == G.TRACKER]
    grpo = errors[errors["baseline"] == G.GROUP_MEAN]
    print("\nbaseline error against the truth (corrected RMSE; T = 1, the checkpoint before each step)")
    print(f"{'step':>5} {'SPO p̂':>8} {'group of 8, same prompts':>26} {'GRPO group mean, its prompts':>30}")
    for step in sorted(spo["step"].unique()):
        here = spo[spo["step"] == step]
        theirs = grpo[grpo["step"] == step]["sq_error_corrected"]
        reference = G.expected_group_mean_rmse(here, group_size=8)
        print(f"{step:>5} {rmse(here['sq_error_corrected']):>8.3f} {reference:>26.3f} {rmse(theirs):>30.3f}")
    per_seed = [G.same_prompts_ratio(part, resamples=1).estimate for _, part in spo.groupby("run")]
    same = C.seed_level_mean(per_seed)
    print(
        f"  SPO p̂ RMSE / a group of 8's on the same prompts and steps, all checkpoints: {same} "
        f"(mean of {len(per_seed)} seed-level ratios, t interval)"
    )
    bins = pd.cut(spo["visit"], [0, 1, 5, 10, 20, np.inf], labels=["1", "2-5", "6-10", "11-20", "21+"])
    print("\nSPO p̂ by visit to the prompt: RMSE (samples), and a group of 8 on the same samples")
    by_visit = {}
    for label, part in spo.groupby(bins, observed=True):
        by_visit[str(label)] = rmse(part["sq_error_corrected"])
        reference = G.expected_group_mean_rmse(part, group_size=8)
        print(f"  visit {label:>6}: {by_visit[str(label)]:.3f} ({len(part)}); group of 8: {reference:.3f}")
    return {"same_prompts_ratio": same, "by_visit": by_visit}


def print_prior(world, values: dict[float, Path], n: int) -> None:
    """The offline values' p̂0 against the truth at T = 1 (the initial model, ``n`` samples per pool prompt)."""
    from spo_helpers.formats.keys import row_key
    from spo_helpers.world.model import load_model
    from spo_helpers.world.task import read_rows
    from spo_helpers.world.warmstart import model_success_rates

    rows = read_rows(world.probe_file)
    model, tokenizer = load_model(world.model_dir)
    truth = model_success_rates(model, tokenizer, rows, n=n, temperature=1.0, top_p=1.0, seed=12345)
    keys = [row_key(row) for row in rows]
    print(f"\nthe prior p̂0 = (s + 0.5)/(k + 1) against the truth at T = 1 ({n} samples per prompt, initial model)")
    for temperature, path in sorted(values.items()):
        p_hat0 = offline_value_frame(read_offline_values(path)).set_index("prompt_key").loc[keys, "p_hat0"]
        error, bias = C.prior_error(p_hat0.to_numpy(), truth, n)
        print(f"  values at T = {temperature:g}: RMSE {error:.3f}, bias {bias:+.3f}")
    print(f"  (a group of 8 fresh samples at T = 1: RMSE {C.group_mean_rmse(truth, 8):.3f})")


def tool_world_runs(seeds: list[int], steps: int, root: Path) -> pd.DataFrame:
    """GRPO and SPO with tools on the tool world: held-out accuracy before (step 0) and after RL."""
    world = build_world(None, tools=True)
    rows = []
    for seed in seeds:
        for method in TOOL_ARMS:
            folder = root / "tools"
            name = f"{method.lower()}_seed{seed}"
            run_dir = folder / "spo" / name
            if not finished(run_dir, steps):
                train(
                    method,
                    output_dir=str(folder),
                    exp_name=name,
                    model_path=str(world.model_dir),
                    train_files=[str(world.train_file)],
                    val_files=[str(world.val_file)],
                    offline_values="none" if method == "SPO" else None,
                    total_steps=steps,
                    seed=seed,
                    tools="sandbox",
                    overrides=[f"trainer.test_freq={steps}", f"trainer.save_freq={steps}"],
                )
            acc = C.first_and_last_accuracy(read_step_log(run_dir / "metrics.jsonl"), {"held_out": HELD_OUT})
            rows.append({"seed": seed, "arm": method, **acc})
    return pd.DataFrame(rows)


def draw(table: pd.DataFrame, arms: list[str], by_visit: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for offset, (column, label) in enumerate((("pool", "pool (trained)"), ("held_out", "held-out"))):
        means, errs = [], []
        for arm in arms:
            interval = C.seed_level_mean(table.loc[table["arm"] == arm, column])
            means.append(interval.estimate * 100)
            errs.append((interval.high - interval.estimate) * 100)
        left.errorbar(np.arange(len(arms)) + 0.15 * offset, means, yerr=errs, fmt="o", capsize=3, label=label)
    left.set_xticks(np.arange(len(arms)), arms, rotation=30, ha="right")
    left.set_ylabel("final validation accuracy (%)")
    left.set_title("Accuracy at equal samples by arm (mean, 95% t interval over seeds)")
    left.legend()
    right.plot(list(by_visit), list(by_visit.values()), marker="o")
    right.set_xlabel("visit to the prompt")
    right.set_ylabel("RMSE of SPO's p̂ against the truth")
    right.set_title("SPO's baseline error by visit (paper regime)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--tool_steps", type=int, default=15)
    parser.add_argument("--truth_n", type=int, default=64, help="samples per prompt for every ground truth")
    parser.add_argument("--values_n", type=int, default=8, help="offline samples per prompt (the official 8)")
    parser.add_argument("--output", default="runs/bench_claims")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--no_tools", action="store_true", help="leave out the tool-world arms")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 10 steps, small truths (a smoke check)")
    args = parser.parse_args()
    extra = []
    if args.quick:
        args.seeds, args.steps, args.tool_steps, args.truth_n = args.seeds[:2], 10, 2, 8
        extra = ["trainer.test_freq=5", "trainer.save_freq=5"]
    output = Path(args.output)
    world = build_world(None)
    start = time.perf_counter()
    values = {t: offline_values_at(world, output, t, args.values_n) for t in (0.6, 1.0)}
    rows, runs = [], {arm: [] for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            run_dir = run_arm(arm, seed, world, output / "arms", args.steps, values[0.6], extra)
            runs[arm].append(run_dir)
            rows.append({"seed": seed, "arm": arm, **run_row(run_dir, ARMS[arm][0])})
    table = pd.DataFrame(rows)
    print(f"\nmachine: {platform.machine()}, python {platform.python_version()}, {time.perf_counter() - start:.0f}s")
    print(f"regime=paper: {args.steps} steps x 32 samples per arm and seed; seeds {args.seeds}\n")
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.precision", 3):
        print(table.to_string(index=False))
        print("\nmean over seeds by arm")
        print(table.drop(columns=["seed"]).groupby("arm", sort=False).mean().to_string())
    print_prior(world, values, args.truth_n)
    errors = baseline_errors({m: runs[m] for m in ("GRPO", "SPO") if m in runs}, args.truth_n)
    found = print_baseline_errors(errors)
    print("\neach arm against GRPO at equal samples, paired by seed (Fieller ratio; t difference)")
    results = []
    for arm in [a for a in args.arms if a != "GRPO"]:
        for column in ("pool", "held_out"):
            c = C.compare_arms(table, arm, "GRPO", column)
            print(f"  {arm:<14} {column:<9} ratio {c.ratio}  difference {c.difference}  ({c.seeds} seeds): {c.verdict}")
            if column == "pool":
                results.append((arm, c.ratio, table.loc[table["arm"] == arm, column].mean()))
    if "SPO oracle" in args.arms and "SPO" in args.arms:
        c = C.compare_arms(table, "SPO oracle", "SPO", "pool")
        print(f"  SPO oracle - SPO (pool accuracy): {c.difference} ({c.seeds} seeds): {c.verdict}")
    if "SPO uniform" in args.arms and "SPO" in args.arms:
        c = C.compare_arms(table, "SPO", "SPO uniform", "pool")
        print(f"  SPO - SPO uniform (pool accuracy, the prioritised sampler's share): {c.difference}: {c.verdict}")
    if not args.no_tools:
        tools = tool_world_runs(args.seeds, args.tool_steps, output)
        print("\nthe tool world: held-out accuracy before and after RL (t interval over seeds)")
        for arm in TOOL_ARMS:
            part = tools[tools["arm"] == arm]
            gain = paired_t_difference(part["held_out"], part["held_out initial"])
            print(f"  {arm}: {part['held_out initial'].mean():.3f} -> {part['held_out'].mean():.3f}, gain {gain}")
        both = tools.pivot(index="seed", columns="arm", values="held_out").dropna()
        if set(TOOL_ARMS) <= set(both.columns) and len(both) >= 2:
            spo_minus_grpo = paired_t_difference(both["SPO"], both["GRPO"])
            print(f"  SPO - GRPO after RL, paired by seed: {spo_minus_grpo}: {C.verdict(spo_minus_grpo, 0.0)}")
    output.mkdir(parents=True, exist_ok=True)
    draw(table, args.arms, found["by_visit"], output / "claims.png")
    figure_runs = [run_dir for arm in ("GRPO", "SPO") for run_dir in runs.get(arm, [])]
    print(f"\nfigures: {output / 'claims.png'}, and `spo figures` on the GRPO and SPO runs:")
    write_figures(figure_runs, output / "figures", formats=("png",), simulation=False)
    grpo_pool = table.loc[table["arm"] == "GRPO", "pool"].mean()
    for arm, ratio, value in results:
        record = {
            "name": f"paper regime: pool accuracy at equal samples ({arm} vs GRPO, {len(args.seeds)} seeds)",
            "value": round(float(value), 4),
            "unit": "acc",
            "baseline": round(float(grpo_pool), 4),
            "ratio": round(ratio.estimate, 4),
            "interval": [round(ratio.low, 4), round(ratio.high, 4)],
            "command": "python bench/bench_claims.py",
        }
        print("RESULT " + json.dumps(record))
    same = found["same_prompts_ratio"]
    record = {
        "name": "paper regime: SPO p̂ RMSE vs a group of 8 on the same prompts and steps (truth at T = 1)",
        "value": None,
        "unit": "",
        "baseline": None,
        "ratio": round(same.estimate, 4),
        "interval": [round(same.low, 4), round(same.high, 4)],
        "command": "python bench/bench_claims.py",
    }
    print("RESULT " + json.dumps(record))


if __name__ == "__main__":
    main()
