"""Checks of a stage's inputs made before any compute: each failure is one line naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

from spo_helpers.errors import UserError


def require_file(path: str | None, what: str, fix: str) -> Path:
    """``path`` as a Path when it is set and exists; else ``UserError`` naming ``what`` and ``fix``."""
    if not path:
        raise UserError(f"{what} is not set: {fix}")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p} ({fix})")
    return p


def check_model_dir(model_path: str) -> None:
    """A local model folder must hold a config and a tokenizer (hub ids are checked by verl)."""
    path = Path(model_path)
    if not path.exists():
        if "/" in model_path and not model_path.startswith((".", "/")) and model_path.count("/") == 1:
            return  # a Hugging Face id, resolved by verl on the node
        raise UserError(f"MODEL_PATH not found: {path}; pass --model_path a local model folder or a hub id (org/name)")
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json; MODEL_PATH must be a Hugging Face model folder (save_pretrained)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise UserError(
            f"{path}: no tokenizer (tokenizer.json / tokenizer_config.json); save the tokenizer next to the model "
            "with tokenizer.save_pretrained(MODEL_PATH)"
        )


def check_data_files(files: list[str], what: str) -> None:
    """Each local training or validation file passes ``formats.datasets.validate_data_file`` (hub ids: verl)."""
    from spo_helpers.formats.datasets import validate_data_file

    for name in files:
        validate_data_file(name, what)
