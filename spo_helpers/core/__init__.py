"""The SPO core: pure numpy, no files, no pandas, no verl (checked by ``tests/test_layers.py``).

- ``tracker``: the per-prompt Beta tracker, its offline prior and the forgetting factor ρ;
- ``sampler``: prompt selection by priority ``sqrt(p̂(1-p̂)) / N_eff^γ + ε``;
- ``advantages``: SPO's batch-normalised ``r - p̂`` and GRPO's group baseline;
- ``drift``: D, the policy drift on a prompt's previous response, and the bounded store of those responses;
- ``diagnostics``: zero-advantage shares, advantage variance and calibration, as metrics;
- ``metric_names``: the names of the metrics the trainers log.

    from spo_helpers.core import PrioritizedSampler, SamplerConfig, TrackerConfig, ValueTracker, spo_advantages
"""

from spo_helpers.core.advantages import grpo_advantages, spo_advantages
from spo_helpers.core.drift import ResponseStore, mean_abs_logprob_change
from spo_helpers.core.sampler import PrioritizedSampler, SamplerConfig
from spo_helpers.core.tracker import TrackerConfig, ValueTracker, forgetting_factor, offline_prior

__all__ = [
    "PrioritizedSampler",
    "ResponseStore",
    "SamplerConfig",
    "TrackerConfig",
    "ValueTracker",
    "forgetting_factor",
    "grpo_advantages",
    "mean_abs_logprob_change",
    "offline_prior",
    "spo_advantages",
]
