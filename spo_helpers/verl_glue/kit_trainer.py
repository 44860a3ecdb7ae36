"""What both trainers share: the run folder's artefacts, the tracker, the worker backend and diagnostics.

- ``init_workers`` builds the in-process CPU worker group (backend ``cpu``) or verl's Ray workers (``ray``);
- the run folder gets ``prompts.parquet`` (one row per tracker row), ``tracker/<step>.npz`` snapshots at each
  validation, ``steps.jsonl`` (per-sample records) and verl's dumps written atomically;
- diagnostics for both methods (zero-advantage share, advantage variance, samples and tokens so far, tracker
  calibration) go into verl's metrics;
- checkpoints follow ``verl_glue.checkpoint``.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from verl import DataProto

from spo_helpers.core.metric_names import (
    RESPONSE_TOKENS_TOTAL,
    SAMPLES_TOTAL,
    TOOL_REWARD_WITH_CALL,
    TOOL_REWARD_WITHOUT_CALL,
)
from spo_helpers.core.tracker import TrackerConfig, ValueTracker
from spo_helpers.formats.atomic import atomic_write_bytes, atomic_write_text
from spo_helpers.formats.keys import explicit_key, prompt_key, row_key
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.offline_values import read_offline_values
from spo_helpers.formats.steplog import StepLog
from spo_helpers.verl_glue.checkpoint import CheckpointMixin
from spo_helpers.verl_glue.sandbox_health import DEFAULT_MAX_SHARE, SandboxHealth, check_step, step_health

logger = logging.getLogger(__name__)

DATA_SOURCE = "data_source"
"""verl's dataset column naming each row's benchmark; the kit's dump lines carry it too."""


class KitTrainerMixin(CheckpointMixin):
    """Shared by both trainers; put before ``RayPPOTrainer`` in the bases."""

    # ------------------------------------------------------------------ the kit's own step loops
    def _start_own_loop(self):
        """The start of a step loop of the kit's (SPO's, and GRPO's streamed one), as verl's ``fit()`` starts:
        the metrics tracking, the newest complete checkpoint, the initial validation. Returns the tracking, or
        None when the run only validates (``trainer.val_only``)."""
        from omegaconf import OmegaConf

        from spo_helpers.verl_glue.tracking import kit_tracking_class

        tracking = kit_tracking_class(str(self.layout.metrics), self._after_log)(
            project_name=self.config.trainer.project_name,
            experiment_name=self.config.trainer.experiment_name,
            default_backend=self.config.trainer.logger,
            config=OmegaConf.to_container(self.config, resolve=True),
        )
        self.global_steps = 0
        self._load_checkpoint()
        if self.val_reward_fn is not None and self.config.trainer.get("val_before_train", True):
            val_metrics = self._validate()
            logger.info("initial validation metrics: %s", val_metrics)
            tracking.log(data=val_metrics, step=self.global_steps)
            if self.config.trainer.get("val_only", False):
                return None
        return tracking

    def _with_old_log_probs(self, batch: DataProto, metrics: dict[str, Any]) -> DataProto:
        """The actor's log-probs of the batch's responses as ``old_log_probs`` (and ``actor/entropy``), as verl's
        ``fit()`` computes them; with streamed rollouts the PPO ratio is then taken against each token's
        behaviour log-prob instead (``rollout_log_probs``), and ``stream/behaviour_abs_logprob_gap`` says how far
        the actor has moved from it."""
        from verl.trainer.ppo.core_algos import agg_loss

        output = self.actor_rollout_wg.compute_log_prob(batch)
        entropys = output.batch.pop("entropys")
        mode = self.config.actor_rollout_ref.actor.loss_agg_mode
        entropy = agg_loss(loss_mat=entropys, loss_mask=batch.batch["response_mask"], loss_agg_mode=mode)
        metrics["actor/entropy"] = entropy.detach().item()
        return batch.union(output)

    @staticmethod
    def _use_behaviour_log_probs(batch: DataProto, metrics: dict[str, Any]) -> None:
        """Streamed rollouts: the PPO ratio against the policy that generated each token (module docstring of
        ``streamed_batches``); records the gap to the actor's log-probs first."""
        metrics["stream/behaviour_abs_logprob_gap"] = behaviour_gap(batch)
        batch.batch["old_log_probs"] = batch.batch["rollout_log_probs"].clone()

    # ------------------------------------------------------------------ setup
    def _kit_setup(self) -> None:
        kit = self.config.kit
        self.kit_backend = kit.backend
        self.run_dir = Path(kit.run_dir)
        self.layout = RunLayout(self.run_dir)
        self.step_records = StepLog(self.layout.steps)
        self.counters = {"samples_total": 0, "response_tokens_total": 0}
        self._own_loader_generator(int(kit.seed))
        self.train_keys, self.key_rows, difficulty = self._train_prompt_keys()
        self.tracker = self._build_tracker()
        self._write_prompt_table(difficulty)

    def _own_loader_generator(self, seed: int) -> None:
        """Keep the train loader's iterator off the global torch RNG.

        Creating a ``DataLoader`` iterator draws a base seed from the loader's generator, or from the global RNG
        when it has none. A straight run creates its train iterator before the step-k checkpoint saves the global
        RNG, a resumed run after the checkpoint restored it: one extra draw, and from then on the global RNG (saved
        in later checkpoints) differs from the straight run's although no result depends on it. The draw only
        seeds loader worker processes; the order of the prompts comes from the sampler's own generator.
        """
        self.train_dataloader.generator = torch.Generator().manual_seed(seed)

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
        atomic_write_bytes(self.layout.prompts, buffer.getvalue())

    def _validate(self):
        """verl's validation (its dump lines naming their data source), then a snapshot of the tracker
        (``tracker/<step>.npz``) for the analysis."""
        import verl.trainer.ppo.ray_trainer as ray_trainer

        original_metrics, original_reward = ray_trainer.process_validation_metrics, self.val_reward_fn
        if self.config.kit.get("vectorised_val_metrics", True):
            from spo_helpers.verl_glue.val_metrics import process_validation_metrics

            ray_trainer.process_validation_metrics = process_validation_metrics
        self.val_reward_fn = NamingDataSources(original_reward) if original_reward is not None else None
        try:
            metrics = super()._validate()
        finally:
            ray_trainer.process_validation_metrics, self.val_reward_fn = original_metrics, original_reward
        snapshot = self.layout.tracker_snapshot(self.global_steps)
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

    def _kit_state(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "tracker": self.tracker.state_dict()}

    def _load_kit_state(self, state: dict[str, Any]) -> None:
        self.counters = dict(state["counters"])
        self.tracker.load_state_dict(state["tracker"])

    def _log_rollout_data(self, batch: DataProto, reward_extra_infos_dict: dict, timing_raw: dict, rollout_data_dir):
        """verl's rollout dump, each line naming its data source (see ``NamingDataSources``)."""
        extra = with_data_sources(reward_extra_infos_dict, batch)
        super()._log_rollout_data(batch, extra, timing_raw, rollout_data_dir)

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
            SAMPLES_TOTAL: float(self.counters["samples_total"]),
            RESPONSE_TOKENS_TOTAL: float(self.counters["response_tokens_total"]),
        }

    @staticmethod
    def _tool_calls(batch: DataProto) -> np.ndarray | None:
        """Code runs per sample of a tool-integrated batch (``None`` without tools)."""
        rows = batch.non_tensor_batch.get("tool_metrics")
        if rows is None:
            return None
        return np.array([int((r or {}).get("tool_calls", 0) or 0) for r in rows], dtype=np.int64)

    def _sandbox_health(self, batch: DataProto) -> SandboxHealth | None:
        """The step's sandbox failures (``sandbox_health``), logged; stops the run when they are too many."""
        health = step_health(batch.non_tensor_batch.get("tool_metrics"))
        share = float(self.config.kit.get("max_sandbox_error_share", DEFAULT_MAX_SHARE))
        check_step(health, self.global_steps, share)
        return health

    def _tool_metrics(self, batch: DataProto, rewards: np.ndarray) -> dict[str, float]:
        """The agent loop's batch metrics and the mean reward with and without a code run ({} without tools)."""
        from spo_helpers.verl_glue.agent_loop.turns import summarize

        calls = self._tool_calls(batch)
        if calls is None:
            return {}
        metrics = summarize(list(batch.non_tensor_batch["tool_metrics"]))
        used = calls > 0
        if used.any():
            metrics[TOOL_REWARD_WITH_CALL] = float(np.mean(rewards[used]))
        if (~used).any():
            metrics[TOOL_REWARD_WITHOUT_CALL] = float(np.mean(rewards[~used]))
        return metrics

    def _batch_keys(self, batch: DataProto) -> list[str]:
        extra = batch.non_tensor_batch.get("extra_info")
        keys = []
        for i in range(len(batch)):
            key = explicit_key(extra[i] if extra is not None else None)
            keys.append(key if key is not None else prompt_key(batch.non_tensor_batch["raw_prompt"][i]))
        return keys


