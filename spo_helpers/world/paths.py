"""Where a world lives and whether it is complete: its folder name, its files and its manifest.

A world is cached under ``<assets>/world-v2-seed<seed>-n<num_train>/`` (v: ``WORLD_VERSION``); its
tool-integrated (TIR) variant beside it, in ``<name>-tools/``::

    data/train.parquet  data/val.parquet   the arithmetic task, DAPO/verl schema
    data/probe.parquet                     a fixed sample of training prompts (data source PROBE_DATA_SOURCE)
    model/                                 tokenizer + model + generation config (one MODEL_PATH)
    manifest.json                          settings, measured success-rate spread, file hashes

``<assets>`` is ``$SPO_ASSETS`` when set, else ``./runs/_assets``. A folder counts as a world only when its
manifest matches the settings asked for and its files are all there (``is_complete``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORLD_VERSION = 2
ASSETS_ENV = "SPO_ASSETS"
TOOLS_SUFFIX = "-tools"
PROBE_DATA_SOURCE = "spo_arith_train"


@dataclass(frozen=True)
class WorldPaths:
    """Where the parts of one world live."""

    root: Path
    train_file: Path
    val_file: Path
    model_dir: Path
    manifest_file: Path
    probe_file: Path  # a fixed sample of training prompts, validated as data source PROBE_DATA_SOURCE

    @classmethod
    def at(cls, root: str | os.PathLike) -> WorldPaths:
        r = Path(root)
        data = r / "data"
        return cls(
            r, data / "train.parquet", data / "val.parquet", r / "model", r / "manifest.json", data / "probe.parquet"
        )

    @property
    def validation_files(self) -> list[Path]:
        """Held-out prompts (generalisation) and the training probe (the RL objective itself)."""
        return [self.val_file, self.probe_file]


def default_assets_dir() -> Path:
    """``$SPO_ASSETS`` when set, else ``./runs/_assets``."""
    env = os.environ.get(ASSETS_ENV)
    return Path(env) if env else Path.cwd() / "runs" / "_assets"


def world_name(seed: int, num_train: int, tools: bool = False) -> str:
    return f"world-v{WORLD_VERSION}-seed{seed}-n{num_train}" + (TOOLS_SUFFIX if tools else "")


def read_manifest(paths: WorldPaths) -> dict[str, Any] | None:
    """The manifest of a world, or None when it is missing or unreadable."""
    try:
        return json.loads(paths.manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(
    paths: WorldPaths,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    warm_cfg=None,
    model_cfg=None,
    tools: bool = False,
    tool_share: float | None = None,
) -> bool:
    """True when ``paths`` holds a finished world built with these settings (configs checked when given).

    A plain world's manifest has no ``tools`` key; a TIR world's has ``tools: true`` and its ``tool_share``.
    """
    manifest = read_manifest(paths)
    if not isinstance(manifest, dict):
        return False
    wanted = {"world_version": WORLD_VERSION, "seed": seed, "num_train": num_train, "num_val": num_val}
    if any(manifest.get(k) != v for k, v in wanted.items()):
        return False
    if bool(manifest.get("tools", False)) != tools:
        return False
    if tools and tool_share is not None and manifest.get("tool_share") != tool_share:
        return False
    for section, cfg in (("warm_start", warm_cfg), ("model", model_cfg)):
        recorded = manifest.get(section)
        if cfg is not None and (
            not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in cfg.to_dict().items())
        ):
            return False
    needed = [
        paths.train_file,
        paths.val_file,
        paths.probe_file,
        paths.model_dir / "config.json",
        paths.model_dir / "tokenizer.json",
    ]
    return all(p.is_file() for p in needed) and any(paths.model_dir.glob("*.safetensors"))


__all__ = [
    "ASSETS_ENV",
    "PROBE_DATA_SOURCE",
    "TOOLS_SUFFIX",
    "WORLD_VERSION",
    "WorldPaths",
    "default_assets_dir",
    "is_complete",
    "read_manifest",
    "world_name",
]
