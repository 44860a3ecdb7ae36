"""spo_helpers.analysis.run_data: the runs' frames, each loaded once; what a run lacks is noted, not fatal."""

from __future__ import annotations

import pytest
from synthetic_runs import write_kit_run, write_official_run, write_pipeline

from spo_helpers.analysis.run_data import RunData
from spo_helpers.errors import MissingData


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_pipeline(tmp_path_factory.mktemp("pipeline"), seeds=(0, 1))


def test_run_summary(pipeline):
    summary = RunData.from_paths(pipeline).summary()
    assert list(summary.columns) == ["run", "method", "seed", "kind", "path"]
    assert set(summary["method"]) == {"GRPO", "SPO"} and len(summary) == 4


def test_one_path_or_several(pipeline):
    one = RunData.from_paths(pipeline)
    several = RunData.from_paths([pipeline / "spo" / "spo_s0", str(pipeline / "spo" / "grpo_s0")])
    assert one.roots == [pipeline] and len(one.runs) == 4
    assert [r.method for r in several.runs] == ["SPO", "GRPO"] and len(several.roots) == 2


def test_frames_are_loaded_once(pipeline):
    data = RunData.from_paths(pipeline)
    assert data.steps is data.steps and data.metrics is data.metrics
    assert set(data.steps["run"]) == {r.title for r in data.runs}
    assert {"step", "value"} <= set(data.metric("critic/score/mean").columns)
    assert not data.curves.empty and not data.validation_last.empty


def test_offline_values_from_the_pipeline_folder(pipeline):
    offline = RunData.from_paths(pipeline / "spo" / "spo_s0").offline  # offline_values.json two folders up
    assert offline.set_index("prompt_key").loc["train 3", "p_hat0"] == pytest.approx(3.5 / 9)


def test_a_frame_no_run_has_is_missing(tmp_path):
    data = RunData.from_paths(write_official_run(tmp_path / "spo" / "SPO_official"))
    with pytest.raises(MissingData, match=r"steps\.jsonl"):
        _ = data.steps
    assert data.optional("steps") is None and data.optional("prompts") is None
    assert data.offline is None
    assert not data.metrics.empty  # from tensorboard


def test_a_run_lacking_a_file_is_noted_once(tmp_path):
    run = write_kit_run(tmp_path / "spo" / "grpo_only", "GRPO", 0)
    other = write_kit_run(tmp_path / "spo" / "spo_only", "SPO", 0)
    (run / "prompts.parquet").unlink()
    data = RunData.from_paths([run, other])
    assert set(data.prompts["run"]) == {r.title for r in data.runs if r.path == other}
    data.note("prompts.parquet: left out grpo_only (missing)")
    assert data.notes == ["prompts.parquet: left out grpo_only (missing)"]
    assert data.built == {}
