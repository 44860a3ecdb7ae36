"""One sandbox server for the whole session (thread mode, free loopback port).

Containment tests need a working bubblewrap: they are skipped, with the reason, only when
``bwrap`` cannot create the sandbox's namespaces on this machine.
"""

from __future__ import annotations

import os

import pytest

from .helpers import SERVER_SECRET, SERVER_SECRET_VAR, TEST_LIMITS, Served


@pytest.fixture(scope="session")
def served():
    """The session's server: ``TEST_LIMITS``, a secret in this process's environment while it runs."""
    from spo_helpers.sandbox.bwrap import BwrapUnavailable
    from spo_helpers.sandbox.jail import Sandbox
    from spo_helpers.sandbox.server import BackgroundServer

    os.environ[SERVER_SECRET_VAR] = SERVER_SECRET
    try:
        sandbox = Sandbox(TEST_LIMITS)
    except BwrapUnavailable as err:
        os.environ.pop(SERVER_SECRET_VAR, None)
        pytest.skip(f"bubblewrap cannot run here: {err}")
    server = BackgroundServer(sandbox, port=0)
    try:
        yield Served(url=server.url + "/run_code", base=server.url, sandbox=sandbox, limits=sandbox.limits)
    finally:
        server.stop()
        sandbox.close()
        os.environ.pop(SERVER_SECRET_VAR, None)
