"""Stage 03: merge validation dumps into an offline-values file ``{prompt_text: [scores]}``.

Reads every JSONL dump matching ``--pattern`` under ``--input_dir`` (verl's
``trainer.validation_data_dir`` files, one per stage-02 subset), groups the scores
by prompt key, keeps at most ``--max_scores_per_prompt`` per prompt with a seeded
draw, and writes the official JSON format plus ``<stem>.stats.json``. The key of a
line is its ``prompt_key`` field (our reward function returns it) or, as in the
official merge, the text between the last ``user\\n`` and ``\\nassistant`` of ``input``.
Scores stay numbers; the tracker binarises them (``score > 0``) when it loads the file.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from spo_helpers.errors import UserError
from spo_helpers.formats.dumps import DumpFile, describe_bad, read_dump
from spo_helpers.formats.layout import estimation_dump_pattern, stats_path_for
from spo_helpers.formats.offline_values import coverage, score_report, values_summary, write_values_and_stats

DEFAULT_PATTERN = estimation_dump_pattern()
DEFAULT_MAX_SCORES = 8
MAX_WORKERS = 8


@dataclass
class MergeResult:
    """Merged values, statistics and the files they came from."""

    values: dict[str, list[float]]
    stats: dict[str, Any]
    bad_lines: dict[str, int]
    files: list[Path]
    empty_files: list[Path] = field(default_factory=list)
    input_dir: Path | None = None
    pattern: str = DEFAULT_PATTERN


def find_dumps(input_dir: str | os.PathLike, pattern: str = DEFAULT_PATTERN) -> list[Path]:
    """Dump files matching ``pattern`` under ``input_dir``, sorted by path."""
    root = Path(input_dir)
    if not root.is_dir():
        raise UserError(f"{root}: --input_dir is not a directory; pass the folder that holds the stage-02 outputs")
    files = sorted(Path(p) for p in glob.glob(os.path.join(glob.escape(str(root)), pattern), recursive=True))
    files = [p for p in files if p.is_file()]
    if not files:
        raise UserError(
            f"no dump files under {root} match {pattern!r}; check --input_dir (the parent of the "
            "offline_value_estimation_subset_* folders) or pass --pattern"
        )
    return files


def key_seed(seed: int, key: str) -> list[int]:
    """Seed material of one prompt's draw: the run seed and a stable 64-bit hash of the key."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def cap_scores(scores: Sequence[float], max_scores: int, seed: int, key: str) -> list[float]:
    """At most ``max_scores`` of ``scores`` (``max_scores`` 0 keeps all), drawn without replacement, order kept.

    The draw depends only on ``seed``, ``key`` and ``scores``, never on worker count or read timing.
    """
    if max_scores <= 0 or len(scores) <= max_scores:
        return list(scores)
    rng = np.random.default_rng(key_seed(seed, key))
    keep = np.sort(rng.choice(len(scores), size=max_scores, replace=False))
    return [scores[i] for i in keep]


def _statistics(
    values: dict[str, list[float]], dumps: list[DumpFile], bad: dict[str, int], capped: int, max_scores: int
) -> dict[str, Any]:
    counts = [len(v) for v in values.values()]
    sums = [sum(v) for v in values.values()]
    all_scores = [s for v in values.values() for s in v]
    summary = values_summary(values)
    return {
        "files": len(dumps),
        "empty_files": [str(d.path) for d in dumps if d.lines == 0],
        "lines": sum(d.lines for d in dumps),
        "samples_read": sum(len(d.keys) for d in dumps),
        "bad_lines": sum(bad.values()),
        "bad_lines_by_reason": dict(sorted(bad.items())),
        "prompts": len(values),
        "samples": len(all_scores),
        "max_scores_per_prompt": max_scores,
        "prompts_capped": capped,
        "scores_per_prompt": {"min": min(counts), "max": max(counts), "mean": float(np.mean(counts))}
        if counts
        else None,
        "score_sum_per_prompt": {"min": min(sums), "max": max(sums), "mean": float(np.mean(sums))} if sums else None,
        "mean_score": float(np.mean(all_scores)) if all_scores else None,
        **{k: v for k, v in score_report(values).items() if k != "prompts_without_scores"},
        "mean_success": None if math.isnan(summary["mean_success"]) else summary["mean_success"],
        "share_all_fail": None if math.isnan(summary["share_all_fail"]) else summary["share_all_fail"],
        "share_all_pass": None if math.isnan(summary["share_all_pass"]) else summary["share_all_pass"],
    }


