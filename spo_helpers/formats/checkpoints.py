"""A checkpoint folder on disk: its file names, which ``global_step_N`` folders are complete, and whether one still
holds what was written (``verl_glue.checkpoint`` writes them; every command that loads one checks it here).

``<checkpoints>/global_step_N/`` holds ``kit_state/state.pt`` (the kit's state), verl's ``actor/`` (on the CPU
backend ``actor/cpu_worker.pt``: weights, optimiser, scheduler and sampling RNG) and ``data.pt``, and last
``kit_complete.json``, which records the size and SHA-256 of every other file of the folder; a folder without it
is incomplete (a crash mid-save), one whose files no longer match it is damaged. verl's
``latest_checkpointed_iteration.txt`` beside the step folders names the step to resume from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import sha256_file

STEP_PREFIX = "global_step_"
COMPLETE_MARKER = "kit_complete.json"
KIT_STATE_DIR = "kit_state"
KIT_STATE_FILE = "state.pt"
ACTOR_DIR = "actor"
CPU_WORKER_FILE = "cpu_worker.pt"
"""The CPU backend's actor checkpoint (``verl_glue.cpu_backend``), in ``actor/``."""
LATEST_FILE = "latest_checkpointed_iteration.txt"


def step_dir(root: str | os.PathLike, step: int) -> Path:
    """``<root>/global_step_<step>``: the checkpoint of one step."""
    return Path(root) / f"{STEP_PREFIX}{int(step)}"


def is_step_dir(path: Path) -> bool:
    return path.name.startswith(STEP_PREFIX) and path.name[len(STEP_PREFIX) :].isdigit()


def step_of(path: Path) -> int:
    """``N`` of ``global_step_N``."""
    return int(path.name[len(STEP_PREFIX) :])


def step_dirs(root: str | os.PathLike) -> list[Path]:
    """Every ``global_step_N`` folder under ``root``, complete or not, oldest first."""
    return sorted((p for p in Path(root).glob(f"{STEP_PREFIX}*") if is_step_dir(p)), key=step_of)


def kit_state_file(step_folder: Path) -> Path:
    """``<global_step_N>/kit_state/state.pt``: the kit's state of that step."""
    return step_folder / KIT_STATE_DIR / KIT_STATE_FILE


def complete_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The ``global_step_N`` folders that have the completion marker, newest first."""
    folder = Path(root)
    if not folder.is_dir():
        return []
    complete = [p for p in step_dirs(folder) if (p / COMPLETE_MARKER).is_file() and (p / ACTOR_DIR).is_dir()]
    return sorted(complete, key=step_of, reverse=True)


def newest_complete_checkpoint(root: str | os.PathLike) -> Path | None:
    """The ``global_step_N`` folder with the largest N that has the completion marker."""
    return next(iter(complete_checkpoints(root)), None)


def file_digests(step_dir: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": size, "sha256": hex}}`` of every file of a checkpoint but the marker."""
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
    return {p.relative_to(step_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


def checkpoint_problems(step_dir: Path) -> list[str]:
    """What is wrong with a checkpoint folder against its marker's digests (empty: it verifies).

    A marker written before digests were recorded has nothing to check against and verifies.
    """
    try:
        record = json.loads((step_dir / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{COMPLETE_MARKER}: unreadable ({err})"]
    expected = record.get("files") if isinstance(record, dict) else None
    if not isinstance(expected, dict):
        return []
    problems = []
    for name, want in sorted(expected.items()):
        path = step_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != want.get("bytes"):
            problems.append(f"{name}: {path.stat().st_size} bytes, {want.get('bytes')} recorded (truncated?)")
        elif sha256_file(path) != want.get("sha256"):
            problems.append(f"{name}: its bytes changed since it was written (SHA-256 differs)")
    return problems


def newest_verified_checkpoint(root: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """The newest complete checkpoint that verifies, and the newer ones that did not, with their problems."""
    rejected = []
    for step_dir in complete_checkpoints(root):
        problems = checkpoint_problems(step_dir)
        if not problems:
            return step_dir, rejected
        rejected.append((step_dir, problems))
    return None, rejected


def describe(step_dir: Path, problems: list[str]) -> str:
    more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
    return f"{step_dir}: " + "; ".join(problems[:2]) + more


def verified(step_dir: Path) -> Path:
    """``step_dir`` when it is complete and verifies, else ``UserError`` naming the damaged files and the fix."""
    if not (step_dir / COMPLETE_MARKER).is_file():
        raise UserError(f"{step_dir}: not a complete checkpoint (no {COMPLETE_MARKER}: the save did not finish)")
    problems = checkpoint_problems(step_dir)
    if problems:
        raise UserError(f"{describe(step_dir, problems)}; restore the files from a copy, or leave this checkpoint out")
    return step_dir
