"""``open-r1/DAPO-Math-17k-Processed`` by its hub id is read with its ``all`` config, as the official dataset
class (``spo_retool.py``) reads it: in the checks before compute and in the training dataset (no network)."""

from __future__ import annotations

import pytest

pytest.importorskip("verl")

import datasets

from spo_helpers.formats.datasets import HUB_CONFIGS, hub_config, load_dataset_table

DAPO = "open-r1/DAPO-Math-17k-Processed"


@pytest.fixture
def hub_calls(monkeypatch):
    """``datasets.load_dataset`` replaced by a stand-in that records (id, config, split)."""
    calls = []

    def load_dataset(source, config=None, *, split=None, **_):
        calls.append((source, config, split))
        return datasets.Dataset.from_dict(
            {
                "prompt": ["What is 1 + 1?"],
                "reward_model": [{"ground_truth": "2", "style": "rule"}],
                "data_source": ["math_dapo"],
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_config_defaults_to_the_official_one():
    assert HUB_CONFIGS[DAPO] == "all"
    assert hub_config(DAPO) == "all" and hub_config(DAPO, "en") == "en" and hub_config("someone/data") is None


def test_checks_before_compute_read_dapo_with_all(hub_calls):
    load_dataset_table(DAPO)
    load_dataset_table(DAPO, config="en")  # spo split names the official split script's config
    load_dataset_table("someone/data")
    assert hub_calls == [(DAPO, "all", "train"), (DAPO, "en", "train"), ("someone/data", None, "train")]


def test_training_dataset_reads_dapo_with_all(hub_calls):
    from spo_helpers.verl_glue.dataset import KitRLHFDataset

    dataset = object.__new__(KitRLHFDataset)  # only the file reading, without a tokenizer
    dataset.data_files, dataset.max_samples = [DAPO], -1  # what verl's __init__ sets
    dataset.maybe_filter_out_long_prompts = lambda frame: frame
    dataset._read_files_and_tokenize()
    assert hub_calls == [(DAPO, "all", "train")]
    row = dataset.dataframe[0]
    assert row["prompt"][0]["role"] == "user" and row["extra_info"]["prompt_key"]
