"""The turn logic on scripted generations: masks, turn limits, the response budget, truncation, metrics."""

from __future__ import annotations

import asyncio

import pytest

from spo_helpers.formats.tool_blocks import CODE_STOP, interpreter_block
from spo_helpers.verl_glue.agent_loop.prompt import (
    RETOOL_INSTRUCTION,
    check_prompt_length,
    prompt_messages,
    prompt_token_ids,
    retool_messages,
)
from spo_helpers.verl_glue.agent_loop.turns import (
    Generation,
    StopReason,
    ToolResult,
    ToolStatus,
    ToolTurns,
    TurnConfig,
    run_turns,
    summarize,
    truncate_tool_output,
)

from .tir_fakes import CharTokenizer, FakeTool, ScriptedModel

TOK = CharTokenizer()
PROMPT = TOK.encode("<user>q</user><assistant>")


def rollout(texts, config, tool=None, log_probs=False):
    model = ScriptedModel(texts, TOK, log_probs=log_probs)
    tool = tool or FakeTool()
    turns = ToolTurns(PROMPT, config, TOK, tool.extract)
    result = asyncio.run(run_turns(turns, model, tool))
    return result, model, tool


def text_of(ids):
    return TOK.decode(ids)


# ------------------------------------------------------------------------------------------ the prompt
def test_the_prompt_is_the_retool_instruction_then_the_first_message():
    chat = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "ignored"}]
    assert retool_messages(chat) == [{"role": "user", "content": RETOOL_INSTRUCTION + "What is 1+1?"}]
    assert RETOOL_INSTRUCTION.startswith("Solve the following problem step by step. ")
    assert "`<interpreter>output_str</interpreter>`" in RETOOL_INSTRUCTION
    assert "`<code>\n```python\ncode snippet\n```\n</code>`.\n" in RETOOL_INSTRUCTION
    assert RETOOL_INSTRUCTION.endswith("*user question:*\n")
    # The official rule takes the first message, whatever its role; without the rewrite the chat is kept.
    system_first = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert retool_messages(system_first)[0]["content"].endswith("*user question:*\nS")
    assert prompt_messages(system_first, rewrite=False) == system_first


def test_prompt_ids_go_through_the_chat_template_with_the_generation_prompt():
    ids = prompt_token_ids(TOK, [{"role": "user", "content": "P"}])
    assert TOK.decode(ids) == f"<user>{RETOOL_INSTRUCTION}P</user><assistant>"
    with pytest.raises(ValueError, match="max_prompt_length"):
        check_prompt_length(ids, len(ids) - 1)
    check_prompt_length(ids, len(ids))


# ------------------------------------------------------------------------------------------ rules
def test_interpreter_wrapping_and_truncation_rules():
    assert interpreter_block("2") == "<interpreter>\n2\n</interpreter>\n\n"
    text = "abcdefghij"
    assert truncate_tool_output(text, 10) == text
    assert truncate_tool_output(text, 4, "middle") == "ab...(truncated)...ij"
    assert truncate_tool_output(text, 4, "left") == "abcd...(truncated)"
    assert truncate_tool_output(text, 4, "right") == "(truncated)...ghij"
    with pytest.raises(ValueError):
        TurnConfig(response_length=8, tool_response_truncate_side="top")


