"""Throughput of the local code sandbox (``spo sandbox serve``) against running code with no isolation.

Each request runs ``print(1 + 1)``: the figure is the fixed cost of one sandboxed run (HTTP,
bubblewrap's namespaces and mounts, the seccomp filter, cgroup set-up, the in-sandbox init,
the interpreter's start, the teardown of the PID namespace). The server runs in its own
process (``local_sandbox``), with ``--workers`` slots; ``C`` client threads send ``--requests``
requests in all, one at a time each, through ``spo_helpers.sandbox.client.run_code``. The
baseline, measured in the same run at the same concurrency, is ``subprocess.run([python, -c,
code])`` with no isolation at all. Ratio: sandbox requests/s over baseline runs/s.

    python bench/bench_sandbox.py [--clients 1 2 4] [--requests 60] [--workers N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from results_line import emit

from spo_helpers.sandbox.client import local_sandbox, run_code
from spo_helpers.sandbox.limits import SandboxLimits

CODE = "print(1 + 1)"


def measure(task: Callable[[], None], clients: int, requests: int) -> tuple[float, list[float]]:
    """(requests per second, latencies) for ``requests`` calls of ``task`` spread over ``clients`` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    left = [requests]

    def client() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            start = time.perf_counter()
            task()
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - start), latencies


def baseline_task() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout == "2\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4], help="concurrent clients (default 1 2 4)")
    parser.add_argument("--requests", type=int, default=60, help="requests per concurrency level (default 60)")
    parser.add_argument("--workers", type=int, default=None, help="sandbox worker slots (default: one per CPU)")
    parser.add_argument("--quick", action="store_true", help="12 requests per level")
    args = parser.parse_args()
    if args.quick:
        args.requests = 12
    limits = SandboxLimits() if args.workers is None else SandboxLimits(workers=args.workers)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"program: {CODE!r}; {args.requests} requests per level; sandbox workers: {limits.workers}")
    try:
        load = os.getloadavg()[0]
        print(f"load average at start: {load:.2f} (timings mean little on a busy machine)")
    except OSError:
        pass

    with local_sandbox(limits) as url:

        def sandbox_task() -> None:
            body = run_code(url, CODE, run_timeout=30)
            assert body["status"] == "Success" and body["run_result"]["stdout"] == "2\n", body

        measure(sandbox_task, 1, 3)  # warm-up: page cache, first interpreter start
        measure(baseline_task, 1, 3)
        header = (
            f"{'clients':>7} {'sandbox req/s':>14} {'p50 ms':>8} {'p95 ms':>8} {'baseline runs/s':>16} {'ratio':>7}"
        )
        print("\n" + header + "\n" + "-" * len(header))
        rows = []
        for clients in args.clients:
            sandbox_rate, latencies = measure(sandbox_task, clients, args.requests)
            baseline_rate, _ = measure(baseline_task, clients, args.requests)
            latencies.sort()
            p50 = statistics.median(latencies) * 1e3
            p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1e3
            ratio = sandbox_rate / baseline_rate
            rows.append((clients, sandbox_rate, baseline_rate, ratio))
            print(f"{clients:>7} {sandbox_rate:>14.1f} {p50:>8.0f} {p95:>8.0f} {baseline_rate:>16.1f} {ratio:>7.2f}")

    print()
    for clients, sandbox_rate, baseline_rate, ratio in rows:
        emit(
            f"sandbox: print(1+1) requests/s, {clients} client(s), {limits.workers} worker(s) (vs no isolation)",
            round(sandbox_rate, 1),
            "req/s",
            round(baseline_rate, 1),
            round(ratio, 3),
        )


if __name__ == "__main__":
    main()
