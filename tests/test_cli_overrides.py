"""Hydra overrides anywhere on an ``spo`` command line (``cli_options.StageParser.parse_stage_args``)."""

from __future__ import annotations

import pytest

from spo_helpers.cli_options import StageParser, is_override
from spo_helpers.stages import evaluate, train


def parser_of(stage):
    parser = StageParser(prog=f"spo {stage.__name__}")
    stage.add_arguments(parser)
    return parser


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("trainer.save_freq=5", True),
        ("+data.gen_batch_size=96", True),
        ("~trainer.logger", True),
        ("agent=tools", True),
        ("actor_rollout_ref.rollout.val_kwargs.n=1", True),
        ("AIME24=/data/aime24.parquet", False),
        ("held_out=runs/val.parquet", False),
        ("--method", False),
        ("runs/subset_0.parquet", False),
    ],
)
def test_what_counts_as_an_override(token, expected):
    assert is_override(token) is expected


def test_overrides_anywhere_keep_their_order():
    parser = parser_of(train)
    line = [
        "trainer.test_freq=3",
        "--small_batch",
        "trainer.save_freq=5",  # not --small_batch's value
        "--train_files",
        "a.parquet",
        "b.parquet",
        "agent=tools",  # not a training file
        "--method",
        "SPO",
        "trainer.save_freq=6",
        "--exp_name",
        "x",
    ]
    args = parser.parse_stage_args(line)
    assert args.small_batch is True and args.train_files == ["a.parquet", "b.parquet"] and args.method == "SPO"
    assert args.overrides == ["trainer.test_freq=3", "trainer.save_freq=5", "agent=tools", "trainer.save_freq=6"]
    assert parser.parse_stage_args(["--exp_name", "trainer.x=1"]).exp_name == "trainer.x=1"  # an option's own value


def test_benchmarks_named_with_a_path_stay_benchmarks():
    args = parser_of(evaluate).parse_stage_args(["--benchmarks", "AIME24=/d/a.parquet", "trainer.seed=1", "--n", "4"])
    assert args.benchmarks == ["AIME24=/d/a.parquet"] and args.overrides == ["trainer.seed=1"] and args.n == 4
