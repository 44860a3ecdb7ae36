"""Stage 04: GRPO or SPO training through verl's trainer.

    spo train --method SPO --train_data_dir DIR --offline_values DIR/offline_values.json
    spo train --method GRPO --preset official --model_path Qwen/Qwen3-8B --train_data_dir DIR

The official train.sh variables are flags (and environment variables): OUTPUT_DIR
TRAIN_DATA_DIR MODEL_PATH EXP_NAME METHOD OFFLINE_VALUES RESPONSE_LENGTH N_TRAIN
N_VAL DEBUG VAL_BEFORE_TRAIN. Presets: ``official`` (the final train.sh), ``paper``
(256x8 vs 2048x1, 16K), ``cpu`` (the tiny world, in-process, or on verl's Ray
workers on CPU with ``--backend ray --device cpu``). Anything else is a
Hydra override passed to verl (``key=value``). Outputs, as the official recipe:
``$OUTPUT_DIR/spo/$EXP_NAME/{checkpoints, validation_data, rollout_data,
tensorboard}``, plus ``config.yaml``, ``metrics.jsonl`` and ``steps.jsonl``.
Interrupted runs resume from their newest complete checkpoint (``resume_mode=auto``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from spo_helpers.backends import resolve_backend
from spo_helpers.cli_options import add_common_arguments, env_bool, env_int, parse_bool
from spo_helpers.core.metric_names import SAMPLES_TOTAL, TRAIN_REWARD, VAL_CORE_PREFIX
from spo_helpers.errors import UserError
from spo_helpers.formats.layout import SUBSET_GLOB, RunLayout, subset_files
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.preflight import check_data_files, check_model_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    method: str
    run_dir: Path
    steps: int
    samples: int
    final_reward: float
    validation: dict[str, float]
    seconds: float


def train_files_in(train_data_dir: str | Path) -> list[str]:
    folder = Path(train_data_dir)
    if not folder.is_dir():
        raise UserError(f"TRAIN_DATA_DIR not found: {folder}; pass --train_data_dir the folder `spo split` wrote")
    files = [str(p) for p in subset_files(folder)]
    if not files:
        raise UserError(f"no {SUBSET_GLOB} files in TRAIN_DATA_DIR {folder} (run `spo split` first)")
    return files


def check_offline_values(path: str | None, train_files: list[str], method: str) -> dict[str, int] | None:
    """Before any compute: the file exists, parses, and matches the training prompts."""
    if method != "SPO":
        return None
    if path is None:
        raise UserError(
            "METHOD=SPO needs OFFLINE_VALUES (run `spo estimate` and `spo merge`), "
            "or --offline_values none to start every prompt at the uninformative prior"
        )
    if path.lower() == "none":
        return None
    from spo_helpers.formats.datasets import dataset_prompt_keys, load_dataset_rows
    from spo_helpers.formats.offline_values import coverage, read_offline_values, score_report, stats_match

    values = read_offline_values(path)
    if stats_match(path) is False:
        logger.warning(f"note: {path}: the stats file beside it describes another version of the values")
    keys = [k for f in train_files for k in dataset_prompt_keys(load_dataset_rows(f), f)]
    report = coverage(values, keys)
    if report["with_values"] == 0:
        raise UserError(
            f"{path}: none of its {len(values)} prompts matches the {report['dataset_prompts']} training prompts "
            "(offline values for a different dataset?); pass the values `spo merge` wrote for this training set, "
            "or --offline_values none"
        )
    if report["without_values"]:
        empty = f" ({report['empty_lists']} of them with an empty score list)" if report["empty_lists"] else ""
        logger.warning(
            f"note: {report['without_values']} of {report['dataset_prompts']} training prompts have no offline "
            f"values{empty} and start at the prior (alpha = beta = 0.5); {report['unmatched_values']} value "
            "entries match no training prompt"
        )
    scores = score_report(values)
    if scores["scores_outside_0_1"]:
        logger.warning(
            f"note: {path}: {scores['scores_outside_0_1']} scores lie outside [0, 1]; the tracker binarises them "
            "(score > 0 is a success)"
        )
    return report | scores


def summarise_run(method: str, run_dir: Path, seconds: float) -> TrainSummary:
    records = read_step_log(RunLayout(run_dir).metrics)
    train = [r for r in records if TRAIN_REWARD in r["data"]]
    validation = {}
    for record in records:
        validation.update({k: v for k, v in record["data"].items() if k.startswith(VAL_CORE_PREFIX)})
    last = train[-1]["data"] if train else {}
    return TrainSummary(
        method=method,
        run_dir=run_dir,
        steps=int(train[-1]["step"]) if train else 0,
        samples=int(last.get(SAMPLES_TOTAL, 0) or 0),
        final_reward=float(last.get(TRAIN_REWARD, float("nan")) or float("nan")),
        validation=validation,
        seconds=seconds,
    )


def print_summary(summary: TrainSummary) -> None:
    print(f"\n{summary.method} training: {summary.steps} steps, {summary.samples} samples, {summary.seconds:.0f}s")
    print(f"  final batch reward      {summary.final_reward:.3f}")
    for key, value in sorted(summary.validation.items()):
        print(f"  {key:<40} {value:.3f}")
    print(f"  outputs                 {summary.run_dir}")


def train(
    method: str,
    *,
    output_dir: str = "runs",
    exp_name: str | None = None,
    model_path: str | None = None,
    train_files: list[str] | None = None,
    val_files: list[str] | None = None,
    offline_values: str | None = None,
    preset: str = "cpu",
    backend: str | None = None,
    device: str | None = None,
    response_length: int | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    total_steps: int | None = None,
    debug: bool = False,
    small_batch: bool = False,
    val_before_train: bool | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    dry_run: bool = False,
    assets: str | None = None,
    fresh: bool = False,
    tools: str | None = None,
    schedule: str | None = None,
) -> TrainSummary | str:
    """Train with ``method`` (GRPO or SPO); the Python face of ``spo train``.

    An existing run folder is resumed from its newest complete checkpoint, unless
    ``fresh`` (then it is deleted first). ``tools``: ``sandbox`` (tool-integrated reasoning), ``none`` (math
    only) or ``None`` (the preset's default); on the cpu preset, tools train the CPU world's tool-use variant.
    ``schedule``: ``sync`` (the default), ``stream`` or ``overprovision`` (the ``schedule`` config group).
    """
    from spo_helpers.verl_glue.config import RunSpec, build_config, dry_run_text, tools_on
    from spo_helpers.verl_glue.run_guard import start_run

    method = method.upper()
    uses_tools = tools_on(tools, preset)
    if preset == "cpu" and (not model_path or not train_files or not val_files):
        from spo_helpers.world.build import build_world

        world = build_world(assets, seed=0, tools=uses_tools)
        model_path = model_path or str(world.model_dir)
        train_files = train_files or [str(world.train_file)]
        val_files = val_files or [str(p) for p in world.validation_files]
    if not model_path:
        raise UserError("MODEL_PATH is not set: pass --model_path (a Hugging Face id or local folder)")
    if not train_files:
        raise UserError("no training data: pass --train_data_dir (subset_*.parquet) or --train_files")
    check_model_dir(model_path)
    check_data_files(list(train_files), "training")
    check_data_files(list(val_files or []), "validation")
    if offline_values and offline_values.lower() != "none" and not Path(offline_values).is_file():
        raise UserError(
            f"OFFLINE_VALUES file not found: {offline_values}; run `spo merge` or pass --offline_values none"
        )
    spec = RunSpec(
        method=method,
        preset=preset,
        backend=backend,
        device=device,
        output_dir=output_dir,
        exp_name=exp_name or f"{method.lower()}_{preset}",
        model_path=model_path,
        train_files=list(train_files),
        val_files=list(val_files or []),
        offline_values=None if (offline_values or "").lower() in ("", "none") else offline_values,
        response_length=response_length,
        n_train=n_train,
        n_val=n_val,
        debug=debug,
        small_batch=small_batch,
        val_before_train=val_before_train,
        total_steps=total_steps,
        seed=seed,
        tools=tools,
        overrides=[*([f"schedule={schedule}"] if schedule else []), *(overrides or [])],
    )
    config = build_config(spec)
    check_offline_values(offline_values, train_files, method)
    if dry_run:
        return dry_run_text(spec, config)
    start = time.perf_counter()
    start_run(config, "train", fresh=fresh)
    return summarise_run(method, spec.run_dir, time.perf_counter() - start)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default=os.environ.get("METHOD", "GRPO"), type=str.upper, choices=("GRPO", "SPO"))
    parser.add_argument("--train_data_dir", default=os.environ.get("TRAIN_DATA_DIR"), help="folder of subset_*.parquet")
    parser.add_argument("--train_files", nargs="+", default=None, help="explicit training files")
    parser.add_argument("--val_files", nargs="+", default=None, help="validation files or hub ids")
    parser.add_argument("--offline_values", default=os.environ.get("OFFLINE_VALUES") or None, help="SPO: values JSON")
    parser.add_argument("--n_train", type=int, default=env_int("N_TRAIN"), help="N_TRAIN: responses per prompt")
    parser.add_argument("--total_steps", type=int, default=None, help="trainer.total_training_steps")
    parser.add_argument("--fresh", action="store_true", help="delete an existing run folder instead of resuming it")
    parser.add_argument(
        "--schedule",
        choices=("sync", "stream", "overprovision"),
        default=os.environ.get("SCHEDULE") or None,
        help="SCHEDULE: how rollouts make steps: sync (default), stream or overprovision (tools, cpu backend)",
    )
    parser.add_argument(
        "--val_before_train", type=parse_bool, default=env_bool("VAL_BEFORE_TRAIN"), help="VAL_BEFORE_TRAIN"
    )
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    backend, preset = resolve_backend(args.backend, args.preset, args.device)
    train_files = args.train_files or (train_files_in(args.train_data_dir) if args.train_data_dir else None)
    result = train(
        args.method,
        output_dir=args.output_dir or "runs",
        exp_name=args.exp_name,
        model_path=args.model_path,
        train_files=train_files,
        val_files=args.val_files,
        offline_values=args.offline_values,
        preset=preset,
        backend=backend,
        device=args.device,
        response_length=args.response_length,
        n_train=args.n_train,
        n_val=args.n_val,
        total_steps=args.total_steps,
        debug=args.debug,
        small_batch=args.small_batch,
        val_before_train=args.val_before_train,
        seed=args.seed,
        tools=args.tools,
        schedule=args.schedule,
        overrides=args.overrides,
        dry_run=args.dry_run,
        assets=args.assets,
        fresh=args.fresh,
    )
    if isinstance(result, str):
        print(result)
    else:
        print_summary(result)
    return 0
