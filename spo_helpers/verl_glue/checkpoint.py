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

import errno
import io
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from spo_helpers.formats.checkpoints import (
    COMPLETE_MARKER,
    LATEST_FILE,
    checkpoint_problems,
    describe,
    file_digests,
    kit_state_file,
    newest_complete_checkpoint,
    newest_verified_checkpoint,
    step_dir,
    step_of,
)

logger = logging.getLogger(__name__)


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


__all__ = ["CheckpointMixin", "RunStopped", "write_failure"]


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def write_failure(err: BaseException) -> str | None:
    """What a failed checkpoint write says about space, through the exception's chain (None: something else).

    ``OSError`` with ``ENOSPC``/``EDQUOT`` (Python's writes, verl's), a ``UserError`` of the kit's atomic writer for
    them, or torch's ``RuntimeError`` of a stream writer that could not write (``torch.save`` reports a full disk so).
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_ERRNOS:
            where = f"{current.filename}: " if current.filename else ""
            return f"{where}{os.strerror(current.errno)}"
        text = str(current)
        if any(os.strerror(code) in text for code in DISK_ERRNOS) or "file write failed" in text:
            return text.splitlines()[0][:300]
        # a Ray worker's error arrives as a RayTaskError whose ``cause`` is the worker's exception
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None


class RunStopped(RuntimeError):
    """Raised on purpose after a checkpoint when ``kit.stop_after_step`` is set."""


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
        """Kit state, then verl's files (actor, data.pt), then the completion marker.

        A write that fails for want of space (``ENOSPC``, ``EDQUOT``, or torch's "file write failed") removes the
        step's partial folder, which would never be resumed from, and stops the run with one line: the file, the
        free space, the fix, and the checkpoint it resumes from."""
        root = Path(self.config.trainer.default_local_dir)
        folder = step_dir(root, self.global_steps)
        (folder / COMPLETE_MARKER).unlink(missing_ok=True)
        try:
            state_file = kit_state_file(folder)
            state_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(state_file, _torch_bytes(self._kit_state()))
            super()._save_checkpoint()
        except Exception as err:
            failure = write_failure(err)
            if failure is None:
                raise
            shutil.rmtree(folder, ignore_errors=True)
            newest = newest_complete_checkpoint(root)
            free = shutil.disk_usage(root if root.is_dir() else root.parent).free / 2**30
            raise UserError(
                f"{folder}: the checkpoint of step {self.global_steps} could not be written ({failure}; "
                f"{free:.1f} GiB free there); its partial folder was removed; free disk space (or lower "
                "trainer.max_actor_ckpt_to_keep) and run the same command again: it resumes from "
                f"{newest.name if newest else 'the start'}"
            ) from None
        record = {"global_step": self.global_steps, "time": time.time(), "files": file_digests(folder)}
        atomic_write_json(folder / COMPLETE_MARKER, record)
        atomic_write_text(root / LATEST_FILE, str(self.global_steps))
        stop_after = self.config.kit.get("stop_after_step")
        if stop_after is not None and self.global_steps >= int(stop_after):
            raise RunStopped(f"stopped after the checkpoint of step {self.global_steps} (kit.stop_after_step)")

    def _load_checkpoint(self):
        trainer_cfg = self.config.trainer
        root = Path(trainer_cfg.default_local_dir)
        if trainer_cfg.resume_mode == "auto":
            newest, rejected = newest_verified_checkpoint(root)
            for folder, problems in rejected:
                logger.warning("damaged checkpoint skipped: %s", describe(folder, problems))
            latest = root / LATEST_FILE
            if newest is None and rejected:
                raise UserError(
                    f"no checkpoint of {root} verifies ({describe(*rejected[0])}); restore the files, or start "
                    "the run afresh (spo train --fresh) or under a new --exp_name"
                )
            if newest is None:
                latest.unlink(missing_ok=True)  # a crash before any complete checkpoint: start fresh
            else:
                if rejected:
                    logger.warning("resuming from %s instead", newest)
                atomic_write_text(latest, str(step_of(newest)))
        elif trainer_cfg.resume_mode == "resume_path" and trainer_cfg.resume_from_path:
            chosen = Path(trainer_cfg.resume_from_path)
            problems = checkpoint_problems(chosen) if (chosen / COMPLETE_MARKER).is_file() else []
            if problems:
                raise UserError(f"trainer.resume_from_path does not verify: {describe(chosen, problems)}")
        result = super()._load_checkpoint()
        if self.global_steps > 0:
            folder = (
                Path(trainer_cfg.resume_from_path)
                if trainer_cfg.resume_mode == "resume_path"
                else step_dir(root, self.global_steps)
            )
            state_file = kit_state_file(folder)
            if not state_file.is_file():
                raise UserError(f"{folder}: checkpoint has no kit state ({state_file}); it was not written by the kit")
            self._load_kit_state(torch.load(state_file, map_location="cpu", weights_only=False))
            if not trainer_cfg.get("val_only", False):  # an evaluation of a checkpoint is that validation
                with open_dict(trainer_cfg):
                    trainer_cfg.val_before_train = False  # the uninterrupted run validated at step 0 only
        return result
