"""Hydra entry point: ``python -m spo_helpers.verl_glue.main preset=… method=… key=value ...``.

The kit's counterpart of verl's ``python -m verl.trainer.main_ppo``, and the command ``spo train --dry-run``
prints. A Hydra app over the kit's config folder (``kit_trainer.yaml``: verl's ``ppo_trainer`` plus the SPO
keys, with the ``preset`` and ``method`` config groups), so Hydra's own options work:

    python -m spo_helpers.verl_glue.main --help                              # groups and examples
    python -m spo_helpers.verl_glue.main preset=cpu method=spo --cfg job     # the composed config
    python -m spo_helpers.verl_glue.main preset=cpu method=spo trainer.total_training_steps=30
    python -m spo_helpers.verl_glue.main -m preset=cpu method=grpo,spo       # a sweep, one job each

A run's Hydra record (``.hydra/``, ``main.log``) goes to its run folder (``hydra.run.dir`` moves it). In a
sweep, a job that names no run folder of its own (``kit.run_dir``, ``kit.output_dir`` or
``trainer.experiment_name``) runs in its Hydra sweep folder, so jobs never resume each other.
``kit.dry_run=true`` prints the resolved config and stops. Without a model or training files, the ``cpu``
preset uses the CPU world's (built on first use, like ``spo train``).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from spo_helpers import cpu_threads
from spo_helpers.errors import USER_ERRORS, report_error
from spo_helpers.verl_glue.config import CONFIG_DIR, CONFIG_NAME, finalise

logger = logging.getLogger(__name__)

APP = "python -m spo_helpers.verl_glue.main"

RUN_FOLDER_KEYS = ("kit.run_dir", "kit.output_dir", "trainer.experiment_name")


def use_cpu_world(config: DictConfig) -> DictConfig:
    """The ``cpu`` preset without a model or training files: the CPU world's (with tools: its tool-use
    variant), as ``spo train`` does."""
    if config.kit.preset != "cpu":
        return config
    model_missing = OmegaConf.is_missing(config.actor_rollout_ref.model, "path")
    train_missing = OmegaConf.is_missing(config.data, "train_files")
    if not (model_missing or train_missing):
        return config
    from spo_helpers.verl_glue.agent_loop.settings import tools_enabled
    from spo_helpers.world.build import build_world

    world = build_world(None, seed=0, tools=tools_enabled(config.actor_rollout_ref.rollout))
    logger.info("cpu preset: using the CPU world in %s", world.model_dir.parent)
    if model_missing:
        config.actor_rollout_ref.model.path = str(world.model_dir)
    if train_missing:
        config.data.train_files = [str(world.train_file)]
        if config.kit.method != "EVAL" and OmegaConf.is_interpolation(config.data, "val_files"):
            config.data.val_files = [str(p) for p in world.validation_files]
    return config


def use_sweep_folder(config: DictConfig) -> DictConfig:
    """In a sweep (``-m``), a job without a run folder of its own runs in its Hydra sweep folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return config
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return config
    named = {o.split("=", 1)[0].lstrip("+~") for o in hydra_config.overrides.task}
    if not named.intersection(RUN_FOLDER_KEYS):
        config.kit.run_dir = hydra_config.runtime.output_dir
    return config


def run(config: DictConfig) -> None:
    """Resolve ``config`` and run it, or only print it (``kit.dry_run``).

    A run goes through ``start_run``, as ``spo train`` and ``spo estimate`` do: the run folder's lock, the
    identity check on resume, ``config.yaml``, then training.
    """
    on_cpu = config.kit.backend == "cpu" or config.trainer.get("device", "cuda") == "cpu"
    cpu_threads.apply_unless_gpu(on_cpu=on_cpu)  # before torch loads (the CPU world, the trainer)
    config = finalise(use_cpu_world(use_sweep_folder(config)))
    if config.kit.dry_run:
        print(OmegaConf.to_yaml(config))
        return
    from spo_helpers.verl_glue.run_guard import start_run

    start_run(config, "estimate" if config.kit.method == "EVAL" else "train")


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base=None)
def main(config: DictConfig) -> None:
    """``python -m spo_helpers.verl_glue.main``: compose, resolve, train.

    A ``UserError`` (a config the kit refuses, such as ``trainer.device=cpu`` with a GPU preset) or a missing
    path is printed as the one line ``spo`` prints (``errors.report_error``), and the app exits with code 2.
    """
    try:
        run(config)
    except USER_ERRORS as err:
        raise SystemExit(report_error(APP, err)) from None


if __name__ == "__main__":
    main()
