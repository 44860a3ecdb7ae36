"""The sandbox a tool-integrated run talks to: the user's, or a local one started for the run.

Where the code of a run with ``rollout.multi_turn.enable`` goes, first match wins:

1. ``kit.sandbox_url``: that Sandbox Fusion ``/run_code`` URL (a deployment that scales out, or a
   ``spo sandbox serve`` started by hand);
2. a tool file of the user's own (``rollout.multi_turn.tool_config_path`` is not the kit's): its
   ``sandbox_fusion_url``, as verl and the official recipe read it;
3. the kit's tool file and no URL: a local sandbox (``sandbox.client.local_sandbox``) on this machine, started
   before training and stopped after it, however the run ends.

For 1 and 3 the run gets a copy of the tool file with the URL put in, ``<run>/sandbox_tool_config.yaml``,
and its ``tool_config_path`` points there for this process and its Ray workers (``config.yaml`` keeps the
file the run was configured with; the copy records the URL used). A local sandbox listens on 127.0.0.1:
Ray workers on other nodes cannot reach it, so multi-node runs set ``kit.sandbox_url``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import yaml
from omegaconf import DictConfig, open_dict

from spo_helpers.formats.atomic import atomic_write_text
from spo_helpers.formats.layout import RunLayout
from spo_helpers.verl_glue.agent_loop.settings import TOOL_CONFIG, tools_enabled

logger = logging.getLogger(__name__)


def with_url(tool_file: str | Path, url: str) -> str:
    """The tool YAML's text with every tool's ``config.sandbox_fusion_url`` set to ``url``."""
    data = yaml.safe_load(Path(tool_file).read_text(encoding="utf-8")) or {}
    for tool in data.get("tools") or []:
        tool.setdefault("config", {})["sandbox_fusion_url"] = url
    return yaml.safe_dump(data, sort_keys=False)


def _is_kit_file(path: str | None) -> bool:
    return bool(path) and Path(path).resolve() == TOOL_CONFIG.resolve()


@contextlib.contextmanager
def sandbox_for_run(config: DictConfig) -> Iterator[str | None]:
    """While the block runs, the run's code goes to a reachable sandbox; yields its URL (``None`` without tools).

    ``config``'s ``tool_config_path`` is pointed at the run's copy of the tool file when the URL changes.
    """
    rollout = config.actor_rollout_ref.rollout
    if not tools_enabled(rollout):
        yield None
        return
    multi_turn = rollout.multi_turn
    tool_file = multi_turn.get("tool_config_path")
    url = config.kit.get("sandbox_url")
    if not url and tool_file and not _is_kit_file(tool_file):
        logger.info("tools: the sandbox named in %s", tool_file)
        yield None
        return
    with contextlib.ExitStack() as stack:
        if not url:
            from spo_helpers.sandbox.client import local_sandbox

            url = stack.enter_context(local_sandbox())
            logger.info("tools: a local sandbox for this run at %s", url)
        copy = RunLayout(Path(config.kit.run_dir)).root / "sandbox_tool_config.yaml"
        atomic_write_text(copy, with_url(tool_file or TOOL_CONFIG, str(url)))
        with open_dict(config):
            multi_turn.tool_config_path = str(copy)
        yield str(url)
