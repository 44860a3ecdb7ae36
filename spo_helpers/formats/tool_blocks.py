"""The text of tool blocks in a tool-integrated response, written once for the agent loop and the CPU world.

A response with tools reads::

    <code>
    17*3+45
    </code><interpreter>
    96

    </interpreter>

    \\boxed{96}

The model writes ``<code>``, its code and ``</code>`` (where generation stops); the interpreter's text
comes back as ``"<interpreter>\\n" + text + "\\n</interpreter>\\n\\n"`` (``interpreter_block``). The agent
loop (``verl_glue/agent_loop/turns.py``) reads these names from here, and so does the CPU world's
warm start (``world/traces.py``), so the traces the tiny model learns from are what the loop produces.
The sandbox's code preparation finds the code with ``CODE_BLOCK`` (the official recipe's pattern), and the
reward's ``</think>`` rule looks for ``TOOL_MARKERS`` after the thinking.
"""

from __future__ import annotations

import re

CODE_OPEN = "<code>"
CODE_STOP = "</code>"
INTERPRETER_TAG = "<interpreter>"
INTERPRETER_END_TAG = "</interpreter>"
INTERPRETER_OPEN = INTERPRETER_TAG + "\n"
INTERPRETER_CLOSE = "\n" + INTERPRETER_END_TAG + "\n\n"

CODE_BLOCK = re.compile(re.escape(CODE_OPEN) + r"(.*?)" + re.escape(CODE_STOP), re.DOTALL)
"""Every ``<code>...</code>`` block of a response; group 1 is the text between the tags."""

TOOL_MARKERS = (CODE_OPEN, INTERPRETER_TAG)
"""Text that shows a response used the tool."""


def code_block(code: str) -> str:
    """``"<code>\\n" + code + "\\n</code>"``: a code turn ending where generation stops."""
    return CODE_OPEN + "\n" + code + "\n" + CODE_STOP


def interpreter_block(text: str) -> str:
    """``"<interpreter>\\n" + text + "\\n</interpreter>\\n\\n"``: what the model reads back."""
    return INTERPRETER_OPEN + text + INTERPRETER_CLOSE


__all__ = [
    "CODE_BLOCK",
    "CODE_OPEN",
    "CODE_STOP",
    "INTERPRETER_CLOSE",
    "INTERPRETER_END_TAG",
    "INTERPRETER_OPEN",
    "INTERPRETER_TAG",
    "TOOL_MARKERS",
    "code_block",
    "interpreter_block",
]
