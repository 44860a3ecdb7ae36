import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spo_helpers.errors import UserError
from spo_helpers.formats.datasets import (
    check_schema,
    dataset_prompt_keys,
    load_dataset_rows,
    load_dataset_table,
    schema_frame,
)
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX, key_from_dump_input, prompt_key
from spo_helpers.formats.keys import duplicates as duplicate_keys


def chat_rows(n=4):
    return [
        {
            "data_source": "toy",
            "prompt": [{"role": "user", "content": f"  What is {i}+{i}?  "}],
            "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
            "extra_info": {"index": i},
        }
        for i in range(n)
    ]


def string_rows(n=3):
    """DAPO-Math-17k-Processed layout: ``prompt`` is a plain string."""
    return [
        {
            "prompt": f"Solve problem {i}.",
            "solution": str(i),
            "data_source": "math_dapo",
            "reward_model": {"ground_truth": str(i), "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"id-{i}"},
        }
        for i in range(n)
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- formats ---------------------------------------------------------------


def test_parquet_file_keeps_nested_columns(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(chat_rows()), path)
    df = load_dataset_rows(str(path))
    assert len(df) == 4
    assert df["prompt"][1][0]["content"] == "  What is 1+1?  "
    assert df["reward_model"][2]["ground_truth"] == "4"
    assert df["extra_info"][3]["index"] == 3


def test_jsonl_skips_blank_lines_and_unions_keys(tmp_path):
    rows = chat_rows(3)
    rows[2]["extra_only_in_last_row"] = 7
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    table = load_dataset_table(path)
    assert table.num_rows == 3
    assert table.column("extra_only_in_last_row").to_pylist() == [None, None, 7]
    assert pa.types.is_list(table.schema.field("prompt").type)


def test_json_list_of_rows_and_columns(tmp_path):
    rows = string_rows()
    as_list = tmp_path / "rows.json"
    as_list.write_text(json.dumps(rows))
    columns = tmp_path / "cols.json"
    columns.write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}))
    a, b = load_dataset_rows(as_list), load_dataset_rows(columns)
    assert list(a["prompt"]) == list(b["prompt"]) == [r["prompt"] for r in rows]
    assert a["reward_model"][0] == b["reward_model"][0] == rows[0]["reward_model"]


def test_parquet_directory_in_natural_order(tmp_path):
    rows = chat_rows(12)
    for i in (0, 2, 10):  # subset_10 must come after subset_2
        pq.write_table(pa.Table.from_pylist(rows[i : i + 2]), tmp_path / f"subset_{i}.parquet")
    (tmp_path / "split_manifest.json").write_text("{}")  # ignored
    df = load_dataset_rows(tmp_path)
    assert [e["index"] for e in df["extra_info"]] == [0, 1, 2, 3, 10, 11]


