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
file the run was configured with; the copy records the URL used).

Every worker must reach the sandbox: verl spreads its agent-loop workers over all nodes (verl
``experimental/agent_loop/agent_loop.py`` 736-747), and a code run that cannot reach the sandbox is no program's
output. So a run with tools on several nodes (``trainer.nnodes``) without a URL, or with a loopback URL (a local
sandbox listens on 127.0.0.1, which each node resolves to itself), is refused before anything starts
(``reach_refusal``); and every run with tools sends one program from each node that runs workers before
training (``check_reach``: from this process on the CPU backend, from a Ray task on each node otherwise).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import yaml
from omegaconf import DictConfig, open_dict

from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import atomic_write_text
from spo_helpers.formats.layout import RunLayout
from spo_helpers.verl_glue.agent_loop.settings import TOOL_CONFIG, tool_config_from_file, tools_enabled

PROBE_PROGRAM = "print(6 * 7)"
PROBE_OUTPUT = "42"
URL_FIX = (
    "set kit.sandbox_url=http://HOST:PORT/run_code to a sandbox every node reaches (`spo sandbox serve --host "
    "0.0.0.0` on a reachable machine, or a Sandbox Fusion deployment)"
)

logger = logging.getLogger(__name__)


def with_url(tool_file: str | Path, url: str) -> str:
    """The tool YAML's text with every tool's ``config.sandbox_fusion_url`` set to ``url``."""
    data = yaml.safe_load(Path(tool_file).read_text(encoding="utf-8")) or {}
    for tool in data.get("tools") or []:
        tool.setdefault("config", {})["sandbox_fusion_url"] = url
    return yaml.safe_dump(data, sort_keys=False)


def _is_kit_file(path: str | None) -> bool:
    return bool(path) and Path(path).resolve() == TOOL_CONFIG.resolve()


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine only (``localhost``, 127.0.0.0/8, ``::1``, or an any-address)."""
    host = (urlparse(url).hostname or "").lower()
    if host in ("localhost", "localhost.localdomain", ""):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def configured_url(config: DictConfig) -> str | None:
    """The sandbox URL a run with tools is configured with: ``kit.sandbox_url``, else the user's tool file's
    (``None``: the kit's file, which gets a local sandbox)."""
    url = config.kit.get("sandbox_url")
    tool_file = config.actor_rollout_ref.rollout.multi_turn.get("tool_config_path")
    if not url and tool_file and not _is_kit_file(tool_file):
        url = tool_config_from_file(tool_file).url
    return str(url) if url else None


def reach_refusal(config: DictConfig) -> str | None:
    """Why the run's sandbox cannot serve every node (None when it can): tools on several nodes without a URL, or
    with a loopback one."""
    nodes = int(config.trainer.get("nnodes", 1))
    if not tools_enabled(config.actor_rollout_ref.rollout) or nodes <= 1:
        return None
    url = configured_url(config)
    if not url:
        return (
            f"a run with tools on {nodes} nodes (trainer.nnodes) would start its sandbox on this machine's "
            f"loopback, which workers on the other nodes cannot reach: {URL_FIX}"
        )
    if is_loopback(url):
        where = f"on {nodes} nodes each worker reaches its own machine"
        return f"the sandbox URL {url} is a loopback address: {where}; {URL_FIX}"
    return None


def probe(url: str) -> str | None:
    """Run ``PROBE_PROGRAM`` at ``url``; ``None`` when it printed ``PROBE_OUTPUT``, else what went wrong."""
    from spo_helpers.sandbox.client import SandboxClientError, run_code

    try:
        answer = run_code(url, PROBE_PROGRAM, run_timeout=10, compile_timeout=10, timeout=30)
    except (SandboxClientError, ValueError) as err:
        return str(err)
    run = answer.get("run_result") or {}
    if run.get("status") != "Finished" or str(run.get("stdout", "")).strip() != PROBE_OUTPUT:
        return f"the sandbox answered {str(answer)[:200]}"
    return None


def check_run_reach(config: DictConfig, on_ray: bool) -> None:
    """``check_reach`` for a run with tools, at the URL of the tool file it runs with (after ``sandbox_for_run``)."""
    if tools_enabled(config.actor_rollout_ref.rollout):
        check_reach(tool_config_from_file(config.actor_rollout_ref.rollout.multi_turn.tool_config_path).url, on_ray)


def check_reach(url: str, on_ray: bool) -> None:
    """One program at ``url`` from each place code will run from: this process, or (``on_ray``) a Ray task on each
    alive node with CPUs (where verl places agent-loop workers). Raises ``UserError`` naming the node."""
    if not on_ray:
        failures = {"this machine": probe(url)}
    else:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote_probe = ray.remote(num_cpus=0)(probe)
        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        pending = {
            n["NodeManagerAddress"]: remote_probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
            ).remote(url)
            for n in nodes
        }
        failures = {node: ray.get(ref) for node, ref in pending.items()}
    failed = {node: why for node, why in failures.items() if why}
    if failed:
        node, why = next(iter(failed.items()))
        raise UserError(f"the sandbox at {url} does not run code from {node} ({why}); {URL_FIX}")
    logger.info("tools: the sandbox at %s runs code from %s", url, ", ".join(failures))


@contextlib.contextmanager
def sandbox_for_run(config: DictConfig) -> Iterator[str | None]:
    """While the block runs, the run's code goes to a reachable sandbox; yields its URL (``None`` without tools).

    ``config``'s ``tool_config_path`` is pointed at the run's copy of the tool file when the URL changes.
    """
    rollout = config.actor_rollout_ref.rollout
    if not tools_enabled(rollout):
        yield None
        return
    refusal = reach_refusal(config)
    if refusal:
        raise UserError(refusal)
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
        copy = RunLayout(Path(config.kit.run_dir)).sandbox_tool_config
        atomic_write_text(copy, with_url(tool_file or TOOL_CONFIG, str(url)))
        with open_dict(config):
            multi_turn.tool_config_path = str(copy)
        yield str(url)
