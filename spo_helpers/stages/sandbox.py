"""A local Sandbox Fusion server (``POST /run_code``) for tool-integrated runs, and a self-test of its isolation:
``sandbox.service`` on the ``spo`` command line (running it, pointing verl at it, its containment: docs/sandbox.md).
"""

from __future__ import annotations

import argparse

from spo_helpers.sandbox import service

USAGE = """\
  spo sandbox serve                      # http://127.0.0.1:8080/run_code, one worker per CPU
  spo sandbox serve --port 8080 --workers 8 --run-timeout 30 --memory-mb 1024
  spo sandbox check                      # try every way out once; exit code 1 if a check failed

Point verl's sandbox_fusion_url at http://HOST:PORT/run_code. Details: docs/sandbox.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    service.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return service.run(args)
