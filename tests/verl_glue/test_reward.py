"""The reward on hostile model outputs: bounded time, no evaluation, binary scores."""

import time

import pytest

pytest.importorskip("verl")

from spo_helpers.verl_glue.reward import TAIL_CHARS, compute_score

KEY = {"prompt_key": "What is 2+2?"}


def score(text, gt="4", **kwargs):
    return compute_score("spo_arith", text, gt, KEY, **kwargs)


def test_correct_wrong_and_missing_answers():
    assert score("so \\boxed{4}") == {
        "score": 1.0,
        "acc": True,
        "pred": "4",
        "prompt_key": "What is 2+2?",
    }
    assert score("\\boxed{5}")["score"] == 0.0
    assert score("four")["score"] == 0.0 and score("four")["pred"] == ""
    assert compute_score("x", "\\boxed{4}", "4", None)["prompt_key"] == ""


def test_think_format_of_the_official_runs():
    assert score("<think>2+2</think> \\boxed{4}", require_think=True)["score"] == 1.0
    assert score("\\boxed{4}", require_think=True)["score"] == 0.0
    assert score("<think>a</think><think>b</think>\\boxed{4}", require_think=True)["score"] == 0.0
    assert score("<think>a</think><code>x</code>\\boxed{4}", require_think=True)["score"] == 0.0


HOSTILE = {
    "megabyte": "x" * 1_000_000 + "\\boxed{4}",
    "megabyte_of_braces": "{" * 1_000_000 + "\\boxed{4}",
    "deep_nesting_in_box": "\\boxed{" + "{" * 50_000 + "4" + "}" * 50_000 + "}",
    "unclosed_box": "\\boxed{" + "{" * 200_000,
    "code_in_box": "\\boxed{__import__('os').system('echo pwned')}",
    "eval_bait": "\\boxed{eval('2+2')}",
    "many_boxes": "\\boxed{1}" * 100_000,
    "many_think_tags": "</think>" * 200_000 + "\\boxed{4}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("require_think", [False, True])
def test_hostile_outputs_are_bounded_and_not_evaluated(name, require_think, capfd):
    start = time.perf_counter()
    result = score(HOSTILE[name], require_think=require_think)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"{name}: {elapsed:.3f}s"
    assert result["score"] in (0.0, 1.0)
    assert "pwned" not in capfd.readouterr().out
    if name in ("code_in_box", "eval_bait", "unclosed_box", "deep_nesting_in_box"):
        assert result["score"] == 0.0


def test_only_the_tail_is_parsed():
    # An answer far before the tail does not count: the response must end with its answer.
    assert score("\\boxed{4}" + " " * (TAIL_CHARS + 10))["score"] == 0.0


def test_invalid_utf8_bytes():
    result = score(b"\xff\xfe\\boxed{4}\xc3\x28")
    assert result["score"] == 0.0 or result["pred"] == "4"
    assert score(b"\\boxed{4}")["score"] == 1.0
