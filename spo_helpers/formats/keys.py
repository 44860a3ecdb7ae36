"""The prompt key: the one rule that joins offline values, the tracker, the dumps and the analysis.

A prompt's key is the content of its first user message, stripped, exactly as the
official recipe keys its offline-values file. Every reader and writer of the kit
takes keys from here:

- a dataset row: ``extra_info.prompt_key`` when it is a non-empty string, else the key
  of its chat prompt. A plain-string prompt (the official DAPO data) is first wrapped
  the way the official dataset class does, ``[{"role": "user", "content": prompt +
  ANSWER_FORMAT_SUFFIX}]``, so its key is ``(prompt + ANSWER_FORMAT_SUFFIX).strip()``;
- a verl dump line (validation or rollout): its ``prompt_key`` field (the kit's reward
  function returns it, and verl dumps every returned key) when it is a non-empty
  string, else the official merge's parse of the decoded ``input``:
  ``input.split("user\\n")[-1].split("\\nassistant")[0].strip()``;
- a training batch: each sample's ``extra_info.prompt_key``, else the key of its raw
  chat prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from spo_helpers.errors import UserError

ANSWER_FORMAT_SUFFIX = "\nThe answer format must be: \\boxed{'The final answer goes here.'}"
"""Appended to every problem by the official recipe's dataset class (``CustomRLHFDataset.map_fn2``)."""

KEY_FIELD = "prompt_key"
"""The field of ``extra_info`` and of dump lines that carries the key explicitly."""


class PromptKeyError(UserError, ValueError):
    """A prompt (or row) from which no key can be taken."""


def chat_messages(prompt: Any) -> list[dict[str, Any]]:
    """A dataset prompt as a chat list: a plain string becomes one user message with the answer-format suffix.

    Accepts a string, or a list, tuple or numpy array of ``{"role", "content"}`` mappings (as parquet stores them).
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt + ANSWER_FORMAT_SUFFIX}]
    messages = list(prompt) if isinstance(prompt, list | tuple | np.ndarray) else None
    if not messages:
        raise PromptKeyError(f"cannot take a prompt key from {type(prompt).__name__}: expected a non-empty chat list")
    if not all(isinstance(m, Mapping) and "content" in m for m in messages):
        raise PromptKeyError("chat prompt messages must be dicts with a 'content' field")
    return [dict(m) for m in messages]


def chat_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """Key of a chat list: the first user message's content, stripped (message 0 when no message has a role).

    The official recipe takes message 0, which is the user message in the DAPO data; a leading system message
    would make it key on the system prompt, so the user role is looked for first.
    """
    for message in messages:
        if message.get("role") == "user":
            return str(message.get("content", "")).strip()
    return str(messages[0]["content"]).strip()


def prompt_key(prompt: Any) -> str:
    """Key of a dataset prompt (a chat list or a plain string): ``chat_key(chat_messages(prompt))``."""
    return chat_key(chat_messages(prompt))


def explicit_key(record: Any) -> str | None:
    """``record["prompt_key"]`` when ``record`` is a mapping holding a non-empty string there, else None."""
    if isinstance(record, Mapping):
        key = record.get(KEY_FIELD)
        if isinstance(key, str) and key.strip():
            return key
    return None


def row_key(row: Mapping[str, Any]) -> str:
    """Key of a dataset row: ``extra_info.prompt_key`` when present, else ``prompt_key(row["prompt"])``."""
    key = explicit_key(row.get("extra_info"))
    if key is not None:
        return key
    if row.get("prompt") is None:
        raise PromptKeyError("dataset row has neither 'extra_info.prompt_key' nor 'prompt'")
    return prompt_key(row["prompt"])


def row_keys(prompts: Sequence[Any], extra_infos: Sequence[Any], source: str = "dataset") -> list[str]:
    """Keys of rows given as two columns; a row without a usable key raises ``UserError`` naming ``source``."""
    keys = []
    for index, (prompt, extra) in enumerate(zip(prompts, extra_infos, strict=True)):
        try:
            keys.append(row_key({"prompt": prompt, "extra_info": extra}))
        except PromptKeyError as err:
            raise PromptKeyError(f"{source}: row {index}: {err}") from None
    return keys


def key_from_dump_input(text: str) -> str:
    """The official merge's key: the text between the last ``user\\n`` and the next ``\\nassistant``."""
    return text.split("user\n")[-1].split("\nassistant")[0].strip()


def dump_key(record: Mapping[str, Any]) -> str | None:
    """Key of a verl dump line: its ``prompt_key``, else the official parse of ``input``; None if neither."""
    key = explicit_key(record)
    if key is not None:
        return key
    text = record.get("input")
    if isinstance(text, str):
        return key_from_dump_input(text) or None
    return None


def reward_key(extra_info: Any) -> str:
    """The key the reward function returns (and verl dumps): ``extra_info.prompt_key``, or ``""``."""
    return explicit_key(extra_info) or ""


def duplicates(keys: Iterable[str]) -> dict[str, int]:
    """Keys that occur more than once, with their counts (their offline scores get pooled)."""
    from collections import Counter

    return {key: count for key, count in Counter(keys).items() if count > 1}


def key_collisions(prompts: Sequence[Any], keys: Sequence[str]) -> dict[str, list[int]]:
    """Keys shared by rows whose prompts differ (the tracker, the offline values and the dumps would merge distinct
    questions into one), each with the rows that share it; the same prompt repeated under one key is no collision."""
    seen: dict[str, Any] = {}
    rows: dict[str, list[int]] = {}
    clashing: set[str] = set()
    for index, (prompt, key) in enumerate(zip(prompts, keys, strict=True)):
        if prompt is None:
            continue
        text = tuple((str(m.get("role", "")), str(m.get("content", ""))) for m in chat_messages(prompt))
        rows.setdefault(key, []).append(index)
        if seen.setdefault(key, text) != text:
            clashing.add(key)
    return {key: rows[key] for key in rows if key in clashing}
