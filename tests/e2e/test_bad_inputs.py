"""Bad inputs through the ``spo`` command line: exit code 2, one error line naming the file and the fix,
and earlier outputs left byte for byte as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spo_helpers.cli import main

pytest.importorskip("verl")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_error(result, stage, *needles):
    code, _, err = result
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"spo {stage}: error: "), err[0]
    for needle in needles:
        assert str(needle) in err[0], f"{needle!r} not in {err[0]!r}"


def chat_row(i, **overrides):
    row = {
        "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
        "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
        "extra_info": {"index": i},
    }
    row.update(overrides)
    return row


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def empty_parquet(path, like):
    pq.write_table(pq.read_table(like).slice(0, 0), path)
    return path


# ---------------------------------------------------------------- 01 split


@pytest.fixture
def split_out(tmp_path, capsys):
    """A folder holding a valid earlier split (10 rows, 2 subsets)."""
    source = write_jsonl(tmp_path / "good.jsonl", [chat_row(i) for i in range(10)])
    out = tmp_path / "splits"
    assert run_cli(capsys, "split", "--dataset", source, "--output_dir", out, "--num_subsets", 2)[0] == 0
    return out


def no_prompt(tmp_path):
    return write_jsonl(tmp_path / "bad.jsonl", [{"reward_model": {"ground_truth": "1"}} for _ in range(3)])


def no_reward_model(tmp_path):
    return write_jsonl(tmp_path / "bad.jsonl", [{"prompt": f"What is {i}?"} for i in range(3)])


def one_row_without_ground_truth(tmp_path):
    return write_jsonl(tmp_path / "bad.jsonl", [chat_row(0), chat_row(1, reward_model={"style": "rule"}), chat_row(2)])


def malformed_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(chat_row(0)) + "\n" + '{"prompt": "What is 1?", "reward_mo\n')
    return path


def empty_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("")
    return path


def zero_rows(tmp_path):
    good = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([chat_row(0)]), good)
    return empty_parquet(tmp_path / "bad.parquet", good)


def missing(tmp_path):
    return tmp_path / "nowhere" / "train.parquet"


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (no_prompt, ["column 'prompt' is missing", "each row needs 'prompt'"]),
        (no_reward_model, ["column 'reward_model' is missing", "'reward_model' with a 'ground_truth'"]),
        (one_row_without_ground_truth, ["1 of 3 rows lack", "first bad row: 1", "each row needs"]),
        (malformed_line, [":2: not valid JSON", "fix or remove the line"]),
        (empty_file, ["the file is empty", "regenerate it"]),
        (zero_rows, ["has no rows", "check the file"]),
        (missing, ["no such file or directory", "check the path"]),
    ],
    ids=["no-prompt", "no-reward-model", "no-ground-truth", "malformed-line", "empty-file", "zero-rows", "missing"],
)
def test_split_bad_dataset(make, needles, tmp_path, capsys, split_out):
    before = snapshot(split_out)
    source = make(tmp_path)
    result = run_cli(capsys, "split", "--dataset", source, "--output_dir", split_out, "--num_subsets", 2)
    assert_one_error(result, "split", source, *needles)
    assert snapshot(split_out) == before


def test_split_more_subsets_than_rows(tmp_path, capsys, split_out):
    before = snapshot(split_out)
    source = write_jsonl(tmp_path / "three.jsonl", [chat_row(i) for i in range(3)])
    result = run_cli(capsys, "split", "--dataset", source, "--output_dir", split_out, "--num_subsets", 4)
    assert_one_error(result, "split", source, "3 rows into 4 subsets", "--num_subsets <= 3")
    assert snapshot(split_out) == before


def test_split_reports_duplicate_prompts(tmp_path, capsys):
    rows = [chat_row(i) for i in range(6)] + [chat_row(1), chat_row(4), chat_row(4)]
    source = write_jsonl(tmp_path / "dups.jsonl", rows)
    code, out, err = run_cli(capsys, "split", "--dataset", source, "--output_dir", tmp_path / "s", "--num_subsets", 3)
    assert code == 0 and not err
    assert "2 prompt keys occur more than once" in out
    assert json.loads((tmp_path / "s" / "split_manifest.json").read_text())["duplicate_prompts"] == 2


# ---------------------------------------------------------------- 03 merge


def dump_line(key, score):
    return json.dumps({"input": f"user\n{key}\nassistant\n", "output": "x", "score": score, "prompt_key": key})


@pytest.fixture
def merged(tmp_path, capsys):
    """Two valid dumps and the values merged from them; returns (input dir, dump to spoil, output file)."""
    root = tmp_path / "estimates"
    for subset in (0, 1):
        dump = root / f"offline_value_estimation_subset_{subset}" / "validation_data" / "0.jsonl"
        dump.parent.mkdir(parents=True)
        dump.write_text("".join(dump_line(f"q{subset}-{i}", float(i % 2)) + "\n" for i in range(2)))
    output = tmp_path / "values" / "offline_values.json"
    assert run_cli(capsys, "merge", "--input_dir", root, "--output_file", output)[0] == 0
    return root, dump, output


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"prompt_key": "q9", "score": 1', "not valid JSON"),  # truncated: the writer died mid-line
        ("<<<garbage>>>\n", "not valid JSON"),
        ('{"prompt_key": "q9", "score": NaN}\n', "'score' is not a finite number"),
        ('{"prompt_key": "q9", "score": Infinity}\n', "'score' is not a finite number"),
        ('{"prompt_key": "q9", "score": -Infinity}\n', "'score' is not a finite number"),
    ],
    ids=["truncated", "malformed", "nan", "inf", "minus-inf"],
)
def test_merge_bad_dump_line(line, reason, capsys, merged):
    root, dump, output = merged
    before = snapshot(output.parent)
    with dump.open("a") as handle:
        handle.write(line)
    result = run_cli(capsys, "merge", "--input_dir", root, "--output_file", output)
    assert_one_error(result, "merge", f"{dump}:3:", reason, "--skip_bad_lines")
    assert snapshot(output.parent) == before

    code, out, err = run_cli(capsys, "merge", "--input_dir", root, "--output_file", output, "--skip_bad_lines")
    assert code == 0 and not err
    assert "skipped 1 bad lines" in out
    stats = json.loads(output.with_name("offline_values.stats.json").read_text())
    assert stats["bad_lines"] == 1 and stats["samples"] == 4


def test_merge_missing_input_dir(tmp_path, capsys, merged):
    _, _, output = merged
    before = snapshot(output.parent)
    result = run_cli(capsys, "merge", "--input_dir", tmp_path / "nowhere", "--output_file", output)
    assert_one_error(result, "merge", tmp_path / "nowhere", "pass the folder that holds the stage-02 outputs")
    assert snapshot(output.parent) == before


# ---------------------------------------------------------------- 02 estimate and 04 train


@pytest.fixture
def earlier_runs(tmp_path):
    """An output folder that already holds a training run and an estimation dump."""
    out = tmp_path / "out"
    run = out / "spo" / "grpo_cpu"
    (run / "checkpoints" / "global_step_1").mkdir(parents=True)
    (run / "checkpoints" / "global_step_1" / "kit_complete.json").write_text('{"global_step": 1}\n')
    (run / "metrics.jsonl").write_text('{"step": 1, "data": {"critic/score/mean": 0.5}}\n')
    (run / "config.yaml").write_text("config: {}\n")
    dump = out / "spo" / "offline_value_estimation" / "validation_data" / "0.jsonl"
    dump.parent.mkdir(parents=True)
    dump.write_text(dump_line("q", 1.0) + "\n")
    return out


@pytest.fixture
def inputs(small_world, tmp_path):
    """Paths the bad commands use: the world's files plus broken variants."""
    model = tmp_path / "model_without_tokenizer"
    shutil.copytree(small_world.model_dir, model)
    for name in TOKENIZER_FILES:
        (model / name).unlink(missing_ok=True)
    nan_values = tmp_path / "nan_values.json"
    key = json.dumps(pq.read_table(small_world.train_file).to_pylist()[0]["extra_info"]["prompt_key"])
    nan_values.write_text("{" + key + ": [1.0, NaN, 0.0]}")
    other_values = tmp_path / "other_values.json"
    other_values.write_text('{"a prompt of another dataset": [1.0, 0.0]}')
    rows = pq.read_table(small_world.train_file).to_pylist()[:20]
    no_prompt = tmp_path / "no_prompt.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "prompt"} for r in rows]), no_prompt)
    blank = [dict(r) for r in rows]
    blank[7]["prompt"] = [{"role": "user", "content": "   "}]
    blank_prompt = tmp_path / "blank_prompt.parquet"
    pq.write_table(pa.Table.from_pylist(blank), blank_prompt)
    torn = tmp_path / "torn.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[17] = lines[17][:40]
    torn.write_text("\n".join(lines) + "\n")
    no_truth = [dict(r) for r in rows]
    no_truth[3]["reward_model"] = {"ground_truth": " ", "style": "rule"}
    blank_truth = tmp_path / "blank_truth.parquet"
    pq.write_table(pa.Table.from_pylist(no_truth), blank_truth)
    duplicate_values = tmp_path / "duplicate_values.json"
    duplicate_values.write_text("{" + key + ": [1.0], " + key + ": [0.0]}")
    latin1_values = tmp_path / "latin1_values.json"
    latin1_values.write_bytes(b'{"caf\xe9": [1.0]}')
    one_key = [dict(r, extra_info={**r["extra_info"], "prompt_key": "one key for all"}) for r in rows]
    colliding_keys = tmp_path / "colliding_keys.parquet"
    pq.write_table(pa.Table.from_pylist(one_key), colliding_keys)
    return {
        "colliding_keys": colliding_keys,
        "no_prompt": no_prompt,
        "blank_prompt": blank_prompt,
        "torn_jsonl": torn,
        "blank_truth": blank_truth,
        "duplicate_values": duplicate_values,
        "latin1_values": latin1_values,
        "model": small_world.model_dir,
        "train": small_world.train_file,
        "val": small_world.val_file,
        "empty": empty_parquet(tmp_path / "empty.parquet", small_world.train_file),
        "no_tokenizer": model,
        "nan_values": nan_values,
        "other_values": other_values,
        "nowhere": tmp_path / "nowhere",
    }


