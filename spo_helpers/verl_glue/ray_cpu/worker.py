"""verl's FSDP actor/rollout/ref worker, started on CPU.

The worker is verl's ``ActorRolloutRefWorker`` unchanged; this subclass only installs the
CPU shims (``shims.install_worker_shims``: gloo process group, ``torch.cpu`` device
functions, the gloo-safe timing gather, the kit's rollout in the registry) in the Ray
worker process before verl's ``__init__`` runs.
"""

from __future__ import annotations

from verl.workers.fsdp_workers import ActorRolloutRefWorker

from spo_helpers.verl_glue.ray_cpu.shims import install_worker_shims


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` with the CPU shims installed first."""

    def __init__(self, config, role: str, **kwargs) -> None:
        install_worker_shims()
        super().__init__(config, role, **kwargs)
