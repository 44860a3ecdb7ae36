"""Run every benchmark, keep their output, and tabulate the figures (``make bench``).

Each benchmark runs as its own subprocess, one after the other, with this interpreter;
its stdout is echoed and saved to ``bench/results/<name>.txt`` (stderr, where progress
bars go, passes through). Figures come from the ``RESULT {json}`` lines a benchmark
prints (keys: name, value, unit, baseline, ratio, command); for ``bench_core`` and
``bench_train``, which print tables only, they are read from those tables. The table of
every capture in ``bench/results/`` (a benchmark left out with ``--only`` keeps its last
capture) goes to ``bench/RESULTS.md`` and into README.md between ``<!-- bench:start -->``
and ``<!-- bench:end -->``; without those markers the README is left alone.

Timings only mean something on an otherwise idle machine. The full suite takes a while
(``bench_train``: 3 seeds x 2 methods x 30 steps; ``bench_demo``: the whole pipeline).
``--quick`` passes small settings to each benchmark for a smoke check and writes to
``bench/results/quick/`` only (no RESULTS.md, no README change).

``bench_targets`` (whole ``make`` targets idle and beside a busy process: hours) runs only when named:
``--only targets`` (``make bench-targets``).

    python bench/run_all.py [--only core merge throughput reward demo train] [--quick] [--table_only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ORDER = (
    "core",
    "merge",
    "throughput",
    "reward",
    "sandbox",
    "demo",
    "contention",
    "train",
    "ground_truth",
    "rollout_tools",
    "streaming",
    "claims",
    "targets",
)
# Run only when named with --only (hours), with these arguments; their last capture is tabulated like any other.
ON_REQUEST = {"targets": ["--replace_demo", "--cap_minutes", "20"]}


def quick_args(name: str, scratch: Path) -> list[str]:
    """Small settings per benchmark for a smoke check."""
    if name == "core":
        return ["--prompts", "17000", "--steps", "2"]
    if name == "train":
        return ["--seeds", "0", "--steps", "2", "--test_freq", "1", "--output", str(scratch / "bench_train")]
    if name == "ground_truth":
        output = str(scratch / "bench_ground_truth")
        return ["--steps", "2", "--save_freq", "1", "--n", "4", "--resamples", "200", "--output", output]
    if name == "targets":
        return ["--targets", "test-ray", "--cap_minutes", "1"]  # the harness: four runs stopped at a minute
    return ["--quick"]


def machine() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [platform.machine(), model, f"{os.cpu_count()} cpus", f"Python {platform.python_version()}"]
    return ", ".join(p for p in parts if p)


# ---------------------------------------------------------------- reading the figures
def parse_results(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("RESULT "):
            try:
                out.append(json.loads(line[len("RESULT ") :]))
            except json.JSONDecodeError:
                print(f"warning: unreadable line {line[:80]!r}", file=sys.stderr)
    return out


def core_results(text: str, command: str) -> list[dict]:
    """bench_core's table: prompts, official ms, ours (pool) ms, ratio, ours (all prompts) ms."""
    out = []
    row = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s*$")
    for line in text.splitlines():
        match = row.match(line)
        if match:
            n, official, ours, ratio, _ = match.groups()
            out.append(
                {
                    "name": f"SPO bookkeeping per step, {int(n):,} prompts (official dicts vs ours)",
                    "value": float(ours),
                    "unit": "ms",
                    "baseline": float(official),
                    "ratio": float(ratio),
                    "command": command,
                }
            )
    return out


