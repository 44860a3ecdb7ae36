"""The whole pipeline, 01 -> 05, as papermill-executed notebooks (how stages are skipped, resumed and rerun,
and which kernel runs them: docs/pipeline.md).
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
from dataclasses import dataclass, field, fields
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


def encrypting_kernel_manager_class():
    """jupyter_client's ``AsyncKernelManager``, giving the kernel CurveZMQ keys when its kernel spec declares support
    (``metadata.supported_encryption``, as ipykernel's does) and jupyter_client and pyzmq can provision them.

    A kernel on plain TCP logs ipykernel's warning "Kernel is running over TCP without encryption" into every
    stage's output; an encrypted one does not. Older jupyter_client releases have no ``transport_encryption`` and
    older ipykernel releases neither encrypt nor warn: this class is then the plain manager.
    """
    import zmq
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class EncryptingKernelManager(AsyncKernelManager):
        if "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has("curve"):

            @default("transport_encryption")
            def _encrypt_when_supported(self) -> str:
                return "auto"

    return EncryptingKernelManager


def interpreter_kernel_manager_class():
    """A kernel manager (``encrypting_kernel_manager_class``) that starts ``INTERPRETER_KERNEL`` as ipykernel's own
    kernel spec for ``sys.executable`` (``sys.executable -m ipykernel_launcher``)."""
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from traitlets import default

    class InterpreterKernelSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name == INTERPRETER_KERNEL:
                spec = get_kernel_dict()
                return KernelSpec(
                    argv=spec["argv"],
                    display_name=f"Python ({sys.executable})",
                    language=spec["language"],
                    metadata=spec.get("metadata", {}),
                )
            return super().get_kernel_spec(kernel_name)

    class InterpreterKernelManager(encrypting_kernel_manager_class()):
        @default("kernel_spec_manager")
        def _interpreter_kernel_specs(self) -> KernelSpecManager:
            return InterpreterKernelSpecManager(data_dir=self.data_dir)

    return InterpreterKernelManager


def kernel_arguments(kernel: str | None) -> dict[str, Any]:
    """papermill's kernel arguments: ``kernel`` by name, or (None) this interpreter."""
    if kernel:
        return {"kernel_name": kernel, "kernel_manager_class": encrypting_kernel_manager_class()}
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


RERUN_PARAMETER = {"02_estimate": "force", "04_train": "fresh"}
"""The setting that makes a verl stage start afresh (``EstimateSettings.force``, ``TrainSettings.fresh``)."""


def verl_stage_parameters(cls: type, parameters: dict[str, Any], own: tuple[str, ...] = ()) -> dict[str, Any]:
    """``parameters`` for a verl stage's notebook, each one a setting of ``cls`` (``run_settings``) or one of the
    notebook's ``own``, checked as the command line checks its flags."""
    from spo_helpers.run_settings import check_parameters

    unknown = sorted(set(parameters) - {f.name for f in fields(cls)} - set(own))
    if unknown:
        raise UserError(f"{', '.join(unknown)}: not settings of {cls.__name__}")
    check_parameters(cls, parameters)
    return parameters


def stage_parameters(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The parameters papermill gives each stage's notebook; the verl stages' are their settings."""
    from spo_helpers.run_settings import EstimateSettings, TrainSettings

    layout = PipelineLayout(cfg.root.resolve())
    root, splits, values = layout.root, layout.splits, layout.offline_values
    common = {"seed": cfg.seed, "assets": cfg.assets}
    from spo_helpers.stages.split import OFFICIAL_DATASET

    dataset = cfg.dataset or (OFFICIAL_DATASET if cfg.gpu else None)
    verl = {
        "output_dir": str(root),
        "model_path": cfg.model_path,
        "backend": cfg.backend,
        "preset": cfg.preset,
        "tools": cfg.tools,
        **common,
    }
    estimate = {"data_dir": str(splits), "n_val": cfg.n_val, **verl}
    train = {
        "methods": list(cfg.methods),
        "train_data_dir": str(splits),
        "offline_values": str(values),
        "total_steps": cfg.total_steps,
        "overrides": list(cfg.overrides),
        **verl,
    }
    return {
        "01_split": {"dataset": dataset, "output_dir": str(splits), "num_subsets": cfg.num_subsets, **common},
        "02_estimate": verl_stage_parameters(EstimateSettings, estimate),
        "03_merge": {"input_dir": str(layout.runs), "output_file": str(values), "dataset_dir": str(splits)},
        "04_train": verl_stage_parameters(TrainSettings, train, own=("methods",)),
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
        rerun = RERUN_PARAMETER.get(stage)
        stage_params = dict(params[stage], **({rerun: fresh} if rerun else {}))
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


USAGE = """\
  spo pipeline                           # the CPU demo into runs/demo/
  spo pipeline --name exp1 --config pipeline.yaml --force
  spo pipeline --gpu --model_path Qwen/Qwen3-8B --dataset open-r1/DAPO-Math-17k-Processed

Details: docs/pipeline.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PipelineConfig()
    parser.add_argument("--config", metavar="FILE", default=None, help="YAML file of pipeline parameters (flags win)")
    parser.add_argument("--name", default=None, help=f"run name: outputs go to runs/<name>/ (default {d.name})")
    parser.add_argument("--runs_dir", metavar="DIR", default=None, help=f"(default {d.runs_dir})")
    parser.add_argument("--gpu", action="store_true", default=None, help="verl's Ray workers and the official presets")
    parser.add_argument(
        "--dataset", metavar="ID_OR_PATH", default=None, help="(default: the CPU world's, or DAPO's with --gpu)"
    )
    parser.add_argument("--model_path", metavar="PATH", default=None, help="(default: the CPU world's)")
    parser.add_argument("--assets", metavar="DIR", default=None, help="the CPU world's cache")
    parser.add_argument("--num_subsets", metavar="N", type=int, default=None, help=f"(default {d.num_subsets})")
    parser.add_argument("--n_val", metavar="N", type=int, default=None, help=f"(default {d.n_val})")
    parser.add_argument("--methods", metavar="M", nargs="+", default=None, help=f"(default {' '.join(d.methods)})")
    parser.add_argument("--total_steps", metavar="N", type=int, default=None, help=f"(default {d.total_steps})")
    parser.add_argument("--seed", metavar="N", type=int, default=None, help=f"(default {d.seed})")
    parser.add_argument(
        "--tools", choices=("sandbox", "none"), default=None, help="stages 02 and 04; default: the preset's"
    )
    parser.add_argument(
        "--stages",
        metavar="STAGE",
        nargs="+",
        choices=STAGES,
        default=None,
        help=f"run only these ({STAGES[0]} ... {STAGES[-1]})",
    )
    parser.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    parser.add_argument(
        "--kernel", metavar="NAME", default=None, help="installed Jupyter kernel to run on (default: this Python)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides for the training stage")


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
