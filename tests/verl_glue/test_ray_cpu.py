"""The ``ray`` backend on CPU: verl's real Ray workers (FSDP2 over gloo, two ranks) on the tiny world.

Run with ``make test-ray`` (``pytest -m ray tests/verl_glue``); without ``-m ray`` these cases are skipped.
Ray starts once for the session; verl's ``run_ppo`` then skips ``ray.init`` and every run in this process
shares the cluster, and so do the processes these tests start (a SIGKILLed driver, notebook 04's kernel):
they join it through ``RAY_ADDRESS``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

pytest.importorskip("verl")
pytest.importorskip("ray")

import torch

from spo_helpers.formats.checkpoints import KIT_STATE_DIR, newest_complete_checkpoint
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.steplog import read_step_log
from spo_helpers.stages.train import train
from spo_helpers.verl_glue.config import RunSpec, all_overrides
from spo_helpers.verl_glue.ray_cpu import ROLLOUT_NAME, RayCPUSettings
from spo_helpers.verl_glue.ray_cpu.launch import worker_thread_env
from spo_helpers.world.task import read_rows

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif("'ray' not in config.getoption('markexpr')", reason="Ray cases: run with -m ray"),
]

CHECKOUT = Path(__file__).resolve().parents[2]
SETTINGS = RayCPUSettings()
FAST = ["actor_rollout_ref.rollout.val_kwargs.n=2", "trainer.test_freq=2"]
RAY = {"backend": "ray", "device": "cpu", "settings": FAST}
"""A short run on the ray backend on CPU."""
VALUES_SEED = 2
"""SPO's offline values: the small world's of this seed."""
STEPS = 4
"""Steps of the runs a SIGKILLed driver is compared with."""


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (task runner + two ranks), shut down at the end."""
    import ray

    from spo_helpers.verl_glue.ray_cpu.launch import ray_init_kwargs

    started = not ray.is_initialized()
    if started:
        ray.init(**ray_init_kwargs(SETTINGS))
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def spo_straight(ray_cluster, small_world, small_world_values, train_small, tmp_path_factory):
    """An SPO run that never stops: checked on its own and the reference for the resumed run."""
    out, values = tmp_path_factory.mktemp("spo_straight"), small_world_values(VALUES_SEED)
    return train_small("SPO", small_world, out, "spo", STEPS, "trainer.save_freq=1", offline_values=values, **RAY)


@pytest.fixture(scope="module")
def grpo_straight(ray_cluster, small_world, train_small, tmp_path_factory):
    """A GRPO run that never stops: checked on its own and the reference for the resumed run."""
    out = tmp_path_factory.mktemp("grpo_straight")
    return train_small("GRPO", small_world, out, "grpo", STEPS, "trainer.save_freq=1", **RAY)


@pytest.fixture
def straight(request):
    """The uninterrupted run of the method a test is parametrised with."""
    return request.getfixturevalue(f"{request.param.lower()}_straight")


def shards(run_dir, step, kind="model"):
    """verl's sharded checkpoint of ``step``: per rank, each local shard as a plain tensor."""
    folder = RunLayout(run_dir).checkpoints / f"global_step_{step}" / "actor"
    out = []
    for rank in range(SETTINGS.world_size):
        state = torch.load(folder / f"{kind}_world_size_{SETTINGS.world_size}_rank_{rank}.pt", weights_only=False)
        out.append(state)
    return out


def local(value):
    return value.to_local() if hasattr(value, "to_local") else value


# ---------------------------------------------------------------------------------------------- the cluster
def test_workers_import_this_checkout(ray_cluster):
    """Ray workers import the same ``spo_helpers`` as this process (PYTHONPATH through the runtime env)."""

    @ray_cluster.remote(num_cpus=1)
    def where():
        import spo_helpers

        return spo_helpers.__file__

    assert Path(ray_cluster.get(where.remote())).resolve() == (CHECKOUT / "spo_helpers" / "__init__.py")


