import hashlib
import itertools
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spo_helpers.cli import main
from spo_helpers.errors import UserError
from spo_helpers.formats.atomic import sha256_file
from spo_helpers.stages import split as split_mod
from spo_helpers.stages.split import (
    MANIFEST_NAME,
    OFFICIAL_DATASET,
    print_split_summary,
    shard_bounds,
    split_dataset,
)


def chat_rows(n):
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
            "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
            "extra_info": {"index": i, "split": "train"},
            "row_id": i,
        }
        for i in range(n)
    ]


def string_rows(n):
    return [
        {
            "prompt": f"Solve problem {i}.",
            "reward_model": {"ground_truth": str(i), "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"id-{i}"},
            "row_id": i,
        }
        for i in range(n)
    ]


def write_source(tmp_path, rows, name="train.parquet"):
    path = tmp_path / name
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def subset_ids(result):
    return [pq.read_table(p).column("row_id").to_pylist() for p in result.paths]


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("rows", "n"), [(10, 3), (17, 5), (5, 5), (7, 1), (23, 4)])
def test_contiguous_shards_equal_datasets_shard(tmp_path, rows, n):
    datasets = pytest.importorskip("datasets")
    df = pd.DataFrame(chat_rows(rows))
    result = split_dataset(write_source(tmp_path, chat_rows(rows)), tmp_path / "out", n)
    reference = datasets.Dataset.from_pandas(df)
    for i, ids in enumerate(subset_ids(result)):
        assert ids == reference.shard(num_shards=n, index=i, contiguous=True)["row_id"]
    assert result.sizes == [len(ids) for ids in subset_ids(result)]


@given(st.integers(0, 500), st.integers(1, 40))
def test_shard_bounds_cover_everything_in_order(rows, n):
    bounds = shard_bounds(rows, n)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shuffle_is_seeded_and_reproducible(tmp_path):
    source = write_source(tmp_path, chat_rows(40))
    plain = subset_ids(split_dataset(source, tmp_path / "plain", 4))
    a = split_dataset(source, tmp_path / "a", 4, shuffle=True, seed=7)
    b = split_dataset(source, tmp_path / "b", 4, shuffle=True, seed=7)
    c = split_dataset(source, tmp_path / "c", 4, shuffle=True, seed=8)
    assert [i for ids in plain for i in ids] == list(range(40))
    assert subset_ids(a) == subset_ids(b)
    assert a.checksums == b.checksums
    assert subset_ids(a) != subset_ids(c)
    assert sorted(i for ids in subset_ids(a) for i in ids) == list(range(40))
    assert subset_ids(a) != plain


def test_manifest_matches_the_files(tmp_path):
    result = split_dataset(write_source(tmp_path, chat_rows(11)), tmp_path / "out", 3, shuffle=True, seed=3)
    manifest = json.loads(result.manifest_path.read_text())
    assert result.manifest_path == tmp_path / "out" / MANIFEST_NAME
    assert manifest["rows"] == 11 and manifest["num_subsets"] == 3
    assert manifest["shuffle"] is True and manifest["seed"] == 3
    assert manifest["source"].endswith("train.parquet") and manifest["created_at"]
    assert [s["rows"] for s in manifest["subsets"]] == result.sizes == [4, 4, 3]
    for entry, path in zip(manifest["subsets"], result.paths, strict=True):
        assert entry["file"] == path.name
        assert entry["sha256"] == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert pq.read_metadata(path).num_rows == entry["rows"] == entry["end"] - entry["start"]


def test_nested_columns_survive_the_round_trip(tmp_path):
    rows = chat_rows(6)
    result = split_dataset(write_source(tmp_path, rows), tmp_path / "out", 2)
    back = pd.concat([pd.read_parquet(p) for p in result.paths], ignore_index=True)
    for row, (_, got) in zip(rows, back.iterrows(), strict=True):
        assert [dict(m) for m in got["prompt"]] == row["prompt"]
        assert got["reward_model"] == row["reward_model"]
        assert got["extra_info"] == row["extra_info"]
    assert pq.read_schema(result.paths[0]) == pq.read_schema(tmp_path / "train.parquet").remove_metadata()


def test_subsets_load_with_datasets_as_verl_does(tmp_path):
    datasets = pytest.importorskip("datasets")
    result = split_dataset(write_source(tmp_path, chat_rows(4)), tmp_path / "out", 2)
    ds = datasets.load_dataset("parquet", data_files=str(result.paths[1]), cache_dir=str(tmp_path / "cache"))["train"]
    assert ds[0]["prompt"] == [{"content": "What is 2+2?", "role": "user"}]
    assert ds[0]["reward_model"]["ground_truth"] == "4"


def test_string_prompts_and_jsonl_source(tmp_path):
    rows = string_rows(5)
    path = tmp_path / "dapo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = split_dataset(path, tmp_path / "out", 2)
    back = pd.concat([pd.read_parquet(p) for p in result.paths], ignore_index=True)
    assert list(back["prompt"]) == [r["prompt"] for r in rows]