def test_hub_id_is_passed_to_datasets(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(string_rows(2))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    df = load_dataset_rows("org/name", config="en", split="train")
    assert calls == [("org/name", "en", "train")]
    assert list(df["prompt"]) == ["Solve problem 0.", "Solve problem 1."]


def test_hub_failure_is_a_user_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def fake_load(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(UserError, match=r"not found locally.*ConnectionError"):
        load_dataset_rows("org/missing")


# ---- bad inputs ------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope.parquet", "dir/nope.jsonl", "./nope", "a/b/c"])
def test_missing_path(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        load_dataset_rows(name)


@pytest.mark.parametrize("name", ["x.parquet", "x.jsonl", "x.json"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserError, match=f"{name}: the file is empty"):
        load_dataset_rows(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "content"),
    [("blank.jsonl", "\n  \n"), ("list.json", "[]"), ("cols.json", '{"prompt": []}')],
)
def test_zero_rows(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match="no rows"):
        load_dataset_rows(tmp_path / name)


def test_zero_row_parquet(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(chat_rows(1)).slice(0, 0), path)
    with pytest.raises(UserError, match="no rows"):
        load_dataset_rows(path)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(chat_rows(1)[0]) + "\n\n{not json\n")
    with pytest.raises(UserError, match=r"train\.jsonl:3: not valid JSON"):
        load_dataset_rows(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(chat_rows(1)[0]) + "\n[1, 2]\n")
    with pytest.raises(UserError, match=r"train\.jsonl:2: expected a JSON object"):
        load_dataset_rows(path)


def test_bad_json_files(tmp_path):
    (tmp_path / "a.json").write_text('{"x": ')
    with pytest.raises(UserError, match=r"a\.json:1:\d+: not valid JSON"):
        load_dataset_rows(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="row 0 is a int"):
        load_dataset_rows(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"a": [1], "b": [1, 2]}')
    with pytest.raises(UserError, match="different lengths"):
        load_dataset_rows(tmp_path / "c.json")
    (tmp_path / "d.json").write_text('"text"')
    with pytest.raises(UserError, match="expected a list of row objects"):
        load_dataset_rows(tmp_path / "d.json")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(UserError, match="cannot read as parquet"):
        load_dataset_rows(path)


def test_unsupported_suffix_and_empty_folder(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="unsupported file type"):
        load_dataset_rows(tmp_path / "data.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match=r"no \.parquet files"):
        load_dataset_rows(tmp_path / "empty_dir")


def test_rows_with_mixed_types(tmp_path):
    rows = chat_rows(2)
    rows[1]["prompt"] = "a string this time"
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(UserError, match="do not share one schema"):
        load_dataset_rows(path)


# ---- schema ----------------------------------------------------------------


def test_both_prompt_layouts_pass_the_schema_check():
    check_schema(pd.DataFrame(chat_rows()), "chat")
    check_schema(pd.DataFrame(string_rows()), "strings")


def test_schema_check_after_parquet_round_trip(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(chat_rows()), path)
    check_schema(load_dataset_rows(path), str(path))  # numpy arrays of dicts are chat lists too


@pytest.mark.parametrize(
    ("bad_prompt", "bad_rows"),
    [
        ("   ", [1]),
        ([], [1]),
        ([{"role": "user"}], [1]),
        ([{"role": "user", "content": " "}], [1]),
        (None, [1]),
        (42, [1]),
    ],
)
def test_schema_counts_bad_prompts(bad_prompt, bad_rows):
    rows = chat_rows(4)
    rows[1]["prompt"] = bad_prompt
    rows[3]["prompt"] = bad_prompt
    with pytest.raises(UserError, match=r"src: 2 of 4 rows lack a usable 'prompt' \(first bad row: 1\)"):
        check_schema(pd.DataFrame(rows), "src")


def test_schema_counts_missing_ground_truth_and_columns():
    rows = chat_rows(5)
    rows[2]["reward_model"] = {"style": "rule"}
    rows[4]["reward_model"] = None
    with pytest.raises(UserError, match=r"2 of 5 rows lack 'reward_model.ground_truth' \(first bad row: 2\)"):
        check_schema(pd.DataFrame(rows), "src")
    frame = pd.DataFrame(rows).drop(columns=["reward_model", "prompt"])
    with pytest.raises(UserError, match=r"column 'prompt' is missing.*column 'reward_model' is missing"):
        check_schema(frame, "src")


def test_schema_frame_selects_only_needed_columns(tmp_path):
    table = pa.Table.from_pylist(string_rows())
    assert list(schema_frame(table).columns) == ["prompt", "reward_model", "extra_info", "data_source"]


# ---- keys ------------------------------------------------------------------


def test_chat_prompt_keys_are_the_stripped_user_content():
    keys = dataset_prompt_keys(pd.DataFrame(chat_rows(3)))
    assert keys == ["What is 0+0?", "What is 1+1?", "What is 2+2?"]


def test_string_prompt_keys_match_the_official_wrapping():
    rows = string_rows(2)
    rows[1]["prompt"] = "  Leading spaces and a trailing newline\n"
    keys = dataset_prompt_keys(pd.DataFrame(rows))
    for row, key in zip(rows, keys, strict=True):
        # the official dataset class: [{"role": "user", "content": prompt + answer_format}]
        wrapped = [{"role": "user", "content": row["prompt"] + ANSWER_FORMAT_SUFFIX}]
        assert key == prompt_key(wrapped) == (row["prompt"] + ANSWER_FORMAT_SUFFIX).strip()
        # and what the official merge parses from a Qwen-style decoded dump input
        assert key == key_from_dump_input(f"user\n{wrapped[0]['content']}\nassistant\n")
    assert keys[1].startswith("Leading spaces and a trailing newline\n\nThe answer format must be")
    assert keys[0].endswith("\\boxed{'The final answer goes here.'}")


def test_explicit_prompt_key_wins():
    rows = string_rows(2) + chat_rows(1)
    rows[0]["extra_info"] = {"index": "x", "prompt_key": "explicit"}
    keys = dataset_prompt_keys(pd.DataFrame(rows))
    assert keys[0] == "explicit"
    assert keys[1].startswith("Solve problem 1.\nThe answer format")
    assert keys[2] == "What is 0+0?"


def test_keys_after_parquet_round_trip(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(chat_rows(3)), path)
    df = load_dataset_rows(path)
    assert isinstance(df["prompt"][0], np.ndarray)
    assert dataset_prompt_keys(df) == dataset_prompt_keys(pd.DataFrame(chat_rows(3)))


def test_bad_prompt_key_names_source_and_row():
    rows = chat_rows(2)
    rows[1]["prompt"] = []
    with pytest.raises(UserError, match="src: row 1:"):
        dataset_prompt_keys(pd.DataFrame(rows), "src")


def test_duplicate_keys():
    assert duplicate_keys(["a", "b", "a", "c", "a", "b"]) == {"a": 3, "b": 2}
    assert duplicate_keys(["a", "b"]) == {}


def test_key_collisions_are_different_prompts_under_one_key():
    from spo_helpers.formats.keys import key_collisions

    ask = [{"role": "user", "content": "What is 1+1?"}]
    other = [{"role": "user", "content": "What is 2+2?"}]
    assert key_collisions([ask, ask, other], ["a", "a", "b"]) == {}  # a repeated prompt is one prompt
    assert key_collisions([ask, other, ask, "plain"], ["k", "k", "x", "k"]) == {"k": [0, 1, 3]}
    system = [{"role": "system", "content": "Be brief."}, *ask]
    assert key_collisions([ask, system], ["k", "k"]) == {"k": [0, 1]}  # another chat, same user message
