"""The five benchmarks: local files shaped like each hub set map to the kit's schema; a set that cannot be
loaded stops with one line naming it; the evaluation protocol is the one the verl config reads."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from spo_helpers.errors import UserError
from spo_helpers.formats.benchmarks import BENCHMARKS, load_benchmark, parse_benchmark, write_benchmarks
from spo_helpers.formats.eval_protocol import PAPER_PROTOCOL, applied_top_k, protocol, protocol_value, same_as_paper
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX

# the columns of each hub set, as the official dataset class reads them (spo_retool.py: map_fn)
HUB_SHAPES = {
    "AIME24": {"ID": ["2024-I-1"], "Problem": ["Find x."], "Solution": ["..."], "Answer": [204]},
    "AIME25": {"problem": ["Find y."], "answer": ["70"], "id": [0]},
    "BeyondAIME": {"problem": ["Find z."], "answer": ["12"]},
    "BRUMO25": {"problem_idx": [1], "problem": ["Find w."], "answer": ["3"]},
    "HMMT25": {"problem_idx": [1], "problem": ["Find v."], "answer": ["\\frac{1}{2}"]},
}
SOURCES = {"AIME24": "aime_2024", "AIME25": "aime_2025", "BeyondAIME": "beyondaime"}
SOURCES |= {"BRUMO25": "brumo_2025", "HMMT25": "hmmt_feb_2025"}


@pytest.mark.parametrize("name", list(HUB_SHAPES))
def test_local_file_shaped_like_the_hub_set_maps_to_the_kit_schema(tmp_path, name):
    path = tmp_path / f"{name}.jsonl"
    frame = pd.DataFrame(HUB_SHAPES[name])
    path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n")
    rows = load_benchmark(f"{name}={path}")
    assert list(rows["data_source"]) == [SOURCES[name]] == [BENCHMARKS[name].data_source]
    problem = HUB_SHAPES[name].get("Problem", HUB_SHAPES[name].get("problem"))[0]
    answer = HUB_SHAPES[name].get("Answer", HUB_SHAPES[name].get("answer"))[0]
    assert rows["prompt"][0] == [{"role": "user", "content": problem + ANSWER_FORMAT_SUFFIX}]
    assert rows["reward_model"][0]["ground_truth"] == str(answer)


def test_names_and_hub_ids_resolve_to_the_official_ids_and_splits():
    assert parse_benchmark("aime24").source == "Maxwell-Jia/AIME_2024"
    assert parse_benchmark("ByteDance-Seed/BeyondAIME").benchmark.split == "test"
    assert {b.hub_id for b in BENCHMARKS.values()} == {
        "Maxwell-Jia/AIME_2024",
        "yentinglin/aime_2025",
        "ByteDance-Seed/BeyondAIME",
        "MathArena/brumo_2025",
        "MathArena/hmmt_feb_2025",
    }


def test_a_set_that_cannot_be_loaded_is_named(tmp_path):
    with pytest.raises(UserError, match=r"benchmark HMMT25 cannot be loaded.*hmmt_fe.*HMMT25=PATH"):
        load_benchmark(f"HMMT25={tmp_path / 'missing' / 'hmmt.parquet'}")
    wrong = tmp_path / "b.jsonl"
    wrong.write_text('{"question_text": "x", "solution": "1"}\n')
    with pytest.raises(UserError, match="benchmark BRUMO25: no problem column"):
        load_benchmark(f"BRUMO25={wrong}")
    with pytest.raises(UserError, match="not one of AIME24"):
        parse_benchmark("AIME26")


def test_kit_schema_files_keep_their_rows_and_are_written_per_benchmark(tmp_path):
    rows = pd.DataFrame(
        {
            "data_source": ["spo_arith"],
            "prompt": [[{"role": "user", "content": "1+1"}]],
            "reward_model": [{"ground_truth": "2"}],
        }
    )
    rows.to_parquet(tmp_path / "val.parquet")
    (written,) = write_benchmarks([f"held_out={tmp_path / 'val.parquet'}"], tmp_path / "out")
    back = pd.read_parquet(written)
    assert written.name == "held_out.parquet" and list(back["data_source"]) == ["held_out"]  # the name given
    (unnamed,) = write_benchmarks([str(tmp_path / "val.parquet")], tmp_path / "plain")
    assert list(pd.read_parquet(unnamed)["data_source"]) == ["spo_arith"]  # a bare file keeps its own


def test_a_benchmark_without_ground_truths_is_refused(tmp_path):
    rows = pd.DataFrame(
        {
            "data_source": ["x", "x"],
            "prompt": [[{"role": "user", "content": "1+1"}], [{"role": "user", "content": "2+2"}]],
            "reward_model": [{"ground_truth": None}, {"ground_truth": None}],
        }
    )
    rows.to_parquet(tmp_path / "no_answers.parquet")
    with pytest.raises(UserError, match=r"benchmark mine: 2 of 2 rows lack 'reward_model.ground_truth'"):
        write_benchmarks([f"mine={tmp_path / 'no_answers.parquet'}"], tmp_path / "out")


def test_protocol_per_preset_and_the_paper_comparison():
    assert protocol("paper").n("evaluate") == 32 and protocol("official").n("validate") == 16
    assert protocol("cpu").n("validate") == 4 and protocol_value("official", "top_k") == 20
    same, why = same_as_paper(PAPER_PROTOCOL.sampling(), 32, set(BENCHMARKS))
    assert same, why
    same, why = same_as_paper(PAPER_PROTOCOL.sampling(), 16, {"AIME24", "AIME25"})
    assert not same and "n=16" in why and "BeyondAIME" in why
    with pytest.raises(ValueError, match="no evaluation protocol"):
        protocol("nope")


def test_the_verl_config_reads_the_protocol():
    from spo_helpers.verl_glue.config import RunSpec, build_config

    for preset, method in (("official", "GRPO"), ("cpu", "SPO"), ("paper", "EVAL")):
        spec = RunSpec(method=method, preset=preset, model_path="m", train_files=["/d/t.parquet"])
        kwargs = build_config(spec).actor_rollout_ref.rollout.val_kwargs
        chosen = protocol(preset)
        config = build_config(spec)
        applied = applied_top_k(kwargs.top_k, config.actor_rollout_ref.rollout.mode)
        assert (kwargs.temperature, kwargs.top_p, applied) == tuple(chosen.sampling().values())
        assert kwargs.top_k == chosen.top_k  # the configured value stays the official config's
        assert kwargs.n == chosen.n("estimate" if method == "EVAL" else "validate")
