"""A resource-pool manager that places verl's workers on CPUs, and the release of a run's pools.

verl's ``ResourcePoolManager`` builds every pool with ``use_gpu=True`` (trainer/ppo/ray_trainer.py:88)
and refuses to start unless the cluster has as many GPUs as workers (ray_trainer.py:102-118).
``RayResourcePool`` defaults to ``max_colocate_count=10`` (single_controller/ray/base.py:122), which
asks Ray for 10 CPUs per bundle (base.py:136): on a small machine the placement group never becomes
ready. Here each worker is one bundle of one CPU and nothing asks for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from verl.single_controller.ray import RayResourcePool
from verl.trainer.ppo.ray_trainer import ResourcePoolManager


@dataclass
class CPUResourcePoolManager(ResourcePoolManager):
    """verl's pool manager with CPU bundles (one CPU per worker, no GPU)."""

    def create_resource_pool(self) -> None:
        for name, process_on_nodes in self.resource_pool_spec.items():
            self.resource_pool_dict[name] = RayResourcePool(
                process_on_nodes=process_on_nodes, use_gpu=False, max_colocate_count=1, name_prefix=name
            )
        self._check_resource_available()

    def _check_resource_available(self) -> None:
        """The cluster has a CPU for every worker and the task runner; busy CPUs are waited for (placement group)."""
        total = ray.cluster_resources().get("CPU", 0)
        required = self.get_n_gpus() + 1
        if total < required:
            raise ValueError(
                f"Ray has {total:g} CPUs, and {required} CPU workers (task runner included) need {required}: "
                f"start Ray with num_cpus >= {required} (ray_kwargs.ray_init.num_cpus)"
            )


def release_resource_pools(manager: ResourcePoolManager) -> None:
    """Remove the placement groups a run reserved, which also ends the worker actors placed in them.

    Placement groups live as long as the job that created them, not as long as the trainer: without
    this, a second run in the same driver (the next subset of ``spo estimate``, the next test) waits
    forever for the resources the finished run still holds. Any Ray run, on CPU or GPU.
    """
    from ray.util.placement_group import remove_placement_group

    for pool in manager.resource_pool_dict.values():
        for group in getattr(pool, "pgs", None) or []:
            remove_placement_group(group)
        pool.pgs = None
