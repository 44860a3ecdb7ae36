"""A step's sandbox failures (``verl_glue.sandbox_health``): counted, logged, left out of the update, bounded."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from spo_helpers.verl_glue.sandbox_health import SandboxFailing, check_step, step_health, without_failed_samples


def rows(*failures):
    """One sample per entry: (code runs, sandbox failures)."""
    return [
        {"tool_calls": calls, "sandbox_errors": failed, "sandbox_error": "HTTP 500: boom" if failed else ""}
        for calls, failed in failures
    ]


def test_health_of_a_step():
    health = step_health(rows((2, 0), (1, 1), (0, 0), (3, 2)))
    assert (health.code_runs, health.failed_runs) == (6, 3) and health.share == 0.5
    assert health.failed_samples.tolist() == [False, True, False, True] and health.first_error == "HTTP 500: boom"
    assert step_health(None) is None
    assert step_health(rows((0, 0))).share == 0.0


def test_a_few_failures_are_logged_and_too_many_stop_the_run(caplog):
    few = step_health(rows(*[(1, 0)] * 39, (1, 1)))  # 1 of 40 code runs: 2.5%
    with caplog.at_level(logging.WARNING, logger="spo_helpers.verl_glue.sandbox_health"):
        check_step(few, step=7, max_share=0.05)
    assert "step 7: 1 of 40 code runs (2%) failed in the sandbox (first: HTTP 500: boom)" in caplog.text
    many = step_health(rows(*[(1, 0)] * 9, (1, 1)))  # 10%
    with pytest.raises(SandboxFailing, match=r"step 3: 1 of 10 .* kit.max_sandbox_error_share=0.05.*checkpoint"):
        check_step(many, step=3, max_share=0.05)
    check_step(step_health(rows((1, 0))), step=1, max_share=0.0)  # no failure: nothing to say


def test_failed_samples_get_no_gradient_during_the_update_only():
    from types import SimpleNamespace

    batch = SimpleNamespace(batch={"response_mask": torch.ones(3, 4, dtype=torch.long)})
    health = step_health(rows((1, 0), (1, 1), (0, 0)))
    with without_failed_samples(batch, health):
        assert batch.batch["response_mask"].sum(-1).tolist() == [4, 0, 4]
    assert batch.batch["response_mask"].sum().item() == 12  # restored for the rest of the step
    with without_failed_samples(batch, step_health(rows((1, 0)) * 3)):
        assert np.all(batch.batch["response_mask"].numpy() == 1)
