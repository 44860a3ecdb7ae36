"""Prune a finished CPU pipeline folder to the small files the analysis needs, and make it portable.

Keeps, per training run: ``config.yaml``, ``metrics.jsonl``, ``steps.jsonl``,
``prompts.parquet``, and the validation dumps and tracker snapshots of every
``keep_every``-th validation step; plus the merged offline values. Drops
checkpoints, TensorBoard events, rollout dumps, the estimation dumps, the splits
and the executed notebooks, so ``05_analysis`` and ``spo figures`` regenerate every
figure in seconds without training.

Portable: every path under the project folder (the folder holding ``pyproject.toml``
above the run, else the working folder) is written relative to it in each
``config.yaml``, and every validation dump line names its data source (read from the
run's validation files while they are at hand), so a clone elsewhere, without the
CPU world's files, still tells the benchmarks apart. Running it again changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from spo_helpers.analysis.validation import val_data_sources
from spo_helpers.formats.atomic import atomic_write_text, read_utf8
from spo_helpers.formats.layout import OFFLINE_VALUES_FILE, PipelineLayout, RunLayout, stats_path_for

_RUN = RunLayout(Path())
KEEP_FILES = (_RUN.config.name, _RUN.metrics.name, _RUN.steps.name, _RUN.prompts.name)
KEEP_SAMPLED = (_RUN.validation_data.name, _RUN.tracker_dir.name)
KEEP_ROOT = (OFFLINE_VALUES_FILE, stats_path_for(OFFLINE_VALUES_FILE).name, "README.md")


def prune(root: str | Path, keep_every: int = 10) -> list[Path]:
    """Delete everything but the analysis inputs; returns the files kept."""
    root = Path(root)
    runs_dir = PipelineLayout(root).runs
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and RunLayout(p).steps.is_file()]  # training runs
    for path in root.iterdir():
        if path.name not in (*KEEP_ROOT, runs_dir.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in runs_dir.iterdir():
        if path not in runs:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for run in runs:
        for path in run.iterdir():
            if path.name in KEEP_FILES:
                continue
            if path.name in KEEP_SAMPLED:
                for item in path.iterdir():
                    if not (item.stem.isdigit() and int(item.stem) % keep_every == 0):
                        item.unlink()
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    make_portable(root)
    return sorted(p for p in root.rglob("*") if p.is_file())


def project_folder(root: Path) -> Path:
    """The folder holding ``pyproject.toml`` above ``root``, else the working folder."""
    root = root.resolve()
    return next((p for p in root.parents if (p / "pyproject.toml").is_file()), Path.cwd().resolve())


def relative_paths(text: str, project: Path) -> str:
    """``text`` with ``<project>/x`` written ``x`` and ``<project>`` alone written ``.``."""
    prefix = re.escape(str(project))
    text = re.sub(rf"(?<![\w/.]){prefix}/", "", text)
    return re.sub(rf"(?<![\w/.]){prefix}(?![\w/.])", ".", text)


def name_data_sources(run: Path) -> int:
    """Add ``data_source`` to the run's validation dump lines that lack it (from the run's validation files);
    returns the number of lines changed. Lines whose prompt is not in those files stay as they are."""
    mapping, single = val_data_sources(run)
    changed = 0
    for path in sorted(RunLayout(run).validation_data.glob("*.jsonl")):
        lines, touched = [], False
        for line in read_utf8(path).split("\n"):
            if line.strip():
                record = json.loads(line)
                source = mapping.get(str(record.get("prompt_key", ""))) or single
                if not record.get("data_source") and source:
                    record["data_source"] = source
                    line, touched = json.dumps(record, ensure_ascii=False), True
                    changed += 1
            lines.append(line)
        if touched:
            atomic_write_text(path, "\n".join(lines))
    return changed


def make_portable(root: str | Path) -> dict[str, int]:
    """Name every validation dump line's data source, then write the project paths of the configs and of the
    offline values' stats relative to the project folder (in that order: the sources are read from the files
    the configs name). Returns, per run folder, the dump lines changed."""
    root = Path(root)
    project = project_folder(root)
    changed = {}
    records = [root / stats_path_for(OFFLINE_VALUES_FILE).name]  # the merge's stats name its input folder
    for config in sorted(PipelineLayout(root).runs.glob(f"*/{_RUN.config.name}")):
        changed[config.parent.name] = name_data_sources(config.parent)
        records.append(config)
    for record in records:
        if not record.is_file():
            continue
        text = read_utf8(record)
        portable = relative_paths(text, project)
        if portable != text:
            atomic_write_text(record, portable)
    return changed


USAGE = """\
  spo pipeline --name reference && spo reference runs/reference

Details: runs/reference/README.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root", metavar="DIR", nargs="?", default="runs/reference", help="the pipeline folder (default runs/reference)"
    )
    parser.add_argument(
        "--keep_every",
        metavar="N",
        type=int,
        default=10,
        help="keep every N-th validation dump and snapshot (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    if not Path(args.root).is_dir():
        from spo_helpers.errors import UserError

        raise UserError(f"{args.root} is not a folder: pass the pipeline folder `spo pipeline --name NAME` wrote")
    kept = prune(args.root, keep_every=args.keep_every)
    print(f"kept {len(kept)} files, {sum(p.stat().st_size for p in kept) / 1e6:.1f} MB")
    return 0
