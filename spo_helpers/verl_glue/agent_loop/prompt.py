"""The prompt of a tool-integrated rollout: the ReTool instruction in front of the problem.

The official SPO agent loop does not send the dataset's chat as it is. It takes the *first* message's
content (the problem, which already ends with the answer-format suffix) and builds one new user message:

    content = RETOOL_INSTRUCTION + problem

where ``RETOOL_INSTRUCTION`` tells the model how to write code (``<code>`` around a fenced Python block),
that the sandbox is stateless, and that output comes back inside ``<interpreter>...</interpreter>``;
it ends with ``*user question:*`` and a newline. That single message goes through the tokenizer's chat
template with ``add_generation_prompt=True`` and ``data.apply_chat_template_kwargs`` (Qwen3's
``enable_thinking``, for instance). Any other message of the dataset's chat (a system message too) is
dropped, and a chat whose first message is a system message hands *that* text over as the problem: both
as in the official runs. The resulting token ids are the prompt the policy is trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

RETOOL_INSTRUCTION = (
    "Solve the following problem step by step. "
    "You now have the ability to selectively write executable Python code to enhance your reasoning process. "
    "The Python code will be executed by an external sandbox, and the output "
    "(wrapped in `<interpreter>output_str</interpreter>`) "
    "can be returned to aid your reasoning and help you arrive at the final answer. "
    "The Python code should be complete scripts, including necessary imports. "
    "Important: The sandbox is stateless and non-interactive; thus, prior imports, definitions, "
    "and state do not persist between executions and cannot be referenced.\n"
    "Each code snippet is wrapped with `<code>\n```python\ncode snippet\n```\n</code>`.\n"
    "*user question:*\n"
)
"""The instruction the official agent loop puts in front of every problem (text kept byte for byte)."""


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def problem_text(raw_prompt: Sequence[Mapping[str, Any]] | str) -> str:
    """The problem of a dataset row: the first chat message's content (or the string itself)."""
    if isinstance(raw_prompt, str):
        return raw_prompt
    messages = list(raw_prompt)
    if not messages:
        raise ValueError("the row's raw_prompt is an empty chat: set data.return_raw_chat=True and check the data")
    return str(messages[0]["content"])


def retool_messages(raw_prompt: Sequence[Mapping[str, Any]] | str) -> list[dict[str, str]]:
    """The one-message chat the policy sees: ``[{"role": "user", "content": RETOOL_INSTRUCTION + problem}]``."""
    return [{"role": "user", "content": RETOOL_INSTRUCTION + problem_text(raw_prompt)}]


def prompt_messages(raw_prompt: Sequence[Mapping[str, Any]] | str, *, rewrite: bool = True) -> list[dict[str, str]]:
    """``retool_messages`` (the official rule) or, with ``rewrite=False``, the dataset's chat unchanged."""
    if rewrite:
        return retool_messages(raw_prompt)
    if isinstance(raw_prompt, str):
        return [{"role": "user", "content": raw_prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in raw_prompt]


def prompt_token_ids(
    tokenizer: ChatTokenizer,
    raw_prompt: Sequence[Mapping[str, Any]] | str,
    *,
    rewrite: bool = True,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[int]:
    """Token ids of the rollout's prompt: the chat template (with the generation prompt) on ``prompt_messages``."""
    ids = tokenizer.apply_chat_template(
        prompt_messages(raw_prompt, rewrite=rewrite),
        add_generation_prompt=True,
        tokenize=True,
        **dict(chat_template_kwargs or {}),
    )
    if isinstance(ids, Mapping):  # a tokenizer configured to return a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def check_prompt_length(prompt_ids: Sequence[int], prompt_length: int) -> None:
    """Refuse a prompt longer than verl's ``rollout.prompt_length`` (it would not fit the padded batch)."""
    if len(prompt_ids) > prompt_length:
        raise ValueError(
            f"the tool-use prompt has {len(prompt_ids)} tokens, more than rollout.prompt_length={prompt_length} "
            "(the ReTool instruction is added in front of the problem): raise data.max_prompt_length"
        )
