"""verl's experiment tracker plus the kit's resume-safe metrics JSONL.

verl's trainer builds ``verl.utils.tracking.Tracking`` inside ``fit()``. Its ``file``
backend reopens the log with mode ``"w"`` (a resumed run loses its history) and
cannot serialise tensor metrics, so the kit writes its own ``metrics.jsonl`` through
``StepLog`` next to verl's backends (console, tensorboard, wandb...). For verl's
stock ``fit()`` (GRPO) the class is swapped in for the duration of the call with
``use_kit_tracking``; the SPO trainer builds it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from spo_helpers.formats.steplog import StepLog


def kit_tracking_class(metrics_path: str, after_log: Callable[[int], None] | None = None):
    """A ``Tracking`` subclass that also appends every logged dict to ``metrics_path``.

    ``after_log(step)`` runs once the step's record is on disk (the trainers write
    their checkpoints there, so a checkpoint never exists without its metrics line).
    """
    from verl.utils.tracking import Tracking

    class KitTracking(Tracking):
        def __init__(self, project_name, experiment_name, default_backend="console", config=None):
            backends = [default_backend] if isinstance(default_backend, str) else list(default_backend)
            super().__init__(project_name, experiment_name, default_backend=backends, config=config)
            self.step_log = StepLog(metrics_path)

        def log(self, data: dict[str, Any], step: int, backend=None) -> None:
            super().log(data=data, step=step, backend=backend)
            self.step_log.log(step, data)
            if after_log is not None:
                after_log(step)

    return KitTracking


@contextmanager
def use_kit_tracking(metrics_path: str, after_log: Callable[[int], None] | None = None):
    """Make ``verl.utils.tracking.Tracking`` the kit's tracker while the block runs."""
    import verl.utils.tracking as tracking_module

    original = tracking_module.Tracking
    tracking_module.Tracking = kit_tracking_class(metrics_path, after_log)
    try:
        yield
    finally:
        tracking_module.Tracking = original
