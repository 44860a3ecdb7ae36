"""A run's ``config.yaml`` (``RunLayout.config``): the resolved config it runs with, and what started it.

One YAML mapping, written when a run starts (``verl_glue.run_guard.start_run``):

- ``config``: the resolved Hydra config (``kit``, ``trainer``, ``data``, ``actor_rollout_ref``, ...);
- ``versions`` and ``threads``: the package versions and the thread policy it runs with;
- ``stage``: what started it, ``train``, ``estimate`` or ``evaluate`` (a file without one is a training run's);
- the starting command's own keys (``data_file``; ``checkpoint`` and ``benchmarks``).

Readers take the ``config`` section through ``read_run_config`` and its dotted values through ``config_value``;
``spo reference`` rewrites the file's paths as text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_text
from spo_helpers.formats.layout import RunLayout

CONFIG_KEY = "config"
STAGE_KEY = "stage"
TRAIN_STAGE = "train"
METHOD = "kit.method"
SEED = "kit.seed"

_YAML_11_BOOLS = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO"}
_YAML_11_BOOLS |= {"true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"}


def _reads_as_a_number(text: str) -> bool:
    for kind in (int, float):
        try:
            kind(text)
            return True
        except ValueError:
            continue
    return False


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order given, and quotes around strings a YAML 1.1 reader (OmegaConf, Hydra) would
    take for a bool or a number (``'n'``, ``'1e-3'``), as ``OmegaConf.to_yaml`` writes them."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    quoted = text in _YAML_11_BOOLS or _reads_as_a_number(text)
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="'" if quoted else None)


_Dumper.add_representer(str, _represent_str)


def write_run_config(
    run_dir: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    stage: str,
    versions: Mapping[str, str] | None = None,
    threads: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<run_dir>/config.yaml`` atomically; ``config`` is the resolved config as plain containers."""
    record = {
        CONFIG_KEY: dict(config),
        "versions": dict(versions or {}),
        "threads": dict(threads or {}),
        STAGE_KEY: stage,
        **(extra or {}),
    }
    text = yaml.dump(record, Dumper=_Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
    return atomic_write_text(RunLayout(Path(run_dir)).config, text)


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The whole mapping of ``<run_dir>/config.yaml``: empty when there is none (an official run) or it is not a
    mapping; ``UserError`` when it is not valid YAML."""
    path = RunLayout(Path(run_dir)).config
    if not path.is_file():
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        record = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    return record if isinstance(record, dict) else {}


def config_section(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` section of a record from ``read_run_record`` (empty without one)."""
    section = record.get(CONFIG_KEY)
    return section if isinstance(section, dict) else {}


def read_run_config(run_dir: str | os.PathLike, *, required: bool = False) -> dict[str, Any]:
    """The resolved config a run ran with (the ``config`` section); empty for a folder without one, unless
    ``required``: then ``UserError`` naming the file."""
    config = config_section(read_run_record(run_dir))
    if required and not config:
        path = RunLayout(Path(run_dir)).config
        state = "has no config section" if path.is_file() else "missing"
        raise UserError(f"{path}: {state}; pass a run folder written by `spo train`")
    return config


def run_stage(record: Mapping[str, Any]) -> str:
    """What started the run: ``train``, ``estimate`` or ``evaluate``; ``train`` when the record does not say."""
    return str(record.get(STAGE_KEY, TRAIN_STAGE))


def config_value(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` where a part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def run_method(config: Mapping[str, Any]) -> str | None:
    """``kit.method`` in upper case (``GRPO``, ``SPO``, ``EVAL``), else None."""
    method = config_value(config, METHOD)
    return str(method).upper() if method else None
