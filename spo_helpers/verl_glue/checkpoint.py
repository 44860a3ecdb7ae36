"""The kit's checkpoint protocol on top of verl's ``global_step_N`` folders.

A checkpoint of step N is ``<default_local_dir>/global_step_N/`` with, in writing order:

1. ``kit_state/state.pt``: the kit's state (counters, tracker, and for SPO the sampler RNG and the stored
   previous responses), written before verl's files;
2. verl's files (``actor/``, ``data.pt``), by verl's ``_save_checkpoint``;
3. ``kit_complete.json``: the completion marker, written last (atomically).

A crash at any point leaves a folder without the marker, which resuming ignores: ``resume_mode=auto`` picks
the newest folder that has it (``newest_complete_checkpoint``) and points verl's
``latest_checkpointed_iteration.txt`` at it. The checkpoint is written after the step's metrics are on disk
(``_after_log``), so a resumed run's logs continue exactly where the checkpoint was taken. A resumed run does
not validate again before training (the uninterrupted run did not), so its metrics equal those of a run
that never stopped.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

COMPLETE_MARKER = "kit_complete.json"
KIT_STATE_DIR = "kit_state"
LATEST_FILE = "latest_checkpointed_iteration.txt"


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class RunStopped(RuntimeError):
    """Raised on purpose after a checkpoint when ``kit.stop_after_step`` is set."""


def newest_complete_checkpoint(root: str | os.PathLike) -> Path | None:
    """The ``global_step_N`` folder with the largest N that has the completion marker."""
    folder = Path(root)
    if not folder.is_dir():
        return None
    complete = [
        p
        for p in folder.glob("global_step_*")
        if p.name.split("_")[-1].isdigit() and (p / COMPLETE_MARKER).is_file() and (p / "actor").is_dir()
    ]
    return max(complete, key=lambda p: int(p.name.split("_")[-1]), default=None)


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
        atomic_write_json(step_dir / COMPLETE_MARKER, {"global_step": self.global_steps, "time": time.time()})
        atomic_write_text(root / LATEST_FILE, str(self.global_steps))
        stop_after = self.config.kit.get("stop_after_step")
        if stop_after is not None and self.global_steps >= int(stop_after):
            raise RunStopped(f"stopped after the checkpoint of step {self.global_steps} (kit.stop_after_step)")

    def _load_checkpoint(self):
        trainer_cfg = self.config.trainer
        root = Path(trainer_cfg.default_local_dir)
        if trainer_cfg.resume_mode == "auto":
            newest = newest_complete_checkpoint(root)
            latest = root / LATEST_FILE
            if newest is None:
                latest.unlink(missing_ok=True)  # a crash before any complete checkpoint: start fresh
            else:
                atomic_write_text(latest, newest.name.split("_")[-1])
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
            with open_dict(trainer_cfg):
                trainer_cfg.val_before_train = False  # the uninterrupted run validated at step 0 only
        return result