def test_the_sandbox_is_reached_from_every_node(ray_cluster):
    """A run with tools sends one program from a Ray task on each node before its workers start."""
    import socket

    from spo_helpers.errors import UserError
    from spo_helpers.sandbox.client import local_sandbox
    from spo_helpers.verl_glue.tool_sandbox import check_reach

    with local_sandbox() as url:
        check_reach(url, on_ray=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/run_code"
    node = ray_cluster.nodes()[0]["NodeManagerAddress"]
    with pytest.raises(UserError, match=f"does not run code from {re.escape(node)}"):
        check_reach(closed, on_ray=True)


CLUSTER_LIMIT = textwrap.dedent(
    """
    import json, sys, ray
    ray.init(address=sys.argv[1])  # a job of its own: a fresh namespace, so a fresh rate-limiter actor

    @ray.remote(num_cpus=0)
    class Worker:  # as verl's agent-loop workers: one code tool per process
        def __init__(self, url):
            from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter, ToolConfig
            self.tool = CodeInterpreter(ToolConfig(url=url, rate_limit=3, num_workers=8))

        def runs(self, n):
            futures = [self.tool.executor.submit(self.tool.run, "print(1)") for _ in range(n)]
            return [f.result().status.value for f in futures]

    workers = [Worker.remote(sys.argv[2]) for _ in range(2)]
    print("STATUSES " + json.dumps(ray.get([w.runs.remote(8) for w in workers])))
    """
)


def test_the_rate_limit_holds_across_the_cluster(ray_cluster):
    """Two Ray processes with a code tool each, eight concurrent runs each: at most ``rate_limit`` (3) reach the
    sandbox at once, through verl's cluster-wide rate-limiter actor."""
    from agent_loop.tir_fakes import CountingSandbox

    sandbox = CountingSandbox()
    try:
        address = ray_cluster.get_runtime_context().gcs_address
        done = subprocess.run(
            [sys.executable, "-c", CLUSTER_LIMIT, address, sandbox.url],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=CHECKOUT,
            env=dict(
                os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
            ),
        )
    finally:
        sandbox.close()
    lines = [line for line in done.stdout.splitlines() if line.startswith("STATUSES ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads(lines[-1][len("STATUSES ") :]) == [["ok"] * 8] * 2
    assert sandbox.most == 3


def test_workers_compute_with_their_share_of_the_cores(ray_cluster):
    """The two ranks of a node share its cores: each actor's torch starts cores // ranks threads that sleep when
    they wait (``cpu_threads``), whatever this process was given."""
    from spo_helpers.cpu_threads import available_cores, switch

    if switch() == "torch":
        pytest.skip("SPO_CPU_THREADS=torch: the workers keep Ray's and torch's defaults")

    @ray_cluster.remote(num_cpus=1)
    def threads():
        import torch

        return os.environ.get("OMP_NUM_THREADS"), os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads()

    expected = worker_thread_env(SETTINGS)
    assert expected["OMP_NUM_THREADS"] == str(max(1, available_cores() // SETTINGS.ranks))
    count = expected["OMP_NUM_THREADS"]
    assert ray_cluster.get(threads.remote()) == (count, "PASSIVE", int(count))


# ---------------------------------------------------------------------------------------------- shims
PROBE = textwrap.dedent(
    """
    import asyncio, json, os, socket, sys
    import torch, torch.distributed as dist

    facts = {}
    def error(fn):
        try:
            fn()
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return None

    from spo_helpers.verl_glue.ray_cpu import shims
    from verl.utils.device import get_device_name, get_nccl_backend

    # unpatched torch / verl
    facts["torch_cpu_missing"] = sorted(n for n in shims.TORCH_CPU_FUNCTIONS if not hasattr(torch.cpu, n))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"  # as workers/fsdp_workers.py:150
    facts["verl_backend_error"] = error(lambda: dist.init_process_group(backend=backend, rank=0, world_size=1))
    facts["gloo_started_by_shim"] = shims.init_gloo_process_group()
    facts["gloo_backend"] = dist.get_backend()
    from verl.utils.profiler.performance import topk_reduce_ratio_min_max
    facts["verl_topk_error"] = error(lambda: topk_reduce_ratio_min_max(1.0))
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from verl.utils.device import get_device_id
    # as workers/fsdp_workers.py:495-501 builds FSDP1
    facts["fsdp1_sync_error"] = error(
        lambda: FSDP(torch.nn.Linear(2, 2), device_id=get_device_id(), sync_module_states=True)
    )
    from verl.workers.rollout import base
    facts["registry"] = sorted("/".join(k) for k in base._ROLLOUT_REGISTRY)
    from verl.workers.rollout.hf_rollout import HFRollout
    facts["hf_rollout_error"] = error(lambda: HFRollout(torch.nn.Linear(2, 2), {}))
    from transformers.utils import is_flash_attn_2_available
    facts["flash_attn_2"] = is_flash_attn_2_available()

    # the shims
    facts["torch_cpu_added"] = sorted(shims.add_torch_cpu_device_functions())
    from verl.utils.device import get_torch_device
    from verl.utils.memory_utils import aggressive_empty_cache
    facts["empty_cache_error"] = error(lambda: aggressive_empty_cache(force_sync=True))
    device = get_torch_device()
    state = device.get_rng_state(); device.manual_seed(7); a = torch.rand(3)
    device.set_rng_state(state); device.manual_seed(7); b = torch.rand(3)
    facts["device_rng_is_cpu_rng"] = bool(torch.equal(a, b)) and device.get_rng_state().equal(torch.get_rng_state())
    facts["kit_topk"] = list(shims.topk_reduce_ratio_min_max(2.5))
    shims.patch_fsdp_worker_module()
    import verl.workers.fsdp_workers as fsdp_workers
    facts["worker_topk_patched"] = fsdp_workers.topk_reduce_ratio_min_max is shims.topk_reduce_ratio_min_max
    from spo_helpers.verl_glue.ray_cpu.rollout import register_rollout
    register_rollout()
    from verl.workers.rollout import get_rollout_class
    facts["kit_rollout_class"] = get_rollout_class("kit_hf", "sync").__name__
    dist.destroy_process_group()
    print("FACTS " + json.dumps(facts))
    """
)


@pytest.fixture(scope="module")
def probe():
    """Facts from a fresh interpreter: unpatched torch/verl first, then with each shim."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, cwd=CHECKOUT
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("FACTS ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines[-1][len("FACTS ") :])


def test_unpatched_verl_and_torch_still_need_each_shim(probe):
    """If one of these fails, verl or torch changed and the matching shim or setting can go."""
    from spo_helpers.verl_glue.ray_cpu.shims import TORCH_CPU_FUNCTIONS

    assert probe["torch_cpu_missing"] == sorted(TORCH_CPU_FUNCTIONS)  # shims.add_torch_cpu_device_functions
    assert "Duplicate device type cpu" in probe["verl_backend_error"]  # shims.init_gloo_process_group
    assert "ProcessGroupGloo::allgather" in probe["verl_topk_error"]  # shims.topk_reduce_ratio_min_max
    assert "CPU parameters or buffers" in probe["fsdp1_sync_error"]  # settings: actor.strategy=fsdp2
    assert not any(name.startswith(f"{ROLLOUT_NAME}/") or name.startswith("hf/") for name in probe["registry"])
    assert probe["hf_rollout_error"].startswith("TypeError")  # verl's HFRollout cannot be built: rollout.py
    assert probe["flash_attn_2"] is False  # settings: attn_implementation=sdpa


def test_shims_work(probe):
    from spo_helpers.verl_glue.ray_cpu.shims import TORCH_CPU_FUNCTIONS

    assert probe["gloo_started_by_shim"] and probe["gloo_backend"] == "gloo"
    assert probe["torch_cpu_added"] == sorted(TORCH_CPU_FUNCTIONS)
    assert probe["empty_cache_error"] is None and probe["device_rng_is_cpu_rng"]
    assert probe["kit_topk"] == [0.0, 2.5, 2.5] and probe["worker_topk_patched"]
    assert probe["kit_rollout_class"] == "HFGenerateRollout"


def test_verl_pool_manager_needs_gpus_and_the_cpu_one_does_not(ray_cluster, wait_for_free_cpus):
    """verl's manager refuses a GPU-less cluster (ray_trainer.py:102-118); the CPU manager places 1-CPU bundles."""
    import inspect

    from verl.single_controller.ray import RayResourcePool
    from verl.trainer.ppo.ray_trainer import ResourcePoolManager
    from verl.trainer.ppo.utils import Role

    from spo_helpers.verl_glue.ray_cpu.resources import CPUResourcePoolManager, release_resource_pools

    spec, mapping = {"global_pool": [SETTINGS.ranks]}, {Role.ActorRollout: "global_pool"}
    with pytest.raises(ValueError, match="GPUs"):
        ResourcePoolManager(resource_pool_spec=spec, mapping=mapping).create_resource_pool()
    assert inspect.signature(RayResourcePool).parameters["max_colocate_count"].default == 10  # 10 CPUs per bundle

    manager = CPUResourcePoolManager(resource_pool_spec=spec, mapping=mapping)
    manager.create_resource_pool()
    pool = manager.get_resource_pool(Role.ActorRollout)
    assert not pool.use_gpu and pool.max_colocate_count == 1
    groups = pool.get_placement_groups(device_name="cpu")  # waits until the bundles are reserved
    assert [g.bundle_specs for g in groups] == [[{"CPU": 1.0}] * SETTINGS.ranks]
    release_resource_pools(manager)
    wait_for_free_cpus(ray_cluster, SETTINGS.num_cpus, timeout=30)
    assert ray_cluster.available_resources().get("CPU", 0) == SETTINGS.num_cpus


def test_rollout_samples_as_the_cpu_backend(small_world, small_run_kwargs):
    """The registered rollout, fed the weights by ``update_weights``, samples what ``CPURollout`` samples."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl import DataProto
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.model import compute_position_id_with_mask
    from verl.workers.config import HFModelConfig

    from spo_helpers.verl_glue.config import build_config
    from spo_helpers.verl_glue.cpu_backend import CPURollout
    from spo_helpers.verl_glue.ray_cpu.rollout import HFGenerateRollout, sampling_seed

    spec = RunSpec(method="GRPO", **small_run_kwargs("GRPO", small_world, "/tmp/unused", "x", 1, **RAY))
    config = build_config(spec)
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model, dataclass_type=HFModelConfig)
    rollout = HFGenerateRollout(config.actor_rollout_ref.rollout, model_config, device_mesh=None)
    reference = AutoModelForCausalLM.from_pretrained(small_world.model_dir, dtype=torch.float32)
    import asyncio

    asyncio.run(rollout.update_weights(iter(reference.state_dict().items())))

    tokenizer = AutoTokenizer.from_pretrained(small_world.model_dir)
    texts = [
        tokenizer.apply_chat_template(list(r["prompt"]), add_generation_prompt=True, tokenize=False)
        for r in read_rows(small_world.val_file)[:6]
    ]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    tensors = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    tensors["position_ids"] = compute_position_id_with_mask(tensors["attention_mask"])

    def prompts(step):
        return DataProto.from_dict(tensors=dict(tensors), meta_info={"global_steps": step, "validate": False})

    first, again, later = (rollout.generate_sequences(prompts(s)) for s in (3, 3, 4))
    generation = reference.generation_config
    expected = CPURollout(
        reference, rollout.config, generation.eos_token_id, generation.pad_token_id, seed=rollout.seed
    )
    expected.rng["train"] = torch.Generator().manual_seed(sampling_seed(rollout.seed, "train", 3, 0, 0)).get_state()
    want = expected.generate_sequences(prompts(3))
    assert torch.equal(first.batch["responses"], want.batch["responses"])
    assert torch.equal(first.batch["attention_mask"], want.batch["attention_mask"])
    assert not torch.equal(first.batch["responses"], again.batch["responses"])  # the 2nd call of step 3
    assert not torch.equal(first.batch["responses"], later.batch["responses"])
    seeds = {
        sampling_seed(0, stream, step, call, rank)
        for stream in ("train", "val")
        for step in (1, 2)
        for call in (0, 1)
        for rank in (0, 1)
    }
    assert len(seeds) == 16


# ---------------------------------------------------------------------------------------------- training
def test_grpo_through_ray_on_two_ranks(grpo_straight, stable_metrics):
    summary = grpo_straight
    assert summary.steps == STEPS and summary.samples == STEPS * 16 * 8
    metrics = dict(stable_metrics(summary.run_dir))
    assert any(k.startswith("val-core/") for k in metrics[0]) and any(k.startswith("val-core/") for k in metrics[2])
    for key in ("kit/zero_adv_frac", "kit/calibration/brier", "actor/pg_loss", "critic/score/mean"):
        assert key in metrics[2]
    assert 0.0 < metrics[2]["critic/score/mean"] < 1.0  # the warm-started model: rewards spread
    layout = RunLayout(summary.run_dir)
    config = yaml.safe_load(layout.config.read_text())
    assert config["config"]["trainer"]["device"] == "cpu"
    assert config["config"]["actor_rollout_ref"]["rollout"]["name"] == ROLLOUT_NAME
    workers = RayCPUSettings.from_config(OmegaConf.create(config["config"]))
    assert config["threads"].get("workers") == (worker_thread_env(workers) or None)  # the ranks' thread policy
    assert layout.tensorboard.is_dir()  # TENSORBOARD_DIR reaches the task runner
    step = newest_complete_checkpoint(layout.checkpoints)
    assert step.name == f"global_step_{STEPS}"
    assert sorted(p.name for p in (step / "actor").glob("model_world_size_*")) == [
        f"model_world_size_2_rank_{r}.pt" for r in range(2)
    ]


def test_spo_through_ray_pads_odd_drift_batches(spo_straight, stable_metrics):
    """SPO's drift pass scores this step's responses plus the revisited prompts' previous ones: an odd
    count of revisits makes an odd batch, padded to the two ranks and unpadded after."""
    records = read_step_log(RunLayout(spo_straight.run_dir).steps)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    seen: set[int] = set()
    drift_batch_sizes = []
    for record in records:
        rows = record["data"]["row"]
        revisited = [i for i, row in enumerate(rows) if row in seen]
        drift_batch_sizes.append(len(rows) + len(revisited))
        drift = np.asarray(record["data"]["drift"])
        assert np.all(np.isfinite(drift)) and np.all(drift[revisited] > 0)
        first = np.setdiff1d(np.arange(len(rows)), revisited)
        assert np.all(drift[first] == 0)
        seen.update(rows)
    assert any(size % SETTINGS.world_size for size in drift_batch_sizes), drift_batch_sizes
    metrics = dict(stable_metrics(spo_straight.run_dir))
    assert metrics[1]["spo/first_sampled_ratio"] == 1.0 and metrics[STEPS]["spo/D"] > 0


@pytest.mark.parametrize(("method", "straight"), [("SPO", "SPO"), ("GRPO", "GRPO")], indirect=["straight"])
def test_sigkill_driver_then_resume_matches_straight_run(
    method,
    straight,
    ray_cluster,
    small_world,
    small_world_values,
    small_run_kwargs,
    tmp_path,
    wait_for_checkpoint,
    stable_metrics,
    wait_for_free_cpus,
):
    """SIGKILL the driver (the process that runs ``run_ppo``) during step 3, resume from verl's sharded
    checkpoint, and compare with the run that never stopped: bit-exact on two ranks (GRPO: verl's own fit(),
    its data loader's state and the shadow tracker; SPO: the kit's loop, sampler and stored log-probs)."""
    values = small_world_values(VALUES_SEED) if method == "SPO" else None
    kwargs = small_run_kwargs(
        method, small_world, tmp_path, method.lower(), STEPS, "trainer.save_freq=1", offline_values=values, **RAY
    )
    spec = RunSpec(method=method, **kwargs)
    command = [sys.executable, "-m", "spo_helpers.verl_glue.main", *all_overrides(spec)]
    env = dict(
        os.environ,
        RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address,
        PYTHONPATH=os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")])),
    )
    log_path = tmp_path / "killed.log"
    checkpoints = spec.layout.checkpoints
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=CHECKOUT)
        try:
            seen = wait_for_checkpoint(proc, checkpoints, 1, log_path, timeout=400.0)
            step_seconds = wait_for_checkpoint(proc, checkpoints, 2, log_path, timeout=400.0) - seen
            time.sleep(random.Random(3).random() * step_seconds)  # somewhere in step 3 (or its save)
            assert proc.poll() is None, f"the run ended before the kill:\n{log_path.read_text()[-3000:]}"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    newest = newest_complete_checkpoint(checkpoints)
    assert newest is not None and newest.name in ("global_step_2", "global_step_3")
    assert not (checkpoints / f"global_step_{STEPS}").exists()
    wait_for_free_cpus(ray_cluster, SETTINGS.num_cpus)

    resumed = train(method, **kwargs)
    assert resumed.steps == STEPS
    straight = straight.run_dir
    for kind in ("model", "optim"):
        for ours, theirs in zip(shards(straight, STEPS, kind), shards(resumed.run_dir, STEPS, kind), strict=True):
            if kind == "model":
                assert ours.keys() == theirs.keys()
                assert all(torch.equal(local(ours[k]), local(theirs[k])) for k in ours)
            else:
                flat_a = [local(t) for t in _tensors(ours)]
                flat_b = [local(t) for t in _tensors(theirs)]
                assert len(flat_a) == len(flat_b) and all(
                    torch.equal(a, b) for a, b in zip(flat_a, flat_b, strict=True)
                )
    kit = [
        torch.load(RunLayout(run).checkpoints / f"global_step_{STEPS}" / KIT_STATE_DIR / "state.pt", weights_only=False)
        for run in (straight, resumed.run_dir)
    ]
    assert kit[0]["tracker"] == kit[1]["tracker"] and kit[0]["counters"] == kit[1]["counters"]
    if method == "SPO":
        assert kit[0]["sampler"] == kit[1]["sampler"]
        assert torch.equal(kit[0]["store"]["logprobs"], kit[1]["store"]["logprobs"])
    # The same prompts, rewards and advantages step by step (GRPO: verl's loader resumed from its data.pt)
    assert RunLayout(straight).steps.read_text() == RunLayout(resumed.run_dir).steps.read_text()
    assert stable_metrics(straight) == stable_metrics(resumed.run_dir)


def _tensors(obj):
    """Every tensor in a nested optimizer state, in a stable order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key])
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)


# ---------------------------------------------------------------------------------------------- estimate
def test_estimate_through_ray(ray_cluster, small_world, tmp_path):
    from spo_helpers.stages.estimate import estimate_all

    summaries = estimate_all(
        small_world.val_file,
        output_dir=tmp_path,
        model_path=str(small_world.model_dir),
        backend="ray",
        device="cpu",
        n_val=2,
        progress=False,
    )
    (summary,) = summaries
    lines = [json.loads(line) for line in summary.dump.read_text().splitlines()]
    assert summary.prompts == 40 and summary.samples == 80 and len(lines) == 80
    assert {"prompt_key", "score", "input", "output"} <= set(lines[0])
    assert 0.0 <= summary.mean_score <= 1.0
    assert RunLayout.of(tmp_path, summary.exp_name).tensorboard.is_dir()  # not the task runner's cwd


# ---------------------------------------------------------------------------------------------- notebook 04
def test_notebook_04_on_the_ray_backend_on_cpu(
    ray_cluster, small_world, small_world_values, tmp_path, monkeypatch, wait_for_free_cpus
):
    """Notebook 04 through papermill with ``backend="ray", device="cpu"``: GRPO and SPO on verl's workers, its
    kernel joining this session's cluster, then its curves cells."""
    papermill = pytest.importorskip("papermill")
    from spo_helpers.stages.pipeline import kernel_arguments

    splits = tmp_path / "splits"
    splits.mkdir()
    shutil.copy(small_world.train_file, splits / "subset_0.parquet")
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.get_runtime_context().gcs_address)
    monkeypatch.setenv("SPO_HEADLESS", "1")
    output = tmp_path / "04_train.ipynb"
    papermill.execute_notebook(
        str(CHECKOUT / "notebooks" / "04_train.ipynb"),
        str(output),
        parameters={
            "methods": ["GRPO", "SPO"],
            "backend": "ray",
            "device": "cpu",
            "train_data_dir": str(splits),
            "offline_values": small_world_values(VALUES_SEED),
            "output_dir": str(tmp_path / "out"),
            "model_path": str(small_world.model_dir),
            "total_steps": 2,
            "overrides": list(FAST),
        },
        progress_bar=False,
        cwd=str(CHECKOUT),  # the validation files: the CPU world of runs/_assets, as `spo train` finds it
        **kernel_arguments(None),
    )
    for method in ("grpo", "spo"):
        layout = RunLayout.of(tmp_path / "out", f"{method}_cpu")
        assert [r["step"] for r in read_step_log(layout.steps)] == [1, 2]
        config = yaml.safe_load(layout.config.read_text())["config"]
        assert config["kit"]["backend"] == "ray" and config["trainer"]["device"] == "cpu"
        assert config["actor_rollout_ref"]["rollout"]["name"] == ROLLOUT_NAME
        assert config["trainer"]["n_gpus_per_node"] == SETTINGS.ranks
    cells = [c for c in json.loads(output.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells[-1]["outputs"], "the last curves cell drew nothing"  # papermill raised on any failing cell
    wait_for_free_cpus(ray_cluster, SETTINGS.num_cpus)
