"""Names of the metrics the trainers log and the analysis reads (``metrics.jsonl``, TensorBoard)."""

TRAIN_REWARD = "critic/score/mean"
"""verl's mean training reward of a step."""

SAMPLES_TOTAL = "kit/samples_total"
"""Generated samples since the start of the run (the x axis at equal samples)."""

RESPONSE_TOKENS_TOTAL = "kit/response_tokens_total"
"""Generated response tokens since the start of the run."""

ZERO_ADV_FRAC = "kit/zero_adv_frac"
"""Share of the step's samples whose advantage is zero by construction (GRPO: groups with equal rewards)."""

ZERO_ADV_FRAC_REALISED = "kit/zero_adv_frac_realised"
"""Share of the step's samples whose advantage is (numerically) zero after normalisation."""

VAL_CORE_PREFIX = "val-core/"
"""verl's validation metrics: ``val-core/<data_source>/<variable>/<statistic>``."""

TOOL_PREFIX = "tool/"
"""Tool-integrated runs: the agent loop's per-step metrics (``agent_loop.turns.summarize``)."""

TOOL_CALL_RATE = "tool/call_rate"
"""Share of the step's samples that ran code at least once."""

TOOL_CALLS_MEAN = "tool/calls/mean"
"""Code runs per sample."""

TOOL_REWARD_WITH_CALL = "tool/reward_with_call/mean"
"""Mean reward of the step's samples that ran code (absent when none did)."""

TOOL_REWARD_WITHOUT_CALL = "tool/reward_without_call/mean"
"""Mean reward of the step's samples that answered without running code (absent when all ran code)."""
