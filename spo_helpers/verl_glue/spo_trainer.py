"""SPO: the single-stream loop on verl's trainer pieces.

One step: select prompts by priority → one response each → reward → old log-probs → SPO advantages
(``A = r - p̂`` with the pre-update p̂, batch-normalised) → actor update → drift D of each revisited prompt's
previous response (``verl_glue.drift_pass``) → ρ = clip(2^(-D/D_half), ρ_min, ρ_max) → tracker update
(``α ← ρα + r``, ``β ← ρβ + (1-r)``) → validate / checkpoint.

The other paths of the official SPO ``fit()`` (verl's ``RayPPOTrainer.fit`` of its commit), when switched on:

- profiling (``global_profiler.steps``, ``profile_continuous_steps``; the ``torch_memory`` tool's snapshot after
  each step): as verl's loop starts and stops it (``ProfileSteps``);
- the checkpoint forced before an ESI / capacity-block expiry (``MLP_CURRENT_CAPACITY_BLOCK_EXPIRATION_TIMESTAMP``
  or ``SAGEMAKER_CURRENT_CAPACITY_BLOCK_EXPIRATION_TIMESTAMP``, ``trainer.esi_redundant_time``): saved;
- rollout-vs-actor log-prob metrics and rollout importance sampling / rejection sampling in verl's decoupled mode
  (``rollout.calculate_log_probs``, ``algorithm.rollout_correction``): applied (``rollout_correction``);
- refused before the first step, with the reason: an asynchronous reward
  (``reward_model.launch_reward_fn_async``) and the rollout-correction bypass mode (``fit_path_refusals``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo.metric_utils import compute_data_metrics, compute_throughout_metrics, compute_timing_metrics
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_response_mask
from verl.trainer.ppo.reward import compute_reward
from verl.trainer.ppo.utils import Role
from verl.utils.checkpoint.checkpoint_manager import should_save_ckpt_esi
from verl.utils.debug import marked_timer
from verl.utils.metric import reduce_metrics

from spo_helpers.core.advantages import spo_advantages
from spo_helpers.core.diagnostics import calibration, quantiles, spo_diagnostics
from spo_helpers.core.drift import ResponseStore
from spo_helpers.core.metric_names import SPO_RHO_CLIP_RATIO
from spo_helpers.core.sampler import PrioritizedSampler, SamplerConfig
from spo_helpers.errors import UserError
from spo_helpers.verl_glue.drift_pass import drift_and_store
from spo_helpers.verl_glue.kit_trainer import KitTrainerMixin
from spo_helpers.verl_glue.sandbox_health import without_failed_samples
from spo_helpers.verl_glue.streamed_batches import STALENESS_COLUMN

logger = logging.getLogger(__name__)


BASELINES = ("tracker", "oracle")
"""``trainer.spo.baseline``: SPO's tracker p̂, or the oracle ablation (success rate under the current policy)."""


def fit_path_refusals(config) -> list[str]:
    """Paths of verl's ``fit()`` that SPO's loop does not run, switched on in ``config``: one reason each."""
    out = []
    if config.reward_model.get("launch_reward_fn_async", False):
        out.append(
            "reward_model.launch_reward_fn_async=True is not supported with METHOD=SPO: the SPO step needs the rewards "
            "for its advantages before the old-log-prob pass, as the official SPO fit() does, which reads the reward "
            "before an asynchronous one exists and fails in this mode; set it to False (with tools, the agent loop "
            "already scores each sample while generating; GRPO runs verl's own fit(), which supports it)"
        )
    if config.algorithm.get("filter_groups", {}).get("enable", False):
        out.append(
            "algorithm.filter_groups.enable=True filters GRPO's groups without a reward spread; SPO samples one "
            "response per prompt and has no groups: set it to False (or use METHOD=GRPO)"
        )
    if str(config.trainer.spo.get("baseline", "tracker")) not in BASELINES:
        out.append(f"trainer.spo.baseline must be one of {', '.join(BASELINES)}, got {config.trainer.spo.baseline!r}")
    correction = config.algorithm.get("rollout_correction", None)
    if correction is not None and correction.get("bypass_mode", False):
        out.append(
            "algorithm.rollout_correction.bypass_mode=True is not supported with METHOD=SPO: the official SPO fit() "
            "always recomputes the old log-probs; set it to False (rollout importance sampling and rejection "
            "sampling in the decoupled mode, algorithm.rollout_correction.rollout_is / rollout_rs, are supported)"
        )
    return out


