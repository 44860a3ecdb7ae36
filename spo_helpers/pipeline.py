"""The whole pipeline, 01 -> 05, as papermill-executed notebooks.

    spo pipeline                      # the CPU demo into runs/demo/
    spo pipeline --name exp1 --config pipeline.yaml --force
    spo pipeline --gpu --model_path Qwen/Qwen3-8B --dataset open-r1/DAPO-Math-17k-Processed

Each stage runs its notebook with papermill into ``runs/<name>/notebooks/`` (the
executed notebooks are the record of the run). A stage is skipped when its outputs
exist and its inputs did not change: ``runs/<name>/pipeline.json`` records, per
stage, the parameters and the checksums of its input files. ``--force`` reruns
everything. A failing cell stops the pipeline with the notebook, the cell and the
error, and exit code 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_json

STAGES = ("01_split", "02_estimate", "03_merge", "04_train", "05_analysis")
RECORD = "pipeline.json"


@dataclass
class PipelineConfig:
    """Parameters of the whole pipeline; each stage's notebook gets the ones it names."""

    name: str = "demo"
    runs_dir: str = "runs"
    gpu: bool = False
    dataset: str | None = None  # default: the CPU world's training set (GPU: the official DAPO data)
    model_path: str | None = None  # default: the CPU world's tiny model
    assets: str | None = None
    num_subsets: int = 5
    n_val: int = 8
    methods: list[str] = field(default_factory=lambda: ["GRPO", "SPO"])
    total_steps: int = 30
    seed: int = 0
    overrides: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def preset(self) -> str:
        return "official" if self.gpu else "cpu"

    @property
    def backend(self) -> str:
        return "ray" if self.gpu else "cpu"


def notebooks_dir() -> Path:
    env = os.environ.get("SPO_NOTEBOOKS")
    folder = Path(env) if env else Path(__file__).resolve().parent.parent / "notebooks"
    if not (folder / f"{STAGES[0]}.ipynb").is_file():
        raise UserError(f"pipeline notebooks not found in {folder} (set SPO_NOTEBOOKS to the kit's notebooks/ folder)")
    return folder


def stage_parameters(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    root = cfg.root.resolve()
    splits = root / "splits"
    values = root / "offline_values.json"
    common = {"seed": cfg.seed, "assets": cfg.assets}
    dataset = cfg.dataset or ("open-r1/DAPO-Math-17k-Processed" if cfg.gpu else None)
    return {
        "01_split": {"dataset": dataset, "output_dir": str(splits), "num_subsets": cfg.num_subsets, **common},
        "02_estimate": {
            "data_dir": str(splits),
            "output_dir": str(root),
            "model_path": cfg.model_path,
            "n_val": cfg.n_val,
            "backend": cfg.backend,
            "preset": cfg.preset,
            **common,
        },
        "03_merge": {"input_dir": str(root / "spo"), "output_file": str(values), "dataset_dir": str(splits)},
        "04_train": {
            "methods": list(cfg.methods),
            "train_data_dir": str(splits),
            "offline_values": str(values),
            "output_dir": str(root),
            "model_path": cfg.model_path,
            "total_steps": cfg.total_steps,
            "backend": cfg.backend,
            "preset": cfg.preset,
            "overrides": list(cfg.overrides),
            **common,
        },
        "05_analysis": {"run_paths": [str(root)], "output_dir": str(root / "figures")},
    }


def stage_outputs(cfg: PipelineConfig, stage: str) -> list[Path]:
    """Files whose presence means the stage finished."""
    root = cfg.root
    if stage == "01_split":
        return [root / "splits" / "split_manifest.json"]
    if stage == "02_estimate":
        return [
            root / "spo" / f"offline_value_estimation_subset_{i}" / "validation_data" / "0.jsonl"
            for i in range(cfg.num_subsets)
        ]
    if stage == "03_merge":
        return [root / "offline_values.json"]
    if stage == "04_train":
        return [root / "spo" / f"{m.lower()}_{cfg.preset}" / "metrics.jsonl" for m in cfg.methods]
    return [root / "figures"]


def stage_inputs(cfg: PipelineConfig, stage: str) -> list[Path]:
    """Files whose content decides whether a finished stage is still valid."""
    index = STAGES.index(stage)
    return [] if index == 0 else stage_outputs(cfg, STAGES[index - 1])


def fingerprint(paths: list[Path], parameters: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.name).encode())
            digest.update(file.read_bytes() if file.exists() else b"<missing>")
    return digest.hexdigest()


