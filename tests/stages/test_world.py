import json
import shutil
import time

import numpy as np
import pytest

from spo_helpers.formats.atomic import sha256_file
from spo_helpers.formats.keys import key_from_dump_input, prompt_key
from spo_helpers.world import build as world_build
from spo_helpers.world.paths import PROBE_DATA_SOURCE, WORLD_VERSION, WorldPaths, is_complete
from spo_helpers.world.task import (
    ANSWER_FORMAT,
    evaluate,
    make_task,
    read_rows,
    reference_response,
    row_answer,
    row_content,
    write_rows,
)

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

NUM_TRAIN, NUM_VAL = 300, 40
ROW_KEYS = {"data_source", "prompt", "ability", "reward_model", "extra_info"}


def dapo_score(response, ground_truth):
    math_dapo = pytest.importorskip("verl.utils.reward_score.math_dapo")
    return math_dapo.compute_score(response, ground_truth, strict_box_verify=True)["score"]


@pytest.fixture(scope="module")
def rows():
    return make_task(NUM_TRAIN, NUM_VAL, seed=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    return world_build.build_world(assets, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL, progress=False)


def test_evaluate_precedence():
    assert evaluate([37, 8, 4], ["+", "*"]) == 69
    assert evaluate([2, 3, 4, 5], ["*", "-", "*"]) == -14
    assert evaluate([7], []) == 7


def test_row_schema(rows):
    train, val = rows
    assert len(train) == NUM_TRAIN and len(val) == NUM_VAL
    for split, part in (("train", train), ("val", val)):
        for i, row in enumerate(part):
            assert set(row) == ROW_KEYS
            assert row["data_source"] == "spo_arith" and row["ability"] == "MATH"
            assert row["reward_model"]["style"] == "rule"
            assert isinstance(row["reward_model"]["ground_truth"], str)
            int(row["reward_model"]["ground_truth"])
            assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
            content = row["prompt"][0]["content"]
            assert content.endswith(ANSWER_FORMAT)
            extra = row["extra_info"]
            assert extra["index"] == i and extra["split"] == split and 0 <= extra["difficulty"] <= 4
            assert extra["prompt_key"] == prompt_key(row["prompt"]) == content.strip()


def test_answer_format_constant():
    assert ANSWER_FORMAT == "\nThe answer format must be: \\boxed{'The final answer goes here.'}"


def test_answers_match_the_expression(rows):
    for row in rows[0][:100]:
        expression = row_content(row).split(" ", 1)[-1].split("\n")[0].rstrip(".?").split(" ")[-1]
        assert int(row_answer(row)) == eval(expression, {"__builtins__": {}})


def test_keys_unique_and_val_disjoint(rows):
    train, val = rows
    train_keys = [r["extra_info"]["prompt_key"] for r in train]
    val_keys = [r["extra_info"]["prompt_key"] for r in val]
    assert len(set(train_keys)) == len(train_keys)
    assert len(set(val_keys)) == len(val_keys)
    assert not set(train_keys) & set(val_keys)


def test_difficulties_spread(rows):
    levels = np.bincount([r["extra_info"]["difficulty"] for r in rows[0]], minlength=5)
    assert (levels > 0).all()


def test_task_deterministic(rows, tmp_path):
    again = make_task(NUM_TRAIN, NUM_VAL, seed=0)
    assert again == rows
    write_rows(rows[0], tmp_path / "a.parquet")
    write_rows(again[0], tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert read_rows(tmp_path / "a.parquet") == rows[0]
    other = make_task(NUM_TRAIN, NUM_VAL, seed=1)
    assert [r["extra_info"]["prompt_key"] for r in other[0]] != [r["extra_info"]["prompt_key"] for r in rows[0]]


def test_reference_responses_score_one(rows):
    for row in rows[0] + rows[1]:
        answer = row_answer(row)
        assert dapo_score(reference_response(answer), answer) == 1.0
    answer = row_answer(rows[0][0])
    assert dapo_score(reference_response(int(answer) + 1), answer) <= 0
    assert dapo_score(answer, answer) <= 0  # no box, no reward


def test_world_layout_and_manifest(world):
    for p in (world.train_file, world.val_file, world.probe_file, world.manifest_file, world.model_dir / "config.json"):
        assert p.is_file()
    assert world.root.name == f"world-v{WORLD_VERSION}-seed0-n{NUM_TRAIN}"
    manifest = json.loads(world.manifest_file.read_text())
    assert manifest["seed"] == 0 and manifest["num_train"] == NUM_TRAIN and manifest["num_val"] == NUM_VAL
    assert manifest["files"]["data/train.parquet"] == sha256_file(world.train_file)
    assert manifest["files"]["data/val.parquet"] == sha256_file(world.val_file)
    assert read_rows(world.train_file) == make_task(NUM_TRAIN, NUM_VAL, seed=0)[0]
    train_keys = {r["extra_info"]["prompt_key"] for r in read_rows(world.train_file)}
    probe = read_rows(world.probe_file)
    assert len(probe) == min(world_build.PROBE_PROMPTS, NUM_TRAIN)
    assert all(r["data_source"] == PROBE_DATA_SOURCE for r in probe)
    assert {r["extra_info"]["prompt_key"] for r in probe} <= train_keys
    assert manifest["tokenizer"]["max_prompt_tokens"] < 64 and manifest["tokenizer"]["max_response_tokens"] <= 16
    assert "tools" not in manifest and "tool_share" not in manifest  # the plain world (the TIR one: <name>-tools)


def test_tokenizer_chat_template_and_key_round_trip(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world.model_dir)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for row in read_rows(world.train_file) + read_rows(world.val_file):
        content = row_content(row)
        text = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        assert text == "<|im_start|>user\n" + content + "<|im_end|>\n<|im_start|>assistant\n"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert decoded == "user\n" + content + "\nassistant\n"
        assert key_from_dump_input(decoded) == row["extra_info"]["prompt_key"]
        response = reference_response(row_answer(row))
        response_ids = tok(response + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert response_ids[-1] == tok.eos_token_id
        assert tok.decode(response_ids, skip_special_tokens=True) == response


def test_tokenizer_is_byte_exact_on_other_text(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world.model_dir)
    text = "  Héllo,\n\tworld 12345 = x²  \n"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_model_loads_with_auto_classes(world):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(world.model_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tok) and model.config.tie_word_embeddings
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tok.pad_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 6]])).logits
    assert logits.shape == (1, 3, len(tok)) and logits.dtype == torch.float32


