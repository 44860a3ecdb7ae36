"""The TIR variant of the CPU world: traces, tokenizer, labels, the real sandbox, the build, `spo world --tools`."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from spo_helpers.formats import tool_blocks
from spo_helpers.world import build as world_build
from spo_helpers.world import warmstart
from spo_helpers.world.paths import WORLD_VERSION, is_complete, world_name
from spo_helpers.world.task import make_task, row_answer, row_content
from spo_helpers.world.tokenizer import chat_text
from spo_helpers.world.traces import (
    TOOL_RESPONSE_LENGTH,
    ToolSamples,
    build_tool_tokenizer,
    direct_trace,
    encode_trace,
    interpreter_output,
    problem_expression,
    row_trace,
    row_traces,
    tool_choices,
    tool_trace,
    tool_use_summary,
    trace_text,
)
from spo_helpers.world.warmstart import WarmStartConfig

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

NUM_TRAIN, NUM_VAL = 120, 16


@pytest.fixture(scope="module")
def rows():
    train, val = make_task(NUM_TRAIN, NUM_VAL, seed=0)
    return train + val


@pytest.fixture(scope="module")
def tokenizer(rows):
    return build_tool_tokenizer(rows)


@pytest.fixture(scope="module")
def sandbox_url():
    from spo_helpers.errors import UserError
    from spo_helpers.sandbox import SandboxLimits, local_sandbox

    try:
        with local_sandbox(SandboxLimits(workers=2), mode="thread") as url:
            yield url
    except UserError as err:
        pytest.skip(f"no local sandbox here: {err}")


# ------------------------------------------------------------------------------------------ format
def test_the_agent_loop_reads_the_block_format_from_formats():
    from spo_helpers.verl_glue.agent_loop import turns

    assert tool_blocks.CODE_STOP == "</code>"
    assert turns.TurnConfig(response_length=8).stop == (tool_blocks.CODE_STOP,)
    assert tool_blocks.interpreter_block("7\n") == "<interpreter>\n7\n\n</interpreter>\n\n"


def test_a_tool_trace_reads_as_the_loop_writes_it():
    segments = tool_trace("17*3+45", 96)
    assert trace_text(segments) == "<code>\n17*3+45\n</code><interpreter>\n96\n\n</interpreter>\n\n\\boxed{96}"
    assert [s.trained for s in segments] == [True, False, True]
    assert trace_text(direct_trace(-14)) == "\\boxed{-14}" and interpreter_output("-14") == "-14\n"


def test_every_prompt_yields_its_expression(rows):
    from spo_helpers.sandbox.code import extract_code_blocks

    for row in rows:
        expression = problem_expression(row_content(row))
        assert expression in row_content(row).split("\n")[0]
        code = trace_text(row_trace(row, True)[:1])
        assert extract_code_blocks(code) == [expression]  # what the tool will run (its last line printed)
    with pytest.raises(ValueError, match="one arithmetic expression"):
        problem_expression("no numbers here")


def test_tool_choices_are_seeded_and_ignore_difficulty(rows):
    chosen = tool_choices(len(rows), 0.5, seed=0)
    assert chosen.sum() == round(0.5 * len(rows))
    np.testing.assert_array_equal(chosen, tool_choices(len(rows), 0.5, seed=0))
    assert not np.array_equal(chosen, tool_choices(len(rows), 0.5, seed=1))
    assert tool_choices(10, 0.0, 0).sum() == 0 and tool_choices(10, 1.0, 0).all()
    with pytest.raises(ValueError):
        tool_choices(10, 1.5, 0)
    many = make_task(3000, 0, seed=0)[0]
    picked = tool_choices(len(many), 0.5, seed=0)
    levels = np.array([r["extra_info"]["difficulty"] for r in many])
    for level in range(5):  # about half at every difficulty
        assert 0.35 < picked[levels == level].mean() < 0.65
    traces = row_traces(many[:50], 0.5, seed=0)
    assert [len(t) == 3 for t in traces] == list(tool_choices(50, 0.5, seed=0))


# ------------------------------------------------------------------------------------------ tokenizer and labels
def test_trace_round_trips_through_the_tokenizer(rows, tokenizer):
    for marker in ("<code>\n", "\n</code>", "<interpreter>\n", "\n\n</interpreter>\n\n"):
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1, marker
    for row in rows:
        for use_tool in (True, False):
            segments = row_trace(row, use_tool)
            ids, trained = encode_trace(tokenizer, segments)
            assert ids[-1] == tokenizer.eos_token_id and len(ids) <= TOOL_RESPONSE_LENGTH
            assert tokenizer.decode(ids, skip_special_tokens=True) == trace_text(segments)
            assert tokenizer.decode([i for i, t in zip(ids, trained, strict=True) if not t]) == "".join(
                s.text for s in segments if not s.trained
            )
        prompt = tokenizer(chat_text(row_content(row)), add_special_tokens=False)["input_ids"]
        assert len(prompt) <= 64


def test_generation_stops_exactly_at_the_end_of_code(rows, tokenizer):
    """The code turn's last token completes ``</code>`` and nothing after it: no merge crosses the block."""
    for row in rows[:40]:
        code = row_trace(row, True)[0].text
        ids = tokenizer(code, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids[-1:]).endswith(tool_blocks.CODE_STOP)
        assert tool_blocks.CODE_STOP not in tokenizer.decode(ids[:-1])


