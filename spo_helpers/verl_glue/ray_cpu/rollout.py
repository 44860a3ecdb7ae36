"""The kit's rollout for verl's FSDP worker on CPU: Hugging Face ``generate()``, one model copy per rank.

verl 0.6.1's rollout registry (workers/rollout/base.py:81) has only vllm and sglang, and its
``HFRollout`` cannot be built as shipped (hf_rollout.py:41 calls ``BaseRollout.__init__()``
without its arguments, base.py:32-37) and passes ``position_ids`` to ``generate()``
(hf_rollout.py:115), which corrupts samples. This rollout is registered as ``kit_hf``.
It keeps a plain copy of the model; before each generation verl's worker hands it the
FSDP-gathered weights (``update_weights``), and the sampling is the CPU backend's
``CPURollout`` routine.

Sampling draws from a generator seeded per call from (seed, training or validation,
global step, call within the step, data-parallel rank), so a run resumed from a
checkpoint samples exactly what an uninterrupted run samples, with no extra state to save.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from verl import DataProto
from verl.workers.rollout.base import BaseRollout

from spo_helpers.verl_glue.cpu_backend import CPURollout, sampling_seed
from spo_helpers.verl_glue.ray_cpu.settings import ROLLOUT_NAME

ROLLOUT_CLASS_PATH = f"{__name__}.HFGenerateRollout"

__all__ = ["ROLLOUT_CLASS_PATH", "HFGenerateRollout", "register_rollout", "sampling_seed"]


def register_rollout() -> None:
    """Add the kit's rollout to verl's registry under ``(kit_hf, sync)`` (a plain dict, base.py:81)."""
    from verl.workers.rollout import base

    base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "sync")] = ROLLOUT_CLASS_PATH


class HFGenerateRollout(BaseRollout):
    """verl's rollout interface over ``CPURollout`` (sync mode only)."""

    def __init__(self, config, model_config, device_mesh) -> None:
        super().__init__(config, model_config, device_mesh)
        from transformers import AutoModelForCausalLM

        hf_config = self.model_config.hf_config
        module = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
        generation = self.model_config.generation_config
        if generation is not None:
            module.generation_config = generation
        module.requires_grad_(False)
        module.eval()
        tokenizer = self.model_config.tokenizer
        eos = getattr(generation, "eos_token_id", None)
        pad = getattr(generation, "pad_token_id", None)
        eos = eos if eos is not None else tokenizer.eos_token_id
        pad = pad if pad is not None else tokenizer.pad_token_id
        engine = (self.config.engine_kwargs or {}).get(ROLLOUT_NAME) or {}
        self.seed = int(engine.get("seed", 0))
        self.rank = device_mesh["dp"].get_local_rank() if device_mesh is not None else 0
        self.module = module
        self.sampler = CPURollout(
            module,
            self.config,
            eos,
            pad if pad is not None else eos,
            self.seed,
            tokenizer=tokenizer,
            seed_validation_per_call=False,  # generate_sequences seeds every call, per rank
        )
        self._calls: dict[str, tuple[int, int]] = {}  # stream -> (global step, calls made in it)

    # ---------------------------------------------------------------- weights (no engine memory to manage)
    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]], **kwargs) -> None:
        """Load the actor's full weights; iterating gathers each FSDP shard, on every rank in the same order."""
        state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in weights}
        missing, unexpected = self.module.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if getattr(self.module.config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"rollout weights do not match the model: missing {missing}, unexpected {unexpected}")

    # ---------------------------------------------------------------- generation
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        meta = prompts.meta_info
        stream = "val" if meta.get("validate", False) else "train"
        step = int(meta.get("global_steps", -1))
        last_step, count = self._calls.get(stream, (None, 0))
        call = count if last_step == step else 0
        self._calls[stream] = (step, call + 1)
        seed = sampling_seed(self.seed, stream, step, call, self.rank)
        self.sampler.rng[stream] = torch.Generator().manual_seed(seed).get_state()
        return self.sampler.generate_sequences(prompts)
