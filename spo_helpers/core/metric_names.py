"""Names of the metrics the trainers log and the analysis reads (``metrics.jsonl``, TensorBoard)."""

TRAIN_REWARD = "critic/score/mean"
"""verl's mean training reward of a step."""

TIMING_PREFIX = "timing_s/"
"""verl's seconds per phase of a step: ``timing_s/<phase>``."""

TIMING_STEP = TIMING_PREFIX + "step"
"""verl's seconds of a training step (the rollout wait and the update; not validation or checkpoints)."""

TIMING_GEN = TIMING_PREFIX + "gen"
"""verl's seconds of a step's generation."""

SAMPLES_TOTAL = "kit/samples_total"
"""Generated samples since the start of the run (the x axis at equal samples)."""

RESPONSE_TOKENS_TOTAL = "kit/response_tokens_total"
"""Generated response tokens since the start of the run."""

ZERO_ADV_FRAC = "kit/zero_adv_frac"
"""Share of the step's samples whose advantage is zero by construction (GRPO: groups with equal rewards)."""

ZERO_ADV_FRAC_REALISED = "kit/zero_adv_frac_realised"
"""Share of the step's samples whose advantage is (numerically) zero after normalisation."""

ADV_VAR_BEFORE_NORM = "kit/adv_var_before_norm"
"""Variance of the centred advantage before division by the std (``core.diagnostics``)."""

ADV_VAR_AFTER_NORM = "kit/adv_var_after_norm"
"""Variance of the advantage after normalisation."""

CALIBRATION_BRIER = "kit/calibration/brier"
"""SPO's Brier score ``mean((p̂ - r)²)`` on the step's batch."""

SPO_PREFIX = "spo/"
"""The official recipe's SPO metrics (``spo_trainer``); a run that logs any is an SPO run."""

SPO_RHO_CLIP_RATIO = "spo/rho_clip_ratio"
"""Share of the step's prompts whose forgetting factor ρ was clipped."""

VAL_CORE_PREFIX = "val-core/"
"""verl's validation metrics: ``val-core/<data_source>/<variable>/<statistic>``."""

TOOL_PREFIX = "tool/"
"""Tool-integrated runs: the agent loop's per-step metrics (``agent_loop.turns.summarize``)."""

TOOL_CALL_RATE = TOOL_PREFIX + "call_rate"
"""Share of the step's samples that ran code at least once."""

TOOL_CALLS_MEAN = TOOL_PREFIX + "calls/mean"
"""Code runs per sample."""

TOOL_ASSISTANT_TURNS_MEAN = TOOL_PREFIX + "assistant_turns/mean"
"""Generation rounds per sample."""

TOOL_ASSISTANT_TURNS_MAX = TOOL_PREFIX + "assistant_turns/max"
"""The most generation rounds a sample of the step took."""

TOOL_SANDBOX_LATENCY_MEAN = TOOL_PREFIX + "sandbox_latency/mean"
"""Seconds per code run in the sandbox."""

TOOL_REWARD_WITH_CALL = TOOL_PREFIX + "reward_with_call/mean"
"""Mean reward of the step's samples that ran code (absent when none did)."""

TOOL_REWARD_WITHOUT_CALL = TOOL_PREFIX + "reward_without_call/mean"
"""Mean reward of the step's samples that answered without running code (absent when all ran code)."""

STREAM_PREFIX = "stream/"
"""Streamed schedules: what the schedule did in the step (``verl_glue.streamed_batches``)."""

STREAM_SLOT_UTILISATION = STREAM_PREFIX + "slot_utilisation"
"""Share of the generation slots busy while the step waited for its batch."""

STREAM_DROPPED_TOTAL = STREAM_PREFIX + "dropped_total"
"""Samples dropped as too stale since the start of the run."""
