"""An in-process actor/rollout worker group for verl 0.6.1 on CPU.

verl's trainer talks to its workers through a worker group (``generate_sequences``,
``compute_log_prob``, ``update_actor``, ``save_checkpoint``...). On GPU nodes those
are Ray actors running FSDP and vLLM. Here the same calls run in the driver process
on a small Hugging Face model: the PPO update and log-probs go through verl's own
``DataParallelPPOActor``; generation is our own loop over ``model.generate()``
(verl's ``HFRollout`` cannot be built as shipped and passes ``position_ids`` to
``generate()``, which corrupts samples).

Sampling draws from RNG states the worker owns (one for training rollouts, one for
validation) and saves in its checkpoints, so a resumed run samples exactly what an
uninterrupted one would.

With ``rollout.multi_turn.enable`` the rollout is the tool agent loop
(``agent_loop.cpu_server.run_tool_rollout``: the same turn logic verl's agent-loop workers
run on GPU nodes), drawing from the same RNG states.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from spo_helpers.core.latency import LatencyModel
from spo_helpers.formats.atomic import atomic_write_text
from spo_helpers.formats.checkpoints import CPU_WORKER_FILE, step_dirs
from spo_helpers.verl_glue.agent_loop.cpu_server import torch_rng


def ensure_cpu_runtime() -> None:
    """A one-rank gloo process group (verl's actor calls ``get_rank()``) and a CPU ``empty_cache``."""
    import torch.distributed as dist

    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None
    if dist.is_available() and not dist.is_initialized():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=0, world_size=1)


