"""Prune a finished CPU pipeline folder to the small files the analysis needs.

    spo pipeline --name reference && python -m spo_helpers.reference runs/reference

Keeps, per training run: ``config.yaml``, ``metrics.jsonl``, ``steps.jsonl``,
``prompts.parquet``, and the validation dumps and tracker snapshots of every
``keep_every``-th validation step; plus the merged offline values. Drops
checkpoints, TensorBoard events, rollout dumps, the estimation dumps, the splits
and the executed notebooks, so ``05_analysis`` and ``spo figures`` regenerate every
figure in seconds without training.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
    return sorted(p for p in root.rglob("*") if p.is_file())


if __name__ == "__main__":
    kept = prune(sys.argv[1] if len(sys.argv) > 1 else "runs/reference")
    print(f"kept {len(kept)} files, {sum(p.stat().st_size for p in kept) / 1e6:.1f} MB")
