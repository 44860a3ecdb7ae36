"""Build the offline CPU world: task data, tokenizer and a warm-started tiny Qwen3 model.

Everything derives from ``--seed``; no network access is needed. The world is
cached under ``<assets>/world-v1-seed<seed>-n<num_train>/``::

    data/train.parquet  data/val.parquet   the arithmetic task, DAPO/verl schema
    model/                                 tokenizer + model + generation config (one MODEL_PATH)
    manifest.json                          settings, measured success-rate spread, file hashes

The folder is built under a temporary name and renamed when complete, so an
interrupted build never leaves a folder that looks finished. A second call with
the same settings returns the cached world at once; ``--force`` rebuilds it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spo_helpers.formats.atomic import atomic_write_json, sha256_file

WORLD_VERSION = 2
ASSETS_ENV = "SPO_ASSETS"
SPREAD_PROMPTS = 512
SPREAD_SAMPLES = 8
VAL_TEMPERATURE = 0.6
VAL_SAMPLES = 4
PROBE_PROMPTS = 200
PROBE_DATA_SOURCE = "spo_arith_train"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldPaths:
    """Where the parts of one world live."""

    root: Path
    train_file: Path
    val_file: Path
    model_dir: Path
    manifest_file: Path
    probe_file: Path  # a fixed sample of training prompts, validated as data source spo_arith_train

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


def world_name(seed: int, num_train: int) -> str:
    return f"world-v{WORLD_VERSION}-seed{seed}-n{num_train}"


def read_manifest(paths: WorldPaths) -> dict[str, Any] | None:
    """The manifest of a world, or None when it is missing or unreadable."""
    try:
        return json.loads(paths.manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(paths: WorldPaths, *, seed: int, num_train: int, num_val: int, warm_cfg=None, model_cfg=None) -> bool:
    """True when ``paths`` holds a finished world built with these settings (configs checked when given)."""
    manifest = read_manifest(paths)
    if not isinstance(manifest, dict):
        return False
    wanted = {"world_version": WORLD_VERSION, "seed": seed, "num_train": num_train, "num_val": num_val}
    if any(manifest.get(k) != v for k, v in wanted.items()):
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


def _say(progress: bool, text: str) -> None:
    if progress:
        logger.info("[world] %s", text)


def _counts(rows) -> dict[str, int]:
    c = Counter(int(r["extra_info"]["difficulty"]) for r in rows)
    return {str(k): c[k] for k in sorted(c)}


def _token_lengths(tokenizer, rows) -> tuple[int, int]:
    from spo_helpers.world.task import reference_response, row_answer, row_content
    from spo_helpers.world.tokenizer import chat_text

    prompt = max(len(tokenizer(chat_text(row_content(r)), add_special_tokens=False)["input_ids"]) for r in rows)
    response = max(
        len(tokenizer(reference_response(row_answer(r)) + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
        for r in rows
    )
    return prompt, response


def _build_into(
    folder: Path, *, seed: int, num_train: int, num_val: int, warm_cfg, model_cfg, progress: bool
) -> dict[str, Any]:
    """Build every part of a world into ``folder`` (not yet under its final name); returns the manifest."""
    import tokenizers
    import torch
    import transformers

    from spo_helpers import __version__
    from spo_helpers.world import task
    from spo_helpers.world.model import make_model, save_model
    from spo_helpers.world.tokenizer import build_tokenizer
    from spo_helpers.world.warmstart import model_success_rates, spread_summary, warm_start

    paths = WorldPaths.at(folder)
    started = time.perf_counter()
    train, val = task.make_task(num_train, num_val, seed)
    task.write_rows(train, paths.train_file)
    task.write_rows(val, paths.val_file)
    probe_rows = np.random.default_rng([seed, 11]).permutation(len(train))[: min(PROBE_PROMPTS, len(train))]
    task.write_rows([dict(train[int(i)], data_source=PROBE_DATA_SOURCE) for i in np.sort(probe_rows)], paths.probe_file)
    _say(progress, f"1/5 task: {len(train)} train / {len(val)} val prompts, difficulty mix {_counts(train)}")

    everything = train + val
    tokenizer = build_tokenizer(
        [task.row_content(r) for r in everything], [task.reference_response(task.row_answer(r)) for r in everything]
    )
    max_prompt, max_response = _token_lengths(tokenizer, everything)
    _say(
        progress, f"2/5 tokenizer: vocab {len(tokenizer)}, prompts <= {max_prompt} tokens, responses <= {max_response}"
    )

    model = make_model(tokenizer, model_cfg, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    _say(
        progress,
        f"3/5 model: Qwen3, {model_cfg.num_hidden_layers} layers x {model_cfg.hidden_size}, {n_params:,} params",
    )

    t0 = time.perf_counter()
    losses = warm_start(model, tokenizer, train, warm_cfg, progress=progress)
    warm_seconds = time.perf_counter() - t0
    _say(
        progress,
        f"4/5 warm start: {warm_cfg.steps} steps in {warm_seconds:.1f}s, loss {losses[0]:.3f} -> "
        f"{np.mean(losses[-20:]):.3f}",
    )
    save_model(model, tokenizer, paths.model_dir)

    t0 = time.perf_counter()
    pick = np.random.default_rng([seed, 7]).permutation(len(train))[: min(SPREAD_PROMPTS, len(train))]
    sample = [train[int(i)] for i in np.sort(pick)]
    rates = model_success_rates(model, tokenizer, sample, n=SPREAD_SAMPLES, temperature=1.0, seed=seed)
    spread = spread_summary(rates, [r["extra_info"]["difficulty"] for r in sample])
    val_rates = model_success_rates(model, tokenizer, val, n=VAL_SAMPLES, temperature=VAL_TEMPERATURE, seed=seed)
    val_summary = spread_summary(val_rates, [r["extra_info"]["difficulty"] for r in val])
    _say(progress, f"5/5 spread check: {time.perf_counter() - t0:.1f}s")

    return {
        "world_version": WORLD_VERSION,
        "package_version": __version__,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "task": {
            "data_source": task.DATA_SOURCE,
            "answer_format": task.ANSWER_FORMAT,
            "shape_weights": {f"{ops}ops-{width}digits": w for (ops, width), w in task.SHAPE_WEIGHTS.items()},
            "difficulty_train": _counts(train),
            "difficulty_val": _counts(val),
        },
        "tokenizer": {
            "vocab_size": len(tokenizer),
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "max_prompt_tokens": max_prompt,
            "max_response_tokens": max_response,
        },
        "model": {"architecture": "Qwen3ForCausalLM", "parameters": n_params, **model_cfg.to_dict()},
        "warm_start": {**warm_cfg.to_dict(), "first_loss": losses[0], "final_loss": float(np.mean(losses[-20:]))},
        "spread": {"split": "train", "n": SPREAD_SAMPLES, "temperature": 1.0, "top_p": 1.0, **spread},
        "val_accuracy": {"n": VAL_SAMPLES, "temperature": VAL_TEMPERATURE, "top_p": 1.0, **val_summary},
        "files": {
            "data/train.parquet": sha256_file(paths.train_file),
            "data/val.parquet": sha256_file(paths.val_file),
            "data/probe.parquet": sha256_file(paths.probe_file),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "build_seconds": round(time.perf_counter() - started, 2),
        "warm_start_seconds": round(warm_seconds, 2),
    }


def _install(tmp: Path, final: Path) -> None:
    """Move a finished build to its final name, replacing an older world there."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(old / final.name, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def build_world(
    assets_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_train: int = 3000,
    num_val: int = 200,
    force: bool = False,
    progress: bool = True,
    warm_start=None,
    model_config=None,
) -> WorldPaths:
    """Build (or reuse) the world for these settings and return its paths.

    ``warm_start`` (a ``WarmStartConfig``) and ``model_config`` (a ``TinyModelConfig``)
    default to the kit's settings; they are recorded in the manifest.
    """
    from spo_helpers.world.model import TinyModelConfig
    from spo_helpers.world.warmstart import default_warm_start

    if num_train < 1 or num_val < 0:
        raise ValueError("num_train must be >= 1 and num_val >= 0")
    assets = Path(assets_dir) if assets_dir is not None else default_assets_dir()
    paths = WorldPaths.at(assets / world_name(seed, num_train))
    warm_cfg = warm_start if warm_start is not None else default_warm_start(num_train, seed)
    model_cfg = model_config if model_config is not None else TinyModelConfig()
    settings = {"seed": seed, "num_train": num_train, "num_val": num_val, "warm_cfg": warm_cfg, "model_cfg": model_cfg}
    if not force and is_complete(paths, **settings):
        _say(progress, f"reusing {paths.root}")
        return paths

    assets.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{paths.root.name}.", suffix=".tmp", dir=assets))
    _say(progress, f"building {paths.root.name} (seed {seed}, {num_train} train / {num_val} val) in {tmp.name}")
    try:
        manifest = _build_into(
            tmp,
            seed=seed,
            num_train=num_train,
            num_val=num_val,
            warm_cfg=warm_cfg,
            model_cfg=model_cfg,
            progress=progress,
        )
        atomic_write_json(WorldPaths.at(tmp).manifest_file, manifest, indent=2)
        if not force and is_complete(paths, **settings):
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build finished first
        else:
            _install(tmp, paths.root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print(summary(paths), flush=True)
    return paths


def summary(paths: WorldPaths) -> str:
    """A one-screen description of a built world."""
    m = read_manifest(paths) or {}
    s, v, tok, mod = m.get("spread", {}), m.get("val_accuracy", {}), m.get("tokenizer", {}), m.get("model", {})
    lines = [
        f"world    {paths.root}",
        f"data     {m.get('num_train')} train / {m.get('num_val')} val prompts   {paths.train_file.parent}",
        f"         difficulty mix (train) {m.get('task', {}).get('difficulty_train')}",
        f"model    {paths.model_dir}   (MODEL_PATH: tokenizer + Qwen3, {mod.get('parameters', 0):,} params)",
        f"tokens   vocab {tok.get('vocab_size')}, prompt <= {tok.get('max_prompt_tokens')}, "
        f"response <= {tok.get('max_response_tokens')}",
        f"spread   {s.get('prompts')} train prompts x {s.get('n')} samples at T=1: mean success "
        f"{s.get('mean_success', float('nan')):.3f}, all-fail {s.get('share_all_fail', float('nan')):.2f}, "
        f"mixed {s.get('share_mixed', float('nan')):.2f}, all-pass {s.get('share_all_pass', float('nan')):.2f}",
        f"         by difficulty {s.get('mean_by_difficulty')}",
        f"val      accuracy at T={v.get('temperature')}: {v.get('mean_success', float('nan')):.3f}",
        f"time     {m.get('build_seconds')}s (warm start {m.get('warm_start_seconds')}s)",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assets", default=None, help=f"assets folder (default: ${ASSETS_ENV} or ./runs/_assets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", "--num-train", dest="num_train", type=int, default=3000)
    parser.add_argument("--num_val", "--num-val", dest="num_val", type=int, default=200)
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching world exists")
    parser.add_argument("--quiet", action="store_true", help="print only the world's folder")


def run(args: argparse.Namespace) -> int:
    paths = build_world(
        args.assets,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        force=args.force,
        progress=not args.quiet,
    )
    if args.quiet:
        print(paths.root)
    return 0


__all__ = [
    "WorldPaths",
    "add_arguments",
    "build_world",
    "default_assets_dir",
    "is_complete",
    "read_manifest",
    "run",
    "summary",
    "world_name",
]
