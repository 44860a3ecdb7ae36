"""The code tool: which code, what is sent, what the model reads; its settings; one real sandbox round trip."""

from __future__ import annotations

import asyncio

import pytest

from spo_helpers.sandbox.client import SandboxClientError
from spo_helpers.verl_glue.agent_loop import settings
from spo_helpers.verl_glue.agent_loop import tool as tool_module
from spo_helpers.verl_glue.agent_loop.tool import (
    NO_OUTPUT,
    CodeInterpreter,
    ToolConfig,
    extract_code,
    interpreter_text,
)
from spo_helpers.verl_glue.agent_loop.turns import ToolStatus, ToolTurns, TurnConfig, interpreter_block, run_turns

from .tir_fakes import CharTokenizer, CountingSandbox, ScriptedModel


def finished(stdout="", stderr="", code=0):
    return {
        "status": "Success",
        "run_result": {"status": "Finished", "stdout": stdout, "stderr": stderr, "return_code": code},
    }


# ------------------------------------------------------------------------------------------ which code
def test_the_turns_code_block_with_fences_stripped():
    assert extract_code("I will compute <code>\n```python\nx = 2\nx\n```\n</code>") == "x = 2\nx"
    assert extract_code("<code>```\nprint(1)\n```</code>") == "print(1)"
    assert extract_code("<code> 1 + 1 </code> and <code>2</code>") == "1 + 1"  # the first, as officially
    assert extract_code("no code here") is None
    assert extract_code("<code>print(1)") is None  # unclosed


# ------------------------------------------------------------------------------------------ what the model reads
def test_interpreter_text_follows_the_official_tool():
    assert interpreter_text(finished("42\n")) == ("42\n", ToolStatus.OK)
    assert interpreter_text(finished("1\n", "Traceback ...\nNameError\n", 1)) == (
        "1\nTraceback ...\nNameError\n",
        ToolStatus.FAILED,
    )
    timeout = {"status": "Failed", "run_result": {"status": "TimeLimitExceeded", "stdout": "partial", "stderr": ""}}
    assert interpreter_text(timeout) == (NO_OUTPUT, ToolStatus.TIMEOUT)
    error = {"status": "SandboxError", "run_result": {"status": "Error", "stdout": "", "stderr": "boom"}}
    assert interpreter_text(error) == (NO_OUTPUT, ToolStatus.ERROR)
    assert interpreter_text(None) == (NO_OUTPUT, ToolStatus.ERROR)
    assert interpreter_text(finished(None, None)) == ("", ToolStatus.OK)


# ------------------------------------------------------------------------------------------ what is sent
class Recorder:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, url, code, **kwargs):
        self.calls.append((url, code, kwargs))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_run_sends_the_prepared_code_with_the_configured_limits(monkeypatch):
    recorder = Recorder([finished("42\n")])
    monkeypatch.setattr(tool_module, "run_code", recorder)
    interpreter = CodeInterpreter(ToolConfig(url="http://sandbox:8080/run_code", run_timeout=30, memory_limit_mb=512))
    result = interpreter.run("x = 6 * 7\nx")
    assert (result.text, result.status) == ("42\n", ToolStatus.OK) and result.latency_s >= 0
    url, code, kwargs = recorder.calls[0]
    assert url == "http://sandbox:8080/run_code" and code == "x = 6 * 7\nprint(x)"
    assert kwargs == {
        "language": "python",
        "run_timeout": 30,
        "compile_timeout": 30,
        "memory_limit_mb": 512,
        "timeout": 70,  # compile + run + 10, as verl's client
    }


def test_busy_servers_are_retried_and_failures_become_no_output(monkeypatch):
    monkeypatch.setattr(tool_module.time, "sleep", lambda s: None)
    recorder = Recorder([SandboxClientError(504, "busy"), SandboxClientError(503, "full"), finished("ok")])
    monkeypatch.setattr(tool_module, "run_code", recorder)
    interpreter = CodeInterpreter(ToolConfig(url="http://x/run_code"))
    assert interpreter.run("print(1)").text == "ok" and len(recorder.calls) == 3

    recorder = Recorder([SandboxClientError(0, "cannot reach the sandbox")])
    monkeypatch.setattr(tool_module, "run_code", recorder)
    result = interpreter.run("print(1)")
    assert (result.text, result.status) == (NO_OUTPUT, ToolStatus.ERROR) and len(recorder.calls) == 1

    recorder = Recorder([SandboxClientError(504, "busy")] * 3)
    monkeypatch.setattr(tool_module, "run_code", recorder)
    assert interpreter.run("1").status is ToolStatus.ERROR and len(recorder.calls) == 3  # 3 attempts in all


def test_sandbox_failures_are_told_apart_from_the_programs(monkeypatch):
    """Only the sandbox's own failures are ERROR (``tool/sandbox_error_rate``), each with its text."""
    monkeypatch.setattr(tool_module.time, "sleep", lambda s: None)
    interpreter = CodeInterpreter(ToolConfig(url="http://x/run_code", retries=0))
    cases = [  # (answer, status, the failure's text, what the model reads)
        (finished("", "Error\n", 1), ToolStatus.FAILED, "", "Error\n"),  # the program raised
        ({"status": "Success", "run_result": {"status": "TimeLimitExceeded"}}, ToolStatus.TIMEOUT, "", NO_OUTPUT),
        (SandboxClientError(413, "body too large"), ToolStatus.FAILED, "", NO_OUTPUT),  # refused for its content
        (SandboxClientError(0, "cannot reach the sandbox"), ToolStatus.ERROR, "cannot reach", NO_OUTPUT),
        (SandboxClientError(500, "internal error"), ToolStatus.ERROR, "HTTP 500", NO_OUTPUT),
        (ValueError("Expecting value"), ToolStatus.ERROR, "not a /run_code answer", NO_OUTPUT),
        ({"status": "SandboxError", "message": "no worker"}, ToolStatus.ERROR, "no worker", NO_OUTPUT),
        ({"status": "Failed", "run_result": {"status": "Error"}}, ToolStatus.ERROR, "run_result 'Error'", NO_OUTPUT),
    ]
    for answer, status, error, text in cases:
        monkeypatch.setattr(tool_module, "run_code", Recorder([answer]))
        result = interpreter.run("print(1)")
        assert (result.status, result.text) == (status, text), answer
        assert (error in result.error) if error else result.error == "", (answer, result.error)


