"""verl's ``RLHFDataset`` for the kit's data sources.

Reads, like the official recipe's dataset class:
- parquet files in the DAPO schema, with ``prompt`` either a chat list (the kit's
  bundled task) or a plain string (``open-r1/DAPO-Math-17k-Processed``), which is
  wrapped into a user message with the official answer-format suffix appended;
- ``open-r1/DAPO-Math-17k-Processed`` by its hub id, with its ``all`` config as the official
  class reads it (``formats.datasets.HUB_CONFIGS``);
- the AIME validation sets by their hub ids (``Maxwell-Jia/AIME_2024``,
  ``yentinglin/aime_2025``, ...: ``Problem``/``problem`` and ``Answer``/``answer``).

Every row gets ``extra_info.prompt_key`` (the official key: the user message,
stripped), which the kit's reward function returns, so validation dumps carry an
explicit key.

The dataset does not build the code tool. verl 0.6.1 copies the rollout's tool file into
``data.tool_config_path`` (``trainer/config/data/legacy_data.yaml:48``), and its ``RLHFDataset`` then
instantiates every tool of it (``utils/dataset/rl_dataset.py:116-129``: verl's ``SandboxFusionTool``, which starts
a Ray instance in a process without one) to add their schemas to the chat template of the overlong-prompt
filter. The official recipe's dataset (verl at its pinned commit) does neither: the filter measures the chat
prompt alone, as here, and the tool is built once per agent-loop worker (``agent_loop.verl_loop``).
"""

from __future__ import annotations

import datasets
from verl.utils.dataset import RLHFDataset

from spo_helpers.formats.datasets import hub_config
from spo_helpers.formats.keys import ANSWER_FORMAT_SUFFIX, KEY_FIELD, chat_key, chat_messages

HUB_SPLITS = {"ByteDance-Seed/BeyondAIME": "test"}


def _to_chat_row(row: dict, data_source: str | None = None) -> dict:
    """One row in the DAPO schema with ``extra_info.prompt_key`` set."""
    prompt = row.get("prompt")
    if prompt is None:  # competition sets: Problem/problem and Answer/answer columns
        problem = row.get("Problem", row.get("problem"))
        answer = row.get("Answer", row.get("answer"))
        messages = [{"role": "user", "content": f"{problem}{ANSWER_FORMAT_SUFFIX}"}]
        row = {
            "data_source": (data_source or "unknown").split("/")[-1].lower(),
            "ability": "MATH",
            "reward_model": {"ground_truth": str(answer), "style": "rule"},
            "extra_info": {},
        }
    else:
        messages = chat_messages(prompt)
    extra = dict(row.get("extra_info") or {})
    if not (isinstance(extra.get(KEY_FIELD), str) and extra[KEY_FIELD].strip()):
        extra[KEY_FIELD] = chat_key(messages)
    out = dict(row)
    out["prompt"] = messages
    out["extra_info"] = extra
    out.setdefault("data_source", data_source or "unknown")
    return out


class KitRLHFDataset(RLHFDataset):
    """``RLHFDataset`` that normalises rows to chat prompts with explicit prompt keys (no tools: module doc)."""

    def __init__(self, data_files, tokenizer, config, processor=None, **kwargs):
        from omegaconf import OmegaConf, open_dict

        if config.get("tool_config_path"):
            plain = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config)
            config = OmegaConf.create(plain)
            with open_dict(config):
                config.tool_config_path = None
        super().__init__(data_files, tokenizer, config, processor, **kwargs)

    def _read_files_and_tokenize(self):
        frames = []
        for source in self.data_files:
            if str(source).endswith(".parquet"):
                frame = datasets.load_dataset("parquet", data_files=source)["train"]
                data_source = None
            else:
                frame = datasets.load_dataset(source, hub_config(source), split=HUB_SPLITS.get(source, "train"))
                data_source = source
            frame = frame.map(_to_chat_row, fn_kwargs={"data_source": data_source}, remove_columns=frame.column_names)
            frames.append(frame)
        self.dataframe = datasets.concatenate_datasets(frames)
        total = len(self.dataframe)
        if 0 < self.max_samples < total:  # data.*_max_samples, as verl's RLHFDataset selects (rl_dataset.py:163-171)
            if self.shuffle:
                import numpy as np

                rng = np.random.default_rng(*((self.seed,) if self.seed is not None else ()))
                rows = rng.choice(total, size=self.max_samples, replace=False).tolist()
            else:
                rows = list(range(self.max_samples))
            self.dataframe = self.dataframe.select(rows)
        self.dataframe = self.maybe_filter_out_long_prompts(self.dataframe)
