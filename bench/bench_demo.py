"""Wall time and peak memory of the whole CPU demo (stages 01 -> 05).

Runs ``spo pipeline --name <name> --runs_dir <tmpdir>`` in a subprocess, as ``make demo``
does but into a fresh temporary runs folder, so every stage runs. The tiny world is
reused from ``$SPO_ASSETS`` or ``runs/_assets`` when it is already built (the report says
whether it was built during the run; building it adds minutes). The figures:

- wall time of the subprocess, and each stage's seconds from ``<runs_dir>/<name>/pipeline.json``;
- peak memory of the process tree: psutil polled every ``--interval`` seconds, summing
  the RSS of the pipeline process and all its descendants (the papermill kernels);
  sampling can miss a spike shorter than the interval. Also printed:
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the peak of the largest single descendant,
  a lower bound on the tree's peak.

There is no baseline run: the ratio column of the summary is left empty.

    python bench/bench_demo.py [--total_steps 30] [--n_val 8] [--interval 0.2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from results_line import emit

REPO = Path(__file__).resolve().parent.parent


def world_state(assets: str | None) -> tuple[bool, float | None]:
    """(the default world is complete, its manifest's mtime)."""
    from spo_helpers.world.model import TinyModelConfig
    from spo_helpers.world.paths import WorldPaths, default_assets_dir, is_complete, world_name
    from spo_helpers.world.warmstart import default_warm_start

    root = Path(assets) if assets else default_assets_dir()
    paths = WorldPaths.at(root / world_name(0, 3000))
    done = is_complete(
        paths, seed=0, num_train=3000, num_val=200, warm_cfg=default_warm_start(3000, 0), model_cfg=TinyModelConfig()
    )
    return done, (paths.manifest_file.stat().st_mtime if paths.manifest_file.is_file() else None)


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """Summed RSS (bytes) of ``proc`` and its descendants, and how many processes that is."""
    total, count = 0, 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for member in members:
        try:
            total += member.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, count


def spo_command() -> list[str]:
    script = Path(sys.executable).parent / "spo"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "spo_helpers.cli"]


def run_demo(runs_dir: Path, name: str, extra: list[str], interval: float) -> dict:
    command = [*spo_command(), "pipeline", "--name", name, "--runs_dir", str(runs_dir), *extra]
    print("command:", shlex.join(command))
    log_path = runs_dir / f"{name}.log"
    peak, peak_count = 0, 0
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss, count = tree_rss(watched)
            if rss > peak:
                peak, peak_count = rss, count
            time.sleep(interval)
        wall = time.perf_counter() - start
    children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {
        "returncode": proc.returncode,
        "wall": wall,
        "peak": peak,
        "peak_count": peak_count,
        "children_max": children_max,
        "log": log_path,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total_steps", type=int, default=None, help="training steps per method (pipeline default)")
    parser.add_argument("--n_val", type=int, default=None, help="estimation samples per prompt (pipeline default)")
    parser.add_argument("--assets", default=None, help="world assets folder (default: $SPO_ASSETS or runs/_assets)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    parser.add_argument("--runs_dir", default=None, help="runs folder (default: a temporary one, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary runs folder")
    parser.add_argument("--quick", action="store_true", help="2 training steps, 2 estimation samples per prompt")
    args = parser.parse_args()
    if args.quick:
        args.total_steps, args.n_val = args.total_steps or 2, args.n_val or 2

    extra = []
    if args.total_steps is not None:
        extra += ["--total_steps", str(args.total_steps)]
    if args.n_val is not None:
        extra += ["--n_val", str(args.n_val)]
    if args.assets:
        extra += ["--assets", args.assets]

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    had_world, mtime_before = world_state(args.assets)
    print(f"world: {'cached' if had_world else 'not built yet: the demo builds it (minutes)'}")

    name = f"bench_demo_{os.getpid()}"
    if args.runs_dir:
        runs_dir = Path(args.runs_dir).resolve()
        runs_dir.mkdir(parents=True, exist_ok=True)
        holder = None
    else:
        holder = tempfile.mkdtemp(prefix="bench_demo_")
        runs_dir = Path(holder)
    keep = args.keep
    try:
        result = run_demo(runs_dir, name, extra, args.interval)
        lines = result["log"].read_text(errors="replace").splitlines()
        log_tail = [line for line in lines if not line.startswith("[IPKernelApp]")][-12:]
        if result["returncode"] != 0:
            keep = True  # the log and the executed notebooks say what went wrong
            print("\n".join(lines[-40:]))
            raise SystemExit(f"the pipeline failed with exit code {result['returncode']} (log: {result['log']})")
        record_path = runs_dir / name / "pipeline.json"
        stages = json.loads(record_path.read_text())
    finally:
        if holder and not keep:
            shutil.rmtree(holder, ignore_errors=True)
        elif holder:
            print(f"kept {holder}")

    _, mtime_after = world_state(args.assets)
    built = not had_world or mtime_after != mtime_before
    print("\n".join(f"  | {line}" for line in log_tail))
    print(f"\nworld built during the run: {'yes' if built else 'no (reused the cached one)'}")
    header = f"{'stage':<14} {'seconds':>9}"
    print(header)
    print("-" * len(header))
    for stage, info in stages.items():
        print(f"{stage:<14} {info['seconds']:>9.1f}")
    print(f"{'wall (total)':<14} {result['wall']:>9.1f}")
    peak_mib = result["peak"] / 2**20
    print(
        f"\npeak RSS, process tree (psutil every {args.interval}s, summed): {peak_mib:,.0f} MiB "
        f"over {result['peak_count']} processes"
    )
    print(
        f"peak RSS, largest single process (getrusage RUSAGE_CHILDREN, lower bound): "
        f"{result['children_max'] / 2**20:,.0f} MiB"
    )

    settings = ", ".join(extra[i].lstrip("-") + " " + extra[i + 1] for i in range(0, len(extra), 2)) or "defaults"
    world_note = "world built" if built else "cached world"
    emit(f"CPU demo wall time ({settings}; {world_note})", round(result["wall"], 1), "s", None, None)
    emit(f"CPU demo peak RSS, process tree (psutil {args.interval}s)", round(peak_mib), "MiB", None, None)


if __name__ == "__main__":
    main()
