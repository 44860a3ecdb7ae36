"""The whole CPU demo through ``spo pipeline`` (minutes): `make test-slow`."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("verl")
pytest.importorskip("papermill")

from spo_helpers.formats.notebook_templates import STAGES
from spo_helpers.stages.pipeline import PipelineConfig, run_pipeline


@pytest.mark.slow
def test_full_pipeline_then_everything_is_up_to_date(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    cfg = PipelineConfig(name="demo", runs_dir=str(tmp_path), total_steps=10)
    assert run_pipeline(cfg) == dict.fromkeys(STAGES, "ran")
    root = tmp_path / "demo"
    record = json.loads((root / "pipeline.json").read_text())
    assert all("fingerprint" in record[stage] for stage in STAGES)
    figures = {p.stem for p in (root / "figures").glob("*.png")}
    assert {"01_value_distributions", "03_zero_advantage", "05_reliability", "06_rho_drift"} <= figures
    for method in ("grpo", "spo"):
        assert (root / "spo" / f"{method}_cpu" / "checkpoints" / "global_step_10" / "kit_complete.json").is_file()
    assert all((root / "notebooks" / f"{stage}.ipynb").is_file() for stage in STAGES)
    # Nothing changed: every stage is skipped. A changed parameter reruns training and what follows.
    assert run_pipeline(cfg) == dict.fromkeys(STAGES, "skipped")
    longer = PipelineConfig(name="demo", runs_dir=str(tmp_path), total_steps=12)
    status = run_pipeline(longer)
    assert status["03_merge"] == "skipped" and status["04_train"] == "ran" and status["05_analysis"] == "ran"
