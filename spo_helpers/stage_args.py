"""Command-line pieces shared by the verl stages (estimate, train).

The official scripts take environment variables (OUTPUT_DIR, MODEL_PATH, EXP_NAME,
N_VAL, RESPONSE_LENGTH, DEBUG, ...); every such variable is also a flag here, and
the environment gives the flag's default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from spo_helpers.errors import UserError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def env_bool(name: str, default: bool | None = None) -> bool | None:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.strip().lower() in TRUE:
        return True
    if value.strip().lower() in FALSE:
        return False
    raise UserError(f"environment variable {name}={value!r} is not a boolean (use True or False)")


def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def parse_bool(text: str) -> bool:
    if text.strip().lower() in TRUE:
        return True
    if text.strip().lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use True or False)")


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", default=os.environ.get("OUTPUT_DIR"), help="OUTPUT_DIR (default: runs/)")
    parser.add_argument("--model_path", default=os.environ.get("MODEL_PATH"), help="MODEL_PATH (cpu: the tiny world)")
    parser.add_argument("--exp_name", default=os.environ.get("EXP_NAME"), help="EXP_NAME")
    parser.add_argument("--n_val", type=int, default=env_int("N_VAL"), help="N_VAL: samples per validation prompt")
    parser.add_argument("--response_length", type=int, default=env_int("RESPONSE_LENGTH"), help="RESPONSE_LENGTH")
    parser.add_argument("--debug", type=parse_bool, default=env_bool("DEBUG", False), help="DEBUG: smaller batches")
    parser.add_argument("--backend", choices=("cpu", "ray"), default=None, help="default: ray with a GPU, else cpu")
    parser.add_argument("--preset", choices=("cpu", "official", "paper"), default=None, help="default from backend")
    parser.add_argument("--seed", type=int, default=env_int("SEED") or 0)
    parser.add_argument("--assets", default=None, help="where the CPU world is cached (default: runs/_assets)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the verl config and command")
    parser.add_argument("overrides", nargs="*", help="free Hydra overrides passed to verl (key=value)")


def resolve_backend(args) -> tuple[str, str]:
    backend = args.backend or (args.preset != "cpu" and gpu_available() and "ray") or "cpu"
    if args.preset is None and backend == "ray" and not gpu_available():
        backend = "cpu"
    preset = args.preset or ("cpu" if backend == "cpu" else "official")
    if preset == "cpu" and backend == "ray":
        return backend, preset  # the tiny world on GPU workers: a fast smoke run
    if preset != "cpu" and backend == "cpu":
        raise UserError(f"the {preset} preset needs GPU nodes (--backend ray); the CPU backend runs --preset cpu")
    return backend, preset


def world_for(args):
    """The tiny CPU world (built and cached on first use)."""
    from spo_helpers.world.build import build_world

    return build_world(args.assets, seed=args.seed)


def require_file(path: str | None, what: str, fix: str) -> Path:
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


def check_parquet_files(files: list[str], what: str) -> None:
    """Each local parquet file exists and has rows (hub ids are left to verl)."""
    import pyarrow.parquet as pq

    for name in files:
        path = Path(name)
        if not name.endswith(".parquet"):
            continue
        if not path.is_file():
            raise UserError(f"{what} file not found: {path}; check the path (`spo split` writes subset_*.parquet)")
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # pyarrow raises several unrelated types for a damaged file
            raise UserError(f"{path}: not a readable parquet file ({err})") from None
        if rows == 0:
            raise UserError(f"{path}: the {what} file has no rows; regenerate it (`spo split`) or pass one with rows")
