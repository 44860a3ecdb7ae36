"""spo_helpers.world.paths: where a world lives, its name, its manifest and when a folder counts as a world."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from spo_helpers.world.paths import (
    ASSETS_ENV,
    TOOLS_SUFFIX,
    WORLD_VERSION,
    WorldPaths,
    default_assets_dir,
    is_complete,
    read_manifest,
    world_name,
)

SETTINGS = {"seed": 0, "num_train": 30, "num_val": 4}


@dataclass
class _Config:
    """Stands in for a WarmStartConfig or TinyModelConfig: what is_complete compares is ``to_dict()``."""

    steps: int = 10

    def to_dict(self) -> dict:
        return {"steps": self.steps}


def _fake_world(root, **manifest) -> WorldPaths:
    """A folder with every file a finished world has (empty placeholders) and the given manifest."""
    paths = WorldPaths.at(root)
    for path in (paths.train_file, paths.val_file, paths.probe_file):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    paths.model_dir.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (paths.model_dir / name).write_bytes(b"")
    paths.manifest_file.write_text(json.dumps({"world_version": WORLD_VERSION, **SETTINGS, **manifest}))
    return paths


def test_a_worlds_files(tmp_path):
    paths = WorldPaths.at(tmp_path / "w")
    assert paths.root == tmp_path / "w"
    assert paths.train_file == tmp_path / "w" / "data" / "train.parquet"
    assert paths.val_file == tmp_path / "w" / "data" / "val.parquet"
    assert paths.probe_file == tmp_path / "w" / "data" / "probe.parquet"
    assert paths.model_dir == tmp_path / "w" / "model"
    assert paths.manifest_file == tmp_path / "w" / "manifest.json"
    assert paths.validation_files == [paths.val_file, paths.probe_file]


def test_world_name():
    assert world_name(3, 3000) == f"world-v{WORLD_VERSION}-seed3-n3000"
    assert world_name(3, 3000, tools=True) == world_name(3, 3000) + TOOLS_SUFFIX


def test_default_assets_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(ASSETS_ENV, str(tmp_path / "elsewhere"))
    assert default_assets_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(ASSETS_ENV)
    monkeypatch.chdir(tmp_path)
    assert default_assets_dir() == tmp_path / "runs" / "_assets"


def test_read_manifest(tmp_path):
    paths = WorldPaths.at(tmp_path)
    assert read_manifest(paths) is None
    paths.manifest_file.write_text("{not json")
    assert read_manifest(paths) is None
    paths.manifest_file.write_text('{"seed": 1}')
    assert read_manifest(paths) == {"seed": 1}


def test_a_folder_with_every_file_and_matching_settings_is_complete(tmp_path):
    paths = _fake_world(tmp_path / "w", warm_start={"steps": 10, "first_loss": 3.0})
    assert is_complete(paths, **SETTINGS)
    assert is_complete(paths, **SETTINGS, warm_cfg=_Config(10))
    assert not is_complete(paths, **SETTINGS, warm_cfg=_Config(11))
    assert not is_complete(paths, **SETTINGS, model_cfg=_Config(10))  # no model section recorded
    assert not is_complete(paths, **{**SETTINGS, "seed": 1})
    assert not is_complete(paths, **SETTINGS, tools=True)  # a plain world
    (paths.model_dir / "model.safetensors").unlink()
    assert not is_complete(paths, **SETTINGS)


@pytest.mark.parametrize("missing", ["train_file", "val_file", "probe_file", "manifest_file"])
def test_a_missing_file_leaves_the_world_incomplete(tmp_path, missing):
    paths = _fake_world(tmp_path / "w")
    getattr(paths, missing).unlink()
    assert not is_complete(paths, **SETTINGS)


def test_a_tool_world_is_complete_only_as_a_tool_world(tmp_path):
    paths = _fake_world(tmp_path / "w", tools=True, tool_share=0.5)
    assert is_complete(paths, **SETTINGS, tools=True, tool_share=0.5)
    assert is_complete(paths, **SETTINGS, tools=True)  # any share
    assert not is_complete(paths, **SETTINGS, tools=True, tool_share=0.25)
    assert not is_complete(paths, **SETTINGS)
