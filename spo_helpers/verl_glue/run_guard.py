"""Starting a run safely: one writer per run folder, the run's identity checked, then the config and training.

Every path that trains or estimates (``spo train``, ``spo estimate``, the Hydra app) goes through ``start_run``:

1. take the run folder's lock (``formats.run_lock``): a second writer is refused, naming the running process;
2. with ``fresh``, empty the folder (the lock file stays);
3. record the run's identity, or on a resume check it (``run_identity``): changed defining settings are refused;
4. write ``config.yaml`` and run to completion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from spo_helpers.formats.checkpoints import newest_complete_checkpoint
from spo_helpers.formats.run_lock import LOCK_FILE, run_lock
from spo_helpers.verl_glue.run_identity import check_identity
from spo_helpers.verl_glue.runner import record_run_config, run_training


def clear_run_folder(run_dir: Path) -> None:
    """Delete everything in ``run_dir`` but its lock file."""
    for path in run_dir.iterdir():
        if path.name == LOCK_FILE:
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def start_run(config: DictConfig, stage: str, extra: dict | None = None, *, fresh: bool = False) -> None:
    """Lock, (optionally) clear, check identity, write ``config.yaml`` (``stage``: ``train``, ``estimate`` or
    ``evaluate``, with the command's ``extra`` keys), train; see the module doc."""
    run_dir = Path(config.kit.run_dir)
    with run_lock(run_dir):
        if fresh:
            clear_run_folder(run_dir)
        resuming = (
            config.trainer.get("resume_mode", "auto") != "disable"
            and newest_complete_checkpoint(config.trainer.default_local_dir) is not None
        )
        check_identity(config, resuming)
        record_run_config(config, stage, extra)
        run_training(config)
