"""The in-process server on a tiny random Qwen3: stop strings, the caller's RNG state, lockstep rounds, packing."""

from __future__ import annotations

import io
import random
import time

import pytest
import torch

pytest.importorskip("transformers")

from transformers import LogitsProcessor, LogitsProcessorList

from spo_helpers.verl_glue.agent_loop.cpu_server import (
    CPUGenerationServer,
    non_tensor_fields,
    pack_turn_results,
    run_tool_rollout,
)
from spo_helpers.verl_glue.agent_loop.prompt import prompt_token_ids
from spo_helpers.verl_glue.agent_loop.turns import (
    GenerateRequest,
    ToolResult,
    TurnConfig,
    interpreter_block,
)

from .tir_fakes import FakeTool

SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
CHATS = [[{"role": "user", "content": "What is 1+1?"}], [{"role": "user", "content": "What is 2+3?"}]]


@pytest.fixture(scope="module")
def tiny():
    from spo_helpers.world.model import TinyModelConfig, make_model
    from spo_helpers.world.tokenizer import chat_text, train_tokenizer, wrap_tokenizer

    texts = [
        chat_text("What is 1+1?", "<code>\n```python\n1+1\n```\n</code><interpreter>\n2\n</interpreter>\n\n\\boxed{2}"),
        chat_text("What is 2+3?", "I will compute it. <code>print(2+3)</code> so the answer is \\boxed{5}"),
    ] * 4
    tokenizer = wrap_tokenizer(train_tokenizer(texts, vocab_size=320))
    shape = TinyModelConfig(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        intermediate_size=96,
    )
    return make_model(tokenizer, shape, seed=0), tokenizer


def seed_state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


class Script(LogitsProcessor):
    """Forces each row to spell a text chosen from the row's context, then EOS: a model that follows a script.

    ``choose(context_text)`` gives the text; a new ``generate`` call is noticed by the sequence width jumping.
    """

    def __init__(self, tokenizer, choose):
        self.tokenizer, self.choose = tokenizer, choose
        self.start, self.last = None, None

    def __call__(self, input_ids, scores):
        width = input_ids.shape[1]
        if self.last is None or width != self.last + 1:
            self.start = width
        self.last = width
        forced = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            context = self.tokenizer.decode(input_ids[row, : self.start], skip_special_tokens=False)
            target = [
                *self.tokenizer.encode(self.choose(context), add_special_tokens=False),
                self.tokenizer.eos_token_id,
            ]
            step = width - self.start
            forced[row, target[min(step, len(target) - 1)]] = 0.0
        return forced


def scripted(tokenizer, choose):
    return {"do_sample": False, "logits_processor": LogitsProcessorList([Script(tokenizer, choose)])}


# ------------------------------------------------------------------------------------------ stopping
def test_generation_stops_right_after_the_token_that_completes_the_stop_string(tiny):
    model, tok = tiny
    text = "ab</code>cd and more"
    ids = tok.encode(text, add_special_tokens=False)
    end = next(k for k in range(1, len(ids) + 1) if "</code>" in tok.decode(ids[:k]))
    server = CPUGenerationServer(
        model,
        tok,
        rng_state=seed_state(0),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        sampling_kwargs=scripted(tok, lambda context: text),
    )
    prompt = tuple(tok.encode("hello", add_special_tokens=False))
    stop, plain, short = server.generate_batch(
        [
            GenerateRequest(prompt, max_tokens=50, stop=("</code>",)),
            GenerateRequest(prompt, max_tokens=50, stop=()),
            GenerateRequest(prompt, max_tokens=2, stop=("</code>",)),
        ]
    )
    assert list(stop.token_ids) == ids[:end]
    assert list(plain.token_ids) == [*ids, tok.eos_token_id]  # no stop string: up to EOS, EOS kept
    assert list(short.token_ids) == ids[:2]  # the row's own limit


# ------------------------------------------------------------------------------------------ randomness
def test_the_same_rng_state_gives_the_same_rollouts_and_the_global_rng_is_left_alone(tiny):
    model, tok = tiny
    config = TurnConfig(response_length=24)
    outer = torch.get_rng_state()

    def go(state):
        return run_tool_rollout(
            model,
            tok,
            CHATS,
            config=config,
            tool=FakeTool(),
            rng_state=state,
            sampling_kwargs=SAMPLING,
            rewrite_prompt=False,  # short prompts: fast on CPU
        )

    first, again, other = go(seed_state(7)), go(seed_state(7)), go(seed_state(8))
    assert torch.equal(torch.get_rng_state(), outer)
    assert [r.response_ids for r in first.results] == [r.response_ids for r in again.results]
    assert torch.equal(first.rng_state, again.rng_state)
    assert not torch.equal(first.rng_state, seed_state(7))
    assert [r.response_ids for r in first.results] != [r.response_ids for r in other.results]
    assert all(len(r.response_ids) <= 24 for r in first.results)


def test_prompts_get_the_retool_instruction_by_default(tiny):
    model, tok = tiny
    config = TurnConfig(response_length=2)
    rollout = run_tool_rollout(model, tok, CHATS[:1], config=config, tool=FakeTool(), rng_state=seed_state(0))
    assert list(rollout.results[0].prompt_ids) == prompt_token_ids(tok, CHATS[0])
    assert tok.decode(rollout.results[0].prompt_ids).count("*user question:*\nWhat is 1+1?") == 1


