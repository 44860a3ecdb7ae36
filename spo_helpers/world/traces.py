"""Tool-use traces for the CPU world's tool-integrated (TIR) variant, and the numbers that describe tool use.

The TIR world keeps the task, its rows and its prompts. Only the warm-start targets change: for a share
of the training rows (``tool_share``, drawn by a seeded RNG, independent of difficulty) the target is a
tool trace, for the others the direct answer of the plain world::

    <code>\\n17*3+45\\n</code>      the model copies the expression into code (generation stops here)
    <interpreter>\\n96\\n\\n</interpreter>\\n\\n
                                  what the sandbox prints for that code, written back by the agent loop
    \\boxed{96}<|im_end|>         the model copies the printed value into the box

The code's last line is a bare expression; the agent loop wraps it in ``print(...)``
(``sandbox/code.py``), so the sandbox answers ``str(answer) + "\\n"`` (``interpreter_output``). Nothing is
run here: the text is derived from the known answer, and a test checks it against the real sandbox.

A trace is a list of ``Segment`` s, each tokenised on its own exactly as the agent loop assembles a
response (the model's turns, then the interpreter block encoded by itself), and marked as trained (the
model's tokens) or not (the interpreter's tokens, labelled ``IGNORE_INDEX`` as they get
``response_mask`` 0 in RL). The TIR tokenizer learns every segment as a separate piece, so no merge
spans ``</code>`` and the interpreter block: generation can stop exactly at ``</code>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spo_helpers.formats.tool_blocks import code_block, interpreter_block
from spo_helpers.world.task import reference_response, row_answer, row_content
from spo_helpers.world.tokenizer import IM_END, chat_text, train_tokenizer, wrap_tokenizer

TOOL_SHARE = 0.5
"""Share of the warm start's rows whose target is a tool trace."""
TOOL_RESPONSE_LENGTH = 48
"""Response tokens a rollout of the TIR world gets (model and interpreter tokens together)."""
TOOL_PROMPT_LENGTH = 64
"""Prompt tokens (the cpu preset's ``data.max_prompt_length``); the task's prompts use far fewer."""

_EXPRESSION = re.compile(r"\d+(?:[-+*]\d+)+")


@dataclass(frozen=True)
class Segment:
    """A piece of a target response: its text and whether the model is trained to write it."""

    text: str
    trained: bool


def problem_expression(content: str) -> str:
    """The arithmetic expression of a task prompt (``"What is 17*3+45?..."`` -> ``"17*3+45"``)."""
    found = _EXPRESSION.findall(content)
    if len(found) != 1:
        raise ValueError(f"expected one arithmetic expression in the prompt, found {len(found)}: {content!r}")
    return found[0]


def interpreter_output(answer: int | str) -> str:
    """What the sandbox prints for a bare integer expression: its value and a newline."""
    return f"{int(answer)}\n"


def tool_trace(expression: str, answer: int | str) -> list[Segment]:
    """Code that computes ``expression``, the interpreter's block (untrained), then the boxed answer."""
    return [
        Segment(code_block(expression), True),
        Segment(interpreter_block(interpreter_output(answer)), False),
        Segment(reference_response(answer), True),
    ]


def direct_trace(answer: int | str) -> list[Segment]:
    """The plain world's target: the boxed answer alone."""
    return [Segment(reference_response(answer), True)]


def row_trace(row: Mapping[str, Any], use_tool: bool) -> list[Segment]:
    """The target response of a task row, with or without the tool."""
    answer = row_answer(row)
    return tool_trace(problem_expression(row_content(row)), answer) if use_tool else direct_trace(answer)


def trace_text(segments: Sequence[Segment]) -> str:
    return "".join(s.text for s in segments)


def tool_choices(count: int, share: float, seed: int) -> np.ndarray:
    """Which of ``count`` rows get a tool trace: ``round(share * count)`` of them, seeded, ignoring difficulty."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"tool_share must be within [0, 1], got {share}")
    chosen = np.zeros(count, dtype=bool)
    picks = np.random.default_rng([seed, 0x7001]).permutation(count)[: round(share * count)]
    chosen[picks] = True
    return chosen


def row_traces(rows: Sequence[Mapping[str, Any]], share: float, seed: int) -> list[list[Segment]]:
    """Each row's warm-start target, a tool trace for the ``tool_choices`` rows."""
    chosen = tool_choices(len(rows), share, seed)
    return [row_trace(row, bool(use)) for row, use in zip(rows, chosen, strict=True)]


