"""The settings of the verl stages (``spo estimate``, ``spo train``, ``spo evaluate``), written once.

Each setting is a dataclass field carrying its help text and, where the official scripts read one, its
environment variable (OUTPUT_DIR, MODEL_PATH, EXP_NAME, N_VAL, ...: the variable gives the flag's default).
From these classes come the stages' flags (``add_flags``), the settings of a parsed command line
(``from_args``), the notebooks' parameter checks (``check_parameters``) and the names the pipeline may pass to
a stage's notebook (``parameter_names``). ``verl_stage.run_verl_stage`` runs any of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from spo_helpers.backends import BACKENDS, DEVICES, PRESETS, resolve_backend
from spo_helpers.errors import UserError
from spo_helpers.verl_glue.config import SCHEDULES, TOOLS, TRAIN_METHODS

ENV_NOTE = "CAPITALS name the environment variable that sets a flag's default."
"""The line of ``spo <verb> --help`` on the flags that an environment variable sets."""
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def setting(default: Any = None, *, help: str, env: str | None = None, choices: tuple | None = None, **flag: Any):
    """A settings field: ``help`` (the flag's help text), ``env`` (the environment variable that gives the flag's
    default), ``choices``; ``flag`` holds argparse options that differ from the generated ones (``nargs``,
    ``const``, ``positional``)."""
    metadata = {"help": help, "env": env, "choices": choices, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def choice_error(name: str, value: Any, choices: tuple) -> str:
    """The one-line refusal of a setting outside its choices."""
    return f"{name}={value!r}: choose one of {', '.join(map(str, choices))}"


def parse_bool(text: str) -> bool:
    if text.strip().lower() in TRUE:
        return True
    if text.strip().lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use True or False)")


def env_value(name: str, kind: type) -> Any:
    """The environment variable ``name`` read as ``kind`` (None when unset or empty); a bad value is a UserError."""
    value = os.environ.get(name)
    if value is None or (value == "" and kind is not bool):
        return None
    if kind is bool:
        try:
            return parse_bool(value)
        except argparse.ArgumentTypeError:
            raise UserError(f"environment variable {name}={value!r} is not a boolean (use True or False)") from None
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise UserError(f"environment variable {name}={value!r} is not an integer") from None
    return value


@dataclass(repr=False)
class VerlSettings:
    """What every verl stage takes: where it writes, which model, preset and backend, and verl's overrides.

    ``None`` leaves a value to the preset (``backend``/``preset``: ``backends.resolve_backend``)."""

    output_dir: str = setting("runs", help="where the run folders go (OUTPUT_DIR)", env="OUTPUT_DIR")
    model_path: str | None = setting(
        help="a Hugging Face id or model folder (cpu: the CPU world's model)", env="MODEL_PATH"
    )
    exp_name: str | None = setting(help="the run folder's name, spo/<EXP_NAME> (EXP_NAME)", env="EXP_NAME")
    n_val: int | None = setting(help="samples per validation prompt (N_VAL)", env="N_VAL")
    response_length: int | None = setting(help="response tokens (RESPONSE_LENGTH)", env="RESPONSE_LENGTH")
    debug: bool = setting(
        False,
        help="the official script's debug settings (DEBUG; docs/training.md)",
        env="DEBUG",
    )
    small_batch: bool = setting(
        False,
        help="quick mode: the preset's batch shape / 8 (SMALL_BATCH)",
        env="SMALL_BATCH",
        nargs="?",
        const=True,
    )
    backend: str | None = setting(help="cpu or ray (default: ray with a GPU, else cpu)", choices=BACKENDS)
    device: str | None = setting(help="ray backend: cuda, or cpu for verl's workers on CPU", choices=DEVICES)
    preset: str | None = setting(help="cpu, official or paper (default: from the backend)", choices=PRESETS)
    seed: int = setting(0, help="the run's seed (SEED)", env="SEED")
    tools: str | None = setting(help="tool use or math only (default: the preset's)", env="TOOLS", choices=TOOLS)
    assets: str | None = setting(help="where the CPU world is cached (default: runs/_assets)")
    dry_run: bool = setting(False, help="print the verl config and command instead of running")
    overrides: list[str] = setting([], help="Hydra overrides passed to verl (key=value)", positional=True)

    def __repr__(self) -> str:
        """The settings that differ from their defaults: ``TrainSettings(method='SPO', total_steps=30)``."""
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != (f.default_factory() if callable(f.default_factory) else f.default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def check(self) -> None:
        """The checks every stage shares, before any compute: each setting with choices holds one of them."""
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise UserError(choice_error(f.name, value, choices))
        if self.n_val is not None and self.n_val < 1:
            raise UserError(f"--n_val {self.n_val}: samples per validation prompt must be at least 1")


@dataclass(repr=False)
class EstimateSettings(VerlSettings):
    """``spo estimate``: a validation-only run per training subset (stage 02)."""

    data_file: str | None = setting(help="one subset parquet (DATA_FILE)", env="DATA_FILE")
    data_dir: str | None = setting(help="estimate every subset_*.parquet in this folder")
    force: bool = setting(False, help="re-run subsets whose dump exists")


@dataclass(repr=False)
class TrainSettings(VerlSettings):
    """``spo train``: GRPO or SPO through verl (stage 04)."""

    method: str = setting("GRPO", help="GRPO or SPO (METHOD)", env="METHOD", choices=TRAIN_METHODS)
    train_data_dir: str | None = setting(help="folder of subset_*.parquet (TRAIN_DATA_DIR)", env="TRAIN_DATA_DIR")
    train_files: list[str] | None = setting(help="explicit training files")
    val_files: list[str] | None = setting(help="validation files or hub ids")
    offline_values: str | None = setting(
        help="SPO's prior: `spo merge`'s JSON, or none (OFFLINE_VALUES)", env="OFFLINE_VALUES"
    )
    n_train: int | None = setting(help="responses per prompt (N_TRAIN)", env="N_TRAIN")
    total_steps: int | None = setting(help="training steps (trainer.total_training_steps)")
    val_before_train: bool | None = setting(
        help="validate before the first step (VAL_BEFORE_TRAIN)", env="VAL_BEFORE_TRAIN"
    )
    schedule: str | None = setting(
        help="sync (default), stream or overprovision (SCHEDULE)",
        env="SCHEDULE",
        choices=SCHEDULES,
        metavar="MODE",
    )
    fresh: bool = setting(False, help="delete an existing run folder instead of resuming it")

    def check(self) -> None:
        self.method = self.method.upper()
        super().check()


@dataclass(repr=False)
class EvaluateSettings(VerlSettings):
    """``spo evaluate``: maj@k and pass@k of one model or checkpoint on the benchmarks."""

    checkpoint: str | None = setting(help="a global_step_N folder of either method (default: the base model)")
    benchmarks: list[str] | None = setting(help="names, hub ids, NAME=PATH or data files")
    n: int | None = setting(help="samples per problem (default: the preset's protocol, 32)")
    force: bool = setting(False, help="delete an existing evaluation folder first")

    def check(self) -> None:
        super().check()
        if self.n is not None and self.n < 1:
            raise UserError(
                f"--n {self.n}: samples per problem must be at least 1 (default: the preset's protocol, 32)"
            )


def _kind(annotation: Any) -> tuple[type, bool]:
    """``(base type, is a list)`` of a field's annotation (``int | None`` -> ``(int, False)``)."""
    hint = annotation
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else []
    if args:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return str, True
    return hint, False


