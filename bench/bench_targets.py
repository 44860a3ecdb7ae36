"""Wall and CPU time of whole ``make`` targets (``test``, ``test-ray``, ``demo``), idle and beside busy processes,
with the kit's thread policy and with torch's defaults (``SPO_CPU_THREADS=torch``), in one run.

Each target runs once per condition (policy x load), in the order given. CPU time is the machine's: the
non-idle time of every core from ``/proc/stat`` over the run, less what the busy processes used (their own
``/proc/<pid>/stat``), so processes the target starts but does not wait for (Ray's) are counted too. Run it on
an otherwise idle machine; the environment must be installed (``make setup``), so no install is timed.

``demo`` writes ``runs/demo``: the benchmark refuses to start when that folder exists, unless ``--replace_demo``
lets it delete it before each demo run.

    python bench/bench_targets.py [--targets demo test-ray test] [--busy 1] [--replace_demo]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results_line import emit

REPO = Path(__file__).resolve().parent.parent
POLICIES = ("torch", "kit")
TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (``/proc/stat``: user, nice, system, irq, softirq,
    steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def environment(policy: str) -> dict[str, str]:
    from spo_helpers import cpu_threads

    env = {k: v for k, v in os.environ.items() if k not in (*cpu_threads.VARIABLES, cpu_threads.KIT_SET_ENV)}
    env[cpu_threads.SWITCH_ENV] = policy
    return env


def run_target(target: str, policy: str, busy: int, log_dir: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of everything but the load, exit code) of ``make target``."""
    loop = "while True:\n    pass\n"
    load = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(busy)]
    try:
        time.sleep(0.5)
        load_before = sum(process_cpu_seconds(p.pid) for p in load)
        cpu_before, start = busy_cpu_seconds(), time.perf_counter()
        log = log_dir / f"{target}_{policy}_{'loaded' if busy else 'idle'}.log"
        with open(log, "w") as out:
            code = subprocess.call(["make", target], cwd=REPO, env=environment(policy), stdout=out, stderr=out)
        wall = time.perf_counter() - start
        cpu = busy_cpu_seconds() - cpu_before - (sum(process_cpu_seconds(p.pid) for p in load) - load_before)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    return wall, cpu, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["demo", "test-ray", "test"])
    parser.add_argument("--busy", type=int, default=1, help="busy processes in the loaded runs")
    parser.add_argument("--replace_demo", action="store_true", help="delete runs/demo before each demo run")
    parser.add_argument("--logs", default="runs/bench_targets", help="folder for each run's output")
    args = parser.parse_args()
    demo_dir = REPO / "runs" / "demo"
    if "demo" in args.targets and demo_dir.exists() and not args.replace_demo:
        raise SystemExit(f"{demo_dir} exists: move it away, or pass --replace_demo to delete it before each demo run")
    log_dir = REPO / args.logs
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"load: {args.busy} busy process(es); logs in {args.logs}/")
    failed = False
    for target in args.targets:
        results = {}
        for busy in (0, args.busy):
            for policy in POLICIES:
                if target == "demo":
                    shutil.rmtree(demo_dir, ignore_errors=True)
                wall, cpu, code = run_target(target, policy, busy, log_dir)
                results[(policy, busy)] = (wall, cpu)
                failed |= code != 0
                state = "loaded" if busy else "idle"
                print(
                    f"make {target:9s} {policy:5s} {state:6s} wall {wall / 60:6.2f} min  cpu {cpu / 60:6.2f} min"
                    + ("" if code == 0 else f"  EXIT {code}"),
                    flush=True,
                )
        for busy in (0, args.busy):
            state = f"beside {args.busy} busy process(es)" if busy else "idle"
            (kit_wall, kit_cpu), (torch_wall, torch_cpu) = results[("kit", busy)], results[("torch", busy)]
            emit(
                f"make {target} wall time {state}, kit policy vs torch defaults",
                round(kit_wall / 60, 2),
                "min",
                round(torch_wall / 60, 2),
                round(kit_wall / torch_wall, 2),
            )
            emit(
                f"make {target} CPU time {state}, kit policy vs torch defaults",
                round(kit_cpu / 60, 2),
                "min",
                round(torch_cpu / 60, 2),
                round(kit_cpu / torch_cpu, 2),
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
