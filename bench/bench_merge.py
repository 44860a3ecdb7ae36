"""Stage 03 throughput: merging offline-value dumps, the official script's semantics vs ours.

The benchmark writes synthetic verl validation dumps into a temporary folder, laid out
as the estimation stage leaves them (``offline_value_estimation_subset_<i>/validation_data/0.jsonl``,
one folder per subset). Each line carries what verl writes (``input``: the decoded
Qwen-style prompt ``user\\n<~400 characters>\\nassistant\\n``, ``output``, ``gts``,
``score`` 0/1, ``step``) plus the keys our reward returns (``acc``, ``pred``,
``prompt_key``). The default size is DAPO-Math-17k estimated with 8 samples per prompt.

Baseline: the official ``merge_offline_values.py`` re-implemented here with the same
semantics: files read by a thread pool with ``json.loads`` per line, the key cut out of
``input`` (text after the last ``user\\n``, before ``\\nassistant``), scores grouped in a
dict, ``random.sample`` down to the cap (seeded here, so runs are comparable), and the
result written with ``json.dump(indent=2)``. Ours: ``spo_helpers.stages.merge.merge_dumps``
followed by ``write_merge`` (values and statistics files), timed with one reader thread
and with several. Both sides produce the same prompt -> scores mapping (checked).
Figures are input lines per second, best of ``--repeats``.

    python bench/bench_merge.py [--prompts 17000] [--samples 8] [--subsets 5] [--workers 1 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from results_line import emit

from spo_helpers.stages.merge import DEFAULT_PATTERN, merge_dumps, write_merge

FILLER = (
    "Let a, b and c be positive integers with a + b + c = 60 such that the product abc is as large as "
    "possible under the constraint that a divides b and b divides c. "
)
ANSWER_FORMAT = (
    '\n\nRemember to put your answer on its own line after "Answer:".\n\nThe answer format must be: \\boxed{}'
)


def prompt_content(i: int, chars: int) -> str:
    head = f"Problem {i}. "
    body = (FILLER * (chars // len(FILLER) + 1))[: max(0, chars - len(head) - len(ANSWER_FORMAT))]
    return head + body + ANSWER_FORMAT


def write_dumps(root: Path, prompts: int, samples: int, subsets: int, prompt_chars: int, output_chars: int) -> int:
    """Write the subset dumps under ``root``; returns the number of lines."""
    rng = np.random.default_rng(0)
    think = ("Consider the constraint and try small divisors first. " * (output_chars // 50 + 1))[:output_chars]
    lines = 0
    bounds = np.linspace(0, prompts, subsets + 1).astype(int)
    for s in range(subsets):
        folder = root / f"offline_value_estimation_subset_{s}" / "validation_data"
        folder.mkdir(parents=True)
        with open(folder / "0.jsonl", "w", encoding="utf-8") as handle:
            for i in range(bounds[s], bounds[s + 1]):
                content = prompt_content(i, prompt_chars)
                answer = str(1000 + i)
                scores = rng.integers(0, 2, samples)
                for score in scores.tolist():
                    pred = answer if score else str(int(answer) + 1)
                    record = {
                        "input": f"user\n{content}\nassistant\n",
                        "output": f"<think>{think}</think>\nAnswer: \\boxed{{{pred}}}",
                        "gts": answer,
                        "score": float(score),
                        "step": 0,
                        "acc": bool(score),
                        "pred": pred,
                        "prompt_key": content.strip(),
                    }
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    lines += 1
    return lines


# ---------------------------------------------------------------- the official semantics
def _load_and_parse(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def official_merge(input_dir: Path, output_file: Path, pattern: str, max_scores: int, seed: int) -> dict:
    """merge_offline_values.py: thread-pool read, key parsed from ``input``, random.sample, indent=2."""
    draw = random.Random(seed)  # the official script calls the unseeded module-level random.sample
    files = glob.glob(os.path.join(input_dir, pattern))
    items: list[dict] = []
    with ThreadPoolExecutor() as executor:
        futures = {executor.submit(_load_and_parse, f): f for f in files}
        for future in as_completed(futures):
            items.extend(future.result())
    merged: dict[str, list] = defaultdict(list)
    for item in items:
        try:
            key = item["input"].split("user\n")[-1].split("\nassistant")[0].strip()
            merged[key].append(item["score"])
        except (KeyError, IndexError):
            continue
    for prompt, scores in merged.items():
        if len(scores) > max_scores:
            merged[prompt] = draw.sample(scores, max_scores)
    with open(output_file, "w") as handle:
        json.dump(merged, handle, indent=2)
    official_statistics(merged)  # the script prints these; ours stores them in <stem>.stats.json
    return merged


def official_statistics(merged: dict[str, list]) -> dict[str, float]:
    counts = [len(v) for v in merged.values()]
    sums = [sum(v) for v in merged.values()]
    return {
        "min_count": min(counts),
        "max_count": max(counts),
        "mean_count": sum(counts) / len(counts),
        "min_sum": min(sums),
        "max_sum": max(sums),
        "mean_sum": sum(sums) / len(sums),
    }


def ours_merge(input_dir: Path, output_file: Path, pattern: str, max_scores: int, seed: int, workers: int) -> dict:
    result = merge_dumps(
        input_dir, pattern=pattern, max_scores_per_prompt=max_scores, seed=seed, workers=workers, progress=False
    )
    write_merge(result, output_file)
    return result.values


def best_time(fn, repeats: int) -> tuple[float, dict]:
    best, out = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def same_values(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(sorted(map(float, a[k])) == sorted(map(float, b[k])) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=17_000)
    parser.add_argument("--samples", type=int, default=8, help="lines (scores) per prompt")
    parser.add_argument("--subsets", type=int, default=5)
    parser.add_argument("--prompt_chars", type=int, default=400)
    parser.add_argument("--output_chars", type=int, default=400, help="length of each synthetic response")
    parser.add_argument("--max_scores", type=int, default=8, help="cap per prompt (both sides)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 5], help="reader threads for ours")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2000 prompts, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.repeats = 2000, 1

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench_merge_") as tmp:
        root = Path(tmp)
        dumps = root / "spo"
        start = time.perf_counter()
        lines = write_dumps(dumps, args.prompts, args.samples, args.subsets, args.prompt_chars, args.output_chars)
        size = sum(p.stat().st_size for p in dumps.rglob("*.jsonl"))
        print(
            f"dumps: {args.subsets} files, {lines:,} lines ({args.prompts:,} prompts x {args.samples}), "
            f"{size / 2**20:.0f} MiB, written in {time.perf_counter() - start:.1f}s; best of {args.repeats}\n"
        )

        official_s, official_values = best_time(
            lambda: official_merge(dumps, root / "official.json", DEFAULT_PATTERN, args.max_scores, 0), args.repeats
        )
        ours: dict[int, float] = {}
        for workers in args.workers:
            ours[workers], values = best_time(
                lambda w=workers: ours_merge(dumps, root / f"ours_{w}.json", DEFAULT_PATTERN, args.max_scores, 0, w),
                args.repeats,
            )
            if not same_values(values, official_values):
                raise SystemExit(f"ours (workers={workers}) and the official merge disagree on the merged values")

    header = f"{'merge':<28} {'seconds':>9} {'lines/s':>12} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'official semantics':<28} {official_s:>9.2f} {lines / official_s:>12,.0f} {1.0:>7.2f}x")
    for workers, seconds in ours.items():
        label = f"ours, {workers} worker{'s' if workers > 1 else ''}"
        print(f"{label:<28} {seconds:>9.2f} {lines / seconds:>12,.0f} {official_s / seconds:>7.2f}x")
    print("\nsame prompt -> scores mapping on every side: yes")

    base_rate = lines / official_s
    for workers, seconds in ours.items():
        rate = lines / seconds
        emit(
            f"merge {args.prompts} prompts x {args.samples}, ours {workers} worker(s)",
            round(rate),
            "lines/s",
            round(base_rate),
            round(rate / base_rate, 2),
        )


if __name__ == "__main__":
    main()