TRAIN_CASES = {
    "empty-train-file": (["--train_files", "{empty}", "--dry-run"], ["{empty}", "has no rows", "regenerate it"]),
    "no-tokenizer": (
        ["--model_path", "{no_tokenizer}", "--dry-run"],
        ["{no_tokenizer}", "no tokenizer", "tokenizer.save_pretrained"],
    ),
    "nan-offline-values": (
        ["--method", "SPO", "--offline_values", "{nan_values}"],
        ["{nan_values}", "NaN or infinite", "replace it with a finite score"],
    ),
    "values-of-another-dataset": (
        ["--method", "SPO", "--offline_values", "{other_values}"],
        ["{other_values}", "different dataset", "--offline_values none"],
    ),
    "spo-n-train-4": (["--method", "SPO", "--n_train", "4", "--dry-run"], ["N_TRAIN=4", "must be 1"]),
    "grpo-n-train-1": (["--method", "GRPO", "--n_train", "1", "--dry-run"], ["N_TRAIN=1", "Use N_TRAIN>=2"]),
    "unknown-override": (["--dry-run", "trainer.no_such_key=1"], ["trainer.no_such_key", "check the key"]),
    "missing-train-file": (
        ["--train_files", "{nowhere}/train.parquet", "--dry-run"],
        ["{nowhere}/train.parquet", "check the path"],
    ),
    "missing-train-dir": (["--train_data_dir", "{nowhere}", "--dry-run"], ["{nowhere}", "pass --train_data_dir"]),
    "missing-val-file": (["--val_files", "{nowhere}/val.parquet", "--dry-run"], ["{nowhere}/val.parquet", "check"]),
    "missing-model": (["--model_path", "{nowhere}", "--dry-run"], ["{nowhere}", "pass --model_path"]),
    "missing-offline-values": (
        ["--method", "SPO", "--offline_values", "{nowhere}/v.json"],
        ["{nowhere}/v.json", "run `spo merge`"],
    ),
    "no-prompt-column": (["--train_files", "{no_prompt}", "--dry-run"], ["{no_prompt}", "column 'prompt' is missing"]),
    "blank-prompt": (["--train_files", "{blank_prompt}", "--dry-run"], ["{blank_prompt}", "first bad row: 7"]),
    "grpo-malformed-jsonl": (
        ["--method", "GRPO", "--train_files", "{torn_jsonl}", "--dry-run"],
        ["{torn_jsonl}:18", "not valid JSON", "fix or remove the line"],
    ),
    "blank-ground-truth": (
        ["--train_files", "{blank_truth}", "--dry-run"],
        ["{blank_truth}", "ground_truth", "first bad row: 3"],
    ),
    "bad-validation-file": (["--val_files", "{no_prompt}", "--dry-run"], ["validation file {no_prompt}", "prompt"]),
    "spo-colliding-prompt-keys": (
        ["--method", "SPO", "--train_files", "{colliding_keys}", "--offline_values", "none"],
        ["{colliding_keys}", "shared by different prompts", "rows 0, 1, 2, 3, 4 and 15 more", "its own"],
    ),
    "grpo-colliding-prompt-keys-dry-run": (
        ["--method", "GRPO", "--train_files", "{colliding_keys}", "--dry-run"],
        ["{colliding_keys}", "shared by different prompts", "'one key for all'"],
    ),
    "duplicate-value-keys": (
        ["--method", "SPO", "--offline_values", "{duplicate_values}", "--dry-run"],
        ["{duplicate_values}", "duplicate key", "merge the two lists"],
    ),
    "offline-values-not-utf8": (
        ["--method", "SPO", "--offline_values", "{latin1_values}", "--dry-run"],
        ["{latin1_values}", "not UTF-8", "offset 5"],
    ),
    "dry-run-checks-offline-values": (
        ["--method", "SPO", "--offline_values", "{other_values}", "--dry-run"],
        ["{other_values}", "different dataset"],
    ),
}