def encode_trace(tokenizer, segments: Sequence[Segment]) -> tuple[list[int], list[bool]]:
    """Token ids of a response (eos after the last segment) and, per token, whether it is the model's.

    Each segment is encoded by itself, as the agent loop assembles a response from separate pieces.
    """
    ids: list[int] = []
    trained: list[bool] = []
    for index, segment in enumerate(segments):
        text = segment.text + (tokenizer.eos_token if index == len(segments) - 1 else "")
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        trained += [segment.trained] * len(piece)
    return ids, trained


def build_tool_tokenizer(rows: Sequence[Mapping[str, Any]], vocab_size: int | None = None):
    """A tokenizer trained on the chat prompts and on both targets of every row (tool trace and direct answer).

    Every segment is a training piece of its own (the last one with eos), so merges never cross a segment
    boundary; the vocabulary does not depend on which rows the warm start gives a tool trace.
    """
    texts = [chat_text(row_content(r)) for r in rows]
    for row in rows:
        for use_tool in (True, False):
            segments = row_trace(row, use_tool)
            texts += [s.text for s in segments[:-1]] + [segments[-1].text + IM_END]
    return wrap_tokenizer(train_tokenizer(texts) if vocab_size is None else train_tokenizer(texts, vocab_size))


# --------------------------------------------------------------------------------------- what tool use did
@dataclass(frozen=True)
class ToolSamples:
    """Rollouts with tools, ``n`` per prompt: arrays of shape (prompts, n)."""

    success: np.ndarray  # bool: the reward was positive
    tool_calls: np.ndarray  # int: code runs in the rollout
    response_tokens: np.ndarray  # int: model and interpreter tokens, after the cut to the budget
    out_of_budget: np.ndarray  # bool: the rollout stopped at the response budget (or its tool block did not fit)


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 4) if values.size else None


def tool_use_summary(samples: ToolSamples, difficulties: Sequence[int]) -> dict[str, Any]:
    """Per-prompt success spread, tool-call rate and success with and without a tool call, by difficulty.

    ``mean_success``, ``share_all_fail``/``share_all_pass``/``share_mixed`` and ``mean_by_difficulty`` read
    as the plain world's spread (over prompts); ``tool_call_rate`` is the share of samples with a code run,
    ``success_with_tool``/``success_without_tool`` the success of those samples and of the others.
    """
    success = np.asarray(samples.success, dtype=bool)
    called = np.asarray(samples.tool_calls) > 0
    rates = success.mean(axis=1)
    diff = np.asarray(difficulties)
    out: dict[str, Any] = {
        "prompts": int(rates.size),
        "mean_success": float(rates.mean()),
        "share_all_fail": float((rates == 0).mean()),
        "share_all_pass": float((rates == 1).mean()),
        "share_mixed": float(((rates > 0) & (rates < 1)).mean()),
        "tool_call_rate": float(called.mean()),
        "success_with_tool": _mean(success[called]),
        "success_without_tool": _mean(success[~called]),
        "max_response_tokens": int(np.asarray(samples.response_tokens).max()),
        "share_out_of_budget": float(np.asarray(samples.out_of_budget).mean()),
        "mean_by_difficulty": {},
        "tool_call_rate_by_difficulty": {},
        "success_with_tool_by_difficulty": {},
        "success_without_tool_by_difficulty": {},
    }
    for level in np.unique(diff):
        rows = diff == level
        name = str(int(level))
        out["mean_by_difficulty"][name] = _mean(rates[rows])
        out["tool_call_rate_by_difficulty"][name] = _mean(called[rows])
        out["success_with_tool_by_difficulty"][name] = _mean(success[rows][called[rows]])
        out["success_without_tool_by_difficulty"][name] = _mean(success[rows][~called[rows]])
    return out
