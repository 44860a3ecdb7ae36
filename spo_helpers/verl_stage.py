"""How a verl stage runs, the same way for ``spo estimate``, ``spo train`` and ``spo evaluate``.

``run_verl_stage`` takes the stage's settings (``run_settings``) and a ``VerlStage`` that knows what is
particular to it, and goes through the same steps for all: the backend and preset, the CPU world's defaults
(built or reused only when a default is needed), the checks before any compute, the verl config, then either
the dry run's text or the run and its result. Every result is a ``StageResult``: ``print(result)`` on a
terminal and the notebook's display show the same one-screen summary.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from spo_helpers.backends import resolve_backend
from spo_helpers.errors import UserError
from spo_helpers.preflight import check_data_files, check_model_dir
from spo_helpers.run_settings import VerlSettings

if TYPE_CHECKING:
    from spo_helpers.verl_glue.config import RunSpec
    from spo_helpers.world.paths import WorldPaths

MODEL_PATH_MISSING = "MODEL_PATH is not set: pass --model_path (a Hugging Face id or local folder)"


class StageResult:
    """A stage's outcome; ``lines()`` is its one-screen summary, which ``str()`` and a notebook's display show."""

    def lines(self) -> list[str]:
        raise NotImplementedError

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython and Jupyter: the summary as text
        printer.text(str(self) if not cycle else type(self).__name__)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # IPython takes the first ``_repr_pretty_`` or ``__repr__`` it meets along the class's MRO; a dataclass's
        # generated ``__repr__`` would come first, so each result class carries the summary display itself.
        super().__init_subclass__(**kwargs)
        cls._repr_pretty_ = StageResult._repr_pretty_


@dataclass(frozen=True)
class DryRun(StageResult):
    """What ``--dry-run`` gives: the resolved verl config and the equivalent command, nothing run."""

    text: str

    def lines(self) -> list[str]:
        return self.text.rstrip("\n").splitlines()


class Defaults:
    """The CPU world's defaults of one stage run: the world is built (or reused) the first time one is needed."""

    def __init__(self, settings: VerlSettings):
        self.settings = settings
        self._world: WorldPaths | None = None

    def world(self) -> WorldPaths:
        from spo_helpers.verl_glue.config import tools_on
        from spo_helpers.world.build import build_world

        if self._world is None:
            uses_tools = tools_on(self.settings.tools, self.settings.preset)
            self._world = build_world(self.settings.assets, seed=0, tools=uses_tools)
        return self._world


def resolve(settings: VerlSettings) -> tuple[VerlSettings, Defaults]:
    """``settings`` with the backend, preset and model chosen and checked, and the world's defaults for the rest.

    Without ``model_path`` the cpu preset takes the CPU world's tiny model; the GPU presets need one."""
    settings.check()
    backend, preset = resolve_backend(settings.backend, settings.preset, settings.device)
    settings = dataclasses.replace(settings, backend=backend, preset=preset)
    defaults = Defaults(settings)
    if not settings.model_path:
        if preset != "cpu":
            raise UserError(MODEL_PATH_MISSING)
        settings = dataclasses.replace(settings, model_path=str(defaults.world().model_dir))
        defaults.settings = settings
    check_model_dir(settings.model_path)
    return settings, defaults


def run_spec_settings(settings: VerlSettings) -> dict[str, Any]:
    """The ``RunSpec`` keywords every verl stage takes from its settings as they are (backend and preset resolved)."""
    return {
        "preset": settings.preset,
        "backend": settings.backend,
        "device": settings.device,
        "output_dir": str(settings.output_dir),
        "model_path": str(settings.model_path),
        "response_length": settings.response_length,
        "seed": settings.seed,
        "tools": settings.tools,
    }


class VerlStage(Protocol):
    """What is particular to one verl stage."""

    name: str
    """The verb, recorded as the run's ``stage``."""
    data_labels: tuple[str, str]
    """How the checks name the run's training and validation files."""

    def run_spec(self, settings: Any, defaults: Defaults) -> RunSpec:
        """The verl run: data files (defaults from the world), method, experiment name, overrides."""

    def check(self, settings: Any, spec: RunSpec) -> None:
        """Checks of the stage's own inputs, after the config composed (its errors come first)."""

    def existing(self, settings: Any, spec: RunSpec) -> StageResult | None:
        """The result of a run already done, or None to run."""

    def record(self, settings: Any) -> dict[str, Any]:
        """What the run folder's ``config.yaml`` records about the stage besides its name."""

    def fresh(self, settings: Any) -> bool:
        """Whether an existing run folder is deleted instead of resumed."""

    def result(self, settings: Any, spec: RunSpec, seconds: float) -> StageResult:
        """The finished run's summary."""


def run_verl_stage(stage: VerlStage, settings: VerlSettings, *, resolved: bool = False) -> StageResult:
    """Run one verl stage: backend and preset, the world's defaults, checks, config, then the dry run or the run.

    ``resolved``: ``settings`` already went through ``resolve`` (a stage that runs several jobs resolves once).
    """
    from spo_helpers.verl_glue.config import build_config, dry_run_text
    from spo_helpers.verl_glue.run_guard import start_run

    if resolved:
        defaults = Defaults(settings)
    else:
        settings, defaults = resolve(settings)
    spec = stage.run_spec(settings, defaults)
    training, validation = stage.data_labels
    check_data_files(list(spec.train_files), training)
    check_data_files(list(spec.val_files), validation)
    config = build_config(spec)
    stage.check(settings, spec)
    if settings.dry_run:
        return DryRun(dry_run_text(spec, config))
    done = stage.existing(settings, spec)
    if done is not None:
        return done
    start = time.perf_counter()
    start_run(config, stage.name, stage.record(settings), fresh=stage.fresh(settings))
    return stage.result(settings, spec, time.perf_counter() - start)


__all__ = ["DryRun", "StageResult", "VerlStage", "resolve", "run_spec_settings", "run_verl_stage"]
