"""The official tool's code preparation: fences stripped, last line wrapped in print(...), quirks kept."""

from __future__ import annotations

import pytest

from spo_helpers.sandbox.code import extract_code_blocks, prepare_tool_code, strip_fences, wrap_last_line_in_print


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 6 * 7\nx", "x = 6 * 7\nprint(x)"),
        ("x = 6 * 7\nx\n\n", "x = 6 * 7\nprint(x)\n\n"),  # trailing empty lines are skipped, kept
        ("print(x)", "print(x)"),
        ("printer = 1", "printer = 1"),  # starts with "print": left alone
        ("y = 2", "print(y = 2)"),  # an assignment is wrapped too (what the official runs did)
        ("for i in range(3):\n    i", "for i in range(3):\nprint(    i)"),  # indented: wrapped as is
        ("a\n   ", "a\nprint(   )"),  # only "" counts as empty, not spaces
        ("", ""),
        ("\n\n", "\n\n"),
    ],
)
def test_wrap_last_line_in_print(code, expected):
    assert wrap_last_line_in_print(code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("```python\nprint(1)\n```", "print(1)"),
        ("\n```python\nprint(1)\n```\n", "print(1)"),
        ("```\nprint(1)\n```", "print(1)"),
        ("```python print(1)```", "print(1)"),
        ("print(1)", "print(1)"),
        ("```py\nprint(1)\n```", "py\nprint(1)"),  # only ``` and ```python are fences
    ],
)
def test_strip_fences(code, expected):
    assert strip_fences(code) == expected


def test_extract_code_blocks_in_order():
    text = "think <code>\n```python\na = 1\na\n```\n</code> more <code>print(2)</code> <code>unclosed"
    assert extract_code_blocks(text) == ["a = 1\na", "print(2)"]
    assert [prepare_tool_code(c) for c in extract_code_blocks(text)] == ["a = 1\nprint(a)", "print(2)"]
