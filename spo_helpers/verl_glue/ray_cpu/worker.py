"""verl's FSDP actor/rollout/ref workers, started on CPU.

The workers are verl's ``ActorRolloutRefWorker`` (sync rollouts: the kit's ``kit_hf``, vLLM's sync mode) and
``AsyncActorRolloutRefWorker`` (vLLM's async mode, what verl's ``main_ppo`` picks for ``rollout.mode=async``)
unchanged; these subclasses only install the CPU shims (``shims.install_worker_shims``: gloo process group,
``torch.cpu`` device functions, the gloo-safe timing gather, the kit's rollout in the registry) in the Ray worker
process before verl's ``__init__`` runs.
"""

from __future__ import annotations

from verl.workers.fsdp_workers import ActorRolloutRefWorker, AsyncActorRolloutRefWorker

from spo_helpers.verl_glue.ray_cpu.shims import install_worker_shims


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` with the CPU shims installed first."""

    def __init__(self, config, role: str, **kwargs) -> None:
        install_worker_shims()
        super().__init__(config, role, **kwargs)


class CPUAsyncActorRolloutRefWorker(AsyncActorRolloutRefWorker):
    """``AsyncActorRolloutRefWorker`` (``wake_up``/``sleep``, the vLLM server's ZeroMQ address) with the CPU shims
    installed first."""

    def __init__(self, config, role: str, **kwargs) -> None:
        install_worker_shims()
        super().__init__(config, role, **kwargs)


def worker_class(mode: str) -> type:
    """The worker for ``actor_rollout_ref.rollout.mode``, as verl's ``main_ppo`` chooses it."""
    return CPUAsyncActorRolloutRefWorker if mode == "async" else CPUActorRolloutRefWorker