def test_labels_train_the_model_tokens_only(rows, tokenizer):
    from spo_helpers.world.warmstart import IGNORE_INDEX, encode_examples

    sample = rows[:12]
    targets = [row_trace(row, i % 2 == 0) for i, row in enumerate(sample)]
    ids, mask, labels = encode_examples(tokenizer, sample, targets)
    for i, (row, segments) in enumerate(zip(sample, targets, strict=True)):
        prompt = len(tokenizer(chat_text(row_content(row)), add_special_tokens=False)["input_ids"])
        response, trained = encode_trace(tokenizer, segments)
        seq = ids[i, : int(mask[i].sum())].tolist()
        assert seq[prompt:] == response
        expected = [IGNORE_INDEX] * prompt + [
            t if keep else IGNORE_INDEX for t, keep in zip(response, trained, strict=True)
        ]
        assert labels[i, : len(seq)].tolist() == expected
        assert (labels[i, len(seq) :] == IGNORE_INDEX).all()
        if len(segments) == 3:
            interpreter = tokenizer.decode([t for t, keep in zip(response, trained, strict=True) if not keep])
            assert interpreter == tool_blocks.interpreter_block(interpreter_output(row_answer(row)))
    # Direct targets give exactly the plain world's tensors.
    plain = encode_examples(tokenizer, sample)
    direct = encode_examples(tokenizer, sample, [direct_trace(row_answer(r)) for r in sample])
    for a, b in zip(plain, direct, strict=True):
        assert a.equal(b)


# ------------------------------------------------------------------------------------------ the real sandbox
def test_traces_hold_what_the_sandbox_prints(rows, tokenizer, sandbox_url):
    """The interpreter text of a trace is the real sandbox's answer, and the loop assembles the same ids."""
    import asyncio

    from spo_helpers.verl_glue.agent_loop.tool import CodeInterpreter, ToolConfig
    from spo_helpers.verl_glue.agent_loop.turns import Generation, ToolStatus, ToolTurns, TurnConfig, run_turns

    interpreter = CodeInterpreter(ToolConfig(url=sandbox_url, run_timeout=5))
    picked = [r for r in rows if int(row_answer(r)) < 0][:3] + [r for r in rows if "*" in row_content(r)][:3]
    picked += [r for r in rows if r["extra_info"]["difficulty"] == 4][:2]
    for row in picked:
        segments = row_trace(row, True)
        code = interpreter.extract(segments[0].text)
        result = interpreter.run(code)
        assert (result.text, result.status) == (interpreter_output(row_answer(row)), ToolStatus.OK)

        script = [
            tokenizer(s.text + ("" if i < 2 else tokenizer.eos_token), add_special_tokens=False)["input_ids"]
            for i, s in enumerate(segments)
            if s.trained
        ]

        async def generate(request, script=script):
            return Generation(token_ids=tuple(script.pop(0)))

        prompt = tokenizer(chat_text(row_content(row)), add_special_tokens=False)["input_ids"]
        turns = ToolTurns(prompt, TurnConfig(response_length=TOOL_RESPONSE_LENGTH), tokenizer, interpreter.extract)
        out = asyncio.run(run_turns(turns, generate, interpreter))
        ids, trained = encode_trace(tokenizer, segments)
        assert list(out.response_ids) == ids and list(out.response_mask) == [int(t) for t in trained]
        assert out.metrics.tool_calls == 1 and out.metrics.stop_reason == "no_code"


# ------------------------------------------------------------------------------------------ summary numbers
def test_tool_use_summary():
    samples = ToolSamples(
        success=np.array([[1, 1], [0, 1], [0, 0]], dtype=bool),
        tool_calls=np.array([[1, 0], [0, 1], [0, 0]]),
        response_tokens=np.array([[20, 6], [7, 22], [5, 5]]),
        out_of_budget=np.zeros((3, 2), dtype=bool),
    )
    s = tool_use_summary(samples, [0, 0, 3])
    assert s["mean_success"] == pytest.approx(0.5) and s["share_mixed"] == pytest.approx(1 / 3)
    assert s["tool_call_rate"] == pytest.approx(2 / 6)
    assert s["success_with_tool"] == 1.0 and s["success_without_tool"] == 0.25
    assert s["success_with_tool_by_difficulty"] == {"0": 1.0, "3": None}
    assert s["tool_call_rate_by_difficulty"] == {"0": 0.5, "3": 0.0}
    assert s["max_response_tokens"] == 22