# ------------------------------------------------------------------------------------------ masks
def test_model_tokens_have_mask_one_and_interpreter_tokens_mask_zero():
    first = "think <code>\n```python\nx = 6 * 7\nx\n```\n</code>"
    second = "so \\boxed{42}" + "\x00"
    config = TurnConfig(response_length=500)
    tool = FakeTool([ToolResult("42\n", ToolStatus.OK, 0.5)])
    result, model, _ = rollout([first, second], config, tool)

    block = interpreter_block("42\n")
    assert text_of(result.response_ids) == first + block + second
    assert result.response_mask == (1,) * len(first) + (0,) * len(block) + (1,) * len(second)
    assert tool.calls == ["x = 6 * 7\nx"]  # fences stripped; the tool itself wraps the last line in print
    assert result.prompt_ids == tuple(PROMPT)
    assert result.num_turns == 1 + 2 + 1  # user + assistant + 1
    assert result.response_logprobs is None

    # Every request stops at </code>, continues from everything so far, and asks for what the budget has left.
    assert [r.stop for r in model.requests] == [(CODE_STOP,), (CODE_STOP,)]
    assert model.requests[1].prompt_ids == tuple(PROMPT) + tuple(TOK.encode(first + block))
    assert [r.max_tokens for r in model.requests] == [500, 500 - len(first) - len(block)]

    m = result.metrics
    assert (m.assistant_turns, m.user_turns, m.tool_calls) == (2, 1, 1)
    assert (m.model_tokens, m.tool_tokens) == (len(first) + len(second), len(block))
    assert m.sandbox_seconds == 0.5 and m.stop_reason == StopReason.NO_CODE.value


def test_log_probs_are_kept_and_zero_on_interpreter_tokens():
    config = TurnConfig(response_length=100)
    result, _, tool = rollout(["<code>1</code>", "done"], config, log_probs=True)
    block = interpreter_block(f"ran {tool.calls[0]}")
    assert result.response_logprobs == (-0.5,) * 14 + (0.0,) * len(block) + (-0.5,) * 4


def test_no_code_block_ends_the_rollout():
    result, model, tool = rollout(["the answer is 3", "never asked"], TurnConfig(response_length=100))
    assert len(model.requests) == 1 and tool.calls == []
    assert result.metrics.stop_reason == "no_code" and result.num_turns == 2
    # An unclosed block is no block.
    result, _, tool = rollout(["<code>print(1)"], TurnConfig(response_length=100))
    assert tool.calls == [] and result.metrics.stop_reason == "no_code"


# ------------------------------------------------------------------------------------------ turn limits
def test_eight_assistant_turns_at_most_and_the_last_block_is_not_run():
    texts = [f"<code>{i}</code>" for i in range(20)]
    result, model, tool = rollout(texts, TurnConfig(response_length=10_000))  # the official 8 and 8
    assert len(model.requests) == 8 and len(tool.calls) == 7
    m = result.metrics
    assert (m.assistant_turns, m.user_turns, m.tool_calls) == (8, 7, 7)
    assert m.stop_reason == "max_assistant_turns" and result.num_turns == 16


def test_the_user_turn_limit_and_no_limit():
    texts = [f"<code>{i}</code>" for i in range(20)]
    result, model, _ = rollout(texts, TurnConfig(response_length=10_000, max_user_turns=2))
    assert len(model.requests) == 3 and result.metrics.stop_reason == "max_user_turns"
    result, model, _ = rollout(texts, TurnConfig(response_length=10_000, max_user_turns=20, max_assistant_turns=3))
    assert len(model.requests) == 3 and result.metrics.stop_reason == "max_assistant_turns"
    unlimited = TurnConfig(response_length=10_000, max_assistant_turns=None, max_user_turns=0)
    result, model, _ = rollout([*texts[:12], "fin"], unlimited)
    assert len(model.requests) == 13 and result.metrics.stop_reason == "no_code"


# ------------------------------------------------------------------------------------------ the budget
def test_a_generation_past_the_budget_is_cut_exactly():
    config = TurnConfig(response_length=10)
    result, model, tool = rollout(["<code>print(12345)</code>"], config)
    assert len(result.response_ids) == len(result.response_mask) == 10
    assert text_of(result.response_ids) == "<code>prin"
    assert tool.calls == [] and result.metrics.stop_reason == "budget"
    assert model.requests[0].max_tokens == 10


def test_a_generation_filling_the_budget_exactly_stops_too():
    code = "<code>1</code>"
    result, _, tool = rollout([code], TurnConfig(response_length=len(code)))
    assert tool.calls == [] and result.metrics.stop_reason == "budget"
    assert text_of(result.response_ids) == code


