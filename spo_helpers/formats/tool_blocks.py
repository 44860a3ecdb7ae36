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
"""

from __future__ import annotations

CODE_OPEN = "<code>"
CODE_STOP = "</code>"
INTERPRETER_OPEN = "<interpreter>\n"
INTERPRETER_CLOSE = "\n</interpreter>\n\n"


def code_block(code: str) -> str:
    """``"<code>\\n" + code + "\\n</code>"``: a code turn ending where generation stops."""
    return CODE_OPEN + "\n" + code + "\n" + CODE_STOP


def interpreter_block(text: str) -> str:
    """``"<interpreter>\\n" + text + "\\n</interpreter>\\n\\n"``: what the model reads back."""
    return INTERPRETER_OPEN + text + INTERPRETER_CLOSE


__all__ = ["CODE_OPEN", "CODE_STOP", "INTERPRETER_CLOSE", "INTERPRETER_OPEN", "code_block", "interpreter_block"]