def with_data_sources(reward_extra_info: dict | None, batch: DataProto) -> dict:
    """``reward_extra_info`` plus the batch's ``data_source`` column (verl dumps every key of it, one per line)."""
    extra = dict(reward_extra_info or {})
    sources = batch.non_tensor_batch.get(DATA_SOURCE)
    if sources is not None:
        extra.setdefault(DATA_SOURCE, [str(s) for s in sources])
    return extra


class NamingDataSources:
    """verl's validation reward function, whose extra info also names each sample's data source.

    The dumps name each line's benchmark this way rather than through the reward function: a reward key equal to
    a dataset column breaks verl's asynchronous rollout. With ``reward_model.enable=false`` the agent loop scores
    each sample and turns every reward key into a batch column (verl ``experimental/agent_loop/agent_loop.py``
    583-586, a ``<U`` string array); the trainer then unions that with the batch, whose ``data_source`` column
    is an object array, and verl's ``union_numpy_dict`` refuses two dtypes for one key (``protocol.py`` 187-194:
    "`data_source` in tensor_dict1 and tensor_dict2 are not the same object"), at the first validation
    (``ray_trainer.py`` 603) and every training step (1077).
    """

    def __init__(self, reward_fn) -> None:
        self.reward_fn = reward_fn

    def __call__(self, data: DataProto, return_dict: bool = False):
        result = self.reward_fn(data, return_dict=return_dict)
        if not return_dict:
            return result
        return {**result, "reward_extra_info": with_data_sources(result.get("reward_extra_info"), data)}

    def __getattr__(self, name: str):
        return getattr(self.reward_fn, name)


def behaviour_gap(batch: DataProto) -> float:
    """Mean ``|log pi_now(y_t) - log mu(y_t)|`` over the batch's model tokens: how far the current policy (the
    batch's ``old_log_probs``) has moved from the one each token was sampled from (``rollout_log_probs``)."""
    mask = batch.batch["response_mask"].float()
    gap = (batch.batch["old_log_probs"] - batch.batch["rollout_log_probs"]).abs() * mask
    return float(gap.sum() / mask.sum().clamp(min=1.0))


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
