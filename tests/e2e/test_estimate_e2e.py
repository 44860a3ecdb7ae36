"""01 -> 02 -> 03 on the small CPU world: split, estimate through verl's validation, merge."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import yaml

pytest.importorskip("verl")

from spo_helpers import cpu_threads
from spo_helpers.formats.offline_values import read_offline_values
from spo_helpers.stages.estimate import estimate_all, success_rate_frame, summarise_dump
from spo_helpers.stages.merge import merge_dumps, write_merge
from spo_helpers.stages.split import split_dataset
from spo_helpers.world.task import read_rows


@pytest.fixture(scope="module")
def estimated(small_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    split = split_dataset(str(small_world.train_file), root / "splits", 2)
    summaries = estimate_all(
        root / "splits", output_dir=root, model_path=str(small_world.model_dir), n_val=2, progress=False
    )
    return root, split, summaries


def test_dumps_land_where_the_official_pipeline_puts_them(estimated):
    root, split, summaries = estimated
    assert [s.exp_name for s in summaries] == ["offline_value_estimation_subset_0", "offline_value_estimation_subset_1"]
    for summary, size in zip(summaries, split.sizes, strict=True):
        assert summary.dump == root / "spo" / summary.exp_name / "validation_data" / "0.jsonl"
        lines = [json.loads(line) for line in summary.dump.read_text().splitlines()]
        assert len(lines) == 2 * size and summary.samples == 2 * size and summary.prompts == size
        assert {"input", "output", "gts", "score", "step", "prompt_key", "pred", "acc"} <= set(lines[0])
        assert all(line["score"] in (0.0, 1.0) and line["step"] == 0 for line in lines)
        record = yaml.safe_load((root / "spo" / summary.exp_name / "config.yaml").read_text())
        policy = cpu_threads.choose()  # the thread policy the run computed with: PASSIVE unless SPO_CPU_THREADS=torch
        assert record["threads"]["OMP_WAIT_POLICY"] == policy.wait_policy
        if policy.num_threads is not None:
            assert record["threads"]["torch_num_threads"] == policy.num_threads


def test_existing_dumps_are_skipped_unless_forced(estimated, small_world):
    root, _, summaries = estimated
    before = summaries[0].dump.read_bytes()
    again = estimate_all(root / "splits", output_dir=root, model_path=str(small_world.model_dir), n_val=2)
    assert all(s.skipped for s in again) and summaries[0].dump.read_bytes() == before


def test_merged_values_match_the_dumps(estimated, small_world):
    root, _, _ = estimated
    result = merge_dumps(root / "spo", progress=False)
    values_path, stats_path = write_merge(result, root / "offline_values.json")
    values = read_offline_values(values_path)
    expected = defaultdict(list)
    for dump in sorted((root / "spo").glob("offline_value_estimation_subset_*/validation_data/0.jsonl")):
        for line in dump.read_text().splitlines():
            record = json.loads(line)
            expected[record["prompt_key"]].append(record["score"])
    assert values == dict(expected)
    train_keys = {r["extra_info"]["prompt_key"] for r in read_rows(small_world.train_file)}
    assert set(values) == train_keys  # every training prompt got values
    assert json.loads(stats_path.read_text())["samples"] == 2 * len(train_keys)
    rates = success_rate_frame(root)
    assert set(rates["subset"]) == {0, 1} and rates["samples"].eq(2).all()
    assert summarise_dump(root / "spo" / "offline_value_estimation_subset_0" / "validation_data" / "0.jsonl")[
        "mean_score"
    ] == pytest.approx(rates[rates["subset"] == 0]["success_rate"].mean())


def test_dry_run_prints_the_eval_config(small_world, tmp_path, capsys):
    from spo_helpers.cli import main

    code = main(
        ["estimate", "--data_file", str(small_world.train_file), "--model_path", str(small_world.model_dir),
         "--output_dir", str(tmp_path), "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "val_only: true" in out and "python -m spo_helpers.verl_glue.main" in out
    assert not (tmp_path / "spo").exists()


def test_verls_max_samples_settings_are_honoured(small_world, tmp_path):
    """``data.val_max_samples`` (and ``train_max_samples``) take the first N rows, as verl's own TaskRunner."""
    split_dataset(str(small_world.train_file), tmp_path / "splits", 1)
    (summary,) = estimate_all(
        tmp_path / "splits",
        output_dir=tmp_path,
        model_path=str(small_world.model_dir),
        n_val=2,
        progress=False,
        overrides=["data.val_max_samples=7"],
    )
    assert summary.prompts == 7 and len(summary.dump.read_text().splitlines()) == 7 * 2
