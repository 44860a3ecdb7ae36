"""A short CPU training on an idle machine and beside busy processes: the kit's thread policy against torch's
defaults, in one run.

The training is ``spo train --method SPO --total_steps 10`` on the CPU world (``--backend cpu``, a fresh run
folder each time). The load is ``--busy`` processes (default: as many as this process may use cores), each a
Python loop that never sleeps. Four conditions, each ``--repeats`` times, interleaved so that slow drift of the
machine hits every condition alike:

- ``kit``: the kit's policy (``spo_helpers.cpu_threads``: ``OMP_WAIT_POLICY=PASSIVE``, one thread per core);
- ``torch``: torch's defaults (``SPO_CPU_THREADS=torch``: nothing set), what the kit did before the policy;

each idle and loaded. Measured per run: wall seconds and CPU seconds (user + system of the training process and
the children it waited for, from ``wait4``). Printed: the median of each condition, and the ratios the policy is
judged by, loaded / idle, for wall time (a fair share of N+1 runnable processes on N cores is about (N+1)/N
times idle, 2x for one busy process per core: goal <= 2.2x) and for CPU time (work done while waiting is waste:
goal <= 1.2x). The ratio's interval is the range over the per-repeat ratios (each repeat pairs one idle and one
loaded run of the same policy).

    python bench/bench_contention.py [--repeats 2] [--busy N] [--steps 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_line import emit

REPO = Path(__file__).resolve().parent.parent
POLICIES = ("kit", "torch")
GOAL_WALL, GOAL_CPU = 2.2, 1.2


def spo_command() -> list[str]:
    script = Path(sys.executable).parent / "spo"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "spo_helpers.cli"]


def environment(policy: str) -> dict[str, str]:
    """This process's environment without any thread setting, then the policy's switch."""
    from spo_helpers import cpu_threads

    env = {k: v for k, v in os.environ.items() if k not in (*cpu_threads.VARIABLES, cpu_threads.KIT_SET_ENV)}
    env[cpu_threads.SWITCH_ENV] = policy
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def train_once(policy: str, steps: int, scratch: Path, assets: str | None) -> tuple[float, float]:
    """Wall and CPU seconds of one training run."""
    out = tempfile.mkdtemp(prefix=f"{policy}_", dir=scratch)
    command = [*spo_command(), "train", "--method", "SPO", "--backend", "cpu", "--offline_values", "none"]
    command += ["--total_steps", str(steps), "--output_dir", out, "--exp_name", "contention"]
    command += ["trainer.test_freq=-1", "trainer.save_freq=-1"]
    if assets:
        command += ["--assets", assets]
    start = time.perf_counter()
    with open(Path(out) / "train.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=environment(policy), stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (Path(out) / "train.log").read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"training failed ({shlex.join(command)}):\n" + "\n".join(tail))
    return wall, usage.ru_utime + usage.ru_stime


class Load:
    """``n`` busy processes (a Python loop each) while the block runs."""

    def __init__(self, n: int):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        loop = "while True:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(self.n)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def ensure_world(assets: str | None) -> None:
    """Build the CPU world before anything is timed (a no-op when it is cached)."""
    from spo_helpers.world.build import build_world

    build_world(Path(assets) if assets else None, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs per condition")
    parser.add_argument("--busy", type=int, default=None, help="busy processes beside the loaded runs (default: cores)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per run")
    parser.add_argument("--assets", default=None, help="world assets folder (default: $SPO_ASSETS or runs/_assets)")
    parser.add_argument("--quick", action="store_true", help="one repeat of 2 steps (a smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 1, 2
    from spo_helpers.cpu_threads import available_cores

    cores = available_cores()
    busy = args.busy if args.busy is not None else cores
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus ({cores} usable), python {platform.python_version()}")
    print(f"training: spo train --method SPO --backend cpu --total_steps {args.steps}; load: {busy} busy processes")
    ensure_world(args.assets)

    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_contention_") as holder:
        scratch = Path(holder)
        for repeat in range(args.repeats):
            for policy in POLICIES:
                for load in ("idle", "loaded"):
                    if load == "idle":
                        result = train_once(policy, args.steps, scratch, args.assets)
                    else:
                        with Load(busy):
                            result = train_once(policy, args.steps, scratch, args.assets)
                    runs.setdefault((policy, load), []).append(result)
                    wall, cpu = result
                    print(f"  repeat {repeat + 1}: {policy:5s} {load:6s} wall {wall:6.1f} s  cpu {cpu:6.1f} s")

    def median(policy: str, load: str, index: int) -> float:
        return statistics.median(r[index] for r in runs[(policy, load)])

    print()
    header = ("idle wall", "loaded wall", "ratio", "idle cpu", "loaded cpu", "ratio")
    print(f"{'policy':8s} " + " ".join(f"{h:>11s}" for h in header))
    for policy in POLICIES:
        wall = [median(policy, load, 0) for load in ("idle", "loaded")]
        cpu = [median(policy, load, 1) for load in ("idle", "loaded")]
        cells = (f"{wall[0]:.1f}", f"{wall[1]:.1f}", f"{wall[1] / wall[0]:.2f}x")
        cells += (f"{cpu[0]:.1f}", f"{cpu[1]:.1f}", f"{cpu[1] / cpu[0]:.2f}x")
        print(f"{policy:8s} " + " ".join(f"{c:>11s}" for c in cells))
    print()
    label = {"kit": "kit's thread policy", "torch": "torch's defaults"}
    for policy in POLICIES:
        for index, (what, goal) in enumerate((("wall time", GOAL_WALL), ("CPU time", GOAL_CPU))):
            paired = zip(runs[(policy, "idle")], runs[(policy, "loaded")], strict=True)
            pairs = [loaded[index] / idle[index] for idle, loaded in paired]
            idle, loaded = median(policy, "idle", index), median(policy, "loaded", index)
            ratio = loaded / idle
            verdict = "meets" if ratio <= goal else "misses"
            print(
                f"{label[policy]}: {what} loaded/idle {ratio:.2f}x (per repeat {min(pairs):.2f}-{max(pairs):.2f}x), "
                f"{verdict} the goal <= {goal}x"
            )
            emit(
                f"{args.steps}-step SPO training beside {busy} busy processes vs idle, {what} ({label[policy]})",
                round(loaded, 1),
                "s",
                round(idle, 1),
                round(ratio, 2),
            )
    kit_loaded, torch_loaded = median("kit", "loaded", 0), median("torch", "loaded", 0)
    share = kit_loaded / torch_loaded
    print(f"beside {busy} busy processes: the kit's policy takes {share:.2f}x the wall time of torch's defaults")


if __name__ == "__main__":
    main()
