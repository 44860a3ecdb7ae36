"""A local Sandbox Fusion server (``POST /run_code``) for tool-integrated runs, and a self-test of its isolation.

    spo sandbox serve [--host 127.0.0.1] [--port 8080] [--workers N] [--run-timeout S] [--memory-mb M] ...
    spo sandbox check [same limits]

``serve`` answers verl's ``sandbox_fusion`` client and tools unchanged: point ``sandbox_fusion_url`` at
``http://HOST:PORT/run_code``. ``check`` tries each way out once and prints what held; exit code 1 if a check
failed. How the code is contained: docs/sandbox.md.
"""

from __future__ import annotations

import argparse

from spo_helpers.sandbox import service


def add_arguments(parser: argparse.ArgumentParser) -> None:
    service.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return service.run(args)
