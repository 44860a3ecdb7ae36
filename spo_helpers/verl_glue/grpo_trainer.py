"""GRPO: verl's stock ``fit()``, unchanged, plus the kit's checkpoints, metrics file and diagnostics.

With a streamed schedule (``schedule=stream`` or ``overprovision``: tools on the cpu backend) the step loop is the
kit's (``_streamed_fit``): verl's pieces in verl's order (reward, old log-probs, GRPO advantages, actor update,
validation, checkpoint) on the groups the streaming engine completes, with the PPO ratio taken against each
token's behaviour log-prob; prompts come from a seeded ``PromptCycle`` (saved with the checkpoints) instead of
verl's data loader.
"""

from __future__ import annotations

import numpy as np
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from spo_helpers.core.diagnostics import calibration, grpo_diagnostics
from spo_helpers.verl_glue.kit_trainer import KitTrainerMixin, first_occurrence_codes
from spo_helpers.verl_glue.sandbox_health import SandboxHealth
from spo_helpers.verl_glue.streamed_batches import STALENESS_COLUMN, PromptCycle
from spo_helpers.verl_glue.tracking import use_kit_tracking
from spo_helpers.verl_glue.update_mask import without_samples, zero_variance_groups


class _GRPODiagnosticsProxy:
    """Wraps the actor worker group; on ``update_actor`` adds the kit's GRPO diagnostics."""

    def __init__(self, inner, trainer: GRPOTrainer) -> None:
        self._inner = inner
        self._trainer = trainer

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def update_actor(self, data):
        health = self._trainer._sandbox_health(data)
        extra = self._trainer._grpo_step_diagnostics(data, health)
        drop = None if health is None else health.failed_samples.copy()
        if self._trainer.config.algorithm.filter_groups.get("enable", False):
            rewards = data.batch["token_level_rewards"].sum(-1).double().numpy()
            flat = zero_variance_groups(rewards, data.non_tensor_batch["uid"])
            extra["kit/filtered_sample_share"] = float(flat.mean())
            drop = flat if drop is None else (drop | flat)
        with without_samples(data, drop):
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
        self._streaming = str(self.config.kit.get("schedule", {}).get("policy", "sync")) != "sync"
        self._prompt_cycle = PromptCycle(len(self.train_keys), int(self.config.kit.seed))

    def _kit_state(self) -> dict:
        state = super()._kit_state()
        if self._streaming:
            state["prompt_cycle"] = self._prompt_cycle.state_dict()
        return state

    def _load_kit_state(self, state: dict) -> None:
        super()._load_kit_state(state)
        if self._streaming and "prompt_cycle" in state:
            self._prompt_cycle.load_state_dict(state["prompt_cycle"])

    def init_workers(self) -> None:
        super().init_workers()
        self.actor_rollout_wg = _GRPODiagnosticsProxy(self.actor_rollout_wg, self)

    def _grpo_step_diagnostics(self, batch: DataProto, health: SandboxHealth | None = None) -> dict[str, float]:
        rewards = batch.batch["token_level_rewards"].sum(-1).double().numpy()
        mask = batch.batch["response_mask"].bool()
        first = mask.float().argmax(dim=-1)
        advantages = batch.batch["advantages"].gather(1, first[:, None]).squeeze(1).double().numpy()
        uids = batch.non_tensor_batch["uid"]
        keys = self._batch_keys(batch)
        known = np.array([k in self.tracker for k in keys])
        if health is not None:  # the shadow tracker takes no reward the sandbox decided
            known &= ~health.failed_samples
        metrics = grpo_diagnostics(rewards, uids, advantages)
        metrics.update(self._count_generation(batch))
        metrics.update(self._tool_metrics(batch, rewards))
        known_keys = [k for k, ok in zip(keys, known, strict=True) if ok]
        p_hat = self.tracker.p_hat(known_keys) if known_keys else np.empty(0)
        metrics.update(calibration(p_hat, rewards[known]))
        record = {
            "row": self.tracker.rows(known_keys).tolist() if known_keys else [],
            "reward": rewards[known].tolist(),
            "p_hat": p_hat.tolist(),
            "advantage": advantages[known].tolist(),
            "group": first_occurrence_codes(uids[known]).tolist(),
        }
        calls = self._tool_calls(batch)
        if calls is not None:
            record["tool_calls"] = calls[known].tolist()
        if STALENESS_COLUMN in batch.non_tensor_batch:  # streamed schedules
            record["staleness"] = batch.non_tensor_batch[STALENESS_COLUMN][known].tolist()
        self.step_records.log(self.global_steps, record)
        if known_keys:
            self.tracker.update(known_keys, np.clip(rewards[known], 0.0, 1.0))
        return metrics

    def fit(self):
        import verl.trainer.ppo.ray_trainer as ray_trainer

        from spo_helpers.progress import bars_in

        if self._streaming:
            return self._streamed_fit()
        # verl's own bar ("Training Progress", as the SPO loop's) as a widget in a notebook
        with use_kit_tracking(str(self.layout.metrics), self._after_log), bars_in(ray_trainer):
            return super().fit()

    # ------------------------------------------------------------------ streamed schedules
    def _streamed_fit(self) -> None:
        from spo_helpers.progress import TRAINING_BAR, progress_bar
        from spo_helpers.verl_glue.streamed_batches import StreamedBatches

        tracking = self._start_own_loop()
        if tracking is None:
            return
        progress = progress_bar(total=self.total_training_steps, initial=self.global_steps, desc=TRAINING_BAR)
        self.global_steps += 1
        if self.global_steps > self.total_training_steps:
            progress.close()
            return
        streamed = StreamedBatches(self, self._prompt_cycle.take)
        streamed.start()
        try:
            while self.global_steps <= self.total_training_steps:
                metrics = self._streamed_step(streamed)
                tracking.log(data=metrics, step=self.global_steps)
                progress.update(1)
                self.global_steps += 1
        finally:
            streamed.close()
            progress.close()

    def _streamed_step(self, streamed) -> dict:
        import torch
        from verl.trainer.ppo.metric_utils import (
            compute_data_metrics,
            compute_throughout_metrics,
            compute_timing_metrics,
        )
        from verl.trainer.ppo.ray_trainer import compute_advantage, compute_response_mask
        from verl.trainer.ppo.reward import compute_reward
        from verl.utils.debug import marked_timer
        from verl.utils.metric import reduce_metrics

        from spo_helpers.verl_glue.spo_trainer import rollout_correction

        metrics: dict = {}
        timing: dict = {}
        is_last_step = self.global_steps >= self.total_training_steps
        with marked_timer("step", timing):
            with marked_timer("gen", timing, color="red"):
                batch, _, stream_metrics, staleness = streamed.next_batch(self.global_steps)
            metrics.update(stream_metrics)
            batch.non_tensor_batch[STALENESS_COLUMN] = np.array(staleness, dtype=np.int64)
            if "response_mask" not in batch.batch.keys():  # noqa: SIM118 - a TensorDict
                batch.batch["response_mask"] = compute_response_mask(batch)
            batch.meta_info["global_token_num"] = torch.sum(batch.batch["attention_mask"], dim=-1).tolist()
            with marked_timer("reward", timing, color="yellow"):
                reward_tensor, reward_extra = compute_reward(batch, self.reward_fn)
            batch.batch["token_level_scores"] = reward_tensor
            batch.batch["token_level_rewards"] = reward_tensor
            if reward_extra:
                batch.non_tensor_batch.update({k: np.array(v) for k, v in reward_extra.items()})
            with marked_timer("old_log_prob", timing, color="blue"):
                batch = self._with_old_log_probs(batch, metrics)
            batch, correction = rollout_correction(batch, self.config)
            metrics.update(correction)
            self._use_behaviour_log_probs(batch, metrics)
            with marked_timer("adv", timing, color="brown"):
                algorithm = self.config.algorithm
                batch = compute_advantage(
                    batch,
                    adv_estimator=algorithm.adv_estimator,
                    gamma=algorithm.gamma,
                    lam=algorithm.lam,
                    num_repeat=int(self.config.actor_rollout_ref.rollout.n),
                    norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
                    config=algorithm,
                )
            with marked_timer("update_actor", timing, color="red"):
                batch.meta_info["multi_turn"] = self.config.actor_rollout_ref.rollout.multi_turn.enable
                output = self.actor_rollout_wg.update_actor(batch)  # the diagnostics proxy logs the step
            metrics.update(reduce_metrics(output.meta_info["metrics"]))
        trainer = self.config.trainer
        due = trainer.test_freq > 0 and (is_last_step or self.global_steps % trainer.test_freq == 0)
        if self.val_reward_fn is not None and due:
            with marked_timer("testing", timing, color="green"):
                metrics.update(self._validate())
        if trainer.save_freq > 0 and (is_last_step or self.global_steps % trainer.save_freq == 0):
            with marked_timer("save_checkpoint", timing, color="green"):
                self._save_checkpoint()
        if not is_last_step:
            streamed.resume()
        metrics.update({"training/global_step": self.global_steps, "training/epoch": self._prompt_cycle.epoch})
        metrics.update(compute_data_metrics(batch=batch, use_critic=False))
        metrics.update(compute_timing_metrics(batch=batch, timing_raw=timing))
        n_gpus = self.resource_pool_manager.get_n_gpus()
        metrics.update(compute_throughout_metrics(batch=batch, timing_raw=timing, n_gpus=n_gpus))
        return metrics
