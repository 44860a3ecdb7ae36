"""Process-level compatibility shims for verl 0.6.1's FSDP worker on CPU (torch 2.13, Ray 2.x).

Each shim names the verl or torch line it works around; ``tests/verl_glue/test_ray_cpu.py``
checks, for each, that unpatched verl/torch still needs it and that the shim works.
``install_worker_shims`` applies all of them, once per process, in the Ray worker
before verl's ``ActorRolloutRefWorker.__init__`` runs (see ``worker.py``).
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from typing import Any

import torch

logger = logging.getLogger(__name__)

# torch.cpu lacks these in torch 2.13; verl calls them through get_torch_device() (utils/device.py:55), which is
# torch.cpu without CUDA: get_rng_state / manual_seed / set_rng_state in workers/fsdp_workers.py:612-616 and
# 731-750, max_memory_allocated / max_memory_reserved in workers/fsdp_workers.py:884-885, empty_cache in
# workers/fsdp_workers.py:953 and utils/memory_utils.py:53, memory_reserved / memory_allocated in
# utils/memory_utils.py:46-47 and 60-61 (aggressive_empty_cache, which runs since torch.cpu.is_available()).
# The RNG functions are the CPU generator's (the only device generator on CPU); memory figures are 0.
TORCH_CPU_FUNCTIONS: dict[str, Any] = {
    "get_rng_state": torch.get_rng_state,
    "set_rng_state": torch.set_rng_state,
    "manual_seed": torch.manual_seed,
    "empty_cache": lambda: None,
    "memory_allocated": lambda device=None: 0,
    "memory_reserved": lambda device=None: 0,
    "max_memory_allocated": lambda device=None: 0,
    "max_memory_reserved": lambda device=None: 0,
}

_installed = False
_lock = threading.Lock()


def add_torch_cpu_device_functions() -> list[str]:
    """Give ``torch.cpu`` the device functions verl calls; returns the names added."""
    added = []
    for name, function in TORCH_CPU_FUNCTIONS.items():
        if not hasattr(torch.cpu, name):
            setattr(torch.cpu, name, function)
            added.append(name)
    return added


def init_gloo_process_group() -> bool:
    """Start the worker's process group with gloo only, from verl's env (RANK, WORLD_SIZE, MASTER_*).

    verl's worker asks for ``cpu:gloo,{device}:nccl`` (workers/fsdp_workers.py:149-150), which on CPU is
    ``cpu:gloo,cpu:nccl``: torch refuses it ("Duplicate device type cpu"). verl skips its own call when a
    group exists. Returns whether a group was started here.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group(
        backend="gloo",
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        timeout=datetime.timedelta(seconds=600),
    )
    return True


def topk_reduce_ratio_min_max(timing: float, k: int = 10) -> tuple[float, float, float]:
    """verl's generation-time spread across ranks, gathering shape-(1,) tensors.

    verl's version (utils/profiler/performance.py:226-240, called at workers/fsdp_workers.py:938) all-gathers
    a 0-d tensor into shape-(1,) buffers, which gloo rejects (NCCL accepts it).
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return -1.0, -1.0, -1.0
    local = torch.tensor([float(timing)], dtype=torch.float32)
    gathered = [torch.zeros(1, dtype=torch.float32) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    stacked = torch.stack(gathered)
    threshold = torch.quantile(stacked, 1 - k / 100)
    return float((stacked > threshold).float().mean()), float(stacked.min()), float(stacked.max())


def patch_fsdp_worker_module() -> None:
    """Point the name verl's FSDP worker module imported (fsdp_workers.py:85) at the gloo-safe version."""
    import verl.workers.fsdp_workers as fsdp_workers

    fsdp_workers.topk_reduce_ratio_min_max = topk_reduce_ratio_min_max


def install_worker_shims() -> None:
    """Everything a CPU worker process needs before verl's worker starts (idempotent).

    verl's sync rollout also calls ``get_event_loop().run_until_complete`` in the worker
    (fsdp_workers.py:648, 925, 933); the colocated worker actor verl builds is not an async
    actor, so the call runs on a thread without a running loop and needs no shim.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from spo_helpers.verl_glue.ray_cpu.rollout import register_rollout

    added = add_torch_cpu_device_functions()
    started = init_gloo_process_group()
    patch_fsdp_worker_module()
    register_rollout()
    logger.info("CPU worker shims installed (torch.cpu: %s; gloo group started: %s)", added, started)
