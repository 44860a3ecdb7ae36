"""Test doubles for the tool-use agent loop: a one-character-per-token tokenizer, a scripted model, a fake tool."""

from __future__ import annotations

import asyncio
import time
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


class CountingSandbox:
    """An HTTP server that answers every run after ``seconds`` and records the most runs it held at once."""

    def __init__(self, seconds: float = 0.15):
        import http.server
        import threading

        self.lock, self.now, self.most = threading.Lock(), 0, 0
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with counter.lock:
                    counter.now += 1
                    counter.most = max(counter.most, counter.now)
                time.sleep(seconds)
                with counter.lock:
                    counter.now -= 1
                body = b'{"status": "Success", "run_result": {"status": "Finished", "stdout": "1", "return_code": 0}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/run_code"

    def close(self):
        self.server.shutdown()
