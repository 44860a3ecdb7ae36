"""Build and run a kit trainer from a composed config, on either backend.

The steps are verl's ``TaskRunner.run`` steps (tokenizer, reward managers,
datasets, sampler, worker mapping, config validation), done with verl's own
functions, but constructing the kit's ``GRPOTrainer`` / ``SPOTrainer``:

- ``cpu``: everything in this process, no Ray;
- ``ray``: inside a Ray actor, like verl (``run_ppo`` with the kit's task runner),
  so the driver loop runs where verl expects it and the workers are verl's FSDP +
  vLLM actors on the GPU nodes, or verl's FSDP actors on CPU with
  ``trainer.device=cpu`` (the CPU mode: ``ray_cpu``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from spo_helpers.errors import UserError
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import write_run_config
from spo_helpers.process_tree import die_with_parent
from spo_helpers.verl_glue.ray_cpu.settings import RayCPUSettings, is_ray_cpu

logger = logging.getLogger(__name__)

TENSORBOARD_ENV = "TENSORBOARD_DIR"
"""verl's tensorboard backend writes its event files here; the kit points it at ``<run>/tensorboard``."""

RAY_DEBUG_ENV = {"RAY_DEBUG": "legacy"}
"""``trainer.debug=True`` (DEBUG): Ray's legacy debugger in every Ray process, as the official ``spo_main_ppo.py``
sets it (``ray debug`` attaches to a ``breakpoint()`` in a worker)."""


