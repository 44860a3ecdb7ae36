"""Start the ``ray`` backend on CPU: Ray itself, and the worker mapping the trainer builds its workers from."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spo_helpers import cpu_threads
from spo_helpers.verl_glue.ray_cpu.settings import VLLM, RayCPUSettings, apply_required_settings

logger = logging.getLogger(__name__)

WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}


def kit_source_root() -> Path:
    """The folder this process imports ``spo_helpers`` from."""
    import spo_helpers

    return Path(spo_helpers.__file__).resolve().parent.parent


def worker_thread_env(settings: RayCPUSettings) -> dict[str, str]:
    """The thread policy of the Ray processes (``cpu_threads``): the ranks of a node share its cores."""
    return cpu_threads.worker_env(share=settings.ranks)


def rollout_env(settings: RayCPUSettings) -> dict[str, str]:
    """The rollout's own variables for the Ray processes (vLLM's, ``vllm_cpu.worker_env``)."""
    if settings.rollout != VLLM:
        return {}
    from spo_helpers.verl_glue.ray_cpu.vllm_cpu import worker_env

    return worker_env()


def worker_runtime_env(settings: RayCPUSettings) -> dict[str, Any]:
    """verl's Ray runtime env plus a PYTHONPATH that makes workers import the same ``spo_helpers`` as this process,
    and the workers' thread policy."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    runtime_env = get_ppo_ray_runtime_env()
    paths = [str(kit_source_root()), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env_vars = dict(runtime_env.get("env_vars", {}))
    env_vars.update(WORKER_ENV)
    env_vars.update(worker_thread_env(settings))
    env_vars.update(rollout_env(settings))
    env_vars["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    runtime_env["env_vars"] = env_vars
    return runtime_env


def ray_init_kwargs(settings: RayCPUSettings) -> dict[str, Any]:
    """``ray.init`` arguments: a local cluster with ``settings.num_cpus`` CPUs, or the one at ``RAY_ADDRESS``."""
    kwargs: dict[str, Any] = {"runtime_env": worker_runtime_env(settings)}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs.update(num_cpus=settings.num_cpus, include_dashboard=False)
    return kwargs


def prepare(config: DictConfig) -> None:
    """Make ``config`` runnable on CPU workers and start Ray unless it is up (verl's ``run_ppo`` then skips it)."""
    import ray

    changed = apply_required_settings(config)
    if changed:
        logger.info("CPU mode of the ray backend set: %s", ", ".join(changed))
    if not ray.is_initialized():
        kwargs = ray_init_kwargs(RayCPUSettings.from_config(config))
        configured = config.ray_kwargs.ray_init.get("num_cpus")
        if "num_cpus" in kwargs and configured is not None:
            kwargs["num_cpus"] = int(configured)
        # The config's own variables (``+ray_kwargs.ray_init.runtime_env.env_vars.X=...``, DEBUG's RAY_DEBUG), as
        # verl's run_ppo merges them on GPU nodes.
        extra = (config.ray_kwargs.ray_init.get("runtime_env") or {}).get("env_vars") or {}
        kwargs["runtime_env"]["env_vars"].update({str(k): str(v) for k, v in extra.items()})
        ray.init(**kwargs)


def role_mapping(config: DictConfig):
    """Worker classes per role (verl's FSDP worker with the CPU shims), the CPU pool manager, the group class.

    Called in the process that builds the trainer, and with it verl's ``AgentLoopManager`` in async mode: vLLM's
    servers are registered there (``vllm_cpu.register_cpu_replica``)."""
    import ray
    from verl.single_controller.ray import RayWorkerGroup
    from verl.trainer.ppo.utils import Role

    from spo_helpers.verl_glue.ray_cpu.resources import CPUResourcePoolManager
    from spo_helpers.verl_glue.ray_cpu.worker import worker_class

    settings = RayCPUSettings.from_config(config)
    if settings.vllm_servers:
        from spo_helpers.verl_glue.ray_cpu.vllm_cpu import register_cpu_replica

        register_cpu_replica()
    worker = ray.remote(worker_class(settings.mode))
    mapping = {Role.ActorRollout: worker}
    pools = {Role.ActorRollout: "global_pool"}
    if config.algorithm.use_kl_in_reward or config.actor_rollout_ref.actor.use_kl_loss:
        mapping[Role.RefPolicy] = worker
        pools[Role.RefPolicy] = "global_pool"
    manager = CPUResourcePoolManager(
        resource_pool_spec={"global_pool": [settings.ranks] * settings.nnodes}, mapping=pools
    )
    return mapping, manager, RayWorkerGroup