def _metavar(name: str) -> str:
    """How ``--help`` names a flag's value: DIR, FILE, PATH or NAME, from the setting's name."""
    if name.endswith("_dir") or name in ("assets", "checkpoint"):
        return "DIR"
    if name.endswith(("_file", "_files", "_values")):
        return "FILE"
    return "PATH" if name.endswith("_path") else "NAME"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def add_flags(parser: argparse.ArgumentParser, cls: type[VerlSettings], skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls`` (``--name``; the environment variable, where a field names one, gives the
    default), with its help text and choices; list fields take several values; ``overrides`` is positional."""
    hints = _hints(cls)
    own = set(vars(cls).get("__annotations__", {}))
    ordered = sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)  # the verb's own flags first
    for f in ordered:
        if f.name in skip:
            continue
        meta, (kind, many) = f.metadata, _kind(hints[f.name])
        options = dict(meta["flag"])
        positional = options.pop("positional", False)
        env = meta["env"]
        default = f.default if f.default is not dataclasses.MISSING else None
        if env and env_value(env, kind) is not None:
            default = env_value(env, kind)
        kwargs: dict[str, Any] = {"help": meta["help"], "default": default}
        if positional:
            parser.add_argument(f.name, nargs="*", metavar="key=value", help=meta["help"])
            continue
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if kind is bool and not env:
            kwargs = {"help": meta["help"], "action": "store_true"}
        elif kind is bool:
            kwargs.update(type=parse_bool, metavar="BOOL")
        elif many:
            kwargs.update(nargs="+", metavar=_metavar(f.name))
        elif kind is int:
            kwargs.update(type=int, metavar="N")
        elif not meta["choices"]:
            kwargs["metavar"] = _metavar(f.name)
        if f.name == "method":
            kwargs["type"] = str.upper
        kwargs.update(options)
        parser.add_argument(f"--{f.name}", **kwargs)


def from_args(cls: type[VerlSettings], args: argparse.Namespace) -> VerlSettings:
    """The settings of a parsed command line (fields the parser lacks keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    if given.get("output_dir") is None:
        given.pop("output_dir", None)
    if given.get("overrides") is None:
        given["overrides"] = []
    return cls(**given)


def parameter_names(cls: type[VerlSettings]) -> set[str]:
    """Every setting of ``cls``: what a stage's notebook may take as a parameter with the same meaning."""
    return {f.name for f in dataclasses.fields(cls)}


def check_parameters(cls: type[VerlSettings], parameters: dict[str, Any]) -> VerlSettings:
    """Settings from a notebook's parameters (the names ``cls`` knows; others are the notebook's own), checked as
    the command line checks its flags: a bad choice or type is one line naming the parameter and the choices.
    The backend and preset come back chosen (``backends.resolve_backend``), so the notebook shows what will run."""
    hints = _hints(cls)
    given = {}
    for f in dataclasses.fields(cls):
        if f.name not in parameters:
            continue
        value, (kind, many) = parameters[f.name], _kind(hints[f.name])
        choices = f.metadata["choices"]
        if value is None:
            given[f.name] = value
            continue
        if many and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UserError(f"parameter {f.name}={value!r}: expected a list of strings")
        if not many and kind in (int, bool, str) and not isinstance(value, kind):
            raise UserError(f"parameter {f.name}={value!r}: expected {kind.__name__}")
        if kind is int and isinstance(value, bool):
            raise UserError(f"parameter {f.name}={value!r}: expected int")
        if choices and (value.upper() if f.name == "method" else value) not in choices:
            raise UserError(f"parameter {choice_error(f.name, value, choices)}")
        given[f.name] = value
    settings = cls(**given)
    settings.check()
    backend, preset = resolve_backend(settings.backend, settings.preset, settings.device)
    return dataclasses.replace(settings, backend=backend, preset=preset)


__all__ = [
    "EstimateSettings",
    "EvaluateSettings",
    "TrainSettings",
    "VerlSettings",
    "add_flags",
    "check_parameters",
    "from_args",
    "parameter_names",
    "parse_bool",
]
