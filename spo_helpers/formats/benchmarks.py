"""The paper's five evaluation benchmarks: where they live and how their rows become the kit's schema.

As the official dataset class (``spo_retool.py``, ``CustomRLHFDataset.map_fn``) reads them:

    benchmark   hub id                       split   problem   answer   data_source
    AIME24      Maxwell-Jia/AIME_2024        train   Problem   Answer   aime_2024
    AIME25      yentinglin/aime_2025         train   problem   answer   aime_2025
    BeyondAIME  ByteDance-Seed/BeyondAIME    test    problem   answer   beyondaime
    BRUMO25     MathArena/brumo_2025         train   problem   answer   brumo_2025
    HMMT25      MathArena/hmmt_feb_2025      train   problem   answer   hmmt_feb_2025

Each row becomes ``prompt = [{"role": "user", "content": problem + ANSWER_FORMAT_SUFFIX}]``,
``reward_model.ground_truth = str(answer)``, and the data source the official class writes (the hub id's
name, lower case), so every validation dump line and every table names its benchmark.

A benchmark is given by its name (``AIME24``: the hub id), by its hub id, or as ``NAME=PATH`` with a local
parquet/JSONL/JSON file shaped like the hub set (or already in the kit's schema). A set that cannot be loaded
stops with one line naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spo_helpers.errors import UserError
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub_id: str
    split: str
    problem: str
    answer: str

    @property
    def data_source(self) -> str:
        """The official class's data source: the id's name, lower case (``aime_2024``)."""
        return self.hub_id.split("/")[-1].lower()


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("AIME24", "Maxwell-Jia/AIME_2024", "train", "Problem", "Answer"),
        Benchmark("AIME25", "yentinglin/aime_2025", "train", "problem", "answer"),
        Benchmark("BeyondAIME", "ByteDance-Seed/BeyondAIME", "test", "problem", "answer"),
        Benchmark("BRUMO25", "MathArena/brumo_2025", "train", "problem", "answer"),
        Benchmark("HMMT25", "MathArena/hmmt_feb_2025", "train", "problem", "answer"),
    )
}
PAPER_BENCHMARK_NAMES = tuple(BENCHMARKS)
_BY_ID = {b.hub_id.lower(): b for b in BENCHMARKS.values()}


@dataclass(frozen=True)
class BenchmarkSource:
    """One benchmark to evaluate: its name, where it is read from, and its schema (None: the kit's own)."""

    name: str
    source: str
    benchmark: Benchmark | None
    named: bool = False  # the name was given (NAME=PATH): it names the results, whatever the file's data_source


def find_benchmark(text: str) -> Benchmark | None:
    """The paper benchmark a name or hub id stands for (case-insensitive), else None."""
    lowered = str(text).strip().lower()
    for bench in BENCHMARKS.values():
        if lowered in (bench.name.lower(), bench.hub_id.lower(), bench.data_source):
            return bench
    return _BY_ID.get(lowered)


def parse_benchmark(text: str) -> BenchmarkSource:
    """``AIME24`` | ``Maxwell-Jia/AIME_2024`` | ``AIME24=/data/aime24.parquet`` | ``/data/held_out.parquet``."""
    text = str(text).strip()
    if "=" in text:
        name, path = (part.strip() for part in text.split("=", 1))
        return BenchmarkSource(name, path, find_benchmark(name), named=True)
    bench = find_benchmark(text)
    if bench is not None:
        return BenchmarkSource(bench.name, bench.hub_id, bench)
    if Path(text).expanduser().exists():
        return BenchmarkSource(Path(text).stem, text, None)
    raise UserError(
        f"benchmark {text!r}: not one of {', '.join(BENCHMARKS)} (or their hub ids), and no such file; "
        "pass a name, a hub id, NAME=PATH or a local data file"
    )


def _column(frame: pd.DataFrame, names: tuple[str, ...], what: str, label: str) -> str:
    for name in names:
        if name in frame.columns:
            return name
    raise UserError(
        f"benchmark {label}: no {what} column (looked for {', '.join(names)}; columns: {', '.join(frame.columns)}); "
        "give the file the hub set's columns or the kit's schema (prompt, reward_model.ground_truth)"
    )


def map_rows(frame: pd.DataFrame, benchmark: Benchmark | None, label: str, named: bool = False) -> pd.DataFrame:
    """Rows of a benchmark file in the kit's schema (``prompt``, ``reward_model``, ``data_source``, ...).

    Rows already in the kit's schema (a ``prompt`` and a ``reward_model``, every row with a ground truth) keep
    them; their data source becomes the benchmark's when it is a paper benchmark or was ``named`` (``NAME=PATH``),
    else stays (or is ``label``). Otherwise the problem and answer columns are the benchmark's (``Problem``/
    ``Answer`` for AIME24), falling back to either spelling.
    """
    from spo_helpers.formats.datasets import check_schema

    source = benchmark.data_source if benchmark else label
    if "prompt" in frame.columns and "reward_model" in frame.columns:
        check_schema(frame, f"benchmark {label}")  # an evaluation without answers would score every sample 0
        out = frame.copy()
        if benchmark is not None or named or "data_source" not in out.columns:
            out["data_source"] = source
        return out.reset_index(drop=True)
    preferred = (benchmark.problem,) if benchmark else ()
    problem = _column(frame, (*preferred, "problem", "Problem", "question"), "problem", label)
    preferred = (benchmark.answer,) if benchmark else ()
    answer = _column(frame, (*preferred, "answer", "Answer"), "answer", label)
    rows = []
    for index, (text, truth) in enumerate(zip(frame[problem], frame[answer], strict=True)):
        if text is None or not str(text).strip() or truth is None or not str(truth).strip():
            raise UserError(f"benchmark {label}: row {index} has no {problem!r} or no {answer!r}")
        rows.append(
            {
                "data_source": source,
                "prompt": [{"role": "user", "content": f"{text}{ANSWER_FORMAT_SUFFIX}"}],
                "ability": "MATH",
                "reward_model": {"ground_truth": str(truth), "style": "rule"},
                "extra_info": {"index": index, "benchmark": benchmark.name if benchmark else label},
            }
        )
    return pd.DataFrame(rows)


def load_benchmark(spec: BenchmarkSource | str) -> pd.DataFrame:
    """A benchmark's rows in the kit's schema; ``UserError`` naming the set when it cannot be loaded."""
    from spo_helpers.formats.datasets import load_dataset_rows

    chosen = parse_benchmark(spec) if isinstance(spec, str) else spec
    split = chosen.benchmark.split if chosen.benchmark and chosen.source == chosen.benchmark.hub_id else "train"
    try:
        frame = load_dataset_rows(chosen.source, split=split)
    except UserError as err:
        hint = ""
        if chosen.benchmark is not None:
            hint = (
                f"; without the hub, download {chosen.benchmark.hub_id} (split {chosen.benchmark.split}) and pass "
                f"{chosen.name}=PATH"
            )
        raise UserError(f"benchmark {chosen.name} cannot be loaded: {err}{hint}") from None
    return map_rows(frame, chosen.benchmark, chosen.name, named=chosen.named)


def write_benchmarks(specs: list[str | BenchmarkSource], folder: str | os.PathLike) -> list[Path]:
    """Each benchmark as ``<folder>/<name>.parquet`` in the kit's schema (the files verl validates on)."""
    from spo_helpers.formats.atomic import atomic_write_bytes

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for spec in specs:
        chosen = parse_benchmark(spec) if isinstance(spec, str) else spec
        frame = load_benchmark(chosen)
        target = out / f"{chosen.name}.parquet"
        atomic_write_bytes(target, frame.to_parquet(index=False))
        files.append(target)
    return files