def _load_record(root: Path) -> dict[str, Any]:
    path = root / RECORD
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_pipeline(cfg: PipelineConfig, *, force: bool = False, stages: tuple[str, ...] = STAGES) -> dict[str, str]:
    """Run (or skip) each stage; returns stage -> 'ran' | 'skipped'."""
    import papermill as pm

    source = notebooks_dir()
    os.environ["SPO_HEADLESS"] = "1"  # the kernels inherit it: explorers draw static figures
    root = cfg.root
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    record = _load_record(root)
    params = stage_parameters(cfg)
    status: dict[str, str] = {}
    for stage in stages:
        key = fingerprint(stage_inputs(cfg, stage), params[stage])
        done = record.get(stage, {})
        if not force and done.get("fingerprint") == key and all(p.exists() for p in stage_outputs(cfg, stage)):
            print(f"[{stage}] up to date, skipped")
            status[stage] = "skipped"
            continue
        print(f"[{stage}] running notebooks/{stage}.ipynb")
        # Changed inputs or --force: start afresh. No record, or an interrupted attempt with the same
        # inputs ("started"): resume.
        fresh = force or (bool(done) and done.get("started") != key)
        # Until the stage finishes, its record says only that it started: a failed attempt may have
        # overwritten the outputs, so the stage is never skipped on the strength of an older run.
        record[stage] = {"started": key}
        atomic_write_json(root / RECORD, record, indent=2)
        stage_params = dict(params[stage], **({"fresh": fresh} if stage in ("02_estimate", "04_train") else {}))
        start = time.perf_counter()
        output = root / "notebooks" / f"{stage}.ipynb"
        try:
            pm.execute_notebook(
                str(source / f"{stage}.ipynb"),
                str(output),
                parameters=stage_params,
                progress_bar=sys.stderr.isatty(),
                cwd=str(Path.cwd()),
                kernel_name="python3",
            )
        except pm.PapermillExecutionError as err:
            raise PipelineStageFailed(stage, output, err) from None
        record[stage] = {"fingerprint": key, "seconds": round(time.perf_counter() - start, 1), "finished": time.time()}
        atomic_write_json(root / RECORD, record, indent=2)
        status[stage] = "ran"
    return status


class PipelineStageFailed(RuntimeError):
    def __init__(self, stage: str, notebook: Path, err: Exception) -> None:
        cell = getattr(err, "exec_count", "?")
        super().__init__(
            f"stage {stage} failed in cell [{cell}] of {notebook}: {getattr(err, 'ename', '')}: "
            f"{getattr(err, 'evalue', err)}"
        )


def load_config_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"pipeline config not found: {p}; check the --config path")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of pipeline parameters")
    unknown = set(data) - set(PipelineConfig.__dataclass_fields__)
    if unknown:
        raise UserError(f"{p}: unknown pipeline parameters {sorted(unknown)}")
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML file of pipeline parameters (flags win)")
    parser.add_argument("--name", default=None, help="run name: outputs go to runs/<name>/ (default demo)")
    parser.add_argument("--runs_dir", default=None)
    parser.add_argument("--gpu", action="store_true", default=None, help="verl's Ray workers and the official presets")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--assets", default=None)
    parser.add_argument("--num_subsets", type=int, default=None)
    parser.add_argument("--n_val", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--total_steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=None, help="run only these stages")
    parser.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the training stage")


def run(args: argparse.Namespace) -> int:
    values = load_config_file(args.config)
    for name in PipelineConfig.__dataclass_fields__:
        flag = getattr(args, name, None)
        if flag not in (None, []):
            values[name] = flag
    cfg = PipelineConfig(**values)
    start = time.perf_counter()
    try:
        status = run_pipeline(cfg, force=args.force, stages=tuple(args.stages or STAGES))
    except PipelineStageFailed as err:
        print(f"spo pipeline: error: {err}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print(f"\npipeline {cfg.name}: {', '.join(f'{k} {v}' for k, v in status.items())} in {elapsed / 60:.1f} min")
    print(f"executed notebooks: {cfg.root / 'notebooks'}")
    print(f"figures:            {cfg.root / 'figures'}")
    return 0