def test_the_official_dataset_uses_the_official_config(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(string_rows(6))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    result = split_dataset(OFFICIAL_DATASET, tmp_path / "out", 3)
    assert calls == [(OFFICIAL_DATASET, "en", "train")]
    assert result.sizes == [2, 2, 2]
    assert json.loads(result.manifest_path.read_text())["config"] == "en"


def test_duplicates_and_stale_files_are_reported(tmp_path, capsys):
    rows = chat_rows(6)
    rows[5]["prompt"] = rows[0]["prompt"]
    out = tmp_path / "out"
    split_dataset(write_source(tmp_path, rows), out, 3)
    result = split_dataset(tmp_path / "train.parquet", out, 2)
    assert result.duplicate_prompts == 1
    assert [p.name for p in result.stale_files] == ["subset_2.parquet"]
    print_split_summary(result)
    text = capsys.readouterr().out
    assert "6 rows -> 2 subsets" in text and "subset_2.parquet" in text and "pooled" in text


# ---- errors ----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_bad_num_subsets(tmp_path, n):
    with pytest.raises(UserError, match="--num_subsets must be a positive integer"):
        split_dataset(write_source(tmp_path, chat_rows(3)), tmp_path / "out", n)
    assert not (tmp_path / "out").exists()


def test_more_subsets_than_rows(tmp_path):
    with pytest.raises(UserError, match="cannot split 3 rows into 4 subsets"):
        split_dataset(write_source(tmp_path, chat_rows(3)), tmp_path / "out", 4)
    assert not (tmp_path / "out").exists()


def test_missing_and_empty_dataset(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        split_dataset(tmp_path / "missing.parquet", tmp_path / "out", 2)
    empty = write_source(tmp_path, chat_rows(1), "empty.parquet")
    pq.write_table(pq.read_table(empty).slice(0, 0), empty)
    with pytest.raises(UserError, match="no rows"):
        split_dataset(empty, tmp_path / "out", 2)


def test_rows_lacking_schema_fields(tmp_path):
    rows = chat_rows(4)
    rows[2]["reward_model"] = {"style": "rule", "ground_truth": None}
    with pytest.raises(UserError, match=r"1 of 4 rows lack 'reward_model.ground_truth' \(first bad row: 2\)"):
        split_dataset(write_source(tmp_path, rows), tmp_path / "out", 2)


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        split_dataset(write_source(tmp_path, chat_rows(3)), tmp_path / "out", 2)


# ---- atomicity -------------------------------------------------------------


def test_no_temp_files_left(tmp_path):
    result = split_dataset(write_source(tmp_path, chat_rows(9)), tmp_path / "out", 3)
    assert leftovers(result.output_dir) == []
    assert sorted(p.name for p in result.output_dir.iterdir()) == [
        MANIFEST_NAME,
        "subset_0.parquet",
        "subset_1.parquet",
        "subset_2.parquet",
    ]


def test_failing_run_keeps_existing_subsets(tmp_path):
    out = tmp_path / "out"
    first = split_dataset(write_source(tmp_path, chat_rows(6)), out, 2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = chat_rows(6)
    bad[4]["prompt"] = []
    with pytest.raises(UserError):
        split_dataset(write_source(tmp_path, bad, "bad.parquet"), out, 2)
    with pytest.raises(UserError):
        split_dataset(tmp_path / "train.parquet", out, 99)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert first.checksums == [sha256_file(p) for p in first.paths]


def test_crash_while_writing_leaves_whole_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    split_dataset(write_source(tmp_path, chat_rows(6)), out, 2)
    old = (out / "subset_1.parquet").read_bytes()
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr("spo_helpers.formats.atomic.os.replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        split_dataset(write_source(tmp_path, chat_rows(8), "other.parquet"), out, 2)
    assert (out / "subset_1.parquet").read_bytes() == old  # untouched, not truncated
    assert pq.read_metadata(out / "subset_0.parquet").num_rows == 4  # replaced whole
    assert leftovers(out) == []


# ---- command line ----------------------------------------------------------


def test_cli_split(tmp_path, capsys):
    source = write_source(tmp_path, chat_rows(10))
    code = main(["split", "--dataset", str(source), "--output_dir", str(tmp_path / "out"), "--num_subsets", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "10 rows -> 3 subsets, original order" in out
    assert len(list((tmp_path / "out").glob("subset_*.parquet"))) == 3
    code = main(["split", "--dataset", str(source), "--output_dir", str(tmp_path / "s"), "--shuffle", "--seed", "5"])
    assert code == 0 and "shuffled (seed 5)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--num_subsets", "0"], "positive integer"),
        (["--num_subsets", "11"], "cannot split 10 rows"),
    ],
)
def test_cli_errors_exit_2(tmp_path, capsys, extra, match):
    source = write_source(tmp_path, chat_rows(10))
    code = main(["split", "--dataset", str(source), "--output_dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("spo split: error:") and match in err and err.count("\n") == 1


def test_cli_missing_dataset_exit_2(tmp_path, capsys):
    code = main(["split", "--dataset", str(tmp_path / "nope.jsonl"), "--output_dir", str(tmp_path / "out")])
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_module_defaults_match_the_official_script():
    assert split_mod.OFFICIAL_DATASET == "open-r1/DAPO-Math-17k-Processed"
    assert split_mod.DEFAULT_NUM_SUBSETS == 5