def test_a_server_answering_500_is_counted_as_sandbox_errors():
    """A real HTTP server that answers every request with 500: each run is a sandbox error in the batch metrics."""
    import http.server
    import threading

    from spo_helpers.verl_glue.agent_loop.turns import summarize

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"detail": "worker crashed"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/run_code"
        interpreter = CodeInterpreter(ToolConfig(url=url, retries=0))
        results = [interpreter.run("print(1)") for _ in range(3)]
    finally:
        server.shutdown()
    assert all(r.status is ToolStatus.ERROR and "worker crashed" in r.error for r in results)
    rows = [{"tool_calls": 1, "sandbox_errors": 1, "sandbox_error": results[0].error}] * 3
    rows.append({"tool_calls": 2, "tool_errors": 1})  # a program that raised: not the sandbox's
    metrics = summarize(rows)
    assert metrics["tool/sandbox_error_rate"] == 3 / 5 and metrics["tool/error_rate"] == 1 / 5


# ------------------------------------------------------------------------------------------ settings
def test_settings_from_the_kits_files_and_verls_rollout_section(tmp_path):
    cfg = settings.tool_config_from_file(settings.TOOL_CONFIG)
    assert cfg == ToolConfig(url="http://localhost:8080/run_code", run_timeout=30, memory_limit_mb=1024)
    assert settings.AGENT_LOOP_CONFIG.is_file()
    assert "spo_helpers.verl_glue.agent_loop.verl_loop.SPOToolAgentLoop" in settings.AGENT_LOOP_CONFIG.read_text()
    assert settings.agent_loop_options() == {"rewrite_prompt": True}

    other = tmp_path / "tools.yaml"
    other.write_text(
        "tools:\n  - class_name: recipe.spo.spo_retool.CustomSandboxFusionTool\n"
        "    config: {sandbox_fusion_url: 'http://h:1/run_code', default_timeout: 5, rate_limit: 4, type: native}\n"
    )
    assert settings.tool_config_from_file(other) == ToolConfig(
        url="http://h:1/run_code",
        run_timeout=5,
        rate_limit=4,
        num_workers=10,  # verl's default num_workers
    )
    other.write_text("tools:\n  - class_name: x\n    config: {type: native}\n")
    with pytest.raises(ValueError, match="sandbox_fusion_url"):
        settings.tool_config_from_file(other)

    rollout = {
        "response_length": 8192,
        "multi_turn": {"max_assistant_turns": 8, "max_user_turns": None, "max_tool_response_length": 256},
    }
    turn = settings.turn_config_from_rollout(rollout)
    assert turn == TurnConfig(response_length=8192, max_assistant_turns=8, max_user_turns=None)


# ------------------------------------------------------------------------------------------ a real sandbox
@pytest.fixture(scope="module")
def sandbox_url():
    from spo_helpers.errors import UserError
    from spo_helpers.sandbox import SandboxLimits, local_sandbox

    try:
        with local_sandbox(SandboxLimits(workers=2), mode="thread") as url:
            yield url
    except UserError as err:
        pytest.skip(f"no local sandbox here: {err}")


def test_a_rollout_against_the_local_sandbox(sandbox_url):
    interpreter = CodeInterpreter(ToolConfig(url=sandbox_url, run_timeout=2))
    assert interpreter.run("x = 6 * 7\nx").text == "42\n"
    failed = interpreter.run("print('before')\n1 / 0")
    assert failed.status is ToolStatus.FAILED
    assert failed.text.startswith("before\n") and "ZeroDivisionError" in failed.text
    timed_out = interpreter.run("while True:\n    pass\nprint('never')")
    assert (timed_out.text, timed_out.status) == (NO_OUTPUT, ToolStatus.TIMEOUT)

    tok = CharTokenizer()
    first = "<code>\n```python\nsum(range(10))\n```\n</code>"
    model = ScriptedModel([first, "\\boxed{45}"], tok)
    turns = ToolTurns(tok.encode("<user>q</user>"), TurnConfig(response_length=400), tok, interpreter.extract)
    result = asyncio.run(run_turns(turns, model, interpreter))
    assert tok.decode(result.response_ids) == first + interpreter_block("45\n") + "\\boxed{45}"
    assert result.metrics.tool_calls == 1 and result.metrics.sandbox_seconds > 0


# ------------------------------------------------------------------------------------------ how many at once
def test_the_rate_limit_bounds_code_runs_at_the_sandbox():
    """Two interpreters of one process, many concurrent runs each: at most ``rate_limit`` reach the sandbox at once,
    on the interpreters' own thread pools."""
    sandbox = CountingSandbox()
    try:
        config = ToolConfig(url=sandbox.url, rate_limit=3, num_workers=8)
        interpreters = [CodeInterpreter(config), CodeInterpreter(config)]
        futures = [i.executor.submit(i.run, "print(1)") for i in interpreters for _ in range(8)]
        assert all(f.result(timeout=60).status is ToolStatus.OK for f in futures)
    finally:
        sandbox.close()
    assert sandbox.most == 3