def test_a_checkpointed_state_resumes_bit_exactly(tiny):
    model, tok = tiny
    config = TurnConfig(response_length=16)

    def go(state):
        return run_tool_rollout(
            model,
            tok,
            CHATS,
            config=config,
            tool=FakeTool(),
            rng_state=state,
            sampling_kwargs=SAMPLING,
            rewrite_prompt=False,  # short prompts: fast on CPU
        )

    step1 = go(seed_state(3))
    step2 = go(step1.rng_state)
    buffer = io.BytesIO()
    torch.save({"rollout_rng": step1.rng_state}, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)["rollout_rng"]
    resumed = go(restored)
    assert [r.response_ids for r in resumed.results] == [r.response_ids for r in step2.results]
    assert torch.equal(resumed.rng_state, step2.rng_state)


# ------------------------------------------------------------------------------------------ turns on the server
class SlowTool(FakeTool):
    """Answers "2" after a random delay: the rounds must not depend on it."""

    def run(self, code):
        time.sleep(random.uniform(0.0, 0.05))
        self.calls.append(code)
        return ToolResult("2", latency_s=0.01)


def test_multi_turn_rollouts_in_lockstep_rounds(tiny):
    model, tok = tiny
    first, final = "<code>1+1</code>", " ok"

    def choose(context):
        return final if "<interpreter>" in context else first

    config = TurnConfig(response_length=120)
    outputs = []
    for _ in range(2):
        tool = SlowTool()
        rollout = run_tool_rollout(
            model,
            tok,
            CHATS,
            config=config,
            tool=tool,
            rng_state=seed_state(0),
            sampling_kwargs=scripted(tok, choose),
            rewrite_prompt=False,
        )
        outputs.append(rollout)
        assert tool.calls == ["1+1", "1+1"] and rollout.rounds == 2

    result = outputs[0].results[0]
    block = interpreter_block("2")
    expected = tok.encode(first, add_special_tokens=False) + tok.encode(block, add_special_tokens=False)
    expected += [*tok.encode(final, add_special_tokens=False), tok.eos_token_id]
    assert list(result.response_ids) == expected
    n_first, n_block = (
        len(tok.encode(first, add_special_tokens=False)),
        len(tok.encode(block, add_special_tokens=False)),
    )
    assert result.response_mask[:n_first] == (1,) * n_first
    assert result.response_mask[n_first : n_first + n_block] == (0,) * n_block
    assert result.response_mask[n_first + n_block :] == (1,) * (len(expected) - n_first - n_block)
    assert result.metrics.stop_reason == "no_code" and result.num_turns == 4
    assert [r.response_ids for r in outputs[0].results] == [r.response_ids for r in outputs[1].results]


def test_the_latency_model_delays_each_code_run_by_its_samples_seeded_draw(tiny):
    from spo_helpers.core.latency import LatencyModel

    model, tok = tiny
    first, final = "<code>1+1</code>", " ok"

    def choose(context):
        return final if "<interpreter>" in context else first

    latency = LatencyModel(dist="lognormal", mu=-2.5, sigma=0.5, seed=3)
    words = [(7, 0), (7, 1)]
    rollout = run_tool_rollout(
        model,
        tok,
        CHATS,
        config=TurnConfig(response_length=120),
        tool=FakeTool([ToolResult("2", latency_s=0.0)]),
        rng_state=seed_state(0),
        sampling_kwargs=scripted(tok, choose),
        rewrite_prompt=False,
        latency=latency,
        sample_words=words,
    )
    for result, (step, row) in zip(rollout.results, words, strict=True):
        assert result.metrics.sandbox_seconds == pytest.approx(latency.delay(step, row, 0))
    # the lockstep round waits for the slower of the two delayed runs
    assert min(r.metrics.tool_seconds for r in rollout.results) >= max(latency.delay(*w, 0) for w in words) - 0.02
    with pytest.raises(ValueError, match="sample words"):
        run_tool_rollout(
            model,
            tok,
            CHATS,
            config=TurnConfig(response_length=120),
            tool=FakeTool(),
            rng_state=seed_state(0),
            latency=latency,
        )


# ------------------------------------------------------------------------------------------ verl's layout
def test_results_pack_like_verls_agent_loop_workers(tiny):
    pytest.importorskip("verl")
    model, tok = tiny
    config = TurnConfig(response_length=20)
    rollout = run_tool_rollout(
        model,
        tok,
        CHATS,
        config=config,
        tool=FakeTool(),
        rng_state=seed_state(1),
        sampling_kwargs=SAMPLING,
        prompt_length=64,
        rewrite_prompt=False,  # the ReTool instruction alone is ~540 tokens of this tokenizer
    )
    batch = pack_turn_results(rollout.results, prompt_length=64, response_length=20, pad_token_id=tok.pad_token_id)
    assert batch["prompts"].shape == (2, 64) and batch["responses"].shape == (2, 20)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["position_ids"].shape == (2, 84)
    for row, result in enumerate(rollout.results):
        p, r = len(result.prompt_ids), len(result.response_ids)
        assert batch["prompts"][row, 64 - p :].tolist() == list(result.prompt_ids)
        assert batch["attention_mask"][row].sum() == p + r
        assert batch["responses"][row, :r].tolist() == list(result.response_ids)
        assert batch["response_mask"][row, :r].tolist() == list(result.response_mask)
        assert batch["response_mask"][row, r:].sum() == 0
        assert batch["position_ids"][row, 64 - p] == 0 and batch["position_ids"][row, 64 + r - 1] == p + r - 1
    fields = non_tensor_fields(rollout.results)
    assert fields["__num_turns__"].tolist() == [r.num_turns for r in rollout.results]
    assert fields["tool_metrics"][0]["response_tokens"] == len(rollout.results[0].response_ids)
    with pytest.raises(ValueError, match="max_prompt_length"):
        pack_turn_results(rollout.results, prompt_length=4, response_length=20, pad_token_id=0)
