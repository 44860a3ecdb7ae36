"""A run with tools reaches its sandbox from every node, or does not start (``verl_glue.tool_sandbox``)."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("verl")

from spo_helpers.errors import UserError
from spo_helpers.verl_glue.config import compose
from spo_helpers.verl_glue.tool_sandbox import check_reach, is_loopback, reach_refusal


def config(*overrides):
    return compose(["preset=paper", "method=spo", "actor_rollout_ref.model.path=/m", *overrides])


def test_several_nodes_without_a_url_are_refused():
    refusal = reach_refusal(config())  # the paper preset: 2 nodes, tools
    assert refusal and "2 nodes" in refusal and "kit.sandbox_url=" in refusal
    assert reach_refusal(config("kit.sandbox_url=http://10.1.2.3:8080/run_code")) is None
    assert reach_refusal(config("trainer.nnodes=1")) is None  # one node: the run's local sandbox serves it
    assert reach_refusal(config("agent=none")) is None  # math only: no sandbox


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.4.5", "[::1]", "0.0.0.0"])
def test_a_loopback_url_is_refused_on_several_nodes(host):
    url = f"http://{host}:8080/run_code"
    assert is_loopback(url)
    refusal = reach_refusal(config(f"kit.sandbox_url='{url}'"))
    assert refusal and "loopback" in refusal


def test_a_users_tool_file_with_a_loopback_url_is_refused(tmp_path):
    from spo_helpers.verl_glue.agent_loop.settings import TOOL_CONFIG
    from spo_helpers.verl_glue.tool_sandbox import with_url

    own = tmp_path / "tools.yaml"
    own.write_text(with_url(TOOL_CONFIG, "http://localhost:9000/run_code"))
    refusal = reach_refusal(config(f"actor_rollout_ref.rollout.multi_turn.tool_config_path={own}"))
    assert refusal and "localhost:9000" in refusal
    assert not is_loopback("http://sandbox.internal:8080/run_code")


def test_the_reach_check_runs_a_program_or_names_the_failure():
    from spo_helpers.sandbox.client import local_sandbox

    with local_sandbox() as url:
        check_reach(url, on_ray=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/run_code"
    with pytest.raises(UserError, match=r"does not run code from this machine.*cannot reach"):
        check_reach(closed, on_ray=False)