def train_results(text: str, command: str) -> list[dict]:
    """bench_train's 'mean over seeds' block (a pandas Series printed as text)."""
    if "mean over seeds" not in text:
        return []
    block = text.split("mean over seeds", 1)[1]
    values = {}
    for line in block.splitlines():
        match = re.match(r"^(.*?)\s+(-?[\d.]+(?:e[-+]?\d+)?|NaN|nan)\s*$", line)
        if match:
            values[match.group(1).strip()] = float(match.group(2))

    def get(key: str) -> float | None:
        value = values.get(key)
        return None if value is None or value != value else value

    seeds = per_seed_table(text)
    out = []
    if "SPO acc" in values:
        out.append(
            {
                "name": "training-probe accuracy at equal samples (SPO vs GRPO, mean over seeds)",
                "value": get("SPO acc"),
                "unit": "acc",
                "baseline": get("GRPO acc"),
                "ratio": get("acc ratio SPO/GRPO"),
                "interval": seed_interval(seeds, "SPO acc", "GRPO acc"),
                "command": command,
            }
        )
    if "SPO samples to target" in values and "censored:" in text:
        bound = re.search(r"samples to target, SPO / GRPO\s+<= ([\d.]+)", text)
        out.append(
            {
                "name": "samples to reach the target accuracy (SPO vs GRPO; censored: SPO reached it by its first "
                "evaluation in every seed, so the ratio is an upper bound)",
                "value": get("SPO samples to target"),
                "unit": "samples",
                "baseline": get("GRPO samples to target"),
                "ratio": float(bound.group(1)) if bound else None,
                "interval": None,
                "command": command,
            }
        )
    elif "SPO samples to target" in values:
        out.append(
            {
                "name": "samples to reach the target accuracy (SPO vs GRPO, mean over seeds)",
                "value": get("SPO samples to target"),
                "unit": "samples",
                "baseline": get("GRPO samples to target"),
                "ratio": get("samples ratio SPO/GRPO"),
                "interval": seed_interval(seeds, "SPO samples to target", "GRPO samples to target"),
                "command": command,
            }
        )
    return out


