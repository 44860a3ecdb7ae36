import json

import numpy as np
import pytest

from spo_helpers.core.tracker import ValueTracker
from spo_helpers.formats.atomic import atomic_open, atomic_write_text
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX, PromptKeyError, key_from_dump_input, prompt_key, row_key
from spo_helpers.formats.offline_values import (
    OfflineValuesError,
    coverage,
    read_offline_values,
    values_summary,
    write_offline_values,
)

SUFFIX = "The answer format must be: \\boxed{'The final answer goes here.'}"


def test_round_trip_official_format(tmp_path):
    values = {"What is 1+1?": [1.0, 0.0, 1.0], "Ünïcode prompt ∑": [0, 0]}
    path = write_offline_values(values, tmp_path / "sub" / "values.json")
    assert json.loads(path.read_text(encoding="utf-8")) == {k: [float(x) for x in v] for k, v in values.items()}
    assert read_offline_values(path) == {k: [float(x) for x in v] for k, v in values.items()}
    assert "Ünïcode" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ('{"a": [1, 0', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"a": 1}', "must be a list"),
        ('{"a": ["x"]}', "non-numeric"),
        ('{"a": [NaN]}', "NaN"),
        ('{"a": [Infinity]}', "NaN or infinite"),
        ('{"a": [true]}', "non-numeric"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, text, match):
    path = tmp_path / "values.json"
    path.write_text(text)
    with pytest.raises(OfflineValuesError, match=match):
        read_offline_values(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_offline_values(tmp_path / "nope.json")


def test_write_refuses_nan_and_keeps_old_file(tmp_path):
    path = tmp_path / "values.json"
    write_offline_values({"a": [1]}, path)
    with pytest.raises(OfflineValuesError, match="NaN"):
        write_offline_values({"a": [float("nan")]}, path)
    assert read_offline_values(path) == {"a": [1.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["values.json"]


def test_atomic_open_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_prompt_key_matches_the_official_rule():
    content = f"  Compute 12*3.\n\n{SUFFIX}  "
    chat = [{"role": "user", "content": content}]
    assert prompt_key(chat) == content.strip()
    assert prompt_key(np.array(chat, dtype=object)) == content.strip()  # as read back from parquet
    assert prompt_key([{"role": "system", "content": "sys"}, {"role": "user", "content": " q "}]) == "q"
    assert row_key({"prompt": chat}) == content.strip()
    assert row_key({"prompt": chat, "extra_info": {"prompt_key": "explicit"}}) == "explicit"
    with pytest.raises(PromptKeyError):
        prompt_key([])
    with pytest.raises(PromptKeyError):
        row_key({"question": "x"})


def test_a_string_prompt_is_keyed_as_the_official_dataset_class_wraps_it():
    """One rule for plain-string prompts everywhere: the answer-format suffix is appended, then stripped."""
    assert prompt_key(" Compute 12*3.") == f"Compute 12*3.{ANSWER_FORMAT_SUFFIX}"
    chat = [{"role": "user", "content": " Compute 12*3." + ANSWER_FORMAT_SUFFIX}]
    assert row_key({"prompt": " Compute 12*3."}) == prompt_key(chat)
    assert row_key({"prompt": "q", "extra_info": {"prompt_key": "  "}}) == prompt_key("q")  # blank: not explicit


def test_key_from_official_dump_input():
    decoded = f"system\nYou are helpful.\nuser\nCompute 12*3.\n\n{SUFFIX}\nassistant\n"
    assert key_from_dump_input(decoded) == f"Compute 12*3.\n\n{SUFFIX}"


def test_official_file_drives_our_tracker(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"q{i}\n\n{SUFFIX}"}]} for i in range(3)]
    keys = [row_key(r) for r in rows]
    official = {keys[0]: [1] * 8, keys[1]: [0] * 8, "other prompt": [1]}
    path = tmp_path / "offline_values.json"
    path.write_text(json.dumps(official))
    tracker = ValueTracker.from_offline_values(read_offline_values(path), keys=keys)
    assert tracker.num_without_offline_values == 1 and tracker.num_unmatched_values == 1
    assert coverage(official, keys) == {
        "dataset_prompts": 3,
        "with_values": 2,
        "without_values": 1,
        "empty_lists": 0,
        "unmatched_values": 1,
    }


def test_values_summary():
    summary = values_summary({"a": [1, 1], "b": [0, 0], "c": [1, 0], "d": []})
    assert summary["prompts"] == 4 and summary["prompts_without_scores"] == 1 and summary["samples"] == 6
    assert summary["mean_success"] == pytest.approx(0.5)
    assert summary["share_all_fail"] == pytest.approx(1 / 3)
    assert summary["share_all_pass"] == pytest.approx(1 / 3)


def test_a_failed_values_write_keeps_the_old_values_and_their_stats(tmp_path, monkeypatch):
    import errno

    from spo_helpers.errors import UserError
    from spo_helpers.formats import atomic
    from spo_helpers.formats.offline_values import stats_match, stats_path_for, write_values_and_stats

    target = tmp_path / "values.json"
    write_values_and_stats({"q": [1.0]}, {"prompts": 1}, target)
    before = (target.read_text(), stats_path_for(target).read_text())

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(UserError, match=r"No space left on device.*The previous file is unchanged"):
        write_values_and_stats({"q": [0.0], "r": [1.0]}, {"prompts": 2}, target)
    monkeypatch.undo()
    assert (target.read_text(), stats_path_for(target).read_text()) == before and stats_match(target) is True
    assert not list(tmp_path.glob("*.previous"))
