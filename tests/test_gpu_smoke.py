"""``make gpu-smoke`` (``scripts/gpu_smoke.sh``): it parses, and its ``--dry-run`` composes every command.

The GPU run itself needs a GPU node; here the script is checked with ``bash -n`` (every ``make test``) and,
marked ``slow`` (about a minute and a half: one ``spo`` process per command), run with ``--dry-run``: each
``spo train`` / ``spo estimate`` runs with ``--dry-run``, so its config composes against verl's and its inputs
pass the checks before compute.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
SCRIPT = CHECKOUT / "scripts" / "gpu_smoke.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def test_script_parses_and_explains_itself():
    subprocess.run([BASH, "-n", str(SCRIPT)], check=True)
    done = subprocess.run([BASH, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--dry-run" in done.stdout and "verdict" in done.stdout
    bad = subprocess.run([BASH, str(SCRIPT), "--steps", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "at least 3" in bad.stderr
    bad = subprocess.run([BASH, str(SCRIPT), "--device", "tpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cuda or cpu" in bad.stderr
    assert "gpu-smoke:" in (CHECKOUT / "Makefile").read_text()


@pytest.mark.slow
def test_dry_run_composes_every_command(tmp_path):
    pytest.importorskip("verl")
    out = tmp_path / "smoke"
    done = subprocess.run(
        [BASH, str(SCRIPT), "--dry-run", "--out", str(out)],
        cwd=CHECKOUT,  # the CPU world of runs/_assets, as `make gpu-smoke` finds it
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    verdict = done.stdout[done.stdout.index("gpu-smoke verdict") :]
    rows = {line.split("  ")[0].strip(): line for line in verdict.splitlines()[2:] if line and "gpu-smoke:" not in line}
    composed = ("estimate", "grpo", "spo, stopped", "spo, resumed", "grpo tools", "spo tools")
    composed += ("spo tools stream", "grpo tools overprov")  # the streamed schedules on verl's agent-loop workers
    for name in ("world", "split", *composed):
        assert " PASS " in rows[name], rows.get(name)
    for name in ("gpu and packages", "merge", "figures"):
        assert " SKIP " in rows[name], rows.get(name)
    assert "all 13 steps passed" in verdict

    commands = [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]
    trains = [c for c in commands if " train " in c]
    assert len(trains) == 7 and all("actor_rollout_ref.rollout.name=vllm" in c for c in trains)
    assert sum("--tools sandbox" in c for c in trains) == 4
    assert sum("--schedule stream" in c for c in trains) == sum("--schedule overprovision" in c for c in trains) == 1
    assert any("kit.stop_after_step=2" in c for c in trains)

    logs = sorted((out / "logs").glob("*.log"))
    dry_runs = [log.read_text() for log in logs if re.search(r"_(estimate|grpo|spo)", log.name)]
    assert len(dry_runs) == len(composed)
    for text in dry_runs:
        assert "python -m spo_helpers.verl_glue.main" in text  # the dry run's equivalent command
        assert "name: vllm" in text and "mode: async" in text and "device: cuda" in text
    assert (out / "splits" / "subset_1.parquet").is_file()
    assert not (out / "spo").exists()  # a dry run trains nothing