def per_seed_table(text: str) -> list[dict[str, float]]:
    """bench_train's per-seed table (``seed`` first; columns aligned right under names that hold spaces)."""
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if line.split()[:1] == ["seed"] and "SPO acc" in line), None)
    if head is None:
        return []
    header = lines[head]
    ends = [m.end() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [m.group(0) for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = []
    for line in lines[head + 1 :]:
        if not line.strip():
            break
        cells, start = [], 0
        for end in ends:
            cells.append(line[start:end].strip())
            start = end
        try:
            rows.append({name: float(cell) for name, cell in zip(names, cells, strict=True)})
        except ValueError:
            break
    return rows


def seed_interval(rows: list[dict[str, float]], numerator: str, denominator: str) -> list[float] | None:
    """The 95% Fieller interval of mean(numerator) / mean(denominator) over seeds, paired by seed (what
    ``bench_train.py`` prints), from the captured per-seed values; None without two finite seeds."""
    pairs = [(r[numerator], r[denominator]) for r in rows if numerator in r and denominator in r]
    pairs = [(a, b) for a, b in pairs if a == a and b == b]
    if len(pairs) < 2:
        return None
    from spo_helpers.analysis.intervals import fieller_ratio

    interval = fieller_ratio([a for a, _ in pairs], [b for _, b in pairs], paired=True)
    return [interval.low, interval.high]


def figures(name: str, text: str, command: str) -> list[dict]:
    found = parse_results(text)
    if found:
        return found
    if name == "core":
        return core_results(text, command)
    if name == "train":
        return train_results(text, command)
    return []


# ---------------------------------------------------------------- running
def run_one(name: str, extra: list[str], capture: Path) -> int:
    script = BENCH / f"bench_{name}.py"
    command = [sys.executable, str(script.relative_to(REPO)), *extra]
    shown = shlex.join(["python", *command[1:]])
    print(f"\n=== {name}: {shown}", flush=True)
    capture.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(capture, "w", encoding="utf-8") as out:
        date = dt.datetime.now().isoformat(timespec="seconds")
        out.write(f"# command: {shown}\n# machine: {machine()}\n# date: {date}\n")
        proc = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        code = proc.wait()
        out.write(f"# exit code: {code}, {time.perf_counter() - start:.0f}s\n")
    print(f"=== {name}: exit code {code} in {time.perf_counter() - start:.0f}s -> {capture.relative_to(REPO)}")
    return code


def read_capture(name: str, capture: Path) -> tuple[list[dict], dict[str, str]]:
    text = capture.read_text(encoding="utf-8", errors="replace")
    meta = {}
    for line in text.splitlines():
        match = re.match(r"^# (command|machine|date|exit code): (.*)$", line)
        if match:
            meta[match.group(1)] = match.group(2)
    return figures(name, text, meta.get("command", "")), meta


# ---------------------------------------------------------------- the table
def fmt(value, unit: str | None = None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{int(value):,}"
    return f"{text} {unit}" if unit else text


def table(rows: list[tuple[str, dict, dict]]) -> str:
    lines = [
        "| what | value | baseline | ratio | machine | command |",
        "|---|---:|---:|---:|---|---|",
    ]
    for _, fig, meta in rows:
        ratio = "–" if fig.get("ratio") is None else f"{fig['ratio']:.3g}×"
        if fig.get("ratio") is not None and fig.get("interval"):
            low, high = fig["interval"]
            ratio += f" [{low:.3g}, {high:.3g}]"
        command = (fig.get("command") or meta.get("command", "")).replace("|", "\\|")
        lines.append(
            f"| {fig.get('name', '?')} | {fmt(fig.get('value'), fig.get('unit'))} | "
            f"{fmt(fig.get('baseline'), fig.get('unit'))} | {ratio} | {meta.get('machine', '?')} | `{command}` |"
        )
    return "\n".join(lines)


def markdown(rows: list[tuple[str, dict, dict]], failed: list[str]) -> str:
    dates = sorted({meta.get("date", "")[:10] for _, _, meta in rows if meta.get("date")})
    head = (
        f"Figures from `python bench/run_all.py` ({', '.join(dates) or 'no date'}). Ratio: value / baseline, "
        "except for the bookkeeping rows, where it is baseline / value (the speed-up, as `bench_core.py` prints it). "
        "Brackets: a 95% interval of the ratio (accuracy and sample rows: Fieller's t interval over seeds, paired by "
        "seed, which holds its level with 3 seeds where a percentile bootstrap covers about 80%; the ground-truth row: "
        "a percentile bootstrap over prompts and groups). "
        "Each benchmark's docstring says what is measured."
    )
    body = table(rows)
    if failed:
        body += "\n\nFailed or without figures: " + ", ".join(failed) + "."
    return f"{head}\n\n{body}\n"


def splice_readme(readme: Path, content: str) -> bool:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text or text.index(START) > text.index(END):
        print(f"warning: {readme.name} has no {START} ... {END} markers; README left unchanged", file=sys.stderr)
        return False
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{content}{END}{after}", encoding="utf-8")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=ORDER, default=None, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="small settings; writes bench/results/quick/ only")
    parser.add_argument("--table_only", action="store_true", help="run nothing: the table from the captures")
    args = parser.parse_args()

    if args.table_only:
        names = []
    elif args.only is None:
        names = [n for n in ORDER if n not in ON_REQUEST]
    else:
        names = [n for n in ORDER if n in args.only]
    results_dir = BENCH / "results" / ("quick" if args.quick else "")
    if not args.quick and "train" in names and (REPO / "runs" / "bench_train").is_dir():
        print(
            "note: runs/bench_train exists; bench_train resumes finished runs there instead of training again "
            "(delete it for fresh figures)",
            file=sys.stderr,
        )
    codes = {}
    with tempfile.TemporaryDirectory(prefix="bench_quick_") as scratch:
        for name in names:
            extra = quick_args(name, Path(scratch)) if args.quick else ON_REQUEST.get(name, [])
            codes[name] = run_one(name, extra, results_dir / f"{name}.txt")

    rows, failed = [], []
    for name in ORDER:
        capture = results_dir / f"{name}.txt"
        if not capture.is_file():
            continue
        found, meta = read_capture(name, capture)
        if not found or not meta.get("exit code", "0").startswith("0"):
            failed.append(name)
        rows += [(name, fig, meta) for fig in found]
    content = markdown(rows, failed)
    print("\n" + content)
    if args.quick:
        (results_dir / "RESULTS.md").write_text(content, encoding="utf-8")
        print(f"wrote {(results_dir / 'RESULTS.md').relative_to(REPO)} (quick run: README and RESULTS.md untouched)")
    else:
        (BENCH / "RESULTS.md").write_text("# Benchmark results\n\n" + content, encoding="utf-8")
        print(f"wrote {(BENCH / 'RESULTS.md').relative_to(REPO)}")
        if splice_readme(REPO / "README.md", content):
            print("updated README.md between the bench markers")
    return 1 if any(codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
