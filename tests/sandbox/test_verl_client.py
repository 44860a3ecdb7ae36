"""verl 0.6.1's own Sandbox Fusion client and tool code talk to our server unchanged."""

from __future__ import annotations

import types

import pytest

from spo_helpers.sandbox.code import extract_code_blocks, prepare_tool_code

pytestmark = pytest.mark.verl

sandbox_utils = pytest.importorskip("verl.utils.reward_score.sandbox_fusion.utils")


def test_call_sandbox_api(served):
    response, error = sandbox_utils.call_sandbox_api(
        sandbox_fusion_url=served.url,
        code="print(input()[::-1])",
        stdin="olleh",
        compile_timeout=10,
        run_timeout=30,
        memory_limit_mb=1024,
        language="python",
    )
    assert error is None
    assert response["status"] == "Success"
    assert response["run_result"]["stdout"] == "hello\n"


def test_check_correctness_runs_each_case(served):
    results, metadata = sandbox_utils.check_correctness(
        sandbox_fusion_url=served.url,
        in_outs={"inputs": ["2 3", "10 -4", "1 1"], "outputs": ["5", "6", "3"]},
        generation="a, b = map(int, input().split())\nprint(a + b)",
        timeout=10,
    )
    assert results == [True, True, False]
    assert [m["status"] for m in metadata] == ["success", "success", "wrong_answer"]


def test_check_correctness_classifies_timeouts_and_errors(served):
    results, _ = sandbox_utils.check_correctness(
        sandbox_fusion_url=served.url,
        in_outs={"inputs": [""], "outputs": [""]},
        generation="while True:\n    pass",
        timeout=1,
    )
    assert results == [-3]  # verl's code for a run time-out
    results, _ = sandbox_utils.check_correctness(
        sandbox_fusion_url=served.url,
        in_outs={"inputs": [""], "outputs": [""]},
        generation="raise ValueError",
        timeout=5,
    )
    assert results == [-2]  # runtime error


def test_sandbox_fusion_tool_execute_code(served):
    """The exact method the official tool calls per code block (no Ray needed: it is a plain method)."""
    tools = pytest.importorskip("verl.tools.sandbox_fusion_tools")
    tool = types.SimpleNamespace(sandbox_fusion_url=served.url, memory_limit_mb=1024)
    response_text = "<code>\n```python\nimport math\nx = math.factorial(5)\nx\n```\n</code>"
    code = prepare_tool_code(extract_code_blocks(response_text)[0])
    assert code == "import math\nx = math.factorial(5)\nprint(x)"
    result = tools.SandboxFusionTool.execute_code(tool, "instance-0", code, 30, "python")
    assert result.text == "120\n"
    timed_out = tools.SandboxFusionTool.execute_code(tool, "instance-1", "while True:\n    pass", 1, "python")
    assert timed_out.text == "no stdout here"
    failed = tools.SandboxFusionTool.execute_code(tool, "instance-2", "print(1)\n1/0", 30, "python")
    assert failed.text.startswith("1\nTraceback") and "ZeroDivisionError" in failed.text
