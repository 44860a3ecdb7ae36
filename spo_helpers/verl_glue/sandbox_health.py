"""The code runs of a training step that the sandbox failed: left out of the update, reported, and a run stopped
when they are too many.

A sandbox failure (``agent_loop/tool.py``: unreachable, a broken connection, an HTTP exchange that timed out, a
5xx answer after the retries, the sandbox's own error) says nothing about the program or the policy. What happens
to a sample with one:

- **what the model read**: the official tool's text for a run that did not finish, ``no stdout here`` (verl's
  ``SandboxFusionTool.execute_code``), so the trajectory is the one the official recipe would have produced;
- **not trained on**: its response mask is zeroed for the actor update (no gradient from it), and SPO's tracker
  does not take its reward (the reward measures the sandbox, not the policy). GRPO's advantages are verl's,
  computed before the kit sees the batch, so the sample's reward still enters its group's mean;
- **reported**: a step with failures logs how many of its code runs failed and the first failure's text, and
  ``tool/sandbox_error_rate`` is their share of the step's code runs;
- **bounded**: when that share passes ``kit.max_sandbox_error_share`` (default 0.05), the run stops before the
  step's update with ``SandboxFailing`` (one line), so its newest complete checkpoint is the step before; once
  the sandbox is fixed the run resumes from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spo_helpers.errors import UserError
from spo_helpers.verl_glue.update_mask import without_samples

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARE = 0.05


class SandboxFailing(UserError):
    """Too many of a step's code runs failed in the sandbox: the run stops before the step's update."""


@dataclass(frozen=True)
class SandboxHealth:
    """One step's code runs and the sandbox's failures among them."""

    code_runs: int
    failed_runs: int
    failed_samples: np.ndarray  # bool per sample: at least one of its runs failed in the sandbox
    first_error: str

    @property
    def share(self) -> float:
        return self.failed_runs / self.code_runs if self.code_runs else 0.0


def step_health(tool_metrics) -> SandboxHealth | None:
    """From the batch's per-sample ``tool_metrics`` (``turns.TurnMetrics.as_dict``); ``None`` without tools."""
    if tool_metrics is None:
        return None
    rows = [dict(m or {}) for m in tool_metrics]
    failed = np.array([int(r.get("sandbox_errors", 0) or 0) for r in rows], dtype=np.int64)
    errors = [str(r.get("sandbox_error") or "") for r in rows]
    return SandboxHealth(
        code_runs=int(sum(int(r.get("tool_calls", 0) or 0) for r in rows)),
        failed_runs=int(failed.sum()),
        failed_samples=failed > 0,
        first_error=next((e for e in errors if e), ""),
    )


def check_step(health: SandboxHealth | None, step: int, max_share: float) -> None:
    """Log a step's sandbox failures; raise ``SandboxFailing`` when their share of its code runs passes
    ``max_share``."""
    if health is None or health.failed_runs == 0:
        return
    what = (
        f"step {step}: {health.failed_runs} of {health.code_runs} code runs ({health.share:.0%}) failed in the "
        f"sandbox (first: {health.first_error})"
    )
    if health.share > max_share:
        raise SandboxFailing(
            f"{what}, more than kit.max_sandbox_error_share={max_share:g}; the run stopped before this step's "
            "update and resumes from its newest complete checkpoint once the sandbox runs code again"
        )
    logger.warning("%s; those %d samples are left out of the update", what, int(health.failed_samples.sum()))


def without_failed_samples(batch, health: SandboxHealth | None):
    """While the block runs (the actor update), ``batch``'s response mask is zero for samples the sandbox failed."""
    return without_samples(batch, None if health is None else health.failed_samples)