def merge_dumps(
    input_dir: str | os.PathLike,
    *,
    pattern: str = DEFAULT_PATTERN,
    max_scores_per_prompt: int = DEFAULT_MAX_SCORES,
    seed: int = 0,
    skip_bad_lines: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> MergeResult:
    """Read and merge all dumps; see the module doc.

    ``workers`` (reader processes) defaults to ``min(cpu count, 8, files)``; the progress bar shows on a
    terminal only.
    """
    if isinstance(max_scores_per_prompt, bool) or max_scores_per_prompt < 0:
        raise UserError(f"--max_scores_per_prompt must be >= 0 (0 keeps all scores), got {max_scores_per_prompt}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    files = find_dumps(input_dir, pattern)
    default = min(MAX_WORKERS, os.cpu_count() or 1)
    workers = min(default if workers is None else workers, len(files))

    from tqdm.auto import tqdm

    read = partial(read_dump, skip_bad_lines=skip_bad_lines)
    bar = partial(tqdm, total=len(files), desc="dumps", unit="file", disable=None if progress else True)
    if workers == 1:
        dumps = list(bar(map(read, files)))
    else:
        # Parsing JSON holds the interpreter lock: separate processes read files truly in parallel.
        # map yields in file order, so the first bad file in sorted order is the one reported.
        with ProcessPoolExecutor(max_workers=workers) as pool:
            dumps = list(bar(pool.map(read, files)))

    grouped: dict[str, list[float]] = {}
    bad: Counter[str] = Counter()
    for dump in dumps:
        bad.update(dump.bad)
        for key, score in dump.entries:
            grouped.setdefault(key, []).append(score)
    if not grouped:
        lines = sum(d.lines for d in dumps)
        what = "all empty" if lines == 0 else f"{lines} lines, none usable ({describe_bad(dict(bad))})"
        raise UserError(
            f"no scores in the {len(files)} dump file(s) under {input_dir} matching {pattern!r} ({what}); "
            "re-run stage 02 (`spo estimate --force`) or point --input_dir at its outputs"
        )
    capped = sum(1 for scores in grouped.values() if max_scores_per_prompt and len(scores) > max_scores_per_prompt)
    values = {key: cap_scores(scores, max_scores_per_prompt, seed, key) for key, scores in grouped.items()}
    bad_lines = dict(sorted(bad.items()))
    stats = _statistics(values, dumps, bad_lines, capped, max_scores_per_prompt)
    stats.update(input_dir=str(input_dir), pattern=pattern, seed=int(seed))
    return MergeResult(
        values=values,
        stats=stats,
        bad_lines=bad_lines,
        files=files,
        empty_files=[d.path for d in dumps if d.lines == 0],
        input_dir=Path(input_dir),
        pattern=pattern,
    )


def dataset_coverage(result: MergeResult, sources: Iterable[str | os.PathLike]) -> dict[str, int]:
    """Coverage of the merged values over the training prompts of ``sources``; also stored in ``result.stats``."""
    from spo_helpers.formats.datasets import dataset_prompt_keys, load_dataset_table, schema_frame

    keys: list[str] = []
    names = []
    for source in sources:
        names.append(os.fspath(source))
        keys.extend(dataset_prompt_keys(schema_frame(load_dataset_table(source)), os.fspath(source)))
    report = coverage(result.values, keys)
    result.stats["coverage"] = {"datasets": names, **report}
    return report


def write_merge(result: MergeResult, output_file: str | os.PathLike) -> tuple[Path, Path]:
    """Write the values (official format) and ``<stem>.stats.json`` beside them (``write_values_and_stats``)."""
    return write_values_and_stats(result.values, result.stats, output_file)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_merge_summary(result: MergeResult, file: IO[str] | None = None, output_file: str | None = None) -> None:
    """One screen: inputs, bad lines, prompts and samples, success shares, coverage, warnings."""
    file = file or sys.stdout
    s = result.stats
    print(f"merge {result.input_dir} ({result.pattern}): {s['files']} files, {s['lines']} lines", file=file)
    per = s["scores_per_prompt"]
    spread = f" (per prompt min {per['min']}, mean {per['mean']:.2f}, max {per['max']})" if per else ""
    print(f"  prompts: {s['prompts']}, samples kept: {s['samples']} of {s['samples_read']}{spread}", file=file)
    if s["prompts_capped"]:
        print(
            f"  capped: {s['prompts_capped']} prompts had more than {s['max_scores_per_prompt']} scores "
            f"(seeded subsample, seed {s['seed']})",
            file=file,
        )
    print(
        f"  mean score {_fmt(s['mean_score'])}, mean success {_fmt(s['mean_success'])}, "
        f"all-fail {_fmt(s['share_all_fail'])}, all-pass {_fmt(s['share_all_pass'])}",
        file=file,
    )
    if s["scores_not_0_or_1"]:
        print(f"  note: {s['scores_not_0_or_1']} scores are not 0 or 1 (the tracker counts score > 0)", file=file)
    if s.get("scores_outside_0_1"):
        print(f"  warning: {s['scores_outside_0_1']} scores lie outside [0, 1] (binarised as score > 0)", file=file)
    if result.bad_lines:
        reasons = ", ".join(f"{reason} {count}" for reason, count in result.bad_lines.items())
        print(f"  warning: skipped {s['bad_lines']} bad lines ({reasons})", file=file)
    for path in result.empty_files:
        print(f"  warning: empty dump file {path}", file=file)
    cov = s.get("coverage")
    if cov:
        print(
            f"  coverage: {cov['with_values']} of {cov['dataset_prompts']} training prompts have values, "
            f"{cov['without_values']} without, {cov['unmatched_values']} value keys match no prompt",
            file=file,
        )
    if output_file:
        print(f"  wrote {output_file} and {stats_path_for(output_file)}", file=file)


USAGE = """\
  spo merge --input_dir OUT/spo --output_file values.json
  spo merge --input_dir OUT/spo --output_file values.json --dataset DIR/subset_*.parquet

Details: docs/pipeline.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input_dir", metavar="DIR", required=True, help="folder holding the stage-02 outputs")
    parser.add_argument("--output_file", metavar="FILE", required=True, help="offline-values JSON to write")
    parser.add_argument(
        "--pattern",
        metavar="GLOB",
        default=DEFAULT_PATTERN,
        help=f"glob under --input_dir (default: {DEFAULT_PATTERN})",
    )
    parser.add_argument(
        "--max_scores_per_prompt",
        metavar="N",
        type=int,
        default=DEFAULT_MAX_SCORES,
        help="cap per prompt; 0 keeps all (default 8)",
    )
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="seed of the per-prompt subsample (default 0)")
    parser.add_argument(
        "--skip_bad_lines", action="store_true", help="skip and count bad dump lines instead of failing"
    )
    parser.add_argument(
        "--dataset",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATH",
        help="training data for a coverage report",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help=f"reader processes (default: min(cpus, {MAX_WORKERS}, files))",
    )


def run(args: argparse.Namespace) -> int:
    result = merge_dumps(
        args.input_dir,
        pattern=args.pattern,
        max_scores_per_prompt=args.max_scores_per_prompt,
        seed=args.seed,
        skip_bad_lines=args.skip_bad_lines,
        workers=args.workers,
    )
    if args.dataset:
        dataset_coverage(result, args.dataset)
    write_merge(result, args.output_file)
    print_merge_summary(result, output_file=args.output_file)
    return 0
