"""The verl stages' settings (``run_settings``): flags, environment defaults, notebook checks, and their results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from IPython.lib.pretty import pretty

from spo_helpers.cli_options import StageParser
from spo_helpers.errors import UserError
from spo_helpers.run_settings import (
    EstimateSettings,
    EvaluateSettings,
    TrainSettings,
    add_flags,
    check_parameters,
    from_args,
)
from spo_helpers.stages.estimate import EstimateReport, EstimateSummary
from spo_helpers.stages.pipeline import PipelineConfig, stage_parameters, verl_stage_parameters
from spo_helpers.stages.train import TrainSummary
from spo_helpers.verl_stage import DryRun

# The flags each verb has always taken (both spellings are accepted: cli_options.StageParser).
COMMON = [
    "output_dir",
    "model_path",
    "exp_name",
    "n_val",
    "response_length",
    "debug",
    "small_batch",
    "backend",
    "device",
    "preset",
    "seed",
    "tools",
    "assets",
    "dry_run",
]
FLAGS = {
    TrainSettings: [
        *COMMON,
        "method",
        "train_data_dir",
        "train_files",
        "val_files",
        "offline_values",
        "n_train",
        "total_steps",
        "fresh",
        "schedule",
        "val_before_train",
    ],
    EstimateSettings: [*COMMON, "data_file", "data_dir", "force"],
    EvaluateSettings: [*COMMON, "checkpoint", "benchmarks", "n", "force"],
}
ENVIRONMENT = ["OUTPUT_DIR", "MODEL_PATH", "EXP_NAME", "N_VAL", "RESPONSE_LENGTH", "DEBUG", "SMALL_BATCH", "SEED"]
ENVIRONMENT += ["TOOLS", "METHOD", "TRAIN_DATA_DIR", "OFFLINE_VALUES", "N_TRAIN", "VAL_BEFORE_TRAIN", "SCHEDULE"]
ENVIRONMENT += ["DATA_FILE"]


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def parser_for(cls) -> StageParser:
    parser = StageParser()
    add_flags(parser, cls)
    return parser


@pytest.mark.parametrize("cls", list(FLAGS), ids=lambda c: c.__name__)
def test_every_setting_is_a_flag_in_both_spellings(cls):
    parser = parser_for(cls)
    options = {option for action in parser._actions for option in action.option_strings}
    for name in FLAGS[cls]:
        assert f"--{name}" in options and f"--{name.replace('_', '-')}" in options, name
    assert {f.name for f in dataclasses.fields(cls)} == {*FLAGS[cls], "overrides"}
    assert from_args(cls, parser.parse_args([])) == cls()  # no flag: the settings' defaults


def test_flags_parse_into_settings_with_overrides_anywhere():
    parser = parser_for(TrainSettings)
    argv = ["trainer.x=1", "--method", "spo", "--total-steps", "3", "--small_batch", "--train_files", "a", "b"]
    settings = from_args(TrainSettings, parser.parse_stage_args([*argv, "agent=tools"]))
    assert settings.method == "SPO" and settings.total_steps == 3 and settings.small_batch is True
    assert settings.train_files == ["a", "b"]
    assert settings.overrides == ["trainer.x=1", "agent=tools"]
    assert repr(settings) == (
        "TrainSettings(small_batch=True, overrides=['trainer.x=1', 'agent=tools'], method='SPO', "
        "train_files=['a', 'b'], total_steps=3)"
    )


def test_the_environment_gives_the_defaults_and_a_flag_wins(monkeypatch):
    monkeypatch.setenv("N_VAL", "4")
    monkeypatch.setenv("DEBUG", "true")
    monkeypatch.setenv("METHOD", "SPO")
    parser = parser_for(TrainSettings)
    settings = from_args(TrainSettings, parser.parse_args([]))
    assert (settings.n_val, settings.debug, settings.method) == (4, True, "SPO")
    assert from_args(TrainSettings, parser.parse_args(["--n_val", "2"])).n_val == 2
    monkeypatch.setenv("N_TRAIN", "four")
    with pytest.raises(UserError, match="N_TRAIN='four' is not an integer"):
        parser_for(TrainSettings)
    monkeypatch.setenv("N_TRAIN", "4")
    monkeypatch.setenv("VAL_BEFORE_TRAIN", "maybe")
    with pytest.raises(UserError, match="VAL_BEFORE_TRAIN='maybe' is not a boolean"):
        parser_for(TrainSettings)


def test_a_bad_choice_on_the_command_line_is_refused():
    with pytest.raises(SystemExit):
        parser_for(TrainSettings).parse_args(["--schedule", "eager"])


def test_notebook_parameters_are_checked_as_flags_are():
    parameters = {"methods": ["GRPO"], "train_data_dir": "splits", "total_steps": 30, "fresh": False, "In": []}
    settings = check_parameters(TrainSettings, parameters)
    assert (settings.train_data_dir, settings.total_steps) == ("splits", 30)
    assert (settings.backend, settings.preset) == ("cpu", "cpu")  # chosen, as the run will choose them
    with pytest.raises(UserError, match=r"parameter preset='gpu': choose one of cpu, official, paper"):
        check_parameters(TrainSettings, {"preset": "gpu"})
    with pytest.raises(UserError, match=r"parameter total_steps='30': expected int"):
        check_parameters(TrainSettings, {"total_steps": "30"})
    with pytest.raises(UserError, match=r"parameter overrides='a=1': expected a list of strings"):
        check_parameters(TrainSettings, {"overrides": "a=1"})
    with pytest.raises(UserError, match=r"--n 0: samples per problem must be at least 1"):
        check_parameters(EvaluateSettings, {"n": 0})


def test_the_pipeline_passes_the_verl_stages_their_settings():
    for config in (PipelineConfig(), PipelineConfig(gpu=True, model_path="org/model")):
        parameters = stage_parameters(config)
        check_parameters(EstimateSettings, parameters["02_estimate"])
        train = {k: v for k, v in parameters["04_train"].items() if k != "methods"}
        check_parameters(TrainSettings, train)
    with pytest.raises(UserError, match="n_vals: not settings of EstimateSettings"):
        verl_stage_parameters(EstimateSettings, {"n_vals": 8})


def test_a_result_prints_the_same_summary_on_a_terminal_and_in_a_notebook(tmp_path):
    summary = TrainSummary("SPO", tmp_path, 3, 384, 0.5, {"val-core/a/acc/mean@4": 0.25}, 12.0)
    assert str(summary) == pretty(summary)
    assert "SPO training: 3 steps, 384 samples, 12s" in str(summary)
    assert "val-core/a/acc/mean@4" in str(summary) and str(tmp_path) in str(summary)
    dump = Path("runs/spo/offline_value_estimation_subset_0/validation_data/0.jsonl")
    one = EstimateSummary("offline_value_estimation_subset_0", dump, 10, 80, 0.4, 0.1, 0.2, 3.0)
    report = EstimateReport([one, dataclasses.replace(one, skipped=True)])
    text = pretty(report)
    assert text == str(report) and text.count("offline_value_estimation_subset_0") == 2
    assert "(existing)" in text and len(report) == 2 and report[0] is one
    assert str(DryRun("config: 1\n# command\nspo\n")) == "config: 1\n# command\nspo"
