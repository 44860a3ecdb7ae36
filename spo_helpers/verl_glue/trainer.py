"""GRPO and SPO trainers on verl 0.6.1's ``RayPPOTrainer``.

- ``GRPOTrainer`` runs verl's stock ``fit()`` unchanged.
- ``SPOTrainer`` replaces ``fit()`` with the SPO step, built from verl's pieces:
  select prompts by priority → one response each → reward → old log-probs → SPO
  advantages (``r - p̂`` with the pre-update p̂, batch-normalised) → actor update
  → drift D of each prompt's previous response → ρ → tracker update.

Both share ``KitTrainerMixin``:
- ``init_workers`` builds the in-process CPU worker group (backend ``cpu``) or
  verl's Ray workers (backend ``ray``);
- checkpoints also hold the kit's state (tracker, sampler RNG, stored responses,
  counters), written before verl's files, and a ``kit_complete.json`` marker
  written last; resuming picks the newest complete checkpoint;
- a resumed run does not validate again before training (the uninterrupted run
  did not), so its metrics equal those of a run that never stopped;
- diagnostics for both methods (zero-advantage share, advantage variance,
  samples and tokens so far, tracker calibration) go into verl's metrics.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from pprint import pprint
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.metric_utils import compute_data_metrics, compute_throughout_metrics, compute_timing_metrics
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_response_mask
from verl.trainer.ppo.reward import compute_reward
from verl.trainer.ppo.utils import Role
from verl.utils.debug import marked_timer
from verl.utils.metric import reduce_metrics

from spo_helpers.core.advantages import spo_advantages
from spo_helpers.core.diagnostics import calibration, grpo_diagnostics, quantiles, spo_diagnostics
from spo_helpers.core.drift import ResponseStore, mean_abs_logprob_change
from spo_helpers.core.sampler import PrioritizedSampler, SamplerConfig
from spo_helpers.core.tracker import TrackerConfig, ValueTracker
from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from spo_helpers.formats.keys import explicit_key, prompt_key, row_key
from spo_helpers.formats.offline_values import read_offline_values
from spo_helpers.formats.steplog import StepLog
from spo_helpers.verl_glue.tracking import kit_tracking_class, use_kit_tracking

COMPLETE_MARKER = "kit_complete.json"
KIT_STATE_DIR = "kit_state"
LATEST_FILE = "latest_checkpointed_iteration.txt"


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class RunStopped(RuntimeError):
    """Raised on purpose after a checkpoint when ``kit.stop_after_step`` is set."""


def newest_complete_checkpoint(root: str | os.PathLike) -> Path | None:
    """The ``global_step_N`` folder with the largest N that has the completion marker."""
    folder = Path(root)
    if not folder.is_dir():
        return None
    complete = [
        p
        for p in folder.glob("global_step_*")
        if p.name.split("_")[-1].isdigit() and (p / COMPLETE_MARKER).is_file() and (p / "actor").is_dir()
    ]
    return max(complete, key=lambda p: int(p.name.split("_")[-1]), default=None)


class KitTrainerMixin:
    """Shared by both trainers; put before ``RayPPOTrainer`` in the bases."""

    # ------------------------------------------------------------------ setup
    def _kit_setup(self) -> None:
        kit = self.config.kit
        self.kit_backend = kit.backend
        self.run_dir = Path(kit.run_dir)
        self.step_records = StepLog(self.run_dir / "steps.jsonl")
        self.counters = {"samples_total": 0, "response_tokens_total": 0}
        self.train_keys, self.key_rows, difficulty = self._train_prompt_keys()
        self.tracker = self._build_tracker()
        self._write_prompt_table(difficulty)

    def _write_prompt_table(self, difficulty: list[int | None]) -> None:
        """``prompts.parquet``: per tracker row its key, dataset row, difficulty (if known) and prior."""
        import pandas as pd

        table = pd.DataFrame(
            {
                "row": np.arange(len(self.train_keys)),
                "prompt_key": self.train_keys,
                "dataset_index": self.key_rows,
                "difficulty": pd.array(difficulty, dtype="Int64"),
                "p_hat0": self.tracker.p_hat(),
                "n_eff0": self.tracker.n_eff(),
                "has_offline_values": self.tracker.has_offline_values(),
            }
        )
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        atomic_write_bytes(self.run_dir / "prompts.parquet", buffer.getvalue())

    def _validate(self):
        """verl's validation, then a snapshot of the tracker (``tracker/<step>.npz``) for the analysis."""
        if self.config.kit.get("vectorised_val_metrics", True):
            import verl.trainer.ppo.ray_trainer as ray_trainer

            from spo_helpers.verl_glue.val_metrics import process_validation_metrics

            original = ray_trainer.process_validation_metrics
            ray_trainer.process_validation_metrics = process_validation_metrics
            try:
                metrics = super()._validate()
            finally:
                ray_trainer.process_validation_metrics = original
        else:
            metrics = super()._validate()
        snapshot = self.run_dir / "tracker" / f"{self.global_steps}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, alpha=self.tracker.alpha(), beta=self.tracker.beta(), visits=self.tracker.visits())
        atomic_write_bytes(snapshot, buffer.getvalue())
        return metrics

    def _train_prompt_keys(self) -> tuple[list[str], np.ndarray, list[int | None]]:
        """One pass over the training set: unique prompt keys and, per key, its first row and difficulty."""
        frame = self.train_dataset.dataframe
        keys, rows, difficulty, seen = [], [], [], set()
        for index, row in enumerate(frame):
            key = row_key(row)
            if key not in seen:
                seen.add(key)
                keys.append(key)
                rows.append(index)
                info = row.get("extra_info")
                difficulty.append(info.get("difficulty") if isinstance(info, dict) else None)
        self.duplicate_prompt_rows = len(frame) - len(keys)
        return keys, np.asarray(rows, dtype=np.int64), difficulty

    def _build_tracker(self) -> ValueTracker:
        spo = self.config.trainer.spo
        rho = spo.rho
        config = TrackerConfig(
            offline_n=int(spo.offline_N),
            rho_min=float(rho.clip_lower),
            rho_max=float(rho.clip_upper),
            d_half=float(rho.d_half),
            rho_mode=str(rho.type),
            rho_const=float(rho.value),
        )
        values = read_offline_values(spo.offline_values) if spo.get("offline_values") else {}
        return ValueTracker.from_offline_values(values, config, keys=self.train_keys, seed=int(self.config.kit.seed))

    # ------------------------------------------------------------------ workers
    def init_workers(self) -> None:
        if self.kit_backend == "cpu":
            from spo_helpers.verl_glue.cpu_backend import CPUActorRolloutWorkerGroup

            self.actor_rollout_wg = CPUActorRolloutWorkerGroup(
                self.config, self.tokenizer, seed=int(self.config.kit.seed)
            )
            self.actor_rollout_wg.init_model()
            if self.use_reference_policy:
                self.ref_policy_wg = self.actor_rollout_wg
            self.rm_wg = None
            self.async_rollout_mode = False
        else:
            super().init_workers()

    # ------------------------------------------------------------------ checkpoints
    def _kit_state(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "tracker": self.tracker.state_dict()}

    def _load_kit_state(self, state: dict[str, Any]) -> None:
        self.counters = dict(state["counters"])
        self.tracker.load_state_dict(state["tracker"])

    def _save_checkpoint(self) -> None:
        """Called by verl's loop before it logs the step: defer until the step's metrics are on disk."""
        self._checkpoint_pending = True

    def _after_log(self, step: int) -> None:
        if getattr(self, "_checkpoint_pending", False):
            self._checkpoint_pending = False
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        """Kit state, then verl's files (actor, data.pt), then the completion marker."""
        root = Path(self.config.trainer.default_local_dir)
        step_dir = root / f"global_step_{self.global_steps}"
        (step_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        state_dir = step_dir / KIT_STATE_DIR
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(state_dir / "state.pt", _torch_bytes(self._kit_state()))
        super()._save_checkpoint()
        atomic_write_json(step_dir / COMPLETE_MARKER, {"global_step": self.global_steps, "time": time.time()})
        atomic_write_text(root / LATEST_FILE, str(self.global_steps))
        stop_after = self.config.kit.get("stop_after_step")
        if stop_after is not None and self.global_steps >= int(stop_after):
            raise RunStopped(f"stopped after the checkpoint of step {self.global_steps} (kit.stop_after_step)")

    def _load_checkpoint(self):
        trainer_cfg = self.config.trainer
        root = Path(trainer_cfg.default_local_dir)
        if trainer_cfg.resume_mode == "auto":
            newest = newest_complete_checkpoint(root)
            latest = root / LATEST_FILE
            if newest is None:
                latest.unlink(missing_ok=True)  # a crash before any complete checkpoint: start fresh
            else:
                atomic_write_text(latest, newest.name.split("_")[-1])
        result = super()._load_checkpoint()
        if self.global_steps > 0:
            step_dir = (
                Path(trainer_cfg.resume_from_path)
                if trainer_cfg.resume_mode == "resume_path"
                else root / f"global_step_{self.global_steps}"
            )
            state_file = step_dir / KIT_STATE_DIR / "state.pt"
            if not state_file.is_file():
                raise UserError(
                    f"{step_dir}: checkpoint has no kit state ({state_file}); it was not written by the kit"
                )
            self._load_kit_state(torch.load(state_file, map_location="cpu", weights_only=False))
            with open_dict(trainer_cfg):
                trainer_cfg.val_before_train = False  # the uninterrupted run validated at step 0 only
        return result

    def _dump_generations(self, inputs, outputs, gts, scores, reward_extra_infos_dict, dump_path):
        """verl's JSONL dump format, written atomically (one line per sample)."""
        n = len(inputs)
        columns = {"input": inputs, "output": outputs, "gts": gts, "score": scores, "step": [self.global_steps] * n}
        for key, values in reward_extra_infos_dict.items():
            if len(values) == n and key not in columns:
                columns[key] = values
        lines = [json.dumps({k: _plain(v[i]) for k, v in columns.items()}, ensure_ascii=False) for i in range(n)]
        atomic_write_text(Path(dump_path) / f"{self.global_steps}.jsonl", "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ diagnostics
    def _count_generation(self, batch: DataProto) -> dict[str, float]:
        self.counters["samples_total"] += len(batch)
        self.counters["response_tokens_total"] += int(batch.batch["response_mask"].sum().item())
        return {
            "kit/samples_total": float(self.counters["samples_total"]),
            "kit/response_tokens_total": float(self.counters["response_tokens_total"]),
        }

    def _batch_keys(self, batch: DataProto) -> list[str]:
        extra = batch.non_tensor_batch.get("extra_info")
        keys = []
        for i in range(len(batch)):
            key = explicit_key(extra[i] if extra is not None else None)
            keys.append(key if key is not None else prompt_key(batch.non_tensor_batch["raw_prompt"][i]))
        return keys


def first_occurrence_codes(ids) -> np.ndarray:
    """Integer codes numbered by first appearance (stable across runs whatever the ids are)."""
    codes: dict[Any, int] = {}
    return np.array([codes.setdefault(i, len(codes)) for i in ids], dtype=np.int64)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class _GRPODiagnosticsProxy:
    """Wraps the actor worker group; on ``update_actor`` adds the kit's GRPO diagnostics."""

    def __init__(self, inner, trainer: GRPOTrainer) -> None:
        self._inner = inner
        self._trainer = trainer

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def update_actor(self, data):
        extra = self._trainer._grpo_step_diagnostics(data)
        output = self._inner.update_actor(data)
        output.meta_info.setdefault("metrics", {}).update(extra)
        return output


class GRPOTrainer(KitTrainerMixin, RayPPOTrainer):
    """verl's GRPO, unchanged, plus the kit's checkpoints, metrics file and diagnostics.

    A shadow tracker, updated with every GRPO reward (drift 0: no extra log-prob
    passes), measures how well SPO's baseline would have predicted GRPO's rewards.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._kit_setup()

    def init_workers(self) -> None:
        super().init_workers()
        self.actor_rollout_wg = _GRPODiagnosticsProxy(self.actor_rollout_wg, self)

    def _grpo_step_diagnostics(self, batch: DataProto) -> dict[str, float]:
        rewards = batch.batch["token_level_rewards"].sum(-1).double().numpy()
        mask = batch.batch["response_mask"].bool()
        first = mask.float().argmax(dim=-1)
        advantages = batch.batch["advantages"].gather(1, first[:, None]).squeeze(1).double().numpy()
        uids = batch.non_tensor_batch["uid"]
        keys = self._batch_keys(batch)
        known = np.array([k in self.tracker for k in keys])
        metrics = grpo_diagnostics(rewards, uids, advantages)
        metrics.update(self._count_generation(batch))
        known_keys = [k for k, ok in zip(keys, known, strict=True) if ok]
        p_hat = self.tracker.p_hat(known_keys) if known_keys else np.empty(0)
        metrics.update(calibration(p_hat, rewards[known]))
        self.step_records.log(
            self.global_steps,
            {
                "row": self.tracker.rows(known_keys).tolist() if known_keys else [],
                "reward": rewards[known].tolist(),
                "p_hat": p_hat.tolist(),
                "advantage": advantages[known].tolist(),
                "group": first_occurrence_codes(uids[known]).tolist(),
            },
        )
        if known_keys:
            self.tracker.update(known_keys, np.clip(rewards[known], 0.0, 1.0))
        return metrics

    def fit(self):
        with use_kit_tracking(str(self.run_dir / "metrics.jsonl"), self._after_log):
            return super().fit()


class SPOTrainer(KitTrainerMixin, RayPPOTrainer):
    """SPO's single-stream loop on verl's trainer pieces."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if int(self.config.actor_rollout_ref.rollout.n) != 1:
            raise UserError(
                f"SPO samples one response per prompt; got actor_rollout_ref.rollout.n="
                f"{self.config.actor_rollout_ref.rollout.n} (set N_TRAIN=1 or use METHOD=GRPO)"
            )
        if self.config.algorithm.use_kl_in_reward:
            raise UserError("SPO's tracker needs the task reward: algorithm.use_kl_in_reward must be False")
        self._kit_setup()
        spo = self.config.trainer.spo
        gen_batch = self.config.data.get("gen_batch_size", None)
        self.sampler = PrioritizedSampler(
            len(self.train_keys),
            SamplerConfig(
                batch_size=int(self.config.data.train_batch_size),
                pool_size=int(gen_batch) if gen_batch else None,
                mode=str(spo.sampler.mode),
                eps=float(spo.sampler.eps),
                gamma=float(spo.sampler.gamma),
                seed=int(self.config.kit.seed),
            ),
        )
        self.store = ResponseStore(int(spo.store_max_tokens))

    # ------------------------------------------------------------------ state
    def _kit_state(self) -> dict[str, Any]:
        state = super()._kit_state()
        state["sampler"] = self.sampler.state_dict()
        store = self.store.state_dict()
        store["token_ids"] = torch.from_numpy(store["token_ids"])
        store["logprobs"] = torch.from_numpy(store["logprobs"])
        state["store"] = store
        return state

    def _load_kit_state(self, state: dict[str, Any]) -> None:
        super()._load_kit_state(state)
        self.sampler.load_state_dict(state["sampler"])
        store = dict(state["store"])
        store["token_ids"] = store["token_ids"].numpy()
        store["logprobs"] = store["logprobs"].numpy()
        self.store.load_state_dict(store)

    # ------------------------------------------------------------------ one step's pieces
    def _select_batch(self) -> tuple[DataProto, list[str]]:
        rows = self.sampler.sample(self.tracker)
        keys = self.tracker.keys_at(rows)
        items = [self.train_dataset[int(self.key_rows[r])] for r in rows]
        from verl.utils.dataset.rl_dataset import collate_fn

        batch = DataProto.from_single_dict(collate_fn(items))
        batch.non_tensor_batch["uid"] = np.array([f"{self.global_steps}-{i}" for i in range(len(batch))], dtype=object)
        return batch, keys

    def _previous_responses(self, batch: DataProto, keys: list[str]) -> tuple[DataProto | None, list[int], list]:
        """Rebuild (prompt, stored previous response) sequences for revisited prompts."""
        from verl.utils.model import compute_position_id_with_mask

        revisit = [i for i, k in enumerate(keys) if k in self.store]
        if not revisit:
            return None, [], []
        prompts = batch.batch["prompts"][revisit]
        prompt_len = prompts.shape[1]
        prompt_mask = batch.batch["attention_mask"][revisit, :prompt_len]
        width = batch.batch["responses"].shape[1]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        responses = torch.full((len(revisit), width), pad, dtype=prompts.dtype)
        response_mask = torch.zeros((len(revisit), width), dtype=prompt_mask.dtype)
        stored = []
        for j, i in enumerate(revisit):
            ids, logp = self.store.get(keys[i])
            length = min(ids.size, width)
            responses[j, :length] = torch.from_numpy(ids[:length].astype(np.int64))
            response_mask[j, :length] = 1
            stored.append(logp[:length])
        mask = torch.cat([prompt_mask, response_mask], dim=-1)
        data = DataProto.from_dict(
            tensors={
                "prompts": prompts,
                "responses": responses,
                "input_ids": torch.cat([prompts, responses], dim=-1),
                "attention_mask": mask,
                "position_ids": compute_position_id_with_mask(mask),
                "response_mask": response_mask,
            }
        )
        return data, revisit, stored

    def _drift_and_store(self, batch: DataProto, keys: list[str]) -> np.ndarray:
        """After the update: D for revisited prompts, then store this step's responses and log-probs."""
        select = ["prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask"]
        current = DataProto.from_dict(tensors={k: batch.batch[k] for k in select})
        previous, revisit, stored = self._previous_responses(batch, keys)
        combined = current if previous is None else DataProto.concat([current, previous])
        # Ray worker groups split a batch evenly across data-parallel ranks: pad, then drop the padding.
        padded, _ = pad_dataproto_to_divisor(combined, self.actor_rollout_wg.world_size)
        log_probs = self.actor_rollout_wg.compute_log_prob(padded).batch["old_log_probs"].float()
        log_probs = log_probs[: len(combined)]
        size = len(batch)
        drift = np.zeros(size, dtype=np.float64)
        if previous is not None:
            now = log_probs[size:].numpy()
            mask = previous.batch["response_mask"].numpy()
            then = np.zeros_like(now)
            for j, lp in enumerate(stored):
                then[j, : lp.size] = lp
            drift[revisit] = mean_abs_logprob_change(now, then, mask)
        response_mask = batch.batch["response_mask"].bool()
        for i, key in enumerate(keys):
            valid = response_mask[i]
            self.store.put(key, batch.batch["responses"][i][valid].numpy(), log_probs[i][valid].numpy())
        return drift

    # ------------------------------------------------------------------ the loop
    def fit(self):
        logger = kit_tracking_class(str(self.run_dir / "metrics.jsonl"), self._after_log)(
            project_name=self.config.trainer.project_name,
            experiment_name=self.config.trainer.experiment_name,
            default_backend=self.config.trainer.logger,
            config=OmegaConf.to_container(self.config, resolve=True),
        )
        self.global_steps = 0
        self._load_checkpoint()
        if self.val_reward_fn is not None and self.config.trainer.get("val_before_train", True):
            val_metrics = self._validate()
            pprint(f"Initial validation metrics: {val_metrics}")
            logger.log(data=val_metrics, step=self.global_steps)
            if self.config.trainer.get("val_only", False):
                return
        from tqdm import tqdm

        progress = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="SPO training")
        self.global_steps += 1
        while self.global_steps <= self.total_training_steps:
            metrics = self._spo_step()
            logger.log(data=metrics, step=self.global_steps)
            progress.update(1)
            self.global_steps += 1
        progress.close()

    def _spo_step(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        timing: dict[str, float] = {}
        is_last_step = self.global_steps >= self.total_training_steps
        with marked_timer("step", timing):
            batch, keys = self._select_batch()
            gen_batch = self._get_gen_batch(batch)
            gen_batch.meta_info["global_steps"] = self.global_steps
            with marked_timer("gen", timing, color="red"):
                if self.async_rollout_mode:
                    gen_output = self.async_rollout_manager.generate_sequences(gen_batch)
                else:
                    gen_output = self.actor_rollout_wg.generate_sequences(gen_batch)
                timing.update(gen_output.meta_info.pop("timing", {}))
            batch = batch.union(gen_output)
            batch.non_tensor_batch["spo_key"] = np.array(keys, dtype=object)
            if "response_mask" not in batch.batch.keys():  # noqa: SIM118 - a TensorDict
                batch.batch["response_mask"] = compute_response_mask(batch)
            if self.config.trainer.balance_batch:
                self._balance_batch(batch, metrics=metrics)
            batch.meta_info["global_token_num"] = torch.sum(batch.batch["attention_mask"], dim=-1).tolist()
            keys = list(batch.non_tensor_batch["spo_key"])

            with marked_timer("reward", timing, color="yellow"):
                reward_tensor, reward_extra = compute_reward(batch, self.reward_fn)
            rewards = reward_tensor.sum(dim=-1).double().numpy()
            bad = (rewards < 0) | (rewards > 1) | ~np.isfinite(rewards)
            if bad.any():
                raise UserError(
                    f"SPO needs rewards in [0, 1]; the reward function returned {rewards[bad][:3].tolist()}"
                    " (map failures to 0, as the kit's reward does)"
                )

            with marked_timer("adv", timing, color="brown"):
                alpha, beta = self.tracker.alpha(keys), self.tracker.beta(keys)
                p_hat = alpha / (alpha + beta)
                advantages = spo_advantages(rewards, p_hat)
                response_mask = batch.batch["response_mask"]
                adv = torch.as_tensor(advantages, dtype=torch.float32)[:, None] * response_mask
                batch.batch["advantages"] = adv
                batch.batch["returns"] = adv.clone()
                batch.batch["token_level_scores"] = reward_tensor
                batch.batch["token_level_rewards"] = reward_tensor
                if reward_extra:
                    batch.non_tensor_batch.update({k: np.array(v) for k, v in reward_extra.items()})

            with marked_timer("old_log_prob", timing, color="blue"):
                old_log_prob = self.actor_rollout_wg.compute_log_prob(batch)
                entropys = old_log_prob.batch.pop("entropys")
                loss_agg_mode = self.config.actor_rollout_ref.actor.loss_agg_mode
                entropy = agg_loss(loss_mat=entropys, loss_mask=response_mask, loss_agg_mode=loss_agg_mode)
                metrics["actor/entropy"] = entropy.detach().item()
                batch = batch.union(old_log_prob)
            if self.use_reference_policy:
                with marked_timer(str(Role.RefPolicy), timing, color="olive"):
                    batch = batch.union(self.ref_policy_wg.compute_ref_log_prob(batch))

            with marked_timer("update_actor", timing, color="red"):
                batch.meta_info["multi_turn"] = self.config.actor_rollout_ref.rollout.multi_turn.enable
                actor_output = self.actor_rollout_wg.update_actor(batch)
            metrics.update(reduce_metrics(actor_output.meta_info["metrics"]))

            with marked_timer("spo_rho", timing, color="purple"):
                rho_cfg = self.config.trainer.spo.rho
                first_ratio = float(np.mean(self.tracker.visits(keys) == 0))
                drift = self._drift_and_store(batch, keys) if rho_cfg.type == "kl" else np.zeros(len(keys))
                rho = self.tracker.update(keys, rewards, drift=drift)
            visits = self.tracker.visits(keys)
            metrics.update(
                self._spo_metrics(rewards, alpha, beta, p_hat, advantages, drift, rho, first_ratio, visits, rho_cfg)
            )
            metrics.update(spo_diagnostics(rewards, p_hat, advantages))
            metrics.update(calibration(p_hat, rewards))
            metrics.update(self._count_generation(batch))
            self.step_records.log(
                self.global_steps,
                {
                    "row": self.tracker.rows(keys).tolist(),
                    "reward": rewards.tolist(),
                    "p_hat": p_hat.tolist(),
                    "advantage": np.asarray(advantages).tolist(),
                    "drift": drift.tolist(),
                    "rho": rho.tolist(),
                },
            )
            rollout_dir = self.config.trainer.get("rollout_data_dir", None)
            if rollout_dir:
                self._log_rollout_data(batch, reward_extra, timing, rollout_dir)

        if (
            self.val_reward_fn is not None
            and self.config.trainer.test_freq > 0
            and (is_last_step or self.global_steps % self.config.trainer.test_freq == 0)
        ):
            with marked_timer("testing", timing, color="green"):
                metrics.update(self._validate())
        if self.config.trainer.save_freq > 0 and (
            is_last_step or self.global_steps % self.config.trainer.save_freq == 0
        ):
            with marked_timer("save_checkpoint", timing, color="green"):
                self._save_checkpoint()

        metrics.update({"training/global_step": self.global_steps, "training/epoch": self.sampler.epoch})
        metrics.update(compute_data_metrics(batch=batch, use_critic=False))
        metrics.update(compute_timing_metrics(batch=batch, timing_raw=timing))
        metrics.update(
            compute_throughout_metrics(batch=batch, timing_raw=timing, n_gpus=self.resource_pool_manager.get_n_gpus())
        )
        return metrics

    def _spo_metrics(self, rewards, alpha, beta, p_hat, advantages, drift, rho, first_ratio, visits, rho_cfg):
        """The official recipe's ``spo/*`` keys."""
        raw_rho = np.exp2(-drift / float(rho_cfg.d_half)) if rho_cfg.type == "kl" else rho
        metrics = {
            "spo/reward": float(rewards.mean()),
            "spo/alpha": float(alpha.mean()),
            "spo/beta": float(beta.mean()),
            "spo/Neff": float((alpha + beta).mean()),
            "spo/p_hats": float(p_hat.mean()),
            "spo/adv_before_norm": float((rewards - p_hat).mean()),
            "spo/D": float(drift.mean()),
            "spo/rho": float(np.mean(raw_rho)),
            "spo/rho_clipped": float(rho.mean()),
            "spo/rho_clip_ratio": float(np.mean(raw_rho != rho)),
            "spo/first_sampled_ratio": float(first_ratio),
            "spo/cur_sampled_number/min": float(visits.min()),
            "spo/cur_sampled_number/max": float(visits.max()),
            "spo/cur_sampled_number/mean": float(visits.mean()),
            "spo/store_tokens": float(self.store.total_tokens),
            "spo/store_evictions": float(self.store.evictions),
        }
        metrics.update(quantiles(np.asarray(advantages), "spo/adv_after_norm"))
        return metrics
