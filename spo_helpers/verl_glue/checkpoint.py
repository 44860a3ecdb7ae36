"""The kit's checkpoint protocol on top of verl's ``global_step_N`` folders.

A checkpoint of step N is ``<default_local_dir>/global_step_N/`` with, in writing order:

1. ``kit_state/state.pt``: the kit's state (counters, tracker, and for SPO the sampler RNG and the stored
   previous responses), written before verl's files;
2. verl's files (``actor/``, ``data.pt``), by verl's ``_save_checkpoint``;
3. ``kit_complete.json``: the completion marker, written last (atomically), with the size and SHA-256 of every
   other file of the folder.

A crash at any point leaves a folder without the marker, which resuming ignores. Resuming also proves the
checkpoint: every file must still have its recorded size and digest. ``resume_mode=auto`` picks the newest
folder that verifies (``newest_verified_checkpoint``), says which files of any newer folder are damaged, and
points verl's ``latest_checkpointed_iteration.txt`` at it; when none verifies it stops with one line.

The checkpoint is written after the step's metrics are on disk (``_after_log``), so a resumed run's logs
continue exactly where the checkpoint was taken. A resumed run does not validate again before training (the
uninterrupted run did not), so its metrics equal those of a run that never stopped.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "kit_complete.json"
KIT_STATE_DIR = "kit_state"
LATEST_FILE = "latest_checkpointed_iteration.txt"


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class RunStopped(RuntimeError):
    """Raised on purpose after a checkpoint when ``kit.stop_after_step`` is set."""


def _step_of(path: Path) -> int:
    return int(path.name.split("_")[-1])


def complete_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The ``global_step_N`` folders that have the completion marker, newest first."""
    folder = Path(root)
    if not folder.is_dir():
        return []
    complete = [
        p
        for p in folder.glob("global_step_*")
        if p.name.split("_")[-1].isdigit() and (p / COMPLETE_MARKER).is_file() and (p / "actor").is_dir()
    ]
    return sorted(complete, key=_step_of, reverse=True)


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


def _describe(step_dir: Path, problems: list[str]) -> str:
    more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
    return f"{step_dir}: " + "; ".join(problems[:2]) + more


class CheckpointMixin:
    """Checkpoint writing and resuming; the trainer provides ``_kit_state`` / ``_load_kit_state``."""

    def _save_checkpoint(self) -> None:
        """Called by verl's loop before it logs the step: defer until the step's metrics are on disk."""
        self._checkpoint_pending = True

    def _after_log(self, step: int) -> None:
        if getattr(self, "_checkpoint_pending", False):
            self._checkpoint_pending = False
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        """Kit state, then verl's files (actor, data.pt), then the completion marker."""
        root = Path(self.config.trainer.default_local_dir)
        step_dir = root / f"global_step_{self.global_steps}"
        (step_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        state_dir = step_dir / KIT_STATE_DIR
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(state_dir / "state.pt", _torch_bytes(self._kit_state()))
        super()._save_checkpoint()
        record = {"global_step": self.global_steps, "time": time.time(), "files": file_digests(step_dir)}
        atomic_write_json(step_dir / COMPLETE_MARKER, record)
        atomic_write_text(root / LATEST_FILE, str(self.global_steps))
        stop_after = self.config.kit.get("stop_after_step")
        if stop_after is not None and self.global_steps >= int(stop_after):
            raise RunStopped(f"stopped after the checkpoint of step {self.global_steps} (kit.stop_after_step)")

    def _load_checkpoint(self):
        trainer_cfg = self.config.trainer
        root = Path(trainer_cfg.default_local_dir)
        if trainer_cfg.resume_mode == "auto":
            newest, rejected = newest_verified_checkpoint(root)
            for step_dir, problems in rejected:
                logger.warning("damaged checkpoint skipped: %s", _describe(step_dir, problems))
            latest = root / LATEST_FILE
            if newest is None and rejected:
                raise UserError(
                    f"no checkpoint of {root} verifies ({_describe(*rejected[0])}); restore the files, or start "
                    "the run afresh (spo train --fresh) or under a new --exp_name"
                )
            if newest is None:
                latest.unlink(missing_ok=True)  # a crash before any complete checkpoint: start fresh
            else:
                if rejected:
                    logger.warning("resuming from %s instead", newest)
                atomic_write_text(latest, newest.name.split("_")[-1])
        elif trainer_cfg.resume_mode == "resume_path" and trainer_cfg.resume_from_path:
            chosen = Path(trainer_cfg.resume_from_path)
            problems = checkpoint_problems(chosen) if (chosen / COMPLETE_MARKER).is_file() else []
            if problems:
                raise UserError(f"trainer.resume_from_path does not verify: {_describe(chosen, problems)}")
        result = super()._load_checkpoint()
        if self.global_steps > 0:
            step_dir = (
                Path(trainer_cfg.resume_from_path)
                if trainer_cfg.resume_mode == "resume_path"
                else root / f"global_step_{self.global_steps}"
            )
            state_file = step_dir / KIT_STATE_DIR / "state.pt"
            if not state_file.is_file():
                raise UserError(
                    f"{step_dir}: checkpoint has no kit state ({state_file}); it was not written by the kit"
                )
            self._load_kit_state(torch.load(state_file, map_location="cpu", weights_only=False))
            if not trainer_cfg.get("val_only", False):  # an evaluation of a checkpoint is that validation
                with open_dict(trainer_cfg):
                    trainer_cfg.val_before_train = False  # the uninterrupted run validated at step 0 only
        return result
