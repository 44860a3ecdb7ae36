"""What the official SPO tool does to model-written code before sending it to the sandbox.

The official recipe (verl-recipe ``spo/``) takes the text between ``<code>`` and ``</code>``,
strips a Markdown fence around it (``spo_tool_agent_loop.py``, ``_extract_code_blocks``), and
its tool (``spo_retool.py``, ``CustomSandboxFusionTool.execute``) wraps the last non-empty line
in ``print(...)`` unless that line starts with ``print``, so a bare expression shows its value.
These functions reproduce those rules exactly, quirks included (see ``wrap_last_line_in_print``),
so a run sees what the official runs saw. They belong to the agent loop: the server runs code as
it is sent, like Sandbox Fusion.
"""

from __future__ import annotations

import re

from spo_helpers.formats.tool_blocks import CODE_BLOCK

_OPENING_FENCE = re.compile(r"^```(?:python)?\s*\n?")
_CLOSING_FENCE = re.compile(r"\n?```\s*$")


def strip_fences(code: str) -> str:
    """Remove a leading `````python`` (or bare ```````) fence and a trailing ``````` fence, then surrounding space.

    >>> strip_fences("```python\\nx = 1\\nx\\n```")
    'x = 1\\nx'
    >>> strip_fences("  print(2)  ")
    'print(2)'
    """
    cleaned = _OPENING_FENCE.sub("", code.strip())
    cleaned = _CLOSING_FENCE.sub("", cleaned)
    return cleaned.strip()


def extract_code_blocks(text: str) -> list[str]:
    """Every ``<code>...</code>`` block of a response, in order, each through ``strip_fences``.

    >>> extract_code_blocks("a <code>\\n```python\\n1+1\\n```\\n</code> b <code>print(3)</code>")
    ['1+1', 'print(3)']
    """
    return [strip_fences(block) for block in CODE_BLOCK.findall(text)]


def wrap_last_line_in_print(code: str) -> str:
    """Wrap the last non-empty line in ``print(...)`` unless it starts with ``print``, as the official tool does.

    Lines are split on ``"\\n"`` only; a line counts as empty only when it is exactly ``""``
    (a line of spaces is wrapped). The test is ``line.startswith("print")`` on the raw line, so
    an indented line or an assignment is wrapped as well, which breaks it; that is what the
    official runs executed, so it is kept.

    >>> wrap_last_line_in_print("x = 6 * 7\\nx\\n")
    'x = 6 * 7\\nprint(x)\\n'
    >>> wrap_last_line_in_print("print(1)")
    'print(1)'
    >>> wrap_last_line_in_print("y = 2")
    'print(y = 2)'
    """
    lines = code.split("\n")
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line == "":
            continue
        if not line.startswith("print"):
            lines[index] = f"print({line})"
        break
    return "\n".join(lines)


def prepare_tool_code(code: str) -> str:
    """The official tool's preparation in one call: ``wrap_last_line_in_print(strip_fences(code))``."""
    return wrap_last_line_in_print(strip_fences(code))