def fill(items, inputs):
    return [str(item).format(**inputs) for item in items]


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(case, inputs, earlier_runs, capsys):
    argv, needles = TRAIN_CASES[case]
    defaults = {"--model_path": "{model}", "--train_files": "{train}", "--val_files": "{val}"}
    for flag, value in defaults.items():
        if flag not in argv and not (flag == "--train_files" and "--train_data_dir" in argv):
            argv = [flag, value, *argv]
    before = snapshot(earlier_runs)
    result = run_cli(capsys, "train", "--output_dir", earlier_runs, *fill(argv, inputs))
    assert_one_error(result, "train", *fill(needles, inputs))
    assert snapshot(earlier_runs) == before


ESTIMATE_CASES = {
    "empty-data-file": (["--data_file", "{empty}", "--dry-run"], ["{empty}", "has no rows", "regenerate it"]),
    "no-tokenizer": (
        ["--data_file", "{train}", "--model_path", "{no_tokenizer}", "--dry-run"],
        ["{no_tokenizer}", "no tokenizer", "tokenizer.save_pretrained"],
    ),
    "missing-data-file": (["--data_file", "{nowhere}/subset_0.parquet"], ["{nowhere}/subset_0.parquet", "pass"]),
    "missing-data-dir": (["--data_dir", "{nowhere}"], ["{nowhere}", "run `spo split` first"]),
    "missing-model": (["--data_file", "{train}", "--model_path", "{nowhere}"], ["{nowhere}", "pass --model_path"]),
    "unknown-override": (["--data_file", "{train}", "--dry-run", "data.no_such_key=1"], ["data.no_such_key"]),
    "no-prompt-column": (["--data_file", "{no_prompt}", "--dry-run"], ["{no_prompt}", "column 'prompt' is missing"]),
    "colliding-prompt-keys": (["--data_file", "{colliding_keys}", "--dry-run"], ["shared by different prompts"]),
}


