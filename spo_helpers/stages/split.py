"""Stage 01: split a training set into subsets for offline value estimation.

Writes ``subset_{i}.parquet`` (contiguous shards, as ``datasets.Dataset.shard(n, i,
contiguous=True)``: the first ``rows % n`` shards get one extra row) and
``split_manifest.json`` (source, sizes, sha256 checksums). ``--shuffle`` applies a
seeded permutation first; the official script never shuffles. Every file is
written atomically, and all input checks run before the first write. Without a dataset
the CPU world's training set is split (as notebook 01 and the CPU pipeline do); the
official training set is ``--dataset open-r1/DAPO-Math-17k-Processed``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_open, atomic_write_json
from spo_helpers.formats.datasets import (
    check_schema,
    dataset_prompt_keys,
    load_dataset_table,
    schema_frame,
)
from spo_helpers.formats.keys import duplicates as duplicate_keys_of
from spo_helpers.formats.layout import SPLIT_MANIFEST, SUBSET_GLOB, subset_file_name, subset_files, subset_index

OFFICIAL_DATASET = "open-r1/DAPO-Math-17k-Processed"
"""The official recipe's training set (its split script's default)."""
OFFICIAL_DATASET_CONFIG = "en"  # the official script hard-codes config "en" for this dataset
DEFAULT_NUM_SUBSETS = 5
MANIFEST_NAME = SPLIT_MANIFEST
MANIFEST_VERSION = 1


def subset_name(index: int) -> str:
    return subset_file_name(index)


def shard_bounds(num_rows: int, num_shards: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each contiguous shard, as ``datasets.Dataset.shard(..., contiguous=True)``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    div, mod = divmod(num_rows, num_shards)
    bounds = []
    for index in range(num_shards):
        start = div * index + min(index, mod)
        bounds.append((start, start + div + (1 if index < mod else 0)))
    return bounds


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class SplitResult:
    """What ``split_dataset`` wrote."""

    source: str
    output_dir: Path
    paths: list[Path]
    sizes: list[int]
    checksums: list[str]
    manifest_path: Path
    rows: int
    shuffle: bool
    seed: int
    duplicate_prompts: int = 0
    stale_files: list[Path] = field(default_factory=list)


def _check_num_subsets(num_subsets: object) -> int:
    if isinstance(num_subsets, bool) or not isinstance(num_subsets, int | np.integer) or num_subsets < 1:
        raise UserError(f"--num_subsets must be a positive integer, got {num_subsets!r}")
    return int(num_subsets)


def dataset_or_world(dataset: str | os.PathLike | None, assets: str | None = None) -> str:
    """``dataset``, or (None) the CPU world's training set, built or reused under ``assets``."""
    if dataset is not None:
        return os.fspath(dataset)
    from spo_helpers.world.build import build_world

    return str(build_world(assets).train_file)