def test_second_build_is_cached(world):
    before = world.manifest_file.stat().st_mtime_ns
    start = time.perf_counter()
    again = world_build.build_world(world.root.parent, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL, progress=False)
    assert time.perf_counter() - start < 2.0
    assert again == world
    assert world.manifest_file.stat().st_mtime_ns == before


def test_incomplete_folders_are_not_worlds(world, tmp_path):
    settings = {"seed": 0, "num_train": NUM_TRAIN, "num_val": NUM_VAL}
    assert is_complete(world, **settings)
    assert not is_complete(world, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL + 1)
    # A leftover temporary build (a crash before the rename) never counts as the world.
    leftover = tmp_path / f".{world.root.name}.abc123.tmp"
    shutil.copytree(world.root, leftover)
    assert not is_complete(WorldPaths.at(tmp_path / world.root.name), **settings)
    # Missing or corrupt manifests do not count either.
    copy = WorldPaths.at(tmp_path / "copy")
    shutil.copytree(world.root, copy.root)
    copy.manifest_file.unlink()
    assert not is_complete(copy, **settings)
    copy.manifest_file.write_text("{not json")
    assert not is_complete(copy, **settings)


def test_crash_leaves_no_world(tmp_path, monkeypatch):
    def broken(folder, **kwargs):
        (folder / "data").mkdir()
        (folder / "data" / "train.parquet").write_bytes(b"partial")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(world_build, "_build_into", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        world_build.build_world(tmp_path, num_train=NUM_TRAIN, num_val=NUM_VAL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_reuses_the_world(world, capsys):
    from spo_helpers.cli import main

    args = ["world", "--assets", str(world.root.parent), "--num_train", str(NUM_TRAIN), "--num_val", str(NUM_VAL)]
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(world.root)


def test_cli_passes_its_flags_to_the_build(monkeypatch, tmp_path, capsys):
    """`spo world` without --tools: its flags (either spelling) go to build_world; --quiet prints the folder only."""
    from spo_helpers.cli import main
    from spo_helpers.stages import world as world_stage

    calls = []

    def fake_build(assets, **kwargs):
        calls.append((assets, kwargs))
        return WorldPaths.at(tmp_path / "w")

    monkeypatch.setattr(world_stage, "build_world", fake_build)
    args = ["world", "--assets", str(tmp_path), "--seed", "3", "--num-train", "50", "--num_val", "5", "--force"]
    assert main([*args, "--quiet"]) == 0
    assert calls == [(str(tmp_path), {"seed": 3, "num_train": 50, "num_val": 5, "force": True, "progress": False})]
    assert capsys.readouterr().out.strip() == str(tmp_path / "w")
    assert main(["world"]) == 0
    assert calls[-1] == (None, {"seed": 0, "num_train": 3000, "num_val": 200, "force": False, "progress": True})
    assert capsys.readouterr().out == ""


def test_sampled_success_rates_spread(world):
    pytest.importorskip("verl")
    from spo_helpers.world import sample_success_rates

    train = read_rows(world.train_file)[:48]
    rates = sample_success_rates(world.model_dir, train, n=8, seed=0)
    assert rates.shape == (48,) and ((rates >= 0) & (rates <= 1)).all()
    assert 0 < rates.mean() < 1
    assert ((rates > 0) & (rates < 1)).any()
    np.testing.assert_array_equal(rates, sample_success_rates(world.model_dir, train, n=8, seed=0))
    spread = json.loads(world.manifest_file.read_text())["spread"]
    assert 0 < spread["mean_success"] < 1 and spread["share_mixed"] > 0


@pytest.mark.verl
def test_verl_dataset_reads_the_world(world, tmp_path):
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tok = AutoTokenizer.from_pretrained(world.model_dir)
    config = OmegaConf.create(
        {"max_prompt_length": 64, "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")}
    )
    dataset = RLHFDataset(str(world.val_file), tok, config)
    assert len(dataset) == NUM_VAL
    item = dataset[0]
    assert item["input_ids"].shape[-1] == 64
    text = tok.decode(item["input_ids"][item["attention_mask"].bool()], skip_special_tokens=True)
    assert key_from_dump_input(text) == item["extra_info"]["prompt_key"]


def test_the_world_folder_is_as_readable_as_a_new_folder(small_world):
    """Built in a private temporary folder (mode 0700), installed with the mode mkdir would give (umask applied)."""
    from spo_helpers.formats.atomic import current_umask

    root = small_world.model_dir.parent
    assert root.stat().st_mode & 0o777 == 0o777 & ~current_umask()
