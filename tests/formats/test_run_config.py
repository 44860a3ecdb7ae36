"""A run's ``config.yaml``: one writer, one reader, the same answers wherever it is read."""

from __future__ import annotations

import pytest
import yaml

from spo_helpers.errors import UserError
from spo_helpers.formats.layout import RunLayout
from spo_helpers.formats.run_config import (
    config_value,
    read_run_config,
    read_run_record,
    run_method,
    run_stage,
    write_run_config,
)

CONFIG = {
    "kit": {"method": "spo", "seed": 3},
    "actor_rollout_ref": {"rollout": {"n": 8, "val_kwargs": {"n": 4, "temperature": 0.6}}},
    "odd": ["n", "y", "1e-3", "nan", "on", "0x10", "", None, 1.5, True, "ñ"],
}


def test_what_is_written_reads_back(tmp_path):
    path = write_run_config(
        tmp_path, CONFIG, stage="estimate", versions={"verl": "0.6.1"}, threads={"cores": 2}, extra={"data_file": "x"}
    )
    assert path == RunLayout(tmp_path).config
    record = read_run_record(tmp_path)
    assert list(record) == ["config", "versions", "threads", "stage", "data_file"]
    assert read_run_config(tmp_path) == CONFIG and run_stage(record) == "estimate"
    assert run_method(read_run_config(tmp_path)) == "SPO" and config_value(CONFIG, "kit.seed") == 3
    assert config_value(CONFIG, "kit.missing.deeper", "d") == "d"


def test_the_text_is_what_omegaconf_writes(tmp_path):
    """Strings YAML 1.1 reads as bools or numbers stay quoted, so OmegaConf (Hydra, the rollout check) reads the
    same values back; the text equals what the writer produced before it moved here."""
    omegaconf = pytest.importorskip("omegaconf")
    record = {"config": CONFIG, "versions": {}, "threads": {}, "stage": "train"}
    write_run_config(tmp_path, CONFIG, stage="train")
    text = RunLayout(tmp_path).config.read_text(encoding="utf-8")
    assert text == omegaconf.OmegaConf.to_yaml(omegaconf.OmegaConf.create(record))
    assert omegaconf.OmegaConf.to_container(omegaconf.OmegaConf.load(RunLayout(tmp_path).config)) == record


def test_a_folder_without_the_file(tmp_path):
    assert read_run_record(tmp_path) == {} and read_run_config(tmp_path) == {}
    assert run_stage({}) == "train" and run_method({}) is None
    with pytest.raises(UserError, match=r"config.yaml: missing; pass a run folder written by `spo train`"):
        read_run_config(tmp_path, required=True)


def test_a_file_without_a_config_section_has_no_config(tmp_path):
    """The bare Hydra config is not the file's format: its keys are not taken for the run's config."""
    RunLayout(tmp_path).config.write_text(yaml.safe_dump({"kit": {"method": "GRPO"}}))
    assert read_run_config(tmp_path) == {}
    with pytest.raises(UserError, match="has no config section"):
        read_run_config(tmp_path, required=True)


def test_bad_yaml_is_one_user_error(tmp_path):
    RunLayout(tmp_path).config.write_text("config: [unclosed\n")
    with pytest.raises(UserError, match=r"config.yaml: not valid YAML"):
        read_run_record(tmp_path)


def test_the_method_of_a_checkpoint_comes_from_its_run(tmp_path):
    from spo_helpers.stages.evaluate import checkpoint_method

    step = RunLayout(tmp_path).checkpoints / "global_step_5"
    step.mkdir(parents=True)
    assert checkpoint_method(step) == "CHECKPOINT"
    write_run_config(tmp_path, CONFIG, stage="train")
    assert checkpoint_method(step) == "SPO"