def rollout_correction(batch: DataProto, config) -> tuple[DataProto, dict[str, Any]]:
    """verl's rollout-vs-actor metrics and rollout correction (decoupled mode), as verl's ``fit()`` applies them.

    Only when the rollout returned its own log-probs (``actor_rollout_ref.rollout.calculate_log_probs=True``):
    ``training/rollout_probs_diff_*`` (verl's debug metrics), then ``rollout_corr/*`` metrics, and with
    ``algorithm.rollout_correction.rollout_is`` / ``rollout_rs`` set, importance weights and rejection applied to
    the batch (``rollout_is_weights``, ``response_mask``). The batch needs its ``old_log_probs``.
    """
    if "rollout_log_probs" not in batch.batch.keys():  # noqa: SIM118 - a TensorDict
        return batch, {}
    from verl.utils.debug.metrics import calculate_debug_metrics

    metrics = dict(calculate_debug_metrics(batch))
    correction = config.algorithm.get("rollout_correction", None)
    if correction is not None:
        from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

        batch, corr_metrics = compute_rollout_correction_and_add_to_batch(batch, correction)
        metrics.update(corr_metrics)
    return batch, metrics


class ProfileSteps:
    """Whether verl's profiler starts before and stops after each step (``global_profiler``), as verl's ``fit()``
    decides: every listed step on its own, or with ``profile_continuous_steps`` one span per run of
    consecutive listed steps."""

    def __init__(self, steps, continuous: bool, first_step: int) -> None:
        self.steps = {int(s) for s in (steps or ())}
        self.continuous = bool(continuous)
        self.previous = False
        self.current = first_step in self.steps

    def start(self) -> bool:
        return (not self.previous and self.current) if self.continuous else self.current

    def stop(self, step: int) -> bool:
        following = step + 1 in self.steps
        out = (self.current and not following) if self.continuous else self.current
        self.previous, self.current = self.current, following
        return out


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
        refusals = fit_path_refusals(self.config)
        if refusals:
            raise UserError(refusals[0])
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
        self._oracle_baseline = str(spo.get("baseline", "tracker")) == "oracle"
        self._streaming = str(self.config.kit.get("schedule", {}).get("policy", "sync")) != "sync"
        if self._streaming and self._oracle_baseline:
            raise UserError("trainer.spo.baseline=oracle is an ablation of the synchronous loop: use schedule=sync")
        self._streamed = None  # StreamedBatches while fit() runs a streamed schedule

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

    def _oracle_success(self, selected: DataProto, selected_keys: list[str], order: list[str]) -> np.ndarray:
        """The oracle ablation's baseline: each selected prompt's success rate under the current policy, from
        ``trainer.spo.oracle_samples`` extra responses per prompt (scored, not trained on), in ``order`` (the
        batch's prompt order after balancing)."""
        samples = int(self.config.trainer.spo.oracle_samples)
        repeated = selected.repeat(repeat_times=samples, interleave=True)
        gen = self._get_gen_batch(repeated)
        gen.meta_info["global_steps"] = self.global_steps
        manager = self.async_rollout_manager if self.async_rollout_mode else self.actor_rollout_wg
        output = manager.generate_sequences(gen)
        output.meta_info.pop("timing", None)
        repeated = repeated.union(output)
        if "response_mask" not in repeated.batch.keys():  # noqa: SIM118 - a TensorDict
            repeated.batch["response_mask"] = compute_response_mask(repeated)
        reward_tensor, _ = compute_reward(repeated, self.reward_fn)
        rates = reward_tensor.sum(dim=-1).double().numpy().reshape(len(selected_keys), samples).mean(axis=1)
        by_key = dict(zip(selected_keys, rates, strict=True))
        return np.array([by_key[k] for k in order], dtype=np.float64)

    def _draw_prompts(self, count: int, busy: set[int]) -> list[int]:
        """Streaming's prompt source: ``count`` tracker rows from the prioritised sampler, none in ``busy`` (at most
        ``QUEUE_DRAWS`` sampler batches; each batch's priorities from the tracker as it stands)."""
        from spo_helpers.verl_glue.streamed_batches import QUEUE_DRAWS

        rows: list[int] = []
        for _ in range(QUEUE_DRAWS):
            for row in map(int, self.sampler.sample(self.tracker)):
                if row not in busy and row not in rows:
                    rows.append(row)
            if len(rows) >= count:
                break
        return rows[:count]

    def _pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------------ the loop
    def fit(self):
        tracking = self._start_own_loop()
        if tracking is None:
            return
        from spo_helpers.progress import TRAINING_BAR, progress_bar

        progress = progress_bar(total=self.total_training_steps, initial=self.global_steps, desc=TRAINING_BAR)
        self.global_steps += 1
        self.max_steps_duration = 0.0
        profiler = self.config.global_profiler
        self.profile_steps = ProfileSteps(profiler.steps, profiler.profile_continuous_steps, self.global_steps)
        memory_snapshots = self.config.actor_rollout_ref.actor.get("profiler", {}).get("tool") == "torch_memory"
        if self._streaming and self.global_steps <= self.total_training_steps:
            from spo_helpers.verl_glue.streamed_batches import StreamedBatches

            self._streamed = StreamedBatches(self, self._draw_prompts)
            self._streamed.start()
        try:
            while self.global_steps <= self.total_training_steps:
                metrics = self._spo_step()
                tracking.log(data=metrics, step=self.global_steps)
                progress.update(1)
                self.global_steps += 1
                if memory_snapshots:  # after the step counter moved on, as verl's fit() names them
                    self.actor_rollout_wg.dump_memory_snapshot(
                        tag=f"post_update_step{self.global_steps}", sub_dir=f"step{self.global_steps}"
                    )
        finally:
            if self._streamed is not None:
                self._streamed.close()
                self._streamed = None
        progress.close()

    def _spo_step(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        timing: dict[str, float] = {}
        is_last_step = self.global_steps >= self.total_training_steps
        with marked_timer("start_profile", timing):
            self._start_profiling(self.profile_steps.start())
        with marked_timer("step", timing):
            staleness = None
            if self._streamed is not None:
                oracle_source = None
                with marked_timer("gen", timing, color="red"):
                    batch, keys, stream_metrics, staleness = self._streamed.next_batch(self.global_steps)
                metrics.update(stream_metrics)
            else:
                batch, keys = self._select_batch()
                oracle_source = copy.deepcopy(batch) if self._oracle_baseline else None  # union edits in place
                oracle_keys = list(keys)
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
            if staleness is not None:
                batch.non_tensor_batch[STALENESS_COLUMN] = np.array(staleness, dtype=np.int64)
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

            health = self._sandbox_health(batch)  # stops the run here, before the update, when too many failed
            oracle_p = None
            if oracle_source is not None:
                with marked_timer("oracle", timing, color="cyan"):
                    oracle_p = self._oracle_success(oracle_source, oracle_keys, keys)
            with marked_timer("adv", timing, color="brown"):
                alpha, beta = self.tracker.alpha(keys), self.tracker.beta(keys)
                p_hat = self.tracker.p_hat(keys)
                advantages = spo_advantages(rewards, p_hat if oracle_p is None else oracle_p)
                response_mask = batch.batch["response_mask"]
                adv = torch.as_tensor(advantages, dtype=torch.float32)[:, None] * response_mask
                batch.batch["advantages"] = adv
                batch.batch["returns"] = adv.clone()
                batch.batch["token_level_scores"] = reward_tensor
                batch.batch["token_level_rewards"] = reward_tensor
                if reward_extra:
                    batch.non_tensor_batch.update({k: np.array(v) for k, v in reward_extra.items()})

            with marked_timer("old_log_prob", timing, color="blue"):
                batch = self._with_old_log_probs(batch, metrics)
            if self.use_reference_policy:
                with marked_timer(str(Role.RefPolicy), timing, color="olive"):
                    batch = batch.union(self.ref_policy_wg.compute_ref_log_prob(batch))
            batch, correction_metrics = rollout_correction(batch, self.config)
            metrics.update(correction_metrics)
            if self._streamed is not None:
                self._use_behaviour_log_probs(batch, metrics)

            with marked_timer("update_actor", timing, color="red"):
                batch.meta_info["multi_turn"] = self.config.actor_rollout_ref.rollout.multi_turn.enable
                with without_failed_samples(batch, health):
                    actor_output = self.actor_rollout_wg.update_actor(batch)
            metrics.update(reduce_metrics(actor_output.meta_info["metrics"]))

            with marked_timer("spo_rho", timing, color="purple"):
                rho_cfg = self.config.trainer.spo.rho
                first_ratio = float(np.mean(self.tracker.visits(keys) == 0))
                drift = (
                    drift_and_store(self.actor_rollout_wg, self.store, batch, keys, self._pad_token_id())
                    if rho_cfg.type == "kl"
                    else np.zeros(len(keys))
                )
                rho = self._update_tracker(keys, rewards, drift, health)
            visits = self.tracker.visits(keys)
            metrics.update(
                self._spo_metrics(rewards, alpha, beta, p_hat, advantages, drift, rho, first_ratio, visits, rho_cfg)
            )
            metrics.update(spo_diagnostics(rewards, p_hat, advantages))
            metrics.update(calibration(p_hat, rewards))
            metrics.update(self._count_generation(batch))
            metrics.update(self._tool_metrics(batch, rewards))
            record = {
                "row": self.tracker.rows(keys).tolist(),
                "reward": rewards.tolist(),
                "p_hat": p_hat.tolist(),
                "advantage": np.asarray(advantages).tolist(),
                "drift": drift.tolist(),
                "rho": rho.tolist(),
            }
            calls = self._tool_calls(batch)
            if calls is not None:
                record["tool_calls"] = calls.tolist()
            if staleness is not None:
                record["staleness"] = batch.non_tensor_batch[STALENESS_COLUMN].tolist()
            if oracle_p is not None:
                record["oracle_p"] = oracle_p.tolist()
                metrics["spo/oracle_p"] = float(oracle_p.mean())
                metrics["spo/p_hat_abs_error_vs_oracle"] = float(np.abs(p_hat - oracle_p).mean())
            if health is not None and health.failed_samples.any():
                record["sandbox_failed"] = health.failed_samples.tolist()
            self.step_records.log(self.global_steps, record)
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
        esi_close_to_expiration = should_save_ckpt_esi(
            max_steps_duration=self.max_steps_duration, redundant_time=self.config.trainer.esi_redundant_time
        )
        if self.config.trainer.save_freq > 0 and (
            is_last_step or self.global_steps % self.config.trainer.save_freq == 0 or esi_close_to_expiration
        ):
            if esi_close_to_expiration:
                logger.warning(
                    "step %d: checkpoint forced, the instance's capacity block expires soon", self.global_steps
                )
            with marked_timer("save_checkpoint", timing, color="green"):
                self._save_checkpoint()
        if self._streamed is not None and not is_last_step:
            self._streamed.resume()  # the update, validation and checkpoint are done: generation goes on
        with marked_timer("stop_profile", timing):
            self._stop_profiling(self.profile_steps.stop(self.global_steps))
        self.max_steps_duration = max(self.max_steps_duration, timing["step"])

        metrics.update({"training/global_step": self.global_steps, "training/epoch": self.sampler.epoch})
        metrics.update(compute_data_metrics(batch=batch, use_critic=False))
        metrics.update(compute_timing_metrics(batch=batch, timing_raw=timing))
        metrics.update(
            compute_throughout_metrics(batch=batch, timing_raw=timing, n_gpus=self.resource_pool_manager.get_n_gpus())
        )
        return metrics

    def _update_tracker(self, keys, rewards, drift, health) -> np.ndarray:
        """The tracker update of the step, without the prompts whose sample the sandbox failed
        (``sandbox_health``); returns ρ per sample (for those, the ρ a visit would have used)."""
        if health is None or not health.failed_samples.any():
            return self.tracker.update(keys, rewards, drift=drift)
        ok = ~health.failed_samples
        rho = self.tracker.forgetting_factor(drift)
        if ok.any():
            rho[ok] = self.tracker.update([k for k, use in zip(keys, ok, strict=True) if use], rewards[ok], drift[ok])
        return rho

    def _spo_metrics(self, rewards, alpha, beta, p_hat, advantages, drift, rho, first_ratio, visits, rho_cfg):
        """The official recipe's ``spo/*`` keys."""
        raw_rho = self.tracker.raw_forgetting_factor(drift)
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
            SPO_RHO_CLIP_RATIO: float(np.mean(raw_rho != rho)),
            "spo/first_sampled_ratio": float(first_ratio),
            "spo/cur_sampled_number/min": float(visits.min()),
            "spo/cur_sampled_number/max": float(visits.max()),
            "spo/cur_sampled_number/mean": float(visits.mean()),
            "spo/store_tokens": float(self.store.total_tokens),
            "spo/store_evictions": float(self.store.evictions),
        }
        metrics.update(quantiles(np.asarray(advantages), "spo/adv_after_norm"))
        return metrics