@pytest.mark.parametrize("case", list(ESTIMATE_CASES))
def test_estimate_bad_input(case, inputs, earlier_runs, capsys):
    argv, needles = ESTIMATE_CASES[case]
    if "--model_path" not in argv:
        argv = ["--model_path", "{model}", *argv]
    before = snapshot(earlier_runs)
    result = run_cli(capsys, "estimate", "--output_dir", earlier_runs, *fill(argv, inputs))
    assert_one_error(result, "estimate", *fill(needles, inputs))
    assert snapshot(earlier_runs) == before


# ---------------------------------------------------------------- 05 figures and the pipeline


@pytest.mark.parametrize("n", ["0", "-3"])
def test_evaluate_refuses_a_sample_count_below_one(n, inputs, earlier_runs, capsys):
    before = snapshot(earlier_runs)
    argv = ["--model_path", inputs["model"], "--benchmarks", f"held_out={inputs['val']}", "--n", n, "--dry-run"]
    result = run_cli(capsys, "evaluate", "--output_dir", earlier_runs, *argv)
    assert_one_error(result, "evaluate", f"--n {n}", "at least 1")
    assert snapshot(earlier_runs) == before


def test_figures_missing_run(tmp_path, capsys, earlier_runs):
    before = snapshot(earlier_runs)
    result = run_cli(capsys, "figures", tmp_path / "nowhere", "--output", earlier_runs / "figures")
    assert_one_error(result, "figures", tmp_path / "nowhere", "pass a run folder")
    assert snapshot(earlier_runs) == before


