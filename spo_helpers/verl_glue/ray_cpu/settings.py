"""The config of the ``ray`` backend on CPU: what CPU mode fixes, and how many ranks it runs.

The switch is verl's own ``trainer.device``: ``kit.backend=ray`` with ``trainer.device=cpu``.
Everything else in the ``cpu`` preset stays as it is, except the keys in ``REQUIRED_SETTINGS``,
which a CPU cannot run otherwise, and the rank count. This module is their one source.
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
"""Where the rollout finds its sampling seed (``kit.seed`` by default)."""

REQUIRED_SETTINGS: dict[str, Any] = {
    "trainer.device": "cpu",
    # verl builds the actor with flash_attention_2 unless told otherwise (workers/fsdp_workers.py:318,
    # workers/config/model.py:121); flash-attn needs CUDA.
    "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    # verl builds FSDP1 with sync_module_states=True (workers/fsdp_workers.py:495-503), which torch refuses for
    # CPU parameters (distributed/fsdp/_init_utils.py:1161, 1170-1180); FSDP2 (fully_shard) runs on CPU as is.
    "actor_rollout_ref.actor.strategy": "fsdp2",
    # verl 0.6.1's registry has only vllm and sglang (workers/rollout/base.py:81); the kit registers its own.
    "actor_rollout_ref.rollout.name": ROLLOUT_NAME,
    "actor_rollout_ref.rollout.mode": "sync",
    # rollout.yaml:50 defaults to TP 2; the kit's rollout is one model copy per rank.
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
}


@dataclass(frozen=True)
class RayCPUSettings:
    """How many Ray actors a CPU run starts, and how many CPUs it asks Ray for."""

    ranks: int = DEFAULT_RANKS  # data-parallel ranks per node
    nnodes: int = 1

    @property
    def world_size(self) -> int:
        return self.ranks * self.nnodes

    @property
    def num_cpus(self) -> int:
        """One logical CPU per rank, plus one for the task runner (the driver loop)."""
        return self.world_size + 1

    @classmethod
    def from_config(cls, config: DictConfig) -> RayCPUSettings:
        return cls(ranks=int(config.trainer.n_gpus_per_node), nnodes=int(config.trainer.nnodes))


def is_ray_cpu(config: DictConfig) -> bool:
    """``kit.backend=ray`` with ``trainer.device=cpu``."""
    return str(config.kit.backend) == "ray" and str(config.trainer.get("device", "cuda")) == "cpu"


def _override_value(value: Any) -> str:
    return str(value) if not isinstance(value, bool) else str(value).lower()


def ray_cpu_overrides(settings: RayCPUSettings | None = None) -> list[str]:
    """The Hydra overrides of CPU mode, appended after a preset's own."""
    settings = settings or RayCPUSettings()
    out = [f"++{key}={_override_value(value)}" for key, value in REQUIRED_SETTINGS.items()]
    out += [
        f"trainer.n_gpus_per_node={settings.ranks}",
        f"trainer.nnodes={settings.nnodes}",
        f"ray_kwargs.ray_init.num_cpus={settings.num_cpus}",
        f"++{SEED_KEY}=${{kit.seed}}",
    ]
    return out


def apply_required_settings(config: DictConfig) -> list[str]:
    """Set ``REQUIRED_SETTINGS`` (and the rollout seed) where ``config`` differs; returns the changed keys."""
    changed = []
    with open_dict(config):
        for key, value in REQUIRED_SETTINGS.items():
            if OmegaConf.select(config, key, default=None) != value:
                OmegaConf.update(config, key, value, force_add=True)
                changed.append(key)
        if OmegaConf.select(config, SEED_KEY, default=None) is None:
            OmegaConf.update(config, SEED_KEY, int(config.kit.seed), force_add=True)
            changed.append(SEED_KEY)
    return changed
