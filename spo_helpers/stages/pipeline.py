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

The notebooks run on this Python interpreter (the one running ``spo``), whatever
Jupyter kernels are installed; ``--kernel NAME`` picks an installed kernel instead.
The notebook templates ship inside the package (``spo_helpers.notebooks``, from the
repository's ``notebooks/``); ``SPO_NOTEBOOKS`` points at another folder of them. Templates
that a notebook session saved into (outputs, widget state) are refused: users explore copies
(``spo notebooks``), so what the pipeline runs is what was committed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spo_helpers.errors import UserError, report_error
from spo_helpers.formats.atomic import atomic_write_json
from spo_helpers.formats.layout import PipelineLayout
from spo_helpers.formats.notebook_templates import STAGES, notebooks_dir, restore_hint, template_problems

logger = logging.getLogger(__name__)

INTERPRETER_KERNEL = "spo-interpreter"
"""The kernel name that stands for this Python interpreter (no installed kernelspec needed)."""


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
    tools: str | None = None  # sandbox | none; None: the preset's default (official: sandbox; cpu: none)
    overrides: list[str] = field(default_factory=list)
    kernel: str | None = None  # an installed Jupyter kernel; default: this Python interpreter

    @property
    def root(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def layout(self) -> PipelineLayout:
        return PipelineLayout(self.root)

    @property
    def preset(self) -> str:
        return "official" if self.gpu else "cpu"

    @property
    def backend(self) -> str:
        return "ray" if self.gpu else "cpu"


def check_templates(folder: Path) -> None:
    """Refuse templates a JupyterLab session saved into (outputs, execution counts, widget state): the pipeline
    would run whatever was edited and saved there. Users explore copies (``spo notebooks``)."""
    problems = template_problems(folder)
    if problems:
        raise UserError(
            f"the notebook templates were saved from a notebook session ({'; '.join(problems)}), so the pipeline "
            f"would run what was edited there: {restore_hint(folder)}, and explore copies (spo notebooks)"
        )


def interpreter_kernel_manager_class():
    """A Jupyter kernel manager that starts ``INTERPRETER_KERNEL`` as ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from traitlets import default

    class InterpreterKernelSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name == INTERPRETER_KERNEL:
                return KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python ({sys.executable})",
                    language="python",
                )
            return super().get_kernel_spec(kernel_name)

    class InterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _interpreter_kernel_specs(self) -> KernelSpecManager:
            return InterpreterKernelSpecManager(data_dir=self.data_dir)

    return InterpreterKernelManager


def kernel_arguments(kernel: str | None) -> dict[str, Any]:
    """papermill's kernel arguments: ``kernel`` by name, or (None) this interpreter."""
    if kernel:
        return {"kernel_name": kernel}
    if importlib.util.find_spec("ipykernel") is None:
        raise UserError(
            f"ipykernel is not installed for {sys.executable}: install the notebooks extra "
            "(pip install 'spo-helpers[notebooks]'), or pass --kernel NAME (`jupyter kernelspec list`)"
        )
    return {
        "kernel_name": INTERPRETER_KERNEL,
        "language": "python",
        "kernel_manager_class": interpreter_kernel_manager_class(),
    }


def stage_parameters(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    layout = PipelineLayout(cfg.root.resolve())
    root, splits, values = layout.root, layout.splits, layout.offline_values
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
            "tools": cfg.tools,
            **common,
        },
        "03_merge": {"input_dir": str(layout.runs), "output_file": str(values), "dataset_dir": str(splits)},
        "04_train": {
            "methods": list(cfg.methods),
            "train_data_dir": str(splits),
            "offline_values": str(values),
            "output_dir": str(root),
            "model_path": cfg.model_path,
            "total_steps": cfg.total_steps,
            "backend": cfg.backend,
            "preset": cfg.preset,
            "tools": cfg.tools,
            "overrides": list(cfg.overrides),
            **common,
        },
        "05_analysis": {"run_paths": [str(root)], "output_dir": str(layout.figures)},
    }


def stage_outputs(cfg: PipelineConfig, stage: str) -> list[Path]:
    """Files whose presence means the stage finished."""
    layout = cfg.layout
    if stage == "01_split":
        return [layout.split_manifest]
    if stage == "02_estimate":
        return [layout.estimation_run(i).estimation_dump for i in range(cfg.num_subsets)]
    if stage == "03_merge":
        return [layout.offline_values]
    if stage == "04_train":
        return [layout.training_run(m, cfg.preset).metrics for m in cfg.methods]
    return [layout.figures]


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


def _load_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_pipeline(
    cfg: PipelineConfig,
    *,
    force: bool = False,
    stages: tuple[str, ...] = STAGES,
    report: Callable[[str], None] = logger.info,
) -> dict[str, str]:
    """Run (or skip) each stage; returns stage -> 'ran' | 'skipped'. ``report`` gets one line per stage."""
    try:
        import papermill as pm
    except ImportError:
        raise UserError("spo pipeline needs papermill: install the notebooks extra (spo-helpers[notebooks])") from None

    source = notebooks_dir()
    check_templates(source)
    kernel = kernel_arguments(cfg.kernel)
    os.environ["SPO_HEADLESS"] = "1"  # the kernels inherit it: explorers draw static figures
    layout = cfg.layout
    layout.notebooks.mkdir(parents=True, exist_ok=True)
    record = _load_record(layout.record)
    params = stage_parameters(cfg)
    status: dict[str, str] = {}
    for stage in stages:
        key = fingerprint(stage_inputs(cfg, stage), params[stage])
        done = record.get(stage, {})
        if not force and done.get("fingerprint") == key and all(p.exists() for p in stage_outputs(cfg, stage)):
            report(f"[{stage}] up to date, skipped")
            status[stage] = "skipped"
            continue
        report(f"[{stage}] running {stage}.ipynb")
        # Changed inputs or --force: start afresh. No record, or an interrupted attempt with the same
        # inputs ("started"): resume.
        fresh = force or (bool(done) and done.get("started") != key)
        # Until the stage finishes, its record says only that it started: a failed attempt may have
        # overwritten the outputs, so the stage is never skipped on the strength of an older run.
        record[stage] = {"started": key}
        atomic_write_json(layout.record, record, indent=2)
        stage_params = dict(params[stage], **({"fresh": fresh} if stage in ("02_estimate", "04_train") else {}))
        start = time.perf_counter()
        output = layout.notebooks / f"{stage}.ipynb"
        try:
            pm.execute_notebook(
                str(source / f"{stage}.ipynb"),
                str(output),
                parameters=stage_params,
                progress_bar=sys.stderr.isatty(),
                cwd=str(Path.cwd()),
                **kernel,
            )
        except pm.PapermillExecutionError as err:
            raise PipelineStageFailed(stage, output, err) from None
        record[stage] = {"fingerprint": key, "seconds": round(time.perf_counter() - start, 1), "finished": time.time()}
        atomic_write_json(layout.record, record, indent=2)
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
    parser.add_argument(
        "--tools", choices=("sandbox", "none"), default=None, help="stages 02 and 04; default: the preset's"
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=None, help="run only these stages")
    parser.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    parser.add_argument(
        "--kernel", default=None, help="installed Jupyter kernel to run the notebooks on (default: this Python)"
    )
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
        status = run_pipeline(cfg, force=args.force, stages=tuple(args.stages or STAGES), report=print)
    except PipelineStageFailed as err:
        return report_error("spo pipeline", err, exit_code=1)
    elapsed = time.perf_counter() - start
    print(f"\npipeline {cfg.name}: {', '.join(f'{k} {v}' for k, v in status.items())} in {elapsed / 60:.1f} min")
    print(f"executed notebooks: {cfg.layout.notebooks}")
    print(f"figures:            {cfg.layout.figures}")
    return 0
