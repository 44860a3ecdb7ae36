"""Wall and CPU time of whole ``make`` targets (``test``, ``test-ray``, ``demo``), idle and beside busy processes,
with the kit's thread policy and with torch's defaults (``SPO_CPU_THREADS=torch``), in one run.

Each target runs once per condition (policy x load), in the order given. CPU time is the machine's: the
non-idle time of every core from ``/proc/stat`` over the run, less what the busy processes used (their own
``/proc/<pid>/stat``), so processes the target starts but does not wait for (Ray's) are counted too. Run it on
an otherwise idle machine; the environment must be installed (``make setup``), so no install is timed.

``demo`` writes ``runs/demo``: the benchmark refuses to start when that folder exists, unless ``--replace_demo``
lets it delete it before each demo run.

``--cap_minutes M`` stops a run after M minutes (with every process it started): its line says ``wall > M``, its
times are lower bounds, and a ratio against it is a bound too (the RESULT line's name says which). Torch's
defaults beside a busy process can take ten times the idle time, so a capture of all three targets fits a
working day only with a cap.

``--policies`` / ``--loads`` rerun a subset (a run that failed, say): its lines print, a RESULT line needs both
policies of a load measured in the same invocation.

    python bench/bench_targets.py [--targets demo test-ray test] [--busy 1] [--replace_demo] [--cap_minutes M]
                                  [--policies torch kit] [--loads idle loaded]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from results_line import emit

REPO = Path(__file__).resolve().parent.parent
POLICIES = ("torch", "kit")
LOADS = ("idle", "loaded")
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


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (``/proc``: parent links), whatever session it moved to."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stop_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and everything it started (Ray's daemons and notebook kernels included)."""
    for _ in range(3):  # processes may start others while they are being killed
        for pid in descendants(proc.pid) | {proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    proc.wait()


def environment(policy: str) -> dict[str, str]:
    from spo_helpers import cpu_threads

    env = {k: v for k, v in os.environ.items() if k not in (*cpu_threads.VARIABLES, cpu_threads.KIT_SET_ENV)}
    env[cpu_threads.SWITCH_ENV] = policy
    return env


def run_target(
    target: str, policy: str, busy: int, log_dir: Path, cap_s: float | None = None
) -> tuple[float, float, int | None]:
    """(wall seconds, CPU seconds of everything but the load, exit code) of ``make target``; the exit code is
    None when the run was stopped at ``cap_s`` seconds."""
    loop = "while True:\n    pass\n"
    load = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(busy)]
    try:
        time.sleep(0.5)
        load_before = sum(process_cpu_seconds(p.pid) for p in load)
        cpu_before, start = busy_cpu_seconds(), time.perf_counter()
        log = log_dir / f"{target}_{policy}_{'loaded' if busy else 'idle'}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["make", target], cwd=REPO, env=environment(policy), stdout=out, stderr=out)
            try:
                code = proc.wait(timeout=cap_s)
            except subprocess.TimeoutExpired:
                code = None
        wall = time.perf_counter() - start
        if code is None:
            stop_tree(proc)
        cpu = busy_cpu_seconds() - cpu_before - (sum(process_cpu_seconds(p.pid) for p in load) - load_before)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    return wall, cpu, code


def bound_note(kit_capped: bool, torch_capped: bool) -> str:
    """What a RESULT line's figures are when a run was stopped at the cap."""
    if kit_capped and torch_capped:
        return " (both stopped at the cap: lower bounds, no ratio)"
    if torch_capped:
        return " (torch defaults stopped at the cap: a lower bound; the ratio is an upper bound)"
    if kit_capped:
        return " (kit policy stopped at the cap: a lower bound; the ratio is a lower bound)"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["demo", "test-ray", "test"])
    parser.add_argument("--busy", type=int, default=1, help="busy processes in the loaded runs")
    parser.add_argument("--replace_demo", action="store_true", help="delete runs/demo before each demo run")
    parser.add_argument("--logs", default="runs/bench_targets", help="folder for each run's output")
    parser.add_argument("--cap_minutes", type=float, default=None, help="stop a run after this many minutes")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES), help="a rerun's subset")
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS), help="a rerun's subset")
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
        loads = [busy for busy, load in zip((0, args.busy), LOADS, strict=True) if load in args.loads]
        for busy in loads:
            for policy in [p for p in POLICIES if p in args.policies]:
                if target == "demo":
                    shutil.rmtree(demo_dir, ignore_errors=True)
                cap_s = None if args.cap_minutes is None else 60 * args.cap_minutes
                wall, cpu, code = run_target(target, policy, busy, log_dir, cap_s)
                results[(policy, busy)] = (wall, cpu, code is None)
                failed |= code not in (0, None)
                state = "loaded" if busy else "idle"
                more = ">" if code is None else " "
                print(
                    f"make {target:9s} {policy:5s} {state:6s} wall {more}{wall / 60:6.2f} min  cpu {more}"
                    f"{cpu / 60:6.2f} min"
                    + ("  (stopped at the cap)" if code is None else "")
                    + ("" if code in (0, None) else f"  EXIT {code}"),
                    flush=True,
                )
        for busy in loads:
            if ("kit", busy) not in results or ("torch", busy) not in results:
                continue  # a ratio needs both policies measured in this run
            state = f"beside {args.busy} busy process(es)" if busy else "idle"
            (kit_wall, kit_cpu, kit_capped), (torch_wall, torch_cpu, torch_capped) = (
                results[("kit", busy)],
                results[("torch", busy)],
            )
            bound = bound_note(kit_capped, torch_capped)
            emit(
                f"make {target} wall time {state}, kit policy vs torch defaults{bound}",
                round(kit_wall / 60, 2),
                "min",
                round(torch_wall / 60, 2),
                None if kit_capped and torch_capped else round(kit_wall / torch_wall, 2),
            )
            emit(
                f"make {target} CPU time {state}, kit policy vs torch defaults{bound}",
                round(kit_cpu / 60, 2),
                "min",
                round(torch_cpu / 60, 2),
                None if kit_capped and torch_capped else round(kit_cpu / torch_cpu, 2),
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
