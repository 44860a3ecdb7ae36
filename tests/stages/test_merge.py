import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spo_helpers.cli import main
from spo_helpers.errors import UserError
from spo_helpers.formats.dumps import read_dump
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX
from spo_helpers.formats.keys import dump_key as line_key
from spo_helpers.formats.layout import stats_path_for
from spo_helpers.formats.offline_values import read_offline_values
from spo_helpers.stages.merge import (
    DEFAULT_PATTERN,
    cap_scores,
    dataset_coverage,
    merge_dumps,
    print_merge_summary,
    write_merge,
)


def dump_line(content, score, *, with_key=True, system=True):
    """A line as verl's validation dump writes it (Qwen chat template, decoded without special tokens)."""
    header = "system\nYou are a helpful assistant.\n" if system else ""
    line = {
        "input": f"{header}user\n{content}\nassistant\n",
        "output": "<think>...</think> \\boxed{2}",
        "gts": "2",
        "score": score,
        "step": 0,
        "acc": bool(score),
    }
    if with_key:
        line["prompt_key"] = content.strip()
    return line


def write_dump(root, subset, lines, name="0.jsonl"):
    folder = root / f"offline_value_estimation_subset_{subset}" / "validation_data"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def two_subsets(root, with_key=True):
    write_dump(root, 0, [dump_line("What is 1+1?", s, with_key=with_key) for s in (1.0, 0.0, 1.0)])
    write_dump(root, 1, [dump_line(" What is 2+2? ", s, with_key=with_key) for s in (0.0, 0.0)])
    return root


def merge(root, **kwargs):
    kwargs.setdefault("progress", False)
    return merge_dumps(root, **kwargs)


def test_groups_scores_by_prompt(tmp_path):
    result = merge(two_subsets(tmp_path))
    assert result.values == {"What is 1+1?": [1.0, 0.0, 1.0], "What is 2+2?": [0.0, 0.0]}
    assert [p.parent.parent.name for p in result.files] == [
        "offline_value_estimation_subset_0",
        "offline_value_estimation_subset_1",
    ]
    s = result.stats
    assert (s["files"], s["lines"], s["prompts"], s["samples"], s["bad_lines"]) == (2, 5, 2, 5, 0)
    assert s["mean_score"] == pytest.approx(0.4)
    assert s["share_all_fail"] == pytest.approx(0.5) and s["share_all_pass"] == pytest.approx(0.0)


def test_same_prompt_across_files_is_pooled_in_file_order(tmp_path):
    write_dump(tmp_path, 1, [dump_line("q", 0.25)])
    write_dump(tmp_path, 0, [dump_line("q", 1.0), dump_line("q", -1.0)])
    assert merge(tmp_path).values == {"q": [1.0, -1.0, 0.25]}  # numbers kept, not binarised


def test_official_and_our_dumps_give_the_same_keys(tmp_path):
    ours = merge(two_subsets(tmp_path / "ours", with_key=True))
    official = merge(two_subsets(tmp_path / "official", with_key=False))
    assert ours.values == official.values


def test_prompt_key_beats_the_official_parse():
    # a prompt that itself contains "user\n" confuses the official parse; the reward function's key does not
    line = dump_line("Let the user\nchoose a number", 1.0)
    assert line_key(line) == "Let the user\nchoose a number"
    assert line_key({k: v for k, v in line.items() if k != "prompt_key"}) == "choose a number"


def test_keys_match_string_prompt_datasets(tmp_path):
    # DAPO layout: the official dataset class appends the answer-format suffix before the chat template
    prompts = ["Solve A.", "Solve B.", "Solve C."]
    content = [p + ANSWER_FORMAT_SUFFIX for p in prompts]
    write_dump(tmp_path / "dumps", 0, [dump_line(c, 1.0, with_key=False) for c in content[:2]])
    rows = [{"prompt": p, "reward_model": {"ground_truth": "1"}} for p in prompts]
    data = tmp_path / "dapo.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    result = merge(tmp_path / "dumps")
    assert dataset_coverage(result, [data]) == {
        "dataset_prompts": 3,
        "with_values": 2,
        "without_values": 1,
        "empty_lists": 0,
        "unmatched_values": 0,
    }


