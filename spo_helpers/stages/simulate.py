"""``spo simulate``: rollout throughput of GRPO vs SPO under long-tailed trajectory times.

The simulation itself (model, policies, where the paper's 4.35x falls) is documented in
``spo_helpers.analysis.throughput``; sweeps are in ``spo_helpers.analysis.throughput_sweep``.
"""

from __future__ import annotations

import argparse

import pandas as pd

from spo_helpers.analysis.paper import PAPER_RATIO
from spo_helpers.analysis.throughput import (
    DISTRIBUTIONS,
    GRPO_POLICIES,
    TAIL_FIELDS,
    SimConfig,
    compare,
    paired_configs,
)
from spo_helpers.analysis.throughput_sweep import find_settings_for_ratio, sweep


# ---------------------------------------------------------------------------------------------- command line
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


USAGE = """\
  spo simulate                           # one GRPO vs SPO comparison at the default settings
  spo simulate --dist pareto --pareto-shape 1.5 --tool-calls 2
  spo simulate --sweep --output sweep.csv

The model and its assumptions: the docstring of spo_helpers/analysis/throughput.py"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p = parser.add_argument
    p("--grpo-policy", choices=GRPO_POLICIES, default="grpo", help="GRPO variant to compare (default: %(default)s)")
    p("--slots", type=int, default=d.slots, help="concurrent trajectories (default: %(default)s)")
    p("--batch-size", type=int, default=d.batch_size, help="trainable samples per step (default: %(default)s)")
    p("--group-size", type=int, default=d.group_size, help="GRPO responses per prompt (default: %(default)s)")
    p("--steps", type=int, default=d.steps, help="training steps (default: %(default)s)")
    p("--dist", choices=DISTRIBUTIONS, default=d.dist, help="trajectory time distribution (default: %(default)s)")
    p("--mu", type=float, default=d.mu, help="lognormal log-mean (default: %(default)s)")
    p("--sigma", type=float, default=d.sigma, help="lognormal log-std, the tail weight (default: %(default)s)")
    p("--pareto-shape", type=float, default=d.pareto_shape, help="Pareto shape, smaller = heavier (default: 2)")
    p("--scale", type=float, default=d.scale, help="Pareto x_m, exponential mean, constant value (default: 1)")
    p("--tool-calls", type=float, default=d.tool_calls, help="mean Poisson tool calls per trajectory (default: 0)")
    p("--turn-time", type=float, default=d.turn_time, help="LLM time per turn with tool calls (default: 1)")
    p("--update-time", type=float, default=d.update_time, help="trainer time per step (default: 0)")
    p("--async-trainer", action="store_true", help="overlap updates with generation instead of pausing it")
    p("--overprovision", type=float, default=0.0, help="extra fraction of groups per 'grpo' step (default: 0)")
    p("--max-staleness", type=int, default=None, help="drop streamed samples staler than this many steps")
    p("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    p("--sweep", action="store_true", help="print SPO/GRPO ratios over group sizes, batch sizes and tails")
    p("--group-sizes", type=_ints, default=[4, 8, 16], help="sweep: comma-separated (default: 4,8,16)")
    p("--batch-sizes", type=_ints, default=[256, 1024], help="sweep: comma-separated (default: 256,1024)")
    p("--tails", type=_floats, default=None, help="sweep: sigma or Pareto shapes (default: by --dist)")
    p("--sweep-slots", type=_ints, default=None, help="sweep: slot counts (default: slots = batch size)")
    p("--target", type=float, default=PAPER_RATIO, help="sweep: ratio to look for (default: %(default)s)")
    p("--output", metavar="CSV", default=None, help="write the sweep table, or the per-step table, as CSV")


def _config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        policy=args.grpo_policy,
        slots=args.slots,
        batch_size=args.batch_size,
        group_size=args.group_size,
        steps=args.steps,
        dist=args.dist,
        mu=args.mu,
        sigma=args.sigma,
        pareto_shape=args.pareto_shape,
        scale=args.scale,
        tool_calls=args.tool_calls,
        turn_time=args.turn_time,
        update_time=args.update_time,
        synchronous=not args.async_trainer,
        overprovision=args.overprovision,
        max_staleness=args.max_staleness,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from spo_helpers.errors import UserError
    from spo_helpers.formats.atomic import atomic_write_text

    try:
        base = _config_from_args(args)
        if args.sweep:
            tails = args.tails
            if tails is None and base.dist in TAIL_FIELDS:
                tails = [0.25, 0.5, 0.75, 1.0, 1.5] if base.dist == "lognormal" else [3.0, 2.0, 1.5, 1.2]
            frame = sweep(
                base,
                group_sizes=args.group_sizes,
                batch_sizes=args.batch_sizes,
                tails=tails,
                slots=args.sweep_slots or [None],
                grpo_policy=args.grpo_policy,
                overprovisions=[base.overprovision],
            )
            near = find_settings_for_ratio(args.target, frame, k=3)
        else:
            result = compare(*paired_configs(base, args.grpo_policy))
    except ValueError as err:
        raise UserError(str(err)) from None

    pd.set_option("display.width", 120)
    if args.sweep:
        trainer = "sync" if base.synchronous else "async"
        print(
            f"spo simulate --sweep: {base.dist} times, {base.steps} steps, {trainer} trainer, "
            f"update {base.update_time:g}, overprovision {base.overprovision:g}, seed {base.seed}"
        )
        table = frame.pivot_table(
            index=["tail", "slots", "batch_size"], columns="group_size", values="ratio", aggfunc="first"
        )
        table.columns = [f"n={n}" for n in table.columns]
        print(f"SPO/GRPO ({args.grpo_policy}) throughput ratio; tail = {TAIL_FIELDS.get(base.dist, '-')}:")
        print(table.round(2).to_string())
        cols = ["tail", "group_size", "batch_size", "slots", "ratio", "spo_staleness_mean"]
        print(f"nearest to {args.target:g}x:")
        print(near[cols].round(3).to_string(index=False))
        if args.output:
            atomic_write_text(args.output, frame.to_csv(index=False))
            print(f"wrote {args.output} ({len(frame)} rows)")
        return 0

    print(f"spo simulate: {base.describe()}")
    cols = ["policy", "group_size", "wall_time", "throughput", "utilisation", "useful_utilisation"]
    cols += ["step_time_mean", "step_time_p95", "staleness_mean", "staleness_max", "dropped", "aborted"]
    print(result["frame"][cols].round(3).to_string(index=False))
    stale = result["spo"].staleness_frame().head(6)
    shares = ", ".join(f"{int(s)}: {f:.1%}" for s, f in zip(stale["staleness"], stale["fraction"], strict=True))
    print(f"SPO staleness (steps: share of samples): {shares}")
    print(f"SPO/GRPO throughput ratio: {result['ratio']:.2f}x (the paper reports {PAPER_RATIO}x in its simulation)")
    if args.output:
        frame = pd.concat([result["grpo"].steps_frame(), result["spo"].steps_frame()], ignore_index=True)
        atomic_write_text(args.output, frame.to_csv(index=False))
        print(f"wrote {args.output} ({len(frame)} rows)")
    return 0
