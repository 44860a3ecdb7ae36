"""The verl agent loop, built the way verl's agent-loop worker builds it, over a fake server manager."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("verl.experimental.agent_loop.agent_loop", reason="verl's agent loop (needs cachetools, openai)")

import hydra
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, _agent_loop_registry, _DummyConfig
from verl.workers.rollout.replica import TokenOutput

from spo_helpers.verl_glue.agent_loop import settings
from spo_helpers.verl_glue.agent_loop import tool as tool_module
from spo_helpers.verl_glue.agent_loop.prompt import RETOOL_INSTRUCTION
from spo_helpers.verl_glue.agent_loop.turns import interpreter_block
from spo_helpers.verl_glue.agent_loop.verl_loop import SPOToolAgentLoop

from .tir_fakes import CharTokenizer

pytestmark = pytest.mark.verl


class FakeServerManager:
    """``AsyncLLMServerManager.generate``'s signature; answers scripted texts; edits its params like vLLM's server."""

    def __init__(self, texts, tokenizer):
        self.texts = list(texts)
        self.tokenizer = tokenizer
        self.calls = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None):
        self.calls.append({"request_id": request_id, "prompt_ids": prompt_ids, "params": dict(sampling_params)})
        sampling_params.pop("logprobs", None)
        await asyncio.sleep(0)
        ids = self.tokenizer.encode(self.texts[len(self.calls) - 1])
        return TokenOutput(token_ids=ids, log_probs=[-1.0] * len(ids))


def trainer_config(tool_config_path, response_length=300, prompt_length=1024):
    return OmegaConf.create(
        {
            "actor_rollout_ref": {
                "rollout": {
                    "response_length": response_length,
                    "prompt_length": prompt_length,
                    "multi_turn": {
                        "max_assistant_turns": 8,
                        "max_user_turns": 8,
                        "max_parallel_calls": 1,
                        "max_tool_response_length": 256,
                        "tool_response_truncate_side": "middle",
                        "tool_config_path": tool_config_path,
                    },
                }
            },
            "data": {"apply_chat_template_kwargs": {}},
        }
    )


@pytest.fixture
def fresh_class(monkeypatch):
    """Class-level settings are read once per process: start each test from scratch."""
    monkeypatch.setattr(SPOToolAgentLoop, "_class_initialized", False)
    monkeypatch.setattr(
        tool_module,
        "run_code",
        lambda url, code, **kw: {"run_result": {"status": "Finished", "stdout": "2\n", "stderr": "", "return_code": 0}},
    )


def build_from_the_yaml(config, server_manager, tokenizer, path=settings.AGENT_LOOP_CONFIG):
    """What ``AgentLoopWorkerBase`` does with ``agent_loop_config_path`` and an ``agent_name``."""
    for entry in OmegaConf.load(path):
        _agent_loop_registry[entry.name] = entry
    return hydra.utils.instantiate(
        config=_agent_loop_registry[settings.AGENT_NAME],
        trainer_config=_DummyConfig(config=config),
        server_manager=server_manager,
        tokenizer=tokenizer,
        processor=None,
    )


def test_registered_under_its_name():
    assert _agent_loop_registry[settings.AGENT_NAME]["_target_"].endswith("verl_loop.SPOToolAgentLoop")


def test_one_sample_through_the_verl_loop(fresh_class):
    tok = CharTokenizer()
    first, second = "<code>1 + 1</code>", "so \\boxed{2}"
    manager = FakeServerManager([first, second], tok)
    config = trainer_config(str(settings.TOOL_CONFIG))
    sampling = {"temperature": 1.0, "top_p": 1.0, "repetition_penalty": 1.0, "logprobs": True}

    async def go():
        loop = build_from_the_yaml(config, manager, tok)
        return await loop.run(dict(sampling), raw_prompt=[{"role": "user", "content": "1+1?"}], extra_info={})

    output = asyncio.run(go())
    assert isinstance(output, AgentLoopOutput)
    block = interpreter_block("2\n")
    assert tok.decode(output.prompt_ids) == f"<user>{RETOOL_INSTRUCTION}1+1?</user><assistant>"
    assert tok.decode(output.response_ids) == first + block + second
    assert output.response_mask == [1] * len(first) + [0] * len(block) + [1] * len(second)
    assert output.response_logprobs == [-1.0] * len(first) + [0.0] * len(block) + [-1.0] * len(second)
    assert output.num_turns == 4
    assert output.extra_fields["tool_metrics"]["tool_calls"] == 1
    assert output.extra_fields["turn_scores"] == [] and output.extra_fields["tool_rewards"] == []
    assert output.metrics.generate_sequences >= 0 and output.metrics.tool_calls >= 0

    params = [c["params"] for c in manager.calls]
    assert all(p["stop"] == ["</code>"] and p["include_stop_str_in_output"] is True for p in params)
    assert all(p["temperature"] == 1.0 and p["logprobs"] is True and "max_tokens" not in p for p in params)
    assert len({c["request_id"] for c in manager.calls}) == 2
    assert manager.calls[1]["prompt_ids"] == output.prompt_ids + tok.encode(first + block)


def test_the_response_is_cut_to_response_length(fresh_class):
    tok = CharTokenizer()
    manager = FakeServerManager(["x" * 50], tok)
    config = trainer_config(str(settings.TOOL_CONFIG), response_length=20)

    async def go():
        loop = build_from_the_yaml(config, manager, tok)
        return await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "q"}])

    output = asyncio.run(go())
    assert output.response_ids == tok.encode("x" * 20) and output.response_mask == [1] * 20
    assert output.extra_fields["tool_metrics"]["stop_reason"] == "budget"


def test_settings_errors_name_the_fix(fresh_class):
    tok = CharTokenizer()

    async def build(config):
        return build_from_the_yaml(config, FakeServerManager([], tok), tok)

    with pytest.raises(Exception, match="tool_config_path"):  # hydra wraps it in an InstantiationException
        asyncio.run(build(trainer_config(None)))

    async def too_long():
        loop = build_from_the_yaml(
            trainer_config(str(settings.TOOL_CONFIG), prompt_length=10), FakeServerManager([], tok), tok
        )
        return await loop.run({}, raw_prompt=[{"role": "user", "content": "q"}])

    with pytest.raises(ValueError, match="max_prompt_length"):
        asyncio.run(too_long())


def test_the_yaml_entry_can_keep_the_datasets_chat(fresh_class, tmp_path):
    tok = CharTokenizer()
    path = tmp_path / "loops.yaml"
    path.write_text(settings.AGENT_LOOP_CONFIG.read_text().replace("rewrite_prompt: true", "rewrite_prompt: false"))
    manager = FakeServerManager(["done"], tok)

    async def go():
        loop = build_from_the_yaml(trainer_config(str(settings.TOOL_CONFIG)), manager, tok, path)
        return await loop.run({}, raw_prompt=[{"role": "user", "content": "q"}])

    assert tok.decode(asyncio.run(go()).prompt_ids) == "<user>q</user><assistant>"