def test_an_interpreter_block_that_reaches_the_budget_is_dropped():
    code = "<code>1</code>"
    block = interpreter_block("ran 1")
    # |R| + |block| == L: dropped (the official >=), the rollout ends with the model's tokens only.
    result, model, tool = rollout([code, "x"], TurnConfig(response_length=len(code) + len(block)))
    assert tool.calls == ["1"] and len(model.requests) == 1
    assert text_of(result.response_ids) == code and result.response_mask == (1,) * len(code)
    m = result.metrics
    assert m.stop_reason == "tool_over_budget" and m.tool_calls == 1 and m.user_turns == 0
    # One token more and it fits; the next generation is asked for the single token left.
    result, model, _ = rollout([code, "xyz"], TurnConfig(response_length=len(code) + len(block) + 1))
    assert model.requests[1].max_tokens == 1
    assert len(result.response_ids) == len(code) + len(block) + 1
    assert result.response_mask[-1] == 1 and result.metrics.stop_reason == "budget"


def test_the_response_never_exceeds_the_budget():
    for budget in range(1, 60):
        texts = ["ab<code>1</code>", "cd<code>22</code>", "efgh"]
        result, _, _ = rollout(texts, TurnConfig(response_length=budget, max_tool_response_length=3))
        assert len(result.response_ids) == len(result.response_mask) <= budget


# ------------------------------------------------------------------------------------------ tool output
def test_long_tool_output_is_truncated_before_wrapping_and_counted():
    tool = FakeTool([ToolResult("0123456789" * 3)])
    config = TurnConfig(response_length=500, max_tool_response_length=10)
    result, _, _ = rollout(["<code>1</code>", "ok"], config, tool)
    assert interpreter_block("01234...(truncated)...56789") in text_of(result.response_ids)
    assert result.metrics.tool_outputs_truncated == 1


def test_tool_statuses_are_counted():
    answers = [
        ToolResult("Traceback", ToolStatus.FAILED, 0.1),
        ToolResult("no stdout here", ToolStatus.TIMEOUT, 30.0),
        ToolResult("no stdout here", ToolStatus.ERROR, 0.2),
        ToolResult("1", ToolStatus.OK, 0.7),
    ]
    texts = ["<code>a</code>"] * 4 + ["done"]
    result, _, _ = rollout(texts, TurnConfig(response_length=2_000), FakeTool(answers))
    m = result.metrics
    assert (m.tool_calls, m.tool_errors, m.tool_timeouts, m.sandbox_errors) == (4, 1, 1, 1)
    assert m.sandbox_seconds == pytest.approx(31.0)
    assert m.generate_seconds >= 0 and m.tool_seconds >= 0


def test_summary_over_a_batch():
    one, _, _ = rollout(["<code>a</code>", "done"], TurnConfig(response_length=500))
    two, _, _ = rollout(["plain"], TurnConfig(response_length=500))
    out = summarize([one.metrics, two.metrics.as_dict()])
    assert out["tool/calls/mean"] == 0.5
    assert out["tool/sandbox_latency/mean"] == pytest.approx(0.25)
    assert out["tool/stop/no_code"] == 1.0 and out["tool/stop/budget"] == 0.0
    tokens = one.metrics.response_tokens + two.metrics.response_tokens
    assert out["tool/tool_token_share"] == pytest.approx(one.metrics.tool_tokens / tokens)
    assert summarize([]) == {}


# ------------------------------------------------------------------------------------------ misuse
def test_the_machine_refuses_calls_out_of_order():
    turns = ToolTurns(PROMPT, TurnConfig(response_length=50), TOK, FakeTool().extract)
    with pytest.raises(RuntimeError):
        turns.on_tool_result(ToolResult("x"))
    assert turns.on_generation(Generation(tuple(TOK.encode("<code>1</code>")))) == "1"
    with pytest.raises(RuntimeError):
        turns.next_request()
    with pytest.raises(RuntimeError):
        turns.result()