def test_cap_is_seeded_reproducible_and_independent_of_workers(tmp_path):
    scores = [i / 100 for i in range(30)]
    for subset in range(6):
        write_dump(tmp_path, subset, [dump_line("many", s) for s in scores[subset * 5 : subset * 5 + 5]])
        write_dump(tmp_path, subset, [dump_line(f"few {subset}", 1.0)], name="1.jsonl")
    pattern = "offline_value_estimation_subset_*/validation_data/*.jsonl"
    runs = [merge(tmp_path, pattern=pattern, workers=w, seed=3) for w in (1, 2, 6, None)]
    assert all(r.values == runs[0].values for r in runs)
    kept = runs[0].values["many"]
    assert len(kept) == 8 and not Counter(kept) - Counter(scores)
    assert kept == sorted(kept)  # kept in read order
    assert runs[0].stats["prompts_capped"] == 1
    assert merge(tmp_path, pattern=pattern, seed=4).values["many"] != kept
    assert merge(tmp_path, pattern=pattern, max_scores_per_prompt=0).values["many"] == scores
    assert merge(tmp_path, pattern=pattern, max_scores_per_prompt=30).values["many"] == scores


def test_cap_scores_depends_only_on_seed_key_and_scores():
    scores = list(range(20))
    assert cap_scores(scores, 5, 0, "a") == cap_scores(scores, 5, 0, "a")
    assert cap_scores(scores, 5, 0, "a") != cap_scores(scores, 5, 0, "b")
    assert cap_scores(scores, 25, 0, "a") == scores
    assert cap_scores(scores, 0, 0, "a") == scores


def test_custom_pattern_and_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "x.jsonl").write_text(json.dumps(dump_line("q", 0.0)) + "\n")
    (tmp_path / "a" / "x.jsonl").write_text(json.dumps(dump_line("q", 1.0)) + "\n")
    result = merge(tmp_path, pattern="*/x.jsonl")
    assert result.values == {"q": [1.0, 0.0]}


# ---- bad lines -------------------------------------------------------------

