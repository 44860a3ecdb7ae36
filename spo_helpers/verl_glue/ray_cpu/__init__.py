"""The ``ray`` backend on CPU: verl's real Ray workers, FSDP2 over gloo, a ``generate()`` rollout.

``kit.backend=ray`` with ``trainer.device=cpu`` (``spo train --backend ray --device cpu``)
runs the same driver as on GPU nodes (verl's ``run_ppo`` with the kit's task runner,
``GRPOTrainer`` / ``SPOTrainer``) against verl's own ``ActorRolloutRefWorker`` as Ray
actors, by default two data-parallel ranks. Only what a CPU cannot do changes:

- ``settings``: the config keys CPU mode fixes (device, sdpa attention, FSDP2, the
  kit's rollout, tensor parallel 1) and the rank count;
- ``resources``: a resource-pool manager that asks Ray for CPUs, not GPUs;
- ``rollout``: the kit's rollout, registered in verl's rollout registry, sampling with
  the CPU backend's ``generate()`` routine;
- ``shims``: the few process-level patches verl 0.6.1 and torch 2.13 need on CPU,
  each naming the line it works around;
- ``worker``: verl's FSDP worker with the shims installed before it starts;
- ``launch``: the worker mapping for the trainer and Ray's start.
"""

from spo_helpers.verl_glue.ray_cpu.settings import (
    DEFAULT_RANKS,
    ROLLOUT_NAME,
    RayCPUSettings,
    apply_required_settings,
    is_ray_cpu,
    ray_cpu_overrides,
)

__all__ = [
    "DEFAULT_RANKS",
    "ROLLOUT_NAME",
    "RayCPUSettings",
    "apply_required_settings",
    "is_ray_cpu",
    "ray_cpu_overrides",
]