def test_pipeline_missing_config(tmp_path, capsys):
    result = run_cli(capsys, "pipeline", "--config", tmp_path / "nowhere.yaml", "--runs_dir", tmp_path / "runs")
    assert_one_error(result, "pipeline", tmp_path / "nowhere.yaml", "check the --config path")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- duplicate prompts in training


def test_training_counts_duplicate_prompts_once(small_world, tmp_path, capsys):
    table = pq.read_table(small_world.train_file)
    doubled = pa.concat_tables([table, table.slice(0, 40), table.slice(10, 5)])
    data = tmp_path / "dups.parquet"
    pq.write_table(doubled, data)
    unique = len(set(r["extra_info"]["prompt_key"] for r in table.to_pylist()))
    argv = ["train", "--method", "SPO", "--offline_values", "none", "--output_dir", tmp_path / "out"]
    argv += ["--model_path", small_world.model_dir, "--train_files", data, "--val_files", small_world.val_file]
    argv += ["--total_steps", 1, "--val_before_train", "False", "--exp_name", "dups"]
    argv += ["actor_rollout_ref.rollout.val_kwargs.n=1", "data.gen_batch_size=200"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    run = tmp_path / "out" / "spo" / "dups"
    prompts = pq.read_table(run / "prompts.parquet").to_pandas()
    assert len(prompts) == unique and prompts["prompt_key"].is_unique
    assert prompts["dataset_index"].max() < table.num_rows  # each key points at its first row
    rows = json.loads((run / "steps.jsonl").read_text().splitlines()[0])["data"]["row"]
    assert len(rows) == len(set(rows)) == 128
