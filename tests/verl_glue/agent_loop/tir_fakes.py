"""Test doubles for the tool-use agent loop: a one-character-per-token tokenizer, a scripted model, a fake tool."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from spo_helpers.verl_glue.agent_loop.tool import extract_code
from spo_helpers.verl_glue.agent_loop.turns import GenerateRequest, Generation, ToolResult

EOS = "\x00"


class CharTokenizer:
    """Token id = code point: lengths in tokens are lengths in characters, so budgets are easy to read."""

    eos_token_id = 0
    pad_token_id = 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(int(i)) for i in token_ids)

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True, **kwargs):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        text += "<assistant>" if add_generation_prompt else ""
        return self.encode(text) if tokenize else text


class ScriptedModel:
    """An async ``generate`` answering each request with the next scripted text, as the tokenizer spells it."""

    def __init__(self, texts: Sequence[str], tokenizer: CharTokenizer | None = None, log_probs: bool = False):
        self.texts = list(texts)
        self.tokenizer = tokenizer or CharTokenizer()
        self.log_probs = log_probs
        self.requests: list[GenerateRequest] = []

    async def __call__(self, request: GenerateRequest) -> Generation:
        self.requests.append(request)
        await asyncio.sleep(0)
        text = self.texts[len(self.requests) - 1]
        ids = tuple(self.tokenizer.encode(text))
        return Generation(token_ids=ids, log_probs=tuple(-0.5 for _ in ids) if self.log_probs else None)


class FakeTool:
    """``extract`` as the real tool; ``run`` answers from a list (or echoes the code) and records the calls."""

    def __init__(self, answers: Sequence[ToolResult] | None = None):
        self.answers = list(answers or [])
        self.calls: list[str] = []

    def extract(self, text: str) -> str | None:
        return extract_code(text)

    def run(self, code: str) -> ToolResult:
        self.calls.append(code)
        if self.answers:
            return self.answers[min(len(self.calls), len(self.answers)) - 1]
        return ToolResult(text=f"ran {code}", latency_s=0.25)