def split_dataset(
    source: str | os.PathLike,
    output_dir: str | os.PathLike = "subsets",
    num_subsets: int = DEFAULT_NUM_SUBSETS,
    *,
    config: str | None = None,
    split: str = "train",
    shuffle: bool = False,
    seed: int = 0,
) -> SplitResult:
    """Split ``source`` into ``num_subsets`` contiguous parquet subsets under ``output_dir``."""
    num_subsets = _check_num_subsets(num_subsets)
    source = os.fspath(source)
    if config is None and source == OFFICIAL_DATASET:
        config = OFFICIAL_DATASET_CONFIG
    table = load_dataset_table(source, config=config, split=split)
    frame = schema_frame(table)
    check_schema(frame, source)
    duplicates = duplicate_keys_of(dataset_prompt_keys(frame, source))
    rows = table.num_rows
    if num_subsets > rows:
        raise UserError(f"{source}: cannot split {rows} rows into {num_subsets} subsets; use --num_subsets <= {rows}")
    if shuffle:
        table = table.take(pa.array(np.random.default_rng(seed).permutation(rows)))
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --output_dir exists and is not a directory")
    bounds = shard_bounds(rows, num_subsets)
    blobs = [parquet_bytes(table.slice(start, end - start)) for start, end in bounds]  # all work before any write

    out.mkdir(parents=True, exist_ok=True)
    paths, checksums = [], []
    for index, blob in enumerate(blobs):
        path = out / subset_name(index)
        with atomic_open(path, "wb") as handle:
            handle.write(blob)
        paths.append(path)
        checksums.append(hashlib.sha256(blob).hexdigest())
    written = {p.name for p in paths}
    stale = [p for p in subset_files(out) if p.name not in written]

    manifest = {
        "version": MANIFEST_VERSION,
        "source": source,
        "source_path": str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else None,
        "config": config,
        "split": split,
        "rows": rows,
        "columns": table.column_names,
        "num_subsets": num_subsets,
        "contiguous": True,
        "shuffle": bool(shuffle),
        "seed": int(seed),
        "duplicate_prompts": len(duplicates),
        "subsets": [
            {"file": p.name, "rows": end - start, "start": start, "end": end, "sha256": digest}
            for p, (start, end), digest in zip(paths, bounds, checksums, strict=True)
        ],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = atomic_write_json(out / MANIFEST_NAME, manifest, indent=2)
    return SplitResult(
        source=source,
        output_dir=out,
        paths=paths,
        sizes=[end - start for start, end in bounds],
        checksums=checksums,
        manifest_path=manifest_path,
        rows=rows,
        shuffle=bool(shuffle),
        seed=int(seed),
        duplicate_prompts=len(duplicates),
        stale_files=stale,
    )


def print_split_summary(result: SplitResult, file: IO[str] | None = None) -> None:
    """One screen: source, order, each subset's size and file, warnings."""
    file = file or sys.stdout
    order = f"shuffled (seed {result.seed})" if result.shuffle else "original order"
    print(f"split {result.source}: {result.rows} rows -> {len(result.paths)} subsets, {order}", file=file)
    for path, size, digest in zip(result.paths, result.sizes, result.checksums, strict=True):
        print(f"  {path}  {size:>7} rows  sha256 {digest[:12]}", file=file)
    print(f"  manifest: {result.manifest_path}", file=file)
    if result.duplicate_prompts:
        print(
            f"  note: {result.duplicate_prompts} prompt keys occur more than once; their scores will be pooled",
            file=file,
        )
    if result.stale_files:
        names = ", ".join(p.name for p in result.stale_files)
        print(f"  warning: older subset files not part of this split remain in the folder: {names}", file=file)


USAGE = f"""\
  spo split --output_dir runs/splits     # the CPU world's training set into 5 subsets
  spo split --dataset {OFFICIAL_DATASET} --output_dir DIR  # the official set
  spo split --dataset data.parquet --output_dir DIR --num_subsets 3 --shuffle --seed 1

Details: docs/pipeline.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        metavar="ID_OR_PATH",
        default=None,
        help="parquet/JSONL/JSON file, parquet folder or HF id (default: the CPU world's)",
    )
    parser.add_argument(
        "--output_dir", metavar="DIR", required=True, help="folder for subset_{i}.parquet and the manifest"
    )
    parser.add_argument(
        "--num_subsets", metavar="N", type=int, default=DEFAULT_NUM_SUBSETS, help="number of subsets (default 5)"
    )
    parser.add_argument(
        "--config",
        metavar="NAME",
        default=None,
        help=f"HF dataset config (default: {OFFICIAL_DATASET_CONFIG!r} for the official set)",
    )
    parser.add_argument("--split", metavar="NAME", default="train", help="HF dataset split (default: train)")
    parser.add_argument("--shuffle", action="store_true", help="apply a seeded permutation before splitting")
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="seed of --shuffle (default 0)")
    parser.add_argument("--assets", metavar="DIR", default=None, help="the CPU world's cache (default: runs/_assets)")


def run(args: argparse.Namespace) -> int:
    result = split_dataset(
        dataset_or_world(args.dataset, args.assets),
        args.output_dir,
        args.num_subsets,
        config=args.config,
        split=args.split,
        shuffle=args.shuffle,
        seed=args.seed,
    )
    print_split_summary(result)
    return 0


def subset_frame(output_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per prompt of every ``subset_*.parquet``: subset, prompt key, length in characters, difficulty."""
    from spo_helpers.formats.datasets import load_dataset_rows

    frames = []
    for path in subset_files(output_dir):
        rows = load_dataset_rows(str(path))
        keys = dataset_prompt_keys(rows, str(path))
        extra = rows["extra_info"] if "extra_info" in rows else pd.Series([None] * len(rows))
        difficulty = [e.get("difficulty") if isinstance(e, dict) else None for e in extra]
        frames.append(
            pd.DataFrame(
                {
                    "subset": subset_index(path),
                    "prompt_key": keys,
                    "prompt_chars": [len(k) for k in keys],
                    "difficulty": pd.array(difficulty, dtype="Int64"),
                }
            )
        )
    if not frames:
        raise UserError(f"no {SUBSET_GLOB} files in {output_dir} (run `spo split` first)")
    return pd.concat(frames, ignore_index=True)