# ------------------------------------------------------------------------------------------ the build
SHORT_WARM_START = WarmStartConfig(steps=20)  # a test-sized warm start (the kit's default for 120 prompts: 60)


@pytest.fixture
def short_warm_start(monkeypatch):
    """The command's default warm start, shortened like the fixture's (so `spo world` finds the world cached)."""
    monkeypatch.setattr(warmstart, "default_warm_start", lambda num_train, seed=0: SHORT_WARM_START)


@pytest.fixture(scope="module")
def tool_world(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    return world_build.build_world(
        assets,
        seed=0,
        num_train=NUM_TRAIN,
        num_val=NUM_VAL,
        tools=True,
        progress=False,
        warm_start=SHORT_WARM_START,
    )


def test_the_tool_world_builds_beside_the_plain_one(tool_world, rows):
    paths = tool_world
    assert paths.root.name == f"world-v{WORLD_VERSION}-seed0-n{NUM_TRAIN}-tools"
    assert world_name(0, NUM_TRAIN) == f"world-v{WORLD_VERSION}-seed0-n{NUM_TRAIN}"
    manifest = json.loads(paths.manifest_file.read_text())
    assert manifest["tools"] is True and manifest["tool_share"] == 0.5
    assert manifest["tool_response_length"] == TOOL_RESPONSE_LENGTH
    assert manifest["tool_traces_train"] == NUM_TRAIN // 2
    assert manifest["spread"] is None and world_build.needs_tool_check(paths)
    assert set(manifest["tokenizer"]["tool_marker_tokens"].values()) == {1}
    assert manifest["tokenizer"]["max_response_tokens"] <= TOOL_RESPONSE_LENGTH
    settings = {"seed": 0, "num_train": NUM_TRAIN, "num_val": NUM_VAL}
    assert is_complete(paths, **settings, tools=True, tool_share=0.5)
    assert not is_complete(paths, **settings, tools=True, tool_share=0.25)
    assert not is_complete(paths, **settings)  # not a plain world
    from spo_helpers.world.task import read_rows

    assert read_rows(paths.train_file) + read_rows(paths.val_file) == rows  # the same task rows
    start = time.perf_counter()
    again = world_build.build_world(
        paths.root.parent,
        seed=0,
        num_train=NUM_TRAIN,
        num_val=NUM_VAL,
        tools=True,
        progress=False,
        warm_start=SHORT_WARM_START,
    )
    assert again == paths and time.perf_counter() - start < 2.0
    with pytest.raises(ValueError, match="tools=True"):
        world_build.build_world(paths.root.parent, num_train=NUM_TRAIN, num_val=NUM_VAL, tool_share=0.5)


def test_spo_world_tools_measures_through_the_agent_loop(
    tool_world, sandbox_url, monkeypatch, capsys, short_warm_start
):
    """`spo world --tools` on the cached world: the check runs once (small here), then the world is reused."""
    from spo_helpers.cli import main

    paths = tool_world
    monkeypatch.setattr(world_build, "SPREAD_PROMPTS", 16)
    monkeypatch.setattr(world_build, "SPREAD_SAMPLES", 2)
    monkeypatch.setattr(world_build, "VAL_SAMPLES", 1)
    args = ["world", "--tools", "--assets", str(paths.root.parent), "--num-train", str(NUM_TRAIN)]
    args += ["--num_val", str(NUM_VAL), "--sandbox-url", sandbox_url]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "with tools" in out and "call rate" in out
    manifest = json.loads(paths.manifest_file.read_text())
    spread = manifest["spread"]
    assert spread["tools"] is True and spread["prompts"] == 16 and spread["n"] == 2
    assert spread["response_length"] == TOOL_RESPONSE_LENGTH and spread["max_response_tokens"] <= TOOL_RESPONSE_LENGTH
    assert 0 <= spread["tool_call_rate"] <= 1 and 0 <= spread["mean_success"] <= 1
    assert set(spread["mean_by_difficulty"]) <= {"0", "1", "2", "3", "4"}
    assert manifest["val_accuracy"]["prompts"] == NUM_VAL and manifest["tool_check_seconds"] > 0
    assert not world_build.needs_tool_check(paths)

    before = paths.manifest_file.stat().st_mtime_ns
    assert main([*args[:-2], "--quiet"]) == 0  # measured: no sandbox needed, nothing rewritten
    assert capsys.readouterr().out.strip() == str(paths.root)
    assert paths.manifest_file.stat().st_mtime_ns == before


def test_tool_flags_need_tools(capsys):
    from spo_helpers.cli import main

    assert main(["world", "--tool_share", "0.3", "--quiet"]) == 2
    assert "--tools" in capsys.readouterr().err
