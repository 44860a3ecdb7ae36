"""GRPO: verl's stock ``fit()``, unchanged, plus the kit's checkpoints, metrics file and diagnostics."""

from __future__ import annotations

import numpy as np
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from spo_helpers.core.diagnostics import calibration, grpo_diagnostics
from spo_helpers.verl_glue.kit_trainer import KitTrainerMixin, first_occurrence_codes
from spo_helpers.verl_glue.sandbox_health import SandboxHealth
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
        self.step_records.log(self.global_steps, record)
        if known_keys:
            self.tracker.update(known_keys, np.clip(rewards[known], 0.0, 1.0))
        return metrics

    def fit(self):
        import verl.trainer.ppo.ray_trainer as ray_trainer

        from spo_helpers.progress import bars_in

        # verl's own bar ("Training Progress", as the SPO loop's) as a widget in a notebook
        with use_kit_tracking(str(self.layout.metrics), self._after_log), bars_in(ray_trainer):
            return super().fit()
