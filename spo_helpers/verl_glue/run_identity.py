"""What defines a run, recorded at its start and checked on every resume.

A run folder resumes from its newest checkpoint; resuming it with other data, another offline-values file, seed,
method, preset, model or any other setting that changes results would silently continue the old run under new
settings. ``run_identity.json`` holds the run's defining settings: the resolved config, flattened to dotted
keys, with

- data files (``data.train_files``, ``data.val_files``) and the offline-values file replaced by their SHA-256
  (a moved copy of the same data is the same run; an edited file is not), and every setting that names a local
  model folder (``actor_rollout_ref.model.path`` and the tokenizer paths that follow it) by the SHA-256 of the
  folder's files (a byte-identical copy elsewhere is the same model; hashing reads the weights once per start,
  about 10 s for an 8B model; a hub id stays as it is);
- the kit's own files (the reward function's path) replaced by their path inside the package;
- the settings that may change on resume left out (``MAY_CHANGE``): the number of steps or epochs, logging,
  checkpoint frequency and retention, validation before training, dump folders, ``kit.stop_after_step``, the
  resume mode, Ray's start options, the sandbox URL, and folder paths (the output folder too: a run folder
  moved or copied elsewhere resumes).

A resume whose identity differs is refused with the differences and the two ways out (a new experiment name, or
``--fresh``, which deletes the run's checkpoints and logs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_json, sha256_file

IDENTITY_FILE = "run_identity.json"

MAY_CHANGE = (
    "trainer.total_training_steps",
    "trainer.total_epochs",
    "trainer.logger",
    "trainer.project_name",
    "trainer.save_freq",
    "trainer.max_actor_ckpt_to_keep",
    "trainer.max_critic_ckpt_to_keep",
    "trainer.val_before_train",
    "trainer.validation_data_dir",
    "trainer.rollout_data_dir",
    "trainer.log_val_generations",
    "trainer.default_local_dir",
    "trainer.resume_mode",
    "trainer.resume_from_path",
    "trainer.del_local_ckpt_after_load",
    "trainer.ray_wait_register_center_timeout",
    "ray_init",
    "kit.sandbox_url",
    "kit.max_sandbox_error_share",
    "ray_kwargs",
    "kit.stop_after_step",
    "kit.run_dir",
    "kit.output_dir",
    "kit.vectorised_val_metrics",
    "global_profiler",
)
"""Settings that may differ between a run and its resume (prefixes of dotted keys)."""

DATA_KEYS = ("data.train_files", "data.val_files", "trainer.spo.offline_values")
"""Settings naming files whose contents, not paths, define the run."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _may_change(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in MAY_CHANGE)


def _content(value: Any) -> Any:
    """A data file (or list of them) as ``sha256:<hex>`` where it is a local file; hub ids stay as they are."""
    if isinstance(value, list | tuple):
        return [_content(v) for v in value]
    if isinstance(value, str) and value and Path(value).is_file():
        return f"sha256:{sha256_file(value)}"
    return value


MODEL_FILE = "config.json"
"""A local folder holding this file is a model (or tokenizer) folder: it is identified by its contents."""


def model_digest(folder: str | os.PathLike) -> str:
    """``model-sha256:<hex>`` over the folder's files: each relative path and its SHA-256, in sorted order."""
    import hashlib

    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return f"model-sha256:{digest.hexdigest()}"


def _model_content(value: Any, digests: dict[str, str]) -> Any:
    """A local model folder as its digest (computed once per folder); anything else as it is."""
    if isinstance(value, str) and value and (Path(value) / MODEL_FILE).is_file():
        key = str(Path(value).resolve())
        if key not in digests:
            digests[key] = model_digest(key)
        return digests[key]
    return value


def _package_relative(value: Any) -> Any:
    """A path inside the installed kit as ``pkg:<relative path>`` (the same run after a reinstall elsewhere)."""
    package = Path(__file__).resolve().parents[1]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return "pkg:" + Path(value).resolve().relative_to(package).as_posix()
        except ValueError:
            return value
    return value


def run_identity(config: DictConfig) -> dict[str, Any]:
    """The defining settings of a run (see the module doc), as a flat ``{dotted key: value}`` dict."""
    flat = _flatten(OmegaConf.to_container(config, resolve=True))
    identity = {}
    digests: dict[str, str] = {}
    for key, value in sorted(flat.items()):
        if _may_change(key):
            continue
        identity[key] = _content(value) if key in DATA_KEYS else _model_content(_package_relative(value), digests)
    return identity


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every defining setting that differs (added and removed keys included)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            out.append(f"{key}: {old.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}")
    return out


def check_identity(config: DictConfig, resuming: bool) -> Path:
    """Record the run's identity at its start; on a resume refuse one that differs from the recorded one.

    A resumed run without a record (made before records existed) gets one now.
    """
    path = Path(config.kit.run_dir) / IDENTITY_FILE
    identity = run_identity(config)
    if resuming and path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            recorded = None
        if isinstance(recorded, dict):
            changed = differences(recorded, identity)
            if changed:
                shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
                raise UserError(
                    f"{config.kit.run_dir}: resuming this run with settings that change its results ({shown}); "
                    "use a new --exp_name for a new run, or --fresh, which deletes this run's checkpoints and logs "
                    "and starts it again (steps, epochs, logging and checkpoint frequency may change on resume)"
                )
            return path
    atomic_write_json(path, identity, indent=1)
    return path
