"""Build the offline CPU world: task data, tokenizer and a warm-started tiny Qwen3 model.

Everything derives from the seed; no network access is needed. Where a world lives, what it holds and when it
counts as complete is ``world/paths.py``; its one-screen description is ``world/summary.py``.

The folder is built under a temporary name and renamed when complete, so an
interrupted build never leaves a folder that looks finished. A second call with
the same settings returns the cached world at once; ``force=True`` rebuilds it.

``tools=True`` builds the tool-integrated (TIR) variant beside it, in ``<name>-tools/``: the same task
data, a tokenizer that also learned the tool-block format, and a warm start in which a share of the
targets are tool traces (``world/traces.py``). Its success with tools can only be measured by running
model-written code in the sandbox, which this layer does not import: ``spo world --tools``
(``spo_helpers/stages/world.py``) measures it through the agent loop and ``record_tool_check`` writes the
result into the manifest (``spread`` and ``val_accuracy``, with tool-use numbers).
"""

from __future__ import annotations

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

from spo_helpers.formats.atomic import atomic_write_json, current_umask, sha256_file
from spo_helpers.world.paths import (
    PROBE_DATA_SOURCE,
    WORLD_VERSION,
    WorldPaths,
    default_assets_dir,
    is_complete,
    read_manifest,
    world_name,
)
from spo_helpers.world.summary import summary

SPREAD_PROMPTS = 512
SPREAD_SAMPLES = 8
VAL_TEMPERATURE = 0.6
VAL_SAMPLES = 4
PROBE_PROMPTS = 200

logger = logging.getLogger(__name__)


def _say(progress: bool, text: str) -> None:
    if progress:
        logger.info("[world] %s", text)


def _counts(rows) -> dict[str, int]:
    c = Counter(int(r["extra_info"]["difficulty"]) for r in rows)
    return {str(k): c[k] for k in sorted(c)}


