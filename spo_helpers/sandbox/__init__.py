"""A local, contained code sandbox speaking Sandbox Fusion's ``POST /run_code`` API.

verl's ``sandbox_fusion`` client and tools (and so the official SPO recipe's code tool) talk to
it unchanged. Modules, one concept each:

- ``limits``  ``SandboxLimits``: what a run and the server may use (and their flags); ``resolve`` for one request
- ``api``     the wire format: request validation, response bodies, statuses
- ``bwrap``   finding bubblewrap and the file-system view of a run
- ``seccomp`` the system-call filter
- ``cgroups`` one memory + pids cgroup per worker slot
- ``inside``  the first process inside a sandbox (standard library only)
- ``jail``    ``Sandbox``: runs one request contained and returns a ``RunRecord``
- ``server``  the HTTP server
- ``client``  ``run_code``, ``local_sandbox``
- ``code``    the official tool's code preparation (fences, last line in ``print``)
- ``check``   the self-test behind ``spo sandbox check``
- ``service`` the server as a process (``python -m spo_helpers.sandbox.service``, ``spo sandbox serve|check``)
"""

from spo_helpers.sandbox.client import local_sandbox, run_code
from spo_helpers.sandbox.code import extract_code_blocks, prepare_tool_code, strip_fences, wrap_last_line_in_print
from spo_helpers.sandbox.limits import SandboxLimits

__all__ = [
    "SandboxLimits",
    "extract_code_blocks",
    "local_sandbox",
    "prepare_tool_code",
    "run_code",
    "strip_fences",
    "wrap_last_line_in_print",
]
