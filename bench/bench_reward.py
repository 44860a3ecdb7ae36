"""Worst-case cost of the reward function on hostile model outputs.

``spo_helpers.verl_glue.reward.compute_score`` scores untrusted text, so a pathological response
must not stall a training step. Each hostile case below is scored with
``require_think`` off (the CPU preset) and on (the official Qwen3 runs), and the slowest
call, best of ``--repeats``, is compared with the baseline: the same function on a
normal short answer (``... \\boxed{42}``). Cases: 1 MB of prose ending in a box, 1 MB of
opening braces, one box nested half a million braces deep, 100k boxes in a row, 200k
``</think>`` tags, and 1 MB of invalid UTF-8 bytes.

    python bench/bench_reward.py [--mb 1.0] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from results_line import emit

from spo_helpers.verl_glue.reward import compute_score

GROUND_TRUTH = "42"
EXTRA = {"prompt_key": "What is 6 * 7?"}


def hostile_cases(mb: float) -> dict[str, str | bytes]:
    size = int(mb * 1_000_000)
    depth = size // 2
    boxes, tags = max(1, int(100_000 * mb)), max(1, int(200_000 * mb))
    return {
        f"{mb:g} MB response": ("The answer follows. " * (size // 20 + 1))[:size] + "\\boxed{42}",
        f"{mb:g} MB of braces": "{" * size,
        "nested \\boxed{{{...}}}": "\\boxed{" + "{" * depth + "42" + "}" * depth + "}",
        f"{boxes:,} boxes": "\\boxed{42}" * boxes,
        f"{tags:,} </think> tags": "</think>" * tags + "\\boxed{42}",
        f"{mb:g} MB invalid UTF-8": b"\xff\xfe\xc0\x80" * (size // 4) + b"\\boxed{42}",
    }


def best_time(solution: str | bytes, require_think: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        compute_score("spo_arith", solution, GROUND_TRUTH, EXTRA, require_think=require_think)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=1.0, help="size of the hostile outputs, in MB (counts scale)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="0.1 MB outputs, two repeats")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.repeats = 0.1, 2

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    normal = "Six times seven.\nAnswer: \\boxed{42}"
    compute_score("spo_arith", normal, GROUND_TRUTH, EXTRA)  # imports verl's math_dapo once, outside the timings
    baseline = max(best_time(normal, think, args.repeats * 20) for think in (False, True))
    print(f"baseline (normal short answer): {baseline * 1e6:.1f} us; best of {args.repeats} per hostile case\n")

    header = f"{'case':<24} {'chars/bytes':>12} {'think off (ms)':>15} {'think on (ms)':>14} {'x baseline':>11}"
    print(header)
    print("-" * len(header))
    worst_case, worst = "", 0.0
    for name, solution in hostile_cases(args.mb).items():
        off = best_time(solution, False, args.repeats)
        on = best_time(solution, True, args.repeats)
        slowest = max(off, on)
        if slowest > worst:
            worst_case, worst = name, slowest
        print(f"{name:<24} {len(solution):>12,} {off * 1e3:>15.3f} {on * 1e3:>14.3f} {slowest / baseline:>10.0f}x")
    print(f"\nworst case: {worst_case}, {worst * 1e3:.3f} ms per answer ({worst / baseline:.0f}x the baseline)")

    emit(
        f"reward: worst hostile answer ({worst_case})",
        round(worst * 1e3, 3),
        "ms",
        round(baseline * 1e3, 4),
        round(worst / baseline, 1),
    )


if __name__ == "__main__":
    main()
