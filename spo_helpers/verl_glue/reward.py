"""The binary math reward, as verl calls a custom reward function.

``compute_score(data_source, solution_str, ground_truth, extra_info)`` returns a dict:

    score = 1 if the last ``\\boxed{...}`` in the response's tail equals the ground truth, else 0

using verl's ``math_dapo.compute_score(..., strict_box_verify=True)`` (which scores −1 for
wrong answers; we map it to 0, as the official recipe does). With
``require_think=True`` (the official recipe's Qwen3 runs) a response must contain
exactly one ``</think>`` and no tool block after it, else it scores 0.

The dict also carries ``acc``, ``pred`` (the extracted answer) and ``prompt_key``
(taken from ``extra_info``): verl writes every returned key into its validation
dumps, so the merge stage can key scores without parsing the decoded prompt. The
dump lines' ``data_source`` comes from the trainer (``kit_trainer.NamingDataSources``).

Model outputs are untrusted text: nothing is evaluated, and work is bounded: only
the last ``TAIL_CHARS`` characters are parsed (math_dapo itself cuts to 300, and its
strict box check looks for the box in the last 100), and the ``</think>`` count is a
single linear scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spo_helpers.formats.keys import reward_key
from spo_helpers.formats.tool_blocks import TOOL_MARKERS

TAIL_CHARS = 300
THINK_END = "</think>"


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    *,
    require_think: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """Binary reward (1 correct, 0 otherwise) with ``acc``, ``pred`` and ``prompt_key``.

    verl dumps every key the reward returns, so each validation and rollout line names its prompt. No key
    may equal a dataset column (``data_source``, ``reward_model``, ``extra_info``, ...): verl's asynchronous
    rollout turns the reward's keys into batch columns and refuses a second column of the same name
    (``kit_trainer.NamingDataSources``, which names each dump line's benchmark instead).
    """
    from verl.utils.reward_score import math_dapo

    text = _as_text(solution_str)
    tags = {"prompt_key": reward_key(extra_info)}
    if require_think:
        first = text.find(THINK_END)
        if first < 0 or text.find(THINK_END, first + 1) >= 0:
            return {"score": 0.0, "acc": False, "pred": "", **tags}
        after = text[first + len(THINK_END) :]
        if any(marker in after for marker in TOOL_MARKERS):
            return {"score": 0.0, "acc": False, "pred": "", **tags}
    result = math_dapo.compute_score(text[-TAIL_CHARS:], _as_text(ground_truth), strict_box_verify=True)
    score = 1.0 if result["score"] > 0 else 0.0
    pred = result.get("pred")
    return {"score": score, "acc": bool(result["acc"]), "pred": "" if pred is None else str(pred), **tags}