def _token_lengths(tokenizer, rows, tools: bool = False) -> tuple[int, int]:
    from spo_helpers.world.task import reference_response, row_answer, row_content
    from spo_helpers.world.tokenizer import chat_text
    from spo_helpers.world.traces import encode_trace, row_trace

    prompt = max(len(tokenizer(chat_text(row_content(r)), add_special_tokens=False)["input_ids"]) for r in rows)
    if tools:  # the longer of the two targets: the tool trace, interpreter block included
        return prompt, max(len(encode_trace(tokenizer, row_trace(r, True))[0]) for r in rows)
    response = max(
        len(tokenizer(reference_response(row_answer(r)) + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
        for r in rows
    )
    return prompt, response


def _tool_tokens(tokenizer) -> dict[str, int]:
    """How many tokens the tool-block markers take in the TIR tokenizer (each is a piece of its own)."""
    from spo_helpers.formats import tool_blocks

    marks = {
        "code_open": tool_blocks.CODE_OPEN + "\n",
        "code_stop": "\n" + tool_blocks.CODE_STOP,
        "interpreter_open": tool_blocks.INTERPRETER_OPEN,
        "interpreter_close": "\n" + tool_blocks.INTERPRETER_CLOSE,
    }
    return {name: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for name, text in marks.items()}


def _build_into(
    folder: Path,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    warm_cfg,
    model_cfg,
    progress: bool,
    tools: bool = False,
    tool_share: float = 0.0,
) -> dict[str, Any]:
    """Build every part of a world into ``folder`` (not yet under its final name); returns the manifest."""

    from spo_helpers import __version__
    from spo_helpers.world import task
    from spo_helpers.world.model import make_model, save_model
    from spo_helpers.world.tokenizer import build_tokenizer
    from spo_helpers.world.traces import TOOL_RESPONSE_LENGTH, build_tool_tokenizer, row_traces
    from spo_helpers.world.warmstart import warm_start

    paths = WorldPaths.at(folder)
    started = time.perf_counter()
    train, val = task.make_task(num_train, num_val, seed)
    task.write_rows(train, paths.train_file)
    task.write_rows(val, paths.val_file)
    probe_rows = np.random.default_rng([seed, 11]).permutation(len(train))[: min(PROBE_PROMPTS, len(train))]
    task.write_rows([dict(train[int(i)], data_source=PROBE_DATA_SOURCE) for i in np.sort(probe_rows)], paths.probe_file)
    _say(progress, f"1/5 task: {len(train)} train / {len(val)} val prompts, difficulty mix {_counts(train)}")

    everything = train + val
    if tools:
        tokenizer = build_tool_tokenizer(everything)
    else:
        tokenizer = build_tokenizer(
            [task.row_content(r) for r in everything], [task.reference_response(task.row_answer(r)) for r in everything]
        )
    max_prompt, max_response = _token_lengths(tokenizer, everything, tools)
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
    targets = row_traces(train, tool_share, seed) if tools else None
    losses = warm_start(model, tokenizer, train, warm_cfg, progress=progress, targets=targets)
    warm_seconds = time.perf_counter() - t0
    _say(
        progress,
        f"4/5 warm start: {warm_cfg.steps} steps in {warm_seconds:.1f}s, loss {losses[0]:.3f} -> "
        f"{np.mean(losses[-20:]):.3f}" + (f", {tool_share:.0%} tool traces" if tools else ""),
    )
    save_model(model, tokenizer, paths.model_dir)

    manifest = {
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
    }
    if tools:
        manifest["tools"] = True
        manifest["tool_share"] = tool_share
        manifest["tool_response_length"] = TOOL_RESPONSE_LENGTH
        manifest["tool_traces_train"] = int(sum(len(t) > 1 for t in targets or []))
        manifest["tokenizer"]["tool_marker_tokens"] = _tool_tokens(tokenizer)
        manifest["spread"] = None  # success with tools: measured through the agent loop by spo world --tools
        manifest["val_accuracy"] = None
        _say(progress, "5/5 spread check: with tools, through the agent loop and the sandbox (spo world --tools)")
    else:
        manifest.update(_plain_spread(model, tokenizer, train, val, seed, progress))
    manifest.update(_files_and_versions(paths))
    manifest["build_seconds"] = round(time.perf_counter() - started, 2)
    manifest["warm_start_seconds"] = round(warm_seconds, 2)
    return manifest


def _spread_sample(train, seed: int) -> list[dict]:
    """The training prompts the spread check samples (the same ones in the plain and the TIR world)."""
    pick = np.random.default_rng([seed, 7]).permutation(len(train))[: min(SPREAD_PROMPTS, len(train))]
    return [train[int(i)] for i in np.sort(pick)]


def _plain_spread(model, tokenizer, train, val, seed: int, progress: bool) -> dict[str, Any]:
    """Per-prompt success without tools on a sample of training prompts, and validation accuracy."""
    from spo_helpers.world.warmstart import model_success_rates, spread_summary

    t0 = time.perf_counter()
    sample = _spread_sample(train, seed)
    rates = model_success_rates(model, tokenizer, sample, n=SPREAD_SAMPLES, temperature=1.0, seed=seed)
    spread = spread_summary(rates, [r["extra_info"]["difficulty"] for r in sample])
    val_rates = model_success_rates(model, tokenizer, val, n=VAL_SAMPLES, temperature=VAL_TEMPERATURE, seed=seed)
    val_summary = spread_summary(val_rates, [r["extra_info"]["difficulty"] for r in val])
    _say(progress, f"5/5 spread check: {time.perf_counter() - t0:.1f}s")
    return {
        "spread": {"split": "train", "n": SPREAD_SAMPLES, "temperature": 1.0, "top_p": 1.0, **spread},
        "val_accuracy": {"n": VAL_SAMPLES, "temperature": VAL_TEMPERATURE, "top_p": 1.0, **val_summary},
    }


def _files_and_versions(paths: WorldPaths) -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    return {
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
    }


@dataclass(frozen=True)
class ToolCheckJob:
    """One sampling pass of the TIR world's check: which rows, how many samples each, at what temperature."""

    section: str  # the manifest key it fills: "spread" or "val_accuracy"
    rows: list[dict[str, Any]]
    n: int
    temperature: float
    top_p: float = 1.0


def needs_tool_check(paths: WorldPaths) -> bool:
    """True for a TIR world whose success with tools is not measured yet."""
    manifest = read_manifest(paths) or {}
    return bool(manifest.get("tools")) and not manifest.get("spread")


def tool_check_jobs(paths: WorldPaths) -> list[ToolCheckJob]:
    """What the TIR world's check samples: the plain world's spread prompts (T=1) and the validation set."""
    from spo_helpers.world.task import read_rows

    manifest = read_manifest(paths) or {}
    train = read_rows(paths.train_file)
    return [
        ToolCheckJob("spread", _spread_sample(train, int(manifest.get("seed", 0))), SPREAD_SAMPLES, 1.0),
        ToolCheckJob("val_accuracy", read_rows(paths.val_file), VAL_SAMPLES, VAL_TEMPERATURE),
    ]


def record_tool_check(
    paths: WorldPaths, jobs: list[ToolCheckJob], samples: dict[str, Any], *, response_length: int, seconds: float
) -> dict[str, Any]:
    """Write the check's numbers (``traces.tool_use_summary`` per job) into the TIR world's manifest."""
    from spo_helpers.world.traces import tool_use_summary

    manifest = read_manifest(paths)
    if not isinstance(manifest, dict) or not manifest.get("tools"):
        raise ValueError(f"{paths.root} is not a finished TIR world (no tools: true in its manifest)")
    for job in jobs:
        numbers = tool_use_summary(samples[job.section], [r["extra_info"]["difficulty"] for r in job.rows])
        head = {"split": "train"} if job.section == "spread" else {}
        manifest[job.section] = {
            **head,
            "n": job.n,
            "temperature": job.temperature,
            "top_p": job.top_p,
            "tools": True,
            "response_length": response_length,
            **numbers,
        }
    manifest["tool_check_seconds"] = round(seconds, 2)
    atomic_write_json(paths.manifest_file, manifest, indent=2)
    return manifest


def _install(tmp: Path, final: Path) -> None:
    """Move a finished build to its final name, replacing an older world there.

    The build folder was made private (``mkdtemp``: mode 0700); the world gets the mode ``mkdir`` would give it
    (``0o777`` less the umask), so a shared cache is readable by those it is shared with."""
    tmp.chmod(0o777 & ~current_umask())
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
    tools: bool = False,
    tool_share: float | None = None,
) -> WorldPaths:
    """Build (or reuse) the world for these settings and return its paths.

    ``warm_start`` (a ``WarmStartConfig``) and ``model_config`` (a ``TinyModelConfig``)
    default to the kit's settings; they are recorded in the manifest. ``tools=True``: the TIR world
    (``<name>-tools/``), ``tool_share`` of its warm-start targets tool traces (default ``TOOL_SHARE``);
    its success with tools is left unmeasured here (``spo world --tools`` measures it, see the module).
    """
    from spo_helpers.world.model import TinyModelConfig
    from spo_helpers.world.traces import TOOL_SHARE
    from spo_helpers.world.warmstart import default_warm_start

    if num_train < 1 or num_val < 0:
        raise ValueError("num_train must be >= 1 and num_val >= 0")
    if not tools and tool_share is not None:
        raise ValueError("tool_share applies to the TIR world only (tools=True)")
    share = float(TOOL_SHARE if tool_share is None else tool_share) if tools else 0.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"tool_share must be within [0, 1], got {share}")
    assets = Path(assets_dir) if assets_dir is not None else default_assets_dir()
    paths = WorldPaths.at(assets / world_name(seed, num_train, tools))
    warm_cfg = warm_start if warm_start is not None else default_warm_start(num_train, seed)
    model_cfg = model_config if model_config is not None else TinyModelConfig()
    settings = {"seed": seed, "num_train": num_train, "num_val": num_val, "warm_cfg": warm_cfg, "model_cfg": model_cfg}
    if tools:
        settings.update(tools=True, tool_share=share)
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
            tools=tools,
            tool_share=share,
        )
        atomic_write_json(WorldPaths.at(tmp).manifest_file, manifest, indent=2)
        if not force and is_complete(paths, **settings):
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build finished first
        else:
            _install(tmp, paths.root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress and tools:  # its summary comes once the tool check (spo world --tools) has measured it
        _say(progress, f"built {paths.root.name}; success with tools: spo world --tools")
    elif progress:
        print(summary(paths), flush=True)
    return paths


__all__ = ["ToolCheckJob", "build_world", "needs_tool_check", "record_tool_check", "tool_check_jobs"]
