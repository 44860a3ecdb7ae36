"""Notebooks 01-05 with tools under nbval: the pipeline's stages on the CPU world's tool variant (minutes).

The templates are parameterised as ``spo pipeline --tools sandbox`` would (papermill, without running them),
with short settings, into a scratch folder; nbval then executes every cell, as ``make test-notebooks`` does
for the committed defaults. Run with ``make test-slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl")
papermill = pytest.importorskip("papermill")
pytest.importorskip("nbval")

from spo_helpers.formats.notebook_templates import notebooks_dir  # noqa: E402

REPO_ASSETS = Path(__file__).resolve().parents[2] / "runs" / "_assets"  # the worlds `make demo` caches


def parameters(root):
    splits, runs = str(root / "splits"), str(root / "runs")
    values = str(root / "offline_values.json")
    return {
        "01_split": {"output_dir": splits, "num_subsets": 2},
        "02_estimate": {"data_dir": splits, "output_dir": runs, "n_val": 2, "tools": "sandbox"},
        "03_merge": {"input_dir": f"{runs}/spo", "output_file": values, "dataset_dir": splits},
        "04_train": {
            "train_data_dir": splits,
            "offline_values": values,
            "output_dir": runs,
            "total_steps": 4,
            "tools": "sandbox",
            "overrides": ["trainer.test_freq=2", "trainer.save_freq=2", "actor_rollout_ref.rollout.val_kwargs.n=2"],
        },
        "05_analysis": {"run_paths": [runs], "output_dir": str(root / "figures")},
    }


@pytest.mark.slow
def test_notebooks_with_tools_under_nbval(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stage, values in parameters(tmp_path).items():
        papermill.execute_notebook(
            str(notebooks_dir() / f"{stage}.ipynb"),
            str(folder / f"{stage}.ipynb"),
            parameters=values,
            prepare_only=True,
        )
    env = {**os.environ, "SPO_HEADLESS": "1", "SPO_ASSETS": os.environ.get("SPO_ASSETS", str(REPO_ASSETS))}
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=1800", "-p", "no:cacheprovider"]
    result = subprocess.run([*command, str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for method in ("grpo", "spo"):
        metrics = tmp_path / "runs" / "spo" / f"{method}_cpu" / "metrics.jsonl"
        last = json.loads(metrics.read_text().splitlines()[-1])["data"]
        assert "tool/call_rate" in last, method
    assert (tmp_path / "figures" / "09_tool_use.png").is_file()