def sampling_seed(seed: int, stream: str, step: int, call: int, rank: int) -> int:
    """A 63-bit seed for one generation call, independent of everything sampled before it."""
    words = [int(seed), 1 if stream == "val" else 0, int(step), int(call), int(rank)]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class CPURollout:
    """Sampling from a causal LM with ``generate()``, shaped as verl's rollout output.

    Training samples draw from one stream whose state the checkpoints save (``rng["train"]``); validation samples
    from a generator seeded per call from (seed, step, call within the step), so a validation gives the same
    samples however many validations came before it (a run extended on resume validates as a straight run).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        rollout_config: DictConfig,
        eos_token_id,
        pad_token_id: int,
        seed: int,
        *,
        tokenizer=None,
        data_config: DictConfig | None = None,
        seed_validation_per_call: bool = True,
    ) -> None:
        from spo_helpers.verl_glue.agent_loop.settings import ToolRolloutSettings

        self.module = module
        self.config = rollout_config
        self.tokenizer = tokenizer
        self.tools = ToolRolloutSettings.from_config(rollout_config, data_config)
        if self.tools is not None and tokenizer is None:
            raise ValueError("the tool agent loop needs the tokenizer")
        self.eos_ids = list(eos_token_id) if isinstance(eos_token_id, list | tuple) else [int(eos_token_id)]
        self.pad_token_id = int(pad_token_id)
        self.micro_batch_size = int(rollout_config.get("generate_micro_batch_size", None) or 256)
        self.seed = int(seed)
        self.seed_validation_per_call = seed_validation_per_call  # off where the caller seeds every call itself
        self.rng = {
            "train": torch.Generator().manual_seed(seed).get_state(),
            "val": torch.Generator().manual_seed(seed + 1_000_003).get_state(),
        }
        self._val_calls: tuple[int, int] = (-1, 0)  # (global step, validation calls made in it)
        self.latency: LatencyModel | None = None  # kit.tool_latency: added delays of training code runs

    def _sampling_kwargs(self, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        validate = bool(meta.get("validate", False))
        if validate and self.seed_validation_per_call:  # a fresh stream per call (class doc); training: saved stream
            step = int(meta.get("global_steps", -1))
            last, count = self._val_calls
            call = count if last == step else 0
            self._val_calls = (step, call + 1)
            seed = sampling_seed(self.seed, "val", step, call, 0)
            self.rng["val"] = torch.Generator().manual_seed(seed).get_state()
        source = self.config.val_kwargs if validate else self.config
        do_sample = bool(meta.get("do_sample", source.get("do_sample", True)))
        kwargs: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            kwargs["temperature"] = float(source.temperature)
            kwargs["top_p"] = float(source.top_p)
            top_k = int(source.top_k)
            kwargs["top_k"] = top_k if top_k > 0 else 0
        return ("val" if validate else "train"), kwargs

    def generate_sequences(self, prompts):
        """One response per row: plain sampling, or the tool agent loop when multi-turn is on."""
        if self.tools is not None:
            return self._generate_with_tools(prompts)
        return self._generate_single_turn(prompts)

    def _generate_with_tools(self, prompts):
        from verl import DataProto

        from spo_helpers.verl_glue.agent_loop.cpu_server import (
            non_tensor_fields,
            pack_turn_results,
            run_tool_rollout,
        )
        from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter

        if "raw_prompt" not in prompts.non_tensor_batch:
            raise ValueError("the tool agent loop reads each row's chat: set data.return_raw_chat=True")
        stream, kwargs = self._sampling_kwargs(prompts.meta_info)
        settings = self.tools
        step = int(prompts.meta_info.get("global_steps", 0))
        latency = self.latency if stream == "train" else None  # validation measures the policy, not the schedule
        rollout = run_tool_rollout(
            self.module,
            self.tokenizer,
            list(prompts.non_tensor_batch["raw_prompt"]),
            config=settings.turns,
            tool=CodeInterpreter(settings.tool),
            rng_state=self.rng[stream],
            sampling_kwargs=kwargs,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_token_id,
            prompt_length=settings.prompt_length,
            rewrite_prompt=settings.rewrite_prompt,
            chat_template_kwargs=settings.chat_template_kwargs,
            micro_batch_size=self.micro_batch_size,
            latency=latency,
            sample_words=[(step, row) for row in range(len(prompts))],
        )
        self.rng[stream] = rollout.rng_state
        tensors = pack_turn_results(
            rollout.results,
            prompt_length=settings.prompt_length,
            response_length=int(self.config.response_length),
            pad_token_id=self.pad_token_id,
        )
        non_tensors = dict(prompts.non_tensor_batch)
        non_tensors.update(non_tensor_fields(rollout.results))
        return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)

    @torch.no_grad()
    def _generate_single_turn(self, prompts):
        from verl import DataProto
        from verl.utils.model import compute_position_id_with_mask
        from verl.utils.torch_functional import get_response_mask

        meta = prompts.meta_info
        input_ids = prompts.batch["input_ids"]
        attention_mask = prompts.batch["attention_mask"]
        # As verl's FSDP worker: EOS and padding come from the model's generation config.
        eos_ids, pad = self.eos_ids, self.pad_token_id
        response_length = int(self.config.response_length)
        stream, kwargs = self._sampling_kwargs(meta)

        # verl left-pads prompts to max_prompt_length: generate on the columns some row uses.
        first_used = int(attention_mask.any(dim=0).float().argmax()) if attention_mask.any() else 0
        ids, mask = input_ids[:, first_used:], attention_mask[:, first_used:]
        was_training = self.module.training
        self.module.eval()
        responses = []
        with torch_rng(self.rng[stream]) as holder:
            for start in range(0, ids.shape[0], self.micro_batch_size):
                chunk_ids = ids[start : start + self.micro_batch_size]
                chunk_mask = mask[start : start + self.micro_batch_size]
                out = self.module.generate(
                    input_ids=chunk_ids,
                    attention_mask=chunk_mask,
                    max_new_tokens=response_length,
                    eos_token_id=eos_ids,
                    pad_token_id=pad,
                    use_cache=True,
                    **kwargs,
                )
                responses.append(out[:, chunk_ids.shape[1] :])
        self.rng[stream] = holder["state"]
        self.module.train(was_training)

        response = torch.full((ids.shape[0], response_length), pad, dtype=input_ids.dtype)
        for start, chunk in zip(range(0, ids.shape[0], self.micro_batch_size), responses, strict=True):
            response[start : start + chunk.shape[0], : chunk.shape[1]] = chunk
        response_mask = get_response_mask(response, eos_token=eos_ids, dtype=attention_mask.dtype)
        response = torch.where(response_mask.bool(), response, torch.full_like(response, pad))
        full_mask = torch.cat([attention_mask, response_mask], dim=-1)
        batch = {
            "prompts": input_ids,
            "responses": response,
            "input_ids": torch.cat([input_ids, response], dim=-1),
            "attention_mask": full_mask,
            "position_ids": compute_position_id_with_mask(full_mask),
        }
        return DataProto.from_dict(tensors=batch, non_tensors=dict(prompts.non_tensor_batch))


class CPUActorRolloutWorkerGroup:
    """The calls ``RayPPOTrainer`` makes on ``actor_rollout_wg``, served in-process on CPU."""

    world_size = 1

    def __init__(self, config: DictConfig, tokenizer, *, seed: int = 0) -> None:
        self.full_config = config
        self.config = copy.deepcopy(config.actor_rollout_ref)
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.module = None
        self.use_reference = bool(self.config.actor.use_kl_loss)

    # ---------------------------------------------------------------- construction
    def init_model(self) -> None:
        from transformers import AutoModelForCausalLM
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.actor import DataParallelPPOActor
        from verl.workers.config.optimizer import build_optimizer

        ensure_cpu_runtime()
        torch.manual_seed(self.seed)
        path = self.config.model.path
        trust = bool(self.config.model.get("trust_remote_code", False))
        self.module = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=trust)
        if self.config.model.get("enable_gradient_checkpointing", False):
            self.module.gradient_checkpointing_enable()

        actor_cfg = self.config.actor
        with open_dict(actor_cfg):
            # The FSDP worker's normalisation: a mini-batch counts responses, per data-parallel rank.
            actor_cfg.ppo_mini_batch_size = int(actor_cfg.ppo_mini_batch_size) * int(self.config.rollout.n)
            if actor_cfg.ppo_micro_batch_size_per_gpu is None and not actor_cfg.use_dynamic_bsz:
                actor_cfg.ppo_micro_batch_size_per_gpu = actor_cfg.ppo_mini_batch_size
        optim_cfg = omega_conf_to_dataclass(actor_cfg.optim)
        self.optimizer = build_optimizer(self.module.parameters(), optim_cfg)
        self.lr_scheduler = self._build_scheduler(actor_cfg.optim)
        self.actor = DataParallelPPOActor(
            config=omega_conf_to_dataclass(actor_cfg), actor_module=self.module, actor_optimizer=self.optimizer
        )
        self.reference = None
        if self.use_reference:
            ref_module = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=trust)
            ref_module.requires_grad_(False)
            ref_cfg = copy.deepcopy(self.config.ref)
            with open_dict(ref_cfg):
                ref_cfg.use_remove_padding = False
                ref_cfg.use_fused_kernels = False
            self.reference = DataParallelPPOActor(config=ref_cfg, actor_module=ref_module)
        generation = self.module.generation_config
        eos = generation.eos_token_id if generation.eos_token_id is not None else self.tokenizer.eos_token_id
        pad = generation.pad_token_id if generation.pad_token_id is not None else self.tokenizer.pad_token_id
        self.rollout = CPURollout(
            self.module,
            self.config.rollout,
            eos,
            pad if pad is not None else eos,
            self.seed,
            tokenizer=self.tokenizer,
            data_config=self.full_config.get("data"),
        )
        self.rollout.latency = LatencyModel.from_mapping(self.full_config.get("kit", {}).get("tool_latency"))

    def _build_scheduler(self, optim_cfg: DictConfig):
        from verl.utils.torch_functional import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        total = int(optim_cfg.get("total_training_steps", 0) or 0)
        warmup = int(optim_cfg.get("lr_warmup_steps", -1))
        if warmup < 0:
            warmup = int(float(optim_cfg.get("lr_warmup_steps_ratio", 0.0)) * total)
        kind = optim_cfg.get("lr_scheduler_type", "constant")
        if kind == "constant":
            return get_constant_schedule_with_warmup(optimizer=self.optimizer, num_warmup_steps=warmup)
        if kind == "cosine":
            return get_cosine_schedule_with_warmup(
                optimizer=self.optimizer,
                num_warmup_steps=warmup,
                num_training_steps=total,
                min_lr_ratio=float(optim_cfg.get("min_lr_ratio", 0.0)),
                num_cycles=float(optim_cfg.get("num_cycles", 0.5)),
            )
        raise ValueError(f"lr_scheduler_type {kind!r} is not supported")

    # ---------------------------------------------------------------- the worker calls
    def generate_sequences(self, prompts):
        prompts = copy.deepcopy(prompts)  # Ray would copy the argument; keep the caller's meta_info intact
        start = time.perf_counter()
        output = self.rollout.generate_sequences(prompts)
        elapsed = time.perf_counter() - start
        output.meta_info["timing"] = {
            "generate_sequences": elapsed,
            "generation_timing/max": elapsed,
            "generation_timing/min": elapsed,
            "generation_timing/topk_ratio": 1.0,
        }
        return output

    def _log_prob_meta(self, data, section: DictConfig) -> None:
        data.meta_info["micro_batch_size"] = section.get("log_prob_micro_batch_size_per_gpu") or 64
        data.meta_info["max_token_len"] = section.get("log_prob_max_token_len_per_gpu") or 16384
        data.meta_info["use_dynamic_bsz"] = bool(section.get("log_prob_use_dynamic_bsz", False))
        data.meta_info["temperature"] = float(self.config.rollout.temperature)

    def compute_log_prob(self, data):
        from verl import DataProto

        data = copy.deepcopy(data)
        self._log_prob_meta(data, self.config.rollout)
        log_probs, entropys = self.actor.compute_log_prob(data=data, calculate_entropy=True)
        return DataProto.from_dict(
            tensors={"old_log_probs": log_probs, "entropys": entropys},
            meta_info={"temperature": float(self.config.rollout.temperature)},
        )

    def compute_ref_log_prob(self, data):
        from verl import DataProto

        if self.reference is None:
            raise RuntimeError("compute_ref_log_prob needs actor.use_kl_loss=True (a reference policy)")
        data = copy.deepcopy(data)
        self._log_prob_meta(data, self.config.ref)
        log_probs, _ = self.reference.compute_log_prob(data=data, calculate_entropy=False)
        return DataProto.from_dict(tensors={"ref_log_prob": log_probs})

    def update_actor(self, data):
        from verl import DataProto

        data = copy.deepcopy(data)
        start = time.perf_counter()
        metrics = self.actor.update_policy(data=data)
        metrics["perf/update_actor_seconds"] = time.perf_counter() - start
        metrics["actor/lr"] = float(self.lr_scheduler.get_last_lr()[0])
        self.lr_scheduler.step()
        return DataProto(meta_info={"metrics": metrics})

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "rollout_rng": dict(self.rollout.rng),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None) -> None:
        """Write model, optimizer, scheduler and sampling RNG to ``local_path`` (complete or absent)."""
        target = Path(local_path)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        torch.save(self.state_dict(), staging / CPU_WORKER_FILE)
        self.module.config.save_pretrained(staging / "huggingface")
        self.tokenizer.save_pretrained(staging / "huggingface")
        atomic_write_text(staging / "global_step.txt", f"{int(global_step)}\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        if max_ckpt_to_keep:
            self._prune(target, int(max_ckpt_to_keep))

    @staticmethod
    def _prune(target: Path, keep: int) -> None:
        """Keep the newest ``keep`` sibling ``global_step_*`` folders (verl's layout: step/actor)."""
        step_dir = target.parent
        for old in step_dirs(step_dir.parent)[:-keep]:
            if old != step_dir:
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=False) -> None:
        if local_path is None:
            return
        state = torch.load(Path(local_path) / CPU_WORKER_FILE, map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.rollout.rng = dict(state["rollout_rng"])
        torch.set_rng_state(state["torch_rng"])

    # ---------------------------------------------------------------- profiling hooks (no-ops on CPU)
    def start_profile(self, **kwargs) -> None:
        return None

    def stop_profile(self) -> None:
        return None

    def dump_memory_snapshot(self, tag: str = "manual", sub_dir: str | None = None) -> None:
        return None