def add_ray_debug_env(config: DictConfig) -> bool:
    """With ``trainer.debug``, put ``RAY_DEBUG_ENV`` into ``ray_kwargs.ray_init.runtime_env.env_vars`` (where verl's
    ``run_ppo`` and the CPU mode's start read the runtime env); returns whether it did."""
    if not config.trainer.get("debug", False):
        return False
    with open_dict(config):
        for name, value in RAY_DEBUG_ENV.items():
            OmegaConf.update(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{name}", value, force_add=True)
    return True


def _role_mapping(config: DictConfig):
    """Worker classes per role and the resource pool manager (verl's names)."""
    from verl.trainer.ppo.ray_trainer import ResourcePoolManager
    from verl.trainer.ppo.utils import Role

    if is_ray_cpu(config):
        from spo_helpers.verl_glue.ray_cpu.launch import role_mapping

        return role_mapping(config)
    if config.kit.backend == "cpu":
        from spo_helpers.verl_glue.cpu_backend import CPUActorRolloutWorkerGroup

        mapping = {Role.ActorRollout: CPUActorRolloutWorkerGroup}
        if config.actor_rollout_ref.actor.use_kl_loss:
            mapping[Role.RefPolicy] = CPUActorRolloutWorkerGroup
        manager = ResourcePoolManager(
            resource_pool_spec={"global_pool": [1]}, mapping={Role.ActorRollout: "global_pool"}
        )
        return mapping, manager, None

    from verl.trainer.main_ppo import TaskRunner

    runner = TaskRunner()
    _, worker_group_cls = runner.add_actor_rollout_worker(config)
    runner.add_critic_worker(config)
    runner.add_reward_model_worker(config)
    actor_cls = runner.role_worker_mapping[Role.ActorRollout]
    runner.add_ref_policy_worker(
        config, actor_cls.__ray_actor_class__ if hasattr(actor_cls, "__ray_actor_class__") else actor_cls
    )
    return runner.role_worker_mapping, runner.init_resource_pool_mgr(config), worker_group_cls


def build_trainer(config: DictConfig, init_workers: bool = True):
    """The kit trainer for ``config.kit.method``, with workers initialised unless ``init_workers`` is False."""
    from verl.trainer.main_ppo import create_rl_dataset, create_rl_sampler
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.config import validate_config
    from verl.utils.dataset.rl_dataset import collate_fn
    from verl.utils.fs import copy_to_local

    from spo_helpers.verl_glue.grpo_trainer import GRPOTrainer
    from spo_helpers.verl_glue.spo_trainer import SPOTrainer

    validation = ", then validation before training" if config.trainer.get("val_before_train", True) else ""
    if config.trainer.get("val_only", False):
        validation = ", then the validation"
    logger.info("%s: setting up verl's trainer (tokenizer, data, model%s)", config.trainer.experiment_name, validation)
    mapping, pool_manager, worker_group_cls = _role_mapping(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(mapping), use_critic=need_critic(config))
    local_path = copy_to_local(config.actor_rollout_ref.model.path)
    trust = config.data.get("trust_remote_code", False)
    tokenizer = hf_tokenizer(local_path, trust_remote_code=trust)
    processor = hf_processor(local_path, trust_remote_code=trust, use_fast=True)
    reward_kwargs = config.reward_model.get("reward_kwargs", {})
    reward_fn = load_reward_manager(config, tokenizer, num_examine=0, **reward_kwargs)
    val_reward_fn = load_reward_manager(config, tokenizer, num_examine=0, **reward_kwargs)
    # data.train_max_samples / val_max_samples: the first N rows, as verl's TaskRunner reads them (main_ppo.py:304-319)
    train_dataset = create_rl_dataset(
        config.data.train_files,
        config.data,
        tokenizer,
        processor,
        is_train=True,
        max_samples=int(config.data.get("train_max_samples", -1)),
    )
    val_dataset = create_rl_dataset(
        config.data.val_files,
        config.data,
        tokenizer,
        processor,
        is_train=False,
        max_samples=int(config.data.get("val_max_samples", -1)),
    )
    if int(config.data.gen_batch_size) > len(train_dataset) >= int(config.data.train_batch_size):
        # A candidate pool larger than the data set is the whole data set (verl's loader would be empty: the
        # official recipe trains 0 steps then).
        logger.warning(
            "data.gen_batch_size=%d is larger than the %d training prompts: the candidate pool is the whole data set",
            int(config.data.gen_batch_size),
            len(train_dataset),
        )
        with open_dict(config):
            config.data.gen_batch_size = len(train_dataset)
    trainer_cls = SPOTrainer if config.kit.method == "SPO" else GRPOTrainer
    kwargs = {"ray_worker_group_cls": worker_group_cls} if worker_group_cls is not None else {}
    trainer = trainer_cls(
        config=config,
        tokenizer=tokenizer,
        processor=processor,
        role_worker_mapping=mapping,
        resource_pool_manager=pool_manager,
        reward_fn=reward_fn,
        val_reward_fn=val_reward_fn,
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        collate_fn=collate_fn,
        train_sampler=create_rl_sampler(config.data, train_dataset),
        device_name="cpu" if config.kit.backend == "cpu" else None,
        **kwargs,
    )
    if init_workers:
        trainer.init_workers()
    return trainer


def record_run_config(config: DictConfig, stage: str, extra: dict | None = None) -> Path:
    """``$run_dir/config.yaml`` (``formats.run_config``): the resolved config, seeds, package versions and the
    thread policy it runs with (``threads``: this process's, and the Ray CPU workers' where it has them)."""
    from importlib.metadata import PackageNotFoundError, version

    from spo_helpers import cpu_threads

    versions = {}
    for package in ("spo-helpers", "verl", "torch", "transformers", "vllm", "ray"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    workers = None
    if is_ray_cpu(config):
        from spo_helpers.verl_glue.ray_cpu.launch import worker_thread_env

        workers = worker_thread_env(RayCPUSettings.from_config(config))
    return write_run_config(
        config.kit.run_dir,
        OmegaConf.to_container(config, resolve=True, enum_to_str=True),
        stage=stage,
        versions=versions,
        threads=cpu_threads.record(workers=workers),
        extra=extra,
    )


@contextlib.contextmanager
def quiet_verl(log_path: Path):
    """verl's prints go to ``log_path``; progress bars (stderr) and errors stay on screen.

    ``SPO_VERBOSE=1`` shows everything.
    """
    if os.environ.get("SPO_VERBOSE", "") not in ("", "0"):
        yield
        return
    import datasets

    log_path.parent.mkdir(parents=True, exist_ok=True)
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), warnings.catch_warnings():
        for pattern in NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            if bars:
                datasets.enable_progress_bars()


NOISY_WARNINGS = (
    ".*Disabled critic.*",
    ".*set_vital.*",
    ".*CPU Autocast only supports.*",
    ".*In CPU autocast.*",
    ".*Torch profiler tool config.*",
    ".*torch_dtype.*is deprecated.*",
)


class KitTaskRunner:
    """What verl's ``TaskRunner`` does in its Ray actor, with the kit's trainers.

    The actor may start on another node, outside the driver's environment: ``tensorboard_dir`` (set per run
    by ``run_training``) becomes its ``TENSORBOARD_DIR``. When the run ends, however it ends, its placement
    groups are removed, so the next run in the same driver (the next subset of ``spo estimate``) gets the
    resources.
    """

    tensorboard_dir: str | None = None

    def run(self, config: DictConfig) -> None:
        from spo_helpers.verl_glue.ray_cpu.resources import release_resource_pools
        from spo_helpers.verl_glue.tool_sandbox import check_run_reach

        if self.tensorboard_dir:
            os.environ[TENSORBOARD_ENV] = self.tensorboard_dir
        OmegaConf.resolve(config)
        check_run_reach(config, on_ray=True)  # one program from each node, before any worker starts
        trainer = build_trainer(config, init_workers=False)
        try:
            trainer.init_workers()
            trainer.fit()
        finally:
            release_resource_pools(trainer.resource_pool_manager)


@contextlib.contextmanager
def tensorboard_dir(layout: RunLayout):
    """``TENSORBOARD_DIR`` for one run: the user's when set, else the run's ``tensorboard/`` while it runs.

    The kit's value is removed afterwards, so the next run in the same process gets its own folder.
    """
    if os.environ.get(TENSORBOARD_ENV):
        yield Path(os.environ[TENSORBOARD_ENV])
        return
    os.environ[TENSORBOARD_ENV] = str(layout.tensorboard)
    try:
        yield layout.tensorboard
    finally:
        os.environ.pop(TENSORBOARD_ENV, None)


def run_training(config: DictConfig) -> None:
    """Run ``config`` to completion on its backend (``kit.backend``)."""
    from spo_helpers.verl_glue.tool_sandbox import check_run_reach, sandbox_for_run

    die_with_parent()  # worker pools forked while loading data end with this process
    layout = RunLayout(Path(config.kit.run_dir))
    with tensorboard_dir(layout) as tensorboard, sandbox_for_run(config):
        if config.kit.backend == "cpu":
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            check_run_reach(config, on_ray=False)
            with quiet_verl(layout.verl_log):
                build_trainer(config).fit()
            return
        import ray
        from verl.trainer.main_ppo import run_ppo

        add_ray_debug_env(config)  # DEBUG: read only where this run starts Ray (as the official script)
        if is_ray_cpu(config):
            from spo_helpers.verl_glue.ray_cpu.launch import prepare

            prepare(config)  # the CPU settings (when missing) and Ray's start on this machine's CPUs
        runner = type(KitTaskRunner.__name__, (KitTaskRunner,), {"tensorboard_dir": str(tensorboard)})
        try:
            run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(runner))
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(getattr(err, "cause", None), UserError) else None
            if cause is None:
                raise
            raise cause from None  # a refusal or a stop inside the task runner: the same one line as in-process
