"""``spo <verb> --help`` is short usage text: the verb's line from ``VERBS``, its ``USAGE`` examples and one line per
flag, on one screen of 100 columns, without reST markup."""

import importlib

import pytest

from spo_helpers import cli
from spo_helpers.cli_options import StageParser
from spo_helpers.stages import VERBS, stage_module

MAX_LINES = 40
COLUMNS = 100


def help_text(verb: str, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([verb, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_is_short_usage_text(verb, monkeypatch, capsys):
    text = help_text(verb, monkeypatch, capsys)
    lines = text.splitlines()
    assert lines[0].startswith(f"usage: spo {verb} [options]")
    assert len(lines) <= MAX_LINES, f"spo {verb} --help has {len(lines)} lines"
    assert max(len(line) for line in lines) <= COLUMNS
    assert "``" not in text
    assert VERBS[verb] in text
    usage = importlib.import_module(stage_module(verb)).USAGE
    assert usage.strip() and usage in text


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_lists_every_flag(verb, monkeypatch, capsys):
    text = help_text(verb, monkeypatch, capsys)
    parser = StageParser(prog=f"spo {verb}")
    importlib.import_module(stage_module(verb)).add_arguments(parser)
    for action in parser._actions:
        if action.option_strings:
            assert any(name in text for name in action.option_strings), (verb, action.option_strings)


def test_the_spelling_not_listed_is_accepted():
    """The help lists one long spelling of each flag; ``StageParser`` takes both."""
    from spo_helpers.stages import train

    parser = StageParser(prog="spo train")
    train.add_arguments(parser)
    dashes = parser.parse_stage_args(["--output-dir", "out", "--train-data-dir", "data", "--dry_run"])
    underscores = parser.parse_stage_args(["--output_dir", "out", "--train_data_dir", "data", "--dry-run"])
    assert vars(dashes) == vars(underscores)
    assert (dashes.output_dir, dashes.train_data_dir, dashes.dry_run) == ("out", "data", True)