GOOD = dump_line("fine", 1.0)
BAD_LINES = {
    "invalid_json": '{"input": "user\\nq\\nassistant", "score": 1',
    "not_an_object": "[1, 2, 3]",
    "missing_score": json.dumps({"input": "user\nq\nassistant\n"}),
    "bad_score": json.dumps({"prompt_key": "q", "score": "1"}),
    "missing_key": json.dumps({"score": 1.0, "output": "x"}),
    "duplicate_key": '{"prompt_key": "q", "score": 1.0, "score": 0.0}',  # which score counts is unclear
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_each_bad_line_stops_with_file_and_line(tmp_path, reason):
    path = write_dump(tmp_path, 0, [GOOD, "\n", BAD_LINES[reason] + "\n", GOOD])
    with pytest.raises(UserError, match=rf"{path}:3: .*--skip_bad_lines"):
        merge(tmp_path)
    result = merge(tmp_path, skip_bad_lines=True)
    assert result.bad_lines == {reason: 1}
    assert result.values == {"fine": [1.0, 1.0]}
    assert result.stats["bad_lines_by_reason"] == {reason: 1} and result.stats["lines"] == 3


@pytest.mark.parametrize("score", ["true", "null", "NaN", "Infinity", "-Infinity", '"0.5"', "[1]", '{"v": 1}'])
def test_non_numeric_scores_are_bad(tmp_path, score):
    path = write_dump(tmp_path, 0, [f'{{"prompt_key": "q", "score": {score}}}\n'])
    with pytest.raises(UserError, match=rf"{path}:1: 'score' is not a finite number"):
        merge(tmp_path)


@pytest.mark.parametrize(
    "line",
    [
        {"prompt_key": "", "score": 1.0},
        {"prompt_key": None, "score": 1.0},
        {"input": "user\n   \nassistant\n", "score": 1.0},
        {"input": 5, "score": 1.0},
    ],
)
def test_unusable_keys_are_missing_keys(tmp_path, line):
    write_dump(tmp_path, 0, [line, GOOD])
    assert merge(tmp_path, skip_bad_lines=True).bad_lines == {"missing_key": 1}


@pytest.mark.parametrize("lines", [[], ["\n"], [json.dumps({"prompt_key": "", "score": 1.0}) + "\n"]])
def test_dumps_without_any_score_are_an_error(tmp_path, lines):
    """An all-empty (or all-bad) input never writes an empty values file."""
    write_dump(tmp_path, 0, lines)
    write_dump(tmp_path, 1, [])
    with pytest.raises(UserError, match=r"no scores in the 2 dump file\(s\)"):
        merge(tmp_path, skip_bad_lines=True)


def test_values_and_stats_cannot_be_left_mismatched(tmp_path, monkeypatch):
    """The stats record the values' digest; a crash after the values leaves no stale stats beside them."""
    import spo_helpers.formats.offline_values as offline_values
    from spo_helpers.formats.offline_values import stats_match

    write_dump(tmp_path, 0, [GOOD])
    out = tmp_path / "values.json"
    write_merge(merge(tmp_path), out)
    assert stats_match(out) is True
    out.write_text(out.read_text().replace("1.0", "0.0"))  # the values change, the stats do not
    assert stats_match(out) is False

    real_write = offline_values.atomic_write_json

    def full_disk(path, *args, **kwargs):  # the disk fills after the values, at the stats
        if str(path).endswith(".stats.json"):
            raise UserError("values.stats.json: could not write (No space left on device)")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(offline_values, "atomic_write_json", full_disk)
    with pytest.raises(UserError, match="No space"):
        write_merge(merge(tmp_path), out)
    assert not stats_path_for(out).exists() and stats_match(out) is None


def test_skip_counts_every_reason(tmp_path):
    write_dump(tmp_path, 0, [GOOD, *(b + "\n" for b in BAD_LINES.values())])
    write_dump(tmp_path, 1, [BAD_LINES["bad_score"] + "\n", BAD_LINES["bad_score"] + "\n", GOOD])
    result = merge(tmp_path, skip_bad_lines=True)
    assert result.bad_lines == {
        "bad_score": 3,
        "duplicate_key": 1,
        "invalid_json": 1,
        "missing_key": 1,
        "missing_score": 1,
        "not_an_object": 1,
    }
    assert result.stats["bad_lines"] == 8 and result.stats["samples_read"] == 2


def test_the_first_bad_file_in_sorted_order_is_reported(tmp_path):
    write_dump(tmp_path, 0, [GOOD])
    first = write_dump(tmp_path, 1, [GOOD, "oops\n"])
    write_dump(tmp_path, 2, ["oops\n"])
    for workers in (1, 3):
        with pytest.raises(UserError, match=rf"{first}:2: not valid JSON"):
            merge(tmp_path, workers=workers)


def test_read_dump_alone(tmp_path):
    path = write_dump(tmp_path, 0, [GOOD, "\n", GOOD])
    dump = read_dump(path)
    assert dump.lines == 2 and dump.entries == [("fine", 1.0), ("fine", 1.0)] and dump.bad == {}


# ---- missing and empty inputs ----------------------------------------------


def test_no_files_matched(tmp_path):
    (tmp_path / "offline_value_estimation_subset_0").mkdir()
    with pytest.raises(UserError, match=re.escape(f"no dump files under {tmp_path} match '{DEFAULT_PATTERN}'")):
        merge(tmp_path)
    with pytest.raises(UserError, match="--input_dir is not a directory"):
        merge(tmp_path / "missing")


def test_empty_file_is_a_warning(tmp_path, capsys):
    write_dump(tmp_path, 0, [GOOD])
    empty = write_dump(tmp_path, 1, [])
    result = merge(tmp_path)
    assert result.empty_files == [empty]
    assert result.stats["empty_files"] == [str(empty)]
    print_merge_summary(result)
    assert f"warning: empty dump file {empty}" in capsys.readouterr().out


def test_bad_arguments(tmp_path):
    two_subsets(tmp_path)
    with pytest.raises(UserError, match="max_scores_per_prompt"):
        merge(tmp_path, max_scores_per_prompt=-1)
    with pytest.raises(UserError, match="--workers"):
        merge(tmp_path, workers=0)


# ---- coverage and output ---------------------------------------------------


def test_coverage_numbers(tmp_path):
    lines = [dump_line(q, 1.0) for q in ("p0", "p1", "p2", "stray")]
    write_dump(tmp_path / "dumps", 0, lines)
    rows = [{"prompt": [{"role": "user", "content": f"p{i}"}], "reward_model": {"ground_truth": "1"}} for i in range(5)]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    second.write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    result = merge(tmp_path / "dumps")
    report = dataset_coverage(result, [first, second])
    assert report == {
        "dataset_prompts": 5,
        "with_values": 3,
        "without_values": 2,
        "empty_lists": 0,
        "unmatched_values": 1,
    }
    assert result.stats["coverage"]["datasets"] == [str(first), str(second)]


def test_written_file_round_trips(tmp_path):
    result = merge(two_subsets(tmp_path / "dumps"))
    values_path, stats_path = write_merge(result, tmp_path / "out" / "offline_values.json")
    assert read_offline_values(values_path) == result.values
    assert stats_path == tmp_path / "out" / "offline_values.stats.json" == stats_path_for(values_path)
    stats = json.loads(stats_path.read_text())
    assert stats["prompts"] == 2 and stats["samples"] == 5 and stats["bad_lines_by_reason"] == {}
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")] == []


# ---- command line ----------------------------------------------------------


def test_cli_merge_with_coverage(tmp_path, capsys):
    two_subsets(tmp_path / "dumps")
    data = tmp_path / "train.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": q}], "reward_model": {"ground_truth": "2"}} for q in ("What is 1+1?",)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "values.json"
    args = ["merge", "--input_dir", str(tmp_path / "dumps"), "--output_file", str(out), "--dataset", str(data)]
    assert main([*args, "--workers", "2", "--max_scores_per_prompt", "2", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "prompts: 2, samples kept: 4 of 5" in text
    assert "coverage: 1 of 1 training prompts have values, 0 without, 1 value keys match no prompt" in text
    values = read_offline_values(out)
    assert len(values["What is 1+1?"]) == 2 and values["What is 2+2?"] == [0.0, 0.0]
    assert json.loads((tmp_path / "values.stats.json").read_text())["coverage"]["with_values"] == 1


def test_cli_errors_exit_2(tmp_path, capsys):
    path = write_dump(tmp_path / "dumps", 0, [GOOD, "oops\n"])
    out = tmp_path / "values.json"
    args = ["merge", "--input_dir", str(tmp_path / "dumps"), "--output_file", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("spo merge: error:") and f"{path}:2:" in err and err.count("\n") == 1
    assert not out.exists()
    assert main([*args, "--skip_bad_lines"]) == 0
    assert "skipped 1 bad lines (invalid_json 1)" in capsys.readouterr().out
    assert main([*args, "--pattern", "*.nothing"]) == 2
    assert "no dump files" in capsys.readouterr().err
    assert main([*args, "--skip_bad_lines", "--dataset", str(tmp_path / "missing.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_dump_lines_with_unicode_line_separators_and_bad_encoding(tmp_path):
    """verl writes JSON with ensure_ascii=False: a raw U+2028 inside a string stays one line; non-UTF-8 is named."""
    line = json.dumps({"prompt_key": "q\u2028r", "score": 1.0, "output": "a\u2028b\x85c"}, ensure_ascii=False)
    write_dump(tmp_path, 0, [line + "\n"])
    assert merge(tmp_path).values == {"q\u2028r": [1.0]}
    folder = tmp_path / "offline_value_estimation_subset_0" / "validation_data"
    (folder / "0.jsonl").write_bytes(b'{"prompt_key": "caf\xe9", "score": 1.0}\n')
    with pytest.raises(UserError, match=r"0.jsonl: not UTF-8 text \(invalid byte at offset"):
        merge(tmp_path)
